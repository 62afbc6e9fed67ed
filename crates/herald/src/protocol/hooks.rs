//! The bodies Herald sends to the backend's hooks (docs/HOOKS.md), and the `error` a client
//! gets when the backend refuses an `rpc` with its own code.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// `connect`: who is this connection without a valid JWT?
#[derive(Debug, Serialize)]
pub struct ConnectCall<'a> {
    /// Always `null`: the connection gets its id once accepted.
    pub client_id: Option<&'a str>,
    pub remote_addr: Option<String>,
    /// The forwarded headers (`[proxy] forward_headers`), by lower-case name.
    pub headers: BTreeMap<&'a str, &'a str>,
    /// The query parameters but `token`.
    pub query: BTreeMap<&'a str, &'a str>,
    /// The token Herald's own check refused, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
}

/// `subscribe`: may this connection subscribe to `topic`?
#[derive(Debug, Serialize)]
pub struct SubscribeCall<'a> {
    pub client_id: Option<&'a str>,
    pub user_id: &'a str,
    pub role: &'a str,
    pub topic: &'a str,
}

/// `publish`: may this connection publish `data` as `type` on `topic`?
#[derive(Debug, Serialize)]
pub struct PublishCall<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    pub topic: &'a str,
    #[serde(rename = "type")]
    pub event: &'a str,
    pub data: &'a Value,
}

/// `rpc`: what does this message of a type that is no command mean?
#[derive(Debug, Serialize)]
pub struct RpcCall<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: &'a Value,
}

/// The `data` of an `error` whose code the backend chose (an `rpc` it refused).
#[derive(Debug, Serialize)]
pub struct BackendError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// One webhook event: `{id, name, time, node, data}`, the same `id` on every retry.
#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a, D: Serialize> {
    pub id: &'a str,
    pub name: &'a str,
    pub time: &'a str,
    pub node: &'a str,
    pub data: D,
}

/// `connection.opened`.
#[derive(Debug, Serialize)]
pub struct ConnectionOpened<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    pub remote_addr: Option<String>,
}

/// `connection.closed`.
#[derive(Debug, Serialize)]
pub struct ConnectionClosed<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    pub reason: &'a str,
    /// The close code sent, when the server closed it (none when the client left first).
    pub code: Option<u16>,
}

/// `user.online` / `user.offline`.
#[derive(Debug, Serialize)]
pub struct UserPresence<'a> {
    pub user_id: &'a str,
}

/// `topic.subscribed` / `topic.unsubscribed`.
#[derive(Debug, Serialize)]
pub struct TopicSubscription<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub topic: &'a str,
}

/// `topic.occupied` / `topic.vacated`.
#[derive(Debug, Serialize)]
pub struct TopicOccupancy<'a> {
    pub topic: &'a str,
}

/// `client.published`.
#[derive(Debug, Serialize)]
pub struct ClientPublished<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub topic: &'a str,
    #[serde(rename = "type")]
    pub event: &'a str,
    pub id: &'a str,
    pub data: &'a Value,
}

/// A webhook request's body, `{"events": [...]}`, from events already encoded one by one.
pub fn webhook_batch<'a>(events: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (n, event) in events.enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}
