//! Who may call the server API: a configured API key, or what the node's [`AdminAccess`]
//! takes besides (the app's check, or a JWT whose role is admin).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::error::ApiError;
use crate::node::{AdminAccess, Herald};

/// Proof that the caller is an administrator; extracting it answers 401 or 403 otherwise.
#[derive(Debug)]
pub struct Admin;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<Herald> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Herald) -> Result<Self, ApiError> {
        let peer = || {
            let addr = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0);
            let config = node.config();
            crate::metrics::Peer(super::forwarded::client(
                &config.trusted_proxies,
                config.forwarded_header,
                addr,
                &parts.headers,
            ))
        };
        let refused = |why: &str| {
            crate::metrics::refused(
                "api_credentials",
                peer(),
                &format!("{why}: {}", parts.uri.path()),
            );
        };
        let token = bearer(&parts.headers);
        // Every key is compared (no early exit), so the time says nothing of which matched.
        let matched = token.is_some_and(|token| {
            node.api_keys().iter().fold(false, |found, key| {
                constant_time_eq(token.as_bytes(), key.as_bytes()) | found
            })
        });
        if matched {
            return Ok(Admin);
        }
        let missing = || {
            refused("missing");
            crate::metrics::auth_failure("missing");
            ApiError::unauthorized("missing Authorization: Bearer credentials")
        };
        match node.admin_check() {
            AdminAccess::App(check) if check.is_admin(&parts.headers).await => Ok(Admin),
            AdminAccess::App(_) => {
                refused("not_admin");
                crate::metrics::auth_failure("not_admin");
                Err(ApiError::forbidden(
                    "the app's admin check refused these credentials",
                ))
            }
            AdminAccess::ApiKeysOnly if token.is_none() => Err(missing()),
            AdminAccess::ApiKeysOnly => {
                refused("invalid");
                crate::metrics::auth_failure("invalid");
                Err(ApiError::unauthorized("the server API takes an API key"))
            }
            AdminAccess::AdminJwt => match node.authenticate(token.ok_or_else(missing)?).await {
                Ok(principal) if principal.is_admin() => Ok(Admin),
                Ok(_) => {
                    refused("not_admin");
                    crate::metrics::auth_failure("not_admin");
                    Err(ApiError::forbidden(
                        "the server API needs an admin or superadmin role",
                    ))
                }
                Err(e) => {
                    refused(e.reason());
                    crate::metrics::auth_failure(e.reason());
                    Err(ApiError::unauthorized(format!("bad credentials: {e}")))
                }
            },
        }
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
