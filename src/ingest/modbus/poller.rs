//! Polling: one task per connection (a TCP endpoint, a gateway, a serial port), its devices polled
//! in turn on independent schedules.
//!
//! Failure handling — each point is a complaint users make of common tools:
//! - a dead device never delays the others beyond its own timeout, and is polled with capped
//!   exponential backoff so it stops eating bus time; it resumes at its normal interval when it
//!   answers again;
//! - a timeout drops the connection and reconnects before the next request: a late answer to the
//!   timed-out request can then never be taken for the answer to the next one (transaction-id
//!   desync on TCP, stray bytes on RTU);
//! - a Modbus exception (illegal address, busy, …) fails only that request: the device's other
//!   requests are still read and their values delivered;
//! - reconnection keeps trying forever with exponential backoff capped by `modbus.reconnect_max`
//!   and by the shortest poll interval, so a gateway that returns is polled again at once;
//! - a device going down or up is logged once per transition, not per poll.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;
use serde::Serialize;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

use super::decode;
use super::plan::{self, Request, Slot};
use super::profile::{Profile, RegisterKind};
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::pipeline::payload::{CustomPaths, Paths, RawItem};
use crate::pipeline::validate::{self, Context as VContext};
use crate::pipeline::{Envelope, Rejection};
use crate::reading::{DataFlag, Source};
use crate::registry::{ModbusDevice, ModbusTransport, SensorStatus, SerialSettings};

/// Where a connection goes: devices sharing one are polled in turn over it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Tcp(String),
    RtuOverTcp(String),
    Serial(SerialSettings),
}

impl Endpoint {
    pub fn of(d: &ModbusDevice) -> Option<Endpoint> {
        match d.transport {
            ModbusTransport::Tcp => d.address.clone().map(Endpoint::Tcp),
            ModbusTransport::RtuOverTcp => d.address.clone().map(Endpoint::RtuOverTcp),
            ModbusTransport::Rtu => d.serial.clone().map(Endpoint::Serial),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp(a) => format!("tcp://{a}"),
            Endpoint::RtuOverTcp(a) => format!("rtu+tcp://{a}"),
            Endpoint::Serial(s) => format!("rtu://{}", s.port),
        }
    }
}

/// One device to poll.
#[derive(Debug, Clone)]
pub struct Device {
    pub sensor: String,
    pub config: ModbusDevice,
    pub profile: Profile,
    pub requests: Vec<Request>,
}

impl Device {
    pub fn new(sensor: String, config: ModbusDevice, profile: Profile) -> Device {
        let requests = plan::plan(&profile, config.max_gap, config.single_reads);
        Device {
            sensor,
            config,
            profile,
            requests,
        }
    }
}

/// What the API shows of a device.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DeviceState {
    pub sensor: String,
    pub endpoint: String,
    pub unit_id: u8,
    pub profile: String,
    pub up: bool,
    pub polls: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    /// Per request `kind@start+count`: the last exception, if its last read failed with one.
    pub request_errors: BTreeMap<String, String>,
    /// Why the device is not polled at all (its profile does not exist or reads a quantity the
    /// sensor has no channel for, its unit id is taken): it shows as down with this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_polled: Option<String>,
    /// What to check about the last error (the exception code named), while the device is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Shared device states.
pub type States = Arc<RwLock<BTreeMap<String, DeviceState>>>;

/// Why one request failed.
#[derive(Debug)]
enum ReadError {
    /// The device answered with a Modbus exception: only this request failed.
    Exception(String),
    /// No answer in time: reconnect before the next request.
    Timeout,
    /// The connection broke or the answer made no sense: reconnect.
    Transport(String),
}

async fn connect(ep: &Endpoint, unit: u8, timeout: Duration) -> Result<Context, String> {
    let slave = Slave(unit);
    let fut = async {
        match ep {
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok(tokio_modbus::client::tcp::attach_slave(stream, slave))
            }
            Endpoint::RtuOverTcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok(tokio_modbus::client::rtu::attach_slave(stream, slave))
            }
            Endpoint::Serial(s) => {
                let parity = match s.parity {
                    crate::registry::Parity::Even => tokio_serial::Parity::Even,
                    crate::registry::Parity::Odd => tokio_serial::Parity::Odd,
                    crate::registry::Parity::None => tokio_serial::Parity::None,
                };
                let data_bits = match s.data_bits {
                    5 => tokio_serial::DataBits::Five,
                    6 => tokio_serial::DataBits::Six,
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                };
                let stop_bits = if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                };
                let builder = tokio_serial::new(&s.port, s.baud)
                    .parity(parity)
                    .data_bits(data_bits)
                    .stop_bits(stop_bits);
                let port = tokio_serial::SerialStream::open(&builder).map_err(|e| e.to_string())?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, slave))
            }
        }
    };
    tokio::time::timeout(timeout.max(Duration::from_secs(1)), fut)
        .await
        .map_err(|_| "connect timed out".to_string())?
}

async fn read(ctx: &mut Context, r: &Request, timeout: Duration) -> Result<Vec<u16>, ReadError> {
    let fut = async {
        match r.kind {
            RegisterKind::Holding => ctx.read_holding_registers(r.start, r.count).await,
            RegisterKind::Input => ctx.read_input_registers(r.start, r.count).await,
            RegisterKind::Coil => ctx.read_coils(r.start, r.count).await.map(|x| x.map(bits)),
            RegisterKind::DiscreteInput => ctx
                .read_discrete_inputs(r.start, r.count)
                .await
                .map(|x| x.map(bits)),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(Err(e)) => Err(ReadError::Transport(e.to_string())),
        Ok(Ok(Err(exc))) => Err(ReadError::Exception(format!("{exc:?}"))),
        Ok(Ok(Ok(words))) if words.len() < r.count as usize => Err(ReadError::Transport(format!(
            "short answer: {} of {} values",
            words.len(),
            r.count
        ))),
        Ok(Ok(Ok(words))) => Ok(words),
    }
}

fn bits(b: Vec<bool>) -> Vec<u16> {
    b.into_iter().map(u16::from).collect()
}

fn request_key(r: &Request) -> String {
    format!("{:?}@{}+{}", r.kind, r.start, r.count).to_lowercase()
}

/// What one poll of a device read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PollResult {
    /// (profile value index, scaled value).
    pub values: Vec<(usize, f64)>,
    /// The flag the status register set (N without one).
    pub flag: DataFlag,
    /// Request → exception, for requests the device refused.
    pub exceptions: BTreeMap<String, String>,
}

/// Read every request of the device once. An exception on a request of several values is retried
/// value by value, so only the value the device refuses is lost; a timeout or a broken connection
/// fails the poll (`Err`) so the caller reconnects.
pub async fn poll_device(
    ctx: &mut Context,
    d: &Device,
    metrics: Option<&Metrics>,
) -> Result<PollResult, String> {
    let count = |kind: &str| {
        if let Some(m) = metrics {
            m.modbus_errors.with_label_values(&[&d.sensor, kind]).inc();
        }
    };
    let mut out = PollResult::default();
    let mut queue: Vec<Request> = d.requests.clone();
    queue.reverse();
    while let Some(r) = queue.pop() {
        match read(ctx, &r, d.config.timeout).await {
            Ok(words) => {
                for (slot, addr) in &r.slots {
                    let off = (addr - r.start) as usize;
                    match slot {
                        Slot::Value(i) => {
                            let v = &d.profile.values[*i];
                            let n = if v.register.is_bit() {
                                1
                            } else {
                                v.data_type.words() as usize
                            };
                            match words
                                .get(off..off + n)
                                .and_then(|w| decode::decode(w, v.data_type, v.order))
                            {
                                Some(raw) => out.values.push((*i, raw * v.scale + v.offset)),
                                None => count("decode"),
                            }
                        }
                        Slot::Status => {
                            if let Some(s) = &d.profile.status {
                                let n = if s.register.is_bit() {
                                    1
                                } else {
                                    s.data_type.words() as usize
                                };
                                if let Some(code) = words
                                    .get(off..off + n)
                                    .and_then(|w| decode::decode(w, s.data_type, s.order))
                                {
                                    out.flag = s
                                        .flags
                                        .get(&format!("{}", code as i64))
                                        .copied()
                                        .unwrap_or(DataFlag::N);
                                }
                            }
                        }
                    }
                }
            }
            Err(ReadError::Exception(e)) => {
                count("exception");
                tracing::debug!(sensor = %d.sensor, request = %request_key(&r), exception = %e, "Modbus exception");
                if r.slots.len() > 1 {
                    // Split: each value on its own, so one refused address does not lose the rest.
                    for (slot, addr) in r.slots.iter().rev() {
                        let width = match slot {
                            Slot::Value(i) => {
                                let v = &d.profile.values[*i];
                                if v.register.is_bit() {
                                    1
                                } else {
                                    v.data_type.words()
                                }
                            }
                            Slot::Status => d
                                .profile
                                .status
                                .as_ref()
                                .map(|s| {
                                    if s.register.is_bit() {
                                        1
                                    } else {
                                        s.data_type.words()
                                    }
                                })
                                .unwrap_or(1),
                        };
                        queue.push(Request {
                            kind: r.kind,
                            start: *addr,
                            count: width,
                            slots: vec![(*slot, *addr)],
                        });
                    }
                } else {
                    out.exceptions.insert(request_key(&r), e);
                }
            }
            Err(ReadError::Timeout) => {
                return Err(format!(
                    "{}: timed out after {:?}",
                    request_key(&r),
                    d.config.timeout
                ))
            }
            Err(ReadError::Transport(m)) => {
                return Err(format!("{}: transport: {m}", request_key(&r)))
            }
        }
    }
    Ok(out)
}

/// The values of one poll as items for validation (stamped `at_ms`), each with its profile index;
/// a refusal names the value's profile entry and register.
pub fn poll_items(
    d: &Device,
    values: &[(usize, f64)],
    status: DataFlag,
    at_ms: i64,
) -> Vec<(usize, RawItem)> {
    let ts = serde_json::Value::from(at_ms);
    values
        .iter()
        .map(|&(i, value)| {
            let v = &d.profile.values[i];
            let item = RawItem {
                quantity: serde_json::Value::from(v.quantity.clone()),
                value: serde_json::Value::from(value),
                unit: v.unit.clone().map(serde_json::Value::from),
                ts: Some(ts.clone()),
                flag: Some(serde_json::Value::from(status.as_str())),
                period: None,
                paths: Paths::custom(CustomPaths {
                    quantity: format!("values[{i}].quantity"),
                    value: format!("values[{i}] @ {:?} {}", v.register, v.address).to_lowercase(),
                    unit: format!("values[{i}].unit"),
                    ts: "poll time".into(),
                    flag: "status register".into(),
                    period: String::new(),
                }),
            };
            (i, item)
        })
        .collect()
}

/// Connect, read a device once, disconnect: the live test a technician runs on a new device.
pub async fn read_device(d: &Device) -> Result<PollResult, String> {
    let ep = Endpoint::of(&d.config)
        .ok_or_else(|| "no address or serial port configured".to_string())?;
    let mut ctx = connect(&ep, d.config.unit_id, d.config.timeout).await?;
    poll_device(&mut ctx, d, None).await
}

/// One connection's task.
pub struct Poller {
    pub endpoint: Endpoint,
    pub devices: Vec<Device>,
    /// Registry, channel, dead letters, metrics, skew limit, stop.
    pub ctx: crate::ingest::SourceContext,
    pub states: States,
    pub reconnect_max: Duration,
    pub device_backoff_max: Duration,
}

struct Schedule {
    due: Instant,
    failures: u32,
}

impl Poller {
    pub async fn run(self) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let now = Instant::now();
        // Jitter the first poll over the interval so hundreds of devices do not align.
        let mut sched: Vec<Schedule> = self
            .devices
            .iter()
            .map(|d| Schedule {
                due: now + d.config.interval.mul_f64(rng.random::<f64>()),
                failures: 0,
            })
            .collect();
        {
            let mut st = crate::sync::write(&self.states);
            for d in &self.devices {
                st.insert(
                    d.sensor.clone(),
                    DeviceState {
                        sensor: d.sensor.clone(),
                        endpoint: self.endpoint.describe(),
                        unit_id: d.config.unit_id,
                        profile: d.profile.id.clone(),
                        ..Default::default()
                    },
                );
                self.ctx
                    .metrics
                    .modbus_up
                    .with_label_values(&[&d.sensor])
                    .set(0);
                for kind in ["connect", "timeout", "transport", "exception", "decode"] {
                    self.ctx
                        .metrics
                        .modbus_errors
                        .with_label_values(&[&d.sensor, kind]);
                }
            }
        }
        let mut ctx: Option<Context> = None;
        let min_interval = self
            .devices
            .iter()
            .map(|d| d.config.interval)
            .min()
            .unwrap_or(self.reconnect_max)
            .max(Duration::from_millis(200));
        // Capped by the shortest poll interval: a gateway that comes back is polled at once, so
        // the gap in the data is the outage, not the backoff.
        let mut connect_backoff = Backoff::new(
            Duration::from_millis(200),
            self.reconnect_max.min(min_interval),
        );
        let mut connect_retry_at = now;
        let mut connection_down_logged = false;
        loop {
            let Some((i, due)) = sched
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.due))
                .min_by_key(|(_, d)| *d)
            else {
                return;
            };
            let wake = due.max(connect_retry_at);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.ctx.stop.cancelled() => break,
            }
            let device = &self.devices[i];
            if ctx.is_none() {
                match connect(&self.endpoint, device.config.unit_id, device.config.timeout).await {
                    Ok(c) => {
                        ctx = Some(c);
                        connect_backoff.reset();
                        if connection_down_logged {
                            tracing::info!(endpoint = %self.endpoint.describe(), "Modbus connection re-established");
                            connection_down_logged = false;
                        }
                    }
                    Err(e) => {
                        for d in &self.devices {
                            self.ctx
                                .metrics
                                .modbus_errors
                                .with_label_values(&[&d.sensor, "connect"])
                                .inc();
                        }
                        if !connection_down_logged {
                            tracing::warn!(endpoint = %self.endpoint.describe(), error = %e, "Modbus connection failed; retrying with backoff");
                            connection_down_logged = true;
                        }
                        // Every device on this connection is down until it is back.
                        for (j, d) in self.devices.iter().enumerate() {
                            self.record_failure(d, &mut sched[j], &format!("connect: {e}"), false);
                        }
                        connect_retry_at = Instant::now() + connect_backoff.next_delay();
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let slip = started.saturating_duration_since(due);
            self.ctx
                .metrics
                .modbus_schedule_slip
                .observe(slip.as_secs_f64());
            let wall = chrono::Utc::now();
            let mut attempt = 0;
            let outcome = loop {
                let Some(c) = ctx.as_mut() else {
                    break Err("not connected".to_string());
                };
                c.set_slave(Slave(device.config.unit_id));
                match poll_device(c, device, Some(&self.ctx.metrics)).await {
                    Ok(r) => {
                        let mut st = crate::sync::write(&self.states);
                        if let Some(x) = st.get_mut(&device.sensor) {
                            x.request_errors = r.exceptions.clone();
                        }
                        break Ok((r.values, r.flag));
                    }
                    Err(e) => {
                        // Counted per attempt: a timeout that a retry makes good is still a
                        // timeout the device had.
                        let kind = if e.contains("timed out") {
                            "timeout"
                        } else {
                            "transport"
                        };
                        self.ctx
                            .metrics
                            .modbus_errors
                            .with_label_values(&[&device.sensor, kind])
                            .inc();
                        // Timeout or broken connection: drop it so no late answer desynchronises the
                        // next request; reconnect and retry.
                        ctx = None;
                        attempt += 1;
                        if attempt > device.config.retries {
                            break Err(e);
                        }
                        match connect(&self.endpoint, device.config.unit_id, device.config.timeout)
                            .await
                        {
                            Ok(c) => ctx = Some(c),
                            Err(ce) => break Err(format!("{e}; reconnect: {ce}")),
                        }
                    }
                }
            };
            self.ctx
                .metrics
                .modbus_poll_seconds
                .with_label_values(&[&device.sensor])
                .observe(started.elapsed().as_secs_f64());
            let interval = device.config.interval;
            match outcome {
                Ok((values, status_flag)) => {
                    let ok = !values.is_empty();
                    self.deliver(device, values, status_flag, wall).await;
                    if ok {
                        self.record_success(device, &mut sched[i]);
                        // Keep cadence: the next poll is one interval after this one was due.
                        sched[i].due = if slip > interval {
                            Instant::now() + interval
                        } else {
                            due + interval
                        };
                    } else {
                        let s = &mut sched[i];
                        self.record_failure(device, s, "every request failed", true);
                    }
                }
                Err(e) => {
                    // Its attempts were counted as they failed.
                    self.record_failure(device, &mut sched[i], &e, true);
                }
            }
            if sched[i].failures > 0 {
                // A failing device backs off (capped) so it does not take the others' bus time.
                let factor = 2u32.saturating_pow(sched[i].failures.saturating_sub(1).min(16));
                let wait = interval
                    .saturating_mul(factor)
                    .min(self.device_backoff_max.max(interval));
                sched[i].due = Instant::now() + wait;
            }
        }
        tracing::debug!(endpoint = %self.endpoint.describe(), "Modbus poller stopped");
    }

    /// Validate and send the values of one poll (stamped with the poll's start).
    async fn deliver(
        &self,
        d: &Device,
        values: Vec<(usize, f64)>,
        status: DataFlag,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let reg = self.ctx.registry.snapshot();
        let Some(sensor) = reg.sensors.get(&d.sensor) else {
            return;
        };
        if sensor.status == SensorStatus::Retired {
            return;
        }
        let ctx = VContext {
            now: chrono::Utc::now(),
            max_future_skew: chrono::Duration::from_std(self.ctx.max_future_skew)
                .unwrap_or(chrono::Duration::minutes(5)),
            source: Source::Modbus,
        };
        let mut readings = Vec::new();
        let mut rejections: Vec<Rejection> = Vec::new();
        for (_, item) in poll_items(d, &values, status, at.timestamp_millis()) {
            match validate::validate_item(sensor, &item, &ctx) {
                Ok(r) => readings.push(r),
                Err(r) => rejections.push(r),
            }
        }
        if !rejections.is_empty() {
            let raw = serde_json::json!({"sensor": d.sensor, "profile": d.profile.id}).to_string();
            // A poll cannot be asked again: a failed record is counted and logged by `reject`.
            let _ = self
                .ctx
                .deadletter
                .reject_async(
                    Source::Modbus,
                    d.sensor.clone(),
                    raw.into_bytes(),
                    rejections,
                )
                .await;
        }
        if readings.is_empty() {
            return;
        }
        self.ctx
            .metrics
            .readings_received
            .with_label_values(&["modbus"])
            .inc_by(readings.len() as u64);
        // A full pipeline makes this wait: the next poll waits with it (backpressure).
        if self
            .ctx
            .tx
            .send(Envelope {
                readings,
                ack: None,
            })
            .await
            .is_err()
        {
            tracing::debug!("pipeline closed; Modbus values of this poll dropped at shutdown");
        }
    }

    fn record_success(&self, d: &Device, s: &mut Schedule) {
        let was_down = s.failures > 0
            || self
                .ctx
                .metrics
                .modbus_up
                .with_label_values(&[&d.sensor])
                .get()
                == 0;
        s.failures = 0;
        self.ctx
            .metrics
            .modbus_up
            .with_label_values(&[&d.sensor])
            .set(1);
        let now = chrono::Utc::now();
        self.ctx
            .metrics
            .modbus_last_success
            .with_label_values(&[&d.sensor])
            .set(now.timestamp_millis() as f64 / 1000.0);
        let mut st = crate::sync::write(&self.states);
        if let Some(x) = st.get_mut(&d.sensor) {
            if was_down && x.polls > 0 {
                tracing::info!(sensor = %d.sensor, endpoint = %self.endpoint.describe(), "Modbus device up");
            }
            x.up = true;
            x.polls += 1;
            x.consecutive_failures = 0;
            x.last_success = Some(now.to_rfc3339());
            x.hint = None;
        }
    }

    fn record_failure(&self, d: &Device, s: &mut Schedule, error: &str, counted_poll: bool) {
        s.failures = s.failures.saturating_add(1);
        self.ctx
            .metrics
            .modbus_up
            .with_label_values(&[&d.sensor])
            .set(0);
        let mut st = crate::sync::write(&self.states);
        if let Some(x) = st.get_mut(&d.sensor) {
            if x.up {
                tracing::warn!(sensor = %d.sensor, endpoint = %self.endpoint.describe(), error, "Modbus device down");
            }
            x.up = false;
            if counted_poll {
                x.polls += 1;
            }
            x.failures += 1;
            x.consecutive_failures = s.failures;
            x.last_error = Some(error.to_string());
            x.hint = super::explain::explain(error).map(|e| e.summary());
        }
    }
}

use rand::SeedableRng;
