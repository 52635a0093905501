//! Sources: each turns what it receives into `Envelope`s on the pipeline channel.
//!
//! - [`mqtt`]: subscribes to the broker (rumqttc), QoS 1 with manual acknowledgements; JSON
//!   payloads, or HJ 212 frames for loggers registered with `format = "hj212"`.
//! - [`modbus`]: polls Modbus TCP / RTU devices described by profiles (tokio-modbus).
//! - [`hj212`]: the HJ 212-2017 / 2025 codec and the TCP server data loggers connect to.
//!
//! Every source is handed the same [`SourceContext`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::deadletter::DeadLetter;
use crate::pipeline::Envelope;
use crate::registry::RegistryHandle;

pub mod hj212;
pub mod modbus;
pub mod mqtt;
pub mod tap;

/// What every source needs: what is registered, where readings go (the spooler's channel),
/// where refusals go, the metrics, how far ahead of the clock a timestamp may be, when to stop
/// taking data, and the dry runs' taps.
#[derive(Clone)]
pub struct SourceContext {
    pub registry: RegistryHandle,
    pub tx: mpsc::Sender<Envelope>,
    pub deadletter: Arc<DeadLetter>,
    pub metrics: Metrics,
    /// `pipeline.max_future_skew`.
    pub max_future_skew: Duration,
    pub stop: CancellationToken,
    /// Copies of what arrives, for dry runs.
    pub taps: tap::Taps,
}
