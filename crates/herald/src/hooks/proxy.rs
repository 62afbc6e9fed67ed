//! The proxy's HTTP client: signed calls to the backend with a timeout, counted and timed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use super::{Answer, Hook, HookFailure};
use crate::config::ProxyConfig;

/// How long a failed call keeps `/ready` at 503 (a later success clears it at once): long
/// enough for a probe to see a backend that is down, short enough that a node nobody calls
/// does not stay out of rotation.
const FAILING_FOR: Duration = Duration::from_secs(10);

/// The backend's proxy endpoints, and one keep-alive client for all of them.
pub struct Proxy {
    client: reqwest::Client,
    urls: HashMap<Hook, String>,
    secret: Option<String>,
    forward: Vec<HeaderName>,
    /// Each hook's last failure, until a call to it succeeds.
    failing: Mutex<HashMap<Hook, (Instant, String)>>,
}

impl Proxy {
    /// The proxy of `[proxy]`, or `None` when it names no hook.
    pub fn start(config: &ProxyConfig) -> Result<Option<Self>, String> {
        let urls: HashMap<Hook, String> = Hook::ALL
            .into_iter()
            .filter_map(|hook| super::url(config, hook).map(|url| (hook, url.to_string())))
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        for (hook, url) in &urls {
            reqwest::Url::parse(url)
                .map_err(|e| format!("[proxy] {} = \"{url}\": {e}", hook.name()))?;
        }
        let forward = config
            .forward_headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("[proxy] forward_headers: `{name}` is no header name"))
            })
            .collect::<Result<_, _>>()?;
        let client = super::http_client(config.timeout).map_err(|e| format!("[proxy]: {e}"))?;
        Ok(Some(Self {
            client,
            urls,
            secret: config.secret.clone(),
            forward,
            failing: Mutex::default(),
        }))
    }

    /// Whether the backend decides `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.urls.contains_key(&hook)
    }

    /// Calls `hook` with `body`: the backend's answer, or why it failed.
    pub async fn call(&self, hook: Hook, body: &impl Serialize) -> Result<Answer, HookFailure> {
        let started = Instant::now();
        let outcome = self.send(hook, body).await;
        let label = match &outcome {
            Ok(answer) if (200..300).contains(&answer.status) => "ok",
            Ok(_) => "refused",
            Err(_) => "failed",
        };
        crate::metrics::hook_call(hook.name(), label, started.elapsed());
        let mut failing = crate::sync::lock(&self.failing);
        match &outcome {
            Ok(_) => {
                failing.remove(&hook);
            }
            Err(e) => {
                // One line a second per hook at most: clients can make calls fail in a flood.
                let quiet = failing
                    .get(&hook)
                    .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(1));
                if !quiet {
                    tracing::warn!(hook = hook.name(), error = %e.why, "backend hook failed");
                }
                failing.insert(hook, (Instant::now(), e.why.clone()));
            }
        }
        outcome
    }

    async fn send(&self, hook: Hook, body: &impl Serialize) -> Result<Answer, HookFailure> {
        let failed = |why: String| HookFailure {
            hook: hook.name(),
            why,
        };
        let url = self
            .urls
            .get(&hook)
            .ok_or_else(|| failed("not configured".into()))?;
        let bytes = serde_json::to_vec(body).map_err(|e| failed(e.to_string()))?;
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.secret {
            request = request.header("x-herald-signature", signature(secret, &bytes));
        }
        let response = request.body(bytes).send().await.map_err(|e| {
            failed(if e.is_timeout() {
                "no answer within the timeout".into()
            } else {
                e.to_string()
            })
        })?;
        let status = response.status().as_u16();
        if !(200..500).contains(&status) || (300..400).contains(&status) {
            return Err(failed(format!("it answered {status}")));
        }
        let text = response.text().await.map_err(|e| failed(e.to_string()))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// The request headers the backend is shown (`[proxy] forward_headers`), by name.
    pub fn forwarded<'a>(&'a self, headers: &'a HeaderMap) -> BTreeMap<&'a str, &'a str> {
        self.forward
            .iter()
            .filter_map(|name| Some((name.as_str(), headers.get(name)?.to_str().ok()?)))
            .collect()
    }

    /// An error naming the hooks whose last call failed within the last few seconds.
    pub fn check(&self) -> Result<(), String> {
        let failing = crate::sync::lock(&self.failing);
        let recent: Vec<String> = failing
            .iter()
            .filter(|(_, (at, _))| at.elapsed() < FAILING_FOR)
            .map(|(hook, (_, why))| format!("the {} hook: {why}", hook.name()))
            .collect();
        if recent.is_empty() {
            Ok(())
        } else {
            Err(format!("backend failing: {}", recent.join("; ")))
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`, the `X-Herald-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    /// RFC 4231, test case 2.
    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
