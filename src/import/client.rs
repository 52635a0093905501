//! `enviromon import FILE…`: each file is uploaded to the daemon's `POST /api/v1/import` as it is
//! read from disk, with a progress bar (bytes, rows, rate, ETA) on a terminal, then its summary.
//! The file's SHA-256 goes with it, so the daemon resumes an interrupted import where it stopped
//! and recognises one it finished. `--wait` then follows the re-evaluation of what was imported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::cli::{CliError, Client};

/// What `enviromon import` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub files: Vec<PathBuf>,
    pub mapping: Option<PathBuf>,
    pub format: Option<String>,
    pub sensor: Option<String>,
    pub precision: Option<String>,
    pub force: bool,
    /// Follow the re-evaluation until every imported hour is recomputed.
    pub wait: bool,
}

fn http_err(c: &Client, e: impl std::fmt::Display) -> CliError {
    CliError::Http {
        server: c.server.clone(),
        message: e.to_string(),
    }
}

fn read_err(path: &Path, source: std::io::Error) -> CliError {
    CliError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a file, hex.
pub fn digest(path: &Path) -> Result<String, CliError> {
    let mut f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| read_err(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Upload each file in turn; a file that fails does not stop the others (exit status 1 at the end).
pub async fn run(c: &Client, req: &Request) -> Result<(), CliError> {
    let mapping = match &req.mapping {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| read_err(p, e))?),
        None => None,
    };
    let mut failed = Vec::new();
    for file in &req.files {
        match one(c, req, file, mapping.as_deref()).await {
            Ok(summary) => {
                if c.json {
                    println!("{summary}");
                } else {
                    println!("{}", human(&summary));
                }
                if summary["state"] == "failed" {
                    failed.push(file.display().to_string());
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed.push(file.display().to_string());
            }
        }
    }
    if req.wait {
        wait_reevaluation(c).await?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(format!(
            "导入未完成 / not imported to the end: {} (run the same command again to resume)",
            failed.join(", ")
        )))
    }
}

fn bar(len: u64, name: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(name.to_string());
    pb
}

async fn one(
    c: &Client,
    req: &Request,
    path: &Path,
    mapping: Option<&str>,
) -> Result<Value, CliError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "upload".into());
    let len = std::fs::metadata(path)
        .map_err(|e| read_err(path, e))?
        .len();
    let p2 = path.to_path_buf();
    let key = tokio::task::spawn_blocking(move || digest(&p2))
        .await
        .map_err(|e| http_err(c, e))??;
    if !req.force {
        // Imported to the end before (same content): nothing to send.
        let v = c
            .get(&format!(
                "/api/v1/imports/key/{key}?name={}",
                url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            ))
            .await?;
        if v["already"].is_object() {
            return Ok(v["already"].clone());
        }
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| read_err(path, e))?;
    let pb = bar(len, &name);
    let started = std::time::Instant::now();
    // Rows are lines, except in a workbook (a zip): there only bytes are counted.
    let xlsx = req
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
        == Some("xlsx")
        || name.to_ascii_lowercase().ends_with(".xlsx");
    // The file as a stream of 256 KiB chunks, counted into the bar as they are sent (rows: lines).
    let counted = pb.clone();
    let stream = futures_util::stream::unfold((file, 0u64), move |(mut f, mut rows)| {
        let pb = counted.clone();
        async move {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    pb.inc(n as u64);
                    if !xlsx {
                        rows += buf.iter().filter(|b| **b == b'\n').count() as u64;
                        let secs = started.elapsed().as_secs_f64().max(0.001);
                        pb.set_message(format!("{rows} 行/rows {:.0}/s", rows as f64 / secs));
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (f, rows)))
                }
                Err(e) => Some((Err(e), (f, rows))),
            }
        }
    });
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
            .file_name(name.clone());
    let mut form = reqwest::multipart::Form::new();
    if let Some(m) = mapping {
        form = form.text("mapping", m.to_string());
    }
    form = form.part("file", part);
    let mut query: Vec<(&str, String)> = vec![("name", name.clone()), ("key", key)];
    if req.force {
        query.push(("force", "true".into()));
    }
    for (k, v) in [
        ("format", &req.format),
        ("sensor", &req.sensor),
        ("precision", &req.precision),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    // No overall timeout: a large file takes as long as it takes; the connection's own errors end it.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| http_err(c, e))?;
    let mut r = http
        .post(format!("{}/api/v1/import", c.server.trim_end_matches('/')))
        .query(&query)
        .multipart(form);
    if let Some(t) = &c.token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.map_err(|e| http_err(c, e.without_url()));
    pb.finish_and_clear();
    let resp = resp?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() || status.as_u16() == 422 && v.get("state").is_some() {
        return Ok(v);
    }
    Err(CliError::Refused(format!(
        "{} {}",
        status.as_u16(),
        v["error"]["message"]
            .as_str()
            .unwrap_or(status.canonical_reason().unwrap_or(""))
    )))
}

/// The summary in words.
pub fn human(s: &Value) -> String {
    let u = |k: &str| s[k].as_u64().unwrap_or(0);
    let state = match s["state"].as_str().unwrap_or("") {
        "done" => "完成 / done",
        "already_imported" => "已导入过 / already imported",
        "failed" => "未完成 / failed",
        other => other,
    };
    let mut out = format!(
        "{}: {state} ({:.1} s, job {})\n",
        s["name"].as_str().unwrap_or(""),
        s["seconds"].as_f64().unwrap_or(0.0),
        s["job"].as_str().unwrap_or("")
    );
    out.push_str(&format!(
        "  行 / rows          {}{}\n",
        u("rows"),
        if u("already_imported") > 0 {
            format!(
                " ({} 已在上次导入 / done by an earlier run)",
                u("already_imported")
            )
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "  值 / values        {} valid: {} stored, {} duplicates (already stored), {} empty cells\n",
        u("values"),
        u("stored"),
        u("duplicates"),
        u("empty")
    ));
    if let Some(r) = s["refused"].as_object().filter(|r| !r.is_empty()) {
        let parts: Vec<String> = r
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
            .collect();
        out.push_str(&format!(
            "  拒收 / refused     {} (details: GET /api/v1/deadletter)\n",
            parts.join(", ")
        ));
    }
    if let (Some(a), Some(b)) = (s["first"].as_str(), s["last"].as_str()) {
        out.push_str(&format!("  时间 / time        {a} … {b}\n"));
    }
    if u("hours_queued") > 0 {
        out.push_str(&format!(
            "  重算 / re-evaluate {} hours queued\n",
            u("hours_queued")
        ));
    }
    if u("not_data") > 0 || u("garbage_bytes") > 0 {
        out.push_str(&format!(
            "  HJ 212            {} frames not monitoring data, {} bytes between frames skipped\n",
            u("not_data"),
            u("garbage_bytes")
        ));
    }
    if let Some(e) = s["error"].as_str() {
        out.push_str(&format!("  错误 / error       {e}\n"));
    }
    for n in s["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  注 / note          {}\n",
            n.as_str().unwrap_or("")
        ));
    }
    out.trim_end().to_string()
}

/// Follow `GET /api/v1/imports` until no imported hour waits for re-evaluation.
async fn wait_reevaluation(c: &Client) -> Result<(), CliError> {
    let mut pb: Option<ProgressBar> = None;
    loop {
        let v = c.get("/api/v1/imports?limit=1").await?;
        let Some(pending) = v["reevaluation"]["pending_hours"].as_u64() else {
            println!("标准计算未启用 / the standards are not enabled: nothing to re-evaluate");
            return Ok(());
        };
        if pending == 0 {
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            println!("重算完成 / re-evaluation done");
            return Ok(());
        }
        let p = pb.get_or_insert_with(|| {
            let p = ProgressBar::new(pending);
            p.set_style(
                ProgressStyle::with_template(
                    "重算 / re-evaluating [{bar:30}] {pos}/{len} hours ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            p
        });
        if pending > p.length().unwrap_or(0) {
            p.set_length(pending);
        }
        p.set_position(p.length().unwrap_or(0).saturating_sub(pending));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
