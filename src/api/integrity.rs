//! Data-integrity findings over HTTP (`GET /api/v1/integrity/findings`): what the rules of
//! `crate::integrity` found, per unit, with the evidence and a bilingual explanation.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::standards::{blocking, bounds, engine};
use super::{ApiError, AppState};
use crate::integrity::persist::StoredFinding;
use crate::integrity::RULES;
use crate::standards::time::{cst_rfc3339, DAY_MS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingParams {
    unit: Option<String>,
    /// Findings that overlap `[from, to)`: RFC 3339, epoch ms or a date. Default: the last 30
    /// days.
    from: Option<String>,
    to: Option<String>,
    /// One rule id.
    rule: Option<String>,
}

/// One finding as served: times in RFC 3339 (China Standard Time).
#[derive(Debug, Serialize)]
pub struct FindingView {
    pub unit: String,
    pub rule: String,
    pub channel: String,
    pub start: String,
    pub end: String,
    pub severity: crate::integrity::Severity,
    pub ongoing: bool,
    pub first_seen: String,
    pub evidence: serde_json::Value,
    pub summary_zh: String,
    pub summary_en: String,
}

impl From<StoredFinding> for FindingView {
    fn from(f: StoredFinding) -> Self {
        FindingView {
            start: cst_rfc3339(f.start_ms),
            end: cst_rfc3339(f.end_ms),
            first_seen: cst_rfc3339(f.first_seen_ms),
            unit: f.unit,
            rule: f.rule,
            channel: f.channel,
            severity: f.severity,
            ongoing: f.ongoing,
            evidence: f.evidence,
            summary_zh: f.summary_zh,
            summary_en: f.summary_en,
        }
    }
}

pub async fn findings(
    State(s): State<AppState>,
    q: Result<Query<FindingParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(u) = &p.unit {
        if !s.registry.snapshot().units.contains_key(u) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unit: {u:?} is not a registered unit (GET /api/v1/units)"),
            ));
        }
    }
    if let Some(r) = &p.rule {
        if !RULES.contains(&r.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("rule: {r:?} is not one of {}", RULES.join(", ")),
            ));
        }
    }
    let engine = engine(&s)?.clone();
    let (from, to) = bounds(p.from.as_deref(), p.to.as_deref(), 30 * DAY_MS)?;
    let (unit, rule) = (p.unit, p.rule);
    let found = blocking("integrity findings", move || {
        engine.integrity_findings(unit.as_deref(), from, to)
    })
    .await?;
    let findings: Vec<FindingView> = found
        .into_iter()
        .filter(|f| rule.as_ref().is_none_or(|r| *r == f.rule))
        .map(FindingView::from)
        .collect();
    Ok(Json(serde_json::json!({ "findings": findings })).into_response())
}
