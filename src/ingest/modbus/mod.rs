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

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ModbusConfig;
use crate::registry::{Protocol, Registry, SensorStatus};
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

/// The devices of the registry, skipping (and logging) any that do not check: used when the
/// registry changes at run time, where registration has already validated them.
fn devices_lenient(reg: &Registry, profiles: &BTreeMap<String, Profile>) -> Vec<Device> {
    match devices(reg, profiles) {
        Ok(d) => d,
        Err(ModbusError::Devices(errs)) => {
            for e in &errs {
                tracing::error!(error = %e, "Modbus device skipped");
            }
            reg.sensors
                .values()
                .filter(|s| s.protocol == Protocol::Modbus && s.status != SensorStatus::Retired)
                .filter_map(|s| {
                    let m = s.modbus.clone()?;
                    let p = profiles.get(&m.profile)?.clone();
                    (!errs
                        .iter()
                        .any(|e| e.starts_with(&format!("sensor {}:", s.id))))
                    .then(|| Device::new(s.id.clone(), m, p))
                })
                .collect()
        }
        Err(e) => {
            tracing::error!(error = %e, "Modbus devices not updated");
            Vec::new()
        }
    }
}

/// Where the current profiles come from (registration adds some at run time).
pub type ProfileSource = Arc<dyn Fn() -> BTreeMap<String, Profile> + Send + Sync>;

/// Everything the supervisor needs.
pub struct Supervisor {
    pub config: ModbusConfig,
    /// Registry, channel, dead letters, metrics, skew limit, stop.
    pub ctx: crate::ingest::SourceContext,
    pub profiles: ProfileSource,
    pub states: States,
}

type Running = BTreeMap<
    Endpoint,
    (
        Vec<(String, crate::registry::ModbusDevice, Profile)>,
        CancellationToken,
        JoinHandle<()>,
    ),
>;

impl Supervisor {
    /// Check the registry's devices now (at start: a bad seed stops the daemon with every error).
    pub fn check(&self) -> Result<usize, ModbusError> {
        Ok(devices(&self.ctx.registry.snapshot(), &(self.profiles)())?.len())
    }

    /// Keep one poller per endpoint in line with the registry: a registered device is polled within
    /// one interval, a changed one restarts its endpoint's poller, a retired one stops.
    pub async fn run(self) {
        let mut changes = self.ctx.registry.changes();
        let mut running: Running = BTreeMap::new();
        loop {
            let reg = self.ctx.registry.snapshot();
            let mut desired: BTreeMap<Endpoint, Vec<Device>> = BTreeMap::new();
            for d in devices_lenient(&reg, &(self.profiles)()) {
                if let Some(ep) = Endpoint::of(&d.config) {
                    desired.entry(ep).or_default().push(d);
                }
            }
            let key = |ds: &[Device]| {
                ds.iter()
                    .map(|d| (d.sensor.clone(), d.config.clone(), d.profile.clone()))
                    .collect::<Vec<_>>()
            };
            let stale: Vec<Endpoint> = running
                .iter()
                .filter(|(ep, (k, _, _))| desired.get(*ep).is_none_or(|ds| key(ds) != *k))
                .map(|(ep, _)| ep.clone())
                .collect();
            for ep in stale {
                if let Some((k, token, handle)) = running.remove(&ep) {
                    token.cancel();
                    let _ = handle.await;
                    let mut st = crate::sync::write(&self.states);
                    for (sensor, _, _) in k {
                        st.remove(&sensor);
                        let _ = self.ctx.metrics.modbus_up.remove_label_values(&[&sensor]);
                    }
                }
            }
            for (ep, ds) in desired {
                if running.contains_key(&ep) {
                    continue;
                }
                tracing::info!(endpoint = %ep.describe(), devices = ds.len(), "Modbus polling");
                let token = self.ctx.stop.child_token();
                let k = key(&ds);
                let p = Poller {
                    endpoint: ep.clone(),
                    devices: ds,
                    ctx: crate::ingest::SourceContext {
                        stop: token.clone(),
                        ..self.ctx.clone()
                    },
                    states: self.states.clone(),
                    reconnect_max: self.config.reconnect_max,
                    device_backoff_max: self.config.device_backoff_max,
                };
                running.insert(ep, (k, token, tokio::spawn(p.run())));
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = self.ctx.stop.cancelled() => break,
            }
        }
        for (_, (_, token, handle)) in running {
            token.cancel();
            let _ = handle.await;
        }
    }
}
