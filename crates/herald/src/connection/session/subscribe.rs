//! Subscribing (with a resume from `since` on topics with history) and unsubscribing.

use serde_json::Value;

use super::Session;
use crate::connection::Next;
use crate::engine::StreamPosition;
use crate::protocol::replies::{Reply, Room, Subscribed, Unsubscribed};
use crate::protocol::{error_frame, ErrorCode, Frame, ReplyStyle, Since};
use crate::publication::Publication;
use crate::topic;

impl Session {
    /// Checks the topic's name and the subscribe rule; on refusal the error is already queued.
    pub(super) async fn may_subscribe(&mut self, topic: &str, reference: Option<&Value>) -> bool {
        if let Err(e) = topic::validate(topic) {
            self.error(ErrorCode::InvalidMessage, &e, reference);
            return false;
        }
        let who = self.conn.principal();
        let allowed = match self.node.may_subscribe(&who, topic).await {
            Ok(allowed) => allowed,
            Err(e) => {
                self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
                return false;
            }
        };
        if !allowed {
            self.error(
                ErrorCode::Forbidden,
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
        self.error(
            ErrorCode::LimitExceeded,
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
        if !self.may_subscribe(topic, reference).await || !self.has_room_for(topic, reference) {
            return Next::Continue;
        }
        let Some(retention) = self.node.retention(topic) else {
            let fresh = match self.node.subscribe(&self.conn, topic).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
                    return Next::Continue;
                }
            };
            // Without history nothing can be replayed: a client asking to resume is told so.
            let recovered = since.as_ref().map(|_| false);
            self.queue(subscribed_frame(topic, style, None, recovered, reference));
            if fresh {
                self.node.joined(&self.conn, topic).await;
            }
            return Next::Continue;
        };
        if let Some(since) = since {
            return Next::Recover {
                topic: topic.to_string(),
                since,
                style,
                reference: reference.cloned(),
            };
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
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
        Next::Continue
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
                vec![error_frame(
                    ErrorCode::ProcessingError,
                    &e.to_string(),
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
            self.error(ErrorCode::InvalidMessage, &e, reference);
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
