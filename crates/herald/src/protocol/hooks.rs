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
