//! The webhooks' HTTP side: one signed `POST` of a batch to `[webhooks] url`, on a pooled
//! keep-alive client, bounded by `[webhooks] timeout`. Only a 2xx acknowledges the batch.

use std::time::Instant;

use super::HookFailure;
use crate::config::WebhooksConfig;

/// Posts batches of events to the backend.
pub struct WebhookClient {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl WebhookClient {
    /// The client of `[webhooks]`, or `None` when it names no URL.
    pub fn start(config: &WebhooksConfig) -> Result<Option<Self>, String> {
        let Some(url) = config.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        reqwest::Url::parse(url).map_err(|e| format!("[webhooks] url = \"{url}\": {e}"))?;
        let client = super::http_client(config.timeout).map_err(|e| format!("[webhooks]: {e}"))?;
        Ok(Some(Self {
            client,
            url: url.to_string(),
            secret: config.secret.clone(),
        }))
    }

    /// Sends one batch body; `Ok` only on a 2xx.
    pub async fn post(&self, body: Vec<u8>) -> Result<(), HookFailure> {
        let started = Instant::now();
        let failed = |why: String| HookFailure {
            hook: "webhook",
            why,
        };
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.secret {
            request = request.header("x-herald-signature", super::signature(secret, &body));
        }
        let outcome = match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(failed(format!(
                "it answered {}",
                response.status().as_u16()
            ))),
            Err(e) if e.is_timeout() => Err(failed("no answer within the timeout".into())),
            Err(e) => Err(failed(e.to_string())),
        };
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        crate::metrics::hook_call("webhook", label, started.elapsed());
        outcome
    }
}
