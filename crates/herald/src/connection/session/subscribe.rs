//! Subscribing (with a resume from `since` on topics with history) and unsubscribing.

use serde_json::Value;

use super::Session;
use crate::connection::Next;
use crate::engine::StreamPosition;
use crate::protocol::replies::{Reply, Room, Subscribed, Unsubscribed};
use crate::protocol::{topic_error_frame, ErrorCode, Frame, ReplyStyle, Since, Wanted};
use crate::publication::Publication;
use crate::topic;

impl Session {
    /// Checks the topic's name and the subscribe rule; on refusal the error is already queued.
    pub(super) async fn may_subscribe(&mut self, topic: &str, reference: Option<&Value>) -> bool {
        if let Err(e) = topic::validate(topic) {
            self.topic_error(ErrorCode::InvalidMessage, topic, &e, reference);
            return false;
        }
        if let Some(readable) = &self.reads_only {
            // An anonymous reader holds what its URL names, whatever the namespace's rule.
            let allowed = readable.iter().any(|t| t == topic);
            if !allowed {
                let text = format!("not allowed to subscribe to `{topic}`");
                self.topic_error(ErrorCode::Forbidden, topic, &text, reference);
            }
            return allowed;
        }
        let who = self.conn.principal();
        let client_id = Some(self.conn.client_id.as_str());
        let allowed = match self.node.may_subscribe_as(client_id, &who, topic).await {
            Ok(allowed) => allowed,
            Err(e) => {
                let message = e.to_string();
                self.topic_error(ErrorCode::ProcessingError, topic, &message, reference);
                return false;
            }
        };
        if !allowed {
            self.topic_error(
                ErrorCode::Forbidden,
                topic,
                &format!("not allowed to subscribe to `{topic}`"),
                reference,
            );
        }
        allowed
    }

    /// Whether the connection may hold one more subscription (`max_subscriptions`); one it
    /// already holds is always fine. On refusal `limit_exceeded` is queued and nothing changes.
    fn has_room_for(&mut self, topic: &str, reference: Option<&Value>) -> bool {
        let max = self.node.config().limits.max_subscriptions;
        if max == 0 || self.conn.subscription_count() < max || self.conn.is_subscribed(topic) {
            return true;
        }
        crate::metrics::dropped("max_subscriptions");
        self.topic_error(
            ErrorCode::LimitExceeded,
            topic,
            &format!("a connection may hold at most {max} subscriptions"),
            reference,
        );
        false
    }

    /// Subscribes (or, for a resume on a topic with history, hands the work to the loop).
    pub async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<Since>,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) -> Next {
        match self.subscribe_one(topic, since, style, reference).await {
            Some(since) => Next::Recover {
                topics: vec![Wanted {
                    topic: topic.to_string(),
                    since: Some(since),
                }],
                style,
                reference: reference.cloned(),
            },
            None => Next::Continue,
        }
    }

    /// A batch `subscribe`: each topic is answered on its own, as if subscribed one by one,
    /// with the command's `ref`; the resumes go to the loop together, after the others.
    pub(super) async fn subscribe_many(
        &mut self,
        topics: Vec<Wanted>,
        reference: Option<&Value>,
    ) -> Next {
        let style = ReplyStyle::Canonical;
        let mut resumes = Vec::new();
        for Wanted { topic, since } in topics {
            if let Some(since) = self.subscribe_one(&topic, since, style, reference).await {
                resumes.push(Wanted {
                    topic,
                    since: Some(since),
                });
            }
        }
        if resumes.is_empty() {
            return Next::Continue;
        }
        Next::Recover {
            topics: resumes,
            style,
            reference: reference.cloned(),
        }
    }

    /// Subscribes to one topic and queues its answer, or returns `since` when the subscription
    /// resumes on a topic with history (the loop then calls [`Session::recover`]).
    async fn subscribe_one(
        &mut self,
        topic: &str,
        since: Option<Since>,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) -> Option<Since> {
        if !self.may_subscribe(topic, reference).await || !self.has_room_for(topic, reference) {
            return None;
        }
        let Some(retention) = self.node.retention(topic) else {
            let fresh = match self.node.subscribe(&self.conn, topic).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    let message = e.to_string();
                    self.topic_error(ErrorCode::ProcessingError, topic, &message, reference);
                    return None;
                }
            };
            // Without history nothing can be replayed: a client asking to resume is told so.
            let recovered = since.as_ref().map(|_| false);
            self.queue(subscribed_frame(topic, style, None, recovered, reference));
            if fresh {
                self.node.joined(&self.conn, topic).await;
            }
            return None;
        };
        if since.is_some() {
            return since;
        }
        match self
            .node
            .subscribe_with_history(&self.conn, topic, None, retention)
            .await
        {
            Ok(recovery) => {
                let at = Some(&recovery.position);
                self.queue(subscribed_frame(topic, style, at, Some(false), reference));
                if recovery.fresh {
                    self.node.joined(&self.conn, topic).await;
                }
            }
            Err(e) => {
                let message = e.to_string();
                self.topic_error(ErrorCode::ProcessingError, topic, &message, reference);
            }
        }
        None
    }

    /// Subscribes with recovery from `since` and returns the frames to write at once: the
    /// `subscribed` reply, then every missed message in order. The second value is true when
    /// the subscription is new (the loop then calls [`Session::joined`]).
    pub async fn recover(
        &mut self,
        topic: &str,
        since: &Since,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) -> (Vec<Frame>, bool) {
        let Some(retention) = self.node.retention(topic) else {
            return (Vec::new(), false);
        };
        match self
            .node
            .subscribe_with_history(&self.conn, topic, Some(since), retention)
            .await
        {
            Ok(recovery) => {
                let mut frames = Vec::with_capacity(recovery.replay.len() + 1);
                frames.push(subscribed_frame(
                    topic,
                    style,
                    Some(&recovery.position),
                    Some(recovery.recovered),
                    reference,
                ));
                frames.extend(recovery.replay.iter().map(Publication::frame));
                (frames, recovery.fresh)
            }
            Err(e) => (
                vec![topic_error_frame(
                    ErrorCode::ProcessingError,
                    &e.to_string(),
                    Some(topic),
                    reference,
                )],
                false,
            ),
        }
    }

    /// Presence and `user_joined` for a new subscription.
    pub async fn joined(&self, topic: &str) {
        self.node.joined(&self.conn, topic).await;
    }

    pub(super) async fn unsubscribe(
        &mut self,
        topic: &str,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) {
        if let Err(e) = topic::validate(topic) {
            self.topic_error(ErrorCode::InvalidMessage, topic, &e, reference);
            return;
        }
        self.node.leave_topic(&self.conn, topic).await;
        match style {
            ReplyStyle::Room => self.reply(
                &Room {
                    joined: false,
                    room: topic,
                },
                reference,
            ),
            ReplyStyle::Canonical => self.reply(
                &Unsubscribed {
                    topic,
                    reason: None,
                },
                reference,
            ),
        }
    }
}

/// `subscribed` `{topic, offset, epoch, recovered}` (or the room spelling `room_joined`).
fn subscribed_frame(
    topic: &str,
    style: ReplyStyle,
    at: Option<&StreamPosition>,
    recovered: Option<bool>,
    reference: Option<&Value>,
) -> Frame {
    if style == ReplyStyle::Room {
        return Room {
            joined: true,
            room: topic,
        }
        .frame(reference);
    }
    Subscribed {
        topic,
        offset: at.map(|at| at.offset),
        epoch: at.map(|at| at.epoch.as_str()),
        recovered,
    }
    .frame(reference)
}
