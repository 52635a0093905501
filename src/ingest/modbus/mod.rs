//! Modbus source: polls devices over Modbus TCP, RTU over TCP (serial gateways) and RTU on serial
//! ports (tokio-modbus), decoding each value by its device profile.
//!
//! - [`profile`]: device profiles (`config/profiles/*.toml`).
//! - [`decode`]: data types and word orders.
//! - [`plan`]: as few reads as possible per device.
//! - [`poller`]: one task per connection; schedules, timeouts, reconnects, exceptions.
//!
//! Devices that share an endpoint (a gateway, a serial bus) share one connection and are polled in
//! turn; every endpoint has its own task, so a slow or dead endpoint never delays another.

pub mod decode;
pub mod plan;
pub mod poller;
pub mod profile;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ModbusConfig;
use crate::metrics::Metrics;
use crate::pipeline::deadletter::DeadLetter;
use crate::pipeline::Envelope;
use crate::registry::{Protocol, Registry, RegistryHandle, SensorStatus};
use poller::{Device, Endpoint, Poller, States};
use profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error("Modbus devices are misconfigured:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Devices(Vec<String>),
}

/// The devices of the registry, checked against the profiles (every problem at once).
pub fn devices(
    reg: &Registry,
    profiles: &BTreeMap<String, Profile>,
) -> Result<Vec<Device>, ModbusError> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    for s in reg
        .sensors
        .values()
        .filter(|s| s.protocol == Protocol::Modbus && s.status != SensorStatus::Retired)
    {
        let Some(m) = &s.modbus else { continue };
        let Some(p) = profiles.get(&m.profile) else {
            errs.push(format!(
                "sensor {}: modbus.profile: {:?} does not exist",
                s.id, m.profile
            ));
            continue;
        };
        for v in &p.values {
            let key = crate::catalogue::find_quantity(&v.quantity)
                .map(|q| q.key)
                .unwrap_or("");
            if s.channel(key).is_none() {
                errs.push(format!(
                    "sensor {}: profile {} reads {} but the sensor has no channel for it",
                    s.id, p.id, v.quantity
                ));
            }
        }
        out.push(Device::new(s.id.clone(), m.clone(), p.clone()));
    }
    // Two devices answering to the same unit id on one endpoint would read each other's values.
    let mut seen: BTreeMap<(Endpoint, u8), String> = BTreeMap::new();
    for d in &out {
        if let Some(ep) = Endpoint::of(&d.config) {
            if let Some(other) = seen.insert((ep.clone(), d.config.unit_id), d.sensor.clone()) {
                errs.push(format!(
                    "sensor {}: modbus.unit_id: {} on {} is already used by sensor {other}",
                    d.sensor,
                    d.config.unit_id,
                    ep.describe()
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ModbusError::Devices(errs))
    }
}

/// Start one poller per endpoint; returns their handles and the shared device states.
#[allow(clippy::too_many_arguments)]
pub fn start(
    cfg: &ModbusConfig,
    registry: &RegistryHandle,
    profiles: &BTreeMap<String, Profile>,
    tx: &mpsc::Sender<Envelope>,
    deadletter: &Arc<DeadLetter>,
    metrics: &Metrics,
    max_future_skew: std::time::Duration,
    stop: &CancellationToken,
) -> Result<(Vec<JoinHandle<()>>, States), ModbusError> {
    let all = devices(&registry.snapshot(), profiles)?;
    let mut groups: BTreeMap<Endpoint, Vec<Device>> = BTreeMap::new();
    for d in all {
        if let Some(ep) = Endpoint::of(&d.config) {
            groups.entry(ep).or_default().push(d);
        }
    }
    let states: States = Default::default();
    let mut handles = Vec::new();
    for (endpoint, devices) in groups {
        tracing::info!(endpoint = %endpoint.describe(), devices = devices.len(), "Modbus polling");
        let p = Poller {
            endpoint,
            devices,
            registry: registry.clone(),
            tx: tx.clone(),
            deadletter: deadletter.clone(),
            metrics: metrics.clone(),
            states: states.clone(),
            reconnect_max: cfg.reconnect_max,
            device_backoff_max: cfg.device_backoff_max,
            max_future_skew,
            stop: stop.clone(),
        };
        handles.push(tokio::spawn(p.run()));
    }
    Ok((handles, states))
}
