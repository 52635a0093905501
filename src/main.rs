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
    Demo(DemoOptions),
    /// 传感器登记（现场）/ Sensors: register, list, test, maintenance, retire (talks to the API).
    Sensors(SensorsArgs),
    /// 站点（现场）/ Sites: list, add, edit without a restart (talks to the API).
    Sites(SitesArgs),
    /// HJ 212 报文解码/编码（现场排查数采仪）/ Decode or encode HJ 212 frames (debugging a data logger).
    Hj212 {
        #[command(subcommand)]
        command: Hj212Command,
    },
    /// 计算令牌的 SHA-256（写入配置）/ Print the SHA-256 of a token, for api.tokens in the config.
    HashToken {
        /// 令牌 / The token.
        token: String,
    },
    /// 计算空气质量指数 (HJ 633) / Compute the AQI from concentrations (HJ 633).
    ///
    /// 默认为日报（24小时均值，O3 为日最大8小时滑动平均）；--hourly 为实时报（1小时均值）。
    /// Daily values by default (24h means, O3 daily max 8h); --hourly takes 1h values.
    Aqi(AqiArgs),
    /// 日报：区域日 AQI 与机组小时折算浓度，输出文字与 PNG 图 / Daily briefing: the district's daily AQI
    /// and the units' hourly corrected SO2/NOx against their limits, as text and a PNG.
    Report(ReportArgs),
    /// 导入历史数据 / Import history: CSV or XLSX exports, HJ 212 captures, line protocol.
    ///
    /// 文件经守护进程的校验、死信与存储，重复导入不改变任何数据，中断后再次运行即续传；
    /// 导入的小时由标准计算在后台重新计算。
    /// Each file goes through the daemon's validation, dead-letter file and store (talks to the
    /// API); importing a file again changes nothing, and an interrupted import resumes when run
    /// again. The hours it touched are re-evaluated by the standards in the background.
    Import(ImportArgs),
    /// 数据真实性（CEMS）：列出发现、评估规则 / CEMS data integrity: list findings, evaluate the rules.
    Integrity {
        #[command(subcommand)]
        command: IntegrityCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IntegrityCommand {
    /// 评估：模拟数据（含标注的篡改）经真实计算引擎，输出各规则查准率、查全率与无篡改数据的误报 /
    /// Evaluate: simulated units with labelled manipulations through the real engine; prints per
    /// rule precision, recall and false findings per unit-week on clean data (exit 1 if the
    /// README's targets are not met).
    Eval {
        /// 含篡改数据的天数 / Days of manipulated data per unit.
        #[arg(long, default_value_t = 56)]
        days: i64,
        /// 无篡改数据的天数 / Days of clean data per unit.
        #[arg(long, default_value_t = 28)]
        clean_days: i64,
        /// 每条规则的篡改次数 / Manipulations per rule.
        #[arg(long, default_value_t = 10)]
        per_rule: usize,
        /// 随机种子 / Seed (the same seed gives the same data).
        #[arg(long, default_value_t = 20_260_301)]
        seed: u64,
    },
    /// 列出发现（经 API）/ List the findings (from the daemon's API).
    Findings {
        #[command(flatten)]
        api: ApiArgs,
        /// 机组 / The unit.
        #[arg(long)]
        unit: Option<String>,
        /// 起始（RFC 3339 或 YYYY-MM-DD）/ From (RFC 3339 or YYYY-MM-DD); default 30 days ago.
        #[arg(long)]
        from: Option<String>,
        /// 截止 / To.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// 文件 / Files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// 列映射文件（TOML）/ Mapping file (TOML) for a vendor's table: columns, units, status words, time zone.
    #[arg(long, short)]
    mapping: Option<PathBuf>,
    /// 格式 / Format: csv, xlsx, hj212, line_protocol (default: by extension, then by content).
    #[arg(long)]
    format: Option<String>,
    /// 整个文件所属传感器 / The registered sensor of a table without a sensor column.
    #[arg(long)]
    sensor: Option<String>,
    /// 行协议时间精度 / Line-protocol timestamp precision: s, ms, us, ns (default: by magnitude).
    #[arg(long)]
    precision: Option<String>,
    /// 已完整导入的文件也重新读取（已存值不重复）/ Read a file imported to the end again (stored values are not duplicated).
    #[arg(long)]
    force: bool,
    /// 等待后台重算完成 / Wait until the re-evaluation of the imported hours is done.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// 日期（北京时间），默认今天 / The day (CST, YYYY-MM-DD); default today.
    #[arg(long)]
    day: Option<chrono::NaiveDate>,
    /// 输出 PNG 文件 / Write the chart to this PNG file.
    #[arg(long)]
    png: Option<PathBuf>,
    /// 守护进程地址 / The daemon's API.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "ENVIROMON_SERVER"
    )]
    server: String,
    /// 令牌文件（或环境变量 ENVIROMON_TOKEN）/ File with the bearer token (or ENVIROMON_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// 中文字体文件（默认查找 fonts-wqy-microhei 等）/ A CJK font file (default: Debian's
    /// fonts-wqy-microhei, fonts-noto-cjk, … if installed).
    #[arg(long)]
    font: Option<PathBuf>,
    /// 报表：cems-hourly（某日逐时）、cems-daily（某月逐日）、cems-monthly（某年逐月）、air-daily、
    /// air-monthly（某年逐月，HJ 663）、water-daily / A report table instead of the briefing:
    /// cems-hourly (a day's hours), cems-daily (a month's days), cems-monthly (a year's months),
    /// air-daily, air-monthly (a year's months, HJ 663), water-daily.
    #[arg(long)]
    table: Option<String>,
    /// 机组 / The unit (CEMS tables).
    #[arg(long)]
    unit: Option<String>,
    /// 站点（或 district）/ The station, or `district` (air-daily, air-monthly).
    #[arg(long)]
    station: Option<String>,
    /// 传感器 / The sensor (water-daily).
    #[arg(long)]
    sensor: Option<String>,
    /// 月份 YYYY-MM / The month (daily tables).
    #[arg(long)]
    month: Option<String>,
    /// 年份 / The year (cems-monthly, air-monthly).
    #[arg(long)]
    year: Option<i32>,
    /// csv（默认）或 xlsx / csv (default) or xlsx.
    #[arg(long, default_value = "csv")]
    format: String,
    /// 输出文件（csv 默认输出到标准输出）/ Output file (CSV goes to stdout by default).
    #[arg(long)]
    out: Option<PathBuf>,
    /// 同一时段在 HJ 633-2012 与 HJ 633-2026 下的对比（配合 --from/--to）/ The same days under
    /// HJ 633-2012 and HJ 633-2026: good-days rate, grades, primary pollutants, the days that change.
    #[arg(long, requires_all = ["from", "to"])]
    compare_editions: bool,
    /// 起始日 / First day (YYYY-MM-DD), with --compare-editions.
    #[arg(long)]
    from: Option<chrono::NaiveDate>,
    /// 结束日 / Last day (YYYY-MM-DD), with --compare-editions.
    #[arg(long)]
    to: Option<chrono::NaiveDate>,
}

#[derive(Debug, Subcommand)]
enum Hj212Command {
    /// 从标准输入读取报文（每行一条或原始流），逐条输出 JSON 或拒收原因；有拒收则退出码非零 /
    /// Read frames from stdin (one per line, or a raw stream); print each as JSON or the exact reason
    /// it was refused; exit 1 if any was refused.
    Decode {
        /// 容忍字节交换的 MODBUS CRC / Accept a byte-swapped CRC-16/MODBUS.
        #[arg(long)]
        modbus_crc: bool,
        /// 容忍超过 1024 字节的报文 / Accept frames longer than 1024.
        #[arg(long)]
        long_frames: bool,
        /// 容忍缺少 QN / Accept a missing QN.
        #[arg(long)]
        missing_qn: bool,
        /// SM4 密钥（32位十六进制），用于解密 HJ 212-2025 加密报文 / SM4 key (32 hex digits) to open
        /// HJ 212-2025 encrypted frames.
        #[arg(long, env = "ENVIROMON_SM4_KEY", hide_env_values = true)]
        sm4_key: Option<String>,
    },
    /// 由 JSON 生成报文（stdin: {"header": [["QN","…"],…], "cp": [[["DataTime","…"],…],…]}），
    /// 默认 HJ 212-2025；给出 --sm4-key 则加密 CP / Build a frame from JSON on stdin, HJ 212-2025 by
    /// default; its CP is SM4-encrypted when a key is given.
    Encode {
        /// 版本 / Edition: 2025 (Flag 8/9) or 2017 (Flag 4/5). Default: the header's own Flag, or
        /// 2025 when it has none.
        #[arg(long)]
        edition: Option<String>,
        /// SM4 密钥（32位十六进制）/ SM4 key (32 hex digits): encrypt the CP region.
        #[arg(long, env = "ENVIROMON_SM4_KEY", hide_env_values = true)]
        sm4_key: Option<String>,
    },
}

/// Where the daemon's API is and as whom (`sensors`, `sites`).
#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// 守护进程地址 / The daemon's API.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "ENVIROMON_SERVER"
    )]
    server: String,
    /// 令牌文件（或环境变量 ENVIROMON_TOKEN）/ File with the bearer token (or ENVIROMON_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// 输出 JSON / Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SensorsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: SensorsCommand,
}

#[derive(Debug, Subcommand)]
enum SensorsCommand {
    /// 登记传感器（TOML 文件）/ Register a sensor from a TOML file.
    Add {
        #[arg(long)]
        file: PathBuf,
    },
    /// 列出传感器 / List sensors.
    List,
    /// 查看传感器 / Show one sensor.
    Show { id: String },
    /// 现场测试：Modbus 立即读取；MQTT 等待下一条消息 / Live test: read now (Modbus) or wait for the next message (MQTT).
    Test {
        id: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// 维护模式开/关 / Maintenance on or off.
    Maintenance {
        id: String,
        #[arg(long, conflicts_with = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// 停用（保留历史）/ Retire (history kept).
    Retire {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// 设置或轮换数采仪 SM4 密钥（从文件或环境变量读取，不在命令行上）/ Set or rotate the SM4 key of
    /// the sensor's HJ 212-2025 logger (read from a file or an environment variable, never typed on
    /// the command line).
    SetKey {
        id: String,
        /// 含32位十六进制密钥的文件 / File holding the key as 32 hex digits.
        #[arg(long, conflicts_with_all = ["from_env", "remove"])]
        key_file: Option<PathBuf>,
        /// 含密钥的环境变量名 / Name of an environment variable holding the key.
        #[arg(long, conflicts_with = "remove")]
        from_env: Option<String>,
        /// 删除密钥 / Remove the key.
        #[arg(long)]
        remove: bool,
    },
    /// 查看 SM4 密钥状态（仅指纹）/ Show the SM4 key status (fingerprints only).
    KeyStatus { id: String },
    /// 修改传感器（JSON 合并补丁，RFC 7396）/ Change a sensor (JSON merge patch, RFC 7396):
    /// `--set modbus.address=10.20.0.15:502`, `--set channels='[…]'`, or `--patch '{…}'`.
    Edit {
        id: String,
        /// 路径=值（值按 JSON 解析，否则为字符串；null 删除）/ path=value (JSON if it parses, else a string; null removes).
        #[arg(long = "set")]
        set: Vec<String>,
        /// 完整的合并补丁（JSON）/ The whole merge patch as JSON.
        #[arg(long, conflicts_with = "set")]
        patch: Option<String>,
    },
    /// 试运行：不登记，先读设备或监听主题/MN / Dry run: test-read the device (or listen to the
    /// topic / MN) of a sensor described in a TOML file, without registering it.
    DryRun {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// 恢复已停用的传感器 / Restore a retired sensor.
    Restore { id: String },
    /// 最近的拒收记录（原因与报文）/ Recent refusals (reason and payload), newest first.
    Refusals {
        /// 只看该传感器 / Only this sensor's.
        #[arg(long)]
        sensor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, clap::Args)]
struct SitesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: SitesCommand,
}

#[derive(Debug, Subcommand)]
enum SitesCommand {
    /// 列出站点 / List sites.
    List,
    /// 新增站点（TOML 文件，字段同 seeds/sites.toml 的 [[site]]）/ Add a site from a TOML file (the
    /// fields of a `[[site]]` seed entry).
    Add {
        #[arg(long)]
        file: PathBuf,
    },
    /// 修改站点（JSON 合并补丁）/ Change a site (JSON merge patch): `--set name_zh=…`.
    Edit {
        id: String,
        #[arg(long = "set")]
        set: Vec<String>,
        #[arg(long, conflicts_with = "set")]
        patch: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct AqiArgs {
    /// SO2, µg/m3
    #[arg(long)]
    so2: Option<f64>,
    /// NO2, µg/m3
    #[arg(long)]
    no2: Option<f64>,
    /// CO, mg/m3
    #[arg(long)]
    co: Option<f64>,
    /// PM10, µg/m3
    #[arg(long)]
    pm10: Option<f64>,
    /// PM2.5, µg/m3
    #[arg(long)]
    pm25: Option<f64>,
    /// O3 8小时（日最大）滑动平均 / O3 8h (daily max) moving mean, µg/m3
    #[arg(long = "o3-8h")]
    o3_8h: Option<f64>,
    /// O3 1小时（日最大）/ O3 1h (daily max), µg/m3
    #[arg(long = "o3-1h")]
    o3_1h: Option<f64>,
    /// 实时报：SO2/NO2/CO/O3 为1小时均值 / Real-time report: SO2, NO2, CO, O3 are 1h values
    #[arg(long)]
    hourly: bool,
    /// 标准版本 / Edition: HJ633-2026 (default) or HJ633-2012
    #[arg(long, default_value = "HJ633-2026")]
    standard: String,
    /// 输出 JSON / Print one JSON object
    #[arg(long)]
    json: bool,
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
            init_logging(
                &cfg.log.level,
                cfg.log.format == enviromon::config::LogFormat::Json,
            );
            exit(runtime().and_then(|rt| rt.block_on(run(cfg))))
        }
        Command::Aqi(args) => aqi_command(&args),
        Command::Report(args) => report_command(args),
        Command::Import(args) => import_command(args),
        Command::Integrity { command } => integrity_command(command),
        Command::HashToken { token } => {
            println!("{}", enviromon::api::auth::hash_token(&token));
            ExitCode::SUCCESS
        }
        Command::Sensors(args) => sensors_command(args),
        Command::Sites(args) => sites_command(args),
        Command::Hj212 { command } => hj212_command(command),
        Command::Demo(opts) => {
            init_logging("info", false);
            exit(runtime().and_then(|rt| rt.block_on(demo(opts))))
        }
    }
}

fn integrity_command(c: IntegrityCommand) -> ExitCode {
    match c {
        IntegrityCommand::Eval {
            days,
            clean_days,
            per_rule,
            seed,
        } => {
            if days < 14 || clean_days < 7 {
                eprintln!("--days must be at least 14 and --clean-days at least 7");
                return ExitCode::from(2);
            }
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("cannot make a temporary directory: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = enviromon::integrity::eval::EvalOptions {
                days,
                clean_days,
                per_rule,
                seed,
            };
            match enviromon::integrity::eval::run(&opts, dir.path()) {
                Ok(r) => {
                    print!("{r}");
                    if r.meets_targets() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("integrity eval failed: {e}");
                    ExitCode::from(2)
                }
            }
        }
        IntegrityCommand::Findings {
            api,
            unit,
            from,
            to,
        } => {
            let json = api.json;
            let (client, rt) = match api_client(api) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let mut q = Vec::new();
            for (k, v) in [("unit", unit), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let path = format!("/api/v1/integrity/findings?{}", q.join("&"));
            let doc = match rt.block_on(client.get(&path)) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            if json {
                println!("{doc:#}");
                return ExitCode::SUCCESS;
            }
            let list = doc["findings"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("无发现 / no findings");
            }
            for f in list {
                let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
                println!(
                    "{} {} {}{} {} → {} [{}]\n  {}\n  {}",
                    s("unit"),
                    s("rule"),
                    s("channel"),
                    if f["ongoing"].as_bool() == Some(true) {
                        " (进行中 ongoing)"
                    } else {
                        ""
                    },
                    s("start"),
                    s("end"),
                    s("severity"),
                    s("summary_zh"),
                    s("summary_en")
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sm4_key(text: Option<&str>) -> Result<Option<enviromon::ingest::hj212::crypto::Key>, ExitCode> {
    match text.map(enviromon::ingest::hj212::crypto::Key::from_hex) {
        None => Ok(None),
        Some(Ok(k)) => Ok(Some(k)),
        Some(Err(e)) => {
            eprintln!("--sm4-key: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn hj212_command(c: Hj212Command) -> ExitCode {
    use enviromon::ingest::hj212::{self, codec};
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    match c {
        Hj212Command::Encode {
            edition,
            sm4_key: k,
        } => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct In {
                header: Vec<(String, String)>,
                #[serde(default)]
                cp: Vec<Vec<(String, String)>>,
            }
            let key = match sm4_key(k.as_deref()) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let bits = match edition.as_deref() {
                None => None,
                Some("2025") => Some(codec::Edition::Hj212_2025.flag_bits()),
                Some("2017") => Some(codec::Edition::Hj212_2017.flag_bits()),
                Some(other) => {
                    eprintln!("--edition: {other:?} is not 2025 or 2017");
                    return ExitCode::from(2);
                }
            };
            match serde_json::from_slice::<In>(&input) {
                Ok(i) => {
                    let mut p = codec::Packet::new(i.header, i.cp);
                    // The edition bits are the chosen edition's; A and D bits are kept.
                    let ad = p.flag() & 3;
                    match p.header.iter_mut().find(|(k, _)| k == "Flag") {
                        Some((_, v)) => {
                            if let Some(b) = bits {
                                *v = (b | ad).to_string();
                            }
                        }
                        None => {
                            let b = bits.unwrap_or(codec::Edition::Hj212_2025.flag_bits());
                            let at = p
                                .header
                                .iter()
                                .position(|(k, _)| k == "MN")
                                .map_or(p.header.len(), |i| i + 1);
                            p.header.insert(at, ("Flag".into(), b.to_string()));
                        }
                    }
                    if key.is_some() && p.edition() != codec::Edition::Hj212_2025 {
                        eprintln!("--sm4-key: only HJ 212-2025 frames (Flag 8–11) are encrypted");
                        return ExitCode::from(2);
                    }
                    match key {
                        None => print!("{}", p.encode()),
                        Some(k) => match p.encode_sealed(&k) {
                            Ok(f) => print!("{f}"),
                            Err(e) => {
                                eprintln!("{e}");
                                return ExitCode::from(2);
                            }
                        },
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("JSON: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Hj212Command::Decode {
            modbus_crc,
            long_frames,
            missing_qn,
            sm4_key: k,
        } => {
            let key = match sm4_key(k.as_deref()) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let tol = codec::Tolerance {
                modbus_crc_swapped: modbus_crc,
                long_frames,
                missing_qn,
            };
            // Frames may be one a line: a line break between frames is skipped as whitespace.
            let mut d = codec::StreamDecoder::new(tol);
            let mut out = d.push(&input);
            if d.pending() > 0 {
                // Whatever is left at the end is an incomplete frame: say why.
                let rest: Vec<u8> = input[input.len() - d.pending()..].to_vec();
                let err =
                    codec::parse_any(&rest, tol)
                        .err()
                        .unwrap_or(codec::FrameError::Truncated {
                            needed: 0,
                            have: rest.len(),
                        });
                out.push(codec::Decoded::Bad(err, rest));
            }
            let mut refused = 0;
            for item in out {
                let opened = match item {
                    codec::Decoded::Frame(p) => Ok(p),
                    codec::Decoded::Sealed(s) => match &key {
                        Some(k) => s.open(k, tol).map_err(|e| (e.to_string(), s.raw.clone())),
                        None => Err((
                            format!("{} (give --sm4-key)", codec::FrameError::Sealed),
                            s.raw.clone(),
                        )),
                    },
                    codec::Decoded::Bad(e, raw) => Err((e.to_string(), raw)),
                    codec::Decoded::Garbage(raw) => {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "skipped": "bytes outside any frame", "raw": String::from_utf8_lossy(&raw)})
                        );
                        continue;
                    }
                };
                let line = match opened {
                    Ok(p) => {
                        let header: serde_json::Map<String, serde_json::Value> = p
                            .header
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                            .collect();
                        let (items, unknown, refused_values) = match hj212::items(&p) {
                            Ok((i, u, r)) => (
                                serde_json::to_value(i).unwrap_or_default(),
                                u,
                                r.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                            ),
                            Err(why) => (serde_json::Value::from(why), Vec::new(), Vec::new()),
                        };
                        serde_json::json!({"ok": true, "edition": p.edition(), "encrypted": p.encrypted, "resend": p.resend(), "crc": p.crc, "header": header, "cp": p.cp, "pollutants": p.pollutants(), "readings": items, "unknown_codes": unknown, "refused_values": refused_values})
                    }
                    Err((error, raw)) => {
                        refused += 1;
                        serde_json::json!({"ok": false, "error": error, "raw": String::from_utf8_lossy(&raw)})
                    }
                };
                println!("{line}");
            }
            if refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn report_command(a: ReportArgs) -> ExitCode {
    match report(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `enviromon report --table …`: fetch the table from the daemon and write it.
fn report_table(a: &ReportArgs, table: &str) -> anyhow::Result<()> {
    let client = enviromon::cli::Client {
        server: a.server.clone(),
        token: enviromon::cli::token(a.token_file.as_ref())?,
        json: false,
    };
    let mut q = vec![format!("format={}", a.format)];
    for (k, v) in [
        ("unit", &a.unit),
        ("station", &a.station),
        ("sensor", &a.sensor),
        ("month", &a.month),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={v}"));
        }
    }
    if let Some(d) = a.day {
        q.push(format!("day={d}"));
    }
    if let Some(y) = a.year {
        q.push(format!("year={y}"));
    }
    let path = format!("/api/v1/reports/{table}?{}", q.join("&"));
    let bytes = runtime()?.block_on(client.get_bytes(&path))?;
    match &a.out {
        Some(f) => {
            std::fs::write(f, &bytes).with_context(|| format!("cannot write {}", f.display()))?;
            eprintln!("报表已写入 / table written to {}", f.display());
        }
        None if a.format == "csv" => write_stdout(&bytes)?,
        None => anyhow::bail!("--out FILE is needed for {}", a.format),
    }
    Ok(())
}

/// Write to stdout; a closed pipe (`enviromon report | head`) ends quietly instead of panicking.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    use enviromon::report::{self, ReportData};
    if let Some(t) = a.table.clone() {
        return report_table(&a, &t);
    }
    if a.compare_editions {
        let (Some(from), Some(to)) = (a.from, a.to) else {
            anyhow::bail!("--compare-editions needs --from and --to");
        };
        let client = enviromon::cli::Client {
            server: a.server.clone(),
            token: enviromon::cli::token(a.token_file.as_ref())?,
            json: false,
        };
        let mut path = format!("/api/v1/compliance/compare?from={from}&to={to}");
        if let Some(st) = &a.station {
            path.push_str(&format!("&station={st}"));
        }
        let v = runtime()?.block_on(client.get(&path))?;
        let c: enviromon::standards::compare::Comparison = serde_json::from_value(v)?;
        return write_stdout(report::editions_text(&c).as_bytes());
    }
    let day = a.day.unwrap_or_else(|| {
        enviromon::standards::time::cst_date(chrono::Utc::now().timestamp_millis())
    });
    // Fail before asking the daemon anything if the picture cannot be drawn.
    let font = match &a.png {
        Some(_) => Some(report::load_font(a.font.as_deref())?),
        None => None,
    };
    let client = enviromon::cli::Client {
        server: a.server,
        token: enviromon::cli::token(a.token_file.as_ref())?,
        json: false,
    };
    let data: ReportData = runtime()?.block_on(report::gather(day, |path| {
        let client = &client;
        async move { client.get(&path).await.map_err(|e| e.to_string()) }
    }))?;
    write_stdout(data.briefing().as_bytes())?;
    if let (Some(png), Some(font)) = (&a.png, &font) {
        report::render_png(&data, font, png)?;
        write_stdout(format!("图已写入 / chart written to {}\n", png.display()).as_bytes())?;
    }
    Ok(())
}

/// The API client of `sensors` and `sites` (the token from `--token-file` or `ENVIROMON_TOKEN`)
/// and a runtime to run it on; the exit code when either cannot be had.
fn api_client(a: ApiArgs) -> Result<(enviromon::cli::Client, tokio::runtime::Runtime), ExitCode> {
    let token = enviromon::cli::token(a.token_file.as_ref()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    let rt = runtime().map_err(|e| {
        eprintln!("{e:#}");
        ExitCode::FAILURE
    })?;
    Ok((
        enviromon::cli::Client {
            server: a.server,
            token,
            json: a.json,
        },
        rt,
    ))
}

/// 0, or 1 with the error (already worded for people) on stderr.
fn exit_code(result: Result<(), enviromon::cli::CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn import_command(a: ImportArgs) -> ExitCode {
    let (client, rt) = match api_client(a.api) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let req = enviromon::import::client::Request {
        files: a.files,
        mapping: a.mapping,
        format: a.format,
        sensor: a.sensor,
        precision: a.precision,
        force: a.force,
        wait: a.wait,
    };
    exit_code(rt.block_on(enviromon::import::client::run(&client, &req)))
}

fn sites_command(a: SitesArgs) -> ExitCode {
    let (client, rt) = match api_client(a.api) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        match a.command {
            SitesCommand::List => client.sites().await,
            SitesCommand::Add { file } => client.add_site(&file).await,
            SitesCommand::Edit { id, set, patch } => {
                let p = enviromon::cli::merge_patch_of(&set, patch.as_deref())?;
                client.edit(&format!("/api/v1/sites/{id}"), &id, p).await
            }
        }
    });
    exit_code(result)
}

fn sensors_command(a: SensorsArgs) -> ExitCode {
    let (client, rt) = match api_client(a.api) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        match a.command {
            SensorsCommand::Add { file } => client.add(&file).await,
            SensorsCommand::List => client.list().await,
            SensorsCommand::Show { id } => client.show(&id).await,
            SensorsCommand::Test { id, seconds } => client.test(&id, seconds).await,
            SensorsCommand::Maintenance {
                id,
                on,
                off,
                reason,
            } => {
                if on == off {
                    return Err(enviromon::cli::CliError::Refused(
                        "say --on or --off".into(),
                    ));
                }
                client.maintenance(&id, on, reason).await
            }
            SensorsCommand::Retire { id, reason } => client.retire(&id, reason).await,
            SensorsCommand::KeyStatus { id } => client.key_status(&id).await,
            SensorsCommand::Edit { id, set, patch } => {
                let p = enviromon::cli::merge_patch_of(&set, patch.as_deref())?;
                client.edit(&format!("/api/v1/sensors/{id}"), &id, p).await
            }
            SensorsCommand::DryRun { file, seconds } => client.dry_run(&file, seconds).await,
            SensorsCommand::Restore { id } => client.restore(&id).await,
            SensorsCommand::Refusals { sensor, limit } => {
                client.refusals(sensor.as_deref(), limit).await
            }
            SensorsCommand::SetKey {
                id,
                key_file,
                from_env,
                remove,
            } => {
                let key = match (key_file, from_env, remove) {
                    (_, _, true) => None,
                    (Some(f), _, _) => Some(
                        std::fs::read_to_string(&f)
                            .map_err(|source| enviromon::cli::CliError::Read { path: f, source })?,
                    ),
                    (None, Some(var), _) => Some(std::env::var(&var).map_err(|_| {
                        enviromon::cli::CliError::Refused(format!(
                            "environment variable {var} is not set"
                        ))
                    })?),
                    (None, None, false) => {
                        return Err(enviromon::cli::CliError::Refused(
                            "say --key-file FILE, --from-env VAR or --remove".into(),
                        ))
                    }
                };
                client.set_key(&id, key.map(|k| k.trim().to_string())).await
            }
        }
    });
    exit_code(result)
}

fn aqi_command(a: &AqiArgs) -> ExitCode {
    use enviromon::standards::hj633::{self, Concentrations, Edition, Report};
    let Some(edition) = Edition::parse(&a.standard) else {
        eprintln!(
            "--standard: {:?} is not HJ633-2026 or HJ633-2012",
            a.standard
        );
        return ExitCode::from(2);
    };
    let report = if a.hourly {
        Report::Hourly
    } else {
        Report::Daily
    };
    let c = Concentrations {
        so2: a.so2,
        no2: a.no2,
        pm10: a.pm10,
        pm25: a.pm25,
        co: a.co,
        o3_8h: a.o3_8h,
        o3_1h: a.o3_1h,
        so2_24h: None,
    };
    let r = match hj633::aqi(edition, report, &c) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if r.iaqi.is_empty() {
        eprintln!("没有浓度值 / no concentrations given (e.g. --pm25 80)");
        return ExitCode::from(2);
    }
    if a.json {
        let iaqi: serde_json::Map<String, serde_json::Value> = r
            .iaqi
            .iter()
            .map(|(i, v)| (i.as_str().to_string(), serde_json::json!(v.number())))
            .collect();
        let doc = serde_json::json!({
            "standard": edition.as_str(),
            "report": if a.hourly { "hourly" } else { "daily" },
            "aqi": r.aqi,
            "aqi_from_available": r.aqi_from_available,
            "iaqi": iaqi,
            "grade": r.grade.map(|g| g.roman()),
            "category": r.category_zh.map(|zh| format!("{zh} / {}", r.category_en.unwrap_or(""))),
            "category_zh": r.category_zh,
            "category_en": r.category_en,
            "primary_pollutants": r.primary_pollutants,
            "missing": r.missing.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return ExitCode::SUCCESS;
    }
    println!(
        "标准 / standard: {}   报告 / report: {}",
        edition.as_str(),
        if a.hourly {
            "实时报 / hourly"
        } else {
            "日报 / daily"
        }
    );
    println!("{:<12} {:>6}", "指标/indicator", "IAQI");
    for (i, v) in &r.iaqi {
        let shown = match v {
            hj633::Iaqi::Value(n) => n.to_string(),
            hj633::Iaqi::BeyondScale => "500 (超出范围 / beyond scale)".into(),
            hj633::Iaqi::NotApplicable => "— (不计算 / not applicable)".into(),
        };
        println!("{:<12} {:>6}", i.as_str(), shown);
    }
    match (r.aqi, r.grade) {
        (Some(aqi), Some(g)) => {
            let (zh, en) = g.category();
            println!(
                "AQI: {aqi}   级别 / grade: {}   类别 / category: {zh} / {en}",
                g.roman()
            );
        }
        _ => println!(
            "AQI: NA (缺项且不超过100 / a pollutant is missing and the AQI is ≤ 100: {:?})",
            r.aqi_from_available
        ),
    }
    if r.primary_pollutants.is_empty() {
        println!("首要污染物 / primary pollutant: 无 / none");
    } else {
        println!(
            "首要污染物 / primary pollutant: {}",
            r.primary_pollutants.join(", ")
        );
    }
    if !r.missing.is_empty() {
        println!(
            "缺项 / missing: {}",
            r.missing
                .iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    ExitCode::SUCCESS
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

/// The demo's briefing: today's, made once the backfilled month has daily AQI results and the
/// units have hours today (the daemon's own timer is off in the demo; see `config/demo.toml`).
async fn demo_briefing(
    addr: std::net::SocketAddr,
    briefings: std::sync::Arc<enviromon::report::schedule::Briefings>,
    stop: tokio_util::sync::CancellationToken,
) {
    let day = enviromon::standards::time::cst_date(chrono::Utc::now().timestamp_millis());
    let ((from, to), (hfrom, hto)) = enviromon::report::ranges(day);
    let count = |path: String| async move {
        let v: serde_json::Value = reqwest::get(format!("http://{addr}{path}"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["count"].as_u64()
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let days = count(format!(
            "/api/v1/air/daily?station=district&from={from}&to={to}"
        ))
        .await;
        let hours = count(format!("/api/v1/cems/hourly?from={hfrom}&to={hto}")).await;
        if days.unwrap_or(0) >= 25 && hours.unwrap_or(0) > 0 {
            break;
        }
    }
    match briefings.make(day, false).await {
        Ok(m) => {
            println!(
                "日报已生成 / briefing made: {}",
                briefings.dir().join(format!("{day}.txt")).display()
            );
            if let Some(png) = m.png {
                println!("  图 / picture: http://{addr}/briefings/{png}");
            }
        }
        Err(e) => println!("日报生成失败 / briefing failed: {e}"),
    }
}

/// What `enviromon demo` was asked for on its command line.
#[derive(Debug, clap::Args)]
struct DemoOptions {
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
    /// 叠加的配置文件（如改用 InfluxDB 存储）/ A config file layered over the demo's, e.g. to store into InfluxDB.
    #[arg(long)]
    config: Option<PathBuf>,
}

async fn demo(opts: DemoOptions) -> anyhow::Result<ShutdownOutcome> {
    let DemoOptions {
        duration,
        broker: broker_addr,
        http,
        data_dir,
        interval,
        config,
    } = opts;
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
    let (data_dir, own_dir) = match data_dir {
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
    // Layers: defaults, the demo's, the operator's file (e.g. an InfluxDB store), the ports and
    // directory chosen above, then ENVIROMON__ variables.
    let file_layer = match &config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the config file {}", p.display()))?,
        None => String::new(),
    };
    let cfg =
        Config::load_layers(None, &[DEMO_TOML, &file_layer, &overrides], true).map_err(|e| {
            report_config_error(&e);
            anyhow::anyhow!("demo configuration is invalid")
        })?;
    // The plant's Modbus devices (seeds: gateway 127.0.0.1:5020, unit ids 1–4), simulated.
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let modbus_sim = enviromon::demo::modbus_sim::Sim::default();
    match tokio::net::TcpListener::bind("127.0.0.1:5020").await {
        Ok(listener) => {
            tokio::spawn(enviromon::demo::modbus_sim::serve_tcp(
                listener,
                modbus_sim.clone(),
                stop_sim.clone(),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve the simulated Modbus gateway on 127.0.0.1:5020; the plant's Modbus devices will show as down")
        }
    }
    let running = daemon::start(cfg).await?;
    let addr = running.http_addr;
    if let Some(hj) = running.hj212_addr {
        // 双源 #1's logger speaks HJ 212-2025 with SM4: a fresh key for this demo, registered as a
        // technician would (only its fingerprint is shown).
        let mut keys = std::collections::BTreeMap::new();
        let reg = running.registry.snapshot();
        if let Some(mn) = reg
            .sensors
            .get("sy-1-cems")
            .and_then(|s| s.hj212.as_ref())
            .map(|h| h.mn.clone())
        {
            let key = enviromon::ingest::hj212::crypto::Key::new(rand::random());
            let (store, k, m) = (running.keys.clone(), key.clone(), mn.clone());
            let set = tokio::task::spawn_blocking(move || {
                store.set(&m, Some(&k), "demo", chrono::Utc::now().timestamp_millis())
            })
            .await;
            match set {
                Ok(Ok(_)) => {
                    tracing::info!(%mn, fingerprint = %key.fingerprint(), "demo: SM4 key set for 双源 #1's HJ 212-2025 logger");
                    keys.insert(mn, key);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "demo: cannot set the SM4 key; 双源 #1's logger will be refused")
                }
                Err(e) => tracing::warn!(error = %e, "demo: SM4 key task failed"),
            }
        }
        tokio::spawn(simulator::run_hj212(hj, reg, keys, stop_sim.clone()));
    }
    let profiles = enviromon::ingest::modbus::profile::embedded()?;
    tokio::spawn(simulator::feed_modbus(
        modbus_sim,
        running.registry.clone(),
        profiles,
        Duration::from_secs(1),
        stop_sim.clone(),
    ));
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
    println!("  控制台 / web console:       http://{addr}/  (token demo-operator-token)");
    println!("  最新读数 / latest readings: http://{addr}/api/v1/readings/latest");
    println!(
        "  历史读数 / history:         http://{addr}/api/v1/readings?sensor=dt-1-cems&quantity=SO2"
    );
    println!("  传感器 / sensors:           http://{addr}/api/v1/sensors");
    println!("  Modbus 设备 / devices:      http://{addr}/api/v1/modbus/devices  (simulated gateway 127.0.0.1:5020)");
    println!("  合规 / compliance:          http://{addr}/api/v1/compliance");
    if let Some(hj) = running.hj212_addr {
        println!("  HJ 212 服务 / server:       {hj}  (simulated 数采仪: 双源 #1 HJ 212-2025 + SM4, 双源 #2 HJ 212-2017)");
    }
    println!("  日报 / briefings:           http://{addr}/api/v1/briefings  (today's, once the history is in)");
    println!("  数据真实性 / integrity:     http://{addr}/api/v1/integrity/findings  (10 days of history with injected manipulations)");
    println!("  指标 / metrics:             http://{addr}/metrics");
    println!("  数据目录 / data dir:        {}", data_dir.display());
    println!("  按 Ctrl-C 停止 / press Ctrl-C to stop");
    println!();
    tokio::spawn(demo_briefing(
        addr,
        running.briefings.clone(),
        stop_sim.clone(),
    ));
    // Ten days of 大唐's history, one manipulation per integrity rule, through the import API.
    let reg = running.registry.snapshot();
    tokio::spawn(async move {
        let now = chrono::Utc::now().timestamp_millis();
        match enviromon::demo::integrity::import_history(addr, "demo-operator-token", reg, now)
            .await
        {
            Ok(labels) => {
                println!(
                    "数据真实性演示：已导入含 {} 处篡改的历史 / integrity demo: history with {} injected manipulations imported",
                    labels.len(),
                    labels.len()
                );
                for l in labels {
                    println!(
                        "  {} {:<27} {}  {}",
                        l.unit,
                        l.rule,
                        enviromon::integrity::cst(l.start_ms),
                        l.note
                    );
                }
                println!("  发现 / findings: http://{addr}/api/v1/integrity/findings");
            }
            Err(e) => tracing::warn!(error = %e, "demo: integrity history not imported"),
        }
    });
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
    let outcome = running.shutdown().await;
    // A data directory the demo made for itself goes with it; `--data-dir` keeps one.
    if let Some(t) = own_dir {
        match std::fs::remove_dir_all(&t) {
            Ok(()) => println!(
                "演示数据已删除 / demo data removed: {} (--data-dir DIR keeps it)",
                t.display()
            ),
            Err(e) => {
                tracing::warn!(dir = %t.display(), error = %e, "cannot remove the demo's data directory")
            }
        }
    }
    Ok(outcome)
}
