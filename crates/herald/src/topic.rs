//! Topic names and who may use them (docs/PROTOCOL.md, section 4).
//!
//! The built-in rules of `user:`, `project:` and `role:` always hold; a namespace entry in the
//! config may add features (client publish on `project:`, presence, history) but never widens
//! who may subscribe to those three.

use crate::auth::Principal;
use crate::config::{Config, PublishRule, SubscribeRule};

pub use crate::protocol::{is_topic_byte, MAX_TOPIC_LEN};

/// How much of a topic's stream is kept: the newest `size` messages, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept.
    pub size: usize,
    /// How long a message is kept.
    pub ttl: std::time::Duration,
}

/// Checks a topic name's shape; the error says what is wrong.
///
/// ```
/// use herald::topic::validate;
/// assert!(validate("chat:room-1/general").is_ok());
/// assert!(validate("chat room").is_err());
/// assert!(validate("").is_err());
/// ```
pub fn validate(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic must not be empty".into());
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!("topic is longer than {MAX_TOPIC_LEN} bytes"));
    }
    if !topic.bytes().all(is_topic_byte) {
        return Err("topic may only hold letters, digits and :_-.@/".into());
    }
    Ok(())
}

/// The namespace of a topic: the part before the first `:`. A topic without `:` belongs to
/// the default namespace (`""`), which no config entry can name.
pub fn namespace(topic: &str) -> &str {
    topic.split_once(':').map_or("", |(ns, _)| ns)
}

/// What a subscription needs beyond the principal itself.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeCheck {
    /// The principal may subscribe.
    Allowed,
    /// The principal may not.
    Denied,
    /// Allowed when the principal is a member of this project (store or token claim).
    MemberOf(String),
    /// Allowed when the backend's `subscribe` hook says so.
    Proxy,
}

/// How much of the topic's stream is kept, or `None` when its namespace keeps no history.
pub fn retention(config: &Config, topic: &str) -> Option<Retention> {
    config
        .namespace(namespace(topic))
        .filter(|ns| ns.history_size > 0)
        .map(|ns| Retention {
            size: ns.history_size,
            ttl: ns.history_ttl,
        })
}

/// Decides whether `who` may subscribe to `topic` (already validated).
pub fn subscribe_check(config: &Config, who: &Principal, topic: &str) -> SubscribeCheck {
    let (ns, rest) = topic.split_once(':').unwrap_or(("", topic));
    match ns {
        "user" => allow_if(rest == &*who.user_id),
        "role" => allow_if(rest == &*who.role),
        "project" => member_of(rest),
        _ => match config.namespace(ns).map(|n| &n.subscribe) {
            None | Some(SubscribeRule::Authenticated) => SubscribeCheck::Allowed,
            Some(SubscribeRule::Members) => member_of(rest),
            Some(SubscribeRule::Role(role)) => allow_if(role.as_str() == &*who.role),
            Some(SubscribeRule::None) => SubscribeCheck::Denied,
            Some(SubscribeRule::Proxy) => SubscribeCheck::Proxy,
        },
    }
}

/// Whether clients may publish to `topic`: never to `user:` and `role:`, otherwise as the
/// namespace's `publish` says (default no; `"proxy"`: the backend decides). Publishing also
/// requires being allowed to subscribe.
pub fn client_publish_rule(config: &Config, topic: &str) -> PublishRule {
    // Conduit's clients broadcast to any room: under its profile, a namespace the config does
    // not name lets clients publish (a named one keeps its rule).
    let unnamed = match config.profile {
        Some(crate::config::Profile::Conduit) => PublishRule::Allowed,
        _ => PublishRule::Denied,
    };
    match namespace(topic) {
        "user" | "role" => PublishRule::Denied,
        ns => config.namespace(ns).map_or(unnamed, |n| n.publish),
    }
}

fn allow_if(ok: bool) -> SubscribeCheck {
    if ok {
        SubscribeCheck::Allowed
    } else {
        SubscribeCheck::Denied
    }
}

fn member_of(project: &str) -> SubscribeCheck {
    if project.is_empty() {
        SubscribeCheck::Denied
    } else {
        SubscribeCheck::MemberOf(project.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::new("alice", "user", vec!["p1".into()])
    }

    #[test]
    fn names_are_checked_for_length_and_characters() {
        assert!(validate("chat:room-1/a.b@c_d").is_ok());
        assert!(validate("").is_err());
        assert!(validate("chat room").is_err());
        assert!(validate(&"a".repeat(256)).is_err());
        assert!(validate(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn builtin_namespaces_follow_the_principal() {
        let config = Config::default();
        let who = alice();
        assert_eq!(
            subscribe_check(&config, &who, "user:alice"),
            SubscribeCheck::Allowed
        );
        assert_eq!(
            subscribe_check(&config, &who, "user:bob"),
            SubscribeCheck::Denied
        );
        assert_eq!(
            subscribe_check(&config, &who, "role:user"),
            SubscribeCheck::Allowed
        );
        assert_eq!(
            subscribe_check(&config, &who, "role:admin"),
            SubscribeCheck::Denied
        );
        assert_eq!(
            subscribe_check(&config, &who, "project:p9"),
            SubscribeCheck::MemberOf("p9".into())
        );
        assert_eq!(
            subscribe_check(&config, &who, "news"),
            SubscribeCheck::Allowed
        );
        assert_eq!(client_publish_rule(&config, "chat:x"), PublishRule::Denied);
        assert_eq!(
            client_publish_rule(&config, "user:alice"),
            PublishRule::Denied
        );
    }
}
