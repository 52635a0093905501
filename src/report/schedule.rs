//! The scheduled briefing: every day at `[report] daily_at` (Beijing time) the daemon gathers the
//! briefing from its own API (in-process, the same answers the CLI gets over HTTP), writes it to
//! `[report] dir` and pushes it to the group robots.
//!
//! Files per briefing day: `{day}.txt` (the text), `{day}.md` (the robots' markdown), the picture
//! `{day}-{nonce}.png` and `{day}.json`, the manifest: when it was made and what each robot answered.
//! The picture's name carries a random nonce because DingTalk can only show a picture by URL: it is
//! served without a token at `/briefings/{name}` (an unguessable link, like a shared snapshot),
//! while the list of briefings needs a token.
//!
//! A briefing is made once: the manifest is written last, and a day with a manifest is not made
//! again on the timer (a restart after 08:00 neither repeats it nor, if the daemon was down at
//! 08:00, misses it: the latest due briefing is made at start).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use base64::Engine;
use chrono::NaiveDate;
use md5::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{draw, gather, Font, ReportData, ReportError, Robot};
use crate::alerts::notify::{dingtalk_url, robot_answer, Receiver, ReceiverKind};
use crate::backoff::Backoff;
use crate::config::BriefingDay;
use crate::metrics::Metrics;
use crate::standards::time::{self, DAY_MS, MINUTE_MS};

/// Push attempts per robot (1 + 2 + 4 s of backoff between them).
const PUSH_ATTEMPTS: u32 = 4;
/// WeCom robots take pictures up to 2 MB (before base64).
const WECOM_IMAGE_MAX: usize = 2 * 1024 * 1024;

/// What was made for a day, and what each robot answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: NaiveDate,
    /// RFC 3339, +08:00.
    pub made_at: String,
    /// The picture's file name, if a picture was drawn (no CJK font: none).
    pub png: Option<String>,
    /// Why there is no picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png_error: Option<String>,
    /// Robot name → "sent" or the reason it failed.
    pub pushed: std::collections::BTreeMap<String, String>,
}

/// The briefing job and its directory.
pub struct Briefings {
    dir: PathBuf,
    daily_at_minutes: Option<u32>,
    day: BriefingDay,
    robots: Vec<Receiver>,
    /// `alerts.external_url`: where robots fetch the picture.
    external_url: String,
    font: Result<Font, String>,
    /// The daemon's API, answering in-process with read access.
    api: Router,
    metrics: Metrics,
    http: reqwest::Client,
    /// One briefing at a time (timer and API).
    making: tokio::sync::Mutex<()>,
}

/// The most recent run time at or before `now_ms` for a daily time of `minutes` after midnight CST.
pub fn last_due(now_ms: i64, minutes: u32) -> i64 {
    let today = time::day_start_ms(time::cst_date(now_ms)) + i64::from(minutes) * MINUTE_MS;
    if today <= now_ms {
        today
    } else {
        today - DAY_MS
    }
}

/// The day a run at `due_ms` covers.
pub fn day_for(due_ms: i64, which: BriefingDay) -> NaiveDate {
    let d = time::cst_date(due_ms);
    match which {
        BriefingDay::Current => d,
        BriefingDay::Previous => d.pred_opt().unwrap_or(d),
    }
}

/// A name a briefing picture may have: `YYYY-MM-DD-<16 hex>.png`.
pub fn is_png_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".png") else {
        return false;
    };
    let Some((day, nonce)) = stem.rsplit_once('-') else {
        return false;
    };
    NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok()
        && nonce.len() == 16
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Briefings {
    pub fn new(
        dir: PathBuf,
        cfg: &crate::config::ReportConfig,
        robots: Vec<Receiver>,
        external_url: String,
        api: Router,
        metrics: Metrics,
    ) -> Result<Briefings, ReportError> {
        std::fs::create_dir_all(&dir).map_err(|source| ReportError::Write {
            path: dir.clone(),
            source,
        })?;
        let robots = robots
            .into_iter()
            .filter(|r| {
                matches!(
                    r.kind,
                    ReceiverKind::DingTalk { .. } | ReceiverKind::WeCom { .. }
                )
            })
            .filter(|r| {
                cfg.receivers
                    .as_ref()
                    .is_none_or(|names| names.contains(&r.name))
            })
            .collect::<Vec<_>>();
        for r in &robots {
            for result in ["sent", "failed"] {
                metrics
                    .briefing_pushes
                    .with_label_values(&[&r.name, result]);
            }
        }
        for result in ["made", "failed", "already_made"] {
            metrics.briefings.with_label_values(&[result]);
        }
        let font = draw::load_font(cfg.font.as_deref()).map_err(|e| e.to_string());
        if let Err(e) = &font {
            tracing::warn!(error = %e, "the daily briefing will have no picture");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| ReportError::Fetch {
                path: "robots".into(),
                message: e.to_string(),
            })?;
        Ok(Briefings {
            dir,
            daily_at_minutes: cfg.daily_at_minutes().and_then(Result::ok),
            day: cfg.day,
            robots,
            external_url: external_url.trim_end_matches('/').to_string(),
            font,
            api,
            metrics,
            http,
            making: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn manifest_path(&self, day: NaiveDate) -> PathBuf {
        self.dir.join(format!("{day}.json"))
    }

    /// The manifest of `day`, if it was made.
    pub fn manifest(&self, day: NaiveDate) -> Option<Manifest> {
        let bytes = std::fs::read(self.manifest_path(day)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every briefing made, newest first.
    pub fn list(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let day =
                    NaiveDate::parse_from_str(name.strip_suffix(".json")?, "%Y-%m-%d").ok()?;
                self.manifest(day)
            })
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.day));
        out
    }

    /// A picture's bytes by its name (see [`is_png_name`]).
    pub fn png(&self, name: &str) -> Option<Vec<u8>> {
        if !is_png_name(name) {
            return None;
        }
        std::fs::read(self.dir.join(name)).ok()
    }

    /// Ask the daemon's own API (read access, in-process).
    async fn get(api: Router, path: String) -> Result<Value, String> {
        use tower::ServiceExt;
        let req = axum::http::Request::get(&path)
            .body(axum::body::Body::empty())
            .map_err(|e| e.to_string())?;
        let resp = api.oneshot(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// Make the briefing of `day` now: gather, write the files, push if asked; the manifest last.
    pub async fn make(&self, day: NaiveDate, push: bool) -> Result<Manifest, ReportError> {
        let _one = self.making.lock().await;
        let result = self.make_locked(day, push).await;
        let outcome = if result.is_ok() { "made" } else { "failed" };
        self.metrics.briefings.with_label_values(&[outcome]).inc();
        match &result {
            Ok(m) => tracing::info!(%day, png = ?m.png, pushed = ?m.pushed, "daily briefing made"),
            Err(e) => tracing::warn!(%day, error = %e, "daily briefing failed"),
        }
        result
    }

    async fn make_locked(&self, day: NaiveDate, push: bool) -> Result<Manifest, ReportError> {
        let api = self.api.clone();
        let data = gather(day, move |p| Self::get(api.clone(), p)).await?;
        let write = |name: String, bytes: &[u8]| {
            let path = self.dir.join(&name);
            write_atomic(&path, bytes).map_err(|source| ReportError::Write { path, source })
        };
        write(format!("{day}.txt"), data.briefing().as_bytes())?;
        let (png, png_bytes, png_error) = match &self.font {
            Ok(font) => {
                // Drawing is a second of CPU: off the runtime's threads.
                let (d, f) = (data.clone(), font.clone());
                let bytes = tokio::task::spawn_blocking(move || draw::render_png_bytes(&d, &f))
                    .await
                    .map_err(|e| ReportError::Draw {
                        path: self.dir.clone(),
                        message: e.to_string(),
                    })??;
                let name = format!("{day}-{:016x}.png", rand::random::<u64>());
                write(name.clone(), &bytes)?;
                (Some(name), Some(bytes), None)
            }
            Err(e) => (None, None, Some(e.clone())),
        };
        let image_url = png
            .as_ref()
            .map(|n| format!("{}/briefings/{n}", self.external_url));
        write(
            format!("{day}.md"),
            data.markdown(Robot::DingTalk, image_url.as_deref())
                .as_bytes(),
        )?;
        let mut pushed = std::collections::BTreeMap::new();
        if push {
            for r in &self.robots {
                let outcome = self
                    .push(r, &data, image_url.as_deref(), png_bytes.as_deref())
                    .await;
                let result = if outcome.is_ok() { "sent" } else { "failed" };
                self.metrics
                    .briefing_pushes
                    .with_label_values(&[&r.name, result])
                    .inc();
                if let Err(e) = &outcome {
                    tracing::warn!(receiver = %r.name, %day, error = %e, "daily briefing not delivered");
                }
                pushed.insert(
                    r.name.clone(),
                    outcome.err().unwrap_or_else(|| "sent".into()),
                );
            }
        }
        let manifest = Manifest {
            day,
            made_at: time::cst_rfc3339(chrono::Utc::now().timestamp_millis()),
            png,
            png_error,
            pushed,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| ReportError::Fetch {
            path: "manifest".into(),
            message: e.to_string(),
        })?;
        write(format!("{day}.json"), &bytes)?;
        Ok(manifest)
    }

    /// One robot, retried with backoff.
    async fn push(
        &self,
        r: &Receiver,
        data: &ReportData,
        image_url: Option<&str>,
        png: Option<&[u8]>,
    ) -> Result<(), String> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.push_once(r, data, image_url, png).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= PUSH_ATTEMPTS => return Err(e),
                Err(_) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn push_once(
        &self,
        r: &Receiver,
        data: &ReportData,
        image_url: Option<&str>,
        png: Option<&[u8]>,
    ) -> Result<(), String> {
        let title = format!("涧西区环境日报 {} / Jianxi daily briefing", data.day);
        let post = |url: String, body: Value| async move {
            let resp = self
                .http
                .post(url)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            robot_answer(resp).await
        };
        match &r.kind {
            ReceiverKind::DingTalk { url, secret } => {
                let text = data.markdown(Robot::DingTalk, image_url);
                post(
                    dingtalk_url(url, secret.as_ref()),
                    json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}}),
                )
                .await
            }
            ReceiverKind::WeCom { url } => {
                // The picture itself (WeCom takes it inline), then the markdown.
                if let Some(png) = png.filter(|p| p.len() <= WECOM_IMAGE_MAX) {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
                    let md5 = hex::encode(md5::Md5::digest(png));
                    post(
                        url.clone(),
                        json!({"msgtype": "image", "image": {"base64": b64, "md5": md5}}),
                    )
                    .await?;
                }
                let text = data.markdown(Robot::WeCom, None);
                post(
                    url.clone(),
                    json!({"msgtype": "markdown", "markdown": {"content": text}}),
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// The timer: make the latest due briefing if it was not made, then wait for the next.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(minutes) = self.daily_at_minutes else {
            return;
        };
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let due = last_due(now, minutes);
            let day = day_for(due, self.day);
            if self.manifest(day).is_none() {
                // A failure is logged and counted; the next run is tomorrow's (or a restart's).
                let _ = self.make(day, true).await;
            } else {
                // Made before a restart: never twice.
                self.metrics
                    .briefings
                    .with_label_values(&["already_made"])
                    .inc();
            }
            let next = due + DAY_MS;
            let wait = Duration::from_millis(
                u64::try_from(next - chrono::Utc::now().timestamp_millis()).unwrap_or(0),
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Write through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn due_times_are_beijing_time() {
        // 08:00 CST = 00:00 UTC. At 07:59 CST the last run was yesterday's 08:00.
        let at = 8 * 60;
        assert_eq!(
            last_due(ms("2026-12-02T07:59:00+08:00"), at),
            ms("2026-12-01T08:00:00+08:00")
        );
        assert_eq!(
            last_due(ms("2026-12-02T08:00:00+08:00"), at),
            ms("2026-12-02T08:00:00+08:00")
        );
        // 23:30 UTC on 1 Dec is 07:30 CST on 2 Dec: still before the run.
        assert_eq!(
            last_due(ms("2026-12-01T23:30:00Z"), at),
            ms("2026-12-01T08:00:00+08:00")
        );
        let due = ms("2026-12-02T08:00:00+08:00");
        assert_eq!(
            day_for(due, BriefingDay::Previous),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            day_for(due, BriefingDay::Current),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
    }

    #[test]
    fn only_briefing_pictures_are_served() {
        assert!(is_png_name("2026-12-01-0123456789abcdef.png"));
        assert!(!is_png_name("2026-12-01.json"));
        assert!(!is_png_name("../secrets/hj212-keys.json"));
        assert!(!is_png_name("2026-12-01-0123456789abcdeg.png"));
        assert!(!is_png_name("2026-12-01-0123.png"));
        assert!(!is_png_name("x-0123456789abcdef.png"));
    }
}
