//! The embedded SQLite database: one file in `daemon.data_dir` holding the registry and, when no
//! InfluxDB is configured, the readings.
//!
//! WAL mode lets the API read while the store writer writes. The schema is created here, in one
//! place, and versioned with `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sites    (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units    (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sensors  (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets  (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
-- Small facts about the database itself (e.g. the digest of the seeds last applied).
CREATE TABLE IF NOT EXISTS meta     (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    sensor   TEXT    NOT NULL,
    quantity TEXT    NOT NULL,
    ts_ms    INTEGER NOT NULL,
    period   TEXT    NOT NULL DEFAULT '',
    site     TEXT    NOT NULL,
    value    REAL    NOT NULL,
    unit     TEXT    NOT NULL,
    flag     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    ts_assumed INTEGER NOT NULL DEFAULT 0,
    domain   TEXT    NOT NULL DEFAULT 'cems',
    PRIMARY KEY (sensor, quantity, ts_ms, period)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts_ms);
-- Standards engine: its input (kept for the lateness window) and its results (kept).
CREATE TABLE IF NOT EXISTS std_input (
    sensor   TEXT    NOT NULL,
    quantity TEXT    NOT NULL,
    ts_ms    INTEGER NOT NULL,
    period   TEXT    NOT NULL,
    value    REAL    NOT NULL,
    flag     TEXT    NOT NULL,
    PRIMARY KEY (sensor, ts_ms, quantity, period)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS std_input_ts ON std_input (ts_ms);
CREATE TABLE IF NOT EXISTS std_results (
    kind     TEXT    NOT NULL,   -- cems_hourly, cems_daily, air_hourly, air_daily, water_daily
    entity   TEXT    NOT NULL,   -- unit id, station (site) id or 'district', sensor id
    ts_ms    INTEGER NOT NULL,   -- hour label (end) or CST day start
    doc      TEXT    NOT NULL,   -- JSON result
    PRIMARY KEY (kind, entity, ts_ms)
) WITHOUT ROWID;
";

/// Open (creating if needed) the database at `path` and bring its schema up to date.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path).map_err(|source| DbError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: every commit is fsynced before it returns, so a batch acknowledged to the broker
    // survives a power loss too. Batching keeps the fsync count low.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(conn)
}
