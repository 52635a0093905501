//! Sources: each turns what it receives into `Envelope`s on the pipeline channel.
//!
//! - [`mqtt`]: subscribes to the broker (rumqttc), QoS 1 with manual acknowledgements.

pub mod mqtt;
