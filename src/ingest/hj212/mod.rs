//! HJ 212 — the protocol China's CEMS and water stations report in. HJ 212-2025 (in force since
//! 2026-01-01) and HJ 212-2017 are both spoken, decided per frame by the Flag's edition bits.
//!
//! - [`codec`]: frames, editions, CRC, data segment, CP items, sealed (SM4) frames, split packets, a
//!   stream decoder, the encoder.
//! - [`crypto`]: SM4 (ECB, no padding) of the CP region, HJ 212-2025 §6.4.
//! - [`keys`]: the per-logger SM4 keys, a secrets file with rotation overlap.
//! - [`site_info`]: CN 3020 site-unit information and ST 45 conditions, with history.
//! - [`server`]: the TCP server data acquisition units report to.
//!
//! This module maps a packet's CP items to catalogue quantities with their time semantics:
//! `DataTime` is China Standard Time; it is the instant for real-time data (CN 2011) and the
//! window's start for minute (2051), hourly (2061) and daily (2031) data. `-Flag` values become data
//! flags; `-ZsRtd`/`-ZsAvg` (折算, already corrected) values are kept apart from measured ones.

pub mod codec;
pub mod crypto;
pub mod keys;
pub mod server;
pub mod site_info;

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

/// The values of a data packet (CN 2011/2051/2061/2031), the codes it did not know, and the values
/// refused one by one: a value that is not a number (`abc`, empty) and every value of a pollutant
/// whose `-Flag` is not an HJ 212 flag, each with its field and reason (as the MQTT path refuses).
pub type Items = (Vec<Item>, Vec<String>, Vec<Rejection>);

pub fn items(p: &Packet) -> Result<Items, String> {
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
    let mut refused = Vec::new();
    let twice = p.duplicate_fields();
    for (code, fields) in p.pollutants() {
        if let Some(field) = twice
            .iter()
            .find(|f| f.split_once('-').map(|(c, _)| c) == Some(code.as_str()))
        {
            refused.push(Rejection::new(
                RejectReason::InvalidPayload,
                format!(
                    "CP {field} appears twice in the frame; which value is meant is ambiguous, so the pollutant's values are refused"
                ),
            ));
            continue;
        }
        let q = find_quantity(&code).filter(|q| q.hj212 == Some(code.as_str()));
        if q.is_none() {
            unknown.push(code.clone());
        }
        let flag = match fields.get("Flag") {
            None => DataFlag::N,
            Some(f) => match f.parse::<DataFlag>() {
                Ok(flag) => flag,
                Err(_) => {
                    refused.push(Rejection::new(
                        RejectReason::InvalidFlag,
                        format!(
                            "CP {code}-Flag: {f:?} is not an HJ 212 flag (N F M S D C T B); the pollutant's values are refused"
                        ),
                    ));
                    continue;
                }
            },
        };
        for (kind, converted) in value_kinds
            .iter()
            .map(|k| (*k, false))
            .chain([(zs_kind, true)])
        {
            let Some(text) = fields.get(kind) else {
                continue;
            };
            let v = match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => {
                    refused.push(Rejection::new(
                        RejectReason::NonNumeric,
                        format!("CP {code}-{kind}: {text:?} is not a number"),
                    ));
                    continue;
                }
            };
            {
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
    Ok((out, unknown, refused))
}

use crate::pipeline::payload::{CustomPaths, Paths, RawItem};
use crate::pipeline::validate::{self, Context, Decoded};
use crate::pipeline::{RejectReason, Rejection};
use crate::reading::Reading;
use crate::registry::Sensor;

/// Open a frame for its sensor: a sealed one with the logger's key (the current one, then the one
/// it replaced while the rotation overlap lasts); a plain one is refused when it carries what
/// HJ 212-2025 §6.4 encrypts and the logger (or the listener: `require_encryption`) must encrypt.
pub fn open_frame(
    sensor: &Sensor,
    frame: codec::Frame,
    keys: &keys::Keystore,
    listener_requires: bool,
    now_ms: i64,
) -> Result<Packet, Rejection> {
    let settings = sensor.hj212.as_ref();
    let tol = settings.map(|h| h.tolerance).unwrap_or_default();
    match frame {
        codec::Frame::Sealed(s) => {
            let candidates = keys.keys_for(s.mn(), now_ms);
            if candidates.is_empty() {
                return Err(Rejection::new(
                    RejectReason::Encryption,
                    format!(
                        "SM4: CN {} frame from MN {} is encrypted but no key is registered for it (enviromon sensors set-key {})",
                        s.cn(),
                        s.mn(),
                        sensor.id
                    ),
                ));
            }
            let mut why = String::new();
            for k in &candidates {
                match s.open(k, tol) {
                    Ok(p) => return Ok(p),
                    Err(e) => why = e.to_string(),
                }
            }
            let fps: Vec<String> = candidates.iter().map(|k| k.fingerprint()).collect();
            Err(Rejection::new(
                RejectReason::Encryption,
                format!(
                    "SM4: CN {} frame from MN {} does not open with its key (fingerprint {}): {why}",
                    s.cn(),
                    s.mn(),
                    fps.join(", ")
                ),
            ))
        }
        codec::Frame::Plain(p) => {
            let required = listener_requires
                || settings
                    .is_some_and(|h| h.encryption == crate::registry::Hj212Encryption::Required);
            if required && codec::cn_is_encrypted(p.cn()) {
                return Err(Rejection::new(
                    RejectReason::Encryption,
                    format!(
                        "SM4: MN {} must encrypt CN {} (HJ 212-2025 §6.4); its plaintext frame is refused",
                        p.mn(),
                        p.cn()
                    ),
                ));
            }
            Ok(p)
        }
    }
}

/// What an ST 44 (electricity use) or ST 45 (production conditions) packet reports: numbers become
/// readings in their own domain with the HJ 212 code as the quantity (`d20105`, `p99101`; `-Cou`
/// totals as `{code}_cou`) and no unit conversion; other values (ST 45 states such as `St`) are
/// conditions, kept with history in [`site_info`].
pub fn facility_values(
    sensor: &Sensor,
    p: &Packet,
    ctx: &Context,
) -> (Decoded, Vec<site_info::InfoItem>) {
    let mut out = Decoded::default();
    let mut states = Vec::new();
    let domain = if p.st() == "44" {
        crate::reading::Domain::Power
    } else {
        crate::reading::Domain::Production
    };
    let Some(period) = period_of(p.cn()) else {
        return (out, states);
    };
    let Some(ts_ms) = p.data_time().and_then(parse_data_time) else {
        out.rejections.push(Rejection::new(
            RejectReason::InvalidTimestamp,
            format!(
                "CP DataTime {:?} is not YYYYMMDDhhmmss",
                p.data_time().unwrap_or("")
            ),
        ));
        return (out, states);
    };
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    if ts > ctx.now + ctx.max_future_skew {
        out.rejections.push(Rejection::new(
            RejectReason::FutureTimestamp,
            format!("CP DataTime: {} is in the future", ts.to_rfc3339()),
        ));
        return (out, states);
    }
    for (code, fields) in p.pollutants() {
        let flag = match fields.get("Flag").map(|f| f.parse::<DataFlag>()) {
            None => DataFlag::N,
            Some(Ok(f)) => f,
            Some(Err(_)) => {
                out.rejections.push(Rejection::new(
                    RejectReason::InvalidFlag,
                    format!("CP {code}-Flag: {:?} is not an HJ 212 flag", fields["Flag"]),
                ));
                continue;
            }
        };
        for (kind, suffix) in [("Rtd", ""), ("Avg", ""), ("Cou", "_cou")] {
            let Some(text) = fields.get(kind) else {
                continue;
            };
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => out.readings.push(Reading {
                    sensor: sensor.id.clone(),
                    site: sensor.site.clone(),
                    domain,
                    quantity: format!("{code}{suffix}"),
                    value: v,
                    unit: String::new(),
                    ts,
                    flag,
                    source: ctx.source,
                    ts_assumed: false,
                    period,
                }),
                _ if domain == crate::reading::Domain::Production && !text.is_empty() => states
                    .push(site_info::InfoItem {
                        pol: String::new(),
                        code: format!("{code}-{kind}"),
                        value: text.clone(),
                    }),
                _ => out.rejections.push(Rejection::new(
                    RejectReason::NonNumeric,
                    format!("CP {code}-{kind}: {text:?} is not a number"),
                )),
            }
        }
    }
    (out, states)
}

/// Check a packet against the sensor's identity: password and the quirks it may use.
pub fn check_source(sensor: &Sensor, p: &Packet) -> Result<(), Rejection> {
    let settings = sensor.hj212.as_ref();
    if let Some(pw) = settings.and_then(|h| h.password.as_deref()) {
        if p.pw() != pw {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("PW: wrong password for MN {}", p.mn()),
            ));
        }
    }
    let tol = settings.map(|h| h.tolerance).unwrap_or_default();
    if p.crc == codec::CrcKind::ModbusSwapped && !tol.modbus_crc_swapped {
        return Err(Rejection::new(RejectReason::InvalidPayload, "CRC: a byte-swapped MODBUS CRC is not allowed for this source (hj212.tolerance.modbus_crc_swapped)"));
    }
    if p.data_segment().len() > codec::MAX_DATA && !tol.long_frames {
        return Err(Rejection::new(RejectReason::InvalidPayload, "length: frames longer than 1024 are not allowed for this source (hj212.tolerance.long_frames)"));
    }
    if p.qn().is_none() && !tol.missing_qn {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            "QN: missing (hj212.tolerance.missing_qn allows it)",
        ));
    }
    Ok(())
}

/// The readings of a data packet for `sensor`: measured values validated like any other reading;
/// 折算 values (`-ZsRtd`/`-ZsAvg`) stored as their own quantity `{key}_zs` (mg/m3 at reference O2),
/// never converted again; unknown codes refused as `unknown_quantity` (kept in the dead-letter file).
pub fn readings(sensor: &Sensor, p: &Packet, ctx: &Context) -> Decoded {
    let mut out = Decoded::default();
    let (list, unknown, refused) = match items(p) {
        Ok(x) => x,
        Err(why) => {
            out.rejections
                .push(Rejection::new(RejectReason::InvalidPayload, why));
            return out;
        }
    };
    out.rejections.extend(refused);
    for code in unknown {
        out.rejections.push(Rejection::new(
            RejectReason::UnknownQuantity,
            format!("CP: unknown HJ 212 code {code:?} (kept here, not stored)"),
        ));
    }
    for it in list {
        let Some(key) = it.quantity else { continue };
        if it.converted {
            if !it.value.is_finite() {
                continue;
            }
            let Some(q) = find_quantity(key) else {
                continue;
            };
            let ts = chrono::DateTime::from_timestamp_millis(it.ts_ms).unwrap_or_default();
            if ts > ctx.now + ctx.max_future_skew {
                out.rejections.push(Rejection::new(
                    RejectReason::FutureTimestamp,
                    format!("CP DataTime: {} is in the future", ts.to_rfc3339()),
                ));
                continue;
            }
            let flag = if sensor.status == crate::registry::SensorStatus::Maintenance
                && it.flag == DataFlag::N
            {
                DataFlag::M
            } else {
                it.flag
            };
            out.readings.push(Reading {
                sensor: sensor.id.clone(),
                site: sensor.site.clone(),
                domain: sensor.domain,
                quantity: format!("{}_zs", q.key),
                value: it.value,
                unit: q.default_unit.to_string(),
                ts,
                flag,
                source: ctx.source,
                ts_assumed: false,
                period: it.period,
            });
            continue;
        }
        let path = format!("CP {}-{}", it.code, it.kind);
        let raw = RawItem {
            quantity: serde_json::Value::from(key),
            value: serde_json::Value::from(it.value),
            // HJ 212's units are the flue-gas ones (mg/m³); an ambient station's logger reports
            // in the station's units (µg/m³, CO mg/m³), which the channel's unit says.
            unit: if sensor.domain == crate::reading::Domain::Air && wire_unit(&it.code).is_none() {
                None
            } else {
                it.unit.map(serde_json::Value::from)
            },
            ts: Some(serde_json::Value::from(it.ts_ms)),
            flag: Some(serde_json::Value::from(it.flag.as_str())),
            period: Some(serde_json::Value::from(match it.period {
                Period::Instant => "instant",
                Period::Minute => "1min",
                Period::Hour => "1h",
                Period::Day => "1d",
            })),
            paths: Paths::custom(CustomPaths {
                quantity: path.clone(),
                value: path.clone(),
                unit: path.clone(),
                ts: "CP DataTime".into(),
                flag: format!("CP {}-Flag", it.code),
                period: "CN".into(),
            }),
        };
        match validate::validate_item(sensor, &raw, ctx) {
            Ok(r) => out.readings.push(r),
            Err(r) => out.rejections.push(r),
        }
    }
    out
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
        let (items, unknown, _) = items(&p).unwrap();
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

    /// A value that is not a number, an empty one, and a flag HJ 212 does not define are each
    /// refused with their field and reason; the good values of the same frame are kept.
    #[test]
    fn bad_values_and_flags_are_refused_one_by_one() {
        let f = frame("QN=20260101101000000;ST=31;CN=2051;PW=1;MN=DT1;Flag=4;CP=&&DataTime=20260101100000;a21026-Avg=abc,a21026-Flag=N;a21002-Avg=,a21002-Flag=N;a34013-Avg=3.1,a34013-Flag=Z;a19001-Avg=9.0,a19001-Flag=N&&");
        let (items, unknown, refused) =
            items(&parse_frame(f.as_bytes(), Tolerance::default()).unwrap()).unwrap();
        assert!(unknown.is_empty());
        // Only O2 (a19001) survives.
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].code, "a19001");
        let mut why: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
        why.sort();
        assert_eq!(
            why,
            vec![
                "invalid_flag: CP a34013-Flag: \"Z\" is not an HJ 212 flag (N F M S D C T B); the pollutant's values are refused".to_string(),
                "non_numeric: CP a21002-Avg: \"\" is not a number".to_string(),
                "non_numeric: CP a21026-Avg: \"abc\" is not a number".to_string(),
            ]
        );
    }

    #[test]
    fn real_time_uses_rtd_and_flows_keep_their_wire_units() {
        let f = frame("QN=1;ST=32;CN=2011;PW=1;MN=WW;Flag=4;CP=&&DataTime=20260101100030;w00000-Rtd=12.5;w01018-Rtd=21.0,w01018-Flag=N&&");
        let (items, _, _) =
            items(&parse_frame(f.as_bytes(), Tolerance::default()).unwrap()).unwrap();
        let flow = items.iter().find(|i| i.code == "w00000").unwrap();
        assert_eq!(
            (flow.quantity, flow.unit, flow.period),
            (Some("water_flow"), Some("L/s"), Period::Instant)
        );
        assert_eq!(flow.ts_ms, 1_767_232_830_000);
    }

    fn logger(encryption: crate::registry::Hj212Encryption) -> Sensor {
        let toml = format!(
            "id = \"l\"\nsite = \"s\"\nunit = \"u\"\nname_zh = \"z\"\nname_en = \"e\"\ndomain = \"cems\"\nprotocol = \"hj212\"\nhj212 = {{ mn = \"MN1\", encryption = \"{}\" }}\nchannels = [{{ quantity = \"SO2\" }}]\n",
            match encryption {
                crate::registry::Hj212Encryption::Required => "required",
                crate::registry::Hj212Encryption::Optional => "optional",
            }
        );
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn a_field_given_twice_refuses_its_pollutant_alone() {
        // a21026-Avg twice (in two groups): 12 or 99? Neither is stored; O2 is.
        let f = frame("QN=20260101101000000;ST=31;CN=2051;PW=1;MN=DT1;Flag=4;CP=&&DataTime=20260101100000;a21026-Avg=12,a21026-Flag=N;a19001-Avg=9.0,a19001-Flag=N;a21026-Avg=99&&");
        let (items, _, refused) =
            items(&parse_frame(f.as_bytes(), Tolerance::default()).unwrap()).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].code, "a19001");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].reason, RejectReason::InvalidPayload);
        assert!(
            refused[0].detail.contains("a21026-Avg appears twice"),
            "{}",
            refused[0].detail
        );
    }

    #[test]
    fn plaintext_is_refused_where_the_logger_or_the_listener_requires_encryption() {
        use crate::registry::Hj212Encryption::{Optional, Required};
        let keys = keys::Keystore::memory(std::time::Duration::from_secs(60));
        let data = frame(
            "QN=1;ST=31;CN=2051;PW=1;MN=MN1;Flag=9;CP=&&DataTime=20260101000000;a21026-Avg=1&&",
        );
        let heartbeat = frame("QN=1;ST=31;CN=9015;PW=1;MN=MN1;Flag=9;CP=&&&&");
        let plain = |f: &str| codec::parse_any(f.as_bytes(), Tolerance::default()).unwrap();
        // (logger, listener) → data refused?
        for (enc, listener, refused) in [
            (Optional, false, false),
            (Required, false, true),
            (Optional, true, true),
        ] {
            let r = open_frame(&logger(enc), plain(&data), &keys, listener, 0);
            assert_eq!(r.is_err(), refused, "{enc:?} {listener}");
            if let Err(rej) = r {
                assert_eq!(rej.reason, RejectReason::Encryption);
            }
            // What §6.4 does not encrypt (a heartbeat) is never refused for being plain.
            assert!(open_frame(&logger(enc), plain(&heartbeat), &keys, listener, 0).is_ok());
        }
        // A sealed frame from a logger with no key: refused, saying how to set one.
        let sealed = parse_frame(data.as_bytes(), Tolerance::default())
            .unwrap()
            .encode_sealed(&crypto::Key::new([7; 16]))
            .unwrap();
        let r = open_frame(&logger(Optional), plain(&sealed), &keys, false, 0).unwrap_err();
        assert!(
            r.detail.contains("no key is registered") && r.detail.contains("set-key"),
            "{}",
            r.detail
        );
        keys.set("MN1", Some(&crypto::Key::new([7; 16])), "t", 0)
            .unwrap();
        let p = open_frame(&logger(Required), plain(&sealed), &keys, true, 1).unwrap();
        assert!(p.encrypted);
    }

    #[test]
    fn electricity_and_conditions_have_their_own_domains() {
        let f = frame("QN=1;ST=45;CN=2011;PW=1;MN=MN1;Flag=9;CP=&&DataTime=20260101000000;p99101-Rtd=St,p99101-Flag=N;p99104-Rtd=81.5,p99104-Flag=N&&");
        let p = parse_frame(f.as_bytes(), Tolerance::default()).unwrap();
        let ctx = Context {
            now: chrono::Utc::now(),
            max_future_skew: chrono::Duration::minutes(5),
            source: crate::reading::Source::Hj212,
        };
        let (d, states) = facility_values(
            &logger(crate::registry::Hj212Encryption::Optional),
            &p,
            &ctx,
        );
        assert_eq!(d.readings.len(), 1);
        assert_eq!(
            (
                d.readings[0].domain,
                d.readings[0].quantity.as_str(),
                d.readings[0].value
            ),
            (crate::reading::Domain::Production, "p99104", 81.5)
        );
        assert_eq!(states.len(), 1);
        assert_eq!(
            (states[0].code.as_str(), states[0].value.as_str()),
            ("p99101-Rtd", "St")
        );
        assert!(d.rejections.is_empty());
        // In ST 44 every value is a number: a word is refused, with its item named.
        let f = frame(
            "QN=1;ST=44;CN=2011;PW=1;MN=MN1;Flag=9;CP=&&DataTime=20260101000000;d20105-Rtd=abc&&",
        );
        let p = parse_frame(f.as_bytes(), Tolerance::default()).unwrap();
        let (d, states) = facility_values(
            &logger(crate::registry::Hj212Encryption::Optional),
            &p,
            &ctx,
        );
        assert!(d.readings.is_empty() && states.is_empty());
        assert!(
            d.rejections[0].detail.contains("d20105-Rtd"),
            "{:?}",
            d.rejections
        );
    }
}
