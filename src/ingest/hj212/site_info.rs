//! What loggers declare about their site, with history: CN 3020 site-unit information (instrument
//! ranges, stack cross-section, velocity-field coefficient, …) and the non-numeric production
//! conditions of ST 45 (e.g. a unit's running state).
//!
//! A declared parameter is evidence: a smaller stack area understates the mass emission. So every
//! value is kept with the time it was first declared and the time it was replaced, and a change of a
//! CN 3020 value is returned to the caller (audited, and raised as the `site_parameters_changed`
//! alert). Blocking (SQLite): call from `spawn_blocking`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::codec::Packet;

#[derive(Debug, thiserror::Error)]
pub enum SiteInfoError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("site information: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfoKind {
    /// CN 3020 site-unit information.
    SiteParameter,
    /// An ST 45 production condition that is not a number.
    Condition,
}

impl InfoKind {
    fn as_str(self) -> &'static str {
        match self {
            InfoKind::SiteParameter => "site_parameter",
            InfoKind::Condition => "condition",
        }
    }
    fn parse(s: &str) -> InfoKind {
        if s == "condition" {
            InfoKind::Condition
        } else {
            InfoKind::SiteParameter
        }
    }
}

/// One declared value: for pollutant `pol` (`PolId`, empty when none), code `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfoItem {
    pub pol: String,
    pub code: String,
    pub value: String,
}

/// The `-Info` items of a CN 3020 packet. A `PolId=` item names the pollutant the items after it
/// belong to (until the next `PolId`).
pub fn info_items(p: &Packet) -> Vec<InfoItem> {
    let mut pol = String::new();
    let mut out = Vec::new();
    for (k, v) in p.cp.iter().flatten() {
        if k == "PolId" {
            pol = v.clone();
        } else if let Some(code) = k.strip_suffix("-Info") {
            out.push(InfoItem {
                pol: pol.clone(),
                code: code.to_string(),
                value: v.clone(),
            });
        }
    }
    out
}

/// A value as recorded, with what it replaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declared {
    pub mn: String,
    pub sensor: String,
    pub kind: InfoKind,
    pub pol: String,
    pub code: String,
    pub value: String,
    /// The value it replaced (None: the first declaration).
    pub before: Option<String>,
    /// When it was declared (the frame's DataTime), epoch ms.
    pub since_ms: i64,
    /// When it was replaced, if it was.
    pub until_ms: Option<i64>,
}

pub struct SiteInfo {
    conn: Mutex<Connection>,
}

impl SiteInfo {
    pub fn open(db_path: &Path) -> Result<SiteInfo, SiteInfoError> {
        let conn = crate::db::open(db_path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS hj212_info (mn TEXT NOT NULL, sensor TEXT NOT NULL,
                 kind TEXT NOT NULL, pol TEXT NOT NULL, code TEXT NOT NULL, value TEXT NOT NULL,
                 before TEXT, since_ms INTEGER NOT NULL, until_ms INTEGER);
             CREATE INDEX IF NOT EXISTS hj212_info_current ON hj212_info (mn, kind, pol, code, until_ms);
             CREATE INDEX IF NOT EXISTS hj212_info_since ON hj212_info (since_ms);",
        )?;
        Ok(SiteInfo {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        crate::sync::lock(&self.conn)
    }

    /// Record what a logger declared at `ts_ms`. Returns the values that changed (a first
    /// declaration is recorded but is not a change). The same value again changes nothing.
    pub fn record(
        &self,
        mn: &str,
        sensor: &str,
        kind: InfoKind,
        items: &[InfoItem],
        ts_ms: i64,
    ) -> Result<Vec<Declared>, SiteInfoError> {
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock before reading the current values, so a writer on
        // another connection (the store, the engine) makes this wait, never fail on its snapshot.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut changed = Vec::new();
        for it in items {
            let current: Option<(i64, String)> = tx
                .query_row(
                    "SELECT rowid, value FROM hj212_info WHERE mn = ?1 AND kind = ?2 AND pol = ?3
                     AND code = ?4 AND until_ms IS NULL",
                    params![mn, kind.as_str(), it.pol, it.code],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok();
            if current.as_ref().is_some_and(|(_, v)| *v == it.value) {
                continue;
            }
            if let Some((rowid, _)) = &current {
                tx.execute(
                    "UPDATE hj212_info SET until_ms = ?1 WHERE rowid = ?2",
                    params![ts_ms, rowid],
                )?;
            }
            let before = current.map(|(_, v)| v);
            tx.execute(
                "INSERT INTO hj212_info (mn, sensor, kind, pol, code, value, before, since_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    mn,
                    sensor,
                    kind.as_str(),
                    it.pol,
                    it.code,
                    it.value,
                    before,
                    ts_ms
                ],
            )?;
            if before.is_some() {
                changed.push(Declared {
                    mn: mn.into(),
                    sensor: sensor.into(),
                    kind,
                    pol: it.pol.clone(),
                    code: it.code.clone(),
                    value: it.value.clone(),
                    before,
                    since_ms: ts_ms,
                    until_ms: None,
                });
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Declared>, SiteInfoError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(Declared {
                mn: r.get(0)?,
                sensor: r.get(1)?,
                kind: InfoKind::parse(&r.get::<_, String>(2)?),
                pol: r.get(3)?,
                code: r.get(4)?,
                value: r.get(5)?,
                before: r.get(6)?,
                since_ms: r.get(7)?,
                until_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// CN 3020 values changed at or after `since_ms`, oldest first.
    pub fn changes_since(&self, since_ms: i64) -> Result<Vec<Declared>, SiteInfoError> {
        self.query(
            "SELECT mn, sensor, kind, pol, code, value, before, since_ms, until_ms FROM hj212_info
             WHERE kind = 'site_parameter' AND before IS NOT NULL AND since_ms >= ?1
             ORDER BY since_ms, rowid LIMIT 10000",
            [since_ms],
        )
    }

    /// Everything a logger declared, current and past, oldest first.
    pub fn history(&self, mn: &str) -> Result<Vec<Declared>, SiteInfoError> {
        self.query(
            "SELECT mn, sensor, kind, pol, code, value, before, since_ms, until_ms FROM hj212_info
             WHERE mn = ?1 ORDER BY since_ms, rowid LIMIT 100000",
            [mn],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{frame, parse_frame, Tolerance};
    use super::*;

    #[test]
    fn a_changed_declaration_is_kept_with_what_it_replaced() {
        let f = frame("QN=20260101000000000;ST=31;CN=3020;PW=1;MN=DT1;Flag=8;CP=&&DataTime=20260101000000;PolId=a34013;i13004-Info=6.06;i13013-Info=1.02&&");
        let p = parse_frame(f.as_bytes(), Tolerance::default()).unwrap();
        let items = info_items(&p);
        assert_eq!(items.len(), 2);
        assert_eq!(
            (
                items[0].pol.as_str(),
                items[0].code.as_str(),
                items[0].value.as_str()
            ),
            ("a34013", "i13004", "6.06")
        );
        let dir = tempfile::tempdir().unwrap();
        let si = SiteInfo::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(
            si.record("DT1", "s", InfoKind::SiteParameter, &items, 1)
                .unwrap()
                .is_empty(),
            "a first declaration is no change"
        );
        assert!(
            si.record("DT1", "s", InfoKind::SiteParameter, &items, 2)
                .unwrap()
                .is_empty(),
            "the same again"
        );
        let smaller = vec![InfoItem {
            pol: "a34013".into(),
            code: "i13004".into(),
            value: "3.5".into(),
        }];
        let ch = si
            .record("DT1", "s", InfoKind::SiteParameter, &smaller, 3)
            .unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(
            (ch[0].before.as_deref(), ch[0].value.as_str()),
            (Some("6.06"), "3.5")
        );
        assert_eq!(si.changes_since(3).unwrap().len(), 1);
        assert!(si.changes_since(4).unwrap().is_empty());
        let h = si.history("DT1").unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[0].until_ms,
            Some(3),
            "the old area ends when the new one is declared"
        );
    }
}
