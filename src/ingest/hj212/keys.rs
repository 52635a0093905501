//! Per-logger SM4 keys (HJ 212-2025 §6.4.3: one key per data logger, registered with the platform
//! and rotated).
//!
//! Keys are secrets: they live in one file of their own (mode 0600, written atomically), never in
//! the registry database, its exports, the API's answers or the logs; records and answers name a
//! key by its [`Key::fingerprint`]. A rotation keeps the previous key for an overlap window, so
//! frames the logger sent (or buffered) under the old key still open while the new one takes over.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::crypto::{CryptoError, Key};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("SM4 keys file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("SM4 keys file {path} does not parse: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("SM4 key for MN {mn}: {source}")]
    Key { mn: String, source: CryptoError },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Previous {
    key: String,
    /// Frames under this key are opened until then (epoch ms).
    until_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    set_at_ms: i64,
    set_by: String,
    #[serde(default)]
    previous: Option<Previous>,
}

/// What the API and the audit log may say about a logger's key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStatus {
    pub fingerprint: String,
    pub set_at: String,
    pub set_by: String,
    /// The key it replaced, while frames under it are still accepted.
    pub previous_fingerprint: Option<String>,
    pub previous_valid_until: Option<String>,
}

/// A key change, for the audit log (fingerprints only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyChange {
    pub mn: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The daemon's SM4 keys, by MN.
pub struct Keystore {
    path: Option<PathBuf>,
    overlap_ms: i64,
    inner: RwLock<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.path)
            .field("loggers", &self.read().len())
            .finish()
    }
}

fn rfc3339(ms: i64) -> String {
    crate::standards::time::cst_rfc3339(ms)
}

impl Keystore {
    /// Keys held in memory only (tests, the CLI).
    pub fn memory(overlap: std::time::Duration) -> Keystore {
        Keystore {
            path: None,
            overlap_ms: overlap.as_millis().min(i64::MAX as u128) as i64,
            inner: RwLock::new(BTreeMap::new()),
        }
    }

    /// Open (or start) the keys file at `path`. Every key in it is checked.
    pub fn open(path: &Path, overlap: std::time::Duration) -> Result<Keystore, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let map: BTreeMap<String, Entry> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeyError::Parse {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        for (mn, e) in &map {
            let keys = std::iter::once(&e.key).chain(e.previous.as_ref().map(|p| &p.key));
            for k in keys {
                Key::from_hex(k).map_err(|source| KeyError::Key {
                    mn: mn.clone(),
                    source,
                })?;
            }
        }
        Ok(Keystore {
            path: Some(path.to_path_buf()),
            overlap_ms: overlap.as_millis().min(i64::MAX as u128) as i64,
            inner: RwLock::new(map),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        crate::sync::read(&self.inner)
    }

    /// The keys that may open a frame from `mn` now: the current one first, then the previous one
    /// inside its overlap window.
    pub fn keys_for(&self, mn: &str, now_ms: i64) -> Vec<Key> {
        let map = self.read();
        let Some(e) = map.get(mn) else {
            return Vec::new();
        };
        let mut out: Vec<Key> = Key::from_hex(&e.key).into_iter().collect();
        if let Some(p) = e.previous.as_ref().filter(|p| now_ms < p.until_ms) {
            out.extend(Key::from_hex(&p.key));
        }
        out
    }

    pub fn status(&self, mn: &str, now_ms: i64) -> Option<KeyStatus> {
        let map = self.read();
        let e = map.get(mn)?;
        let prev = e.previous.as_ref().filter(|p| now_ms < p.until_ms);
        Some(KeyStatus {
            fingerprint: Key::from_hex(&e.key).ok()?.fingerprint(),
            set_at: rfc3339(e.set_at_ms),
            set_by: e.set_by.clone(),
            previous_fingerprint: prev
                .and_then(|p| Key::from_hex(&p.key).ok().map(|k| k.fingerprint())),
            previous_valid_until: prev.map(|p| rfc3339(p.until_ms)),
        })
    }

    /// Set `mn`'s key (`None` removes it). The key it replaces keeps opening frames for the
    /// overlap window. Persisted before it returns; blocking file I/O.
    pub fn set(
        &self,
        mn: &str,
        key: Option<&Key>,
        by: &str,
        now_ms: i64,
    ) -> Result<KeyChange, KeyError> {
        let mut map = crate::sync::write(&self.inner);
        let before = map.get(mn).cloned();
        let fp = |hex: &str| Key::from_hex(hex).ok().map(|k| k.fingerprint());
        let mut next = map.clone();
        match key {
            Some(k) => {
                let previous = before
                    .as_ref()
                    .filter(|e| e.key != k.to_hex())
                    .map(|e| Previous {
                        key: e.key.clone(),
                        until_ms: now_ms.saturating_add(self.overlap_ms),
                    })
                    .or_else(|| before.as_ref().and_then(|e| e.previous.clone()));
                next.insert(
                    mn.to_string(),
                    Entry {
                        key: k.to_hex(),
                        set_at_ms: now_ms,
                        set_by: by.to_string(),
                        previous,
                    },
                );
            }
            None => {
                next.remove(mn);
            }
        }
        self.persist(&next)?;
        *map = next;
        Ok(KeyChange {
            mn: mn.to_string(),
            before: before.and_then(|e| fp(&e.key)),
            after: key.map(|k| k.fingerprint()),
        })
    }

    fn persist(&self, map: &BTreeMap<String, Entry>) -> Result<(), KeyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(map).map_err(|source| KeyError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap_then_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/hj212-keys.json");
        let ks = Keystore::open(&path, Duration::from_secs(600)).unwrap();
        let (a, b) = (Key::new([1; 16]), Key::new([2; 16]));
        let c = ks.set("MN1", Some(&a), "tech", 1_000).unwrap();
        assert_eq!((c.before, c.after.clone()), (None, Some(a.fingerprint())));
        ks.set("MN1", Some(&b), "logger (CN 1014)", 2_000).unwrap();
        assert_eq!(ks.keys_for("MN1", 2_001), vec![b.clone(), a.clone()]);
        // 600 s after the rotation the old key no longer opens anything.
        assert_eq!(ks.keys_for("MN1", 2_000 + 600_000), vec![b.clone()]);
        assert!(ks.keys_for("MN2", 0).is_empty());
        // Persisted, owner-only, and re-read the same.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        let again = Keystore::open(&path, Duration::from_secs(600)).unwrap();
        assert_eq!(again.keys_for("MN1", 2_001), vec![b.clone(), a]);
        let st = again.status("MN1", 2_001).unwrap();
        assert_eq!(st.fingerprint, b.fingerprint());
        assert_eq!(st.set_by, "logger (CN 1014)");
        // Status and Debug name keys by fingerprint only.
        let shown = format!("{st:?}{again:?}");
        assert!(!shown.contains(&b.to_hex()), "{shown}");
        again.set("MN1", None, "tech", 3_000).unwrap();
        assert!(again.keys_for("MN1", 3_001).is_empty());
    }
}
