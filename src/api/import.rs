//! The import API: `POST /api/v1/import` (operator) takes a file as the request body, or as the
//! `file` part of a multipart form with an optional `mapping` part (TOML) before it, and streams
//! it into the importer (`crate::import`); the answer is the import's summary. `GET
//! /api/v1/imports` lists imports (the running one with its progress) and the hours of imported
//! history still waiting for re-evaluation; `GET /api/v1/imports/{id}` is one import;
//! `GET /api/v1/imports/key/{sha256}` says whether a file was imported to the end before.

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::import::{mapping::Mapping, Chunk, Format, ImportError, JobState, Options};

#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// The file's name (format by extension; messages; dead-letter records).
    pub name: Option<String>,
    /// csv, xlsx, hj212, line_protocol (default: by name, then by content).
    pub format: Option<String>,
    /// The file's SHA-256 (hex): resumes an interrupted import, recognises a finished one.
    pub key: Option<String>,
    #[serde(default)]
    pub force: bool,
    /// Line protocol timestamps: s, ms, us, ns (default: by magnitude).
    pub precision: Option<String>,
    /// The registered sensor of the whole file (a table without a sensor column).
    pub sensor: Option<String>,
}

fn bad(message: impl Into<String>) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, message).into_response()
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn options(q: &ImportQuery) -> Result<Options, ApiError> {
    let format = match q.format.as_deref() {
        None | Some("") | Some("auto") => None,
        Some(f) => Some(Format::parse(f).ok_or_else(|| {
            bad_query(format!(
                "format: {f:?} is not csv, xlsx, hj212 or line_protocol"
            ))
        })?),
    };
    let precision = match q.precision.as_deref() {
        None | Some("") => None,
        Some(p) => Some(
            crate::import::lineproto::Precision::parse(p)
                .ok_or_else(|| bad_query(format!("precision: {p:?} is not s, ms, us or ns")))?,
        ),
    };
    if let Some(k) = &q.key {
        if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad_query("key: the file's SHA-256 as 64 hex digits"));
        }
    }
    Ok(Options {
        name: q.name.clone().unwrap_or_else(|| "upload".into()),
        format,
        mapping: None,
        key: q.key.as_ref().map(|k| k.to_ascii_lowercase()),
        force: q.force,
        precision,
    })
}

/// The import begun: its summary when there is nothing to read, or where to send the bytes and
/// the task that reads them.
enum Started {
    Answer(Response),
    /// Nothing to read (imported before): the answer, once the upload is drained, so the
    /// client is not cut off mid-way.
    Drain(Response),
    Reading(
        mpsc::Sender<Chunk>,
        tokio::task::JoinHandle<Option<crate::import::Summary>>,
    ),
}

async fn start(importer: std::sync::Arc<crate::import::Importer>, opts: Options) -> Started {
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    let (begun_tx, begun_rx) = tokio::sync::oneshot::channel();
    let run = importer.begin_and_run(opts, rx, begun_tx);
    let err = |e: String| {
        Started::Answer(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response())
    };
    match begun_rx.await {
        Ok(Ok(None)) => Started::Reading(tx, run),
        Ok(Ok(Some(summary))) => Started::Drain((StatusCode::OK, Json(summary)).into_response()),
        Ok(Err(ImportError::Busy(id))) => Started::Answer(
            ApiError::new(
                StatusCode::CONFLICT,
                format!("import {id} is running; one import at a time"),
            )
            .into_response(),
        ),
        Ok(Err(e)) => err(e.to_string()),
        Err(e) => err(e.to_string()),
    }
}

async fn finish(run: tokio::task::JoinHandle<Option<crate::import::Summary>>) -> Response {
    match run.await {
        Ok(Some(summary)) => {
            let status = match summary.state {
                JobState::Failed => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::OK,
            };
            (status, Json(summary)).into_response()
        }
        Ok(None) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the import did not run")
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /api/v1/import`.
pub async fn import(
    State(s): State<AppState>,
    Query(q): Query<ImportQuery>,
    req: Request,
) -> Response {
    let Some(importer) = s.importer.clone() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "imports need the daemon's pipeline (not available here)",
        )
        .into_response();
    };
    let mut opts = match options(&q) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let with_sensor = |opts: &mut Options| {
        if let Some(sensor) = &q.sensor {
            opts.mapping.get_or_insert_with(Mapping::default).sensor = Some(sensor.clone());
        }
    };
    if !multipart {
        with_sensor(&mut opts);
        let mut body = req.into_body().into_data_stream();
        let (tx, run) = match start(importer, opts).await {
            Started::Answer(r) => return r,
            Started::Drain(r) => {
                while let Some(Ok(_)) = body.next().await {}
                return r;
            }
            Started::Reading(tx, run) => (tx, run),
        };
        // The body's bytes, forwarded as the importer reads them (never held whole).
        loop {
            let chunk = match body.next().await {
                Some(Ok(b)) => Chunk::Data(b),
                Some(Err(e)) => Chunk::Failed(e.to_string()),
                None => Chunk::End,
            };
            let last = !matches!(chunk, Chunk::Data(_));
            if tx.send(chunk).await.is_err() || last {
                break;
            }
        }
        drop(tx);
        return finish(run).await;
    }
    let mut form = match axum::extract::Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return bad(format!("multipart: {e}")),
    };
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return bad("multipart: no part named \"file\""),
            Err(e) => return bad(format!("multipart: {e}")),
        };
        match field.name() {
            Some("mapping") => match field.text().await {
                Ok(t) => match Mapping::from_toml(&t) {
                    Ok(m) => opts.mapping = Some(m),
                    Err(e) => return bad(e),
                },
                Err(e) => return bad(format!("mapping part: {e}")),
            },
            Some("file") => {
                if q.name.is_none() {
                    if let Some(n) = field.file_name() {
                        opts.name = n.to_string();
                    }
                }
                with_sensor(&mut opts);
                let (tx, run) = match start(importer, opts).await {
                    Started::Answer(r) => return r,
                    Started::Drain(r) => {
                        while let Ok(Some(_)) = field.chunk().await {}
                        return r;
                    }
                    Started::Reading(tx, run) => (tx, run),
                };
                loop {
                    let chunk = match field.chunk().await {
                        Ok(Some(b)) => Chunk::Data(b),
                        Ok(None) => Chunk::End,
                        Err(e) => Chunk::Failed(e.to_string()),
                    };
                    let last = !matches!(chunk, Chunk::Data(_));
                    if tx.send(chunk).await.is_err() || last {
                        break;
                    }
                }
                drop(tx);
                return finish(run).await;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
}

/// Run an importer query off the async runtime; a failure is answered 500 with its reason.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImportError> + Send + 'static,
) -> Result<T, ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))
}

/// `GET /api/v1/imports`.
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let Some(importer) = s.importer.clone() else {
        return Ok(Json(json!({"imports": [], "reevaluation": null})).into_response());
    };
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let (jobs, pending) = blocking(move || {
        importer
            .jobs(limit)
            .map(|jobs| (jobs, importer.reevaluation_pending()))
    })
    .await?;
    Ok(Json(json!({
        "imports": jobs,
        "reevaluation": pending.map(|p| json!({"pending_hours": p})),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    pub name: Option<String>,
}

/// `GET /api/v1/imports/key/{sha256}`: `{"already": summary}` when the file with that digest was
/// imported to the end (importing it again does nothing), else `{"already": null}`. The CLI asks
/// before uploading, so a large file is not sent for nothing.
pub async fn by_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Result<Response, ApiError> {
    let Some(importer) = s.importer.clone() else {
        return Ok(Json(json!({"already": null})).into_response());
    };
    let key = key.to_ascii_lowercase();
    let name = q.name.unwrap_or_else(|| "upload".into());
    let already = blocking(move || importer.already(&key, &name)).await?;
    Ok(Json(json!({"already": already})).into_response())
}

/// `GET /api/v1/imports/{id}`.
pub async fn one(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let none = || ApiError::new(StatusCode::NOT_FOUND, "no such import");
    let importer = s.importer.clone().ok_or_else(none)?;
    let job = blocking(move || importer.job(&id))
        .await?
        .ok_or_else(none)?;
    Ok(Json(job).into_response())
}
