//! The issuer's key set (`jwt.jwks_url`): fetched at start, then every `jwks_refresh`, and
//! early (at most every 30 s) when a token names a `kid` no key carries, so a key the issuer
//! just added works within seconds. A failed fetch keeps the keys in force.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Herald;
use crate::auth::Keys;

/// The least time between two fetches asked for by unknown `kid`s.
const EARLY_FETCH_GAP: Duration = Duration::from_secs(30);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed fetch is tried again (sooner when `jwks_refresh` is shorter).
const RETRY: Duration = Duration::from_secs(10);

impl Herald {
    /// Fetches the key set once (waiting at most [`FETCH_TIMEOUT`]), then keeps it fresh in
    /// the background until shutdown. Nothing without `jwt.jwks_url`.
    pub(crate) async fn start_key_set(&self, keys: Arc<Keys>) {
        if keys.key_set().is_none() {
            return;
        }
        let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "jwks: no HTTP client: the key set is not fetched");
                return;
            }
        };
        let fetched = fetch(&keys, &client).await;
        let node = self.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut ok = fetched;
            loop {
                let Some((_, every)) = keys.key_set() else {
                    // A reload removed the URL: nothing to keep fresh until the next start.
                    return;
                };
                // A deadline, not a fresh sleep: unknown kids arriving meanwhile must not put
                // the next fetch off.
                let due = last + if ok { every } else { RETRY.min(every) };
                tokio::select! {
                    _ = node.shutdown_token().cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                    _ = keys.kid_missed() => {
                        if last.elapsed() < EARLY_FETCH_GAP.min(every) {
                            continue;
                        }
                    }
                }
                last = Instant::now();
                ok = fetch(&keys, &client).await;
            }
        });
    }
}

/// One fetch; false (and a warning) when it failed.
async fn fetch(keys: &Keys, client: &reqwest::Client) -> bool {
    match keys.refresh_key_set(client).await {
        Ok(count) => {
            tracing::info!(keys = count, "jwks: key set fetched");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "jwks: fetch failed; the keys in force stay");
            false
        }
    }
}
