//! `enviromon sensors …` and `enviromon sites …`: the field technician's client of the
//! registration API.
//!
//! Human-readable output by default, `--json` for scripts. The token comes from `ENVIROMON_TOKEN` or
//! `--token-file`; it is sent as a bearer token and never printed.

use std::path::PathBuf;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("cannot reach the daemon at {server}: {message}")]
    Http { server: String, message: String },
    /// The daemon said no; the message is already formatted for people.
    #[error("{0}")]
    Refused(String),
}

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct Client {
    pub server: String,
    pub token: Option<String>,
    pub json: bool,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.trim_end_matches('/'), path)
    }

    /// GET a JSON document from the API (the report uses this).
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A request to the API, with the token when there is one.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, CliError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .map_err(|e| CliError::Http {
                server: self.server.clone(),
                message: e.to_string(),
            })?;
        let req = http.request(method, self.url(path));
        Ok(match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        })
    }

    /// GET a file from the API (report tables), its bytes as they are.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let req = self.request(reqwest::Method::GET, path)?;
        let resp = req.send().await.map_err(|e| CliError::Http {
            server: self.server.clone(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CliError::Http {
            server: self.server.clone(),
            message: e.without_url().to_string(),
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(CliError::Refused(format!(
            "{} {}",
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("")
        )))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.request(method, path)?;
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| CliError::Http {
            server: self.server.clone(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let mut msg = format!(
            "{} {}",
            status.as_u16(),
            v["error"]["message"]
                .as_str()
                .unwrap_or(status.canonical_reason().unwrap_or(""))
        );
        for e in v["error"]["errors"].as_array().into_iter().flatten() {
            match (e["path"].as_str(), e["message"].as_str(), e.as_str()) {
                (Some(p), Some(m), _) if !p.is_empty() => msg.push_str(&format!("\n  - {p}: {m}")),
                (_, Some(m), _) => msg.push_str(&format!("\n  - {m}")),
                (_, _, Some(m)) => msg.push_str(&format!("\n  - {m}")),
                _ => {}
            }
        }
        Err(CliError::Refused(msg))
    }

    fn print(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human(v));
        }
    }

    /// Set (`Some`) or remove (`None`) the SM4 key of a sensor's HJ 212-2025 logger. The key is sent
    /// once over the API and is never printed; the answer names it by fingerprint.
    pub async fn set_key(&self, id: &str, key_hex: Option<String>) -> Result<(), CliError> {
        let path = format!("/api/v1/sensors/{id}/hj212-key");
        let v = match key_hex {
            Some(k) => {
                self.call(
                    reqwest::Method::PUT,
                    &path,
                    Some(serde_json::json!({ "key": k })),
                )
                .await?
            }
            None => self.call(reqwest::Method::DELETE, &path, None).await?,
        };
        self.print(&v, |v| match v["after"].as_str() {
            Some(fp) => format!(
                "已设置 SM4 密钥 / SM4 key set for {id} (MN {}): fingerprint {fp}{}",
                v["mn"].as_str().unwrap_or(""),
                v["before"]
                    .as_str()
                    .map(|b| format!("; previous key {b} still accepted during the overlap"))
                    .unwrap_or_default()
            ),
            None => format!("已删除 SM4 密钥 / SM4 key removed for {id}"),
        });
        Ok(())
    }

    /// The SM4 key status of a sensor's logger (fingerprints only).
    pub async fn key_status(&self, id: &str) -> Result<(), CliError> {
        let v = self.get(&format!("/api/v1/sensors/{id}/hj212-key")).await?;
        self.print(&v, |v| {
            if v["fingerprint"].is_null() {
                format!("{id}: 未设置 SM4 密钥 / no SM4 key")
            } else {
                format!(
                    "{id}: SM4 key {} set {} by {}{}",
                    v["fingerprint"].as_str().unwrap_or(""),
                    v["set_at"].as_str().unwrap_or(""),
                    v["set_by"].as_str().unwrap_or(""),
                    v["previous_fingerprint"]
                        .as_str()
                        .map(|p| format!(
                            "; previous {p} accepted until {}",
                            v["previous_valid_until"].as_str().unwrap_or("")
                        ))
                        .unwrap_or_default()
                )
            }
        });
        Ok(())
    }

    /// Register the sensor described in a TOML file (the fields of a `[[sensor]]` seed entry).
    pub async fn add(&self, file: &PathBuf) -> Result<(), CliError> {
        // A bare table or a one-entry [[sensor]] array.
        let body = toml_body(file, "sensor")?;
        let v = self
            .call(reqwest::Method::POST, "/api/v1/sensors", Some(body))
            .await?;
        self.print(&v, |v| {
            format!(
                "已登记 / registered: {} ({}), topic {}",
                v["id"].as_str().unwrap_or(""),
                v["protocol"].as_str().unwrap_or(""),
                v["topic"].as_str().unwrap_or("—")
            )
        });
        Ok(())
    }

    pub async fn list(&self) -> Result<(), CliError> {
        let v = self
            .call(reqwest::Method::GET, "/api/v1/sensors", None)
            .await?;
        self.print(&v, |v| {
            let mut out = format!(
                "{:<24} {:<22} {:<8} {:<12} {}\n",
                "ID", "站点/SITE", "协议/PROTO", "状态/STATUS", "测量/QUANTITIES"
            );
            for s in v["sensors"].as_array().into_iter().flatten() {
                let qs: Vec<&str> = s["channels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["quantity"].as_str())
                    .collect();
                out.push_str(&format!(
                    "{:<24} {:<22} {:<8} {:<12} {}\n",
                    s["id"].as_str().unwrap_or(""),
                    s["site"].as_str().unwrap_or(""),
                    s["protocol"].as_str().unwrap_or(""),
                    s["status"].as_str().unwrap_or(""),
                    qs.join(",")
                ));
            }
            out.trim_end().to_string()
        });
        Ok(())
    }

    pub async fn show(&self, id: &str) -> Result<(), CliError> {
        let v = self
            .call(reqwest::Method::GET, &format!("/api/v1/sensors/{id}"), None)
            .await?;
        self.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
        Ok(())
    }

    pub async fn test(&self, id: &str, seconds: u64) -> Result<(), CliError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/sensors/{id}/test?seconds={seconds}"),
                None,
            )
            .await?;
        self.print(&v, |v| probe_text("测试 / test", v));
        Ok(())
    }

    pub async fn maintenance(
        &self,
        id: &str,
        on: bool,
        reason: Option<String>,
    ) -> Result<(), CliError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/sensors/{id}/maintenance"),
                Some(serde_json::json!({"on": on, "reason": reason})),
            )
            .await?;
        self.print(&v, |v| {
            format!("{id}: 状态 / status {}", v["status"].as_str().unwrap_or(""))
        });
        Ok(())
    }

    pub async fn retire(&self, id: &str, reason: Option<String>) -> Result<(), CliError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/sensors/{id}/retire"),
                Some(serde_json::json!({"reason": reason})),
            )
            .await?;
        self.print(&v, |_| format!("{id}: 已停用 / retired (history kept)"));
        Ok(())
    }
}

/// A JSON merge patch (RFC 7396) from `--set path=value` arguments (a dotted path makes nested
/// objects; the value is JSON when it parses as JSON, else a string) or from `--patch JSON`.
pub fn merge_patch_of(set: &[String], patch: Option<&str>) -> Result<Value, CliError> {
    if let Some(p) = patch {
        return serde_json::from_str(p)
            .map_err(|e| CliError::Refused(format!("--patch is not JSON: {e}")));
    }
    if set.is_empty() {
        return Err(CliError::Refused(
            "say what to change: --set path=value (e.g. --set modbus.address=10.20.0.15:502) or --patch '{…}'"
                .into(),
        ));
    }
    let mut out = Value::Object(Default::default());
    for a in set {
        let Some((path, raw)) = a.split_once('=') else {
            return Err(CliError::Refused(format!("--set {a:?}: write path=value")));
        };
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::from(raw));
        let mut at = &mut out;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(CliError::Refused(format!(
                    "--set {a:?}: empty path segment"
                )));
            }
            let Value::Object(m) = at else {
                return Err(CliError::Refused(format!(
                    "--set {a:?}: {part} is inside a value set by another --set"
                )));
            };
            if i + 1 == parts.len() {
                m.insert(part.to_string(), value.clone());
                break;
            }
            at = m
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(out)
}

/// A TOML file as the JSON body of a registration: a bare table or the first entry of `[[key]]`.
fn toml_body(file: &PathBuf, key: &str) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.clone(),
        source,
    })?;
    let t: toml::Value = toml::from_str(&text).map_err(|e| CliError::Toml {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let t = match t
        .get(key)
        .and_then(|s| s.as_array())
        .and_then(|a| a.first())
    {
        Some(s) => s.clone(),
        None => t,
    };
    serde_json::to_value(t).map_err(|e| CliError::Toml {
        path: file.clone(),
        message: e.to_string(),
    })
}

impl Client {
    /// PATCH a sensor or a site with a merge patch; prints what is stored now.
    pub async fn edit(&self, path: &str, id: &str, patch: Value) -> Result<(), CliError> {
        let v = self.call(reqwest::Method::PATCH, path, Some(patch)).await?;
        self.print(&v, |v| {
            format!(
                "已修改 / changed {id}:\n{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            )
        });
        Ok(())
    }

    /// Dry run of the sensor in a TOML file: nothing is registered.
    pub async fn dry_run(&self, file: &PathBuf, seconds: u64) -> Result<(), CliError> {
        let body = toml_body(file, "sensor")?;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/sensors/dry-run?seconds={seconds}"),
                Some(body),
            )
            .await?;
        self.print(&v, |v| probe_text("试运行 / dry run", v));
        Ok(())
    }

    pub async fn restore(&self, id: &str) -> Result<(), CliError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/sensors/{id}/restore"),
                None,
            )
            .await?;
        self.print(&v, |_| format!("{id}: 已恢复 / restored (active)"));
        Ok(())
    }

    /// The recent refusals, newest first.
    pub async fn refusals(&self, sensor: Option<&str>, limit: usize) -> Result<(), CliError> {
        let mut path = format!("/api/v1/deadletter?limit={limit}");
        if let Some(s) = sensor {
            path.push_str(&format!("&sensor={s}"));
        }
        let v = self.get(&path).await?;
        self.print(&v, |v| {
            let mut out = String::new();
            for r in v["records"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{} {} {} [{}] {}\n    {}\n",
                    r["time"].as_str().unwrap_or(""),
                    r["source"].as_str().unwrap_or(""),
                    r["topic"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or(""),
                    r["detail"].as_str().unwrap_or(""),
                    r["payload"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
            if out.is_empty() {
                "没有拒收记录 / no refusals".into()
            } else {
                out.trim_end().to_string()
            }
        });
        Ok(())
    }

    pub async fn sites(&self) -> Result<(), CliError> {
        let v = self.get("/api/v1/sites").await?;
        self.print(&v, |v| {
            let mut out = format!("{:<24} {:<16} {}\n", "ID", "类型/KIND", "名称/NAME");
            for s in v["sites"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<24} {:<16} {} / {}\n",
                    s["id"].as_str().unwrap_or(""),
                    s["kind"].as_str().unwrap_or(""),
                    s["name_zh"].as_str().unwrap_or(""),
                    s["name_en"].as_str().unwrap_or("")
                ));
            }
            out.trim_end().to_string()
        });
        Ok(())
    }

    /// Add the site described in a TOML file (the fields of a `[[site]]` seed entry).
    pub async fn add_site(&self, file: &PathBuf) -> Result<(), CliError> {
        let body = toml_body(file, "site")?;
        let v = self
            .call(reqwest::Method::POST, "/api/v1/sites", Some(body))
            .await?;
        self.print(&v, |v| {
            format!(
                "已新增站点 / site added: {} ({})",
                v["id"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or("")
            )
        });
        Ok(())
    }
}

/// A test's or dry run's answer for people: each value with its unit or why it was refused, the
/// exceptions with what to check, the warnings.
fn probe_text(title: &str, v: &Value) -> String {
    let mut out = format!(
        "{title} {}: {}\n",
        v["sensor"].as_str().unwrap_or(""),
        if v["ok"] == true {
            "通过 / OK"
        } else {
            "需检查 / check"
        }
    );
    for r in v["values"].as_array().into_iter().flatten() {
        match r["refused"].as_object() {
            Some(why) => out.push_str(&format!(
                "  ✗ {:<12} {:>14} {}  [{}] {}\n",
                r["quantity"].as_str().unwrap_or(""),
                r["value"],
                r["unit"].as_str().unwrap_or(""),
                why.get("reason").and_then(Value::as_str).unwrap_or(""),
                why.get("detail").and_then(Value::as_str).unwrap_or("")
            )),
            None => out.push_str(&format!(
                "  ✓ {:<12} {:>14} {}\n",
                r["quantity"].as_str().unwrap_or(""),
                r["value"],
                r["unit"].as_str().unwrap_or("")
            )),
        }
    }
    for r in v["refusals"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  ✗ [{}] {}\n",
            r["reason"].as_str().unwrap_or(""),
            r["detail"].as_str().unwrap_or("")
        ));
    }
    for e in v["exceptions"].as_array().into_iter().flatten() {
        let ex = &e["explanation"];
        out.push_str(&format!(
            "  ! {}: {}{}\n",
            e["request"].as_str().unwrap_or(""),
            e["exception"].as_str().unwrap_or(""),
            if ex.is_null() {
                String::new()
            } else {
                format!(
                    " — 0x{:02X} {}: {} / {}",
                    ex["code"].as_u64().unwrap_or(0),
                    ex["name"].as_str().unwrap_or(""),
                    ex["hint_zh"].as_str().unwrap_or(""),
                    ex["hint_en"].as_str().unwrap_or("")
                )
            }
        ));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("  ! {}\n", w.as_str().unwrap_or("")));
    }
    if let Some(f) = v["flag"].as_str() {
        out.push_str(&format!("  flag: {f}\n"));
    }
    out.trim_end().to_string()
}

/// The token: `ENVIROMON_TOKEN`, or the first line of `--token-file`.
pub fn token(file: Option<&PathBuf>) -> Result<Option<String>, CliError> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).map_err(|source| CliError::Read {
            path: f.clone(),
            source,
        })?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(std::env::var("ENVIROMON_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty()))
}
