//! Wiring: builds every component from the configuration, runs them, and shuts them down in order.
//!
//! Start: data dir → database and registry (seeds applied) → metrics, dead-letter file → store →
//! channel and writer → MQTT source → HTTP API.
//! Shutdown (signal → drain → deadline): sources stop taking messages; the writer drains the channel
//! and writes the last batch; acks reach the broker; the HTTP server stops last. If the store is
//! still failing when `daemon.shutdown_deadline` passes, the writer gives up and the unacknowledged
//! messages stay with the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Health};
use crate::config::{Config, FsyncMode, StoreKind};
use crate::ingest::mqtt::{self, MqttSource};
use crate::metrics::Metrics;
use crate::pipeline::deadletter::DeadLetter;
use crate::pipeline::spooler::Spooler;
use crate::pipeline::writer::{LatestValues, Writer, WriterConfig};
use crate::registry::{self, RegistryHandle};
use crate::store::embedded::EmbeddedStore;
use crate::store::influx::InfluxStore;
use crate::store::influx1::Influx1Store;
use crate::store::spool::{FsyncPolicy, Spool};
use crate::store::Store;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    DeadLetter(#[from] crate::pipeline::deadletter::DeadLetterError),
    #[error(transparent)]
    Embedded(#[from] crate::store::embedded::EmbeddedError),
    #[error(transparent)]
    Influx(#[from] crate::store::influx::InfluxBuildError),
    #[error(transparent)]
    Influx1(#[from] crate::store::influx1::Influx1BuildError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    #[error(transparent)]
    Spool(#[from] crate::store::spool::SpoolError),
    #[error(transparent)]
    Modbus(#[from] crate::ingest::modbus::ModbusError),
    #[error(transparent)]
    Profiles(#[from] crate::ingest::modbus::profile::ProfileError),
    #[error(transparent)]
    Standards(#[from] crate::standards::engine::EngineError),
    #[error("importer: {0}")]
    Import(#[from] crate::import::ImportError),
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    #[error(transparent)]
    Registration(#[from] crate::registration::RegError),
    #[error(transparent)]
    Keys(#[from] crate::ingest::hj212::keys::KeyError),
    #[error(transparent)]
    SiteInfo(#[from] crate::ingest::hj212::site_info::SiteInfoError),
    #[error(transparent)]
    Briefings(#[from] crate::report::ReportError),
    #[error("start-up task failed: {0}")]
    Task(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Running {
    /// Where the HTTP API actually listens (useful with port 0).
    pub http_addr: SocketAddr,
    /// The HJ 212 loggers' SM4 keys.
    pub keys: Arc<crate::ingest::hj212::keys::Keystore>,
    /// Where the HJ 212 server listens, when enabled.
    pub hj212_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    pub registry: RegistryHandle,
    pub deadletter_path: PathBuf,
    pub db_path: PathBuf,
    pub spool_dir: PathBuf,
    stop_sources: CancellationToken,
    importer: Arc<crate::import::Importer>,
    hard_stop: CancellationToken,
    stop_http: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    spooler: JoinHandle<()>,
    writer: JoinHandle<()>,
    http: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    /// Tasks that finish their work when `stop_standards` is cancelled (the standards runner).
    background_stoppable: Vec<JoinHandle<()>>,
    stop_standards: CancellationToken,
    pub standards: Option<Arc<crate::standards::engine::Engine>>,
    pub alerting: Option<Arc<crate::alerts::Alerting>>,
    /// The daily briefings.
    pub briefings: Arc<crate::report::schedule::Briefings>,
    deadline: Duration,
}

/// How shutdown went.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Everything drained and flushed.
    Clean,
    /// The deadline passed before the store took everything: the rest is in the spool (or, if it
    /// never reached the spool, unacknowledged at the broker) for the next start. Nothing is lost.
    LeftInSpool,
}

/// Build and start every component.
pub async fn start(cfg: Config) -> Result<Running, DaemonError> {
    let data_dir = cfg.daemon.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| DaemonError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let db_path = data_dir.join("enviromon.db");

    // Registry: seeds into the database (only ids not there yet), then the snapshot. Parsing the
    // seed files and the SQLite work run on the blocking pool, off the runtime's threads.
    let (inserted, reg) = {
        let (db_path, seeds, pattern) = (
            db_path.clone(),
            cfg.registry.seeds_dir.clone(),
            cfg.mqtt.topic_pattern.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
            let conn = crate::db::open(&db_path)?;
            let inserted = registry::seed(&conn, seeds.as_deref())?;
            Ok((inserted, registry::load(&conn, &pattern)?))
        })
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))??
    };
    tracing::info!(
        sites = reg.sites.len(),
        units = reg.units.len(),
        sensors = reg.sensors.len(),
        seeded = inserted,
        db = %db_path.display(),
        "registry loaded"
    );
    let registry = RegistryHandle::new(reg);

    let metrics = Metrics::new()?;
    let deadletter_path = data_dir.join("deadletter.jsonl");
    let deadletter = Arc::new(DeadLetter::open_with(
        &deadletter_path,
        metrics.clone(),
        cfg.pipeline.reject_log_interval,
        crate::pipeline::deadletter::Limits {
            max_bytes: cfg.pipeline.deadletter_max_bytes,
            keep: cfg.pipeline.deadletter_keep,
            flood_rate: cfg.pipeline.deadletter_flood_rate,
            flood_burst: cfg.pipeline.deadletter_flood_burst,
        },
    )?);

    let latest = LatestValues::default();
    let mut background = Vec::new();
    let mut background_stoppable = Vec::new();
    let (store, reader) = match cfg.store.kind {
        StoreKind::Embedded => {
            let s = EmbeddedStore::open(&db_path)?;
            let reader = s.reader()?;
            latest.update(&reader.latest_all().await?);
            let retention = cfg.store.embedded.retention;
            if !retention.is_zero() {
                let s2 = s.clone();
                background.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(3600));
                    loop {
                        tick.tick().await;
                        match s2.purge_older_than(retention).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(deleted = n, "embedded store retention"),
                            Err(e) => tracing::warn!(error = %e, "embedded store retention failed"),
                        }
                    }
                }));
            }
            (Store::Embedded(s), Some(reader))
        }
        StoreKind::Influxdb => (Store::Influx(InfluxStore::new(&cfg.store.influxdb)?), None),
        StoreKind::Influxdb1 => (
            Store::Influx1(Influx1Store::new(&cfg.store.influxdb1)?),
            None,
        ),
    };
    metrics.store_writable.set(1);
    let health = Arc::new(Health::default());
    if let Store::Influx1(s1) = &store {
        // The database must exist before anything is written: created when permitted; otherwise
        // "not ready" with the reason, checked again every 30 s.
        if let Err(why) = s1.prepare().await {
            tracing::error!(reason = %why, "store not ready");
            metrics.store_writable.set(0);
            Health::set(&health.store_error, Some(why));
            let (s1, h, m) = (s1.clone(), health.clone(), metrics.clone());
            background.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    match s1.prepare().await {
                        Ok(()) => {
                            tracing::info!("store ready: the InfluxDB 1.x database is there now");
                            Health::set(&h.store_error, None);
                            m.store_writable.set(1);
                            break;
                        }
                        Err(why) => {
                            tracing::warn!(reason = %why, "store still not ready");
                            Health::set(&h.store_error, Some(why));
                        }
                    }
                }
            }));
        } else {
            tracing::info!("InfluxDB 1.x database ready");
        }
    }
    tracing::info!(store = store.name(), "store configured");

    // Spool: recovery (torn tail, ledger) happens here, before any new data; the writer then
    // replays what an earlier run left, ahead of new readings (FIFO).
    let spool_dir = cfg
        .spool
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("spool"));
    let policy = match cfg.spool.fsync {
        FsyncMode::Batch => FsyncPolicy::Batch,
        FsyncMode::Interval => FsyncPolicy::Interval,
    };
    let spool = {
        let (dir, max, seg) = (
            spool_dir.clone(),
            cfg.spool.max_bytes,
            cfg.spool.segment_bytes,
        );
        Arc::new(
            tokio::task::spawn_blocking(move || Spool::open(&dir, max, seg, policy))
                .await
                .map_err(|e| crate::store::spool::SpoolError::Io {
                    path: spool_dir.clone(),
                    source: std::io::Error::other(e),
                })??,
        )
    };
    let left = spool.stats();
    if left.unstored_bytes > 0 {
        tracing::info!(
            unstored_bytes = left.unstored_bytes,
            "spool holds readings from an earlier run; storing them first"
        );
    }
    if policy == FsyncPolicy::Interval {
        let (sp, every) = (spool.clone(), cfg.spool.fsync_interval);
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let sp = sp.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sp.sync()).await {
                    tracing::error!(error = %e, "spool fsync failed");
                }
            }
        }));
    }

    let stop_sources = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let spooler_done = CancellationToken::new();
    let data_ready = Arc::new(tokio::sync::Notify::new());
    let space_freed = Arc::new(tokio::sync::Notify::new());
    let (tx, rx) = mpsc::channel(cfg.pipeline.channel_capacity);
    let spooler = tokio::spawn(
        Spooler {
            rx,
            spool: spool.clone(),
            deadletter: deadletter.clone(),
            metrics: metrics.clone(),
            data_ready: data_ready.clone(),
            space_freed: space_freed.clone(),
            hard_stop: hard_stop.clone(),
            done: spooler_done.clone(),
        }
        .run(),
    );
    let standards = if cfg.standards.enabled {
        let settings = crate::standards::engine::Settings::from_config(&cfg.standards);
        let (path, reg) = (db_path.clone(), registry.clone());
        let engine = tokio::task::spawn_blocking(move || {
            crate::standards::engine::Engine::open(&path, reg, settings)
        })
        .await
        .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??;
        Some(Arc::new(engine))
    } else {
        None
    };
    let stop_standards = CancellationToken::new();
    let backfill_wake = Arc::new(tokio::sync::Notify::new());
    if let Some(engine) = &standards {
        background_stoppable.push(tokio::spawn(
            crate::standards::runner::Backfill {
                engine: engine.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                stop: stop_standards.clone(),
                wake: backfill_wake.clone(),
            }
            .run(),
        ));
        // The site parameters loggers declared (CN 3020), read by the integrity rules.
        let path = db_path.clone();
        let declared = tokio::task::spawn_blocking(move || {
            crate::ingest::hj212::site_info::SiteInfo::open(&path)
        })
        .await
        .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??;
        background_stoppable.push(tokio::spawn(
            crate::standards::runner::Runner {
                engine: engine.clone(),
                store: store.clone(),
                interval: cfg.standards.interval,
                metrics: metrics.clone(),
                stop: stop_standards.clone(),
                site_info: Some(Arc::new(declared)),
            }
            .run(),
        ));
    }
    let alerting = if cfg.alerts.enabled {
        let (path, acfg) = (db_path.clone(), cfg.alerts.clone());
        let now = chrono::Utc::now().timestamp_millis();
        let a =
            tokio::task::spawn_blocking(move || crate::alerts::Alerting::open(&path, &acfg, now))
                .await
                .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??;
        let a = Arc::new(a);
        let receivers = crate::alerts::receivers(&cfg.alerts)?;
        a.attach_receivers(receivers.clone());
        let queues = receivers
            .into_iter()
            .map(|r| {
                let q = crate::alerts::notify::spawn(
                    r.clone(),
                    metrics.clone(),
                    stop_standards.clone(),
                );
                (r, q)
            })
            .collect();
        background_stoppable.push(tokio::spawn(
            crate::alerts::Runner {
                alerting: a.clone(),
                registry: registry.clone(),
                engine: standards.clone(),
                metrics: metrics.clone(),
                queues,
                evaluation_interval: cfg.alerts.evaluation_interval,
                resend_interval: cfg.alerts.resend_interval,
                stop: stop_standards.clone(),
            }
            .run(),
        ));
        Some(a)
    } else {
        None
    };
    let writer = tokio::spawn(
        Writer {
            spool,
            alerting: alerting.clone(),
            standards: standards.clone(),
            store,
            deadletter: deadletter.clone(),
            latest: latest.clone(),
            metrics: metrics.clone(),
            config: WriterConfig {
                batch_size: cfg.store.batch_size,
                retry_min: Duration::from_millis(100),
                retry_max: cfg.store.retry_max,
            },
            data_ready,
            space_freed,
            input_done: spooler_done,
            hard_stop: hard_stop.clone(),
        }
        .run(),
    );

    let spool_dir_for_report = cfg
        .spool
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("spool"));

    let keys = {
        let path = cfg
            .hj212
            .keys_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secrets").join("hj212-keys.json"));
        let overlap = cfg.hj212.key_overlap;
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::ingest::hj212::keys::Keystore::open(&path, overlap)
            })
            .await
            .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??,
        )
    };
    let taps = crate::ingest::tap::Taps::default();
    let source_ctx = crate::ingest::SourceContext {
        registry: registry.clone(),
        tx: tx.clone(),
        deadletter: deadletter.clone(),
        metrics: metrics.clone(),
        max_future_skew: cfg.pipeline.max_future_skew,
        stop: stop_sources.clone(),
        taps: taps.clone(),
    };
    let mut sources = Vec::new();
    if cfg.mqtt.enabled {
        health.mqtt_enabled.store(true, Ordering::Relaxed);
        let opts = mqtt::options(&cfg.mqtt)?;
        let source = MqttSource {
            config: cfg.mqtt.clone(),
            ctx: source_ctx.clone(),
            keys: keys.clone(),
            health: health.clone(),
        };
        sources.push(tokio::spawn(source.run(opts)));
    }
    // Registration first: the Modbus supervisor takes its profiles (some registered at run time).
    let registration = {
        let profiles = crate::ingest::modbus::profile::load(cfg.modbus.profiles_dir.as_deref())?;
        let (path, reg, pattern) = (
            db_path.clone(),
            registry.clone(),
            cfg.mqtt.topic_pattern.clone(),
        );
        let k = keys.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::registration::Registration::open(&path, reg, &pattern, profiles)
                    .map(|r| r.with_keys(k))
            })
            .await
            .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??,
        )
    };
    let mut hj212_addr = None;
    let mut site_info = None;
    if cfg.hj212.enabled {
        let listener = tokio::net::TcpListener::bind(&cfg.hj212.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.hj212.listen.clone(),
                source,
            })?;
        hj212_addr = listener.local_addr().ok();
        tracing::info!(addr = ?hj212_addr, "HJ 212 server listening");
        let path = db_path.clone();
        let si = Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::ingest::hj212::site_info::SiteInfo::open(&path)
            })
            .await
            .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??,
        );
        if let Some(a) = &alerting {
            a.attach_site_info(si.clone());
        }
        site_info = Some(si.clone());
        sources.push(tokio::spawn(
            crate::ingest::hj212::server::Server {
                listener,
                ctx: source_ctx.clone(),
                max_connections: cfg.hj212.max_connections,
                idle_timeout: cfg.hj212.idle_timeout,
                keys: keys.clone(),
                require_encryption: cfg.hj212.require_encryption,
                site_info: Some(si),
                registration: Some(registration.clone()),
            }
            .run(),
        ));
    }
    let mut modbus_states = None;
    if cfg.modbus.enabled {
        let states: crate::ingest::modbus::poller::States = Default::default();
        let reg2 = registration.clone();
        let sup = crate::ingest::modbus::Supervisor {
            config: cfg.modbus.clone(),
            ctx: source_ctx.clone(),
            profiles: Arc::new(move || reg2.profiles()),
            states: states.clone(),
        };
        sup.check()?;
        sources.push(tokio::spawn(sup.run()));
        modbus_states = Some(states);
    }
    let importer = {
        let parts = crate::import::Parts {
            registry: registry.clone(),
            tx: tx.clone(),
            deadletter: deadletter.clone(),
            metrics: metrics.clone(),
            engine: standards.clone(),
            reader: reader.clone(),
            keys: keys.clone(),
            max_future_skew: cfg.pipeline.max_future_skew,
            retention: (matches!(cfg.store.kind, StoreKind::Embedded)
                && !cfg.store.embedded.retention.is_zero())
            .then_some(cfg.store.embedded.retention),
            wake: backfill_wake.clone(),
            db_path: db_path.clone(),
            tmp_dir: data_dir.join("import-tmp"),
        };
        Arc::new(
            tokio::task::spawn_blocking(move || crate::import::Importer::open(parts))
                .await
                .map_err(|e| crate::standards::engine::EngineError::Task(e.to_string()))??,
        )
    };
    drop(tx);

    let mut state = AppState {
        importer: Some(importer.clone()),
        briefings: None,
        taps: Some(taps),
        deadletter: Some(deadletter.clone()),
        site_info,
        registration: Some(registration),
        tokens: crate::api::auth::Tokens::from_config(&cfg.api),
        alerting: alerting.clone(),
        modbus: modbus_states,
        standards: standards.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        latest,
        readings: reader,
        health,
    };
    // The daily briefing reads the API in-process, with read access and without itself.
    let briefings = {
        let reader = api::app(AppState {
            tokens: crate::api::auth::Tokens::open_read(),
            ..state.clone()
        });
        let dir = cfg
            .report
            .dir
            .clone()
            .unwrap_or_else(|| cfg.daemon.data_dir.join("briefings"));
        let b = Arc::new(crate::report::schedule::Briefings::new(
            dir,
            &cfg.report,
            crate::alerts::receivers(&cfg.alerts)?,
            cfg.alerts.external_url.clone(),
            reader,
            metrics.clone(),
        )?);
        background.push(tokio::spawn(b.clone().run(CancellationToken::new())));
        state.briefings = Some(b.clone());
        b
    };
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let stop_http = CancellationToken::new();
    let stop = stop_http.clone();
    let router = api::app(state);
    let (header_timeout, max_connections) =
        (cfg.http.header_read_timeout, cfg.http.max_connections);
    let http = tokio::spawn(api::serve::serve(
        listener,
        router,
        header_timeout,
        max_connections,
        stop,
    ));
    tracing::info!(%http_addr, "HTTP API listening");

    Ok(Running {
        http_addr,
        keys,
        hj212_addr,
        metrics,
        registry,
        deadletter_path,
        db_path,
        spool_dir: spool_dir_for_report,
        stop_sources,
        importer,
        hard_stop,
        stop_http,
        sources,
        spooler,
        writer,
        http,
        background,
        background_stoppable,
        stop_standards,
        standards,
        alerting,
        briefings,
        deadline: cfg.daemon.shutdown_deadline,
    })
}

impl Running {
    /// Stop sources, spool what they delivered, store what the deadline allows, stop the API.
    /// Whatever is not stored by then stays in the spool for the next start.
    pub async fn shutdown(self) -> ShutdownOutcome {
        tracing::info!(
            deadline_secs = self.deadline.as_secs_f64(),
            "shutting down: stopping sources, draining"
        );
        self.stop_sources.cancel();
        // A running import stops at its next batch and lets the channel go.
        self.importer.close();
        // In order: sources, then the spooler (drains the channel), then the writer (drains the
        // spool). A handle is taken once it has completed, so none is polled twice.
        let mut tasks: Vec<Option<JoinHandle<()>>> = self.sources.into_iter().map(Some).collect();
        tasks.push(Some(self.spooler));
        tasks.push(Some(self.writer));
        let drained = tokio::time::timeout(self.deadline, join_all(&mut tasks)).await;
        let outcome = if drained.is_ok() {
            ShutdownOutcome::Clean
        } else {
            tracing::warn!("shutdown deadline passed before the store accepted everything; the rest stays in the spool");
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), join_all(&mut tasks)).await;
            for h in tasks.iter().flatten() {
                h.abort();
            }
            ShutdownOutcome::LeftInSpool
        };
        for b in self.background {
            b.abort();
        }
        // The standards runner makes one last pass so results are current.
        self.stop_standards.cancel();
        for b in self.background_stoppable {
            let _ = tokio::time::timeout(Duration::from_secs(5), b).await;
        }
        self.stop_http.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.http).await;
        tracing::info!(?outcome, "stopped");
        outcome
    }
}

/// Await each task in order; a completed one is taken out so it is never polled again.
async fn join_all(tasks: &mut [Option<JoinHandle<()>>]) {
    for slot in tasks.iter_mut() {
        if let Some(h) = slot.as_mut() {
            let _ = h.await;
            *slot = None;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
