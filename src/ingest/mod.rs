//! Sources: each turns what it receives into `Envelope`s on the pipeline channel.
//!
//! - [`mqtt`]: subscribes to the broker (rumqttc), QoS 1 with manual acknowledgements.
//! - [`modbus`]: polls Modbus TCP / RTU devices described by profiles (tokio-modbus).
//! - [`hj212`]: the HJ 212 codec (the TCP server and MQTT payload format are still to come).

pub mod hj212;
pub mod modbus;
pub mod mqtt;
