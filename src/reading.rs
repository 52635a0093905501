//! The one `Reading` type that flows from every source, through validation, to every store.
//!
//! Everything downstream (stores, standards, alerts, the API) speaks this type, so a new source only
//! has to produce it. Values are already in the sensor channel's unit when a `Reading` exists: the
//! conversion happened in `pipeline::validate`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// HJ 212 data flags (数据标记), HJ 212-2017 Table 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum DataFlag {
    /// 正常 normal.
    #[default]
    N,
    /// 停运 source stopped (unit not running).
    F,
    /// 维护 maintenance.
    M,
    /// 手工输入 manual entry.
    S,
    /// 故障 instrument fault.
    D,
    /// 校准 calibration.
    C,
    /// 超测上限 over the instrument's range.
    T,
    /// 通讯异常 communication failure.
    B,
}

impl DataFlag {
    /// All flags, in the standard's order.
    pub const ALL: [DataFlag; 8] = [
        DataFlag::N,
        DataFlag::F,
        DataFlag::M,
        DataFlag::S,
        DataFlag::D,
        DataFlag::C,
        DataFlag::T,
        DataFlag::B,
    ];

    /// The single letter used on the wire and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFlag::N => "N",
            DataFlag::F => "F",
            DataFlag::M => "M",
            DataFlag::S => "S",
            DataFlag::D => "D",
            DataFlag::C => "C",
            DataFlag::T => "T",
            DataFlag::B => "B",
        }
    }
}

impl fmt::Display for DataFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flag string that is not one of the eight HJ 212 letters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown data flag {0:?} (expected one of N F M S D C T B)")]
pub struct UnknownFlag(pub String);

impl FromStr for DataFlag {
    type Err = UnknownFlag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataFlag::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFlag(s.to_string()))
    }
}

/// Where a reading entered the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Mqtt,
    Modbus,
    Hj212,
    Api,
    /// History brought in by `enviromon import`.
    Import,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Modbus => "modbus",
            Source::Hj212 => "hj212",
            Source::Api => "api",
            Source::Import => "import",
        }
    }
}

/// What a sensor measures and where its readings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Flue-gas CEMS (line-protocol measurement `cems`).
    Cems,
    /// Ambient air (`air`).
    Air,
    /// Water quality and flow (`water`).
    Water,
    /// Electricity use of production and treatment facilities (`power`; HJ 212-2025 ST 44).
    Power,
    /// Key production conditions (`production`; HJ 212-2025 ST 45).
    Production,
}

impl Domain {
    pub fn measurement(self) -> &'static str {
        match self {
            Domain::Cems => "cems",
            Domain::Air => "air",
            Domain::Water => "water",
            Domain::Power => "power",
            Domain::Production => "production",
        }
    }
}

/// What a value stands for in time: one sample, or a mean over a window. For windows the
/// timestamp is the window's **start** (HJ 212 DataTime for minute/hour/day data).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// An instantaneous (real-time) sample.
    #[default]
    Instant,
    /// A one-minute mean.
    Minute,
    /// An hourly mean.
    Hour,
    /// A daily mean.
    Day,
}

impl Period {
    /// Tag value in stores ("" for samples).
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Instant => "",
            Period::Minute => "1min",
            Period::Hour => "1h",
            Period::Day => "1d",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "instant" | "sample" | "rtd" => Some(Period::Instant),
            "1min" | "1m" | "minute" | "min" => Some(Period::Minute),
            "1h" | "hour" | "hourly" => Some(Period::Hour),
            "1d" | "day" | "daily" => Some(Period::Day),
            _ => None,
        }
    }
}

/// Millisecond-precision UTC timestamp (what every store keeps).
pub type Timestamp = DateTime<Utc>;

/// Truncate a timestamp to whole milliseconds, the precision every store keeps; two readings that
/// differ below a millisecond are the same point.
pub fn to_ms_precision(ts: Timestamp) -> Timestamp {
    let ms = ts.timestamp_millis();
    Utc.timestamp_millis_opt(ms).single().unwrap_or(ts)
}

/// One validated measurement of one quantity by one sensor at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Registry id of the sensor (instrument) that measured it.
    pub sensor: String,
    /// Registry id of the site the sensor belongs to (a tag in every store).
    pub site: String,
    /// The sensor's domain: chooses the store's measurement (`cems`, `air`, `water`).
    pub domain: Domain,
    /// Catalogue key of the quantity, e.g. `SO2`, `PM2.5`, `NH3-N`.
    pub quantity: String,
    /// The value in `unit` (the sensor channel's configured unit).
    pub value: f64,
    /// Canonical spelling of the unit, e.g. `mg/m3`, `ug/m3`, `mg/L`.
    pub unit: String,
    /// Measurement time, UTC, millisecond precision.
    pub ts: Timestamp,
    /// HJ 212 data flag.
    pub flag: DataFlag,
    /// Which source produced it.
    pub source: Source,
    /// A sample, or a mean over a minute/hour/day starting at `ts`.
    #[serde(default, skip_serializing_if = "is_instant")]
    pub period: Period,
    /// True when the payload carried no timestamp and the receive time was used instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ts_assumed: bool,
}

fn is_instant(p: &Period) -> bool {
    *p == Period::Instant
}

impl Reading {
    /// Epoch milliseconds of `ts`.
    pub fn ts_ms(&self) -> i64 {
        self.ts.timestamp_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_case_insensitively_and_reject_unknown_letters() {
        assert_eq!("c".parse::<DataFlag>(), Ok(DataFlag::C));
        assert_eq!(" T ".parse::<DataFlag>(), Ok(DataFlag::T));
        assert!("X".parse::<DataFlag>().is_err());
        assert!("".parse::<DataFlag>().is_err());
        for f in DataFlag::ALL {
            assert_eq!(f.as_str().parse::<DataFlag>(), Ok(f));
        }
    }

    #[test]
    fn ms_precision_truncates_sub_millisecond_parts() {
        let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(
            to_ms_precision(ts).timestamp_nanos_opt(),
            Some(1_700_000_000_123_000_000)
        );
    }
}
