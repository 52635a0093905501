//! Simulated instruments for the demo: the four coal units' CEMS, the air stations and the
//! wastewater plant, publishing over real MQTT like field data loggers.
//!
//! Magnitudes are general engineering figures (demo data only, never compliance logic):
//! load follows the time of day; stack O2 rises at low load; corrected SO2 10–30, NOx 25–45,
//! particulate 1–5 mg/m3, with occasional excursions above the ultra-low limits; one unit (双源 #2)
//! stops for a while in every cycle and reports flag F.

use std::f64::consts::PI;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Timelike, Utc};
use rand::Rng;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::reading::Domain;
use crate::registry::{Protocol, Registry};

/// The unit that stops for a while in every cycle.
pub const STOPPING_UNIT: &str = "dt-2";
/// Seconds running, then seconds stopped, in the stopping unit's cycle.
const RUN_SECS: u64 = 150;
const STOP_SECS: u64 = 45;

fn gauss(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Load fraction by hour of day in China Standard Time: low at night, peak in the day.
fn load_fraction(hour_cst: f64) -> f64 {
    (0.75 + 0.2 * (2.0 * PI * (hour_cst - 9.0) / 24.0).sin()).clamp(0.4, 1.0)
}

/// State of one simulated CEMS.
struct Cems {
    capacity_mw: f64,
    excursion_left: u32,
    excursion_pollutant: &'static str,
    stops: bool,
    /// Slow process variation of SO2, NOx and PM (coal quality, FGD and SCR control), on top of
    /// the analysers' noise: a real stack's minute means wander, they are not white noise.
    drift: [f64; 3],
}

impl Cems {
    fn clone_state(&self) -> Cems {
        Cems {
            capacity_mw: self.capacity_mw,
            excursion_left: 0,
            excursion_pollutant: "SO2",
            drift: [0.0; 3],
            stops: self.stops,
        }
    }

    fn values(
        &mut self,
        rng: &mut impl Rng,
        tick: u64,
        hour_cst: f64,
    ) -> (Map<String, Value>, &'static str) {
        let mut v = Map::new();
        let stopped = self.stops && tick % (RUN_SECS + STOP_SECS) >= RUN_SECS;
        if stopped {
            v.insert(
                "SO2".into(),
                json!(round2((0.3 + 0.2 * gauss(rng)).max(0.0))),
            );
            v.insert(
                "NOx".into(),
                json!(round2((0.5 + 0.2 * gauss(rng)).max(0.0))),
            );
            v.insert(
                "PM".into(),
                json!(round2((0.1 + 0.05 * gauss(rng)).max(0.0))),
            );
            v.insert("O2".into(), json!(round2(20.6 + 0.1 * gauss(rng))));
            v.insert("flue_temp".into(), json!(round2(28.0 + gauss(rng))));
            v.insert("moisture".into(), json!(round2(2.0 + 0.3 * gauss(rng))));
            v.insert("flue_flow".into(), json!(0.0));
            return (v, "F");
        }
        let load = (load_fraction(hour_cst) + 0.02 * gauss(rng)).clamp(0.35, 1.0);
        let o2 = (6.0 + (1.0 - load) * 10.0 + 0.2 * gauss(rng)).clamp(3.0, 15.0);
        if self.excursion_left == 0 && rng.random::<f64>() < 1.0 / 240.0 {
            self.excursion_left = rng.random_range(30..90);
            self.excursion_pollutant = if rng.random::<bool>() { "SO2" } else { "NOx" };
        }
        for d in &mut self.drift {
            *d = 0.998 * *d + 0.1 * gauss(rng);
        }
        let (mut so2, mut nox) = (
            18.0 + 4.0 * gauss(rng) + self.drift[0],
            35.0 + 4.0 * gauss(rng) + 1.5 * self.drift[1],
        );
        if self.excursion_left > 0 {
            self.excursion_left -= 1;
            match self.excursion_pollutant {
                "SO2" => so2 = 48.0 + 5.0 * gauss(rng),
                _ => nox = 62.0 + 5.0 * gauss(rng),
            }
        }
        let pm = (2.5 + 0.8 * gauss(rng) + 0.2 * self.drift[2]).max(0.3);
        // Corrected → measured: C_measured = C_ref × (21 − O2)/(21 − 6) (HJ 75-2017, inverted).
        let k = (21.0 - o2) / 15.0;
        v.insert("SO2".into(), json!(round2((so2 * k).max(0.0))));
        v.insert("NOx".into(), json!(round2((nox * k).max(0.0))));
        v.insert("PM".into(), json!(round2((pm * k).max(0.0))));
        v.insert("O2".into(), json!(round2(o2)));
        v.insert("flue_temp".into(), json!(round2(50.0 + 1.5 * gauss(rng))));
        v.insert("moisture".into(), json!(round2(12.0 + 0.8 * gauss(rng))));
        v.insert(
            "flue_flow".into(),
            json!((self.capacity_mw * 3700.0 * load).round()),
        );
        (v, "N")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The surveyed stack area of `unit`, when `sensor` has a velocity channel to simulate with it
/// (flow = velocity × area).
fn velocity_area(
    sensor: &crate::registry::Sensor,
    unit: &crate::registry::EmissionUnit,
) -> Option<f64> {
    sensor
        .channels
        .iter()
        .any(|c| c.quantity == "flue_velocity")
        .then_some(unit.integrity.stack_area_m2)
        .flatten()
}

/// The flue velocity a flow meter on a stack of `area_m2` would read for the values' dry standard
/// flow, flue temperature and moisture (`v = Q / (A × 3600 × 273.15/(273.15 + t) × (1 − x_sw))`).
fn add_velocity(v: &mut Map<String, Value>, area_m2: Option<f64>) {
    let get = |k: &str| v.get(k).and_then(Value::as_f64);
    let (Some(area), Some(flow), Some(t)) = (area_m2, get("flue_flow"), get("flue_temp")) else {
        return;
    };
    let k = 273.15 / (273.15 + t) * (1.0 - get("moisture").unwrap_or(0.0) / 100.0);
    v.insert(
        "flue_velocity".into(),
        json!(round2(flow / (area * 3600.0 * k))),
    );
}

fn air_values(rng: &mut impl Rng, hour_cst: f64, station: usize) -> Map<String, Value> {
    let o3_diurnal = 70.0 + 60.0 * (2.0 * PI * (hour_cst - 9.0) / 24.0).sin().max(0.0);
    let bias = station as f64 * 3.0;
    let mut v = Map::new();
    v.insert(
        "PM2.5".into(),
        json!((52.0 + bias + 8.0 * gauss(rng)).max(1.0).round()),
    );
    v.insert(
        "PM10".into(),
        json!((90.0 + bias + 12.0 * gauss(rng)).max(2.0).round()),
    );
    v.insert(
        "SO2".into(),
        json!((10.0 + 2.0 * gauss(rng)).max(1.0).round()),
    );
    v.insert(
        "NO2".into(),
        json!((35.0 + 6.0 * gauss(rng)).max(1.0).round()),
    );
    v.insert(
        "CO".into(),
        json!(round2((0.8 + 0.15 * gauss(rng)).max(0.1))),
    );
    v.insert(
        "O3".into(),
        json!((o3_diurnal + 10.0 * gauss(rng)).max(1.0).round()),
    );
    v
}

pub(crate) fn water_values(rng: &mut impl Rng, sensor: &str, tick: u64) -> Map<String, Value> {
    let mut v = Map::new();
    let mut put = |k: &str, mean: f64, sd: f64, min: f64| {
        v.insert(k.into(), json!(round2((mean + sd * gauss(rng)).max(min))));
    };
    match sensor {
        "wwtp-inlet-quality" => {
            put("COD", 300.0, 30.0, 50.0);
            put("NH3-N", 28.0, 3.0, 5.0);
            put("TP", 4.5, 0.5, 0.5);
            put("TN", 38.0, 3.0, 5.0);
            put("pH", 7.3, 0.1, 6.0);
            put("water_temp", 16.0, 0.3, 5.0);
        }
        "wwtp-outlet-quality" => {
            put("COD", 22.0, 3.0, 5.0);
            put("NH3-N", 0.8, 0.3, 0.05);
            put("TP", 0.25, 0.05, 0.02);
            put("TN", 10.0, 1.0, 2.0);
            put("pH", 7.1, 0.1, 6.0);
            put("SS", 6.0, 1.0, 1.0);
            put("water_temp", 16.5, 0.3, 5.0);
        }
        "wwtp-inlet-flow" | "wwtp-outlet-flow" => {
            // ≈ 150,000 m3/d; the outlet slightly less (sludge water).
            let base = if sensor.ends_with("inlet-flow") {
                6250.0
            } else {
                6150.0
            };
            put("water_flow", base, 150.0, 0.0);
            v.insert(
                "flow_total".into(),
                json!(round2(1.0e6 + base * tick as f64 / 3600.0)),
            );
        }
        _ => {
            put("COD", 16.0, 2.0, 2.0);
            put("CODMn", 4.5, 0.5, 0.5);
            put("NH3-N", 0.6, 0.15, 0.02);
            put("TP", 0.12, 0.03, 0.01);
            put("DO", 7.0, 0.5, 1.0);
            put("pH", 7.6, 0.1, 6.0);
            put("water_temp", 14.0, 0.3, 2.0);
        }
    }
    v
}

/// Days of hourly history the demo publishes at start (air, water), so daily AQI, the good-days
/// rate and the treatment rate have something to show.
pub const BACKFILL_DAYS: i64 = 30;
/// Hours of minute history per CEMS at start, so hourly compliance has complete hours.
pub const BACKFILL_CEMS_HOURS: i64 = 6;

/// Publish history like a data logger catching up after an outage: hourly means (`"period":"1h"`)
/// for air and water over the last `BACKFILL_DAYS`, and CEMS minute means (`"period":"1min"`) over
/// the last `BACKFILL_CEMS_HOURS`, including one excursion hour and one stopped hour.
pub async fn backfill(client: &AsyncClient, registry: &Registry, now_ms: i64) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let hour_ms = 3_600_000i64;
    let this_hour = now_ms - now_ms.rem_euclid(hour_ms);
    // A day-level pollution factor: some days are episodes (PM2.5 daily means above 75).
    let day_factor: Vec<f64> = (0..=BACKFILL_DAYS)
        .map(|_| {
            if rng.random::<f64>() < 0.3 {
                1.8
            } else {
                0.8 + 0.3 * rng.random::<f64>()
            }
        })
        .collect();
    let mut i = 0usize;
    // Every non-CEMS sensor with a topic: MQTT sensors, and Modbus devices whose data logger
    // uploads history over MQTT (the plant's flow meters: the treatment rate needs their month).
    for s in registry
        .sensors
        .values()
        .filter(|s| s.topic.is_some() && s.domain != Domain::Cems)
    {
        let Some(topic) = s.topic.clone() else {
            continue;
        };
        for h in (1..=BACKFILL_DAYS * 24).rev() {
            let start = this_hour - h * hour_ms;
            let cst_hour = ((start / hour_ms + 8).rem_euclid(24)) as f64;
            let values = match s.domain {
                Domain::Air => {
                    let mut v = air_values(&mut rng, cst_hour, i % 2);
                    let f = day_factor[(h / 24) as usize];
                    for k in ["PM2.5", "PM10"] {
                        if let Some(x) = v.get(k).and_then(Value::as_f64) {
                            v.insert(k.into(), json!((x * f).round()));
                        }
                    }
                    v
                }
                _ => water_values(&mut rng, &s.id, (BACKFILL_DAYS * 24 - h) as u64 * 3600),
            };
            let ts = chrono::DateTime::<Utc>::from_timestamp_millis(start)
                .unwrap_or_default()
                .to_rfc3339();
            let payload = json!({"ts": ts, "period": "1h", "values": values});
            let _ = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_string())
                .await;
        }
        i += 1;
    }
    for s in registry
        .sensors
        .values()
        .filter(|s| s.protocol == Protocol::Mqtt && s.domain == Domain::Cems && s.hj212.is_none())
    {
        let (Some(topic), Some(unit)) = (
            s.topic.clone(),
            s.unit.as_ref().and_then(|u| registry.units.get(u)),
        ) else {
            continue;
        };
        let area = velocity_area(s, unit);
        let mut sim = Cems {
            capacity_mw: unit.capacity_mw,
            excursion_left: 0,
            excursion_pollutant: "SO2",
            drift: [0.0; 3],
            stops: false,
        };
        for m in (1..=BACKFILL_CEMS_HOURS * 60).rev() {
            let start = this_hour - m * 60_000;
            let cst_hour = (((start / 60_000) as f64 / 60.0) + 8.0).rem_euclid(24.0);
            let hours_ago = (m - 1) / 60 + 1;
            let (mut values, mut flag) = sim.values(&mut rng, 0, cst_hour);
            // The last complete hour: an FGD upset on 大唐 #1 (SO2 above 35 after correction), so
            // the demo starts with an exceedance alert firing; it resolves when the next hour,
            // within limits, completes.
            if unit.id == "dt-1" && hours_ago == 1 {
                let o2 = values.get("O2").and_then(Value::as_f64).unwrap_or(6.0);
                values.insert("SO2".into(), json!(round2(46.0 * (21.0 - o2) / 15.0)));
            }
            // Two hours ago: 双源 #2 stopped for the whole hour.
            if unit.id == STOPPING_UNIT && hours_ago == 2 {
                let (v, f) = Cems {
                    stops: true,
                    ..sim.clone_state()
                }
                .values(&mut rng, RUN_SECS, cst_hour);
                values = v;
                flag = f;
            }
            add_velocity(&mut values, area);
            let ts = chrono::DateTime::<Utc>::from_timestamp_millis(start)
                .unwrap_or_default()
                .to_rfc3339();
            let payload = json!({"ts": ts, "period": "1min", "flag": flag, "values": values});
            let _ = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_string())
                .await;
        }
    }
}

/// HJ 212 codes of the CEMS quantities the simulators produce (flue flow is m3/s on the wire).
const HJ212_CODES: [(&str, &str); 7] = [
    ("SO2", "a21026"),
    ("NOx", "a21002"),
    ("PM", "a34013"),
    ("O2", "a19001"),
    ("flue_temp", "a01012"),
    ("moisture", "a01014"),
    ("flue_flow", "a00000"),
];

fn hj212_cp(values: &Map<String, Value>, suffix: &str, flag: &str) -> String {
    let mut items = Vec::new();
    for (q, code) in HJ212_CODES {
        if let Some(v) = values.get(q).and_then(Value::as_f64) {
            let v = if q == "flue_flow" { v / 3600.0 } else { v };
            items.push(format!("{code}-{suffix}={},{code}-Flag={flag}", round2(v)));
        }
    }
    items.join(";")
}

fn cst(ms: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp_millis(ms + 8 * 3_600_000)
        .unwrap_or_default()
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Simulated data acquisition units (数采仪), one for every CEMS sensor with an HJ 212 identity.
/// A logger whose MN has a key in `keys` speaks HJ 212-2025 with its CP SM4-encrypted (Flag 9);
/// the others speak HJ 212-2017 (Flag 5). Each connects to the daemon's HJ 212 server, sends the
/// last six hours as hourly packets (2061), then real-time data (2011) every 30 s, minute data
/// (2051) every minute and hourly data (2061) every hour, asking for replies; it reconnects if the
/// connection drops.
///
/// The 2025 logger also shows what re-sent data is: the hour that ended three hours ago is "lost"
/// at first (an FGD upset, SO2 above the limit); about a minute in, its link goes down for 20 s,
/// and when it comes back it re-sends (RF=1) the minutes it buffered and that lost hour, which the
/// daemon then judges late and alerts on.
pub async fn run_hj212(
    addr: std::net::SocketAddr,
    registry: Arc<Registry>,
    keys: std::collections::BTreeMap<String, crate::ingest::hj212::crypto::Key>,
    stop: CancellationToken,
) {
    let loggers: Vec<_> = registry
        .sensors
        .values()
        .filter(|s| s.domain == Domain::Cems && s.hj212.is_some())
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    for s in loggers {
        let key = s.hj212.as_ref().and_then(|h| keys.get(&h.mn)).cloned();
        tasks.push(tokio::spawn(logger(
            addr,
            registry.clone(),
            s,
            key,
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn logger(
    addr: std::net::SocketAddr,
    registry: Arc<Registry>,
    sensor: crate::registry::Sensor,
    key: Option<crate::ingest::hj212::crypto::Key>,
    stop: CancellationToken,
) {
    use crate::ingest::hj212::codec::{parse_cp, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (Some(h), Some(unit)) = (
        sensor.hj212.clone(),
        sensor
            .unit
            .as_ref()
            .and_then(|u| registry.units.get(u))
            .cloned(),
    ) else {
        return;
    };
    let pw = h.password.clone().unwrap_or_default();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut sim = Cems {
        capacity_mw: unit.capacity_mw,
        excursion_left: 0,
        excursion_pollutant: "SO2",
        drift: [0.0; 3],
        stops: false,
    };
    let flag = if key.is_some() { "9" } else { "5" };
    // One frame: plaintext (2017) or sealed (2025); `resend` adds RF=1.
    let packet = |cn: &str, ts_ms: i64, cp: &str, resend: bool| -> String {
        let qn = format!("{}000", cst(chrono::Utc::now().timestamp_millis()));
        let mut header: Vec<(String, String)> = [
            ("QN", qn),
            ("ST", "31".into()),
            ("CN", cn.into()),
            ("PW", pw.clone()),
            ("MN", h.mn.clone()),
            ("Flag", flag.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if resend {
            header.push(("RF".into(), "1".into()));
        }
        let body = format!("DataTime={};{cp}", cst(ts_ms));
        let p = Packet::new(header, parse_cp(&body).unwrap_or_default());
        match &key {
            Some(k) => p.encode_sealed(k).unwrap_or_else(|_| p.encode()),
            None => p.encode(),
        }
    };
    let hour = 3_600_000i64;
    let started = chrono::Utc::now().timestamp_millis();
    let lost_hour = started - started.rem_euclid(hour) - 3 * hour;
    let mut first = true;
    let mut outage_done = key.is_none();
    let mut buffered: Vec<String> = Vec::new();
    loop {
        let mut sock = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::net::TcpStream::connect(addr) => match c {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let now = chrono::Utc::now().timestamp_millis();
        let this_hour = now - now.rem_euclid(hour);
        let mut out = String::new();
        if first {
            first = false;
            // The site parameters (CN 3020): the stack cross-section as surveyed, then, an hour
            // later, re-declared 40 % smaller (what understated emissions look like; the
            // integrity rule `parameter_change` and the `site_parameters_changed` alert see it).
            if let Some(area) = unit.integrity.stack_area_m2 {
                let smaller = round2(area * 0.6);
                for (back, a) in [(2, area), (1, smaller)] {
                    out.push_str(&packet(
                        "3020",
                        this_hour - back * hour,
                        &format!("PolId=a00000;i13004-Info={a}"),
                        false,
                    ));
                }
            }
            for back in (1..=6).rev() {
                let start = this_hour - back * hour;
                if start == lost_hour && key.is_some() {
                    continue;
                }
                let cst_hour = ((start / hour + 8).rem_euclid(24)) as f64;
                let (v, f) = sim.values(&mut rng, 0, cst_hour);
                out.push_str(&packet("2061", start, &hj212_cp(&v, "Avg", f), false));
            }
        } else if !buffered.is_empty() {
            // Back after the outage: what was buffered, then the hour lost before, re-sent.
            for f in buffered.drain(..) {
                out.push_str(&f);
            }
            let cst_hour = ((lost_hour / hour + 8).rem_euclid(24)) as f64;
            let (mut v, f) = sim.values(&mut rng, 0, cst_hour);
            let o2 = v.get("O2").and_then(Value::as_f64).unwrap_or(6.0);
            v.insert("SO2".into(), json!(round2(42.0 * (21.0 - o2) / 15.0)));
            out.push_str(&packet("2061", lost_hour, &hj212_cp(&v, "Avg", f), true));
        }
        if !out.is_empty() && sock.write_all(out.as_bytes()).await.is_err() {
            continue;
        }
        let mut last_minute = now - now.rem_euclid(60_000);
        let mut last_hour = this_hour;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        let mut buf = [0u8; 1024];
        let connected_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = sock.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tick.tick() => {
                    let now = chrono::Utc::now().timestamp_millis();
                    let cst_hour = (((now / 60_000) as f64 / 60.0) + 8.0).rem_euclid(24.0);
                    let (v, f) = sim.values(&mut rng, 0, cst_hour);
                    let mut out = packet("2011", now - now.rem_euclid(1000), &hj212_cp(&v, "Rtd", f), false);
                    let minute = now - now.rem_euclid(60_000);
                    if minute > last_minute {
                        out.push_str(&packet("2051", last_minute, &hj212_cp(&v, "Avg", f), false));
                        last_minute = minute;
                    }
                    let hr = now - now.rem_euclid(hour);
                    if hr > last_hour {
                        out.push_str(&packet("2061", last_hour, &hj212_cp(&v, "Avg", f), false));
                        last_hour = hr;
                    }
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                    if !outage_done && connected_at.elapsed() >= Duration::from_secs(60) {
                        break;
                    }
                }
            }
        }
        if !outage_done {
            // The link is down for 20 s; the logger keeps measuring and buffers its minutes.
            outage_done = true;
            drop(sock);
            tracing::info!(mn = %h.mn, "demo: simulated HJ 212 link outage (20 s); the logger buffers and re-sends");
            let down_from = chrono::Utc::now().timestamp_millis();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(20)) => {}
            }
            let m0 = down_from - down_from.rem_euclid(60_000);
            let now = chrono::Utc::now().timestamp_millis();
            let mut m = m0;
            while m < now - now.rem_euclid(60_000) {
                let cst_hour = (((m / 60_000) as f64 / 60.0) + 8.0).rem_euclid(24.0);
                let (v, f) = sim.values(&mut rng, 0, cst_hour);
                buffered.push(packet("2051", m, &hj212_cp(&v, "Avg", f), true));
                m += 60_000;
            }
            if buffered.is_empty() {
                // Still the minute it went down in: re-send at least that one.
                let cst_hour = (((m0 / 60_000) as f64 / 60.0) + 8.0).rem_euclid(24.0);
                let (v, f) = sim.values(&mut rng, 0, cst_hour);
                buffered.push(packet("2051", m0, &hj212_cp(&v, "Avg", f), true));
            }
            continue;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keep the simulated Modbus gateway's registers current for every Modbus sensor of the registry
/// whose profile is known (values from the same generators as the MQTT simulator), until `stop`.
pub async fn feed_modbus(
    sim: super::modbus_sim::Sim,
    registry: crate::registry::RegistryHandle,
    profiles: std::collections::BTreeMap<String, crate::ingest::modbus::profile::Profile>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut ticker = tokio::time::interval(interval);
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Re-read each tick: a device registered on the demo gateway gets values too.
        let reg = registry.snapshot();
        for s in reg
            .sensors
            .values()
            .filter(|s| s.protocol == Protocol::Modbus)
        {
            let (Some(m), Some(p)) = (
                &s.modbus,
                s.modbus.as_ref().and_then(|m| profiles.get(&m.profile)),
            ) else {
                continue;
            };
            let values = water_values(&mut rng, &s.id, tick);
            for v in &p.values {
                if let Some(x) = values.get(&v.quantity).and_then(Value::as_f64) {
                    sim.set(
                        m.unit_id,
                        v.register,
                        v.address,
                        (x - v.offset) / v.scale,
                        v.data_type,
                        v.order,
                    );
                }
            }
        }
        tick += 1;
    }
}

/// Publish simulated data for every MQTT sensor of the registry, every `interval`, until `stop`.
pub async fn run(
    broker_host: String,
    broker_port: u16,
    registry: Arc<Registry>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut opts = MqttOptions::new("enviromon-demo-simulator", broker_host, broker_port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let el_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = el_stop.cancelled() => break,
                ev = eventloop.poll() => if let Err(e) = ev {
                    tracing::debug!(error = %e, "simulator connection error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let mut cems: Vec<(String, String, Cems, Option<f64>)> = registry
        .sensors
        .values()
        .filter(|s| s.domain == Domain::Cems && s.protocol == Protocol::Mqtt && s.hj212.is_none())
        .filter_map(|s| {
            let unit = registry.units.get(s.unit.as_deref()?)?;
            let area = velocity_area(s, unit);
            Some((
                s.id.clone(),
                s.topic.clone()?,
                Cems {
                    capacity_mw: unit.capacity_mw,
                    excursion_left: 0,
                    excursion_pollutant: "SO2",
                    drift: [0.0; 3],
                    stops: unit.id == STOPPING_UNIT,
                },
                area,
            ))
        })
        .collect();
    let others: Vec<(String, String, Domain)> = registry
        .sensors
        .values()
        .filter(|s| s.domain != Domain::Cems && s.protocol == Protocol::Mqtt)
        .filter_map(|s| Some((s.id.clone(), s.topic.clone()?, s.domain)))
        .collect();
    backfill(&client, &registry, Utc::now().timestamp_millis()).await;
    let mut ticker = tokio::time::interval(interval);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Utc::now();
        let cst = now + chrono::Duration::hours(8);
        let hour_cst = cst.hour() as f64 + cst.minute() as f64 / 60.0;
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (_, topic, unit, area) in cems.iter_mut() {
            let (mut values, flag) = unit.values(&mut rng, tick, hour_cst);
            add_velocity(&mut values, *area);
            let payload = json!({"ts": ts, "flag": flag, "values": values});
            let _ = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_string())
                .await;
        }
        for (i, (id, topic, domain)) in others.iter().enumerate() {
            let values = match domain {
                Domain::Air => air_values(&mut rng, hour_cst, i),
                _ => water_values(&mut rng, id, tick),
            };
            let payload = json!({"ts": ts, "values": values});
            let _ = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_string())
                .await;
        }
        tick += 1;
    }
    let _ = client.disconnect().await;
}

use rand::SeedableRng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_running_unit_values_are_plausible_and_mostly_within_limits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut u = Cems {
            capacity_mw: 300.0,
            excursion_left: 0,
            excursion_pollutant: "SO2",
            drift: [0.0; 3],
            stops: false,
        };
        let mut within = 0;
        for tick in 0..1000 {
            let (v, flag) = u.values(&mut rng, tick, 12.0);
            assert_eq!(flag, "N");
            let o2 = v["O2"].as_f64().unwrap();
            assert!((3.0..=15.0).contains(&o2));
            let so2_corrected = v["SO2"].as_f64().unwrap() * 15.0 / (21.0 - o2);
            if so2_corrected < 35.0 {
                within += 1;
            }
        }
        assert!(within > 800, "{within}");
    }

    #[test]
    fn the_stopping_unit_reports_flag_f_while_stopped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut u = Cems {
            capacity_mw: 165.0,
            excursion_left: 0,
            excursion_pollutant: "SO2",
            drift: [0.0; 3],
            stops: true,
        };
        assert_eq!(u.values(&mut rng, 0, 12.0).1, "N");
        let (v, flag) = u.values(&mut rng, RUN_SECS, 12.0);
        assert_eq!(flag, "F");
        assert_eq!(v["flue_flow"], json!(0.0));
    }
}
