//! InfluxDB 1.x write API (`POST /write?db=&rp=&precision=ms`), the second InfluxDB backend.
//!
//! For InfluxDB 1.x servers without the v2 endpoint (Debian's 1.6, many existing installs) and for
//! Grafana's InfluxQL datasource. Same line protocol and classification as the v2 backend, and
//! `Retry-After` on 429/503 is honoured. Authentication: `u`/`p` query parameters (1.x style).

use std::time::Duration;

use super::{line_protocol, StoreError};
use crate::config::Influx1Config;
use crate::reading::Reading;

#[derive(Debug, thiserror::Error)]
pub enum Influx1BuildError {
    #[error("store.influxdb1.url {0:?} is not a URL")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Secret(#[from] crate::config::ConfigError),
}

#[derive(Debug, Clone)]
pub struct Influx1Store {
    http: reqwest::Client,
    write_url: url::Url,
    /// `/query` with the credentials (never logged: it may carry the password).
    query_url: url::Url,
    database: String,
    create: bool,
}

impl Influx1Store {
    pub fn new(cfg: &Influx1Config) -> Result<Self, Influx1BuildError> {
        let mut write_url = url::Url::parse(&cfg.url)
            .and_then(|u| u.join("write"))
            .map_err(|_| Influx1BuildError::Url(cfg.url.clone()))?;
        {
            let mut q = write_url.query_pairs_mut();
            q.append_pair("db", &cfg.database)
                .append_pair("precision", "ms");
            if let Some(rp) = &cfg.retention_policy {
                q.append_pair("rp", rp);
            }
            if let Some(user) = &cfg.username {
                q.append_pair("u", user);
                if let Some(p) = cfg.resolved_password()? {
                    q.append_pair("p", p.expose());
                }
            }
        }
        let mut query_url = url::Url::parse(&cfg.url)
            .and_then(|u| u.join("query"))
            .map_err(|_| Influx1BuildError::Url(cfg.url.clone()))?;
        if let Some(user) = &cfg.username {
            let mut q = query_url.query_pairs_mut();
            q.append_pair("u", user);
            if let Some(p) = cfg.resolved_password()? {
                q.append_pair("p", p.expose());
            }
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Influx1Store {
            http,
            write_url,
            query_url,
            database: cfg.database.clone(),
            create: cfg.create_database,
        })
    }

    async fn query(&self, method: reqwest::Method, q: &str) -> Result<serde_json::Value, String> {
        // InfluxDB 1.x reads `q` from the URL on GET and from the form on POST.
        let req = if method == reqwest::Method::GET {
            let mut url = self.query_url.clone();
            url.query_pairs_mut().append_pair("q", q);
            self.http.get(url)
        } else {
            self.http
                .request(method, self.query_url.clone())
                .form(&[("q", q)])
        };
        let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        let error = v["error"]
            .as_str()
            .or_else(|| v["results"][0]["error"].as_str());
        match error {
            _ if !status.is_success() => {
                Err(format!("HTTP {}: {}", status.as_u16(), error.unwrap_or("")))
            }
            Some(e) => Err(e.to_string()),
            None => Ok(v),
        }
    }

    /// Make sure the database exists: create it when permitted (`CREATE DATABASE` is idempotent),
    /// else check that it is there. `Err` says why the store cannot work yet.
    pub async fn prepare(&self) -> Result<(), String> {
        let name = self.database.replace('"', "\\\"");
        if self.create {
            return self
                .query(
                    reqwest::Method::POST,
                    &format!("CREATE DATABASE \"{name}\""),
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot create database {:?}: {e}", self.database));
        }
        let v = self
            .query(reqwest::Method::GET, "SHOW DATABASES")
            .await
            .map_err(|e| format!("cannot list databases: {e}"))?;
        let found = v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|row| row[0].as_str() == Some(self.database.as_str()));
        if found {
            Ok(())
        } else {
            Err(format!(
                "database {:?} does not exist (create it, or set store.influxdb1.create_database = true)",
                self.database
            ))
        }
    }

    pub async fn write(&self, batch: &[Reading]) -> Result<(), StoreError> {
        self.write_body(line_protocol::encode(batch)).await
    }

    /// Write line protocol (ms precision) as it is.
    pub async fn write_body(&self, body: String) -> Result<(), StoreError> {
        let resp = self
            .http
            .post(self.write_url.clone())
            .body(body)
            .send()
            .await
            // The URL may carry the password: never include it in the message.
            .map_err(|e| StoreError::retryable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        if status.as_u16() == 404 && text.contains("database not found") && self.create {
            // Dropped under us: create it again; the writer retries the batch.
            match self.prepare().await {
                Ok(()) => {
                    tracing::warn!(database = %self.database, "InfluxDB 1.x database was missing; created it again")
                }
                Err(e) => tracing::warn!(error = %e, "InfluxDB 1.x database is missing"),
            }
        }
        Err(super::classify_http(
            status.as_u16(),
            text.trim(),
            retry_after,
        ))
    }
}
