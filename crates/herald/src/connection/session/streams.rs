//! What a client does with streams: publish to a topic, read its history, acknowledge its
//! offline messages.

use serde_json::Value;

use super::Session;
use crate::config::PublishRule;
use crate::node::PublishVerdict;
use crate::protocol::replies::Published;
use crate::protocol::{ErrorCode, Sender, Since};
use crate::publication::{Publication, Scope};
use crate::topic;

impl Session {
    pub(super) async fn publish(
        &mut self,
        topic: String,
        event: String,
        data: Value,
        reference: Option<&Value>,
    ) {
        if !self.may_subscribe(&topic, reference).await {
            return;
        }
        if crate::protocol::is_reserved_event(&event) {
            self.error(
                ErrorCode::Forbidden,
                &format!("`{event}` is a name only the server sends"),
                reference,
            );
            return;
        }
        let who = self.conn.principal();
        let forbidden = || format!("clients may not publish to `{topic}`");
        let data = match topic::client_publish_rule(self.node.config(), &topic) {
            PublishRule::Allowed => data,
            PublishRule::Denied => {
                return self.error(ErrorCode::Forbidden, &forbidden(), reference)
            }
            PublishRule::Proxy => {
                let client = &self.conn.client_id;
                match self
                    .node
                    .proxy_publish(client, &who, &topic, &event, &data)
                    .await
                {
                    Ok(PublishVerdict::Allowed(replaced)) => replaced.unwrap_or(data),
                    Ok(PublishVerdict::Forbidden) => {
                        return self.error(ErrorCode::Forbidden, &forbidden(), reference)
                    }
                    Err(e) => {
                        return self.error(ErrorCode::ProcessingError, &e.to_string(), reference)
                    }
                }
            }
        };
        let mut publication = Publication::new(Scope::Topic(topic.clone()), event, data);
        publication.from = Some(Sender {
            user_id: who.user_id.to_string(),
            client_id: self.conn.client_id.clone(),
        });
        // Copied for the webhook only when it is sent.
        let told = self
            .node
            .wants_webhook("client.published")
            .then(|| (publication.event.clone(), publication.data.clone()));
        match self.node.publish(publication).await {
            Ok(published) => {
                if let Some((event, data)) = &told {
                    let sent = crate::protocol::hooks::ClientPublished {
                        client_id: &self.conn.client_id,
                        user_id: &who.user_id,
                        topic: &topic,
                        event,
                        id: &published.id,
                        data,
                    };
                    self.node.webhook("client.published", sent);
                }
                self.reply(
                    &Published {
                        topic: &topic,
                        id: &published.id,
                        offset: published.offset,
                    },
                    reference,
                );
            }
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    /// A page of a topic's stream: its namespace must keep history (else `not_found`) and the
    /// connection must be allowed to subscribe.
    pub(super) async fn history(
        &mut self,
        topic: &str,
        since: Option<Since>,
        limit: usize,
        reference: Option<&Value>,
    ) {
        if topic::validate(topic).is_ok() && self.node.retention(topic).is_none() {
            let message = format!("`{topic}` keeps no history");
            self.error(ErrorCode::NotFound, &message, reference);
            return;
        }
        if !self.may_subscribe(topic, reference).await {
            return;
        }
        match self.node.history(topic, since.as_ref(), limit).await {
            Ok(Some(page)) => self.reply(&page.reply(topic), reference),
            Ok(None) => {
                let message = format!("`{topic}` keeps no history");
                self.error(ErrorCode::NotFound, &message, reference);
            }
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    /// Removes acknowledged messages from the user's offline inbox; no reply.
    pub(super) async fn ack(&mut self, ids: &[String], reference: Option<&Value>) {
        let user = self.conn.principal().user_id;
        if let Err(e) = self.node.ack(&user, ids).await {
            self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
        }
    }
}
