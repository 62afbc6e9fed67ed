//! Token to [`Principal`]: who a client is ([`Authenticator`]) and who may call the server
//! API ([`AdminCheck`]). `jwt.rs` is Herald's own authenticator (feature `jwt`): JWT
//! verification (docs/PROTOCOL.md, section 2).
//!
//! Knows nothing of sockets or topics.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Who a connection or an API caller is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// The user id (`sub`), kept as text.
    pub user_id: Arc<str>,
    /// The role (`role`, default `user`).
    pub role: Arc<str>,
    /// Project ids granted by the token's `projects` claim.
    pub projects: Arc<[String]>,
    /// The token's `exp` as Unix seconds, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// What the app's authenticator attached (its session, its own user record): handlers
    /// read it from [`crate::Incoming::principal`]. Herald never reads or sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Arc<serde_json::Value>>,
}

impl Principal {
    /// A principal with no expiry.
    pub fn new(user_id: &str, role: &str, projects: Vec<String>) -> Self {
        Self {
            user_id: user_id.into(),
            role: role.into(),
            projects: projects.into(),
            expires_at: None,
            meta: None,
        }
    }

    /// This principal with the app's own data attached ([`Principal::meta`]).
    pub fn with_meta(self, meta: serde_json::Value) -> Self {
        Self {
            meta: Some(Arc::new(meta)),
            ..self
        }
    }

    /// Admins may call the server HTTP API.
    pub fn is_admin(&self) -> bool {
        matches!(&*self.role, "admin" | "superadmin")
    }
}

/// Why a token was refused; the text is safe to show the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token's `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// Anything else wrong: signature, algorithm, claims, shape.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Whoever decides could not (the backend's `connect` hook failed): not a refusal, so
    /// the client is told to retry (HTTP 503, or `processing_error` and close 1011).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Turns a client's token into a [`Principal`]. Herald's own is [`Verifier`] (JWT); an app
/// that does not use JWTs plugs its own in with [`crate::HeraldBuilder::authenticator`].
///
/// ```
/// use herald::auth::{AuthError, Authenticator, Principal};
///
/// /// Accepts tokens of the form `user:<id>`; a real app would look the session up.
/// struct SessionTokens;
///
/// #[async_trait::async_trait]
/// impl Authenticator for SessionTokens {
///     async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
///         match token.strip_prefix("user:") {
///             Some(id) if !id.is_empty() => Ok(Principal::new(id, "user", vec![])),
///             _ => Err(AuthError::Invalid("unknown session".into())),
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Who the token names, or why it is refused.
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError>;

    /// A client connecting to `/ws`, at the upgrade: `token` is its `?token=` or
    /// `Authorization: Bearer` token, if any, and `request` the rest of what it sent (cookies,
    /// headers, address, query). `Ok(None)` leaves the connection to authenticate with its
    /// first message (`auth`, which goes to [`authenticate`](Self::authenticate)); an error
    /// refuses the upgrade with 401. The default checks the token with `authenticate` and
    /// returns `Ok(None)` without one; override it to take a session cookie instead.
    async fn authenticate_request(
        &self,
        token: Option<&str>,
        request: &ConnectRequest,
    ) -> Result<Option<Principal>, AuthError> {
        let _ = request;
        match token {
            Some(token) => self.authenticate(token).await.map(Some),
            None => Ok(None),
        }
    }
}

/// What a connecting client's HTTP request showed, for an authenticator that reads more than
/// a token ([`Authenticator::authenticate_request`]).
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// The request's headers, cookies included.
    pub headers: axum::http::HeaderMap,
    /// The client's address (behind `trusted_proxies`, the one they forwarded), when known.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The query parameters (`token` among them when the client sent it there).
    pub query: std::collections::HashMap<String, String>,
}

/// Who may call the server API (`Herald::api_router`) besides a configured API key, as the
/// embedding app decides: e.g. its own admin session cookie. Without one, a node with an
/// app's own [`Authenticator`] takes API keys only; Herald's JWT authenticator also takes a
/// token whose role is `admin` or `superadmin` (what `herald serve` does).
///
/// A closure over the request's headers is one:
///
/// ```
/// let check = |headers: &axum::http::HeaderMap| {
///     headers.get("x-ops-secret").is_some_and(|v| v == "from-the-vault")
/// };
/// # fn takes(_: impl herald::auth::AdminCheck) {}
/// # takes(check);
/// ```
#[async_trait::async_trait]
pub trait AdminCheck: Send + Sync + 'static {
    /// Whether the request with these headers comes from an administrator.
    async fn is_admin(&self, headers: &axum::http::HeaderMap) -> bool;
}

#[async_trait::async_trait]
impl<F> AdminCheck for F
where
    F: Fn(&axum::http::HeaderMap) -> bool + Send + Sync + 'static,
{
    async fn is_admin(&self, headers: &axum::http::HeaderMap) -> bool {
        self(headers)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(feature = "jwt")]
mod jwt;
#[cfg(feature = "jwt")]
pub use jwt::{mint_hs256, Keys, TokenRequest, Verifier};
