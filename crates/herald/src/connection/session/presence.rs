//! Who is on a topic.

use serde_json::Value;

use super::Session;
use crate::engine::presence_reply;
use crate::protocol::ErrorCode;
use crate::topic;

impl Session {
    /// Who is on a topic: its namespace must enable presence, and the connection must be
    /// allowed to subscribe to it.
    pub(super) async fn presence(&mut self, topic: &str, reference: Option<&Value>) {
        if topic::validate(topic).is_ok() && !self.node.has_presence(topic) {
            self.error(
                ErrorCode::Forbidden,
                &format!("presence is not enabled for `{topic}`"),
                reference,
            );
            return;
        }
        if !self.may_subscribe(topic, reference).await {
            return;
        }
        match self.node.presence(topic).await {
            Ok(users) => self.reply(&presence_reply(topic, &users), reference),
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }
}
