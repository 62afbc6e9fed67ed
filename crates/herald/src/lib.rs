//! Herald: a real-time messaging server as a library.
//!
//! Clients hold a WebSocket (`/ws`), authenticate with a JWT and subscribe to topics; backends
//! publish over HTTP (or, in Rust, through [`Herald::publish`]) to one of five scopes: everyone,
//! one user, a role, a project's members, or a topic's subscribers.
//!
//! The map (see ARCHITECTURE.md for the invariants):
//! - [`protocol`]: the only module that knows the wire JSON;
//! - [`auth`]: token to [`auth::Principal`];
//! - [`topic`]: topic names and who may use them;
//! - [`hub`]: live connections, their indexes and fan-out;
//! - [`connection`]: one socket's task (commands, queue, writes);
//! - [`engine`]: the traits for state beyond one process, with embedded implementations;
//! - [`http`]: the axum router;
//! - [`Herald`]: the node that ties them together.

pub mod auth;
pub mod config;
pub mod connection;
pub mod engine;
mod handler;
pub mod http;
pub mod hub;
pub mod metrics;
mod node;
pub mod protocol;
pub mod publication;
pub mod topic;

pub use config::Config;
pub use handler::{HandlerError, HandlerResult, Incoming};
pub use node::{Engines, Herald, HeraldBuilder, Published, Recovery, StartError, Stats};
pub use publication::{Publication, Scope};
