//! Any bytes as an MQTT JSON payload: decoded and validated without a panic.
#![no_main]

use enviromon::pipeline::validate::{decode_payload, Context};
use enviromon::reading::Source;
use enviromon::registry::{Registry, Seeds};
use libfuzzer_sys::fuzz_target;

static REGISTRY: std::sync::OnceLock<Option<Registry>> = std::sync::OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let reg = REGISTRY.get_or_init(|| {
        let s = Seeds::embedded().ok()?;
        Registry::build(s.sites, s.units, s.sensors, s.targets, "enviromon/{site}/{sensor}").ok()
    });
    let Some(reg) = reg else { return };
    let ctx = Context { now: chrono::Utc::now(), max_future_skew: chrono::Duration::minutes(5), source: Source::Mqtt };
    if let Some(sensor) = reg.sensors.get("dt-1-cems") {
        let _ = decode_payload(sensor, data, &ctx);
    }
});
