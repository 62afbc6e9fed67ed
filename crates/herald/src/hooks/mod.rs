//! Backend hooks (docs/HOOKS.md): the proxy asks the app's backend, over HTTP, to decide what
//! Herald cannot: who a connection without a valid JWT is (`connect`), whether a client may
//! subscribe to or publish on a namespace whose rule is `"proxy"`, and what a message type
//! that is no command means (`rpc`).
//!
//! Every call is a `POST` of a JSON body, signed (`X-Herald-Signature: sha256=<hex HMAC of
//! the body>`), on one pooled keep-alive client, bounded by `[proxy] timeout`. A timeout, a
//! refused connection, a 5xx or a 3xx is the backend failing, and a failure is never a yes:
//! the caller refuses with `processing_error` (or 503).

#[cfg(feature = "hooks")]
mod proxy;
#[cfg(feature = "hooks")]
pub use proxy::{signature, Proxy};
#[cfg(feature = "hooks")]
mod webhooks;
#[cfg(feature = "hooks")]
pub use webhooks::WebhookClient;

#[cfg(not(feature = "hooks"))]
mod no_proxy;
#[cfg(not(feature = "hooks"))]
pub use no_proxy::{Proxy, WebhookClient};

/// The one kind of HTTP client the hooks use: keep-alive, every call (connecting included)
/// bounded by `timeout`, redirects not followed (a 3xx is the backend failing).
#[cfg(feature = "hooks")]
fn http_client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The proxy's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Connect,
    Subscribe,
    Publish,
    Rpc,
}

impl Hook {
    /// The hook's name in config, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Rpc => "rpc",
        }
    }

    pub const ALL: [Hook; 4] = [Self::Connect, Self::Subscribe, Self::Publish, Self::Rpc];
}

/// What the backend answered: its status and its body (`null` when empty, the text as a
/// string when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// The backend failed (a timeout, a refused connection, a 5xx or 3xx): never a yes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {hook} hook failed: {why}")]
pub struct HookFailure {
    pub hook: &'static str,
    pub why: String,
}

/// The URL of `hook` in `[proxy]`, when the backend decides it.
pub fn url(config: &crate::config::ProxyConfig, hook: Hook) -> Option<&str> {
    match hook {
        Hook::Connect => config.connect.as_deref(),
        Hook::Subscribe => config.subscribe.as_deref(),
        Hook::Publish => config.publish.as_deref(),
        Hook::Rpc => config.rpc.as_deref(),
    }
    .filter(|url| !url.is_empty())
}
