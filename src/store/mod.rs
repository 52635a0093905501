//! Stores: where validated readings end up.
//!
//! - [`embedded`]: SQLite in the data directory, the default, so the daemon runs anywhere.
//! - [`influx`]: InfluxDB's v2 write API through the `influxdb2` crate (InfluxDB 2.x/3.x, 1.8+, and
//!   any server of `/api/v2/write`, e.g. VictoriaMetrics).
//!
//! Both are idempotent: a reading's identity is (measurement, site, sensor, quantity, timestamp),
//! so a replayed reading overwrites itself instead of adding a point.

pub mod embedded;
pub mod influx;
pub mod line_protocol;
pub mod spool;

use crate::reading::Reading;

/// How a write failed, which decides what the writer does next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, timeout, 429, 5xx, database busy: try again later.
    #[error("store unavailable: {0}")]
    Retryable(String),
    /// The store says the data itself is bad (4xx): bisect and dead-letter the offending readings.
    #[error("store rejected the data: {0}")]
    Rejected(String),
    /// The batch is too large (413): split it.
    #[error("batch too large: {0}")]
    TooLarge(String),
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Retryable(_) => "retryable",
            StoreError::Rejected(_) => "rejected",
            StoreError::TooLarge(_) => "too_large",
        }
    }
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum Store {
    Embedded(embedded::EmbeddedStore),
    Influx(influx::InfluxStore),
}

impl Store {
    /// Label value for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Influx(_) => "influxdb",
        }
    }

    /// Write a batch; `Ok` means durable (committed / 2xx).
    pub async fn write(&self, batch: &[Reading]) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.write(batch).await,
            Store::Influx(s) => s.write(batch).await,
        }
    }
}
