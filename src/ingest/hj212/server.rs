//! The HJ 212 TCP server: data acquisition units (数采仪) connect as clients and stay connected.
//!
//! Per connection: a stream decoder (frames split across or packed within reads, garbage between
//! frames), split-packet reassembly, MN → sensor mapping and password check from the registry, and
//! replies: when a packet's Flag asks for one, the 9014 "data received" reply is sent once its
//! readings are in the durable spool (the envelope's acknowledgement sends it). A bad frame is
//! dead-lettered with its reason and the connection continues. Limits: idle timeout, maximum
//! connections, maximum frame size (1024 unless the source tolerates longer).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Decoded, Reassembler, StreamDecoder, Tolerance};
use crate::metrics::Metrics;
use crate::pipeline::deadletter::DeadLetter;
use crate::pipeline::validate::Context;
use crate::pipeline::{Acknowledge, Envelope, RejectReason, Rejection};
use crate::reading::Source;
use crate::registry::{RegistryHandle, SensorStatus};

/// Sends a reply frame on its connection (fired after the spool append).
#[derive(Debug)]
struct ReplyAck {
    tx: mpsc::UnboundedSender<String>,
    frame: String,
}

impl Acknowledge for ReplyAck {
    fn ack(self: Box<Self>) {
        let _ = self.tx.send(self.frame);
    }
}

pub struct Server {
    pub listener: TcpListener,
    pub registry: RegistryHandle,
    pub tx: mpsc::Sender<Envelope>,
    pub deadletter: Arc<DeadLetter>,
    pub metrics: Metrics,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_future_skew: Duration,
    pub stop: CancellationToken,
}

impl Server {
    pub async fn run(self) {
        let active = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                a = shared.listener.accept() => a,
                _ = shared.stop.cancelled() => break,
            };
            let (socket, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HJ 212 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= shared.max_connections {
                shared
                    .metrics
                    .hj212_frames
                    .with_label_values(&["connection_refused"])
                    .inc();
                tracing::warn!(%peer, max = shared.max_connections, "HJ 212 connection refused: too many connections");
                drop(socket);
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            shared.metrics.hj212_connections.inc();
            let (s, a) = (shared.clone(), active.clone());
            tokio::spawn(async move {
                s.connection(socket, peer).await;
                a.fetch_sub(1, Ordering::SeqCst);
                s.metrics.hj212_connections.dec();
            });
        }
    }

    async fn connection(&self, mut socket: TcpStream, peer: SocketAddr) {
        let _ = socket.set_nodelay(true);
        tracing::debug!(%peer, "HJ 212 unit connected");
        // Parse permissively; each source's own tolerance is checked once its MN is known.
        let mut decoder = StreamDecoder::new(Tolerance {
            modbus_crc_swapped: true,
            long_frames: true,
            missing_qn: true,
        });
        let mut reassembler = Reassembler::default();
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<String>();
        let mut buf = vec![0u8; 8192];
        let topic = format!("hj212://{peer}");
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(frame) = reply_rx.recv() => {
                    if socket.write_all(frame.as_bytes()).await.is_err() {
                        break;
                    }
                }
                r = tokio::time::timeout(self.idle_timeout, socket.read(&mut buf)) => {
                    let n = match r {
                        Err(_) => {
                            tracing::info!(%peer, "HJ 212 connection idle too long; closed");
                            break;
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => n,
                    };
                    for d in decoder.push(&buf[..n]) {
                        match d {
                            Decoded::Frame(p) => {
                                self.metrics.hj212_frames.with_label_values(&["ok"]).inc();
                                if let Some(whole) = reassembler.push(p) {
                                    if self.packet(whole, &topic, &reply_tx).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Decoded::Bad(e, raw) => {
                                self.metrics.hj212_frames.with_label_values(&["bad"]).inc();
                                let rej = Rejection::new(RejectReason::InvalidPayload, format!("HJ 212 frame refused: {e}"));
                                let _ = self.deadletter.reject(Source::Hj212, &topic, &raw, &[rej]);
                            }
                            Decoded::Garbage(raw) => {
                                self.metrics.hj212_frames.with_label_values(&["garbage"]).inc();
                                tracing::debug!(%peer, bytes = raw.len(), "bytes outside any HJ 212 frame skipped");
                            }
                        }
                    }
                    if decoder.pending() > codec::MAX_DATA_TOLERATED + 12 {
                        tracing::warn!(%peer, "HJ 212 connection sent an oversized frame; closed");
                        break;
                    }
                }
            }
        }
        tracing::debug!(%peer, "HJ 212 unit disconnected");
    }

    /// Map, validate and send one packet. `Err` only when the pipeline is closed.
    async fn packet(
        &self,
        p: codec::Packet,
        topic: &str,
        reply_tx: &mpsc::UnboundedSender<String>,
    ) -> Result<(), ()> {
        let reg = self.registry.snapshot();
        let raw = p.encode();
        let sensor = match reg.sensor_for_mn(p.mn()) {
            Some(s) if s.status == SensorStatus::Retired => Err(Rejection::new(
                RejectReason::RetiredSensor,
                format!("MN {} belongs to retired sensor {}", p.mn(), s.id),
            )),
            Some(s) => super::check_source(s, &p).map(|()| s),
            None => Err(Rejection::new(
                RejectReason::UnknownTopic,
                format!("no sensor is registered for MN {:?}", p.mn()),
            )),
        };
        let sensor = match sensor {
            Ok(s) => s,
            Err(r) => {
                let _ = self
                    .deadletter
                    .reject(Source::Hj212, topic, raw.as_bytes(), &[r]);
                return Ok(());
            }
        };
        let ack = p.ack_wanted().then(|| {
            Box::new(ReplyAck {
                tx: reply_tx.clone(),
                frame: codec::reply(&p, "9014", ""),
            }) as Box<dyn Acknowledge>
        });
        if super::period_of(p.cn()).is_none() {
            // Not monitoring data (heartbeats, parameter answers): acknowledged, nothing stored.
            if let Some(a) = ack {
                a.ack();
            }
            return Ok(());
        }
        let ctx = Context {
            now: chrono::Utc::now(),
            max_future_skew: chrono::Duration::from_std(self.max_future_skew)
                .unwrap_or(chrono::Duration::minutes(5)),
            source: Source::Hj212,
        };
        let d = super::readings(sensor, &p, &ctx);
        let _ = self
            .deadletter
            .reject(Source::Hj212, topic, raw.as_bytes(), &d.rejections);
        if !d.readings.is_empty() {
            self.metrics
                .readings_received
                .with_label_values(&["hj212"])
                .inc_by(d.readings.len() as u64);
        }
        if d.readings.is_empty() && ack.is_none() {
            return Ok(());
        }
        self.tx
            .send(Envelope {
                readings: d.readings,
                ack,
            })
            .await
            .map_err(|_| ())
    }
}
