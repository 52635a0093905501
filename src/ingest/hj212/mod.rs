//! HJ 212 — the protocol China's CEMS and water stations report in (HJ 212-2017; HJ 212-2025 is in
//! force since 2026-01-01 and kept open for).
//!
//! - [`codec`]: frames, CRC, data segment, CP items, split packets, a stream decoder, the encoder.
//!
//! This module maps a packet's CP items to catalogue quantities with their time semantics:
//! `DataTime` is China Standard Time; it is the instant for real-time data (CN 2011) and the
//! window's start for minute (2051), hourly (2061) and daily (2031) data. `-Flag` values become data
//! flags; `-ZsRtd`/`-ZsAvg` (折算, already corrected) values are kept apart from measured ones.

pub mod codec;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::catalogue::find_quantity;
use crate::reading::{DataFlag, Period};
use codec::Packet;

/// One value found in a packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Pollutant code, e.g. `a21026`.
    pub code: String,
    /// Catalogue quantity, when the code is known.
    pub quantity: Option<&'static str>,
    /// `Rtd`, `Avg`, `ZsRtd`, `ZsAvg`.
    pub kind: String,
    pub value: f64,
    /// HJ 212 unit of the code (flows are m3/s and L/s on the wire).
    pub unit: Option<&'static str>,
    pub flag: DataFlag,
    pub period: Period,
    /// Epoch ms (UTC) of the instant or the window's start.
    pub ts_ms: i64,
    /// A 折算 (reference-O2 corrected) value: never corrected again.
    pub converted: bool,
}

/// What a packet's CN says about its data.
pub fn period_of(cn: &str) -> Option<Period> {
    match cn {
        "2011" => Some(Period::Instant),
        "2051" => Some(Period::Minute),
        "2061" => Some(Period::Hour),
        "2031" => Some(Period::Day),
        _ => None,
    }
}

/// `YYYYMMDDhhmmss` in China Standard Time → epoch ms (UTC).
pub fn parse_data_time(s: &str) -> Option<i64> {
    let t = NaiveDateTime::parse_from_str(s.trim(), "%Y%m%d%H%M%S").ok()?;
    Some(t.and_utc().timestamp_millis() - 8 * 3_600_000)
}

/// Units of HJ 212 codes that differ from the catalogue's default.
fn wire_unit(code: &str) -> Option<&'static str> {
    match code {
        "a00000" => Some("m3/s"),
        "w00000" => Some("L/s"),
        _ => None,
    }
}

/// The values of a data packet (CN 2011/2051/2061/2031), and the codes it did not know.
pub fn items(p: &Packet) -> Result<(Vec<Item>, Vec<String>), String> {
    let period =
        period_of(p.cn()).ok_or_else(|| format!("CN {} carries no monitoring data", p.cn()))?;
    let ts_ms = p.data_time().and_then(parse_data_time).ok_or_else(|| {
        format!(
            "DataTime {:?} is not YYYYMMDDhhmmss",
            p.data_time().unwrap_or("")
        )
    })?;
    let (value_kinds, zs_kind): (&[&str], &str) = match period {
        Period::Instant => (&["Rtd"], "ZsRtd"),
        _ => (&["Avg"], "ZsAvg"),
    };
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for (code, fields) in p.pollutants() {
        let q = find_quantity(&code).filter(|q| q.hj212 == Some(code.as_str()));
        if q.is_none() {
            unknown.push(code.clone());
        }
        let flag = fields
            .get("Flag")
            .and_then(|f| f.parse::<DataFlag>().ok())
            .unwrap_or(DataFlag::N);
        for (kind, converted) in value_kinds
            .iter()
            .map(|k| (*k, false))
            .chain([(zs_kind, true)])
        {
            if let Some(v) = fields.get(kind).and_then(|v| v.parse::<f64>().ok()) {
                out.push(Item {
                    code: code.clone(),
                    quantity: q.map(|q| q.key),
                    kind: kind.to_string(),
                    value: v,
                    unit: wire_unit(&code).or(q.map(|q| q.default_unit)),
                    flag,
                    period,
                    ts_ms,
                    converted,
                });
            }
        }
    }
    Ok((out, unknown))
}

#[cfg(test)]
mod tests {
    use super::codec::{frame, parse_frame, Tolerance};
    use super::*;

    #[test]
    fn data_time_is_cst_and_the_window_start_for_means() {
        // 2026-01-01 10:00:00 CST = 02:00:00 UTC.
        assert_eq!(parse_data_time("20260101100000"), Some(1_767_232_800_000));
        let f = frame("QN=20260101101000000;ST=31;CN=2061;PW=1;MN=DT1;Flag=4;CP=&&DataTime=20260101100000;a21026-Avg=18.2,a21026-ZsAvg=22.1,a21026-Flag=T;a01012-Avg=50.1;zz999-Avg=3&&");
        let p = parse_frame(f.as_bytes(), Tolerance::default()).unwrap();
        let (items, unknown) = items(&p).unwrap();
        assert_eq!(unknown, vec!["zz999"]);
        let so2: Vec<&Item> = items.iter().filter(|i| i.code == "a21026").collect();
        assert_eq!(so2.len(), 2);
        assert_eq!(
            (so2[0].value, so2[0].converted, so2[0].flag, so2[0].period),
            (18.2, false, DataFlag::T, Period::Hour)
        );
        assert_eq!((so2[1].value, so2[1].converted), (22.1, true));
        assert_eq!(so2[0].ts_ms, 1_767_232_800_000, "the hour's start");
        assert_eq!(so2[0].quantity, Some("SO2"));
        let t = items.iter().find(|i| i.code == "a01012").unwrap();
        assert_eq!((t.quantity, t.unit), (Some("flue_temp"), Some("degC")));
    }

    #[test]
    fn real_time_uses_rtd_and_flows_keep_their_wire_units() {
        let f = frame("QN=1;ST=32;CN=2011;PW=1;MN=WW;Flag=4;CP=&&DataTime=20260101100030;w00000-Rtd=12.5;w01018-Rtd=21.0,w01018-Flag=N&&");
        let (items, _) = items(&parse_frame(f.as_bytes(), Tolerance::default()).unwrap()).unwrap();
        let flow = items.iter().find(|i| i.code == "w00000").unwrap();
        assert_eq!(
            (flow.quantity, flow.unit, flow.period),
            (Some("water_flow"), Some("L/s"), Period::Instant)
        );
        assert_eq!(flow.ts_ms, 1_767_232_830_000);
    }
}
