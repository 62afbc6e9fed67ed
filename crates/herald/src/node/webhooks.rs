//! Webhooks (docs/HOOKS.md): what happened on this node, told to the backend. Emitting an
//! event never waits: it is encoded and handed to one sender task, which keeps it in the
//! outbox (the SQLite file, so it survives a restart), batches it (`batch_max`, `batch_wait`),
//! posts the batch signed, and forgets it once the backend answered 2xx. A failed batch is
//! sent again, the same events with the same ids, after a backoff that doubles up to 30 s;
//! one batch is in flight at a time, so events reach the backend in the order they happened.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::WebhooksConfig;
use crate::engine::outbox::{Outbox, OutboxEvent};
use crate::hooks::WebhookClient;
use crate::protocol::hooks::{webhook_batch, WebhookEvent};

/// The longest wait between two tries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

enum Message {
    Event(OutboxEvent),
    /// Answered once every event sent before it is in the outbox.
    Flush(oneshot::Sender<()>),
}

/// The node's webhook emitter.
pub(crate) struct Webhooks {
    sender: mpsc::UnboundedSender<Message>,
    events: Vec<String>,
    node: String,
}

impl Webhooks {
    /// Starts the sender task on the current runtime; it ends when the node is dropped.
    pub fn start(
        config: &WebhooksConfig,
        client: WebhookClient,
        outbox: Arc<dyn Outbox>,
        node: String,
    ) -> Self {
        let (sender, queue) = mpsc::unbounded_channel();
        let settings = Settings {
            batch_max: config.batch_max.max(1),
            batch_wait: config.batch_wait,
            retry_for: config.retry_for,
            max_pending: config.max_pending.max(1),
        };
        tokio::spawn(send_events(queue, client, outbox, settings));
        Self {
            sender,
            events: config.events.clone(),
            node,
        }
    }

    /// Takes over events another node kept and never sent (it died): sent from here, with
    /// their ids, after what this node already holds.
    #[cfg(feature = "redis")]
    pub fn adopt(&self, events: Vec<OutboxEvent>) {
        for event in events {
            let _ = self.sender.send(Message::Event(event));
        }
    }

    /// Whether the config asks for event `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|e| e == name)
    }

    /// Queues event `name` with `data`, if the config asks for it. Never waits.
    pub fn emit(&self, name: &'static str, data: impl Serialize) {
        if !self.wants(name) {
            return;
        }
        let id = uuid::Uuid::now_v7().to_string();
        let time = crate::protocol::now_timestamp();
        let event = WebhookEvent {
            id: &id,
            name,
            time: &time,
            node: &self.node,
            data,
        };
        match serde_json::to_string(&event) {
            Ok(body) => {
                let _ = self.sender.send(Message::Event(OutboxEvent { id, body }));
            }
            Err(e) => tracing::warn!(event = name, error = %e, "webhook event not encoded"),
        }
    }

    /// Returns once every event emitted before it is kept in the outbox (at shutdown).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

struct Settings {
    batch_max: usize,
    batch_wait: Duration,
    retry_for: Duration,
    max_pending: usize,
}

/// An event waiting for the backend, and since when.
struct Pending {
    event: OutboxEvent,
    since: Instant,
}

/// The sender task: keeps, batches, posts and retries, in order.
async fn send_events(
    mut queue: mpsc::UnboundedReceiver<Message>,
    client: WebhookClient,
    outbox: Arc<dyn Outbox>,
    settings: Settings,
) {
    let mut pending: VecDeque<Pending> = match outbox.load().await {
        Ok(kept) => kept
            .into_iter()
            .map(|event| Pending {
                event,
                since: Instant::now(),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "webhook outbox not read: its events wait in the file");
            VecDeque::new()
        }
    };
    let mut retry: Option<(Instant, Duration)> = None;
    let mut open = true;
    while open || !pending.is_empty() {
        let due = match (&retry, pending.front()) {
            (Some((at, _)), _) => Some(*at),
            (None, Some(_)) if pending.len() >= settings.batch_max => Some(Instant::now()),
            (None, Some(oldest)) => Some(oldest.since + settings.batch_wait),
            (None, None) => None,
        };
        let mut fresh = Vec::new();
        let mut flushes = Vec::new();
        if open {
            let received = match due {
                Some(at) => tokio::time::timeout_at(at, queue.recv()).await.ok(),
                None => Some(queue.recv().await),
            };
            match received {
                Some(Some(message)) => take(message, &mut fresh, &mut flushes),
                Some(None) => open = false,
                None => {}
            }
            while let Ok(message) = queue.try_recv() {
                take(message, &mut fresh, &mut flushes);
            }
        } else if let Some(at) = due {
            tokio::time::sleep_until(at).await;
        }
        if !fresh.is_empty() {
            if let Err(e) = outbox.keep(fresh.clone()).await {
                tracing::warn!(error = %e, events = fresh.len(), "webhook events kept in memory only");
            }
            let now = Instant::now();
            pending.extend(fresh.into_iter().map(|event| Pending { event, since: now }));
            let over = pending.len().saturating_sub(settings.max_pending);
            if over > 0 {
                drop_oldest(&mut pending, over, &*outbox, "full").await;
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        let expired = pending
            .iter()
            .take_while(|p| p.since.elapsed() >= settings.retry_for)
            .count();
        if expired > 0 {
            drop_oldest(&mut pending, expired, &*outbox, "expired").await;
        }
        crate::metrics::webhook_pending(pending.len());
        let ready = match (&retry, pending.front()) {
            (_, None) => false,
            (Some((at, _)), _) => Instant::now() >= *at,
            (None, Some(oldest)) => {
                pending.len() >= settings.batch_max
                    || oldest.since.elapsed() >= settings.batch_wait
                    || !open
            }
        };
        if !ready {
            continue;
        }
        let count = pending.len().min(settings.batch_max);
        let body = webhook_batch(pending.iter().take(count).map(|p| p.event.body.as_str()));
        match client.post(body).await {
            Ok(()) => {
                let sent: Vec<String> = pending.drain(..count).map(|p| p.event.id).collect();
                if let Err(e) = outbox.forget(sent).await {
                    tracing::warn!(error = %e, "sent webhook events not forgotten: a restart sends them again");
                }
                retry = None;
                crate::metrics::webhook_pending(pending.len());
            }
            Err(e) => {
                let wait = retry.map_or(FIRST_BACKOFF, |(_, w)| (w * 2).min(MAX_BACKOFF));
                tracing::warn!(error = %e.why, events = count, retry_in_ms = wait.as_millis() as u64, "webhook batch not acknowledged");
                retry = Some((Instant::now() + wait, wait));
                if !open {
                    // The node is gone: what is left waits in the outbox for the next start.
                    return;
                }
            }
        }
    }
}

fn take(message: Message, fresh: &mut Vec<OutboxEvent>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Event(event) => fresh.push(event),
        Message::Flush(done) => flushes.push(done),
    }
}

/// Gives up the `count` oldest events: counted, logged, and forgotten by the outbox.
async fn drop_oldest(
    pending: &mut VecDeque<Pending>,
    count: usize,
    outbox: &dyn Outbox,
    reason: &'static str,
) {
    let ids: Vec<String> = pending.drain(..count).map(|p| p.event.id).collect();
    crate::metrics::webhook_dropped(reason, ids.len());
    tracing::warn!(events = ids.len(), reason, "webhook events dropped");
    if let Err(e) = outbox.forget(ids).await {
        tracing::warn!(error = %e, "dropped webhook events not forgotten");
    }
}
