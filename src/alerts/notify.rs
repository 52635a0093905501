//! Delivering alerts: Prometheus Alertmanager (v2 API), a generic JSON webhook signed with
//! HMAC-SHA256, and DingTalk / WeCom group robots.
//!
//! Each receiver has its own task and bounded queue, so a receiver that is down is retried with
//! backoff without delaying the others, and never blocks evaluation or ingest (a full queue drops
//! the oldest notification and counts it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::rules::{Alert, Phase};
use crate::backoff::Backoff;
use crate::config::Secret;
use crate::metrics::Metrics;

/// Notifications waiting per receiver at most.
const QUEUE: usize = 1000;
/// Attempts per notification (about 10 minutes with the backoff below).
const ATTEMPTS: u32 = 12;

/// What a receiver speaks.
#[derive(Debug, Clone)]
pub enum ReceiverKind {
    Alertmanager { url: String },
    Webhook { url: String, secret: Option<Secret> },
    DingTalk { url: String, secret: Option<Secret> },
    WeCom { url: String },
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
}

/// A notification: the alert as it is, and why it is sent.
#[derive(Debug, Clone)]
pub struct Notification {
    pub alert: Alert,
    /// "firing", "repeat", "resolved", or "refresh" (Alertmanager keep-alive).
    pub reason: &'static str,
    pub generator_url: String,
    /// endsAt for a firing alert sent to Alertmanager.
    pub ends_at_ms: i64,
}

/// A receiver's queue.
#[derive(Debug, Clone)]
pub struct Queue {
    items: Arc<Mutex<VecDeque<Notification>>>,
    wake: Arc<Notify>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            items: Arc::new(Mutex::new(VecDeque::new())),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Never blocks: a full queue drops its oldest entry (returns true then).
    pub fn push(&self, n: Notification) -> bool {
        let mut q = crate::sync::lock(&self.items);
        let dropped = q.len() >= QUEUE;
        if dropped {
            q.pop_front();
        }
        q.push_back(n);
        drop(q);
        self.wake.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Notification> {
        crate::sync::lock(&self.items).pop_front()
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Alertmanager's v2 alert object.
pub fn alertmanager_body(n: &Notification) -> Value {
    let a = &n.alert;
    let mut labels = a.labels.clone();
    labels.insert("alertname".into(), a.rule.clone());
    labels.insert("severity".into(), a.severity.as_str().into());
    let ends = match a.phase {
        Phase::Resolved => a.resolved_at_ms.unwrap_or(n.ends_at_ms),
        _ => n.ends_at_ms,
    };
    json!([{
        "labels": labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.fired_at_ms.unwrap_or(a.active_since_ms)),
        "endsAt": rfc3339(ends),
        "generatorURL": n.generator_url,
    }])
}

/// The generic webhook's JSON.
pub fn webhook_body(n: &Notification) -> Value {
    let a = &n.alert;
    json!({
        "version": "1",
        "status": if a.phase == Phase::Resolved { "resolved" } else { "firing" },
        "reason": n.reason,
        "alert": {
            "fingerprint": a.fingerprint, "rule": a.rule, "severity": a.severity, "labels": a.labels,
            "annotations": a.annotations, "value": a.value,
            "startsAt": a.fired_at_ms.map(rfc3339), "endsAt": a.resolved_at_ms.map(rfc3339),
        },
        "generatorURL": n.generator_url,
    })
}

/// `X-Enviromon-Signature: sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Text for people (group robots): what happened, where, when and by how much, and what to do,
/// Chinese first, English beside; then the labels and the link.
fn text(n: &Notification) -> (String, String) {
    let a = &n.alert;
    let status = match (a.phase, n.reason) {
        (Phase::Resolved, _) => "已恢复 / RESOLVED",
        (_, "test") => "测试 / TEST",
        _ => "告警 / FIRING",
    };
    let get = |k: &str| a.annotations.get(k).cloned().unwrap_or_default();
    let title = format!("[{status}] {}", get("summary_zh"));
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body = format!(
        "### [{status}] {} ({})\n\n{}\n\n{}\n\n{}",
        a.rule,
        a.severity.as_str(),
        get("description").replace('\n', "\n\n"),
        labels.join(", "),
        n.generator_url
    );
    (title, body)
}

pub(crate) fn dingtalk_url(url: &str, secret: Option<&Secret>) -> String {
    let Some(secret) = secret else {
        return url.to_string();
    };
    // DingTalk robot signing: base64(HMAC-SHA256(secret, "{timestamp}\n{secret}")), URL-encoded.
    let ts = chrono::Utc::now().timestamp_millis();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return url.to_string();
    };
    mac.update(format!("{ts}\n{}", secret.expose()).as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sign: String = url::form_urlencoded::byte_serialize(sign.as_bytes()).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timestamp={ts}&sign={sign}")
}

pub(crate) async fn send(
    http: &reqwest::Client,
    r: &Receiver,
    n: &Notification,
) -> Result<(), String> {
    let req = match &r.kind {
        ReceiverKind::Alertmanager { url } => http
            .post(format!("{}/api/v2/alerts", url.trim_end_matches('/')))
            .json(&alertmanager_body(n)),
        ReceiverKind::Webhook { url, secret } => {
            let body = serde_json::to_vec(&webhook_body(n)).map_err(|e| e.to_string())?;
            let mut req = http.post(url).header("Content-Type", "application/json");
            if let Some(s) = secret {
                req = req.header("X-Enviromon-Signature", signature(s.expose(), &body));
            }
            req.body(body)
        }
        ReceiverKind::DingTalk { url, secret } => {
            let (title, body) = text(n);
            http.post(dingtalk_url(url, secret.as_ref()))
                .json(&json!({"msgtype": "markdown", "markdown": {"title": title, "text": body}}))
        }
        ReceiverKind::WeCom { url } => {
            let (_, body) = text(n);
            http.post(url)
                .json(&json!({"msgtype": "markdown", "markdown": {"content": body}}))
        }
    };
    let robot = matches!(
        r.kind,
        ReceiverKind::DingTalk { .. } | ReceiverKind::WeCom { .. }
    );
    let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
    if robot {
        robot_answer(resp).await
    } else if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status().as_u16()))
    }
}

/// A group robot's answer: DingTalk and WeCom say HTTP 200 even when they refuse a message (bad
/// signature, unknown key, too many messages), with `{"errcode": n, "errmsg": …}`; only
/// `errcode` 0 (or an answer without one) is delivered.
pub(crate) async fn robot_answer(resp: reqwest::Response) -> Result<(), String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match body["errcode"].as_i64() {
        None | Some(0) => Ok(()),
        Some(code) => Err(format!(
            "robot refused the message: errcode {code} ({})",
            body["errmsg"].as_str().unwrap_or("")
        )),
    }
}

/// Start a receiver's task; returns its queue.
pub fn spawn(r: Receiver, metrics: Metrics, stop: CancellationToken) -> Queue {
    let q = Queue::new();
    let queue = q.clone();
    tokio::spawn(async move {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(receiver = %r.name, error = %e, "cannot build HTTP client for alerts");
                return;
            }
        };
        for result in ["sent", "failed", "retried", "dropped"] {
            metrics
                .alert_notifications
                .with_label_values(&[&r.name, result]);
        }
        loop {
            let Some(n) = queue.pop() else {
                tokio::select! {
                    _ = queue.wake.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            };
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(120));
            let mut attempt = 0;
            loop {
                attempt += 1;
                match send(&http, &r, &n).await {
                    Ok(()) => {
                        metrics
                            .alert_notifications
                            .with_label_values(&[&r.name, "sent"])
                            .inc();
                        break;
                    }
                    Err(e) if attempt < ATTEMPTS => {
                        metrics
                            .alert_notifications
                            .with_label_values(&[&r.name, "retried"])
                            .inc();
                        tracing::warn!(receiver = %r.name, error = %e, attempt, "alert notification failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        metrics
                            .alert_notifications
                            .with_label_values(&[&r.name, "failed"])
                            .inc();
                        tracing::error!(receiver = %r.name, error = %e, rule = %n.alert.rule, "alert notification given up");
                        break;
                    }
                }
            }
        }
    });
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
