//! `enviromon demo`: the daemon's main job on embedded defaults, on one machine with nothing
//! installed.
//!
//! Starts an embedded MQTT broker on loopback (rumqttd; or uses `--broker HOST:PORT`), the
//! simulators publishing over real MQTT, the daemon with the embedded store, and the HTTP API.

pub mod broker;
pub mod integrity;
pub mod modbus_sim;
pub mod simulator;
