//! Idempotent publishing (docs/PROTOCOL.md, section 15): a publish sent with a key that a
//! publish within `[recovery] idempotency_window` already used is answered with that first
//! answer (same `id`) and delivers nothing, on any node of a cluster (the keys are in Redis
//! there).
//!
//! The first claimer publishes on a task of its own, so a caller that goes away mid-publish
//! (an HTTP client that hangs up) still leaves the answer behind for its retry. A repeat that
//! arrives while the first is in flight waits for its answer, up to [`WAIT_FOR_FIRST`].

use std::time::Duration;

use super::{Herald, PublishError, Published};
use crate::engine::{Claim, EngineError, MAX_KEY_LEN};
use crate::publication::Publication;

/// How long a repeat waits for the first publish with its key to be answered.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);

/// How long a claim holds a key without an answer: a node that dies mid-publish blocks the
/// key's repeats no longer than this.
const IN_FLIGHT: Duration = Duration::from_secs(30);

/// How often a waiting repeat looks for the first answer.
const POLL: Duration = Duration::from_millis(10);

/// Whether `key` may be used as an idempotency key: 1 to 255 bytes, no control characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an idempotency key has 1 to {MAX_KEY_LEN} bytes (this one has {})",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("an idempotency key has no control characters".into());
    }
    Ok(())
}

impl Herald {
    /// Publishes like [`Herald::publish`], once per `key` within `[recovery]
    /// idempotency_window`: a repeat of a key already used gets the first publish's
    /// [`Published`] (same `id`) and delivers nothing, on any node. A repeat sent while the
    /// first is still in flight waits for it (5 s at most, then an engine error: retry). With
    /// a window of `0s` the key is ignored. A failed publish leaves the key free for a retry.
    pub async fn publish_idempotent(
        &self,
        key: &str,
        publication: Publication,
    ) -> Result<Published, PublishError> {
        check_key(key).map_err(PublishError::InvalidKey)?;
        let window = self.inner.config.recovery.idempotency_window;
        if window.is_zero() {
            return Ok(self.publish(publication).await?);
        }
        let keys = &self.inner.idempotency;
        let in_flight = IN_FLIGHT.min(window);
        let waiting_since = tokio::time::Instant::now();
        loop {
            match keys.claim(key, in_flight).await? {
                Claim::First => break,
                Claim::Answered(answer) => return Ok(first_answer(&answer)?),
                Claim::InFlight if waiting_since.elapsed() < WAIT_FOR_FIRST => {
                    tokio::time::sleep(POLL).await;
                }
                Claim::InFlight => {
                    return Err(EngineError::new(
                        "a publish with this idempotency key is still in flight: retry",
                    )
                    .into())
                }
            }
        }
        let node = self.clone();
        let key = key.to_string();
        let publishing = tokio::spawn(async move {
            let published = node.publish(publication).await;
            let answer = published
                .as_ref()
                .ok()
                .and_then(|p| serde_json::to_string(p).ok());
            if let Err(e) = node
                .inner
                .idempotency
                .settle(&key, answer.as_deref(), window)
                .await
            {
                // The publish stands; a repeat may then publish again (or wait out the claim).
                tracing::warn!(error = %e, "idempotency key not recorded");
            }
            published
        });
        match publishing.await {
            Ok(published) => Ok(published?),
            Err(e) => Err(EngineError(format!("the publish stopped: {e}")).into()),
        }
    }
}

fn first_answer(answer: &str) -> Result<Published, EngineError> {
    serde_json::from_str(answer)
        .map_err(|e| EngineError(format!("a stored idempotency answer does not read: {e}")))
}
