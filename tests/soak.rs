//! Soak (issue 14): the real binary with the standards on, fed hours of simulated time at a high
//! sampling rate through Mosquitto, holds its memory flat, and does not grow with the rate.
//!
//! Its own test binary, so the process measured does nothing else. The engine recomputes the
//! current hour of each unit every `standards.interval`; an engine that held an hour's rows would
//! grow with the readings per hour (a unit sampled 50 times a second has 720,000 rows an hour), as
//! would a spool reader that held the rest of a segment. Here one CEMS unit gets two warm-up hours
//! of 60,000 four-value samples (240,000 rows each), then two hours of 120,000 (480,000 rows). A
//! held row costs at least 48 bytes (`String` + timestamp + value + period + flag) plus its
//! quantity's heap bytes, so holding one of the later hours would raise the peak RSS by more than
//! 20 MiB over the warm-up's; folding rows into minute buckets as they are read costs a few KiB
//! per hour. The test waits on conditions (rows stored, the hour's mean as all its samples give it),
//! never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use common::*;
use enviromon::standards::time::{self, HOUR_MS};

/// (VmRSS, VmHWM) of a process, in KiB, from `/proc/{pid}/status`.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples per message: small enough that what the broker may have in flight to the daemon at
/// once (Mosquitto's `max_inflight_messages`, 100 here: 100 × 200 readings) stays a few MiB,
/// so the peak measures the daemon's own holding, not a full in-flight window.
const PER_MESSAGE: i64 = 50;

/// SO2 of sample `k` of an hour of `samples`: cycling through 10..=29 (mean 19.5), except the
/// last 500 samples, at 100.
fn so2(k: i64, samples: i64) -> i64 {
    if k >= samples - 500 {
        100
    } else {
        10 + k % 20
    }
}

/// The hour's SO2 mean computed from all its samples, worked by hand: 60 minutes of
/// `samples / 60` samples; minutes 0–58 average 19.5 (the minute is a multiple of 20 samples);
/// minute 59 holds the 500 at 100 and the rest at 19.5.
fn hour_mean(samples: i64) -> f64 {
    let per_minute = (samples / 60) as f64;
    let m59 = ((per_minute - 500.0) * 19.5 + 500.0 * 100.0) / per_minute;
    (59.0 * 19.5 + m59) / 60.0
}

/// Publish `samples` four-value CEMS samples spread evenly over the hour labelled `hour`, and
/// wait for the broker's acknowledgements.
async fn publish_hour(p: &mut Publisher, hour: i64, samples: i64) {
    let step = HOUR_MS / samples;
    let start = hour - HOUR_MS + 1;
    let mut i = 0;
    while i < samples {
        let end = (i + PER_MESSAGE).min(samples);
        let objects: Vec<String> = (i..end)
            .map(|k| {
                format!(
                    r#"{{"ts":{},"values":{{"SO2":{},"O2":9.0,"NOx":24.0,"PM":2.0}}}}"#,
                    start + k * step,
                    so2(k, samples)
                )
            })
            .collect();
        p.publish(
            "enviromon/datang/dt-1-cems",
            format!("[{}]", objects.join(",")),
        )
        .await;
        i = end;
    }
    p.wait_acked().await;
}

/// Wait until the store holds `rows` readings of the unit's sensor and the hour labelled `hour`
/// has been computed from all of its `samples` (its mean is the one all of them give); return
/// that hour's result.
async fn settle(d: &DaemonProcess, rows: i64, hour: i64, samples: i64) -> serde_json::Value {
    let db = d.db();
    eventually(300, &format!("{rows} readings stored"), || {
        let db = db.clone();
        async move { (embedded_summary(&db, "dt-1-cems").0 >= rows).then_some(()) }
    })
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http_port));
    let path = format!("/api/v1/cems/hourly?unit=dt-1&from={hour}&to={hour}");
    let want = hour_mean(samples);
    eventually(120, "the hour computed from all its samples", || async {
        let v = get_json(addr, &path).await;
        let h = v["results"].get(0)?.clone();
        let measured = h["pollutants"]["SO2"]["measured"].as_f64()?;
        ((measured - want).abs() < 0.01).then_some(h)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_of_fast_cems_samples_leave_memory_flat() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonProcess::start(
        dir.path(),
        broker.port,
        "enviromon-soak",
        "[standards]\ninterval = \"200ms\"\n",
    );
    d.wait_ready().await;
    let pid = d.child.id();
    let mut p = Publisher::connect(broker.port, "pub-soak").await;
    let now = chrono::Utc::now().timestamp_millis();
    // Five whole hours before the current one, inside the default 48 h lateness window.
    let first = time::label(now, HOUR_MS) - 5 * HOUR_MS;

    // Warm-up at the first rate: every buffer on the path (MQTT, channels, spool, store batches,
    // SQLite caches) reaches its working size.
    let mut stored = 0;
    for h in 0..2 {
        publish_hour(&mut p, first + h * HOUR_MS, 60_000).await;
        stored += 60_000 * 4;
        settle(&d, stored, first + h * HOUR_MS, 60_000).await;
    }
    let (rss0, hwm0) = memory_kib(pid);

    // Twice the rate.
    let mut peaks = Vec::new();
    let mut last = serde_json::Value::Null;
    for h in 2..4 {
        publish_hour(&mut p, first + h * HOUR_MS, 120_000).await;
        stored += 120_000 * 4;
        last = settle(&d, stored, first + h * HOUR_MS, 120_000).await;
        peaks.push(memory_kib(pid));
    }

    // The last hour was computed from all its rows: 60 minutes of 2,000 samples each; its
    // mean, (59 × 19.5 + (1500 × 19.5 + 500 × 100) / 2000) / 60 = 1190.125 / 60 = 19.8354…, is
    // what `settle` waited for.
    assert_eq!(last["minutes_with_data"], 60, "{last}");
    let so2 = &last["pollutants"]["SO2"];
    assert_eq!(so2["valid_minutes"], 60, "{last}");
    assert!((hour_mean(120_000) - 1190.125 / 60.0).abs() < 1e-9);

    let (_, hwm_end) = *peaks.last().expect("four hours");
    let growth = hwm_end.saturating_sub(hwm0);
    eprintln!(
        "soak: after the warm-up RSS {rss0} KiB, peak {hwm0} KiB; after each hour at twice the rate (RSS, peak) {peaks:?} KiB; peak growth {growth} KiB"
    );
    assert!(
        growth < 8 * 1024,
        "peak RSS grew by {growth} KiB (from {hwm0} KiB) when the rate doubled to 480,000 rows \
         an hour: something on the path holds rows, not buckets"
    );
}
