//! Herald's own authenticator: JWTs verified against the configured keys (feature `jwt`).
//!
//! The accepted algorithms follow the key: a shared secret accepts only HS256/384/512, a
//! public key only RS256 (RSA) or ES256 (EC), so a token signed with the public key as an HMAC
//! secret (HS/RS confusion) is refused by construction.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{unix_now, AuthError, Authenticator, Principal};
use crate::config::JwtConfig;

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

/// One key a token may be signed with.
struct Key {
    /// Tokens whose header names this `kid` are checked with this key only.
    kid: Option<String>,
    key: DecodingKey,
    /// The algorithms this key verifies (its family, narrowed by `jwt.algorithms`).
    allowed: Vec<Algorithm>,
    validation: Validation,
}

/// Verifies tokens against the configured keys: `jwt.secret` or `jwt.public_key`, then every
/// `[[jwt.keys]]` in order. A token whose header has a `kid` that a key carries is checked
/// with those keys only; any other token with every key whose algorithms fit, the first that
/// verifies the signature winning (so a key can be rotated with no client refused).
pub struct Verifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A key from a PEM file (RSA: RS256, EC P-256: ES256) or a secret (HS256/384/512).
fn decoding_key(
    public_key: Option<&std::path::Path>,
    secret: Option<&str>,
) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if let Some(path) = public_key {
        let pem =
            std::fs::read(path).map_err(|e| format!("jwt public key {}: {e}", path.display()))?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            Ok((key, vec![Algorithm::RS256]))
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            Ok((key, vec![Algorithm::ES256]))
        } else {
            Err(format!(
                "jwt public key {}: not an RSA or EC public key in PEM",
                path.display()
            ))
        }
    } else if let Some(secret) = secret {
        if secret.is_empty() {
            return Err("jwt secret must not be empty".into());
        }
        Ok((
            DecodingKey::from_secret(secret.as_bytes()),
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        ))
    } else {
        Err("a jwt key needs a secret or a public_key".into())
    }
}

impl Verifier {
    /// Builds a verifier from the `[jwt]` config. `secret` overrides the config's secret (the
    /// server passes the development secret here when none is configured).
    pub fn from_config(config: &JwtConfig, secret: Option<&str>) -> Result<Self, String> {
        Self::with_key_set(config, secret, &[])
    }

    /// [`from_config`](Self::from_config) plus the keys of the issuer's key set (`jwks_url`),
    /// each under its `kid`. A key the set holds that cannot verify (an unknown type or
    /// curve) is left out, not fatal: the set is another party's.
    pub fn with_key_set(
        config: &JwtConfig,
        secret: Option<&str>,
        set: &[jsonwebtoken::jwk::Jwk],
    ) -> Result<Self, String> {
        // (kid, key and its family, whether it came from the key set)
        let mut sources = Vec::new();
        if config.public_key.is_some() || secret.or(config.secret.as_deref()).is_some() {
            sources.push((
                None,
                decoding_key(
                    config.public_key.as_deref(),
                    secret.or(config.secret.as_deref()),
                )?,
                false,
            ));
        }
        for (n, extra) in config.keys.iter().enumerate() {
            let key = decoding_key(extra.public_key.as_deref(), extra.secret.as_deref())
                .map_err(|e| format!("jwt.keys[{n}]: {e}"))?;
            sources.push((extra.kid.clone(), key, false));
        }
        for jwk in set {
            match jwk_key(jwk) {
                Some(key) => sources.push((jwk.common.key_id.clone(), key, true)),
                None => tracing::warn!(
                    kid = jwk.common.key_id.as_deref().unwrap_or("-"),
                    "jwks: a key of an unsupported type is left out"
                ),
            }
        }
        if sources.is_empty() && config.jwks_url.is_none() {
            return Err("no jwt secret or public key configured".into());
        }
        let mut keys = Vec::new();
        for (kid, (key, family), from_set) in sources {
            let allowed = match narrowed(&family, &config.algorithms) {
                Ok(allowed) => allowed,
                // A key-set key of a family `algorithms` leaves out is not used.
                Err(_) if from_set => continue,
                Err(e) => return Err(e),
            };
            keys.push(Key {
                kid,
                key,
                validation: validation(config, &allowed),
                allowed,
            });
        }
        Ok(Self { keys })
    }

    /// Whether the token's header names a `kid` that no key carries.
    fn misses_kid(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .is_some_and(|kid| {
                !self
                    .keys
                    .iter()
                    .any(|k| k.kid.as_deref() == Some(kid.as_str()))
            })
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let named = header
            .kid
            .as_deref()
            .filter(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| named.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .filter(|k| k.allowed.contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut outcome = None;
        for key in candidates {
            let result = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation);
            // A bad signature may be another key's token: try the next. Any other verdict
            // comes from a key that did verify the signature.
            let bad_signature = matches!(&result, Err(e)
                if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature);
            outcome = Some(result);
            if !bad_signature {
                break;
            }
        }
        let Some(outcome) = outcome else {
            return Err(AuthError::Invalid("no key to check the token with".into()));
        };
        let data = outcome.map_err(|e| match e.kind() {
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
        })?;
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

/// A key of a JSON Web Key Set, with the algorithms its type verifies (the JWK's own `alg`
/// when it names one).
fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<(DecodingKey, Vec<Algorithm>)> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKey(_) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
    };
    let family = match jwk
        .common
        .key_algorithm
        .and_then(|alg| alg.to_string().parse::<Algorithm>().ok())
    {
        Some(alg) if family.contains(&alg) => vec![alg],
        Some(_) => return None,
        None => family,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((key, family))
}

/// A key family narrowed by `jwt.algorithms` (empty: the whole family).
fn narrowed(family: &[Algorithm], names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Ok(family.to_vec());
    }
    let mut allowed = Vec::new();
    for name in names {
        let alg: Algorithm = name
            .parse()
            .map_err(|_| format!("jwt algorithm `{name}` is not known"))?;
        if family.contains(&alg) {
            allowed.push(alg);
        }
    }
    if allowed.is_empty() {
        return Err(format!(
            "jwt algorithms {names:?} do not fit a configured key (it verifies {family:?})"
        ));
    }
    Ok(allowed)
}

/// The checks every key applies: `exp` (with the leeway) and `nbf`, and `iss` / `aud` when
/// configured.
fn validation(config: &JwtConfig, allowed: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(allowed.first().copied().unwrap_or(Algorithm::HS256));
    validation.algorithms = allowed.to_vec();
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
    validation
}

/// The largest key set read from `jwt.jwks_url`.
const KEY_SET_MAX_BYTES: usize = 1024 * 1024;

/// The node's JWT keys, which a reload replaces while connections stay: a token is checked
/// against the keys in force when it arrives. With `jwt.jwks_url`, the issuer's key set is
/// part of them, fetched again every `jwks_refresh` ([`Keys::refresh_key_set`]).
#[derive(Debug)]
pub struct Keys {
    current: std::sync::RwLock<Arc<Verifier>>,
    /// What the keys are built from: the `[jwt]` config and the last key set fetched.
    sources: std::sync::Mutex<(JwtConfig, Vec<jsonwebtoken::jwk::Jwk>)>,
    /// The development secret the keys were built with, if any (kept across reloads).
    dev_secret: Option<String>,
    /// A token named a `kid` no key has: the key set may have changed.
    missed: tokio::sync::Notify,
}

impl Keys {
    /// The keys of `config`, or the development secret when it has none.
    pub fn from_config(config: &JwtConfig, dev_secret: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            current: std::sync::RwLock::new(Arc::new(Verifier::from_config(config, dev_secret)?)),
            sources: std::sync::Mutex::new((config.clone(), Vec::new())),
            dev_secret: dev_secret.map(str::to_string),
            missed: tokio::sync::Notify::new(),
        })
    }

    /// Puts the keys of `config` in force (with the key set last fetched); on an error the
    /// old ones stay.
    pub fn reload(&self, config: &JwtConfig) -> Result<(), String> {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Verifier::with_key_set(config, self.dev_secret.as_deref(), &sources.1)?;
        sources.0 = config.clone();
        self.put(fresh);
        Ok(())
    }

    /// Fetches `jwt.jwks_url` (when set) and puts its keys in force beside the configured
    /// ones; on an error the keys in force stay.
    pub async fn refresh_key_set(&self, client: &reqwest::Client) -> Result<usize, String> {
        let url = {
            let sources = self
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &sources.0.jwks_url {
                Some(url) => url.clone(),
                None => return Ok(0),
            }
        };
        let mut response = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("jwks {url}: {e}"))?;
        // Read with a bound: a key set is a few KiB, and whatever the endpoint sends is held.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("jwks {url}: {e}"))?
        {
            if body.len() + chunk.len() > KEY_SET_MAX_BYTES {
                return Err(format!(
                    "jwks {url}: larger than {KEY_SET_MAX_BYTES} bytes: refused"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body)
            .map_err(|e| format!("jwks {url}: not a JSON Web Key Set: {e}"))?;
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Verifier::with_key_set(&sources.0, self.dev_secret.as_deref(), &set.keys)?;
        sources.1 = set.keys;
        self.put(fresh);
        Ok(sources.1.len())
    }

    /// The configured key set URL and refresh period, if any.
    pub fn key_set(&self) -> Option<(String, std::time::Duration)> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refresh = sources.0.jwks_refresh;
        sources.0.jwks_url.clone().map(|url| (url, refresh))
    }

    /// Resolves when a token named a `kid` that no key carries.
    pub async fn kid_missed(&self) {
        self.missed.notified().await;
    }

    fn put(&self, fresh: Verifier) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
    }

    fn verifier(&self) -> Arc<Verifier> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl Authenticator for Keys {
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let verifier = self.verifier();
        let verdict = verifier.verify(token);
        if verdict.is_err() && verifier.misses_kid(token) {
            self.missed.notify_one();
        }
        verdict
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtKey;

    fn signed(secret: &str, kid: Option<&str>) -> String {
        let header = Header {
            kid: kid.map(str::to_string),
            ..Header::default()
        };
        let claims = serde_json::json!({"sub": "u", "exp": unix_now() + 60});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    fn key(kid: Option<&str>, secret: &str) -> JwtKey {
        JwtKey {
            kid: kid.map(str::to_string),
            secret: Some(secret.into()),
            public_key: None,
        }
    }

    #[test]
    fn every_key_is_tried_and_a_kid_picks_its_own() {
        let config = JwtConfig {
            secret: Some("main".into()),
            keys: vec![
                key(None, "older"),
                key(Some("a"), "kid-a"),
                key(Some("b"), "kid-b"),
            ],
            ..JwtConfig::default()
        };
        let verifier = Verifier::from_config(&config, None).expect("keys");
        for token in [
            signed("main", None),
            signed("older", None),
            signed("kid-a", Some("a")),
            signed("kid-b", None),
            signed("main", Some("unknown-kid")),
        ] {
            assert!(verifier.verify(&token).is_ok(), "accepted");
        }
        // A kid that a key carries is checked with that key only: another key's signature
        // under that kid is refused, however valid for the other key.
        assert!(verifier.verify(&signed("kid-b", Some("a"))).is_err());
        assert!(verifier.verify(&signed("main", Some("b"))).is_err());
        assert!(verifier.verify(&signed("stranger", None)).is_err());
    }

    #[test]
    fn an_expired_token_of_a_later_key_says_expired() {
        let config = JwtConfig {
            secret: Some("main".into()),
            keys: vec![key(None, "older")],
            ..JwtConfig::default()
        };
        let verifier = Verifier::from_config(&config, None).expect("keys");
        let claims = serde_json::json!({"sub": "u", "exp": unix_now() - 600});
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"older"),
        )
        .expect("sign");
        assert!(matches!(verifier.verify(&token), Err(AuthError::Expired)));
    }
}

#[cfg(test)]
mod key_set_tests {
    use super::*;

    #[test]
    fn an_octet_key_of_a_key_set_verifies_its_kid() {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k1", "alg": "HS256", "k": "andrcy1zZWNyZXQtb25lLTAxMjM0NTY3ODk"}
        ]}))
        .expect("a key set");
        let key = jwk_key(&set.keys[0]);
        assert!(key.is_some(), "{:?}", set.keys[0]);
    }
}
