//! Herald: a real-time messaging server, as a library you can put inside your axum app.
//!
//! Clients hold a WebSocket (`/ws`), authenticate with a JWT (or your own [`auth::Authenticator`])
//! and subscribe to topics; your code and your backends publish to one of five scopes:
//! everyone, one user (all their tabs), a role, a project's members, or a topic's subscribers.
//! Topics can keep history (clients resume after a reconnect without a gap), users get an
//! offline inbox, and namespaces can track presence. The wire protocol is in the project's
//! `docs/PROTOCOL.md`.
//!
//! The handful of types you need:
//!
//! - [`Herald`]: a running node, a cheap cloneable handle: [`Herald::broadcast_to_user`],
//!   [`Herald::broadcast_to_project`], [`Herald::publish`], [`Herald::disconnect_user`],
//!   [`Herald::presence`], [`Herald::stats`], and [`Herald::router`] to merge into your app;
//! - [`HeraldBuilder`] (from [`Herald::builder`]): the [`Config`], the JWT secret, your own
//!   authenticator or membership source ([`engine::Membership`]), and custom message handlers
//!   ([`HeraldBuilder::on`], which receive an [`Incoming`] and may fail with a
//!   [`HandlerError`]);
//! - [`Published`]: what a publication reached.
//!
//! ```no_run
//! use herald::{Config, Herald};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let herald = Herald::builder()
//!     .config(Config::default())            // data dir ./herald-data, limits, namespaces
//!     .jwt_secret("shared with your login service")
//!     .build()
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     .merge(herald.router());               // /ws, /api/v1/..., /health, /metrics
//!
//! // Anywhere in the app: every tab of user 42 gets it (or their inbox keeps it).
//! herald.broadcast_to_user("42", "notification", json!({ "title": "Check is down" })).await?;
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Inside (see ARCHITECTURE.md for the invariants): `protocol` is the only module that knows
//! the wire JSON; `auth` turns tokens into principals; `topic` holds the rules of topics; the
//! hub indexes live connections and fans out; each connection is one task; `engine` holds the
//! traits for state beyond one process (membership, presence, history, inbox) with memory and
//! SQLite implementations that pass one conformance suite.

#![warn(missing_docs)]

pub mod auth;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_support;
pub mod config;
pub(crate) mod connection;
pub mod engine;
pub(crate) mod hooks;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod metrics;
mod node;
pub mod protocol;
pub mod publication;
pub(crate) mod sync;
pub mod topic;
pub(crate) mod wire;

pub use config::Config;
pub use http::Part;

/// The git commit this build comes from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("HERALD_COMMIT");
/// The version and commit, as `herald --version` prints them: `0.1.0 (commit abc123def456)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HERALD_COMMIT"),
    ")"
);
/// The attribute the [`auth::Authenticator`], [`auth::AdminCheck`] and
/// [`engine::Membership`] impls of an app need (re-exported so its version always matches).
pub use async_trait::async_trait;
pub use node::{
    Engines, Herald, HeraldBuilder, PublishError, Published, Recovery, StartError, Stats,
};
pub use node::{HandlerError, HandlerResult, Incoming};
pub use node::{HookEvent, PublishDecision, PublishRequest, SubscribeRequest};
pub use publication::{Publication, Scope};
