//! The HJ 212 TCP server: data acquisition units (数采仪) connect as clients and stay connected.
//!
//! Per connection: a stream decoder (frames split across or packed within reads, garbage between
//! frames), the logger looked up by MN *before* anything else is done with a frame, SM4-sealed
//! frames opened with that logger's key (HJ 212-2025), the password and tolerances checked,
//! split-packet reassembly (bounded per connection, freed on close), and replies in the frame's own
//! edition: when a packet's Flag asks for one, the 9014 "data received" reply is sent once its
//! readings are in the durable spool (the envelope's acknowledgement sends it), and never when its
//! refusals could not be written to the dead-letter file. A bad frame is dead-lettered with its
//! reason and the connection continues.
//!
//! Re-sent data (`RF=1`) is stored like live data but holds one of a few shared resend slots until
//! the spool has it, so a logger emptying its backlog can never fill the pipeline ahead of other
//! loggers' live frames. CN 3020 site information and ST 45 conditions are recorded with history;
//! a changed CN 3020 value is audited and raised as an alert. CN 1014 (sealed with the current
//! key) rotates the logger's key. Heartbeats (CN 9015) are answered with 9013 when they ask.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::codec::{self, Decoded, Edition, Frame, Reassembler, StreamDecoder, Tolerance};
use super::keys::Keystore;
use super::site_info::{self, InfoKind, SiteInfo};
use crate::metrics::Metrics;
use crate::pipeline::validate::Context;
use crate::pipeline::{Acknowledge, Envelope, RejectReason, Rejection};
use crate::reading::Source;
use crate::registration::Registration;
use crate::registry::SensorStatus;

/// Re-sent envelopes that may wait for the spool at once, across all connections.
pub const RESEND_SLOTS: usize = 4;
/// Incomplete split packets one connection may hold, and their bytes.
const MAX_SPLIT_GROUPS: usize = 16;
const MAX_SPLIT_BYTES: usize = 1 << 20;

/// Sends a reply frame on its connection (fired after the spool append); releases a resend slot.
#[derive(Debug)]
struct ReplyAck {
    tx: mpsc::UnboundedSender<String>,
    frame: Option<String>,
    resent: u64,
    metrics: Option<Metrics>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Acknowledge for ReplyAck {
    fn ack(self: Box<Self>) {
        if let Some(m) = &self.metrics {
            m.hj212_resent_readings.inc_by(self.resent);
        }
        if let Some(f) = self.frame {
            let _ = self.tx.send(f);
        }
    }
}

pub struct Server {
    pub listener: TcpListener,
    /// Registry, channel, dead letters, metrics, skew limit, stop.
    pub ctx: crate::ingest::SourceContext,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// The loggers' SM4 keys.
    pub keys: Arc<Keystore>,
    /// Every logger on this listener must encrypt (a listener reachable from the Internet:
    /// HJ 212-2025 §6.4.1 says "shall").
    pub require_encryption: bool,
    /// Where CN 3020 site information and ST 45 conditions are kept.
    pub site_info: Option<Arc<SiteInfo>>,
    /// The audit log (key rotations, changed site parameters).
    pub registration: Option<Arc<Registration>>,
}

/// Per-server state shared by its connections.
struct Shared {
    server: Server,
    resend: Arc<Semaphore>,
}

impl Server {
    pub async fn run(self) {
        // One permit per connection, released when its task ends, however it ends.
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let shared = Arc::new(Shared {
            server: self,
            resend: Arc::new(Semaphore::new(RESEND_SLOTS)),
        });
        loop {
            let accepted = tokio::select! {
                a = shared.server.listener.accept() => a,
                _ = shared.server.ctx.stop.cancelled() => break,
            };
            let (socket, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HJ 212 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                shared
                    .server
                    .ctx
                    .metrics
                    .hj212_frames
                    .with_label_values(&["connection_refused"])
                    .inc();
                tracing::warn!(%peer, max = shared.server.max_connections, "HJ 212 connection refused: too many connections");
                drop(socket);
                continue;
            };
            let slot = Slot::new(permit, shared.server.ctx.metrics.hj212_connections.clone());
            let s = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                s.connection(socket, peer).await;
            });
        }
    }
}

/// A connection's place: its permit and its count in `enviromon_hj212_connections`, both given
/// back on drop (also when the connection's task panics).
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, gauge: prometheus::IntGauge) -> Slot {
        gauge.inc();
        Slot {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Shared {
    async fn connection(&self, mut socket: TcpStream, peer: SocketAddr) {
        let srv = &self.server;
        let _ = socket.set_nodelay(true);
        tracing::debug!(%peer, "HJ 212 unit connected");
        // Parse permissively; each source's own tolerance is checked once its MN is known.
        let mut decoder = StreamDecoder::new(Tolerance {
            modbus_crc_swapped: true,
            long_frames: true,
            missing_qn: true,
        });
        let mut reassembler = Reassembler::bounded(MAX_SPLIT_GROUPS, MAX_SPLIT_BYTES);
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<String>();
        let mut buf = vec![0u8; 8192];
        let topic = format!("hj212://{peer}");
        loop {
            tokio::select! {
                _ = srv.ctx.stop.cancelled() => break,
                Some(frame) = reply_rx.recv() => {
                    if socket.write_all(frame.as_bytes()).await.is_err() {
                        break;
                    }
                }
                r = tokio::time::timeout(srv.idle_timeout, socket.read(&mut buf)) => {
                    let n = match r {
                        Err(_) => {
                            tracing::info!(%peer, "HJ 212 connection idle too long; closed");
                            break;
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => n,
                    };
                    for d in decoder.push(&buf[..n]) {
                        let frame = match d {
                            Decoded::Frame(p) => Frame::Plain(p),
                            Decoded::Sealed(s) => Frame::Sealed(s),
                            Decoded::Bad(e, raw) => {
                                srv.ctx.metrics.hj212_frames.with_label_values(&["bad"]).inc();
                                let rej = Rejection::new(RejectReason::InvalidPayload, format!("HJ 212 frame refused: {e}"));
                                self.dead_letter(&topic, &raw, &[rej]).await;
                                continue;
                            }
                            Decoded::Garbage(raw) => {
                                srv.ctx.metrics.hj212_frames.with_label_values(&["garbage"]).inc();
                                tracing::debug!(%peer, bytes = raw.len(), "bytes outside any HJ 212 frame skipped");
                                continue;
                            }
                        };
                        if self.frame(frame, &topic, &reply_tx, &mut reassembler).await.is_err() {
                            return;
                        }
                    }
                    if decoder.pending() > codec::MAX_SEALED_WIRE {
                        tracing::warn!(%peer, "HJ 212 connection sent an oversized frame; closed");
                        break;
                    }
                }
            }
        }
        tracing::debug!(%peer, "HJ 212 unit disconnected");
    }

    /// Write refusals to the dead-letter file. `false` when that failed: the caller must then not
    /// acknowledge (the logger keeps the data and sends it again).
    async fn dead_letter(&self, topic: &str, raw: &[u8], rejections: &[Rejection]) -> bool {
        if rejections.is_empty() {
            return true;
        }
        // On the blocking pool: one connection's fsync never holds up another's replies.
        match self
            .server
            .ctx
            .deadletter
            .reject_async(
                Source::Hj212,
                topic.to_string(),
                raw.to_vec(),
                rejections.to_vec(),
            )
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, %topic, "HJ 212: cannot write the dead-letter record; not acknowledging");
                false
            }
        }
    }

    /// One frame: its logger first, then its key, its checks, reassembly, and the packet.
    /// `Err` only when the pipeline is closed.
    async fn frame(
        &self,
        frame: Frame,
        topic: &str,
        reply_tx: &mpsc::UnboundedSender<String>,
        reassembler: &mut Reassembler,
    ) -> Result<(), ()> {
        let srv = &self.server;
        let raw: Vec<u8> = match &frame {
            Frame::Plain(p) => p.encode().into_bytes(),
            Frame::Sealed(s) => s.raw.clone(),
        };
        let mn = match &frame {
            Frame::Plain(p) => p.mn().to_string(),
            Frame::Sealed(s) => s.mn().to_string(),
        };
        srv.ctx
            .taps
            .offer(|| crate::ingest::tap::Taps::hj212(&mn), &raw);
        let reg = srv.ctx.registry.snapshot();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let checked = match reg.sensor_for_mn(&mn) {
            Some(s) if s.status == SensorStatus::Retired => Err(Rejection::new(
                RejectReason::RetiredSensor,
                format!("MN {mn} belongs to retired sensor {}", s.id),
            )),
            Some(s) => super::open_frame(s, frame, &srv.keys, srv.require_encryption, now_ms)
                .and_then(|p| super::check_source(s, &p).map(|()| (s, p))),
            None => Err(Rejection::new(
                RejectReason::UnknownTopic,
                format!("no sensor is registered for MN {mn:?}"),
            )),
        };
        let (sensor, p) = match checked {
            Ok(x) => x,
            Err(r) => {
                srv.ctx
                    .metrics
                    .hj212_frames
                    .with_label_values(&["refused"])
                    .inc();
                self.dead_letter(topic, &raw, &[r]).await;
                return Ok(());
            }
        };
        srv.ctx
            .metrics
            .hj212_frames
            .with_label_values(&["ok"])
            .inc();
        let edition = p.edition();
        srv.ctx
            .metrics
            .hj212_frames_by_edition
            .with_label_values(&[edition.as_str(), if p.encrypted { "true" } else { "false" }])
            .inc();
        if edition == Edition::Hj212_2025 && p.data_segment().len() > codec::MAX_DATA {
            // HJ 212-2025 requires splitting above 1024 characters: the logger's error, counted
            // (it was decoded only because the source's tolerance allows long frames).
            srv.ctx
                .metrics
                .hj212_frames
                .with_label_values(&["oversize_2025"])
                .inc();
        }
        let dropped = reassembler.dropped();
        let whole = reassembler.push(p);
        if reassembler.dropped() > dropped {
            // Over the bounds (or a part numbered out of range): counted, never held forever.
            srv.ctx
                .metrics
                .hj212_frames
                .with_label_values(&["split_dropped"])
                .inc_by(reassembler.dropped() - dropped);
        }
        let Some(whole) = whole else {
            return Ok(());
        };
        let sensor = sensor.clone();
        drop(reg);
        self.packet(&sensor, whole, topic, &raw, reply_tx).await
    }

    /// Map, validate and send one whole packet. `Err` only when the pipeline is closed.
    async fn packet(
        &self,
        sensor: &crate::registry::Sensor,
        p: codec::Packet,
        topic: &str,
        raw: &[u8],
        reply_tx: &mpsc::UnboundedSender<String>,
    ) -> Result<(), ()> {
        let srv = &self.server;
        let ts_ms = p
            .data_time()
            .and_then(super::parse_data_time)
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        match p.cn() {
            "9015" => {
                // Heartbeat: nothing to store; answered (9013, notification answer) when asked.
                srv.ctx
                    .metrics
                    .hj212_frames
                    .with_label_values(&["heartbeat"])
                    .inc();
                if p.ack_wanted() {
                    let _ = reply_tx.send(codec::reply(&p, "9013", ""));
                }
                return Ok(());
            }
            "1014" => {
                self.key_update(sensor, &p, topic, raw, reply_tx).await;
                return Ok(());
            }
            "3020" => {
                let items = site_info::info_items(&p);
                let ok = self
                    .record_info(sensor, InfoKind::SiteParameter, items, ts_ms)
                    .await;
                if ok && p.ack_wanted() {
                    let _ = reply_tx.send(codec::reply(&p, "9014", ""));
                }
                return Ok(());
            }
            _ => {}
        }
        if super::period_of(p.cn()).is_none() {
            if codec::cn_is_encrypted(p.cn()) {
                // Data enviromon does not decode (e.g. CN 2013 VOC spectra): acknowledged only once
                // it is kept in the dead-letter file, so nothing a logger deletes is lost.
                let kept = Rejection::new(
                    RejectReason::InvalidPayload,
                    format!(
                        "CN {} data is not decoded by enviromon (kept here, not stored)",
                        p.cn()
                    ),
                );
                if !self.dead_letter(topic, raw, &[kept]).await {
                    return Ok(());
                }
            }
            // Not monitoring data (parameter answers and the like): acknowledged, nothing stored.
            if p.ack_wanted() {
                let _ = reply_tx.send(codec::reply(&p, "9014", ""));
            }
            return Ok(());
        }
        let ctx = Context {
            now: chrono::Utc::now(),
            max_future_skew: chrono::Duration::from_std(srv.ctx.max_future_skew)
                .unwrap_or(chrono::Duration::minutes(5)),
            source: Source::Hj212,
        };
        let d = if matches!(p.st(), "44" | "45") {
            let (d, states) = super::facility_values(sensor, &p, &ctx);
            if !states.is_empty()
                && !self
                    .record_info(sensor, InfoKind::Condition, states, ts_ms)
                    .await
            {
                return Ok(());
            }
            d
        } else {
            super::readings(sensor, &p, &ctx)
        };
        if !self.dead_letter(topic, raw, &d.rejections).await {
            return Ok(());
        }
        let n = d.readings.len() as u64;
        if n > 0 {
            srv.ctx
                .metrics
                .readings_received
                .with_label_values(&["hj212"])
                .inc_by(n);
        }
        let resend = p.resend();
        if n == 0 && !p.ack_wanted() {
            return Ok(());
        }
        let slot = if resend {
            // Wait for a resend slot: other loggers' live frames never queue behind a backlog.
            match self.resend.clone().acquire_owned().await {
                Ok(s) => Some(s),
                Err(_) => return Err(()),
            }
        } else {
            None
        };
        let ack = Box::new(ReplyAck {
            tx: reply_tx.clone(),
            frame: p.ack_wanted().then(|| codec::reply(&p, "9014", "")),
            resent: if resend { n } else { 0 },
            metrics: resend.then(|| srv.ctx.metrics.clone()),
            _slot: slot,
        }) as Box<dyn Acknowledge>;
        srv.ctx
            .tx
            .send(Envelope {
                readings: d.readings,
                ack: Some(ack),
            })
            .await
            .map_err(|_| ())
    }

    /// Record site information or conditions; audit and count changed CN 3020 values. `false` when
    /// it could not be recorded (then nothing is acknowledged).
    async fn record_info(
        &self,
        sensor: &crate::registry::Sensor,
        kind: InfoKind,
        items: Vec<site_info::InfoItem>,
        ts_ms: i64,
    ) -> bool {
        let Some(si) = self.server.site_info.clone() else {
            return true;
        };
        let mn = sensor
            .hj212
            .as_ref()
            .map(|h| h.mn.clone())
            .unwrap_or_default();
        let id = sensor.id.clone();
        let reg = self.server.registration.clone();
        let metrics = self.server.ctx.metrics.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let changed = si
                .record(&mn, &id, kind, &items, ts_ms)
                .map_err(|e| e.to_string())?;
            for c in &changed {
                metrics.hj212_site_parameter_changes.inc();
                tracing::warn!(sensor = %id, mn = %mn, pollutant = %c.pol, parameter = %c.code, before = ?c.before, after = %c.value, "HJ 212 CN 3020: a site parameter changed");
                if let Some(r) = &reg {
                    let v = |x: Option<&str>| serde_json::json!({"mn": mn, "pollutant": c.pol, "parameter": c.code, "value": x});
                    r.record(
                        &format!("logger {mn}"),
                        "hj212_site_parameter",
                        &id,
                        Some(&v(c.before.as_deref())),
                        &v(Some(&c.value)),
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })
        .await;
        match done {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(sensor = %sensor.id, error = %e, "HJ 212: cannot record site information; not acknowledging");
                false
            }
            Err(e) => {
                tracing::error!(sensor = %sensor.id, error = %e, "HJ 212: site information task failed");
                false
            }
        }
    }

    /// CN 1014 from a logger: its new SM4 key, accepted only inside a frame sealed with its current
    /// key. The old key keeps opening frames for the overlap window. Answered with 9013 when asked.
    async fn key_update(
        &self,
        sensor: &crate::registry::Sensor,
        p: &codec::Packet,
        topic: &str,
        raw: &[u8],
        reply_tx: &mpsc::UnboundedSender<String>,
    ) {
        let refuse = |why: String| Rejection::new(RejectReason::Encryption, why);
        if !p.encrypted {
            self.dead_letter(
                topic,
                raw,
                &[refuse(format!(
                    "SM4: CN 1014 key update from MN {} was not encrypted with its current key; refused",
                    p.mn()
                ))],
            ).await;
            return;
        }
        let new_key =
            p.cp.iter()
                .flatten()
                .find(|(k, _)| matches!(k.as_str(), "NewKey" | "SecretKey" | "Key"))
                .map(|(_, v)| super::crypto::Key::from_hex(v));
        let key = match new_key {
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                self.dead_letter(
                    topic,
                    raw,
                    &[refuse(format!("SM4: CN 1014 from MN {}: {e}", p.mn()))],
                )
                .await;
                return;
            }
            None => {
                self.dead_letter(
                    topic,
                    raw,
                    &[refuse(format!(
                        "SM4: CN 1014 from MN {} carries no NewKey",
                        p.mn()
                    ))],
                )
                .await;
                return;
            }
        };
        let (id, reg, keys) = (
            sensor.id.clone(),
            self.server.registration.clone(),
            self.server.keys.clone(),
        );
        let mn = p.mn().to_string();
        let actor = format!("logger {mn} (CN 1014)");
        let set = tokio::task::spawn_blocking(move || -> Result<(), String> {
            match reg {
                Some(r) => r
                    .set_hj212_key(&actor, &id, Some(&key))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => keys
                    .set(
                        &mn,
                        Some(&key),
                        &actor,
                        chrono::Utc::now().timestamp_millis(),
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        })
        .await;
        match set {
            Ok(Ok(())) => {
                tracing::info!(sensor = %sensor.id, mn = %p.mn(), "HJ 212 CN 1014: the logger's SM4 key was rotated");
                if p.ack_wanted() {
                    let _ = reply_tx.send(codec::reply(p, "9013", ""));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(sensor = %sensor.id, error = %e, "HJ 212 CN 1014: cannot store the new key; not acknowledging")
            }
            Err(e) => {
                tracing::error!(sensor = %sensor.id, error = %e, "HJ 212 CN 1014: key task failed")
            }
        }
    }
}
