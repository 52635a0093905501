//! Configuration: serde structs, layered loading and validation that reports every error at once.
//!
//! Layers, later wins: the embedded defaults (`config/default.toml`, compiled in), the file given with
//! `--config`, then `ENVIROMON__SECTION__KEY` environment variables. Every struct denies unknown
//! fields, so a typo is an error rather than a silently ignored setting. `validate()` is pure: it
//! checks values and returns *all* problems with their field paths; nothing opens a socket until it
//! passes.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::standards::hj633::Edition;

/// The documented defaults, compiled in so the daemon runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
/// The demo's settings layered over the defaults by `enviromon demo`.
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

/// A configuration problem at one field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    /// Every field error, whatever the variant (a parse error is one).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Invalid(v) => v.clone(),
            ConfigError::Parse { path, message } => vec![FieldError {
                path: path.clone(),
                message: message.clone(),
            }],
            other => vec![FieldError {
                path: String::new(),
                message: other.to_string(),
            }],
        }
    }
}

/// Deserialize `T` from `tree`, reporting **every** field that does not fit, not just the first:
/// serde stops at the first error, so each error's field is reported with its exact path and then
/// taken out of the tree (an unknown key removed; a field of the wrong type, or a table missing a
/// required field, left to its default), and the rest is tried again. Returns what finally parsed
/// (None if even the repaired tree does not) and the errors in the order found.
pub fn deserialize_collecting<T: serde::de::DeserializeOwned>(
    mut tree: serde_json::Value,
) -> (Option<T>, Vec<FieldError>) {
    let mut errs = Vec::new();
    // Array elements taken out so far, by the array's original path: later errors in the same
    // array are reported with their original index.
    let mut removed: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    // Missing fields stood in for, by path → which of `PLACEHOLDERS` stands there now. Errors
    // inside a placeholder are its own, not the file's: never reported.
    let mut placeholders: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..200 {
        let e = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(v) => return (Some(v), errs),
            Err(e) => e,
        };
        let at: Vec<PathStep> = e.path().iter().filter_map(step).collect();
        let message = e.into_inner().to_string();
        // The path as the file wrote it.
        let mut orig: Vec<PathStep> = Vec::new();
        for st in &at {
            orig.push(match st {
                PathStep::Index(i) => {
                    let mut o = *i;
                    let mut gone = removed.get(&display(&orig)).cloned().unwrap_or_default();
                    gone.sort_unstable();
                    for r in gone {
                        if r <= o {
                            o += 1;
                        }
                    }
                    PathStep::Index(o)
                }
                k => k.clone(),
            });
        }
        let quoted = |m: &str, prefix: &str| {
            m.strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(str::to_string)
        };
        let with = |field: &str| {
            let mut p = orig.clone();
            p.push(PathStep::Key(field.to_string()));
            display(&p)
        };
        let (path, message, target) = if let Some(f) = quoted(&message, "unknown field `") {
            let expected = message
                .split_once(", expected ")
                .map(|(_, x)| format!("; expected {}", x.replace('`', "")))
                .unwrap_or_default();
            // The path may already end at the unknown key, or at the table holding it.
            let ends_at_key = matches!(at.last(), Some(PathStep::Key(k)) if *k == f);
            let mut key = at.clone();
            if !ends_at_key {
                key.push(PathStep::Key(f.clone()));
            }
            let shown = if ends_at_key {
                display(&orig)
            } else {
                with(&f)
            };
            (shown, format!("unknown field {f:?}{expected}"), key)
        } else if let Some(f) = quoted(&message, "missing field `") {
            // Stand a placeholder in for it, so the fields after it are still checked.
            let shown = with(&f);
            // Under a placeholder, or a field just taken out for its own error: said already.
            let under = placeholders.keys().any(|p| within(&shown, p))
                || errs.iter().any(|e| e.path == shown);
            if !under {
                errs.push(FieldError {
                    path: shown.clone(),
                    message: "required, but missing".into(),
                });
            }
            let mut key = at.clone();
            key.push(PathStep::Key(f));
            placeholders.insert(shown, 0);
            if !put(&mut tree, &key, PLACEHOLDERS[0].clone()) {
                return (None, errs);
            }
            continue;
        } else {
            (display(&orig), message, at.clone())
        };
        // A placeholder of the wrong type: try the next one (nothing new to report).
        if let Some(n) = placeholders.get_mut(&path) {
            *n += 1;
            match PLACEHOLDERS.get(*n) {
                Some(v) if put(&mut tree, &target, v.clone()) => continue,
                _ => {
                    // No placeholder fits (a required field of a closed type, like a token's
                    // role): take out the array element holding it, whose error is reported,
                    // and go on with the rest.
                    let (parent, orig_parent) = (
                        &target[..target.len().saturating_sub(1)],
                        &orig[..orig.len().saturating_sub(1)],
                    );
                    match (parent.last(), orig_parent.last()) {
                        (Some(PathStep::Index(_)), Some(PathStep::Index(o))) => {
                            removed
                                .entry(display(&orig_parent[..orig_parent.len() - 1]))
                                .or_default()
                                .push(*o);
                            placeholders.remove(&path);
                            if !remove(&mut tree, parent) {
                                return (None, errs);
                            }
                            continue;
                        }
                        _ => return (None, errs),
                    }
                }
            }
        }
        if !placeholders.keys().any(|p| within(&path, p)) {
            errs.push(FieldError { path, message });
        }
        if let (Some(PathStep::Index(_)), Some(PathStep::Index(o))) = (target.last(), orig.last()) {
            if target.len() == at.len() {
                removed
                    .entry(display(&orig[..orig.len() - 1]))
                    .or_default()
                    .push(*o);
            }
        }
        if !remove(&mut tree, &target) {
            return (None, errs);
        }
    }
    (None, errs)
}

static PLACEHOLDERS: std::sync::LazyLock<[serde_json::Value; 6]> = std::sync::LazyLock::new(|| {
    [
        serde_json::json!(""),
        serde_json::json!(0),
        serde_json::json!(false),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::Value::Null,
    ]
});

/// `path` is `prefix` or inside it.
fn within(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
}

/// The node at `path`, if every step exists.
fn node_mut<'a>(
    tree: &'a mut serde_json::Value,
    path: &[PathStep],
) -> Option<&'a mut serde_json::Value> {
    let mut node = tree;
    for p in path {
        node = match (p, node) {
            (PathStep::Key(k), serde_json::Value::Object(m)) => m.get_mut(k)?,
            (PathStep::Index(i), serde_json::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Set the node at `path` (its parent must exist and be a table or an array).
fn put(tree: &mut serde_json::Value, path: &[PathStep], v: serde_json::Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    match (last, node_mut(tree, parents)) {
        (PathStep::Key(k), Some(serde_json::Value::Object(m))) => {
            m.insert(k.clone(), v);
            true
        }
        (PathStep::Index(i), Some(serde_json::Value::Array(a))) if *i < a.len() => {
            a[*i] = v;
            true
        }
        _ => false,
    }
}

/// `alerts.webhook[0].name`
fn display(path: &[PathStep]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            PathStep::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathStep::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn step(s: &serde_path_to_error::Segment) -> Option<PathStep> {
    match s {
        serde_path_to_error::Segment::Map { key } => Some(PathStep::Key(key.clone())),
        serde_path_to_error::Segment::Seq { index } => Some(PathStep::Index(*index)),
        serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => None,
    }
}

/// Take the node at `path` out of `tree`; false when there is nothing there to take (the root).
fn remove(tree: &mut serde_json::Value, path: &[PathStep]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    match (last, node_mut(tree, parents)) {
        (PathStep::Key(k), Some(serde_json::Value::Object(m))) => m.remove(k).is_some(),
        (PathStep::Index(i), Some(serde_json::Value::Array(a))) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// A secret (password, token). Its `Debug` never shows the value, so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A secret given inline (normally through `ENVIROMON__…` env) or as a file path; not both.
fn resolve_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some(Secret(s.trim_end_matches(['\r', '\n']).to_string())))
            .map_err(|source| ConfigError::SecretFile {
                path: path.clone(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

/// Top level. See `config/default.toml` for every default with its explanation.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub http: HttpConfig,
    pub api: ApiConfig,
    pub mqtt: MqttConfig,
    pub pipeline: PipelineConfig,
    pub store: StoreConfig,
    pub spool: SpoolConfig,
    pub modbus: ModbusConfig,
    pub hj212: Hj212Config,
    pub standards: StandardsConfig,
    pub alerts: AlertsConfig,
    pub report: ReportConfig,
    pub registry: RegistryConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Directory for the embedded database and the dead-letter file. Default `data`.
    pub data_dir: PathBuf,
    /// How long shutdown may take to drain and flush before it gives up. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from("data"),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API and `/metrics`. Default `127.0.0.1:8080`.
    pub listen: String,
    /// A connection that has not sent a request's headers within this is closed (half-open and
    /// idle keep-alive connections included). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog. Default 512.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Who may do what through the API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Read-only endpoints without a token. Default true.
    pub anonymous_read: bool,
    /// Bearer tokens, stored as SHA-256 hashes (`enviromon hash-token TOKEN` prints one).
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            anonymous_read: true,
            tokens: Vec::new(),
        }
    }
}

/// Roles, each allowed what the ones below it are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Technician,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "technician" => Some(Role::Technician),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Technician => "technician",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who it is (written in the audit log).
    pub name: String,
    /// viewer, technician, operator or admin.
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Subscribe to a broker at all. Default true.
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Fixed client id: with `clean_session = false` the broker keeps our queue while we are down.
    pub client_id: String,
    pub clean_session: bool,
    pub username: Option<String>,
    /// Password inline (use `ENVIROMON__MQTT__PASSWORD`, never a committed file) …
    pub password: Option<Secret>,
    /// … or read from this file.
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Topic filters subscribed at QoS `qos`.
    pub subscriptions: Vec<String>,
    pub qos: u8,
    /// How a sensor's topic is derived when its registry entry names none.
    pub topic_pattern: String,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Reconnect backoff doubles from `reconnect_min` up to this cap, forever.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Payloads larger than this are dead-lettered as `payload_too_large`.
    pub max_payload_bytes: usize,
    /// A retained message whose readings carry no timestamp of their own: the broker sends it
    /// again at every (re)subscription, so taking the arrival time would store it again each time.
    /// `ignore` (default): counted, not stored; `store`: stored with the arrival time.
    pub retained_without_ts: RetainedWithoutTs,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "enviromon".into(),
            clean_session: false,
            username: None,
            password: None,
            password_file: None,
            tls: None,
            subscriptions: vec!["enviromon/#".into()],
            qos: 1,
            topic_pattern: "enviromon/{site}/{sensor}".into(),
            keep_alive: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(200),
            max_payload_bytes: 256 * 1024,
            retained_without_ts: RetainedWithoutTs::Ignore,
        }
    }
}

impl MqttConfig {
    pub fn resolved_password(&self) -> Result<Option<Secret>, ConfigError> {
        resolve_secret(&self.password, &self.password_file)
    }
}

/// What to do with a retained MQTT message whose readings have no timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetainedWithoutTs {
    Ignore,
    Store,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that require client authentication.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Capacity of the bounded channel between sources and the store writer (messages).
    pub channel_capacity: usize,
    /// A reading stamped further than this in the future is rejected (`future_timestamp`).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// At most one warn log per rejection reason per this interval; the rest are counted.
    #[serde(with = "humantime_serde")]
    pub reject_log_interval: Duration,
    /// The dead-letter file rotates past this size, bytes. Default 64 MiB.
    pub deadletter_max_bytes: u64,
    /// Rotated dead-letter files kept (`deadletter.jsonl.1` …). Default 3.
    pub deadletter_keep: usize,
    /// Dead-letter records per second per source and reason after the burst (floods). Default 20.
    pub deadletter_flood_rate: f64,
    /// Dead-letter records written at once before the flood rate applies. Default 200.
    pub deadletter_flood_burst: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            channel_capacity: 1024,
            max_future_skew: Duration::from_secs(300),
            reject_log_interval: Duration::from_secs(10),
            deadletter_max_bytes: 64 << 20,
            deadletter_keep: 3,
            deadletter_flood_rate: 20.0,
            deadletter_flood_burst: 200.0,
        }
    }
}

/// Which store readings go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in `daemon.data_dir` (the default: runs anywhere).
    Embedded,
    /// InfluxDB v2 write API (`/api/v2/write`) through the influxdb2 crate.
    Influxdb,
    /// InfluxDB 1.x write API (`/write?db=`).
    Influxdb1,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// A batch holds at most this many readings; it is written as soon as the spool has data.
    pub batch_size: usize,
    /// Retry backoff on a failing store: doubles up to this cap, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    pub embedded: EmbeddedConfig,
    pub influxdb: InfluxConfig,
    pub influxdb1: Influx1Config,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Embedded,
            batch_size: 5000,
            retry_max: Duration::from_secs(30),
            embedded: EmbeddedConfig::default(),
            influxdb: InfluxConfig::default(),
            influxdb1: Influx1Config::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Readings older than this are deleted hourly; `0s` keeps them forever. Default 400 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            retention: Duration::from_secs(400 * 86_400),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// Token inline (`ENVIROMON__STORE__INFLUXDB__TOKEN`) or from `token_file`.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: String::new(),
            org: "jianxi".into(),
            bucket: "enviromon".into(),
            token: None,
            token_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl InfluxConfig {
    pub fn resolved_token(&self) -> Result<Option<Secret>, ConfigError> {
        resolve_secret(&self.token, &self.token_file)
    }
}

/// When spool appends are fsynced (see `ARCHITECTURE.md` § Spool for the crash window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync every append batch before acknowledging it: nothing acknowledged is lost, even on
    /// power loss.
    Batch,
    /// fsync every `fsync_interval`: a process crash loses nothing; a power loss may lose the
    /// readings acknowledged in the last interval.
    Interval,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool; default `{daemon.data_dir}/spool`.
    pub dir: Option<PathBuf>,
    /// Size limit; when reached, ingest pauses (backpressure) until the store drains it. 1 GiB.
    pub max_bytes: u64,
    /// A new segment file starts at this size; stored segments are deleted whole. 16 MiB.
    pub segment_bytes: u64,
    pub fsync: FsyncMode,
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            fsync: FsyncMode::Batch,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Influx1Config {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub database: String,
    /// Retention policy; default: the database's default policy.
    pub retention_policy: Option<String>,
    pub username: Option<String>,
    /// Password inline (`ENVIROMON__STORE__INFLUXDB1__PASSWORD`) or from `password_file`.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `CREATE DATABASE` at start (idempotent) and when a write finds it missing; false: only
    /// check it exists and report "not ready" until it does. Default true.
    pub create_database: bool,
}

impl Default for Influx1Config {
    fn default() -> Self {
        Influx1Config {
            url: String::new(),
            database: "enviromon".into(),
            retention_policy: None,
            username: None,
            password: None,
            password_file: None,
            timeout: Duration::from_secs(10),
            create_database: true,
        }
    }
}

impl Influx1Config {
    pub fn resolved_password(&self) -> Result<Option<Secret>, ConfigError> {
        resolve_secret(&self.password, &self.password_file)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate alert rules at all. Default true.
    pub enabled: bool,
    /// Rules file, re-read when it changes; unset: the built-in `config/alerts.toml`.
    pub rules_file: Option<PathBuf>,
    /// How often every rule is evaluated ("no data" included). Default 15 s.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// A firing alert is notified again this often (webhooks, robots). Default 4 h.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Firing alerts are re-posted to Alertmanager this often (it resolves alerts it stops hearing
    /// about). Default 1 min.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Base URL of this daemon's API, for alerts' generatorURL.
    pub external_url: String,
    pub alertmanager: Vec<AlertmanagerReceiver>,
    pub webhook: Vec<WebhookReceiver>,
    pub dingtalk: Vec<WebhookReceiver>,
    pub wecom: Vec<PlainReceiver>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            rules_file: None,
            evaluation_interval: Duration::from_secs(15),
            repeat_interval: Duration::from_secs(4 * 3600),
            resend_interval: Duration::from_secs(60),
            external_url: "http://127.0.0.1:8080".into(),
            alertmanager: Vec::new(),
            webhook: Vec::new(),
            dingtalk: Vec::new(),
            wecom: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerReceiver {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    pub name: String,
    pub url: String,
    /// Signing secret inline (from env) or from `secret_file`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl WebhookReceiver {
    pub fn resolved_secret(&self) -> Result<Option<Secret>, ConfigError> {
        resolve_secret(&self.secret, &self.secret_file)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainReceiver {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hj212Config {
    /// Listen for data acquisition units. Default false.
    pub enabled: bool,
    /// Address the units connect to. Default `0.0.0.0:9212`… set your platform's port.
    pub listen: String,
    pub max_connections: usize,
    /// A unit silent this long is disconnected (they report every 30 s or more often).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Every logger on this listener must SM4-encrypt its data, key updates and site information
    /// (HJ 212-2025 §6.4.1: "shall" over the Internet, "should" on a private network). Default
    /// false: each logger's own `hj212.encryption` decides.
    pub require_encryption: bool,
    /// The loggers' SM4 keys (a secrets file, mode 0600, written by the daemon when a technician
    /// sets a key). Default `{daemon.data_dir}/secrets/hj212-keys.json`.
    pub keys_file: Option<PathBuf>,
    /// After a key rotation the previous key still opens frames this long (frames in flight or
    /// buffered under it). Default 24 h.
    #[serde(with = "humantime_serde")]
    pub key_overlap: Duration,
}

impl Default for Hj212Config {
    fn default() -> Self {
        Hj212Config {
            enabled: false,
            listen: "0.0.0.0:9212".into(),
            max_connections: 2000,
            idle_timeout: Duration::from_secs(300),
            require_encryption: false,
            keys_file: None,
            key_overlap: Duration::from_secs(86_400),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModbusConfig {
    /// Poll the registry's Modbus sensors. Default true.
    pub enabled: bool,
    /// Extra device profiles (`*.toml`), besides the built-in ones; same id replaces.
    pub profiles_dir: Option<PathBuf>,
    /// Reconnect backoff cap for an unreachable endpoint (retried forever). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Poll backoff cap for a device that does not answer. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub device_backoff_max: Duration,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            enabled: true,
            profiles_dir: None,
            reconnect_max: Duration::from_secs(30),
            device_backoff_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandardsConfig {
    /// Compute compliance at all. Default true.
    pub enabled: bool,
    /// AQI edition: "HJ633-2026" (in force, the default) or "HJ633-2012" (the plan period).
    pub aqi_edition: Edition,
    /// Readings up to this late re-open and recompute their hour and day; older ones are stored
    /// but do not change results. Default 48 h.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// How often changed hours and days are recomputed. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long the input of imported history is kept after its import, so a later import of
    /// the same hours (another file with other quantities of them) is re-evaluated with all of
    /// them. Default 30 days.
    #[serde(with = "humantime_serde")]
    pub history_input_keep: Duration,
    pub cems: CemsStandardsConfig,
    pub air: AirStandardsConfig,
    pub water: WaterStandardsConfig,
    /// CEMS data-integrity rules (`src/integrity`).
    pub integrity: crate::integrity::IntegrityConfig,
}

impl Default for StandardsConfig {
    fn default() -> Self {
        StandardsConfig {
            enabled: true,
            aqi_edition: Edition::Hj633_2026,
            lateness: Duration::from_secs(48 * 3600),
            interval: Duration::from_secs(10),
            history_input_keep: Duration::from_secs(30 * 86_400),
            cems: CemsStandardsConfig::default(),
            air: AirStandardsConfig::default(),
            water: WaterStandardsConfig::default(),
            integrity: crate::integrity::IntegrityConfig::default(),
        }
    }
}

/// Choices HJ 75/76-2017 leaves open for CEMS hours (README, "Choices the standards leave").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CemsStandardsConfig {
    /// `per_minute` (default: each minute corrected with its own O2, then averaged — HJ 76-2017
    /// Appendix B's "1h 折算浓度均值") or `hourly_means` (the hour's mean corrected with its mean O2).
    pub o2_correction: crate::standards::hj75::O2Correction,
    /// `mean_only` (default: the hour is judged by its mean; T minutes count at their value) or
    /// `any_minute_exceeds` (a counted T minute makes a valid hour exceeded).
    pub over_range: crate::standards::hj75::OverRange,
    /// A partly stopped hour: `invalid` (default: ≥ 45 valid minutes like any hour), `stopped`, or
    /// `running_minutes` (valid with ≥ 75 % of the running minutes valid).
    pub partial_stop: crate::standards::hj75::PartialStop,
    /// The data logger's own hourly record (HJ 212 CN 2061): `when_no_minutes` (default: used only
    /// when the pollutant has no minute data in the hour — HJ 75 judges an hour by its valid
    /// minutes), `when_minutes_invalid` (also when the minutes make an invalid hour), or `never`.
    pub hourly_record: crate::standards::cems::HourlyRecord,
}

/// How the district (city) air values are formed from the stations (HJ 663).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirStandardsConfig {
    /// `hourly_series` (default: the stations' hourly values averaged into the district's hourly
    /// series, its daily means and O3 8h moving means taken from that series) or `station_days`
    /// (the mean of the stations' daily values, including their O3 daily maxima).
    pub district_method: crate::standards::air::DistrictMethod,
    /// A district hourly (or, with `station_days`, daily) value needs at least this many stations
    /// with a valid value. Default 1.
    pub district_min_stations: u32,
    /// A station value more than this many times off (either way) the median of the other
    /// stations is held out of the district's mean and raises the `air_station_held_out` alert
    /// (floors: 5 µg/m³, CO 0.5 mg/m³; needs two other stations with a value). Default 50: a
    /// unit mistake is 1,000×, while neighbouring stations of one district differ by a few times.
    /// 0 turns the check off.
    pub outlier_factor: f64,
    /// How long after its registration a sensor's values are checked against the other stations
    /// (its first days, when a registration mistake shows). Default 7d.
    #[serde(with = "humantime_serde")]
    pub outlier_probation: std::time::Duration,
    /// Check every station's values, not only those of newly registered sensors. Default false:
    /// an established station far above the others is more likely a real local episode.
    pub outlier_all_stations: bool,
}

impl Default for AirStandardsConfig {
    fn default() -> Self {
        AirStandardsConfig {
            district_method: Default::default(),
            district_min_stations: 1,
            outlier_factor: 50.0,
            outlier_probation: std::time::Duration::from_secs(7 * 86_400),
            outlier_all_stations: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaterStandardsConfig {
    /// Effluent analysers judged against GB 18918-2002 Class 1A.
    pub effluent_sensors: Vec<String>,
    /// The plant was built before 2006-01-01 (TP limit 1 instead of 0.5).
    pub built_before_2006: bool,
    /// Flow meters whose volume is sewage treated (plant inflow).
    pub treated_flow_sensors: Vec<String>,
    /// Flow meters whose volume is sewage produced (outfalls and plant inflow) …
    pub produced_flow_sensors: Vec<String>,
    /// … plus this estimate of sewage produced but not metered, m3 per day.
    pub unmetered_produced_m3_per_day: f64,
    /// How a daily mean is compared with a GB 3838 / GB 18918 limit: `rounded` (default: as
    /// reported, GB/T 8170 rounding to the parameter's precision, then compared — 修约值比较法) or
    /// `full_value` (GB/T 8170 §4.3 全数值比较法: unrounded, binary noise below 1e-9 removed).
    pub comparison: crate::standards::gb3838::Comparison,
}

impl Default for WaterStandardsConfig {
    fn default() -> Self {
        WaterStandardsConfig {
            effluent_sensors: vec!["wwtp-outlet-quality".into()],
            built_before_2006: false,
            treated_flow_sensors: vec!["wwtp-inlet-flow".into()],
            produced_flow_sensors: vec!["wwtp-inlet-flow".into()],
            unmetered_produced_m3_per_day: 0.0,
            comparison: Default::default(),
        }
    }
}

/// Which day a scheduled briefing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BriefingDay {
    /// The day before the run: a complete day, as HJ 633's daily report is.
    Previous,
    /// The day of the run, so far.
    Current,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Make the daily briefing at this time, Beijing time ("HH:MM"); "off": never. Default "08:00".
    pub daily_at: String,
    /// Which day it covers. Default `previous`.
    pub day: BriefingDay,
    /// Where briefings are written (text, markdown, PNG, and what was pushed where).
    /// Default `{daemon.data_dir}/briefings`.
    pub dir: Option<PathBuf>,
    /// The group robots it is pushed to, by receiver name (`[[alerts.dingtalk]]`,
    /// `[[alerts.wecom]]`); unset: every robot; `[]`: none.
    pub receivers: Option<Vec<String>>,
    /// A CJK font file for the picture; unset: the first of Debian's CJK fonts installed.
    pub font: Option<PathBuf>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            daily_at: "08:00".into(),
            day: BriefingDay::Previous,
            dir: None,
            receivers: None,
            font: None,
        }
    }
}

impl ReportConfig {
    /// `daily_at` as minutes after midnight (CST); `None` when "off".
    pub fn daily_at_minutes(&self) -> Option<Result<u32, String>> {
        let s = self.daily_at.as_str();
        if s == "off" {
            return None;
        }
        let parsed = s.split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
        });
        Some(parsed.ok_or_else(|| {
            format!("{s:?} is not a time like \"08:00\" (HH:MM, Beijing time) or \"off\"")
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Directory of `sites.toml`, `units.toml`, `sensors.toml`, `targets.toml`; empty means the
    /// district seeds compiled into the binary.
    pub seeds_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `enviromon=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Load defaults, then `file` (if any), then `ENVIROMON__…` env; then validate.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_layers(file, &[], true)
    }

    /// Load with extra TOML layers after the defaults (the demo uses this) and optionally the env.
    pub fn load_layers(
        file: Option<&Path>,
        extra: &[&str],
        with_env: bool,
    ) -> Result<Config, ConfigError> {
        use config::{Environment, File, FileFormat};
        let mut b =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        for layer in extra {
            b = b.add_source(File::from_str(layer, FileFormat::Toml));
        }
        if let Some(path) = file {
            b = b.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        if with_env {
            b = b.add_source(
                Environment::with_prefix("ENVIROMON")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let layered = b.build()?;
        let tree: serde_json::Value = layered.try_deserialize()?;
        let (cfg, mut errs) = deserialize_collecting::<Config>(tree);
        // Semantic checks on what did parse (a field that did not parse is already reported).
        if let Some(c) = &cfg {
            if let Err(more) = c.validate() {
                // Not again for what stood in for a field already reported.
                let reported: Vec<String> = errs.iter().map(|e| e.path.clone()).collect();
                errs.extend(
                    more.into_iter()
                        .filter(|e| !reported.iter().any(|r| within(&e.path, r))),
                );
            }
        }
        match cfg {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(errs)),
        }
    }

    /// Check every value; return all problems, each with its field path. Each section's values
    /// are checked on their own (pure, `check_*`), then the files the configuration names
    /// (`check_files`, the only part that reads the filesystem).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut err = |path: &str, message: String| {
            errs.push(FieldError {
                path: path.into(),
                message,
            })
        };
        self.check_pipeline(&mut err);
        self.check_http(&mut err);
        self.check_api(&mut err);
        self.check_mqtt(&mut err);
        self.check_store(&mut err);
        self.check_spool(&mut err);
        self.check_modbus(&mut err);
        self.check_hj212(&mut err);
        self.check_alerts(&mut err);
        self.check_report(&mut err);
        self.check_standards(&mut err);
        self.check_log(&mut err);
        self.check_files(&mut err);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The pipeline: dead-letter bounds and the channel.
    fn check_pipeline(&self, err: &mut impl FnMut(&str, String)) {
        if self.pipeline.channel_capacity == 0 {
            err("pipeline.channel_capacity", "must be at least 1".into());
        }
        let pl = &self.pipeline;
        if pl.deadletter_max_bytes < 64 * 1024 {
            err(
                "pipeline.deadletter_max_bytes",
                "must be at least 65536 (one record keeps up to 64 KiB of payload)".into(),
            );
        }
        let rate_ok = pl.deadletter_flood_rate.is_finite() && pl.deadletter_flood_rate > 0.0;
        let burst_ok = pl.deadletter_flood_burst.is_finite() && pl.deadletter_flood_burst >= 1.0;
        if !rate_ok || !burst_ok {
            err(
                "pipeline.deadletter_flood_rate",
                "the rate must be > 0 and the burst ≥ 1".into(),
            );
        }
    }

    /// The daemon and the HTTP listener.
    fn check_http(&self, err: &mut impl FnMut(&str, String)) {
        if self.daemon.shutdown_deadline.is_zero() {
            err("daemon.shutdown_deadline", "must be greater than 0s".into());
        }
        if self.http.header_read_timeout.is_zero() {
            err("http.header_read_timeout", "must be greater than 0s".into());
        }
        if self.http.max_connections == 0 {
            err("http.max_connections", "must be at least 1".into());
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            err(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.http.listen
                ),
            );
        }
    }

    /// API tokens.
    fn check_api(&self, err: &mut impl FnMut(&str, String)) {
        for (i, t) in self.api.tokens.iter().enumerate() {
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                err(
                    &format!("api.tokens[{i}].sha256"),
                    "must be 64 lowercase hex digits (enviromon hash-token TOKEN)".into(),
                );
            }
            if t.name.trim().is_empty() {
                err(&format!("api.tokens[{i}].name"), "must not be empty".into());
            }
        }
    }

    /// The MQTT source (its files: `check_files`).
    fn check_mqtt(&self, err: &mut impl FnMut(&str, String)) {
        let m = &self.mqtt;
        if m.enabled {
            if m.host.trim().is_empty() {
                err("mqtt.host", "must not be empty".into());
            }
            if m.port == 0 {
                err("mqtt.port", "0 is not a usable port (1..=65535)".into());
            }
            if m.client_id.trim().is_empty() {
                err(
                    "mqtt.client_id",
                    "must not be empty (a fixed id keeps the broker's queue)".into(),
                );
            }
            if m.qos > 2 {
                err(
                    "mqtt.qos",
                    format!("{} is not an MQTT QoS (0, 1 or 2)", m.qos),
                );
            }
            if m.subscriptions.is_empty() {
                err(
                    "mqtt.subscriptions",
                    "must name at least one topic filter".into(),
                );
            }
            for (i, f) in m.subscriptions.iter().enumerate() {
                if let Err(why) = check_topic_filter(f) {
                    err(&format!("mqtt.subscriptions[{i}]"), why);
                }
            }
            if !m.topic_pattern.contains("{sensor}") {
                err("mqtt.topic_pattern", "must contain {sensor}".into());
            }
            if m.password.is_some() && m.password_file.is_some() {
                err(
                    "mqtt.password_file",
                    "give the password or password_file, not both".into(),
                );
            }
            if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
                err("mqtt.username", "a password needs a username".into());
            }
            if m.keep_alive < Duration::from_secs(5) {
                err("mqtt.keep_alive", "must be at least 5s".into());
            }
            if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
                err(
                    "mqtt.reconnect_min",
                    "must be > 0s and <= mqtt.reconnect_max".into(),
                );
            }
            if m.max_payload_bytes == 0 {
                err("mqtt.max_payload_bytes", "must be at least 1".into());
            }
            if let Some(tls) = &m.tls {
                if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                    err(
                        "mqtt.tls.client_key_file",
                        "client_cert_file and client_key_file go together".into(),
                    );
                }
            }
        }
    }

    /// The store.
    fn check_store(&self, err: &mut impl FnMut(&str, String)) {
        let s = &self.store;
        if s.batch_size == 0 || s.batch_size > 100_000 {
            err(
                "store.batch_size",
                format!("{} is outside 1..=100000", s.batch_size),
            );
        }
        if s.retry_max < Duration::from_millis(100) {
            err("store.retry_max", "must be at least 100ms".into());
        }
        if s.kind == StoreKind::Influxdb {
            let i = &s.influxdb;
            match url::Url::parse(&i.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(u) => err(
                    "store.influxdb.url",
                    format!("scheme {:?} is not http or https", u.scheme()),
                ),
                Err(e) => err(
                    "store.influxdb.url",
                    format!("{:?} is not a URL: {e}", i.url),
                ),
            }
            if i.org.trim().is_empty() {
                err("store.influxdb.org", "must not be empty".into());
            }
            if i.bucket.trim().is_empty() {
                err("store.influxdb.bucket", "must not be empty".into());
            }
            if i.token.is_some() && i.token_file.is_some() {
                err(
                    "store.influxdb.token_file",
                    "give the token or token_file, not both".into(),
                );
            }
            if i.token.is_none() && i.token_file.is_none() {
                err(
                    "store.influxdb.token",
                    "InfluxDB 2 needs an API token: set ENVIROMON__STORE__INFLUXDB__TOKEN or store.influxdb.token_file".into(),
                );
            }
            if i.timeout.is_zero() {
                err("store.influxdb.timeout", "must be greater than 0s".into());
            }
        }
        if s.kind == StoreKind::Influxdb1 {
            let i = &s.influxdb1;
            match url::Url::parse(&i.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(u) => err(
                    "store.influxdb1.url",
                    format!("scheme {:?} is not http or https", u.scheme()),
                ),
                Err(e) => err(
                    "store.influxdb1.url",
                    format!("{:?} is not a URL: {e}", i.url),
                ),
            }
            if i.database.trim().is_empty() {
                err("store.influxdb1.database", "must not be empty".into());
            }
            if i.password.is_some() && i.password_file.is_some() {
                err(
                    "store.influxdb1.password_file",
                    "give the password or password_file, not both".into(),
                );
            }
            if (i.password.is_some() || i.password_file.is_some()) && i.username.is_none() {
                err(
                    "store.influxdb1.username",
                    "a password needs a username".into(),
                );
            }
            if i.timeout.is_zero() {
                err("store.influxdb1.timeout", "must be greater than 0s".into());
            }
        }
    }

    /// The spool.
    fn check_spool(&self, err: &mut impl FnMut(&str, String)) {
        let sp = &self.spool;
        if sp.max_bytes < 64 * 1024 {
            err(
                "spool.max_bytes",
                format!("{} is below the minimum of 65536", sp.max_bytes),
            );
        }
        if sp.segment_bytes < 4096 || sp.segment_bytes > sp.max_bytes {
            err(
                "spool.segment_bytes",
                format!("{} must be within 4096..=spool.max_bytes", sp.segment_bytes),
            );
        }
        if sp.fsync == FsyncMode::Interval && sp.fsync_interval.is_zero() {
            err("spool.fsync_interval", "must be greater than 0s".into());
        }
    }

    /// The Modbus source.
    fn check_modbus(&self, err: &mut impl FnMut(&str, String)) {
        if self.modbus.reconnect_max < Duration::from_millis(100) {
            err("modbus.reconnect_max", "must be at least 100ms".into());
        }
        if self.modbus.device_backoff_max.is_zero() {
            err(
                "modbus.device_backoff_max",
                "must be greater than 0s".into(),
            );
        }
    }

    /// The HJ 212 server.
    fn check_hj212(&self, err: &mut impl FnMut(&str, String)) {
        if self.hj212.enabled {
            if self.hj212.listen.parse::<SocketAddr>().is_err() {
                err(
                    "hj212.listen",
                    format!(
                        "{:?} is not an address like 0.0.0.0:9212",
                        self.hj212.listen
                    ),
                );
            }
            if self.hj212.max_connections == 0 {
                err("hj212.max_connections", "must be at least 1".into());
            }
            if self.hj212.idle_timeout.is_zero() {
                err("hj212.idle_timeout", "must be greater than 0s".into());
            }
        }
    }

    /// Rules and receivers.
    fn check_alerts(&self, err: &mut impl FnMut(&str, String)) {
        let al = &self.alerts;
        if al.evaluation_interval.is_zero()
            || al.resend_interval.is_zero()
            || al.repeat_interval.is_zero()
        {
            err(
                "alerts.evaluation_interval",
                "evaluation, resend and repeat intervals must be greater than 0s".into(),
            );
        }
        let url_ok = |u: &str| {
            url::Url::parse(u).is_ok_and(|x| x.scheme() == "http" || x.scheme() == "https")
        };
        for (i, r) in al.alertmanager.iter().enumerate() {
            if !url_ok(&r.url) {
                err(
                    &format!("alerts.alertmanager[{i}].url"),
                    format!("{:?} is not an http(s) URL", r.url),
                );
            }
        }
        for (kind, list) in [("webhook", &al.webhook), ("dingtalk", &al.dingtalk)] {
            for (i, r) in list.iter().enumerate() {
                if !url_ok(&r.url) {
                    err(
                        &format!("alerts.{kind}[{i}].url"),
                        format!("{:?} is not an http(s) URL", r.url),
                    );
                }
                if r.secret.is_some() && r.secret_file.is_some() {
                    err(
                        &format!("alerts.{kind}[{i}].secret_file"),
                        "give the secret or secret_file, not both".into(),
                    );
                }
            }
        }
        for (i, r) in al.wecom.iter().enumerate() {
            if !url_ok(&r.url) {
                err(
                    &format!("alerts.wecom[{i}].url"),
                    format!("{:?} is not an http(s) URL", r.url),
                );
            }
        }
    }

    /// The daily briefing.
    fn check_report(&self, err: &mut impl FnMut(&str, String)) {
        let al = &self.alerts;
        if let Some(Err(e)) = self.report.daily_at_minutes() {
            err("report.daily_at", e);
        }
        let robots: Vec<&str> = al
            .dingtalk
            .iter()
            .map(|r| r.name.as_str())
            .chain(al.wecom.iter().map(|r| r.name.as_str()))
            .collect();
        for (i, name) in self.report.receivers.iter().flatten().enumerate() {
            if !robots.contains(&name.as_str()) {
                err(
                    &format!("report.receivers[{i}]"),
                    format!(
                        "{name:?} is not an [[alerts.dingtalk]] or [[alerts.wecom]] receiver (robots: {})",
                        if robots.is_empty() { "none".to_string() } else { robots.join(", ") }
                    ),
                );
            }
        }
    }

    /// The standards engine.
    fn check_standards(&self, err: &mut impl FnMut(&str, String)) {
        let st = &self.standards;
        if st.interval.is_zero() {
            err("standards.interval", "must be greater than 0s".into());
        }
        if st.lateness < Duration::from_secs(3600) {
            err("standards.lateness", "must be at least 1h".into());
        }
        let unmetered = st.water.unmetered_produced_m3_per_day;
        if unmetered.is_nan() || unmetered < 0.0 {
            err(
                "standards.water.unmetered_produced_m3_per_day",
                "must be a number ≥ 0".into(),
            );
        }
        let f = st.air.outlier_factor;
        if !f.is_finite() || (f != 0.0 && f <= 1.0) {
            err(
                "standards.air.outlier_factor",
                format!("{f} must be 0 (off) or a factor above 1"),
            );
        }
        let ig = &st.integrity;
        if ig.history < Duration::from_secs(2 * 86_400) {
            err(
                "standards.integrity.history",
                "must be at least 2 days".into(),
            );
        }
        for (field, message) in ig.thresholds.problems() {
            err(&format!("standards.integrity.thresholds.{field}"), message);
        }
        for (unit, u) in &ig.units {
            for (field, message) in u.problems(&ig.thresholds) {
                err(
                    &format!("standards.integrity.units.{unit}.{field}"),
                    message,
                );
            }
        }
    }

    /// Logging.
    fn check_log(&self, err: &mut impl FnMut(&str, String)) {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            err(
                "log.level",
                format!("{:?} is not a tracing filter", self.log.level),
            );
        }
    }

    /// The files the configuration names: each must exist (and the rules file must parse).
    fn check_files(&self, err: &mut impl FnMut(&str, String)) {
        let m = &self.mqtt;
        if m.enabled {
            if let Some(tls) = &m.tls {
                for (path, file) in [
                    ("mqtt.tls.ca_file", Some(&tls.ca_file)),
                    ("mqtt.tls.client_cert_file", tls.client_cert_file.as_ref()),
                    ("mqtt.tls.client_key_file", tls.client_key_file.as_ref()),
                ] {
                    if let Some(f) = file {
                        if !f.is_file() {
                            err(path, format!("{} does not exist", f.display()));
                        }
                    }
                }
            }
            if let Some(f) = &m.password_file {
                if !f.is_file() {
                    err(
                        "mqtt.password_file",
                        format!("{} does not exist", f.display()),
                    );
                }
            }
        }
        if self.store.kind == StoreKind::Influxdb {
            let i = &self.store.influxdb;
            if let Some(f) = &i.token_file {
                if !f.is_file() {
                    err(
                        "store.influxdb.token_file",
                        format!("{} does not exist", f.display()),
                    );
                }
            }
        }
        if let Some(d) = &self.modbus.profiles_dir {
            if !d.is_dir() {
                err(
                    "modbus.profiles_dir",
                    format!("{} is not a directory", d.display()),
                );
            }
        }
        let al = &self.alerts;
        if let Some(f) = &al.rules_file {
            match std::fs::read_to_string(f) {
                Err(e) => err("alerts.rules_file", format!("{}: {e}", f.display())),
                Ok(text) => {
                    if let Err(e) = crate::alerts::rules::parse(&f.display().to_string(), &text) {
                        err("alerts.rules_file", e.to_string());
                    }
                }
            }
        }
        if let Some(f) = &self.report.font {
            if !f.is_file() {
                err("report.font", format!("{} is not a file", f.display()));
            }
        }
    }
}

/// MQTT 3.1.1 §4.7: `#` only as the last level, `+` only as a whole level.
fn check_topic_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("{f:?}: '#' must be the whole last level"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("{f:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_toml_equals_the_code_defaults() {
        let cfg = Config::load_layers(None, &[], false).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn demo_layer_is_valid() {
        Config::load_layers(None, &[DEMO_TOML], false).unwrap();
    }

    #[test]
    fn three_mistakes_are_all_reported_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(
            &f,
            "[http]\nlisten = \"nowhere\"\n[mqtt]\nport = 0\n[store]\nbatch_size = 0\n",
        )
        .unwrap();
        let e = Config::load_layers(Some(&f), &[], false).unwrap_err();
        let paths: Vec<String> = e.field_errors().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, vec!["http.listen", "mqtt.port", "store.batch_size"]);
    }

    #[test]
    fn integrity_declarations_are_checked_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("integrity.toml");
        std::fs::write(
            &f,
            "[standards.integrity]\nhistory = \"1day\"\n[standards.integrity.thresholds]\nhug_share = -1.0\n\
             [standards.integrity.units.dt-1]\ncalibration = [\"9 to 10\"]\nthresholds = { constant_minutes = 0 }\n",
        )
        .unwrap();
        let e = Config::load_layers(Some(&f), &[], false).unwrap_err();
        let paths: Vec<String> = e.field_errors().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            vec![
                "standards.integrity.history",
                "standards.integrity.thresholds.hug_share",
                "standards.integrity.units.dt-1.calibration[0]",
                "standards.integrity.units.dt-1.thresholds.constant_minutes",
            ]
        );
        std::fs::write(
            &f,
            "[standards.integrity.units.sy-1]\ncalibration = [\"10:00-10:30\"]\nthresholds = { o2_k = 5.0 }\n",
        )
        .unwrap();
        let cfg = Config::load_layers(Some(&f), &[], false).unwrap();
        let u = &cfg.standards.integrity.units["sy-1"];
        assert_eq!(
            u.thresholds(&cfg.standards.integrity.thresholds)
                .unwrap()
                .o2_k,
            5.0
        );
    }

    #[test]
    fn unknown_field_is_an_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("typo.toml");
        std::fs::write(&f, "[store]\nbatch_sise = 10\n").unwrap();
        let e = Config::load_layers(Some(&f), &[], false).unwrap_err();
        let errs = e.field_errors();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("batch_sise"), "{errs:?}");
        assert!(errs[0].path.starts_with("store"), "{errs:?}");
    }

    #[test]
    fn influx_store_needs_a_url_and_one_token_source() {
        let mut cfg = Config::default();
        cfg.store.kind = StoreKind::Influxdb;
        cfg.store.influxdb.url = "ftp://x".into();
        cfg.store.influxdb.token = Some(Secret::new("t"));
        cfg.store.influxdb.token_file = Some("/nonexistent/token".into());
        let errs = cfg.validate().unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "store.influxdb.url",
                "store.influxdb.token_file",
                "store.influxdb.token_file"
            ]
        );
    }

    #[test]
    fn the_briefing_schedule_and_its_robots_are_checked() {
        let mut cfg = Config::default();
        assert_eq!(cfg.report.daily_at_minutes(), Some(Ok(8 * 60)));
        cfg.report.daily_at = "off".into();
        assert_eq!(cfg.report.daily_at_minutes(), None);
        assert!(cfg.validate().is_ok());
        cfg.report.daily_at = "8:00".into();
        cfg.report.receivers = Some(vec!["nobody".into()]);
        let errs = cfg.validate().unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["report.daily_at", "report.receivers[0]"]);
        assert!(
            errs[1].message.contains("robots: none"),
            "{}",
            errs[1].message
        );
        cfg.report.daily_at = "24:00".into();
        assert!(cfg.report.daily_at_minutes().unwrap().is_err());
    }

    #[test]
    fn closed_choices_are_typed_and_a_misspelt_one_is_an_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("choices.toml");
        let sha = "0".repeat(64);
        std::fs::write(
            &f,
            format!(
                "[log]\nformat = \"JSON\"\n[standards]\naqi_edition = \"HJ663-2026\"\n\
                 [api]\ntokens = [{{name = \"a\", role = \"operator\", sha256 = \"{sha}\"}}, \
                 {{name = \"b\", role = \"superuser\", sha256 = \"{sha}\"}}]\n"
            ),
        )
        .unwrap();
        let e = Config::load_layers(Some(&f), &[], false).unwrap_err();
        let paths: Vec<String> = e.field_errors().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            vec!["api.tokens[1].role", "log.format", "standards.aqi_edition"]
        );
        std::fs::write(
            &f,
            format!(
                "[log]\nformat = \"json\"\n[standards]\naqi_edition = \"2012\"\n\
                 [api]\ntokens = [{{name = \"a\", role = \"operator\", sha256 = \"{sha}\"}}]\n"
            ),
        )
        .unwrap();
        let cfg = Config::load_layers(Some(&f), &[], false).unwrap();
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.standards.aqi_edition, Edition::Hj633_2012);
        assert_eq!(cfg.api.tokens[0].role, Role::Operator);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut cfg = Config::default();
        cfg.mqtt.password = Some(Secret::new("hunter2"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn topic_filters_follow_mqtt_rules() {
        assert!(check_topic_filter("enviromon/#").is_ok());
        assert!(check_topic_filter("a/+/b").is_ok());
        assert!(check_topic_filter("a/#/b").is_err());
        assert!(check_topic_filter("a/b+").is_err());
        assert!(check_topic_filter("").is_err());
    }

    #[test]
    fn every_mistake_of_a_file_is_reported_at_once_with_its_path() {
        // Eight mistakes, of every kind serde and the semantic checks find.
        let file = r#"
[http]
listen = "nowhere"
[mqtt]
port = "eighteen"
hots = "x"
[store]
kind = "influxdb"
[store.influxdb]
url = "http://127.0.0.1:8086"
[alerts]
[[alerts.webhook]]
url = "http://a"
[[alerts.webhook]]
name = "b"
url = "http://b"
colour = "red"
[hj212]
max_connections = -1
[bogus]
x = 1
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let e = Config::load_layers(Some(&path), &[], false).unwrap_err();
        let got: Vec<(String, String)> = e
            .field_errors()
            .into_iter()
            .map(|f| (f.path, f.message))
            .collect();
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "mqtt.port",
            "mqtt.hots",
            "alerts.webhook[0].name",
            "alerts.webhook[1].colour",
            "hj212.max_connections",
            "bogus",
            "http.listen",
            "store.influxdb.token",
        ] {
            assert_eq!(
                paths.iter().filter(|p| **p == want).count(),
                1,
                "{want} once in {got:?}"
            );
        }
        assert_eq!(got.len(), 8, "{got:?}");
        let msg = |p: &str| {
            got.iter()
                .find(|(x, _)| x == p)
                .map(|(_, m)| m.clone())
                .unwrap()
        };
        assert_eq!(msg("alerts.webhook[0].name"), "required, but missing");
        assert!(
            msg("mqtt.hots").starts_with("unknown field \"hots\"; expected"),
            "{}",
            msg("mqtt.hots")
        );
    }
}
