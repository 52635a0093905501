//! MQTT source: subscribe, map topic → sensor, decode and validate payloads, and acknowledge each
//! QoS 1 message only after its readings are durable in the spool (or its refusal is dead-lettered).
//!
//! Delivery (MQTT 3.1.1 §4.3–4.6):
//! - manual acks (`set_manual_acks(true)`): the broker forgets a message only after we have it;
//! - fixed client id and `clean_session = false`: the broker queues messages while we are away and
//!   resends unacknowledged ones when we reconnect;
//! - acks go out in arrival order (the spooler fires them append by append, in order), and acks that
//!   belong to an earlier connection are dropped (the broker resends those messages; the stores'
//!   idempotent writes absorb the duplicates);
//! - reconnects forever with capped exponential backoff; `enviromon_mqtt_connected` tells the state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::{ConfigError, MqttConfig, RetainedWithoutTs};
use crate::metrics::Metrics;
use crate::pipeline::validate::{self, Context};
use crate::pipeline::{Acknowledge, Envelope, RejectReason, Rejection};
use crate::reading::Source;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] ConfigError),
}

/// The largest packet MQTT allows (3.1.1 §2.2.3): we read whatever the broker sends and refuse
/// oversize payloads ourselves, so an oversize message is dead-lettered and acknowledged instead of
/// breaking the connection and being redelivered forever.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// Build the client options from the configuration (reads TLS and secret files).
pub fn options(cfg: &MqttConfig) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(cfg.clean_session)
        .set_manual_acks(true)
        .set_max_packet_size(MQTT_MAX_PACKET, 1024 * 1024);
    if let Some(user) = &cfg.username {
        let pass = cfg
            .resolved_password()?
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), pass);
    }
    if let Some(tls) = &cfg.tls {
        let read = |what: &'static str, p: &std::path::Path| {
            std::fs::read(p).map_err(|source| MqttError::ReadFile {
                what,
                path: p.display().to_string(),
                source,
            })
        };
        let ca = read("mqtt.tls.ca_file", &tls.ca_file)?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(c), Some(k)) => Some((
                read("mqtt.tls.client_cert_file", c)?,
                read("mqtt.tls.client_key_file", k)?,
            )),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Fires the PUBACK for one message through the acker task.
#[derive(Debug)]
struct MqttAck {
    tx: mpsc::UnboundedSender<(u64, Publish)>,
    epoch: u64,
    publish: Publish,
}

impl Acknowledge for MqttAck {
    fn ack(self: Box<Self>) {
        // If the acker is gone we are shutting down: the broker will redeliver.
        let _ = self.tx.send((self.epoch, self.publish));
    }
}

/// What the source needs from the daemon.
pub struct MqttSource {
    pub config: MqttConfig,
    /// Registry, channel, dead letters, metrics, skew limit, stop.
    pub ctx: crate::ingest::SourceContext,
    /// SM4 keys for HJ 212-2025 frames carried over MQTT.
    pub keys: Arc<crate::ingest::hj212::keys::Keystore>,
    /// Where `/readyz` reads why the broker cannot be reached.
    pub health: Arc<crate::api::Health>,
}

impl MqttSource {
    /// Run until `stop`, then keep the connection up until every pending ack is sent.
    pub async fn run(self, opts: MqttOptions) {
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        let epoch = Arc::new(AtomicU64::new(0));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(run_acker(
            client.clone(),
            ack_rx,
            epoch.clone(),
            self.ctx.metrics.clone(),
        ));
        let qos = match self.config.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut connected = false;
        let mut unreachable_since: Option<std::time::Instant> = None;
        let mut last_warned: Option<std::time::Instant> = None;
        let mut changes = self.ctx.registry.changes();
        // Topics of registered sensors that the configured filters do not cover, subscribed one by one.
        let mut extra: std::collections::BTreeSet<String> = self.extra_topics();
        loop {
            let event = tokio::select! {
                biased;
                _ = self.ctx.stop.cancelled() => break,
                // The source holds the registry handle, so its change channel never closes.
                _ = changes.changed() => {
                    let now = self.extra_topics();
                    for t in now.difference(&extra) {
                        tracing::info!(topic = %t, "subscribing to a newly registered sensor's topic");
                        if let Err(err) = client.try_subscribe(t.clone(), qos) {
                            tracing::error!(topic = %t, error = %err, "cannot queue MQTT subscribe");
                        }
                    }
                    extra = now;
                    continue;
                }
                ev = eventloop.poll() => ev,
            };
            if connected
                && matches!(event, Ok(Event::Incoming(_)))
                && self.ctx.metrics.mqtt_connected.get() == 0
            {
                // A pause outlived the keep-alive, yet the broker still answers: connected.
                self.ctx.metrics.mqtt_connected.set(1);
                crate::api::Health::set(&self.health.broker_error, None);
            }
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let e = epoch.fetch_add(1, Ordering::SeqCst) + 1;
                    connected = true;
                    backoff.reset();
                    self.ctx.metrics.mqtt_connected.set(1);
                    crate::api::Health::set(&self.health.broker_error, None);
                    last_warned = None;
                    if let Some(since) = unreachable_since.take() {
                        tracing::info!(
                            down_for_s = since.elapsed().as_secs(),
                            "MQTT broker reachable again"
                        );
                    }
                    tracing::info!(host = %self.config.host, port = self.config.port, session_present = ack.session_present, connection = e, "MQTT connected");
                    for filter in self.config.subscriptions.iter().chain(extra.iter()) {
                        if let Err(err) = client.try_subscribe(filter.clone(), qos) {
                            tracing::error!(filter, error = %err, "cannot queue MQTT subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != QoS::AtMostOnce).then(|| {
                        Box::new(MqttAck {
                            tx: ack_tx.clone(),
                            epoch: epoch.load(Ordering::SeqCst),
                            publish: Publish {
                                payload: bytes::Bytes::new(),
                                ..p.clone()
                            },
                        }) as Box<dyn Acknowledge>
                    });
                    let span = tracing::debug_span!("mqtt_message", topic = %p.topic, bytes = p.payload.len());
                    if self.handle_publish(&p, ack).instrument(span).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    self.ctx.metrics.mqtt_connection_errors.inc();
                    self.ctx.metrics.mqtt_connected.set(0);
                    crate::api::Health::set(
                        &self.health.broker_error,
                        Some(format!("{}:{}: {err}", self.config.host, self.config.port)),
                    );
                    if connected {
                        tracing::warn!(error = %err, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::debug!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "MQTT connect failed");
                    }
                    // WARN from the first failure, then every 30 s while it lasts.
                    let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                    if last_warned
                        .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(30))
                    {
                        last_warned = Some(std::time::Instant::now());
                        if !connected {
                            tracing::warn!(error = %err, host = %self.config.host, port = self.config.port, down_for_s = since.elapsed().as_secs(), retry_in_ms = backoff.peek().as_millis() as u64, "MQTT broker unreachable; retrying");
                        }
                    }
                    connected = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = self.ctx.stop.cancelled() => break,
                    }
                }
            }
        }
        // Shutdown: no more envelopes from us. Keep polling so the acks the spooler fires while it
        // drains reach the broker; messages that arrive now are left unacknowledged (redelivered).
        let MqttSource { ctx, .. } = self;
        let crate::ingest::SourceContext { tx, metrics, .. } = ctx;
        drop(tx);
        drop(ack_tx);
        let mut acker = acker;
        if connected {
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    ev = eventloop.poll() => if ev.is_err() { break },
                }
            }
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        } else {
            acker.abort();
        }
        metrics.mqtt_connected.set(0);
        tracing::info!("MQTT source stopped");
    }

    fn extra_topics(&self) -> std::collections::BTreeSet<String> {
        self.ctx
            .registry
            .snapshot()
            .sensors
            .values()
            .filter(|s| s.status != crate::registry::SensorStatus::Retired)
            .filter_map(|s| s.topic.clone())
            .filter(|t| {
                !self
                    .config
                    .subscriptions
                    .iter()
                    .any(|f| crate::registration::topic_matches(f, t))
            })
            .collect()
    }

    /// Decode one message and send its envelope; `Err` only when the pipeline is closed.
    async fn handle_publish(
        &self,
        p: &Publish,
        ack: Option<Box<dyn Acknowledge>>,
    ) -> Result<(), ()> {
        self.ctx
            .metrics
            .messages_received
            .with_label_values(&["mqtt"])
            .inc();
        self.ctx
            .taps
            .offer(|| crate::ingest::tap::Taps::mqtt(&p.topic), &p.payload);
        let now = chrono::Utc::now();
        let (readings, rejections) = if p.payload.len() > self.config.max_payload_bytes {
            (
                Vec::new(),
                vec![Rejection::new(
                    RejectReason::PayloadTooLarge,
                    format!(
                        "{} bytes is more than mqtt.max_payload_bytes = {}",
                        p.payload.len(),
                        self.config.max_payload_bytes
                    ),
                )],
            )
        } else {
            let reg = self.ctx.registry.snapshot();
            match validate::sensor_for_topic(&reg, &p.topic) {
                Err(r) => (Vec::new(), vec![r]),
                Ok(sensor) => {
                    let ctx = Context {
                        now,
                        max_future_skew: chrono::Duration::from_std(self.ctx.max_future_skew)
                            .unwrap_or(chrono::Duration::minutes(5)),
                        source: Source::Mqtt,
                    };
                    let d = match sensor.payload_format {
                        crate::registry::PayloadFormat::Json => {
                            validate::decode_payload(sensor, &p.payload, &ctx)
                        }
                        crate::registry::PayloadFormat::Hj212 => {
                            hj212_payload(sensor, &p.payload, &ctx, &self.keys)
                        }
                    };
                    (d.readings, d.rejections)
                }
            }
        };
        let mut readings = readings;
        if p.retain && self.config.retained_without_ts == RetainedWithoutTs::Ignore {
            let before = readings.len();
            readings.retain(|r| !r.ts_assumed);
            let dropped = (before - readings.len()) as u64;
            if dropped > 0 {
                self.ctx.metrics.mqtt_retained_untimed.inc_by(dropped);
                tracing::debug!(topic = %p.topic, count = dropped, "retained readings without a timestamp ignored (the broker resends them at every subscription)");
            }
        }
        let mut ack = ack;
        if !rejections.is_empty()
            && self
                .ctx
                .deadletter
                .reject_async(
                    Source::Mqtt,
                    p.topic.clone(),
                    p.payload.to_vec(),
                    rejections,
                )
                .await
                .is_err()
        {
            // Not recorded: leave the message unacknowledged so the broker keeps it.
            ack = None;
        }
        if !readings.is_empty() {
            self.ctx
                .metrics
                .readings_received
                .with_label_values(&["mqtt"])
                .inc_by(readings.len() as u64);
            let assumed = readings.iter().filter(|r| r.ts_assumed).count() as u64;
            if assumed > 0 {
                self.ctx.metrics.timestamps_assumed.inc_by(assumed);
                tracing::debug!(topic = %p.topic, count = assumed, "readings without timestamp took the receive time");
            }
        }
        if readings.is_empty() && ack.is_none() {
            return Ok(());
        }
        let send = self.ctx.tx.send(Envelope { readings, ack });
        tokio::pin!(send);
        // While this waits (the spool is full, or its disk is), the event loop is not polled and
        // no PINGREQ goes out: after 1.5 × keep-alive the broker closes the connection
        // (MQTT 3.1.1 §3.1.2.10). Say so then, instead of showing a connection that is gone; the
        // next poll reconnects, and the ConnAck sets the gauge back.
        let limit = self.config.keep_alive.mul_f64(1.5);
        let sent = tokio::select! {
            r = &mut send => r,
            _ = tokio::time::sleep(limit) => {
                self.ctx.metrics.mqtt_connected.set(0);
                crate::api::Health::set(
                    &self.health.broker_error,
                    Some(format!(
                        "ingest paused for more than 1.5 × keep-alive ({} s): the broker has closed the connection; reconnecting once the spool takes data",
                        limit.as_secs()
                    )),
                );
                tracing::warn!(paused_s = limit.as_secs(), "MQTT ingest paused longer than the broker's keep-alive allows; the broker will have closed the connection");
                send.await
            }
        };
        sent.map_err(|_| ())?;
        self.ctx
            .metrics
            .queue_depth
            .set((self.ctx.tx.max_capacity() - self.ctx.tx.capacity()) as i64);
        Ok(())
    }
}

/// HJ 212 frames carried in an MQTT payload, decoded by the same codec as the TCP server.
/// The readings and refusals of an MQTT message of HJ 212 frames (also a dry run's decoder).
pub fn hj212_payload(
    sensor: &crate::registry::Sensor,
    payload: &[u8],
    ctx: &Context,
    keys: &crate::ingest::hj212::keys::Keystore,
) -> validate::Decoded {
    use crate::ingest::hj212::{self, codec};
    let mut out = validate::Decoded::default();
    let tol = codec::Tolerance {
        modbus_crc_swapped: true,
        long_frames: true,
        missing_qn: true,
    };
    let mut decoder = codec::StreamDecoder::new(tol);
    let mut found = 0;
    let mut frames = decoder.push(payload);
    if decoder.pending() > 0 {
        let rest = payload[payload.len() - decoder.pending()..].to_vec();
        let err = codec::parse_frame(&rest, tol)
            .err()
            .unwrap_or(codec::FrameError::Truncated {
                needed: 0,
                have: rest.len(),
            });
        frames.push(codec::Decoded::Bad(err, rest));
    }
    for d in frames {
        let frame = match d {
            codec::Decoded::Frame(p) => codec::Frame::Plain(p),
            codec::Decoded::Sealed(s) => codec::Frame::Sealed(s),
            codec::Decoded::Bad(e, _) => {
                out.rejections.push(Rejection::new(
                    RejectReason::InvalidPayload,
                    format!("HJ 212 frame refused: {e}"),
                ));
                continue;
            }
            codec::Decoded::Garbage(_) => continue,
        };
        found += 1;
        let opened = hj212::open_frame(sensor, frame, keys, false, ctx.now.timestamp_millis())
            .and_then(|p| hj212::check_source(sensor, &p).map(|()| p));
        match opened {
            Err(r) => out.rejections.push(r),
            Ok(p) => {
                // Each part of a split packet carries whole CP items: decoded on its own.
                let d = if matches!(p.st(), "44" | "45") {
                    hj212::facility_values(sensor, &p, ctx).0
                } else {
                    hj212::readings(sensor, &p, ctx)
                };
                out.readings.extend(d.readings);
                out.rejections.extend(d.rejections);
            }
        }
    }
    if found == 0 && out.rejections.is_empty() {
        out.rejections.push(Rejection::new(
            RejectReason::InvalidPayload,
            "no HJ 212 frame in the payload",
        ));
    }
    out
}

/// Sends acks in the order the spooler fires them; drops those of an earlier connection.
async fn run_acker(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<(u64, Publish)>,
    epoch: Arc<AtomicU64>,
    metrics: Metrics,
) {
    while let Some((e, p)) = rx.recv().await {
        if e != epoch.load(Ordering::SeqCst) {
            metrics.mqtt_stale_acks.inc();
            continue;
        }
        if let Err(err) = client.ack(&p).await {
            tracing::debug!(error = %err, "cannot queue MQTT ack");
        }
    }
}
