//! Sensor registration for field technicians: validate (every error at once, with its field path),
//! persist in the embedded database, audit (who, when, before/after), and apply at once by replacing
//! the registry snapshot (MQTT topics map immediately, Modbus pollers restart their endpoint).
//!
//! Nothing is ever deleted: retiring a sensor stops its ingest and keeps its record and history.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::{json, Value};

use crate::catalogue::{self, find_quantity, find_unit};
use crate::config::FieldError;
use crate::ingest::modbus::poller::Endpoint;
use crate::ingest::modbus::profile::{self, Profile};
use crate::registry::{self, Protocol, Registry, RegistryHandle, Sensor, SensorStatus};
use crate::sync::lock;

#[derive(Debug, thiserror::Error)]
pub enum RegError {
    #[error("invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("registry database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Keys(#[from] crate::ingest::hj212::keys::KeyError),
}

fn fe(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

/// Deserialize, with every field that does not fit and its path (not just the first).
fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Vec<FieldError>> {
    match crate::config::deserialize_collecting(v.clone()) {
        (Some(t), errs) if errs.is_empty() => Ok(t),
        (_, errs) => Err(errs),
    }
}

/// Mutations of the registry.
pub struct Registration {
    conn: Mutex<Connection>,
    registry: RegistryHandle,
    topic_pattern: String,
    profiles: RwLock<BTreeMap<String, Profile>>,
    /// The profiles shipped with enviromon (`config/profiles`, `modbus.profiles_dir`): never replaced.
    shipped: std::collections::BTreeSet<String>,
    keys: Option<std::sync::Arc<crate::ingest::hj212::keys::Keystore>>,
}

/// MQTT 3.1.1 topic filter matching (`+` one level, `#` the rest).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Registration {
    pub fn open(
        db_path: &Path,
        registry: RegistryHandle,
        topic_pattern: &str,
        profiles: BTreeMap<String, Profile>,
    ) -> Result<Registration, RegError> {
        let conn = crate::db::open(db_path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (ts_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
                                               target TEXT NOT NULL, before TEXT, after TEXT);
             CREATE TABLE IF NOT EXISTS profiles (id TEXT PRIMARY KEY, doc TEXT NOT NULL);",
        )?;
        let shipped = profiles.keys().cloned().collect();
        let mut all = profiles;
        {
            let mut stmt = conn.prepare("SELECT doc FROM profiles")?;
            for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
                let p: Profile = serde_json::from_str(&doc?)?;
                all.insert(p.id.clone(), p);
            }
        }
        Ok(Registration {
            conn: Mutex::new(conn),
            registry,
            topic_pattern: topic_pattern.into(),
            profiles: RwLock::new(all),
            shipped,
            keys: None,
        })
    }

    /// Where the HJ 212 loggers' SM4 keys are kept (set through [`Registration::set_hj212_key`]).
    pub fn with_keys(
        mut self,
        keys: std::sync::Arc<crate::ingest::hj212::keys::Keystore>,
    ) -> Registration {
        self.keys = Some(keys);
        self
    }

    /// An event in the audit log (who, what, on what, before and after).
    pub fn record<T: Serialize>(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        before: Option<&T>,
        after: &T,
    ) -> Result<(), RegError> {
        audit(&lock(&self.conn), actor, action, target, before, after)
    }

    /// Set (or with `None` remove) the SM4 key of sensor `id`'s HJ 212 logger. The key it replaces
    /// keeps opening frames for the overlap window. Audited by fingerprint; the key itself is
    /// written only to the keys file.
    pub fn set_hj212_key(
        &self,
        actor: &str,
        id: &str,
        key: Option<&crate::ingest::hj212::crypto::Key>,
    ) -> Result<crate::ingest::hj212::keys::KeyChange, RegError> {
        let reg = self.registry.snapshot();
        let s = reg
            .sensors
            .get(id)
            .ok_or_else(|| RegError::NotFound(format!("sensor {id:?}")))?;
        let mn = s.hj212.as_ref().map(|h| h.mn.clone()).ok_or_else(|| {
            RegError::Invalid(vec![fe(
                "hj212.mn",
                format!("sensor {id:?} has no HJ 212 identity (hj212.mn); register its MN first"),
            )])
        })?;
        let keys = self.keys.as_ref().ok_or_else(|| {
            RegError::Invalid(vec![fe(
                "",
                "HJ 212 keys are not available in this process",
            )])
        })?;
        let change = keys.set(&mn, key, actor, chrono::Utc::now().timestamp_millis())?;
        let fp = |f: &Option<String>| json!({"mn": mn, "sm4_key_fingerprint": f});
        self.record(
            actor,
            "hj212_key",
            id,
            Some(&fp(&change.before)),
            &fp(&change.after),
        )?;
        Ok(change)
    }

    /// The SM4 key status of sensor `id`'s logger (fingerprints only).
    pub fn hj212_key_status(
        &self,
        id: &str,
    ) -> Result<Option<crate::ingest::hj212::keys::KeyStatus>, RegError> {
        let reg = self.registry.snapshot();
        let s = reg
            .sensors
            .get(id)
            .ok_or_else(|| RegError::NotFound(format!("sensor {id:?}")))?;
        Ok(match (s.hj212.as_ref(), self.keys.as_ref()) {
            (Some(h), Some(k)) => k.status(&h.mn, chrono::Utc::now().timestamp_millis()),
            _ => None,
        })
    }

    pub fn profiles(&self) -> BTreeMap<String, Profile> {
        crate::sync::read(&self.profiles).clone()
    }

    /// Check a sensor against the registry (as if `replacing` were not there). Every problem.
    pub fn check(&self, s: &Sensor, replacing: Option<&str>) -> Vec<FieldError> {
        let reg = self.registry.snapshot();
        let mut errs = Vec::new();
        if !id_ok(&s.id) {
            errs.push(fe(
                "id",
                format!(
                    "{:?} may only contain a-z, 0-9, - and _ (1–64 characters)",
                    s.id
                ),
            ));
        }
        if replacing != Some(s.id.as_str()) && reg.sensors.contains_key(&s.id) {
            errs.push(fe("id", format!("sensor {:?} already exists", s.id)));
        }
        if !reg.sites.contains_key(&s.site) {
            errs.push(fe("site", format!("{:?} does not exist", s.site)));
        }
        if let Some(u) = &s.unit {
            if !reg.units.contains_key(u) {
                errs.push(fe("unit", format!("{u:?} does not exist")));
            }
        }
        if s.name_zh.trim().is_empty() {
            errs.push(fe("name_zh", "must not be empty"));
        }
        if s.channels.is_empty() {
            errs.push(fe("channels", "must list at least one quantity"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, ch) in s.channels.iter().enumerate() {
            let Some(q) = find_quantity(&ch.quantity) else {
                errs.push(fe(
                    format!("channels[{i}].quantity"),
                    format!("{:?} is not in the quantity catalogue", ch.quantity),
                ));
                continue;
            };
            if !seen.insert(q.key) {
                errs.push(fe(
                    format!("channels[{i}].quantity"),
                    format!("{} is listed twice", q.key),
                ));
            }
            if let Some(u) = &ch.unit {
                match find_unit(u) {
                    None => errs.push(fe(
                        format!("channels[{i}].unit"),
                        format!("unknown unit {u:?}"),
                    )),
                    Some(unit) => {
                        if let Some(default) = find_unit(q.default_unit) {
                            if let Err(e) = catalogue::convert(
                                1.0,
                                default,
                                unit,
                                q,
                                catalogue::GasReference::of(s.domain),
                            ) {
                                errs.push(fe(format!("channels[{i}].unit"), e.to_string()));
                            }
                        }
                    }
                }
            }
            if let Some((plo, phi, sym)) = registry::plausible_range(ch, s.domain) {
                let what = format!("{} {} analyser", domain_words(s.domain), q.key);
                if let Some(lo) = ch.min.filter(|lo| *lo < plo) {
                    errs.push(fe(
                        format!("channels[{i}].min"),
                        format!("{lo} {sym} is below what {what} reports ({plo} {sym})"),
                    ));
                }
                if let Some(hi) = ch.max.filter(|hi| *hi > phi) {
                    errs.push(fe(
                        format!("channels[{i}].max"),
                        format!("{hi} {sym} is above what {what} reports ({phi} {sym}); is the unit right?"),
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (ch.min, ch.max) {
                if lo >= hi {
                    errs.push(fe(
                        format!("channels[{i}].min"),
                        format!("{lo} must be below max {hi}"),
                    ));
                }
            }
        }
        if let Some(t) = &s.topic {
            if t.is_empty() || t.contains('+') || t.contains('#') {
                errs.push(fe(
                    "topic",
                    format!("{t:?} must be an exact topic (no + or #)"),
                ));
            } else if let Some(other) = reg.sensors.values().find(|o| {
                o.id != s.id && o.status != SensorStatus::Retired && o.topic.as_deref() == Some(t)
            }) {
                errs.push(fe("topic", format!("already used by sensor {}", other.id)));
            }
        }
        match (&s.hj212, s.protocol, s.payload_format) {
            (None, Protocol::Hj212, _) => {
                errs.push(fe("hj212", "an HJ 212 sensor needs hj212 = { mn = \"…\" }"))
            }
            (None, _, crate::registry::PayloadFormat::Hj212) => errs.push(fe(
                "hj212",
                "payload_format = \"hj212\" needs hj212 = { mn = \"…\" }",
            )),
            (Some(h), _, _) => {
                if h.mn.trim().is_empty() {
                    errs.push(fe("hj212.mn", "must not be empty"));
                } else if let Some(other) = reg.sensors.values().find(|o| {
                    o.id != s.id
                        && o.status != SensorStatus::Retired
                        && o.hj212.as_ref().is_some_and(|x| x.mn == h.mn)
                }) {
                    errs.push(fe(
                        "hj212.mn",
                        format!("{:?} is already used by sensor {}", h.mn, other.id),
                    ));
                }
            }
            _ => {}
        }
        match (s.protocol, &s.modbus) {
            (Protocol::Modbus, None) => errs.push(fe(
                "modbus",
                "a Modbus sensor needs a modbus section (transport, address, unit_id, profile)",
            )),
            (p, Some(_)) if p != Protocol::Modbus => {
                errs.push(fe("modbus", "only for protocol = \"modbus\""))
            }
            _ => {}
        }
        if let (Protocol::Modbus, Some(m)) = (s.protocol, &s.modbus) {
            let profiles = self.profiles();
            match profiles.get(&m.profile) {
                None => errs.push(fe(
                    "modbus.profile",
                    format!("{:?} does not exist", m.profile),
                )),
                Some(p) => {
                    for (i, v) in p.values.iter().enumerate() {
                        let key = find_quantity(&v.quantity).map(|q| q.key).unwrap_or("");
                        if !s
                            .channels
                            .iter()
                            .any(|c| find_quantity(&c.quantity).map(|q| q.key) == Some(key))
                        {
                            errs.push(fe(
                                "channels",
                                format!(
                                    "profile {} reads {} (values[{i}]) but no channel measures it",
                                    p.id, v.quantity
                                ),
                            ));
                        }
                    }
                }
            }
            if !(1..=247).contains(&m.unit_id) {
                errs.push(fe(
                    "modbus.unit_id",
                    format!("{} is outside 1..=247", m.unit_id),
                ));
            }
            match m.transport {
                registry::ModbusTransport::Rtu if m.serial.is_none() => errs.push(fe(
                    "modbus.serial",
                    "rtu needs a serial port (port, baud, …)",
                )),
                registry::ModbusTransport::Tcp | registry::ModbusTransport::RtuOverTcp => {
                    match &m.address {
                        None => errs.push(fe("modbus.address", "host:port is needed")),
                        Some(a)
                            if a.rsplit_once(':')
                                .and_then(|(_, p)| p.parse::<u16>().ok())
                                .is_none() =>
                        {
                            errs.push(fe("modbus.address", format!("{a:?} is not host:port")))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            if m.interval.is_zero() || m.timeout.is_zero() {
                errs.push(fe(
                    "modbus.interval",
                    "interval and timeout must be greater than 0s",
                ));
            }
            if let Some(ep) = Endpoint::of(m) {
                if let Some(other) = reg.sensors.values().find(|o| {
                    o.id != s.id
                        && o.status != SensorStatus::Retired
                        && o.modbus.as_ref().is_some_and(|om| {
                            om.unit_id == m.unit_id && Endpoint::of(om).as_ref() == Some(&ep)
                        })
                }) {
                    errs.push(fe(
                        "modbus.unit_id",
                        format!(
                            "{} on {} is already used by sensor {}",
                            m.unit_id,
                            ep.describe(),
                            other.id
                        ),
                    ));
                }
            }
        }
        errs
    }

    /// A sensor from its JSON as it would be registered (default topic filled in), checked
    /// against the registry; nothing is stored. What a dry run tests.
    pub fn candidate(&self, body: &Value) -> Result<Sensor, RegError> {
        let mut s: Sensor = typed(body).map_err(RegError::Invalid)?;
        if s.protocol == Protocol::Mqtt && s.topic.is_none() {
            s.topic = Some(
                self.topic_pattern
                    .replace("{site}", &s.site)
                    .replace("{sensor}", &s.id),
            );
        }
        let errs = self.check(&s, None);
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        // Normalise the channels' quantity names as loading does (aliases, HJ 212 codes).
        for ch in &mut s.channels {
            if let Some(q) = find_quantity(&ch.quantity) {
                ch.quantity = q.key.to_string();
            }
        }
        Ok(s)
    }

    /// Register a sensor from its JSON; returns it as stored.
    pub fn register(&self, actor: &str, body: &Value) -> Result<Sensor, RegError> {
        let mut s = self.candidate(body)?;
        s.registered_at = Some(chrono::Utc::now().to_rfc3339());
        self.save(actor, "register", &s.id.clone(), None, &s)?;
        Ok(s)
    }

    /// The HJ 212 loggers' keys, when this process has them (a dry run opens sealed frames).
    pub fn keystore(&self) -> Option<std::sync::Arc<crate::ingest::hj212::keys::Keystore>> {
        self.keys.clone()
    }

    /// Check a site (as if `replacing` were not there). Every problem.
    pub fn check_site(&self, site: &registry::Site, replacing: Option<&str>) -> Vec<FieldError> {
        let reg = self.registry.snapshot();
        let mut errs = Vec::new();
        if !id_ok(&site.id) {
            errs.push(fe(
                "id",
                format!(
                    "{:?} may only contain a-z, 0-9, - and _ (1–64 characters)",
                    site.id
                ),
            ));
        }
        if replacing != Some(site.id.as_str()) && reg.sites.contains_key(&site.id) {
            errs.push(fe("id", format!("site {:?} already exists", site.id)));
        }
        if site.name_zh.trim().is_empty() {
            errs.push(fe("name_zh", "must not be empty"));
        }
        if site.name_en.trim().is_empty() {
            errs.push(fe("name_en", "must not be empty"));
        }
        if let Some(m) = &site.monitored {
            if site.kind != registry::SiteKind::AirStation {
                errs.push(fe("monitored", "only for kind = \"air_station\""));
            }
            let air: Vec<&str> = crate::standards::air::POLLUTANTS
                .iter()
                .map(|(q, _)| *q)
                .collect();
            for (i, q) in m.iter().enumerate() {
                match find_quantity(q).map(|q| q.key) {
                    Some(k) if air.contains(&k) => {}
                    _ => errs.push(fe(
                        format!("monitored[{i}]"),
                        format!("{q:?} is not one of {}", air.join(", ")),
                    )),
                }
            }
        }
        errs
    }

    /// Add a site (an air station, a river section, a plant) from its JSON.
    pub fn register_site(&self, actor: &str, body: &Value) -> Result<registry::Site, RegError> {
        let site: registry::Site = typed(body).map_err(RegError::Invalid)?;
        let errs = self.check_site(&site, None);
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        self.save_site(actor, "site_add", None, &site)?;
        Ok(site)
    }

    /// Change a site by JSON merge patch (RFC 7396); the id cannot change.
    pub fn patch_site(
        &self,
        actor: &str,
        id: &str,
        patch: &Value,
    ) -> Result<registry::Site, RegError> {
        let before = self
            .registry
            .snapshot()
            .sites
            .get(id)
            .cloned()
            .ok_or_else(|| RegError::NotFound(format!("site {id:?}")))?;
        if patch.get("id").is_some_and(|v| v.as_str() != Some(id)) {
            return Err(RegError::Invalid(vec![fe("id", "cannot be changed")]));
        }
        if !patch.is_object() {
            return Err(RegError::Invalid(vec![fe(
                "",
                "a PATCH body is a JSON object of fields to change",
            )]));
        }
        let mut doc = serde_json::to_value(&before)?;
        merge_patch(&mut doc, patch);
        let after: registry::Site = typed(&doc).map_err(RegError::Invalid)?;
        let errs = self.check_site(&after, Some(id));
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        self.save_site(actor, "site_patch", Some(&before), &after)?;
        Ok(after)
    }

    fn save_site(
        &self,
        actor: &str,
        action: &str,
        before: Option<&registry::Site>,
        after: &registry::Site,
    ) -> Result<(), RegError> {
        self.save_doc("sites", &after.id, actor, action, before, after)
    }

    /// Store `after` as row `id` of registry table `table` (`sites`, `units`), audited, and
    /// swap in the registry reloaded with it.
    fn save_doc<T: Serialize>(
        &self,
        table: &str,
        id: &str,
        actor: &str,
        action: &str,
        before: Option<&T>,
        after: &T,
    ) -> Result<(), RegError> {
        let reg: Registry;
        {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            tx.execute(
                &format!("INSERT OR REPLACE INTO {table} (id, doc) VALUES (?1, ?2)"),
                params![id, serde_json::to_string(after)?],
            )?;
            audit(&tx, actor, action, id, before, after)?;
            reg = registry::load(&tx, &self.topic_pattern)?;
            tx.commit()?;
        }
        self.registry.replace(reg);
        tracing::info!(actor, action, table, id, "registry changed");
        Ok(())
    }

    /// Apply a JSON merge patch to a unit's `integrity` declarations (calibration windows, stack
    /// area, analyser ranges, detection limits, threshold overrides): the field technician's
    /// registration of what the integrity rules need. The unit's other fields (its limits, its
    /// capacity) are the permit's and the plan's, not a technician's: a patch naming them is
    /// refused.
    pub fn patch_unit(
        &self,
        actor: &str,
        id: &str,
        patch: &Value,
    ) -> Result<registry::EmissionUnit, RegError> {
        let before = self
            .registry
            .snapshot()
            .units
            .get(id)
            .cloned()
            .ok_or_else(|| RegError::NotFound(format!("unit {id:?}")))?;
        let Some(obj) = patch.as_object() else {
            return Err(RegError::Invalid(vec![fe(
                "",
                "a PATCH body is a JSON object of fields to change",
            )]));
        };
        let refused: Vec<crate::config::FieldError> = obj
            .keys()
            .filter(|k| k.as_str() != "integrity")
            .map(|k| fe(k, "only `integrity` can be changed here (limits and capacity come from the permit and the plan)"))
            .collect();
        if !refused.is_empty() {
            return Err(RegError::Invalid(refused));
        }
        let mut doc = serde_json::to_value(&before)?;
        merge_patch(&mut doc, patch);
        let after: registry::EmissionUnit = typed(&doc).map_err(RegError::Invalid)?;
        let errs: Vec<crate::config::FieldError> = after
            .integrity
            .problems(&crate::integrity::Thresholds::default())
            .into_iter()
            .map(|(f, m)| fe(format!("integrity.{f}"), m))
            .collect();
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        self.save_doc(
            "units",
            &after.id,
            actor,
            "unit_patch",
            Some(&before),
            &after,
        )?;
        Ok(after)
    }

    /// The sensor registered as `id`, or NotFound.
    fn existing(&self, id: &str) -> Result<Sensor, RegError> {
        self.registry
            .snapshot()
            .sensors
            .get(id)
            .cloned()
            .ok_or_else(|| RegError::NotFound(format!("sensor {id:?}")))
    }

    /// Apply a JSON merge patch (RFC 7396) to a sensor (the id and status cannot change).
    pub fn patch(&self, actor: &str, id: &str, patch: &Value) -> Result<Sensor, RegError> {
        let before = self.existing(id)?;
        let Value::Object(p) = patch else {
            return Err(RegError::Invalid(vec![fe(
                "",
                "a PATCH body is a JSON object of fields to change",
            )]));
        };
        let mut errs = Vec::new();
        for k in p.keys() {
            if matches!(k.as_str(), "id" | "status" | "registered_at") {
                errs.push(fe(
                    k.clone(),
                    "cannot be changed by PATCH (use /retire, /restore or /maintenance for the status)",
                ));
            }
        }
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        let mut doc = serde_json::to_value(&before)?;
        merge_patch(&mut doc, patch);
        let after: Sensor = typed(&doc).map_err(RegError::Invalid)?;
        let errs = self.check(&after, Some(id));
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        self.save(actor, "patch", id, Some(&before), &after)?;
        Ok(after)
    }

    /// Retire, start or end maintenance.
    pub fn set_status(
        &self,
        actor: &str,
        id: &str,
        status: SensorStatus,
        reason: Option<String>,
    ) -> Result<Sensor, RegError> {
        let before = self.existing(id)?;
        if before.status == SensorStatus::Retired {
            return Err(RegError::Invalid(vec![fe("status", format!("sensor {id} is retired; its record and history are kept, its status no longer changes"))]));
        }
        let mut after = before.clone();
        after.status = status;
        after.status_reason = reason;
        let action = match status {
            SensorStatus::Retired => "retire",
            SensorStatus::Maintenance => "maintenance_on",
            SensorStatus::Active => "maintenance_off",
        };
        self.save(actor, action, id, Some(&before), &after)?;
        Ok(after)
    }

    /// A retired sensor back to active, checked again as a registration (its topic, MN or unit id
    /// may be another sensor's by now).
    pub fn restore(&self, actor: &str, id: &str) -> Result<Sensor, RegError> {
        let before = self.existing(id)?;
        if before.status != SensorStatus::Retired {
            return Err(RegError::Invalid(vec![fe(
                "status",
                format!("sensor {id} is not retired"),
            )]));
        }
        let mut after = before.clone();
        after.status = SensorStatus::Active;
        after.status_reason = None;
        let errs = self.check(&after, Some(id));
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        self.save(actor, "restore", id, Some(&before), &after)?;
        Ok(after)
    }

    /// Register a device profile from its JSON. A profile no device uses may be replaced; a shipped
    /// one or one in use is refused with the devices using it.
    pub fn register_profile(&self, actor: &str, body: &Value) -> Result<Profile, RegError> {
        // Addresses first, from the raw JSON, so 70000 gets its own message rather than a type error.
        let mut errs = Vec::new();
        if let Some(values) = body.get("values").and_then(Value::as_array) {
            for (i, v) in values.iter().enumerate() {
                if let Some(a) = v.get("address").and_then(Value::as_i64) {
                    if !(0..=65_535).contains(&a) {
                        errs.push(fe(
                            format!("values[{i}].address"),
                            format!("{a} is outside 0..=65535"),
                        ));
                    }
                }
            }
        }
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        let p: Profile = typed(body).map_err(RegError::Invalid)?;
        if let Err(profile::ProfileError::Invalid { message, .. }) = p.validate() {
            let errs = message.split("; ").map(|m| match m.split_once(": ") {
                Some((path, msg)) => fe(path, msg),
                None => fe("", m),
            });
            return Err(RegError::Invalid(errs.collect()));
        }
        let before = self.profiles().get(&p.id).cloned();
        if before.is_some() {
            // Replacing a profile remaps every device using it at once: a shipped one never, one in
            // use only once no device uses it. A changed map is registered under a new id and the
            // devices moved to it one by one (each PATCH checked against its channels).
            let reg = self.registry.snapshot();
            let users: Vec<&str> = reg
                .sensors
                .values()
                .filter(|s| s.status != SensorStatus::Retired)
                .filter(|s| s.modbus.as_ref().is_some_and(|m| m.profile == p.id))
                .map(|s| s.id.as_str())
                .collect();
            let shipped = self.shipped.contains(&p.id);
            if shipped || !users.is_empty() {
                let why = if shipped {
                    "is shipped with enviromon and is never replaced"
                } else {
                    "is in use and is not replaced while devices use it"
                };
                let used = if users.is_empty() {
                    String::new()
                } else {
                    format!(" (used by {})", users.join(", "))
                };
                return Err(RegError::Invalid(vec![fe(
                    "id",
                    format!(
                        "profile {:?} {why}{used}; register the changed map under a new id (e.g. {}-v2) and move the devices to it with PATCH {{\"modbus\": {{\"profile\": \"…\"}}}}",
                        p.id, p.id
                    ),
                )]));
            }
        }
        {
            let conn = lock(&self.conn);
            conn.execute(
                "INSERT OR REPLACE INTO profiles (id, doc) VALUES (?1, ?2)",
                params![p.id, serde_json::to_string(&p)?],
            )?;
            audit(&conn, actor, "profile", &p.id, before.as_ref(), &p)?;
        }
        crate::sync::write(&self.profiles).insert(p.id.clone(), p.clone());
        // Devices using it restart with the new map.
        let reg = registry::load(&lock(&self.conn), &self.topic_pattern)?;
        self.registry.replace(reg);
        Ok(p)
    }

    fn save(
        &self,
        actor: &str,
        action: &str,
        id: &str,
        before: Option<&Sensor>,
        after: &Sensor,
    ) -> Result<(), RegError> {
        let reg: Registry;
        {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO sensors (id, doc) VALUES (?1, ?2)",
                params![id, serde_json::to_string(after)?],
            )?;
            audit(&tx, actor, action, id, before, after)?;
            // Build the new snapshot before committing: an inconsistent registry is never applied.
            reg = registry::load(&tx, &self.topic_pattern)?;
            tx.commit()?;
        }
        self.registry.replace(reg);
        tracing::info!(actor, action, sensor = id, "registry changed");
        Ok(())
    }

    /// The audit log, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<Value>, RegError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare("SELECT ts_ms, actor, action, target, before, after FROM audit ORDER BY rowid DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ts, actor, action, target, before, after) = row?;
            let parse = |x: Option<String>| {
                x.and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .unwrap_or(Value::Null)
            };
            out.push(json!({
                "time": chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().to_rfc3339(),
                "actor": actor, "action": action, "target": target, "before": parse(before), "after": parse(after),
            }));
        }
        Ok(out)
    }

    /// The whole registry as seed-format TOML (backup).
    pub fn export_toml(&self) -> Result<String, RegError> {
        #[derive(Serialize)]
        struct Export<'a> {
            site: Vec<&'a registry::Site>,
            unit: Vec<&'a registry::EmissionUnit>,
            sensor: Vec<&'a Sensor>,
            target: &'a Vec<registry::Target>,
        }
        let reg = self.registry.snapshot();
        let e = Export {
            site: reg.sites.values().collect(),
            unit: reg.units.values().collect(),
            sensor: reg.sensors.values().collect(),
            target: &reg.targets,
        };
        // Through JSON first: TOML cannot hold the nulls of unset options.
        let v = serde_json::to_value(&e)?;
        let v = strip_nulls(v);
        toml::to_string(&v).map_err(|e| RegError::Invalid(vec![fe("", e.to_string())]))
    }

    /// Import sensors from seed-format TOML: new ids are registered, existing ones replaced (each
    /// checked as a registration; nothing is applied if any fails).
    pub fn import_toml(&self, actor: &str, text: &str) -> Result<usize, RegError> {
        let v: toml::Value =
            toml::from_str(text).map_err(|e| RegError::Invalid(vec![fe("", e.to_string())]))?;
        let v = serde_json::to_value(v)?;
        let sensors = v
            .get("sensor")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut parsed = Vec::new();
        let mut errs = Vec::new();
        for (i, s) in sensors.iter().enumerate() {
            match typed::<Sensor>(s) {
                Ok(s) => {
                    for e in self.check(&s, Some(&s.id)) {
                        errs.push(fe(format!("sensor[{i}].{}", e.path), e.message));
                    }
                    parsed.push(s);
                }
                Err(es) => {
                    for e in es {
                        errs.push(fe(format!("sensor[{i}].{}", e.path), e.message));
                    }
                }
            }
        }
        if !errs.is_empty() {
            return Err(RegError::Invalid(errs));
        }
        let reg = self.registry.snapshot();
        {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            for s in &parsed {
                tx.execute(
                    "INSERT OR REPLACE INTO sensors (id, doc) VALUES (?1, ?2)",
                    params![s.id, serde_json::to_string(s)?],
                )?;
                audit(&tx, actor, "import", &s.id, reg.sensors.get(&s.id), s)?;
            }
            let next = registry::load(&tx, &self.topic_pattern)?;
            tx.commit()?;
            self.registry.replace(next);
        }
        Ok(parsed.len())
    }
}

/// Ids of sites and sensors: a-z, 0-9, - and _, 1 to 64 characters (they are tags in the store).
fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// RFC 7396 JSON merge patch: members of an object patch are merged into the target's object
/// recursively, `null` removes a member, anything else (arrays too) replaces what was there.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// How a domain's analysers are named in messages ("an ambient" SO2 analyser).
fn domain_words(d: crate::reading::Domain) -> &'static str {
    use crate::reading::Domain;
    match d {
        Domain::Air => "an ambient",
        Domain::Cems => "a flue-gas",
        Domain::Water => "a water",
        Domain::Power => "a power",
        Domain::Production => "a production",
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn audit<T: Serialize>(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&T>,
    after: &T,
) -> Result<(), RegError> {
    conn.execute(
        "INSERT INTO audit (ts_ms, actor, action, target, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            chrono::Utc::now().timestamp_millis(),
            actor,
            action,
            target,
            before.map(serde_json::to_string).transpose()?,
            serde_json::to_string(after)?
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7396 Appendix A's test cases, each (target, patch, result) as the RFC gives it.
    #[test]
    fn merge_patch_is_rfc7396() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn topic_filters_match_like_mqtt() {
        assert!(topic_matches("enviromon/#", "enviromon/a/b"));
        assert!(topic_matches("enviromon/+/b", "enviromon/a/b"));
        assert!(!topic_matches("enviromon/+/b", "enviromon/a/c"));
        assert!(!topic_matches("enviromon/+", "enviromon/a/b"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
