//! An embedded MQTT broker for the demo (rumqttd), listening on loopback only.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("embedded broker configuration: {0}")]
    Config(String),
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// Pick a free loopback port (bind to port 0 and release it).
pub fn free_port() -> Result<u16, BrokerError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Port)?;
    Ok(l.local_addr().map_err(BrokerError::Port)?.port())
}

/// Start rumqttd on `127.0.0.1:port` in a background thread; it lives as long as the process.
pub fn start(port: u16) -> Result<SocketAddr, BrokerError> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let toml = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "demo"
listen = "{addr}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 1000
dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&toml).map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(addr)
}
