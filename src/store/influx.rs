//! InfluxDB v2 write API (`POST /api/v2/write?org=&bucket=&precision=ms`) through the `influxdb2`
//! crate. Works with InfluxDB 2.x and 3.x, 1.8+ (v2 compatibility endpoint), and other servers of the
//! same API such as VictoriaMetrics.
//!
//! Errors are classified for the writer: connection failures, timeouts, 429 and 5xx are retried;
//! 413 splits the batch; any other 4xx means the data is bad and is bisected to dead-letter exactly
//! the offending lines.

use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::RequestError;

use super::{line_protocol, StoreError};
use crate::config::InfluxConfig;
use crate::reading::Reading;

#[derive(Debug, thiserror::Error)]
pub enum InfluxBuildError {
    #[error("store.influxdb.url {0:?} is not a URL")]
    Url(String),
    #[error("cannot build the InfluxDB client: {0}")]
    Client(String),
    #[error(transparent)]
    Secret(#[from] crate::config::ConfigError),
}

#[derive(Debug, Clone)]
pub struct InfluxStore {
    client: influxdb2::Client,
    org: String,
    bucket: String,
}

impl InfluxStore {
    pub fn new(cfg: &InfluxConfig) -> Result<Self, InfluxBuildError> {
        // ClientBuilder panics on a bad URL: check first (config validation did too).
        url::Url::parse(&cfg.url).map_err(|_| InfluxBuildError::Url(cfg.url.clone()))?;
        let token = cfg
            .resolved_token()?
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let http = reqwest::ClientBuilder::new()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(5));
        let client =
            influxdb2::ClientBuilder::with_builder(http, cfg.url.clone(), cfg.org.clone(), token)
                .build()
                .map_err(|e| InfluxBuildError::Client(e.to_string()))?;
        Ok(InfluxStore {
            client,
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
        })
    }

    pub async fn write(&self, batch: &[Reading]) -> Result<(), StoreError> {
        self.write_body(line_protocol::encode(batch)).await
    }

    /// Write line protocol (ms precision) as it is.
    pub async fn write_body(&self, body: String) -> Result<(), StoreError> {
        self.client
            .write_line_protocol_with_precision(
                &self.org,
                &self.bucket,
                body,
                TimestampPrecision::Milliseconds,
            )
            .await
            .or_else(classify)
    }
}

/// The crate calls anything but 204 an error; any 2xx is success here. The crate does not pass on
/// response headers, so a `Retry-After` from a v2 server cannot be honoured: the writer's capped
/// exponential backoff applies instead.
fn classify(e: RequestError) -> Result<(), StoreError> {
    Err(match e {
        RequestError::Http { status, .. } if status.is_success() => return Ok(()),
        RequestError::Http { status, text } => {
            super::classify_http(status.as_u16(), text.trim(), None)
        }
        other => StoreError::retryable(other.to_string()),
    })
}
