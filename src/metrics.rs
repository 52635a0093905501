//! Prometheus metrics of the daemon itself, served at `/metrics`.
//!
//! Labels are low-cardinality on purpose: reasons, stores and sources are small fixed sets; no
//! sensor or topic ids (those go in logs and the dead-letter file).

use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::pipeline::RejectReason;

/// Every metric the daemon exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages received from each source (MQTT publishes, …), good or bad.
    pub messages_received: IntCounterVec,
    /// Readings that passed validation, by source.
    pub readings_received: IntCounterVec,
    /// Readings or messages refused, by reason.
    pub readings_rejected: IntCounterVec,
    /// Readings written to a store (2xx / committed), by store. Every write counts: a reading
    /// delivered twice (an MQTT redelivery after a reconnect, a replay after a crash) is written,
    /// and counted, twice; the stores keep one copy (they are idempotent). Hence "written", not
    /// "stored": the readings stored are what the store holds.
    pub readings_written: IntCounterVec,
    /// Failed store writes, by store and kind (retryable, rejected, too_large).
    pub store_errors: IntCounterVec,
    /// Seconds per successful batch write, by store.
    pub store_batch_seconds: HistogramVec,
    /// 1 while the last store write succeeded.
    pub store_writable: IntGauge,
    /// Envelopes waiting in the channel between sources and the writer.
    pub queue_depth: IntGauge,
    /// Readings in the batch being written (or retried).
    pub batch_pending: IntGauge,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: IntGauge,
    /// Connection attempts that failed or connections that dropped.
    pub mqtt_connection_errors: IntCounter,
    /// Acks dropped because they belonged to an earlier connection (the broker redelivers).
    pub mqtt_stale_acks: IntCounter,
    /// Dead-letter records written, and write failures.
    pub deadletter_records: IntCounter,
    pub deadletter_errors: IntCounter,
    /// Refusals held back by the flood limit (counted, summed up in one record later).
    pub deadletter_suppressed: IntCounter,
    /// Times the dead-letter file was rotated at its size bound.
    pub deadletter_rotations: IntCounter,
    /// Readings that carried no timestamp and took the receive time.
    pub timestamps_assumed: IntCounter,
    /// Spool: bytes on disk, bytes not yet stored, oldest unstored record's age, estimated seconds to
    /// drain (-1: unknown, nothing drained yet), 1 while ingest waits for space.
    pub spool_bytes: IntGauge,
    pub spool_unstored_bytes: IntGauge,
    pub spool_oldest_age_seconds: Gauge,
    pub spool_drain_seconds: Gauge,
    pub spool_ingest_paused: IntGauge,
    /// Readings of retained MQTT messages without their own timestamp, not stored
    /// (`mqtt.retained_without_ts = "ignore"`).
    pub mqtt_retained_untimed: IntCounter,
    /// 1 while appends fail because the spool's disk is full (nothing is acknowledged meanwhile).
    pub spool_disk_full: IntGauge,
    /// Seconds ingest has waited for spool space, in total.
    pub spool_paused_seconds: Counter,
    pub spool_appended_readings: IntCounter,
    /// Damaged records detected and skipped.
    pub spool_corrupt_records: IntCounter,
    /// Spool I/O errors (append, read, commit).
    pub spool_errors: IntCounter,
    /// Standards engine: recomputation passes, their duration, readings too late to change results,
    /// and errors (recomputation, export).
    pub standards_recomputes: IntCounter,
    pub standards_recompute_seconds: prometheus::Histogram,
    pub standards_too_late: IntCounter,
    pub standards_errors: IntCounter,
    /// Imported history: hours waiting for the background re-evaluation, and hours done.
    pub standards_backfill_pending: IntGauge,
    pub standards_backfill_hours: IntCounter,
    /// Data integrity: unit evaluations done, and findings made or changed, by rule (eleven ids).
    pub integrity_evaluations: IntCounter,
    pub integrity_findings: IntCounterVec,
    /// Imports: rows by result (stored, duplicate, refused, already_imported, empty) — counted
    /// once per row as the import commits it; and imports by outcome (done, failed).
    pub import_rows: IntCounterVec,
    pub imports: IntCounterVec,
    /// Modbus, per device (the registry's sensor id: a bounded set): 1 while answering, errors by
    /// kind (connect, timeout, transport, exception, decode), poll duration, last success time.
    pub modbus_up: prometheus::IntGaugeVec,
    pub modbus_errors: IntCounterVec,
    pub modbus_poll_seconds: HistogramVec,
    pub modbus_last_success: prometheus::GaugeVec,
    /// How late polls start relative to their schedule.
    pub modbus_schedule_slip: prometheus::Histogram,
    /// HJ 212: open connections, and frames by result (ok, bad, garbage, connection_refused,
    /// refused, oversize_2025, heartbeat, split_dropped), by edition (2005, 2017, 2025, unknown) and encryption.
    pub hj212_connections: IntGauge,
    pub hj212_frames: IntCounterVec,
    pub hj212_frames_by_edition: IntCounterVec,
    /// Readings of re-sent (RF=1, 补传) HJ 212 frames, counted when the spool holds them (once per
    /// acknowledged frame: a frame the logger sends again counts again).
    pub hj212_resent_readings: IntCounter,
    /// CN 3020 site parameters that changed.
    pub hj212_site_parameter_changes: IntCounter,
    /// Alerts by state (pending, firing, resolved) and severity.
    pub alerts: prometheus::IntGaugeVec,
    /// Notifications by receiver and result (sent, retried, failed, dropped).
    pub alert_notifications: IntCounterVec,
    /// Daily briefings by result (made, failed, already_made: due at start but made before).
    pub briefings: IntCounterVec,
    /// Briefing pushes by robot and result (sent, failed): one per briefing and robot.
    pub briefing_pushes: IntCounterVec,
}

/// Registering a metric twice is a programming error caught by the unit test below.
#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let fgauge = |name: &str, help: &str| -> Result<Gauge, MetricsError> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let fcounter = |name: &str, help: &str| -> Result<Counter, MetricsError> {
            let c = Counter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let store_batch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "enviromon_store_batch_seconds",
                "Seconds per successful batch write.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["store"],
        )?;
        registry.register(Box::new(store_batch_seconds.clone()))?;
        let m = Metrics {
            messages_received: counter_vec(
                "enviromon_messages_received_total",
                "Messages received, by source.",
                &["source"],
            )?,
            readings_received: counter_vec(
                "enviromon_readings_received_total",
                "Readings that passed validation, by source.",
                &["source"],
            )?,
            readings_rejected: counter_vec(
                "enviromon_readings_rejected_total",
                "Readings or messages refused and dead-lettered, by reason.",
                &["reason"],
            )?,
            readings_written: counter_vec(
                "enviromon_readings_written_total",
                "Readings written to the store, by store; a reading delivered twice (MQTT redelivery, replay after a restart) is written and counted twice, the store keeps one copy.",
                &["store"],
            )?,
            store_errors: counter_vec(
                "enviromon_store_errors_total",
                "Failed store writes, by store and kind.",
                &["store", "kind"],
            )?,
            store_batch_seconds,
            store_writable: gauge(
                "enviromon_store_writable",
                "1 while the last store write succeeded.",
            )?,
            queue_depth: gauge(
                "enviromon_pipeline_queue_depth",
                "Envelopes queued between sources and the store writer.",
            )?,
            batch_pending: gauge(
                "enviromon_store_batch_pending_readings",
                "Readings in the batch being written or retried.",
            )?,
            mqtt_connected: gauge(
                "enviromon_mqtt_connected",
                "1 while connected to the MQTT broker.",
            )?,
            mqtt_connection_errors: counter(
                "enviromon_mqtt_connection_errors_total",
                "MQTT connection attempts that failed or connections that dropped.",
            )?,
            mqtt_stale_acks: counter(
                "enviromon_mqtt_stale_acks_total",
                "Acks dropped because their connection had ended (the broker redelivers).",
            )?,
            deadletter_records: counter(
                "enviromon_deadletter_records_total",
                "Records written to the dead-letter file.",
            )?,
            deadletter_errors: counter(
                "enviromon_deadletter_errors_total",
                "Dead-letter records that could not be written.",
            )?,
            deadletter_suppressed: counter(
                "enviromon_deadletter_suppressed_total",
                "Refusals not recorded one by one (flood limit); every refusal is still in enviromon_readings_rejected_total.",
            )?,
            deadletter_rotations: counter(
                "enviromon_deadletter_rotations_total",
                "Times the dead-letter file was rotated at pipeline.deadletter_max_bytes.",
            )?,
            timestamps_assumed: counter(
                "enviromon_readings_timestamp_assumed_total",
                "Readings without a timestamp that took the receive time.",
            )?,
            spool_bytes: gauge("enviromon_spool_bytes", "Bytes of spool segments on disk.")?,
            spool_unstored_bytes: gauge(
                "enviromon_spool_unstored_bytes",
                "Spool bytes not yet stored.",
            )?,
            spool_oldest_age_seconds: fgauge(
                "enviromon_spool_oldest_record_age_seconds",
                "Age of the oldest reading waiting in the spool (0 when drained).",
            )?,
            spool_drain_seconds: fgauge(
                "enviromon_spool_drain_seconds_estimate",
                "Estimated seconds to drain the spool at the recent store rate (-1: unknown).",
            )?,
            spool_ingest_paused: gauge(
                "enviromon_spool_ingest_paused",
                "1 while ingest waits for spool space (the spool is at spool.max_bytes).",
            )?,
            mqtt_retained_untimed: counter(
                "enviromon_mqtt_retained_untimed_total",
                "Readings of retained MQTT messages without their own timestamp, not stored (the broker resends them at every subscription).",
            )?,
            spool_disk_full: gauge(
                "enviromon_spool_disk_full",
                "1 while the spool's disk is full: appends fail, messages stay unacknowledged at their source.",
            )?,
            spool_paused_seconds: fcounter(
                "enviromon_spool_ingest_paused_seconds_total",
                "Seconds ingest has waited for spool space.",
            )?,
            spool_appended_readings: counter(
                "enviromon_spool_appended_readings_total",
                "Readings appended to the spool.",
            )?,
            spool_corrupt_records: counter(
                "enviromon_spool_corrupt_records_total",
                "Damaged spool records detected and skipped.",
            )?,
            spool_errors: counter("enviromon_spool_errors_total", "Spool I/O errors.")?,
            standards_recomputes: counter(
                "enviromon_standards_recomputes_total",
                "Standards engine recomputation passes.",
            )?,
            standards_recompute_seconds: {
                let h = prometheus::Histogram::with_opts(HistogramOpts::new(
                    "enviromon_standards_recompute_seconds",
                    "Seconds per standards recomputation pass.",
                ))?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            standards_too_late: counter(
                "enviromon_standards_too_late_readings_total",
                "Readings older than standards.lateness: stored, but not in compliance results.",
            )?,
            standards_errors: counter(
                "enviromon_standards_errors_total",
                "Standards recomputation or result export errors.",
            )?,
            standards_backfill_pending: {
                let g = IntGauge::new(
                    "enviromon_standards_backfill_pending_hours",
                    "Hours of imported history waiting to be re-evaluated.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            standards_backfill_hours: counter(
                "enviromon_standards_backfill_hours_total",
                "Hours of imported history re-evaluated.",
            )?,
            integrity_evaluations: counter(
                "enviromon_integrity_evaluations_total",
                "Units re-evaluated by the data-integrity rules.",
            )?,
            integrity_findings: counter_vec(
                "enviromon_integrity_findings_total",
                "Data-integrity findings made or changed (extended, re-worded), by rule.",
                &["rule"],
            )?,
            import_rows: counter_vec(
                "enviromon_import_rows_total",
                "Imported rows (values for wide tables) by result: stored, duplicate, refused, already_imported, empty.",
                &["result"],
            )?,
            imports: counter_vec(
                "enviromon_imports_total",
                "Imports by outcome (done, failed, already_imported).",
                &["outcome"],
            )?,
            modbus_up: {
                let g = prometheus::IntGaugeVec::new(Opts::new("enviromon_modbus_up", "1 while the Modbus device answers."), &["device"])?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            modbus_errors: counter_vec(
                "enviromon_modbus_errors_total",
                "Modbus errors by device and kind (connect, timeout, transport, exception, decode).",
                &["device", "kind"],
            )?,
            modbus_poll_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new("enviromon_modbus_poll_seconds", "Seconds per Modbus poll.")
                        .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                    &["device"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            modbus_last_success: {
                let g = prometheus::GaugeVec::new(
                    Opts::new("enviromon_modbus_last_success_timestamp_seconds", "Unix time of the device's last successful poll."),
                    &["device"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            hj212_connections: gauge("enviromon_hj212_connections", "Open HJ 212 connections.")?,
            hj212_frames: counter_vec(
                "enviromon_hj212_frames_total",
                "HJ 212 frames by result (ok, bad, garbage, connection_refused, refused, oversize_2025, heartbeat, split_dropped).",
                &["result"],
            )?,
            hj212_frames_by_edition: counter_vec(
                "enviromon_hj212_packets_total",
                "HJ 212 packets opened, by edition (2005, 2017, 2025, unknown) and whether their CP was SM4-encrypted.",
                &["edition", "encrypted"],
            )?,
            hj212_resent_readings: counter(
                "enviromon_hj212_resent_readings_total",
                "Readings of re-sent (RF=1) HJ 212 frames, counted when the spool holds them (a frame the logger sends again counts again).",
            )?,
            hj212_site_parameter_changes: counter(
                "enviromon_hj212_site_parameter_changes_total",
                "CN 3020 site parameters a logger declared with a new value.",
            )?,
            alerts: {
                let g = prometheus::IntGaugeVec::new(Opts::new("enviromon_alerts", "Alerts by state and severity."), &["state", "severity"])?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            alert_notifications: counter_vec(
                "enviromon_alert_notifications_total",
                "Alert notifications by receiver and result (sent, retried, failed, dropped).",
                &["receiver", "result"],
            )?,
            briefings: counter_vec(
                "enviromon_briefings_total",
                "Daily briefings by result (made, failed, already_made).",
                &["result"],
            )?,
            briefing_pushes: counter_vec(
                "enviromon_briefing_pushes_total",
                "Daily briefings pushed to group robots, by robot and result (sent, failed).",
                &["receiver", "result"],
            )?,
            modbus_schedule_slip: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new("enviromon_modbus_schedule_slip_seconds", "How late Modbus polls start.")
                        .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            registry,
        };
        for r in RejectReason::ALL {
            m.readings_rejected.with_label_values(&[r.as_str()]);
        }
        Ok(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_render_every_reject_reason() {
        let m = Metrics::new().unwrap();
        let text = m.render();
        for r in RejectReason::ALL {
            assert!(
                text.contains(&format!(
                    "enviromon_readings_rejected_total{{reason=\"{}\"}} 0",
                    r.as_str()
                )),
                "{r}"
            );
        }
    }
}
