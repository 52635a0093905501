//! Bearer tokens with roles. Tokens are stored as SHA-256 hashes and compared by hash; a token
//! never reaches a log. No token where one is needed is 401; a token whose role is too low is 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use super::{ApiError, AppState};
use crate::config::ApiConfig;

pub use crate::config::Role;

/// Who made a request (inserted into the request's extensions).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: Option<Role>,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    anonymous_read: bool,
    entries: Arc<Vec<(String, Role, String)>>,
}

/// Lowercase hex SHA-256 of a token (what the configuration stores).
pub fn hash_token(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

impl Tokens {
    pub fn from_config(cfg: &ApiConfig) -> Tokens {
        let entries = cfg
            .tokens
            .iter()
            .map(|t| (t.name.clone(), t.role, t.sha256.clone()))
            .collect();
        Tokens {
            anonymous_read: cfg.anonymous_read,
            entries: Arc::new(entries),
        }
    }

    /// Anyone may read, nobody may write: what tests and embedders get by default.
    pub fn open_read() -> Tokens {
        Tokens {
            anonymous_read: true,
            entries: Arc::new(Vec::new()),
        }
    }

    fn check(&self, authorization: Option<&str>, needed: Role) -> Result<Actor, ApiError> {
        let token = authorization.and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let Some(token) = token else {
            if needed == Role::Viewer && self.anonymous_read {
                return Ok(Actor {
                    name: "anonymous".into(),
                    role: None,
                });
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer …)",
            ));
        };
        let h = hash_token(token);
        let Some((name, role, _)) = self.entries.iter().find(|(_, _, hash)| *hash == h) else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"));
        };
        if *role < needed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{name} is a {}; this needs the {} role",
                    role.as_str(),
                    needed.as_str()
                ),
            ));
        }
        Ok(Actor {
            name: name.clone(),
            role: Some(*role),
        })
    }
}

async fn require(needed: Role, s: AppState, mut req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    match s.tokens.check(auth.as_deref(), needed) {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

pub async fn viewer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require(Role::Viewer, s, req, next).await
}

pub async fn technician(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require(Role::Technician, s, req, next).await
}

pub async fn operator(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require(Role::Operator, s, req, next).await
}

pub async fn admin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require(Role::Admin, s, req, next).await
}
