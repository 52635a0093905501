//! The `enviromon` binary: command-line parsing and logging set-up; everything else is the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use enviromon::config::{Config, ConfigError, DEMO_TOML};
use enviromon::daemon::{self, ShutdownOutcome};
use enviromon::demo::{broker, simulator};

/// 涧西区环境监测守护进程 / Jianxi District environmental monitoring daemon.
#[derive(Debug, Parser)]
#[command(name = "enviromon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// 运行守护进程 / Run the daemon.
    Run {
        /// 配置文件 / Configuration file (layered over the built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// 检查配置，列出所有错误 / Check a configuration and print every error (exit 2 if any).
    CheckConfig {
        /// 配置文件 / Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// 演示：内置 MQTT 代理、模拟设备、嵌入式存储与 HTTP API / Demo: embedded broker, simulators, embedded store, HTTP API.
    Demo {
        /// 运行时长，如 30s、10m；默认直到 Ctrl-C / How long to run, e.g. 30s or 10m; default until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// 使用已有的 MQTT 代理 / Use this broker (HOST:PORT) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
        /// HTTP API 监听地址 / Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// 数据目录；默认临时目录 / Data directory; default a fresh temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 模拟设备发布间隔 / Simulator publish interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENVIROMON_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},rumqttd=off")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn report_config_error(e: &ConfigError) {
    eprintln!("配置错误 / configuration errors:");
    for fe in e.field_errors() {
        if fe.path.is_empty() {
            eprintln!("  - {}", fe.message);
        } else {
            eprintln!("  - {fe}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(_) => {
                println!("配置有效 / configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_config_error(&e);
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    report_config_error(&e);
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log.level, cfg.log.format == "json");
            exit(runtime().and_then(|rt| rt.block_on(run(cfg))))
        }
        Command::Demo {
            duration,
            broker,
            http,
            data_dir,
            interval,
        } => {
            init_logging("info", false);
            exit(
                runtime()
                    .and_then(|rt| rt.block_on(demo(duration, broker, http, data_dir, interval))),
            )
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn exit(r: anyhow::Result<ShutdownOutcome>) -> ExitCode {
    match r {
        // Both are orderly: what the store did not take by the deadline waits in the spool.
        Ok(ShutdownOutcome::Clean | ShutdownOutcome::LeftInSpool) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enviromon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<ShutdownOutcome> {
    let running = daemon::start(cfg).await?;
    daemon::shutdown_signal().await;
    Ok(running.shutdown().await)
}

async fn demo(
    duration: Option<Duration>,
    broker_addr: Option<String>,
    http: String,
    data_dir: Option<PathBuf>,
    interval: Duration,
) -> anyhow::Result<ShutdownOutcome> {
    let (host, port) = match broker_addr {
        Some(a) => {
            let (h, p) = a.rsplit_once(':').context("--broker must be HOST:PORT")?;
            (
                h.to_string(),
                p.parse::<u16>().context("--broker port must be a number")?,
            )
        }
        None => {
            let port = broker::free_port()?;
            let addr = broker::start(port)?;
            tracing::info!(%addr, "embedded MQTT broker started");
            ("127.0.0.1".to_string(), port)
        }
    };
    let (data_dir, _tmp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let t = std::env::temp_dir().join(format!("enviromon-demo-{}", std::process::id()));
            (t.clone(), Some(t))
        }
    };
    let overrides = format!(
        "[daemon]\ndata_dir = {dir:?}\n[http]\nlisten = {http:?}\n[mqtt]\nhost = {host:?}\nport = {port}\n",
        dir = data_dir.display().to_string(),
    );
    let cfg = Config::load_layers(None, &[DEMO_TOML, &overrides], false).map_err(|e| {
        report_config_error(&e);
        anyhow::anyhow!("demo configuration is invalid")
    })?;
    let running = daemon::start(cfg).await?;
    let addr = running.http_addr;
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let sim = tokio::spawn(simulator::run(
        host.clone(),
        port,
        running.registry.snapshot(),
        interval,
        stop_sim.clone(),
    ));
    println!();
    println!("enviromon 演示已启动 / demo running");
    println!("  MQTT 代理 / broker:        {host}:{port}  (topics enviromon/{{site}}/{{sensor}})");
    println!("  最新读数 / latest readings: http://{addr}/api/v1/readings/latest");
    println!(
        "  历史读数 / history:         http://{addr}/api/v1/readings?sensor=dt-1-cems&quantity=SO2"
    );
    println!("  传感器 / sensors:           http://{addr}/api/v1/sensors");
    println!("  指标 / metrics:             http://{addr}/metrics");
    println!("  数据目录 / data dir:        {}", data_dir.display());
    println!("  按 Ctrl-C 停止 / press Ctrl-C to stop");
    println!();
    match duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = daemon::shutdown_signal() => {}
            }
        }
        None => daemon::shutdown_signal().await,
    }
    stop_sim.cancel();
    let _ = sim.await;
    Ok(running.shutdown().await)
}
