//! Stores: where validated readings end up.
//!
//! - [`embedded`]: SQLite in the data directory, the default, so the daemon runs anywhere.
//! - [`influx`]: InfluxDB's v2 write API through the `influxdb2` crate (InfluxDB 2.x/3.x, 1.8+, and
//!   any server of `/api/v2/write`, e.g. VictoriaMetrics).
//! - [`influx1`]: InfluxDB 1.x's `/write` API, for 1.x servers and Grafana's InfluxQL.
//! - [`spool`]: the durable queue in front of whichever store is configured.
//!
//! The three stores are idempotent: a reading's identity is (measurement, site, sensor, quantity,
//! timestamp), so a replayed reading overwrites itself instead of adding a point.

pub mod embedded;
pub mod influx;
pub mod influx1;
pub mod line_protocol;
pub mod spool;

use std::time::Duration;

use crate::reading::Reading;

/// How a write failed, which decides what the writer does next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, timeout, 429, 5xx, database busy: try again later (not before
    /// `retry_after` when the server said so).
    #[error("store unavailable: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The store says the data itself is bad (4xx): bisect and dead-letter the offending readings.
    #[error("store rejected the data: {0}")]
    Rejected(String),
    /// The batch is too large (413): split it.
    #[error("batch too large: {0}")]
    TooLarge(String),
}

/// Classify an HTTP answer that was not 2xx.
pub fn classify_http(status: u16, text: &str, retry_after: Option<Duration>) -> StoreError {
    let message = format!("HTTP {status}: {text}");
    match status {
        413 => StoreError::TooLarge(message),
        // 401/403/404: credentials, database or bucket wrong — an operator fixes it; never drop data.
        401 | 403 | 404 | 408 | 429 => StoreError::Retryable {
            message,
            retry_after,
        },
        400..=499 => StoreError::Rejected(message),
        _ => StoreError::Retryable {
            message,
            retry_after,
        },
    }
}

impl StoreError {
    pub fn retryable(message: impl Into<String>) -> Self {
        StoreError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Retryable { .. } => "retryable",
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
    Influx1(influx1::Influx1Store),
}

impl Store {
    /// Label value for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Influx(_) => "influxdb",
            Store::Influx1(_) => "influxdb1",
        }
    }

    /// Write derived results as line protocol (ms precision). The embedded store keeps results in
    /// its own tables, so this is a no-op there.
    pub async fn write_lines(&self, body: String) -> Result<(), StoreError> {
        match self {
            Store::Embedded(_) => Ok(()),
            Store::Influx(s) => s.write_body(body).await,
            Store::Influx1(s) => s.write_body(body).await,
        }
    }

    /// Write a batch; `Ok` means durable (committed / 2xx).
    pub async fn write(&self, batch: &[Reading]) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.write(batch).await,
            Store::Influx(s) => s.write(batch).await,
            Store::Influx1(s) => s.write(batch).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_classified_for_the_writer() {
        assert!(matches!(
            classify_http(400, "field type conflict", None),
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            classify_http(422, "", None),
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            classify_http(413, "", None),
            StoreError::TooLarge(_)
        ));
        let e = classify_http(429, "slow down", Some(Duration::from_secs(7)));
        assert!(
            matches!(e, StoreError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        for s in [401, 403, 404, 500, 502, 503] {
            assert_eq!(classify_http(s, "", None).kind(), "retryable", "{s}");
        }
    }
}
