//! Validation and normalisation: raw items become `Reading`s in the sensor channel's unit, or
//! rejections with a reason and a field path.
//!
//! Checks, in order: the quantity is in the catalogue and measured by the sensor; the value is a
//! finite number (numeric strings accepted, as many data loggers send them); the unit converts to
//! the channel's unit; the timestamp parses and is not too far in the future; the converted value is
//! inside the channel's plausible range; the flag is an HJ 212 letter.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::payload::{self, kind, RawItem};
use super::{RejectReason, Rejection};
use crate::catalogue::{self, find_quantity, find_unit};
use crate::reading::{to_ms_precision, DataFlag, Period, Reading, Source, Timestamp};
use crate::registry::{Registry, Sensor, SensorStatus};

/// Readings stamped before this are from a device whose clock was never set (2000-01-01T00:00Z).
const EARLIEST_MS: i64 = 946_684_800_000;

/// What validation needs besides the item.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now: Timestamp,
    pub max_future_skew: chrono::Duration,
    pub source: Source,
}

/// The outcome for one message: what is stored and what is dead-lettered.
#[derive(Debug, Default)]
pub struct Decoded {
    pub readings: Vec<Reading>,
    pub rejections: Vec<Rejection>,
}

/// The sensor a topic belongs to, or why the message cannot be taken.
pub fn sensor_for_topic<'r>(reg: &'r Registry, topic: &str) -> Result<&'r Sensor, Rejection> {
    match reg.sensor_for_topic(topic) {
        Some(s) if s.status == SensorStatus::Retired => Err(Rejection::new(
            RejectReason::RetiredSensor,
            format!("topic {topic:?} belongs to retired sensor {}", s.id),
        )),
        Some(s) => Ok(s),
        None => Err(Rejection::new(
            RejectReason::UnknownTopic,
            format!("no sensor is registered for topic {topic:?}"),
        )),
    }
}

/// Decode and validate a whole payload for `sensor`. Good items are kept even when others fail.
pub fn decode_payload(sensor: &Sensor, payload: &[u8], ctx: &Context) -> Decoded {
    let mut out = Decoded::default();
    let (items, refused) = payload::decode_each(payload);
    out.rejections.extend(refused);
    for item in items {
        match validate_item(sensor, &item, ctx) {
            Ok(r) => out.readings.push(r),
            Err(r) => out.rejections.push(r),
        }
    }
    out
}

/// Validate one item against the sensor's channel for its quantity.
pub fn validate_item(sensor: &Sensor, item: &RawItem, ctx: &Context) -> Result<Reading, Rejection> {
    let p = &item.paths;
    // Path strings are rendered only on the error paths below.
    let qpath = || p.quantity();
    let vpath = || p.value();
    let unit_path = || p.unit();
    let Value::String(qname) = &item.quantity else {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!(
                "{}: expected a string, found {}",
                qpath(),
                kind(&item.quantity)
            ),
        ));
    };
    let quantity = find_quantity(qname).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnknownQuantity,
            format!("{}: {qname:?} is not in the quantity catalogue", qpath()),
        )
    })?;
    let channel = sensor.channel(quantity.key).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnconfiguredQuantity,
            format!(
                "{}: sensor {} does not measure {}",
                qpath(),
                sensor.id,
                quantity.key
            ),
        )
    })?;
    let raw = match &item.value {
        Value::Number(n) => n.as_f64().ok_or_else(|| {
            Rejection::new(
                RejectReason::NonNumeric,
                format!("{}: {n} is not a usable number", vpath()),
            )
        })?,
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| {
            Rejection::new(
                RejectReason::NonNumeric,
                format!("{}: {s:?} is not a number", vpath()),
            )
        })?,
        other => {
            return Err(Rejection::new(
                RejectReason::NonNumeric,
                format!("{}: expected a number, found {}", vpath(), kind(other)),
            ))
        }
    };
    if !raw.is_finite() {
        return Err(Rejection::new(
            RejectReason::NonFinite,
            format!("{}: {raw} is not a finite number", vpath()),
        ));
    }
    let from_unit = match &item.unit {
        None | Some(Value::Null) => channel.unit,
        Some(Value::String(u)) => find_unit(u).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnitMismatch,
                format!("{}: unknown unit {u:?}", unit_path()),
            )
        })?,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::UnitMismatch,
                format!("{}: expected a string, found {}", unit_path(), kind(other)),
            ))
        }
    };
    let value = catalogue::convert(
        raw,
        from_unit,
        channel.unit,
        quantity,
        catalogue::GasReference::of(sensor.domain),
    )
    .map_err(|e| Rejection::new(RejectReason::UnitMismatch, format!("{}: {e}", unit_path())))?;
    let (ts, ts_assumed) = match &item.ts {
        None | Some(Value::Null) => (to_ms_precision(ctx.now), true),
        Some(v) => (
            parse_ts(v).map_err(|why| {
                Rejection::new(RejectReason::InvalidTimestamp, format!("{}: {why}", p.ts()))
            })?,
            false,
        ),
    };
    if ts > ctx.now + ctx.max_future_skew {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!(
                "{}: {} is more than {}s ahead of the daemon's clock ({})",
                p.ts(),
                ts.to_rfc3339(),
                ctx.max_future_skew.num_seconds(),
                ctx.now.to_rfc3339()
            ),
        ));
    }
    if value < channel.min || value > channel.max {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!(
                "{}: {value} {} is outside the plausible range {}..={} of {}",
                vpath(),
                channel.unit.symbol,
                channel.min,
                channel.max,
                sensor.id
            ),
        ));
    }
    let mut flag = match &item.flag {
        None | Some(Value::Null) => DataFlag::N,
        Some(Value::String(s)) => s
            .parse::<DataFlag>()
            .map_err(|e| Rejection::new(RejectReason::InvalidFlag, format!("{}: {e}", p.flag())))?,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::InvalidFlag,
                format!("{}: expected a string, found {}", p.flag(), kind(other)),
            ))
        }
    };
    let period = match &item.period {
        None | Some(Value::Null) => Period::Instant,
        Some(Value::String(s)) => Period::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidPayload,
                format!("{}: {s:?} is not a period (1min, 1h, 1d)", p.period()),
            )
        })?,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{}: expected a string, found {}", p.period(), kind(other)),
            ))
        }
    };
    if sensor.status == SensorStatus::Maintenance && flag == DataFlag::N {
        flag = DataFlag::M;
    }
    Ok(Reading {
        sensor: sensor.id.clone(),
        site: sensor.site.clone(),
        domain: sensor.domain,
        quantity: quantity.key.to_string(),
        value,
        unit: channel.unit.symbol.to_string(),
        ts,
        flag,
        source: ctx.source,
        ts_assumed,
        period,
    })
}

/// RFC 3339 string, or epoch milliseconds (number or numeric string).
fn parse_ts(v: &Value) -> Result<Timestamp, String> {
    let ms = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("{n} is not epoch milliseconds"))?,
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => {
                let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
                    format!("{s:?} is neither RFC 3339 nor epoch milliseconds ({e})")
                })?;
                return check_epoch(t.with_timezone(&Utc).timestamp_millis());
            }
        },
        other => {
            return Err(format!(
                "expected RFC 3339 or epoch milliseconds, found {}",
                kind(other)
            ))
        }
    };
    check_epoch(ms)
}

fn check_epoch(ms: i64) -> Result<Timestamp, String> {
    if ms < EARLIEST_MS {
        return Err(format!(
            "{ms} ms is before 2000-01-01 (epoch seconds instead of milliseconds, or an unset clock?)"
        ));
    }
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| format!("{ms} ms is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Seeds;

    fn registry() -> Registry {
        let s = Seeds::embedded().unwrap();
        Registry::build(
            s.sites,
            s.units,
            s.sensors,
            s.targets,
            "enviromon/{site}/{sensor}",
        )
        .unwrap()
    }

    fn ctx() -> Context {
        Context {
            now: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
            max_future_skew: chrono::Duration::minutes(5),
            source: Source::Mqtt,
        }
    }

    fn one(sensor: &str, payload: &str) -> Result<Reading, Rejection> {
        let reg = registry();
        let s = &reg.sensors[sensor];
        let mut d = decode_payload(s, payload.as_bytes(), &ctx());
        if let Some(r) = d.rejections.pop() {
            return Err(r);
        }
        Ok(d.readings.pop().unwrap())
    }

    #[test]
    fn a_valid_reading_keeps_exact_value_time_and_flag() {
        let r = one(
            "dt-1-cems",
            r#"{"ts":"2026-11-24T11:59:00.123+08:00","quantity":"SO2","value":12.3,"flag":"c"}"#,
        )
        .unwrap();
        assert_eq!(r.value, 12.3);
        assert_eq!(
            r.ts.timestamp_millis(),
            Utc.with_ymd_and_hms(2026, 11, 24, 3, 59, 0)
                .unwrap()
                .timestamp_millis()
                + 123
        );
        assert_eq!(r.flag, DataFlag::C);
        assert_eq!(
            (r.sensor.as_str(), r.site.as_str(), r.unit.as_str()),
            ("dt-1-cems", "datang", "mg/m3")
        );
        assert!(!r.ts_assumed);
    }

    #[test]
    fn a_missing_timestamp_takes_the_receive_time_and_says_so() {
        let r = one("dt-1-cems", r#"{"quantity":"O2","value":6.1}"#).unwrap();
        assert_eq!(r.ts, ctx().now);
        assert!(r.ts_assumed);
    }

    #[test]
    fn units_convert_to_the_channel_unit() {
        // 10 ppm SO2 × 2.86 = 28.6 mg/m3 (HJ 75-2017 factor M/22.4).
        let r = one(
            "dt-1-cems",
            r#"{"ts":1764000000000,"quantity":"SO2","value":10,"unit":"ppm"}"#,
        )
        .unwrap();
        assert!((r.value - 28.6).abs() < 1e-9);
        // An air station stores ug/m3: 0.035 mg/m3 PM2.5 is 35 ug/m3.
        let r = one(
            "aq-jianxi-1-analyzers",
            r#"{"ts":1764000000000,"quantity":"pm25","value":0.035,"unit":"mg/m3"}"#,
        )
        .unwrap();
        assert!((r.value - 35.0).abs() < 1e-9);
        assert_eq!(r.quantity, "PM2.5");
    }

    #[test]
    fn each_kind_of_bad_item_gets_its_reason_and_path() {
        let cases = [
            (
                r#"{"quantity":"Hg","value":1}"#,
                RejectReason::UnknownQuantity,
                "quantity",
            ),
            (
                r#"{"quantity":"COD","value":1}"#,
                RejectReason::UnconfiguredQuantity,
                "quantity",
            ),
            (
                r#"{"quantity":"SO2","value":"abc"}"#,
                RejectReason::NonNumeric,
                "value",
            ),
            (
                r#"{"quantity":"SO2","value":true}"#,
                RejectReason::NonNumeric,
                "value",
            ),
            (
                r#"{"quantity":"SO2","value":"NaN"}"#,
                RejectReason::NonFinite,
                "value",
            ),
            (
                r#"{"quantity":"SO2","value":"-inf"}"#,
                RejectReason::NonFinite,
                "value",
            ),
            (
                r#"{"quantity":"SO2","value":1,"unit":"mg/L"}"#,
                RejectReason::UnitMismatch,
                "unit",
            ),
            (
                r#"{"quantity":"SO2","value":1,"unit":"furlongs"}"#,
                RejectReason::UnitMismatch,
                "unit",
            ),
            (
                r#"{"quantity":"SO2","value":1,"ts":"yesterday"}"#,
                RejectReason::InvalidTimestamp,
                "ts",
            ),
            (
                r#"{"quantity":"SO2","value":1,"ts":1700000000}"#,
                RejectReason::InvalidTimestamp,
                "ts",
            ),
            (
                r#"{"quantity":"SO2","value":1,"ts":"2026-11-24T12:06:00Z"}"#,
                RejectReason::FutureTimestamp,
                "ts",
            ),
            (
                r#"{"quantity":"SO2","value":-3}"#,
                RejectReason::OutOfRange,
                "value",
            ),
            (
                r#"{"quantity":"O2","value":30}"#,
                RejectReason::OutOfRange,
                "value",
            ),
            (
                r#"{"quantity":"SO2","value":1,"flag":"X"}"#,
                RejectReason::InvalidFlag,
                "flag",
            ),
        ];
        for (payload, reason, path) in cases {
            let e = one("dt-1-cems", payload).unwrap_err();
            assert_eq!(e.reason, reason, "{payload}: {e}");
            assert!(
                e.detail.starts_with(path),
                "{payload}: detail {:?} should start with {path}",
                e.detail
            );
        }
    }

    #[test]
    fn a_timestamp_within_the_skew_is_accepted() {
        assert!(one(
            "dt-1-cems",
            r#"{"quantity":"SO2","value":1,"ts":"2026-11-24T12:04:59Z"}"#
        )
        .is_ok());
    }

    #[test]
    fn good_values_survive_a_bad_neighbour() {
        let reg = registry();
        let d = decode_payload(
            &reg.sensors["dt-1-cems"],
            br#"{"ts":1764000000000,"values":{"SO2":12,"NOx":"bad","PM":2.5}}"#,
            &ctx(),
        );
        assert_eq!(d.readings.len(), 2);
        assert_eq!(d.rejections.len(), 1);
        assert_eq!(d.rejections[0].reason, RejectReason::NonNumeric);
        assert!(
            d.rejections[0].detail.starts_with("values.NOx:"),
            "{}",
            d.rejections[0].detail
        );
    }

    #[test]
    fn topics_resolve_to_sensors_or_say_why_not() {
        let reg = registry();
        assert_eq!(
            sensor_for_topic(&reg, "enviromon/datang/dt-2-cems")
                .unwrap()
                .id,
            "dt-2-cems"
        );
        assert_eq!(
            sensor_for_topic(&reg, "enviromon/x/y").unwrap_err().reason,
            RejectReason::UnknownTopic
        );
    }

    #[test]
    fn maintenance_flags_normal_readings_m() {
        let s = Seeds::embedded().unwrap();
        let mut sensors = s.sensors;
        sensors
            .iter_mut()
            .find(|x| x.id == "dt-1-cems")
            .unwrap()
            .status = SensorStatus::Maintenance;
        let reg = Registry::build(
            s.sites,
            s.units,
            sensors,
            s.targets,
            "enviromon/{site}/{sensor}",
        )
        .unwrap();
        let d = decode_payload(
            &reg.sensors["dt-1-cems"],
            br#"{"quantity":"SO2","value":1}"#,
            &ctx(),
        );
        assert_eq!(d.readings[0].flag, DataFlag::M);
    }
}
