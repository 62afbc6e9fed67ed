//! The backend hooks as Rust callbacks, for an app that embeds Herald (docs/EMBEDDING.md): the
//! decisions and events a `herald serve` backend gets over HTTP (docs/HOOKS.md), without HTTP.
//! One model in both worlds: a namespace with `subscribe = "proxy"` or `publish = "proxy"`
//! asks the app's callback when it set one (else the `[proxy]` hook), and every webhook event
//! also reaches the app's event callback, with the same name and `data`. The `connect` hook's
//! twin is the [`crate::auth::Authenticator`], the `rpc` hook's the message handlers
//! ([`crate::HeraldBuilder::on`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::Principal;

/// A subscription to a topic whose namespace has `subscribe = "proxy"`.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The connection asking (none for a check made outside a connection).
    pub client_id: Option<String>,
    /// Who it is.
    pub principal: Principal,
    /// The topic.
    pub topic: String,
}

/// A client's publish to a topic whose namespace has `publish = "proxy"`.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The connection publishing.
    pub client_id: String,
    /// Who it is.
    pub principal: Principal,
    /// The topic.
    pub topic: String,
    /// The event name.
    pub event: String,
    /// The data as the client sent it.
    pub data: Value,
}

/// What the app decided about a client's publish.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishDecision {
    /// Published as sent.
    Allow,
    /// Published with this data instead.
    Replace(Value),
    /// Refused: the client gets `error` `forbidden`.
    Deny,
}

/// A lifecycle event, as a webhook would carry it (docs/HOOKS.md): `connection.opened`,
/// `user.online`, `topic.vacated`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct HookEvent {
    /// The event's name.
    pub name: &'static str,
    /// The event's `data`, the same fields as the webhook's.
    pub data: Value,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type SubscribeFn = dyn Fn(SubscribeRequest) -> Boxed<bool> + Send + Sync;
type PublishFn = dyn Fn(PublishRequest) -> Boxed<PublishDecision> + Send + Sync;
type EventFn = dyn Fn(&HookEvent) + Send + Sync;

/// The app's callbacks, set on the builder.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub subscribe: Option<Arc<SubscribeFn>>,
    pub publish: Option<Arc<PublishFn>>,
    pub events: Option<Arc<EventFn>>,
}

impl Callbacks {
    pub(crate) fn on_subscribe<F, Fut>(&mut self, f: F)
    where
        F: Fn(SubscribeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.subscribe = Some(Arc::new(move |request| Box::pin(f(request))));
    }

    pub(crate) fn on_publish<F, Fut>(&mut self, f: F)
    where
        F: Fn(PublishRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PublishDecision> + Send + 'static,
    {
        self.publish = Some(Arc::new(move |request| Box::pin(f(request))));
    }

    pub(crate) fn on_event(&mut self, f: impl Fn(&HookEvent) + Send + Sync + 'static) {
        self.events = Some(Arc::new(f));
    }

    /// Hands an event to the app's callback, if it set one.
    pub(crate) fn event(&self, name: &'static str, data: &impl serde::Serialize) {
        let Some(events) = &self.events else {
            return;
        };
        match serde_json::to_value(data) {
            Ok(data) => events(&HookEvent { name, data }),
            Err(e) => tracing::warn!(event = name, error = %e, "hook event not encoded"),
        }
    }
}
