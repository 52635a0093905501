//! The registry of sites, emission units, sensors and plan targets.
//!
//! Seeded from `seeds/*.toml` (compiled in, or a configured directory) into the embedded database on
//! start: a seed entry is inserted only when its id is not there yet, so a later start changes
//! nothing and entries edited through the API are kept. The daemon reads an immutable snapshot
//! (`Arc<Registry>`) that is swapped whole when the registry changes, so lookups on the ingest path
//! never wait for a writer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::catalogue::{self, find_quantity, find_unit, GasReference};
pub use crate::reading::Domain;

/// Seed files compiled into the binary (the repository's `seeds/`).
pub const EMBEDDED_SEEDS: [(&str, &str); 4] = [
    ("sites.toml", include_str!("../seeds/sites.toml")),
    ("units.toml", include_str!("../seeds/units.toml")),
    ("sensors.toml", include_str!("../seeds/sensors.toml")),
    ("targets.toml", include_str!("../seeds/targets.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seed file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("registry is inconsistent:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("registry database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("registry record {id}: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

/// What kind of place a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    PowerPlant,
    WastewaterPlant,
    RiverSection,
    AirStation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub kind: SiteKind,
    /// The plan names this site; false for names made up to complete the district's picture.
    #[serde(default)]
    pub illustrative: bool,
    #[serde(default)]
    pub note: Option<String>,
    /// Air stations: the pollutants in the station's monitoring plan (HJ 633-2026 §5.3.2), of SO2,
    /// NO2, PM10, PM2.5, CO, O3. When absent, the quantities its registered air sensors measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitored: Option<Vec<String>>,
}

/// An emission unit (a coal-fired boiler/generator set) with its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmissionUnit {
    pub id: String,
    pub site: String,
    pub name_zh: String,
    pub name_en: String,
    pub capacity_mw: f64,
    pub fuel: String,
    /// Reference oxygen for correction, % (6 for coal-fired boilers, HJ 75-2017).
    pub o2_ref_percent: f64,
    /// Hourly limits, mg/m3 at reference O2, by quantity key (ultra-low: PM 10, SO2 35, NOx 50).
    pub limits: BTreeMap<String, f64>,
    /// HJ 212 data flags whose minutes do not count for compliance; default F M C D B.
    #[serde(default)]
    pub excluded_flags: Option<Vec<crate::reading::DataFlag>>,
    /// How the CEMS reports concentrations: `dry` (extractive analysers, the default) or `wet`
    /// (in-situ; converted with the measured moisture).
    #[serde(default)]
    pub measured_basis: MeasuredBasis,
    /// `standard` (273 K, 101.325 kPa, the default) or `actual` flue conditions (converted with flue
    /// temperature and pressure, and `ambient_pressure_kpa`).
    #[serde(default)]
    pub measured_state: MeasuredState,
    /// Atmospheric pressure at the stack, kPa (for `measured_state = "actual"` and actual flows).
    #[serde(default = "default_ambient_kpa")]
    pub ambient_pressure_kpa: f64,
    /// How the flue-gas flow is reported: `dry_standard` (标干, the default), `wet_standard`, or
    /// `wet_actual` (工况); converted to dry standard state for the mass emission.
    #[serde(default)]
    pub flow_basis: crate::standards::hj75::FlowBasis,
    /// What the data-integrity rules need to know: calibration schedule, surveyed stack area,
    /// analyser ranges and detection limits (`src/integrity`).
    #[serde(
        default,
        skip_serializing_if = "crate::integrity::UnitIntegrity::is_empty"
    )]
    pub integrity: crate::integrity::UnitIntegrity,
}

fn default_ambient_kpa() -> f64 {
    101.325
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MeasuredBasis {
    #[default]
    Dry,
    Wet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MeasuredState {
    #[default]
    Standard,
    Actual,
}

/// How a sensor's data reaches the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Mqtt,
    Modbus,
    Hj212,
}

/// How a Modbus device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModbusTransport {
    /// Modbus TCP (MBAP header; the unit id addresses devices behind a gateway).
    Tcp,
    /// RTU frames carried over a TCP connection (serial-to-Ethernet gateways in transparent mode).
    RtuOverTcp,
    /// RTU on a local serial port (RS-485).
    Rtu,
}

/// Serial line settings for RTU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `none`, `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// 5, 6, 7 or 8.
    #[serde(default = "default_data_bits", deserialize_with = "data_bits")]
    pub data_bits: u8,
    /// 1 or 2.
    #[serde(default = "default_stop_bits", deserialize_with = "stop_bits")]
    pub stop_bits: u8,
}

fn default_baud() -> u32 {
    9600
}
/// A serial line's parity. A misspelt one is an error, never a silent `none`: the device would
/// not answer and nothing would say why.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

fn data_bits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if (5..=8).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "data_bits {n} is not 5, 6, 7 or 8"
        )))
    }
}

fn stop_bits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if (1..=2).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "stop_bits {n} is not 1 or 2"
        )))
    }
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// A Modbus device: where it is, which profile describes it, how it is polled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    pub transport: ModbusTransport,
    /// `host:port` for `tcp` and `rtu_over_tcp`.
    #[serde(default)]
    pub address: Option<String>,
    /// Serial line for `rtu`.
    #[serde(default)]
    pub serial: Option<SerialSettings>,
    /// Unit (slave) id, 1–247.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Profile id (`config/profiles/*.toml`).
    pub profile: String,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub interval: std::time::Duration,
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Extra attempts (after reconnecting) when a poll times out or the connection breaks.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Registers of gap bridged to merge two values into one read.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// One request per value, for devices that refuse multi-register reads.
    #[serde(default)]
    pub single_reads: bool,
}

fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_poll_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    8
}

/// A data acquisition unit's (数采仪) HJ 212 identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hj212Settings {
    /// MN: the unit's device code.
    pub mn: String,
    /// PW: when set, packets with another password are refused.
    #[serde(default)]
    pub password: Option<String>,
    /// Field quirks accepted from this source.
    #[serde(default)]
    pub tolerance: crate::ingest::hj212::codec::Tolerance,
    /// SM4 encryption of its data (HJ 212-2025 §6.4): `optional` (default: encrypted or plain
    /// frames accepted) or `required` (plaintext data, key updates and site information refused).
    /// The key itself is a secret kept apart (`enviromon sensors set-key`), never here.
    #[serde(default)]
    pub encryption: Hj212Encryption,
}

/// Whether a logger must encrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Hj212Encryption {
    #[default]
    Optional,
    Required,
}

/// The format of a sensor's MQTT payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Json,
    Hj212,
}

/// Lifecycle of a sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SensorStatus {
    #[default]
    Active,
    /// Readings are kept but flagged M.
    Maintenance,
    /// No more ingest; history and record kept.
    Retired,
}

/// One measured quantity of a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Catalogue key (or alias/HJ 212 code; normalised to the key on load).
    pub quantity: String,
    /// Unit the readings are stored in; default: the catalogue's unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Plausible range in `unit`; default: the catalogue's.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    pub id: String,
    pub site: String,
    /// Emission unit, for CEMS sensors.
    #[serde(default)]
    pub unit: Option<String>,
    pub name_zh: String,
    pub name_en: String,
    pub domain: Domain,
    pub protocol: Protocol,
    /// MQTT topic; default from `mqtt.topic_pattern` for MQTT sensors. A Modbus or HJ 212 sensor may
    /// name one too (e.g. for a data logger that uploads history over MQTT).
    #[serde(default)]
    pub topic: Option<String>,
    /// Modbus connection and profile, for `protocol = "modbus"`.
    #[serde(default)]
    pub modbus: Option<ModbusDevice>,
    /// HJ 212 identity (MN, password, tolerated quirks), for `protocol = "hj212"` and for
    /// `payload_format = "hj212"` over MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hj212: Option<Hj212Settings>,
    /// What the sensor's MQTT messages carry: `json` (default) or `hj212` frames.
    #[serde(default)]
    pub payload_format: PayloadFormat,
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub status: SensorStatus,
    /// Why the sensor is in maintenance (or was retired), as the technician said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub illustrative: bool,
    /// When it was registered through the API (RFC 3339); seeded sensors have none. An air
    /// sensor's first days are checked against the other stations (`standards.air`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
}

/// A resolved channel: catalogue entry, unit and range ready for validation.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedChannel {
    pub quantity: &'static catalogue::Quantity,
    pub unit: &'static catalogue::Unit,
    pub min: f64,
    pub max: f64,
}

impl Sensor {
    /// The channel measuring `quantity_key` (a catalogue key), resolved.
    pub fn channel(&self, quantity_key: &str) -> Option<ResolvedChannel> {
        let ch = self.channels.iter().find(|c| c.quantity == quantity_key)?;
        resolve_channel(ch, self.domain).ok()
    }
}

/// The range no analyser of `domain` reports beyond for channel `ch`'s quantity, in the channel's
/// unit, with that unit's symbol (registration refuses a channel range wider than this).
pub fn plausible_range(ch: &Channel, domain: Domain) -> Option<(f64, f64, &'static str)> {
    let quantity = find_quantity(&ch.quantity)?;
    let from = find_unit(quantity.default_unit_in(domain))?;
    let to = match &ch.unit {
        Some(u) => find_unit(u)?,
        None => from,
    };
    let (lo, hi) = quantity.plausible_in(domain);
    let conv = |v| catalogue::convert(v, from, to, quantity, GasReference::of(domain)).ok();
    Some((conv(lo)?, conv(hi)?, to.symbol))
}

fn resolve_channel(ch: &Channel, domain: Domain) -> Result<ResolvedChannel, String> {
    let quantity =
        find_quantity(&ch.quantity).ok_or_else(|| format!("unknown quantity {:?}", ch.quantity))?;
    // A channel without a unit is in what analysers of the sensor's domain report (ambient SO2 in
    // µg/m³, flue-gas SO2 in mg/m³), never in another domain's unit.
    let domain_unit = quantity.default_unit_in(domain);
    let unit_name = ch.unit.as_deref().unwrap_or(domain_unit);
    let unit = find_unit(unit_name).ok_or_else(|| format!("unknown unit {unit_name:?}"))?;
    let default_unit =
        find_unit(domain_unit).ok_or_else(|| format!("catalogue unit {domain_unit:?} missing"))?;
    let conv = |v: f64| {
        catalogue::convert(v, default_unit, unit, quantity, GasReference::of(domain))
            .map_err(|e| e.to_string())
    };
    let (lo, hi) = quantity.plausible_in(domain);
    let min = match ch.min {
        Some(v) => v,
        None => conv(lo)?,
    };
    let max = match ch.max {
        Some(v) => v,
        None => conv(hi)?,
    };
    if min >= max {
        return Err(format!("min {min} must be below max {max}"));
    }
    Ok(ResolvedChannel {
        quantity,
        unit,
        min,
        max,
    })
}

/// A plan indicator with its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub unit: String,
    /// `>=` or `<=`.
    pub comparison: String,
    pub value: f64,
    /// Where in the plan the figure stands.
    pub source: String,
    /// True when enviromon computes the actual value from sensors; false for manual indicators.
    pub measured: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default)]
    site: Vec<Site>,
    #[serde(default)]
    unit: Vec<EmissionUnit>,
    #[serde(default)]
    sensor: Vec<Sensor>,
    #[serde(default)]
    target: Vec<Target>,
}

/// Everything the seeds describe.
#[derive(Debug, Default, Clone)]
pub struct Seeds {
    pub sites: Vec<Site>,
    pub units: Vec<EmissionUnit>,
    pub sensors: Vec<Sensor>,
    pub targets: Vec<Target>,
}

impl Seeds {
    /// Parse the compiled-in seeds.
    pub fn embedded() -> Result<Seeds, RegistryError> {
        let mut seeds = Seeds::default();
        for (name, text) in EMBEDDED_SEEDS {
            seeds.add(name, text)?;
        }
        Ok(seeds)
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), RegistryError> {
        let f: SeedFile = toml::from_str(text).map_err(|e| RegistryError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        self.sites.extend(f.site);
        self.units.extend(f.unit);
        self.sensors.extend(f.sensor);
        self.targets.extend(f.target);
        Ok(())
    }
}

/// Every `*.toml` file in `dir`, sorted by name, with its text; an error names the path.
pub fn read_toml_dir(
    dir: &Path,
) -> Result<Vec<(std::path::PathBuf, String)>, (String, std::io::Error)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| (dir.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            std::fs::read_to_string(&f)
                .map(|t| (f.clone(), t))
                .map_err(|e| (f.display().to_string(), e))
        })
        .collect()
}

/// An immutable snapshot of the registry with its lookup indexes.
#[derive(Debug, Default)]
pub struct Registry {
    pub sites: BTreeMap<String, Site>,
    pub units: BTreeMap<String, EmissionUnit>,
    pub sensors: BTreeMap<String, Sensor>,
    pub targets: Vec<Target>,
    /// MQTT topic → sensor id.
    topics: HashMap<String, String>,
}

impl Registry {
    /// Build and check a snapshot; every inconsistency is reported, not just the first.
    pub fn build(
        sites: Vec<Site>,
        units: Vec<EmissionUnit>,
        mut sensors: Vec<Sensor>,
        targets: Vec<Target>,
        topic_pattern: &str,
    ) -> Result<Registry, RegistryError> {
        let mut errs = Vec::new();
        let mut reg = Registry::default();
        for s in sites {
            if reg.sites.insert(s.id.clone(), s.clone()).is_some() {
                errs.push(format!("site {}: duplicate id", s.id));
            }
        }
        for u in units {
            if !reg.sites.contains_key(&u.site) {
                errs.push(format!("unit {}: site {:?} does not exist", u.id, u.site));
            }
            for (field, msg) in u
                .integrity
                .problems(&crate::integrity::Thresholds::default())
            {
                errs.push(format!("unit {}: integrity.{field}: {msg}", u.id));
            }
            for k in u.limits.keys() {
                if find_quantity(k).is_none() {
                    errs.push(format!("unit {}: limits.{k}: unknown quantity", u.id));
                }
            }
            if reg.units.insert(u.id.clone(), u.clone()).is_some() {
                errs.push(format!("unit {}: duplicate id", u.id));
            }
        }
        for s in sensors.iter_mut() {
            if !reg.sites.contains_key(&s.site) {
                errs.push(format!(
                    "sensor {}: site: {:?} does not exist",
                    s.id, s.site
                ));
            }
            if let Some(u) = &s.unit {
                if !reg.units.contains_key(u) {
                    errs.push(format!("sensor {}: unit: {u:?} does not exist", s.id));
                }
            }
            if s.channels.is_empty() {
                errs.push(format!(
                    "sensor {}: channels: must list at least one quantity",
                    s.id
                ));
            }
            let domain = s.domain;
            for (i, ch) in s.channels.iter_mut().enumerate() {
                match resolve_channel(ch, domain) {
                    Ok(r) => ch.quantity = r.quantity.key.to_string(),
                    Err(e) => errs.push(format!("sensor {}: channels[{i}]: {e}", s.id)),
                }
            }
            let mut seen = std::collections::HashSet::new();
            for ch in &s.channels {
                if !seen.insert(ch.quantity.clone()) {
                    errs.push(format!(
                        "sensor {}: channels: {} listed twice",
                        s.id, ch.quantity
                    ));
                }
            }
            if s.protocol == Protocol::Modbus {
                match &s.modbus {
                    None => errs.push(format!(
                        "sensor {}: modbus: a Modbus sensor needs a [modbus] section",
                        s.id
                    )),
                    Some(m) => {
                        match m.transport {
                            ModbusTransport::Tcp | ModbusTransport::RtuOverTcp => {
                                if m.address
                                    .as_deref()
                                    .is_none_or(|a| a.rsplit_once(':').is_none())
                                {
                                    errs.push(format!(
                                        "sensor {}: modbus.address: host:port needed for {:?}",
                                        s.id, m.transport
                                    ));
                                }
                            }
                            ModbusTransport::Rtu => {
                                if m.serial.is_none() {
                                    errs.push(format!(
                                        "sensor {}: modbus.serial: a serial port is needed for rtu",
                                        s.id
                                    ));
                                }
                            }
                        }
                        if !(1..=247).contains(&m.unit_id) {
                            errs.push(format!(
                                "sensor {}: modbus.unit_id: {} is outside 1..=247",
                                s.id, m.unit_id
                            ));
                        }
                        if m.interval.is_zero() || m.timeout.is_zero() {
                            errs.push(format!("sensor {}: modbus.interval and modbus.timeout must be greater than 0s", s.id));
                        }
                    }
                }
            }
            if s.protocol == Protocol::Mqtt && s.topic.is_none() {
                s.topic = Some(
                    topic_pattern
                        .replace("{site}", &s.site)
                        .replace("{sensor}", &s.id),
                );
            }
        }
        // An MN names one data logger: two sensors claiming it would make its frames ambiguous.
        let mut mns: BTreeMap<String, String> = BTreeMap::new();
        for s in sensors {
            if reg.sensors.contains_key(&s.id) {
                errs.push(format!("sensor {}: duplicate id", s.id));
                continue;
            }
            if let Some(h) = s
                .hj212
                .as_ref()
                .filter(|_| s.status != SensorStatus::Retired)
            {
                if let Some(other) = mns.insert(h.mn.clone(), s.id.clone()) {
                    errs.push(format!(
                        "sensor {}: hj212.mn: {:?} is already used by sensor {other}",
                        s.id, h.mn
                    ));
                }
            }
            if let Some(t) = &s.topic {
                if s.status != SensorStatus::Retired {
                    if let Some(other) = reg.topics.insert(t.clone(), s.id.clone()) {
                        errs.push(format!(
                            "sensor {}: topic: already used by sensor {other}",
                            s.id
                        ));
                    }
                }
            }
            reg.sensors.insert(s.id.clone(), s);
        }
        reg.targets = targets;
        if errs.is_empty() {
            Ok(reg)
        } else {
            Err(RegistryError::Invalid(errs))
        }
    }

    /// The sensor with HJ 212 MN `mn` (retired ones included, so their packets can be named).
    pub fn sensor_for_mn(&self, mn: &str) -> Option<&Sensor> {
        self.sensors
            .values()
            .filter(|s| s.hj212.as_ref().is_some_and(|h| h.mn == mn))
            .min_by_key(|s| s.status == SensorStatus::Retired)
    }

    /// The sensor a topic belongs to (retired sensors included, so their messages can be named).
    pub fn sensor_for_topic(&self, topic: &str) -> Option<&Sensor> {
        if let Some(id) = self.topics.get(topic) {
            return self.sensors.get(id);
        }
        self.sensors
            .values()
            .find(|s| s.status == SensorStatus::Retired && s.topic.as_deref() == Some(topic))
    }
}

/// Insert seeds whose ids are not in the database yet; returns how many rows were inserted.
/// Seed the registry from `dir` (or the built-in seeds): parse and apply them unless exactly these
/// files were applied before (their SHA-256 is kept in the `meta` table). Parsing a seed file of
/// 10,000 sensors peaks at tens of MB, which a restart should not pay again for nothing; as
/// applying only ever adds ids not there yet, skipping unchanged files changes nothing.
/// Returns the number of entries added.
pub fn seed(conn: &Connection, dir: Option<&Path>) -> Result<usize, RegistryError> {
    use rusqlite::OptionalExtension;
    use sha2::Digest;
    let files: Vec<(String, String)> = match dir {
        Some(d) => read_toml_dir(d)
            .map_err(|(path, source)| RegistryError::Read { path, source })?
            .into_iter()
            .map(|(p, t)| (p.display().to_string(), t))
            .collect(),
        None => EMBEDDED_SEEDS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
    };
    let mut h = sha2::Sha256::new();
    for (name, text) in &files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    let applied: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'seeds_sha256'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if applied.as_deref() == Some(digest.as_str()) {
        return Ok(0);
    }
    let mut seeds = Seeds::default();
    for (name, text) in &files {
        seeds.add(name, text)?;
    }
    drop(files);
    let n = apply_seeds(conn, &seeds)?;
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('seeds_sha256', ?1)",
        [&digest],
    )?;
    Ok(n)
}

pub fn apply_seeds(conn: &Connection, seeds: &Seeds) -> Result<usize, RegistryError> {
    fn put<T: Serialize>(
        conn: &Connection,
        table: &str,
        id: &str,
        doc: &T,
    ) -> Result<usize, RegistryError> {
        let json = serde_json::to_string(doc).map_err(|source| RegistryError::Corrupt {
            id: id.to_string(),
            source,
        })?;
        Ok(conn.execute(
            &format!("INSERT OR IGNORE INTO {table} (id, doc) VALUES (?1, ?2)"),
            (id, json),
        )?)
    }
    let mut n = 0;
    for s in &seeds.sites {
        n += put(conn, "sites", &s.id, s)?;
    }
    for u in &seeds.units {
        n += put(conn, "units", &u.id, u)?;
    }
    for s in &seeds.sensors {
        n += put(conn, "sensors", &s.id, s)?;
    }
    for t in &seeds.targets {
        n += put(conn, "targets", &t.id, t)?;
    }
    Ok(n)
}

fn load_table<T: for<'de> Deserialize<'de>>(
    conn: &Connection,
    table: &str,
) -> Result<Vec<T>, RegistryError> {
    let mut stmt = conn.prepare(&format!("SELECT id, doc FROM {table} ORDER BY id"))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, doc) = row?;
        out.push(
            serde_json::from_str(&doc).map_err(|source| RegistryError::Corrupt { id, source })?,
        );
    }
    Ok(out)
}

/// Load the registry from the database.
pub fn load(conn: &Connection, topic_pattern: &str) -> Result<Registry, RegistryError> {
    Registry::build(
        load_table(conn, "sites")?,
        load_table(conn, "units")?,
        load_table(conn, "sensors")?,
        load_table(conn, "targets")?,
        topic_pattern,
    )
}

/// Shared, swappable registry snapshot. Every replacement bumps a generation that tasks watch
/// (`changes()`), so a change applies without a restart.
#[derive(Debug, Clone)]
pub struct RegistryHandle(Arc<RwLock<Arc<Registry>>>, tokio::sync::watch::Sender<u64>);

impl Default for RegistryHandle {
    fn default() -> Self {
        RegistryHandle::new(Registry::default())
    }
}

impl RegistryHandle {
    pub fn new(reg: Registry) -> Self {
        RegistryHandle(
            Arc::new(RwLock::new(Arc::new(reg))),
            tokio::sync::watch::Sender::new(0),
        )
    }

    /// A receiver that sees every replacement.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// The current snapshot (cheap: one `Arc` clone).
    pub fn snapshot(&self) -> Arc<Registry> {
        crate::sync::read(&self.0).clone()
    }

    /// Replace the snapshot and tell the watchers.
    pub fn replace(&self, reg: Registry) {
        *crate::sync::write(&self.0) = Arc::new(reg);
        self.1.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATTERN: &str = "enviromon/{site}/{sensor}";

    fn seeded_registry() -> Registry {
        let s = Seeds::embedded().unwrap();
        Registry::build(s.sites, s.units, s.sensors, s.targets, PATTERN).unwrap()
    }

    #[test]
    fn seeding_skips_files_already_applied_and_applies_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("e.db")).unwrap();
        let seeds = dir.path().join("seeds");
        std::fs::create_dir(&seeds).unwrap();
        let site =
            "[[site]]\nid = \"s\"\nname_zh = \"站\"\nname_en = \"S\"\nkind = \"air_station\"\n";
        let sensor = |id: &str| {
            format!(
                "[[sensor]]\nid = \"{id}\"\nsite = \"s\"\nname_zh = \"x\"\nname_en = \"x\"\n\
                 domain = \"air\"\nprotocol = \"mqtt\"\nchannels = [{{ quantity = \"SO2\" }}]\n"
            )
        };
        std::fs::write(seeds.join("a.toml"), format!("{site}{}", sensor("a"))).unwrap();
        assert_eq!(seed(&conn, Some(&seeds)).unwrap(), 2);
        // Unchanged files are not applied again: a row removed since stays removed.
        conn.execute("DELETE FROM sensors WHERE id = 'a'", [])
            .unwrap();
        assert_eq!(seed(&conn, Some(&seeds)).unwrap(), 0);
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT COUNT(*) FROM sensors", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&conn), 0);
        // A changed file is parsed and applied (only ids not there yet are added).
        std::fs::write(
            seeds.join("a.toml"),
            format!("{site}{}{}", sensor("a"), sensor("b")),
        )
        .unwrap();
        assert_eq!(seed(&conn, Some(&seeds)).unwrap(), 2);
        assert_eq!(count(&conn), 2);
        // A file that does not parse is an error, and is not remembered as applied.
        std::fs::write(seeds.join("b.toml"), "[[sensor]]\nid = 1\n").unwrap();
        assert!(seed(&conn, Some(&seeds)).is_err());
        assert!(seed(&conn, Some(&seeds)).is_err());
    }

    #[test]
    fn district_seeds_are_consistent_and_complete() {
        let reg = seeded_registry();
        // 大唐 2×300 MW and 双源 2×165 MW (plan 专栏 6-4), each with a CEMS.
        let mut caps: Vec<(String, f64)> = reg
            .units
            .values()
            .map(|u| (u.site.clone(), u.capacity_mw))
            .collect();
        caps.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        assert_eq!(caps.len(), 4);
        assert_eq!(caps.iter().filter(|c| c.1 == 300.0).count(), 2);
        assert_eq!(caps.iter().filter(|c| c.1 == 165.0).count(), 2);
        for u in reg.units.values() {
            let cems: Vec<_> = reg
                .sensors
                .values()
                .filter(|s| s.unit.as_deref() == Some(&u.id) && s.domain == Domain::Cems)
                .collect();
            assert_eq!(cems.len(), 1, "unit {} has one CEMS", u.id);
            for q in [
                "SO2",
                "NOx",
                "PM",
                "O2",
                "flue_temp",
                "moisture",
                "flue_flow",
            ] {
                assert!(cems[0].channel(q).is_some(), "{} measures {q}", cems[0].id);
            }
            assert_eq!(u.limits.get("SO2"), Some(&35.0));
            assert_eq!(u.limits.get("NOx"), Some(&50.0));
            assert_eq!(u.limits.get("PM"), Some(&10.0));
        }
        let kinds: Vec<SiteKind> = reg.sites.values().map(|s| s.kind).collect();
        for k in [
            SiteKind::WastewaterPlant,
            SiteKind::RiverSection,
            SiteKind::AirStation,
        ] {
            assert!(kinds.contains(&k), "a {k:?} site");
        }
        let t: Vec<(&str, f64)> = reg
            .targets
            .iter()
            .map(|t| (t.id.as_str(), t.value))
            .collect();
        assert!(t.contains(&("air_good_days_rate", 80.0)));
        assert!(t.contains(&("sewage_treatment_rate", 96.0)));
    }

    #[test]
    fn topics_default_from_the_pattern() {
        let reg = seeded_registry();
        let s = reg.sensor_for_topic("enviromon/datang/dt-1-cems").unwrap();
        assert_eq!(s.id, "dt-1-cems");
    }

    #[test]
    fn inconsistencies_are_all_reported() {
        let mut s = Seeds::embedded().unwrap();
        s.sensors[0].site = "nowhere".into();
        s.sensors[1].channels[0].quantity = "unobtainium".into();
        let dup = s.sensors[2].clone();
        s.sensors.push(dup);
        let e = Registry::build(s.sites, s.units, s.sensors, s.targets, PATTERN).unwrap_err();
        let RegistryError::Invalid(errs) = e else {
            panic!("{e}")
        };
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn serial_settings_refuse_what_no_line_can_be() {
        let ok: SerialSettings =
            serde_json::from_str(r#"{"port": "/dev/ttyS0", "parity": "even"}"#).unwrap();
        assert_eq!(
            (ok.parity, ok.baud, ok.data_bits, ok.stop_bits),
            (Parity::Even, 9600, 8, 1)
        );
        for (bad, why) in [
            (
                r#"{"port": "/dev/ttyS0", "parity": "Even"}"#,
                "unknown variant",
            ),
            (
                r#"{"port": "/dev/ttyS0", "data_bits": 9}"#,
                "not 5, 6, 7 or 8",
            ),
            (r#"{"port": "/dev/ttyS0", "stop_bits": 0}"#, "not 1 or 2"),
        ] {
            let e = serde_json::from_str::<SerialSettings>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn seeding_is_idempotent_and_keeps_edits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        let seeds = Seeds::embedded().unwrap();
        let first = apply_seeds(&conn, &seeds).unwrap();
        assert!(first > 10);
        conn.execute(
            "UPDATE sensors SET doc = json_set(doc, '$.status', 'maintenance') WHERE id = 'dt-1-cems'",
            [],
        )
        .unwrap();
        assert_eq!(apply_seeds(&conn, &seeds).unwrap(), 0);
        let reg = load(&conn, PATTERN).unwrap();
        assert_eq!(reg.sensors["dt-1-cems"].status, SensorStatus::Maintenance);
        assert_eq!(reg.sensors.len(), seeds.sensors.len());
    }
}
