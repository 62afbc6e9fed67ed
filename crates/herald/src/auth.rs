//! Token to [`Principal`]: JWT verification (docs/PROTOCOL.md, section 2).
//!
//! Knows nothing of sockets or topics. The accepted algorithms follow the key: a shared
//! secret accepts only HS256/384/512, a public key only RS256 (RSA) or ES256 (EC), so a token
//! signed with the public key as an HMAC secret (HS/RS confusion) is refused by construction.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// Who a connection or an API caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (`sub`), kept as text.
    pub user_id: Arc<str>,
    /// The role (`role`, default `user`).
    pub role: Arc<str>,
    /// Project ids granted by the token's `projects` claim.
    pub projects: Arc<[String]>,
    /// The token's `exp` as Unix seconds, if it has one.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// A principal with no expiry.
    pub fn new(user_id: &str, role: &str, projects: Vec<String>) -> Self {
        Self {
            user_id: user_id.into(),
            role: role.into(),
            projects: projects.into(),
            expires_at: None,
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
}

impl AuthError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// The claims Herald reads. `sub` may be a string or a number; ids in `projects` too.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: serde_json::Value,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    projects: Vec<serde_json::Value>,
    #[serde(default)]
    exp: Option<u64>,
}

fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Verifies tokens against one configured key.
pub struct Verifier {
    key: DecodingKey,
    allowed: Vec<Algorithm>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier from the `[jwt]` config. `secret` overrides the config's secret (the
    /// server passes the development secret here when none is configured).
    pub fn from_config(config: &JwtConfig, secret: Option<&str>) -> Result<Self, String> {
        let (key, family) = if let Some(path) = &config.public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("jwt public key {}: {e}", path.display()))?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                (key, vec![Algorithm::RS256])
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (key, vec![Algorithm::ES256])
            } else {
                return Err(format!(
                    "jwt public key {}: not an RSA or EC public key in PEM",
                    path.display()
                ));
            }
        } else if let Some(secret) = secret.or(config.secret.as_deref()) {
            if secret.is_empty() {
                return Err("jwt secret must not be empty".into());
            }
            (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            )
        } else {
            return Err("no jwt secret or public key configured".into());
        };
        let allowed = if config.algorithms.is_empty() {
            family
        } else {
            let mut allowed = Vec::new();
            for name in &config.algorithms {
                let alg: Algorithm = name
                    .parse()
                    .map_err(|_| format!("jwt algorithm `{name}` is not known"))?;
                if !family.contains(&alg) {
                    return Err(format!(
                        "jwt algorithm `{name}` does not fit the configured key"
                    ));
                }
                allowed.push(alg);
            }
            allowed
        };
        let mut validation = Validation::new(allowed[0]);
        validation.algorithms = allowed.clone();
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        // A token without `exp` never expires, as in Centrifugo; one with `exp` is checked.
        validation.required_spec_claims.clear();
        validation.validate_aud = config.audience.is_some();
        if let Some(aud) = &config.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Self {
            key,
            allowed,
            validation,
        })
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        if !self.allowed.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("token is not valid yet (nbf)".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    AuthError::Invalid("bad signature".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    AuthError::Invalid("wrong issuer".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    AuthError::Invalid("wrong audience".into())
                }
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing claim {claim}"))
                }
                _ => AuthError::Invalid("malformed token".into()),
            },
        )?;
        let claims = data.claims;
        let user_id = id_text(&claims.sub)
            .ok_or_else(|| AuthError::Invalid("sub must be a non-empty string or number".into()))?;
        let projects = claims.projects.iter().filter_map(id_text).collect();
        let role = claims.role.filter(|r| !r.is_empty());
        let mut principal = Principal::new(&user_id, role.as_deref().unwrap_or("user"), projects);
        principal.expires_at = claims.exp;
        Ok(principal)
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
}

#[async_trait::async_trait]
impl Authenticator for Verifier {
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify(token)
    }
}

/// Claims of a token minted by `herald token`.
#[derive(Debug, Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    role: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    projects: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What `herald token` needs to sign a token.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    /// The user id.
    pub sub: &'a str,
    /// The role.
    pub role: &'a str,
    /// Project ids for the `projects` claim.
    pub projects: &'a [String],
    /// How long the token is valid.
    pub ttl: std::time::Duration,
    /// `iss`, when the server requires one.
    pub issuer: Option<&'a str>,
    /// `aud`, when the server requires one.
    pub audience: Option<&'a str>,
}

/// Signs an HS256 token with a shared secret (for development and tests).
pub fn mint_hs256(secret: &str, req: &TokenRequest<'_>) -> Result<String, String> {
    let now = unix_now();
    let claims = MintClaims {
        sub: req.sub,
        role: req.role,
        projects: req.projects,
        iat: now,
        exp: now + req.ttl.as_secs(),
        iss: req.issuer,
        aud: req.audience,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
