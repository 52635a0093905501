//! The embedded store: readings in SQLite (`data_dir/enviromon.db`), the default when no InfluxDB is
//! configured.
//!
//! `(sensor, quantity, ts_ms)` is the primary key and writes are `INSERT OR REPLACE`, so a replayed
//! reading is the same row. A batch is one transaction, committed with `synchronous = FULL` before
//! the writer acknowledges anything. Reads for the API use their own connection (WAL mode).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::db;
use crate::reading::{DataFlag, Domain, Reading, Source};
use crate::sync::lock;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("embedded store query: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("embedded store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Writer side (one connection, used by the store writer).
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, EmbeddedError> {
        Ok(EmbeddedStore {
            conn: Arc::new(Mutex::new(db::open(path)?)),
            path: path.to_path_buf(),
        })
    }

    /// A read-only handle for the API, on its own connection.
    pub fn reader(&self) -> Result<EmbeddedReader, EmbeddedError> {
        Ok(EmbeddedReader {
            conn: Arc::new(Mutex::new(db::open(&self.path)?)),
        })
    }

    pub async fn write(&self, batch: &[Reading]) -> Result<(), StoreError> {
        let conn = self.conn.clone();
        let batch = batch.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut c = lock(&conn);
            write_batch(&mut c, &batch)
        })
        .await
        .map_err(|e| StoreError::retryable(format!("write task failed: {e}")))?
        .map_err(|e| StoreError::retryable(e.to_string()))
    }

    /// Delete readings older than `retention`; returns the number deleted.
    pub async fn purge_older_than(&self, retention: Duration) -> Result<usize, EmbeddedError> {
        let conn = self.conn.clone();
        let cutoff =
            Utc::now().timestamp_millis() - retention.as_millis().min(i64::MAX as u128) as i64;
        Ok(tokio::task::spawn_blocking(move || {
            lock(&conn).execute("DELETE FROM readings WHERE ts_ms < ?1", [cutoff])
        })
        .await??)
    }
}

fn write_batch(c: &mut Connection, batch: &[Reading]) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO readings
             (sensor, quantity, ts_ms, period, site, value, unit, flag, source, ts_assumed, domain)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.sensor,
                r.quantity,
                r.ts_ms(),
                r.period.as_str(),
                r.site,
                r.value,
                r.unit,
                r.flag.as_str(),
                r.source.as_str(),
                r.ts_assumed,
                r.domain.measurement(),
            ])?;
        }
    }
    tx.commit()
}

/// A history query.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub sensor: String,
    pub quantity: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// Newest first (the `limit` newest), else oldest first.
    pub newest_first: bool,
}

/// Read side, for the API and start-up.
#[derive(Debug, Clone)]
pub struct EmbeddedReader {
    conn: Arc<Mutex<Connection>>,
}

fn row_to_reading(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reading> {
    let ts_ms: i64 = r.get("ts_ms")?;
    let flag: String = r.get("flag")?;
    let source: String = r.get("source")?;
    let domain: String = r.get("domain")?;
    Ok(Reading {
        sensor: r.get("sensor")?,
        site: r.get("site")?,
        domain: match domain.as_str() {
            "air" => Domain::Air,
            "water" => Domain::Water,
            "power" => Domain::Power,
            "production" => Domain::Production,
            _ => Domain::Cems,
        },
        quantity: r.get("quantity")?,
        value: r.get("value")?,
        unit: r.get("unit")?,
        ts: Utc.timestamp_millis_opt(ts_ms).single().unwrap_or_default(),
        flag: flag.parse().unwrap_or(DataFlag::N),
        source: match source.as_str() {
            "modbus" => Source::Modbus,
            "hj212" => Source::Hj212,
            "api" => Source::Api,
            "import" => Source::Import,
            _ => Source::Mqtt,
        },
        ts_assumed: r.get("ts_assumed")?,
        period: {
            let p: String = r.get("period")?;
            crate::reading::Period::parse(&p).unwrap_or_default()
        },
    })
}

impl EmbeddedReader {
    /// For each reading, whether the store already holds it with the same value, unit and flag
    /// (blocking: the importer's thread).
    pub fn same_blocking(&self, batch: &[Reading]) -> Result<Vec<bool>, EmbeddedError> {
        let c = lock(&self.conn);
        let mut stmt = c.prepare_cached(
            "SELECT value, unit, flag FROM readings WHERE sensor = ?1 AND quantity = ?2 AND ts_ms = ?3 AND period = ?4",
        )?;
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            let found: Option<(f64, String, String)> = stmt
                .query_row(
                    params![r.sensor, r.quantity, r.ts_ms(), r.period.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            out.push(
                found.is_some_and(|(v, u, f)| v == r.value && u == r.unit && f == r.flag.as_str()),
            );
        }
        Ok(out)
    }

    /// Readings of one sensor in `[from, to]`, oldest first, at most `limit`.
    pub async fn history(&self, q: Query) -> Result<Vec<Reading>, EmbeddedError> {
        let conn = self.conn.clone();
        Ok(
            tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<Reading>> {
                let c = lock(&conn);
                let mut stmt = c.prepare_cached(if q.newest_first {
                    "SELECT * FROM readings
                 WHERE sensor = ?1 AND (?2 IS NULL OR quantity = ?2)
                   AND ts_ms >= ?3 AND ts_ms <= ?4
                 ORDER BY ts_ms DESC, quantity LIMIT ?5"
                } else {
                    "SELECT * FROM readings
                 WHERE sensor = ?1 AND (?2 IS NULL OR quantity = ?2)
                   AND ts_ms >= ?3 AND ts_ms <= ?4
                 ORDER BY ts_ms, quantity LIMIT ?5"
                })?;
                let rows = stmt.query_map(
                    params![
                        q.sensor,
                        q.quantity,
                        q.from_ms.unwrap_or(i64::MIN),
                        q.to_ms.unwrap_or(i64::MAX),
                        q.limit as i64
                    ],
                    row_to_reading,
                )?;
                rows.collect()
            })
            .await??,
        )
    }

    /// The newest reading of every (sensor, quantity), to fill the latest-values map at start.
    pub async fn latest_all(&self) -> Result<Vec<Reading>, EmbeddedError> {
        let conn = self.conn.clone();
        Ok(tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<Reading>> {
            let c = lock(&conn);
            let mut stmt = c.prepare(
                "SELECT r.* FROM readings r
                 JOIN (SELECT sensor, quantity, MAX(ts_ms) AS m FROM readings WHERE period = '' GROUP BY sensor, quantity) l
                   ON r.sensor = l.sensor AND r.quantity = l.quantity AND r.ts_ms = l.m AND r.period = ''",
            )?;
            let rows = stmt.query_map([], row_to_reading)?;
            rows.collect()
        })
        .await??)
    }

    /// Number of stored readings (tests, diagnostics).
    pub async fn count(&self) -> Result<i64, EmbeddedError> {
        let conn = self.conn.clone();
        Ok(tokio::task::spawn_blocking(move || {
            lock(&conn)
                .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
                .optional()
                .map(|v| v.unwrap_or(0))
        })
        .await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts_ms: i64, v: f64) -> Reading {
        Reading {
            sensor: "dt-1-cems".into(),
            site: "datang".into(),
            domain: Domain::Cems,
            quantity: "SO2".into(),
            value: v,
            unit: "mg/m3".into(),
            ts: Utc.timestamp_millis_opt(ts_ms).unwrap(),
            flag: DataFlag::N,
            source: Source::Mqtt,
            ts_assumed: false,
            period: crate::reading::Period::Instant,
        }
    }

    #[tokio::test]
    async fn replays_are_the_same_row_and_history_is_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("e.db")).unwrap();
        s.write(&[r(2000, 2.0), r(1000, 1.0)]).await.unwrap();
        s.write(&[r(2000, 2.5)]).await.unwrap();
        let reader = s.reader().unwrap();
        assert_eq!(reader.count().await.unwrap(), 2);
        let h = reader
            .history(Query {
                sensor: "dt-1-cems".into(),
                limit: 10,
                newest_first: false,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            h.iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![1.0, 2.5]
        );
        assert_eq!(reader.latest_all().await.unwrap()[0].value, 2.5);
    }

    #[tokio::test]
    async fn retention_deletes_only_readings_older_than_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("e.db")).unwrap();
        let now = Utc::now().timestamp_millis();
        let day = 86_400_000;
        s.write(&[
            r(now - 10 * day, 1.0),
            r(now - 2 * day, 2.0),
            r(now - 1000, 3.0),
        ])
        .await
        .unwrap();
        let deleted = s
            .purge_older_than(Duration::from_secs(3 * 86_400))
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let left = s
            .reader()
            .unwrap()
            .history(Query {
                sensor: "dt-1-cems".into(),
                limit: 10,
                newest_first: false,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![2.0, 3.0]
        );
    }
}
