//! What Herald keeps: topic streams (history and recovery) and offline inboxes.
//!
//! Architecture invariant: every publication to a topic with history is queued (its place in
//! the stream fixed) under the stripe of its topic, and delivered in offset order once durable
//! (the history engine runs the deliveries in stream order); every recovery on that topic holds
//! the stripe and first lets every queued publication be delivered (`History::settle`). Every
//! user-scope publication is placed (delivered live, or queued into the inbox) under the stripe
//! of its user, and every inbox read for that user holds the stripe and sees every store queued
//! before it (`Inbox::pending`). So offsets reach subscribers in order, a recovering subscriber
//! sees each message exactly once (replayed or live), and a user-scope message is either
//! delivered to a live connection or kept in the inbox, never neither.

use std::sync::Arc;

use super::{Herald, Published};
use crate::engine::{EngineError, HistoryPage, InboxLimits, Retention, StreamPosition, ToUser};
use crate::hub::ConnHandle;
use crate::protocol::hooks;
use crate::protocol::Since;
use crate::publication::{Publication, Scope};

/// What a subscription to a topic with history found.
#[derive(Debug)]
pub struct Recovery {
    /// The connection was not subscribed before.
    pub fresh: bool,
    /// The stream's newest offset and epoch at the moment of the subscription: every live
    /// message after it has a larger offset.
    pub position: StreamPosition,
    /// Every message after the client's `since` is in `replay` (never true without `since`).
    pub recovered: bool,
    /// The missed messages, oldest first (empty unless recovered).
    pub replay: Vec<Publication>,
}

impl Herald {
    /// How much of the topic's stream is kept, or `None` when its namespace keeps no history.
    pub fn retention(&self, topic: &str) -> Option<Retention> {
        crate::topic::retention(&self.inner.config, topic)
    }

    pub(crate) fn inbox_limits(&self) -> InboxLimits {
        self.inner.config.inbox.limits()
    }

    /// Sends a publication to its scope. A topic with history gets its offset first (written
    /// durably before anyone sees it); a user-scope event for a user with no live connection
    /// is kept in their inbox (durably) instead. Either way, a successful return means the
    /// publication will not be lost.
    ///
    /// In cluster mode delivery is asynchronous (every node gets the publication from Redis),
    /// so `recipients` counts this node's connections in the scope at the time of sending.
    pub async fn publish(&self, publication: Publication) -> Result<Published, EngineError> {
        let id = publication.id.clone();
        let broker = &self.inner.broker;
        // In cluster mode delivery is asynchronous: the answer counts this node's connections
        // in the scope, and none while the link that would bring it here is down.
        let local = match (broker.is_remote(), broker.delivers_here()) {
            (false, _) => None,
            (true, true) => Some(self.count_in(&publication.scope).await?),
            (true, false) => Some(0),
        };
        let (recipients, offset, queued) = match publication.scope.clone() {
            Scope::Topic(topic) => {
                let Some(retention) = self.retention(&topic) else {
                    let recipients = self.broadcast(publication).await?;
                    return Ok(published(id, local.unwrap_or(recipients), None, false));
                };
                let (recipients, offset) = self
                    .place_in_stream(&topic, retention, publication)
                    .await?
                    .await?;
                (recipients, Some(offset), false)
            }
            Scope::User(user) => {
                // The stripe fixes the publication's place (delivered live, or in the inbox
                // before a connect reads it); a store's commit is awaited without it, so
                // one user's stores share commits.
                let accepted = std::time::Instant::now();
                let sent = {
                    let _user = self.inner.stripes.of_user(&user).lock().await;
                    let stream = self
                        .scope_retention()
                        .map(|retention| (self.inner.streams.as_ref(), retention));
                    broker
                        .publish_to_user(
                            self.inner.engines.inbox.as_ref(),
                            self.inbox_limits(),
                            stream,
                            publication,
                        )
                        .await
                };
                let sent = match sent {
                    Ok(ToUser::Live(recipients)) => Ok(Some(recipients)),
                    Ok(ToUser::Kept(stored)) => stored.await.map(|()| None),
                    Err(e) => Err(e),
                };
                crate::metrics::engine_call(self.inner.store, "inbox_store", accepted.elapsed());
                match sent.inspect_err(|_| crate::metrics::engine_error("broker"))? {
                    Some(recipients) => (recipients, None, false),
                    None => return Ok(published(id, 0, None, true)),
                }
            }
            scope => match (self.scope_retention(), scope.stream()) {
                (Some(retention), Some(stream)) => {
                    // One node appends and delivers under the stream's stripe (its offsets
                    // reach connections in order); Redis orders a cluster's streams itself.
                    let _stream = match broker.is_remote() {
                        false => Some(self.inner.stripes.of(&stream).lock().await),
                        true => None,
                    };
                    let streams = self.inner.streams.as_ref();
                    let publish = broker.publish_to_scope_stream(streams, publication, retention);
                    let recipients = self
                        .timed("publish", publish)
                        .await
                        .inspect_err(|_| crate::metrics::engine_error("broker"))?;
                    (recipients, None, false)
                }
                _ => (self.broadcast(publication).await?, None, false),
            },
        };
        Ok(published(id, local.unwrap_or(recipients), offset, queued))
    }

    /// Places a publication in its topic's stream (`retention`: the topic keeps history) under
    /// the topic's stripe, so its offset follows every one placed before, and returns what
    /// resolves once it is durable and delivered: the recipients reached and its offset. The
    /// commit and the delivery (in offset order) are awaited without the stripe, so
    /// publications placed one after another share commits.
    async fn place_in_stream(
        &self,
        topic: &str,
        retention: Retention,
        publication: Publication,
    ) -> Result<impl std::future::Future<Output = Result<(usize, u64), EngineError>>, EngineError>
    {
        let accepted = std::time::Instant::now();
        let queued = {
            let _stream = self.inner.stripes.of(topic).lock().await;
            let history = self.inner.engines.history.as_ref();
            self.inner
                .broker
                .publish_to_stream(history, publication, retention)
                .await
                .inspect_err(|_| crate::metrics::engine_error("broker"))?
        };
        let store = self.inner.store;
        Ok(async move {
            let (at, recipients) = queued
                .await
                .inspect_err(|_| crate::metrics::engine_error("broker"))?;
            crate::metrics::engine_call(store, "history_append", accepted.elapsed());
            Ok((recipients, at.offset))
        })
    }

    /// Places a publication to a topic with history, on one node, in its stream (as
    /// [`Herald::publish`] does) and returns what resolves to its answer once it is durable and
    /// delivered; gives the publication back for any other scope, or in cluster mode (publish
    /// it with [`Herald::publish`]). A batch places its messages one after another this way,
    /// so they share commits.
    pub(crate) async fn place(
        &self,
        publication: Publication,
    ) -> Result<Result<PlacedPublish, Publication>, EngineError> {
        let retention = match &publication.scope {
            Scope::Topic(topic) if !self.inner.broker.is_remote() => self.retention(topic),
            _ => None,
        };
        let (Some(retention), Scope::Topic(topic)) = (retention, publication.scope.clone()) else {
            return Ok(Err(publication));
        };
        let id = publication.id.clone();
        let placed = self.place_in_stream(&topic, retention, publication).await?;
        Ok(Ok(Box::pin(async move {
            let (recipients, offset) = placed.await?;
            Ok(published(id, recipients, Some(offset), false))
        })))
    }

    /// The user's offline inbox, read as a connection of theirs registers (the caller holds
    /// the user's stripe, so a user-scope publication either is in it or is delivered live),
    /// and, in a cluster, whether the user was online on no node before.
    pub(crate) async fn inbox_at_attach(&self, user: &str) -> (Vec<Publication>, Option<bool>) {
        let attach = self.inner.broker.attach_user(
            self.inner.engines.inbox.as_ref(),
            self.inbox_limits(),
            user,
        );
        self.timed("inbox_read", attach).await.unwrap_or_else(|e| {
            // Unread now, delivered on a later connection: nothing is lost.
            crate::metrics::engine_error("inbox");
            tracing::warn!(user = %user, error = %e, "inbox read failed");
            (Vec::new(), None)
        })
    }

    /// The webhooks of a connection that registered: `connection.opened`, and `user.online`
    /// when it is its user's `first` connection (in a cluster: on any node).
    pub(crate) fn attached_webhooks(&self, conn: &ConnHandle, first: bool) {
        let who = conn.principal();
        // Built only for a node that sends it: a connect without webhooks allocates nothing.
        if self.wants_webhook("connection.opened") {
            let opened = hooks::ConnectionOpened {
                client_id: &conn.client_id,
                user_id: &who.user_id,
                role: &who.role,
                remote_addr: conn.remote_addr.map(|a| a.to_string()),
            };
            self.webhook("connection.opened", opened);
        }
        if first {
            let user_id = &who.user_id;
            self.webhook("user.online", hooks::UserPresence { user_id });
        }
    }

    /// Keeps in `user`'s inbox the user-scope publications a connection of theirs ended
    /// without writing (it was closed as a slow consumer, or its socket failed): a user-scope
    /// message is delivered or kept, never neither. The user may get one twice (same `id`) if
    /// another of their connections got it live.
    pub(crate) async fn keep_undelivered(&self, user: &str, publications: Vec<Arc<Publication>>) {
        // Queued in order under the stripe, committed together, awaited without it.
        let mut stores = Vec::new();
        {
            let _user = self.inner.stripes.of_user(user).lock().await;
            for publication in publications {
                let queued = self
                    .inner
                    .engines
                    .inbox
                    .queue_store(user, &publication, self.inbox_limits())
                    .await;
                stores.push((publication, queued));
            }
        }
        for (publication, queued) in stores {
            let stored = match queued {
                Ok(stored) => stored.await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                crate::metrics::engine_error("inbox");
                tracing::warn!(user, id = %publication.id, error = %e, "an undelivered user message could not be kept");
            }
        }
    }

    /// Removes acknowledged messages from a user's inbox.
    pub async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError> {
        self.timed("inbox_ack", self.inner.engines.inbox.ack(user, ids))
            .await
            .inspect_err(|_| crate::metrics::engine_error("inbox"))
    }

    /// Subscribes a connection to a topic with history (rules already checked) and, when the
    /// client gave `since`, finds every message it missed. Nothing published to the topic can
    /// slip between the read and the subscription: both happen under the topic's stripe.
    pub(crate) async fn subscribe_with_history(
        &self,
        conn: &std::sync::Arc<ConnHandle>,
        topic: &str,
        since: Option<&Since>,
        retention: Retention,
    ) -> Result<Recovery, EngineError> {
        let broker = &self.inner.broker;
        // First the node receives the topic (cluster mode), then it reads: nothing published
        // after the read can miss this node.
        broker.watch(topic).await?;
        let _stream = self.inner.stripes.of(topic).lock().await;
        let after = since.map_or(u64::MAX, |s| s.offset);
        // Publications queued before the stripe was taken are delivered first: the read then
        // holds exactly what this connection will not get live.
        let history = self.inner.engines.history.as_ref();
        let read = match history.settle().await {
            Ok(()) => {
                let read = history.read(topic, after, retention.size.max(1), retention);
                self.timed("history_read", read).await
            }
            Err(e) => Err(e),
        };
        let page = match read {
            Ok(page) => page,
            Err(e) => {
                crate::metrics::engine_error("history");
                broker.unwatch(topic).await;
                return Err(e);
            }
        };
        let recovered = since.is_some_and(|s| page.continues(s.offset, &s.epoch));
        // In cluster mode a publication the read already holds may still be on its way here:
        // this subscriber skips offsets up to the stream's newest at the read (the replay ends
        // there too).
        let floor = broker.is_remote().then_some(page.position.offset);
        let joined = self.inner.hub.subscribe_after(conn, topic, floor);
        self.joined_webhooks(conn, topic, joined).await;
        let fresh = joined.fresh;
        if fresh {
            broker.subscribed_at(topic, &page.position);
        } else {
            broker.unwatch(topic).await;
        }
        Ok(Recovery {
            fresh,
            position: page.position,
            recovered,
            replay: if recovered { page.messages } else { Vec::new() },
        })
    }

    /// A page of a topic's stream for the `history` command and API: messages after
    /// `since.offset` when `since.epoch` is the stream's, else from the oldest kept.
    pub async fn history(
        &self,
        topic: &str,
        since: Option<&Since>,
        limit: usize,
    ) -> Result<Option<HistoryPage>, EngineError> {
        let Some(retention) = self.retention(topic) else {
            return Ok(None);
        };
        let history = &self.inner.engines.history;
        let read = history.read(topic, since.map_or(0, |s| s.offset), limit, retention);
        let mut page = self
            .timed("history_read", read)
            .await
            .inspect_err(|_| crate::metrics::engine_error("history"))?;
        if since.is_some_and(|s| s.epoch != page.position.epoch) {
            let read = history.read(topic, 0, limit, retention);
            page = self.timed("history_read", read).await?;
        }
        Ok(Some(page))
    }
}

/// A publication placed in its stream: resolves to its answer once durable and delivered.
pub(crate) type PlacedPublish =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Published, EngineError>> + Send>>;

fn published(id: String, recipients: usize, offset: Option<u64>, queued: bool) -> Published {
    Published {
        id,
        recipients,
        offset,
        queued,
    }
}
