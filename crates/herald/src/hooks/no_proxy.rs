//! Without the `hooks` feature there is no proxy: a config that names a hook is refused at
//! start (see `Proxy::start`).

use super::{Answer, Hook, HookFailure};
use crate::config::ProxyConfig;

/// No proxy in this build.
pub struct Proxy;

impl Proxy {
    /// `Ok(None)` when no hook is configured; an error naming the feature otherwise.
    pub fn start(config: &ProxyConfig) -> Result<Option<Self>, String> {
        if Hook::ALL
            .into_iter()
            .any(|hook| super::url(config, hook).is_some())
        {
            return Err("[proxy] needs the `hooks` feature of the herald crate".into());
        }
        Ok(None)
    }

    pub fn has(&self, _: Hook) -> bool {
        false
    }

    pub async fn call(&self, hook: Hook, _: &impl serde::Serialize) -> Result<Answer, HookFailure> {
        Err(HookFailure {
            hook: hook.name(),
            why: "no proxy in this build".into(),
        })
    }

    pub fn forwarded<'a>(
        &'a self,
        _: &'a axum::http::HeaderMap,
    ) -> std::collections::BTreeMap<&'a str, &'a str> {
        std::collections::BTreeMap::new()
    }

    pub fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// No webhooks in this build.
pub struct WebhookClient;

impl WebhookClient {
    /// `Ok(None)` without `[webhooks] url`; an error naming the feature with one.
    pub fn start(config: &crate::config::WebhooksConfig) -> Result<Option<Self>, String> {
        if config.url.as_deref().is_some_and(|u| !u.is_empty()) {
            return Err("[webhooks] needs the `hooks` feature of the herald crate".into());
        }
        Ok(None)
    }

    pub async fn post(&self, _: Vec<u8>) -> Result<(), HookFailure> {
        Err(HookFailure {
            hook: "webhook",
            why: "no webhooks in this build".into(),
        })
    }
}
