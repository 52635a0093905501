//! The path between sources and stores: decoding payloads, validating readings, dead-lettering what
//! cannot be stored, and the batching writer.
//!
//! Sources turn what they receive into an [`Envelope`] (readings plus, for MQTT and HJ 212, the token
//! that acknowledges the message) and send it on one bounded channel. The [`spooler`] appends the
//! readings to the durable spool and only then fires the acknowledgements, in arrival order; the
//! [`writer`] reads the spool, writes to the store and commits the spool after the store has them.
//! A full channel makes sources wait: backpressure reaches the broker (unacked QoS 1 messages stay
//! queued there) instead of anything being dropped.

pub mod deadletter;
pub mod payload;
pub mod spooler;
pub mod validate;
pub mod writer;

use std::fmt;

use crate::reading::Reading;

/// Why a payload or a reading was refused. The label is a Prometheus label value: keep the set
/// small and fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    EmptyPayload,
    PayloadTooLarge,
    NotJson,
    InvalidPayload,
    UnknownTopic,
    RetiredSensor,
    UnknownQuantity,
    UnconfiguredQuantity,
    NonNumeric,
    NonFinite,
    UnitMismatch,
    InvalidTimestamp,
    FutureTimestamp,
    OutOfRange,
    InvalidFlag,
    StoreRejected,
    /// HJ 212-2025 SM4: no key, a frame that does not open or check, or plaintext from a logger
    /// that must encrypt.
    Encryption,
    /// Readings the spool's record format cannot hold (a field longer than it allows).
    SpoolEncoding,
}

impl RejectReason {
    pub const ALL: [RejectReason; 18] = [
        RejectReason::EmptyPayload,
        RejectReason::PayloadTooLarge,
        RejectReason::NotJson,
        RejectReason::InvalidPayload,
        RejectReason::UnknownTopic,
        RejectReason::RetiredSensor,
        RejectReason::UnknownQuantity,
        RejectReason::UnconfiguredQuantity,
        RejectReason::NonNumeric,
        RejectReason::NonFinite,
        RejectReason::UnitMismatch,
        RejectReason::InvalidTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::OutOfRange,
        RejectReason::InvalidFlag,
        RejectReason::StoreRejected,
        RejectReason::Encryption,
        RejectReason::SpoolEncoding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::EmptyPayload => "empty_payload",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::NotJson => "not_json",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::RetiredSensor => "retired_sensor",
            RejectReason::UnknownQuantity => "unknown_quantity",
            RejectReason::UnconfiguredQuantity => "unconfigured_quantity",
            RejectReason::NonNumeric => "non_numeric",
            RejectReason::NonFinite => "non_finite",
            RejectReason::UnitMismatch => "unit_mismatch",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidFlag => "invalid_flag",
            RejectReason::StoreRejected => "store_rejected",
            RejectReason::Encryption => "encryption",
            RejectReason::SpoolEncoding => "spool_encoding",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal with the human-readable detail (field path and what was wrong).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Called once the envelope's readings are stored (or dead-lettered): acknowledges the message to
/// its source. Must not block.
pub trait Acknowledge: Send + fmt::Debug {
    fn ack(self: Box<Self>);
}

/// What travels from a source to the spooler: zero or more readings and the acknowledgement to fire
/// once they are durable. An envelope with no readings still carries its ack, so acks stay in
/// arrival order (MQTT 3.1.1 §4.6).
#[derive(Debug)]
pub struct Envelope {
    pub readings: Vec<Reading>,
    pub ack: Option<Box<dyn Acknowledge>>,
}
