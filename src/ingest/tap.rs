//! Taps: a copy of what arrives for one MQTT topic or one HJ 212 MN, for a technician's dry run.
//!
//! A dry run decodes what a device sends against a sensor that is not registered yet (or against a
//! registered one, to show why its messages are refused), without storing anything. The sources
//! offer every message they receive to the taps before looking up its sensor; with no tap open
//! that costs one atomic load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::sync::lock;

/// How many messages a tap holds before it drops the next (a dry run reads a few).
const TAP_DEPTH: usize = 64;

/// An open tap: its id, its key, where its copies go.
type Entry = (u64, String, mpsc::Sender<Vec<u8>>);

#[derive(Default)]
struct Inner {
    open: AtomicUsize,
    taps: Mutex<Vec<Entry>>,
    next: std::sync::atomic::AtomicU64,
}

/// The open taps, shared by the sources and the API.
#[derive(Clone, Default)]
pub struct Taps(Arc<Inner>);

/// An open tap; it closes when dropped.
pub struct Tap {
    taps: Taps,
    id: u64,
    pub rx: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut t = lock(&self.taps.0.taps);
        t.retain(|(id, _, _)| *id != self.id);
        self.taps.0.open.store(t.len(), Ordering::Release);
    }
}

impl Taps {
    /// The key of an MQTT topic.
    pub fn mqtt(topic: &str) -> String {
        format!("mqtt:{topic}")
    }

    /// The key of an HJ 212 logger's MN.
    pub fn hj212(mn: &str) -> String {
        format!("hj212:{mn}")
    }

    /// Open a tap on `key` ([`Taps::mqtt`], [`Taps::hj212`]).
    pub fn listen(&self, key: String) -> Tap {
        let (tx, rx) = mpsc::channel(TAP_DEPTH);
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let mut t = lock(&self.0.taps);
        t.push((id, key, tx));
        self.0.open.store(t.len(), Ordering::Release);
        Tap {
            taps: self.clone(),
            id,
            rx,
        }
    }

    /// Offer a message to the taps open on `key`; never waits (a full tap misses it).
    pub fn offer(&self, key: impl FnOnce() -> String, payload: &[u8]) {
        if self.0.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let key = key();
        for (_, k, tx) in lock(&self.0.taps).iter() {
            if *k == key {
                let _ = tx.try_send(payload.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_sees_its_key_only_and_closes_when_dropped() {
        let taps = Taps::default();
        let mut a = taps.listen(Taps::mqtt("x/a"));
        taps.offer(|| Taps::mqtt("x/b"), b"other");
        taps.offer(|| Taps::mqtt("x/a"), b"mine");
        assert_eq!(a.rx.try_recv().ok(), Some(b"mine".to_vec()));
        assert!(a.rx.try_recv().is_err());
        drop(a);
        assert_eq!(taps.0.open.load(Ordering::Acquire), 0);
        let mut called = false;
        taps.offer(
            || {
                called = true;
                Taps::mqtt("x/a")
            },
            b"none",
        );
        assert!(!called, "with no tap open the key is not even formed");
    }
}
