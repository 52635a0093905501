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
pub mod explain;
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

/// A registered device that cannot be polled, and why.
struct Skipped {
    sensor: String,
    config: crate::registry::ModbusDevice,
    reason: String,
}

/// The devices of the registry, skipping (and logging) any that do not check: used when the
/// registry changes at run time. The skipped ones are returned with their reason, to show as down.
fn devices_lenient(
    reg: &Registry,
    profiles: &BTreeMap<String, Profile>,
) -> (Vec<Device>, Vec<Skipped>) {
    match devices(reg, profiles) {
        Ok(d) => (d, Vec::new()),
        Err(ModbusError::Devices(errs)) => {
            for e in &errs {
                tracing::error!(error = %e, "Modbus device skipped");
            }
            let mut ok = Vec::new();
            let mut skipped = Vec::new();
            for s in reg
                .sensors
                .values()
                .filter(|s| s.protocol == Protocol::Modbus && s.status != SensorStatus::Retired)
            {
                let Some(m) = s.modbus.clone() else { continue };
                let prefix = format!("sensor {}: ", s.id);
                let reasons: Vec<&str> = errs
                    .iter()
                    .filter_map(|e| e.strip_prefix(prefix.as_str()))
                    .collect();
                match profiles.get(&m.profile) {
                    Some(p) if reasons.is_empty() => {
                        ok.push(Device::new(s.id.clone(), m, p.clone()))
                    }
                    _ => skipped.push(Skipped {
                        sensor: s.id.clone(),
                        config: m,
                        reason: reasons.join("; "),
                    }),
                }
            }
            (ok, skipped)
        }
        Err(e) => {
            tracing::error!(error = %e, "Modbus devices not updated");
            (Vec::new(), Vec::new())
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
    /// Devices that cannot be polled show as down with their reason (API, console, metrics), not
    /// vanish; one that no longer is skipped leaves the list (its poller shows it from then on).
    fn show_skipped(&self, skipped: &[Skipped]) {
        let mut st = crate::sync::write(&self.states);
        st.retain(|sensor, d| {
            let keep = d.not_polled.is_none() || skipped.iter().any(|k| &k.sensor == sensor);
            if !keep {
                let _ = self.ctx.metrics.modbus_up.remove_label_values(&[sensor]);
            }
            keep
        });
        for k in skipped {
            st.insert(
                k.sensor.clone(),
                poller::DeviceState {
                    sensor: k.sensor.clone(),
                    endpoint: Endpoint::of(&k.config)
                        .map(|e| e.describe())
                        .unwrap_or_default(),
                    unit_id: k.config.unit_id,
                    profile: k.config.profile.clone(),
                    up: false,
                    last_error: Some(format!("not polled: {}", k.reason)),
                    not_polled: Some(k.reason.clone()),
                    ..Default::default()
                },
            );
            self.ctx
                .metrics
                .modbus_up
                .with_label_values(&[&k.sensor])
                .set(0);
        }
    }

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
            let (planned, skipped) = devices_lenient(&reg, &(self.profiles)());
            for d in planned {
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
            self.show_skipped(&skipped);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose profile does not read what its channels say is skipped with its reason (to
    /// show as down), the others planned.
    #[test]
    fn a_device_that_cannot_be_planned_is_returned_with_its_reason() {
        let seeds = crate::registry::Seeds::embedded().unwrap();
        let mut sensors = seeds.sensors.clone();
        let mut bad = sensors
            .iter()
            .find(|s| s.id == "wwtp-outlet-quality")
            .cloned()
            .unwrap();
        bad.id = "wwtp-outlet-bad".into();
        bad.topic = None;
        if let Some(m) = bad.modbus.as_mut() {
            m.unit_id = 99;
        }
        bad.channels.retain(|c| c.quantity != "COD");
        sensors.push(bad);
        let reg = Registry::build(
            seeds.sites,
            seeds.units,
            sensors,
            seeds.targets,
            "x/{site}/{sensor}",
        )
        .unwrap();
        let profiles = profile::embedded().unwrap();
        let (ok, skipped) = devices_lenient(&reg, &profiles);
        assert!(ok.iter().any(|d| d.sensor == "wwtp-outlet-quality"));
        assert!(!ok.iter().any(|d| d.sensor == "wwtp-outlet-bad"));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].sensor, "wwtp-outlet-bad");
        assert!(
            skipped[0]
                .reason
                .contains("reads COD but the sensor has no channel for it"),
            "{}",
            skipped[0].reason
        );
    }
}
