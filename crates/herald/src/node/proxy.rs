//! The node's side of the backend hooks' proxy (docs/HOOKS.md): the `connect` hook as an
//! authenticator around the node's own, and the `subscribe`, `publish` and `rpc` decisions
//! the connections ask for. A backend that fails is never a yes.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::callbacks::{Callbacks, PublishDecision, PublishRequest, SubscribeRequest};
use super::Herald;
use crate::auth::{AuthError, Authenticator, ConnectRequest, Principal};
use crate::config::{Config, PublishRule, SubscribeRule};
use crate::engine::EngineError;
use crate::hooks::{Answer, Hook, HookFailure, Proxy};
use crate::protocol::hooks::{ConnectCall, PublishCall, RpcCall, SubscribeCall};

impl From<HookFailure> for EngineError {
    fn from(e: HookFailure) -> Self {
        EngineError(e.to_string())
    }
}

/// A namespace that leaves a decision to the backend needs that hook configured (or, in an
/// embedding app, its callback).
pub(super) fn check_rules(
    config: &Config,
    proxy: Option<&Proxy>,
    callbacks: &Callbacks,
) -> Result<(), String> {
    let has = |hook| proxy.is_some_and(|p| p.has(hook));
    for ns in &config.namespaces {
        if ns.subscribe == SubscribeRule::Proxy
            && !has(Hook::Subscribe)
            && callbacks.subscribe.is_none()
        {
            return Err(format!(
                "namespace `{}` has subscribe = \"proxy\": set [proxy] subscribe",
                ns.name
            ));
        }
        if ns.publish == PublishRule::Proxy && !has(Hook::Publish) && callbacks.publish.is_none() {
            return Err(format!(
                "namespace `{}` has publish = \"proxy\": set [proxy] publish",
                ns.name
            ));
        }
    }
    Ok(())
}

/// The node's authenticator, asking the `connect` hook for connections it does not take.
pub(super) fn with_connect_hook(
    authenticator: Arc<dyn Authenticator>,
    proxy: Option<Arc<Proxy>>,
) -> Arc<dyn Authenticator> {
    match proxy {
        Some(proxy) if proxy.has(Hook::Connect) => Arc::new(ConnectHook {
            inner: authenticator,
            proxy,
        }),
        _ => authenticator,
    }
}

/// Takes what the inner authenticator takes; asks the backend about the rest (no token, or
/// one the inner authenticator refused).
struct ConnectHook {
    inner: Arc<dyn Authenticator>,
    proxy: Arc<Proxy>,
}

impl ConnectHook {
    async fn ask(
        &self,
        request: Option<&ConnectRequest>,
        token: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let body = ConnectCall {
            client_id: None,
            remote_addr: request.and_then(|r| r.remote_addr).map(|a| a.to_string()),
            headers: request.map_or_else(Default::default, |r| self.proxy.forwarded(&r.headers)),
            query: request.map_or_else(Default::default, |r| {
                r.query
                    .iter()
                    .filter(|(k, _)| k.as_str() != "token")
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            }),
            token,
        };
        let answer = self
            .proxy
            .call(Hook::Connect, &body)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        principal_of(&answer)
    }
}

/// The principal a `connect` answer names: 200 `{user_id, role?, projects?, expires_in?}`;
/// anything else is a refusal.
fn principal_of(answer: &Answer) -> Result<Principal, AuthError> {
    let refused = |why: &str| Err(AuthError::Invalid(format!("the backend refused: {why}")));
    if answer.status != 200 {
        return refused(&format!("it answered {}", answer.status));
    }
    let Some(user) = answer
        .body
        .get("user_id")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return refused("its answer names no user_id");
    };
    let role = answer
        .body
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let projects: Vec<String> = answer
        .body
        .get("projects")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut principal = Principal::new(user, role, projects);
    if let Some(seconds) = answer.body.get("expires_in").and_then(Value::as_u64) {
        principal.expires_at = Some(crate::auth::unix_now().saturating_add(seconds));
    }
    Ok(principal)
}

#[async_trait]
impl Authenticator for ConnectHook {
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match self.inner.authenticate(token).await {
            Ok(principal) => Ok(principal),
            Err(refused) => self.ask(None, Some(token)).await.map_err(|e| match e {
                AuthError::Invalid(_) => refused,
                other => other,
            }),
        }
    }

    async fn authenticate_request(
        &self,
        token: Option<&str>,
        request: &ConnectRequest,
    ) -> Result<Option<Principal>, AuthError> {
        match self.inner.authenticate_request(token, request).await {
            Ok(Some(principal)) => Ok(Some(principal)),
            Ok(None) => self.ask(Some(request), None).await.map(Some),
            Err(refused) => self
                .ask(Some(request), token)
                .await
                .map(Some)
                .map_err(|e| match e {
                    AuthError::Invalid(_) => refused,
                    other => other,
                }),
        }
    }
}

/// What the `publish` hook decided.
pub(crate) enum PublishVerdict {
    /// Published as sent, or with this data instead.
    Allowed(Option<Value>),
    /// Refused (`forbidden`).
    Forbidden,
}

/// What the `rpc` hook answered.
pub(crate) enum RpcVerdict {
    /// The client gets `<type>.result` with this data.
    Result(Value),
    /// Nothing goes back (204).
    Nothing,
    /// The client gets this `error` `{code, message}`.
    Error { code: String, message: String },
}

impl Herald {
    fn hook(&self, hook: Hook) -> Result<&Proxy, EngineError> {
        match &self.inner.proxy {
            Some(proxy) if proxy.has(hook) => Ok(proxy),
            _ => Err(EngineError(format!(
                "no [proxy] {} is configured",
                hook.name()
            ))),
        }
    }

    /// Whether the backend lets `who` (connection `client_id`) subscribe to `topic`.
    pub(crate) async fn proxy_subscribe(
        &self,
        client_id: Option<&str>,
        who: &Principal,
        topic: &str,
    ) -> Result<bool, EngineError> {
        if let Some(decide) = &self.inner.callbacks.subscribe {
            let request = SubscribeRequest {
                client_id: client_id.map(str::to_string),
                principal: who.clone(),
                topic: topic.to_string(),
            };
            return Ok(decide(request).await);
        }
        let body = SubscribeCall {
            client_id,
            user_id: &who.user_id,
            role: &who.role,
            topic,
        };
        let answer = self
            .hook(Hook::Subscribe)?
            .call(Hook::Subscribe, &body)
            .await?;
        Ok(answer.status == 200)
    }

    /// Whether the backend lets a client publish `event` with `data` on `topic`, and the data
    /// it publishes with.
    pub(crate) async fn proxy_publish(
        &self,
        client_id: &str,
        who: &Principal,
        topic: &str,
        event: &str,
        data: &Value,
    ) -> Result<PublishVerdict, EngineError> {
        if let Some(decide) = &self.inner.callbacks.publish {
            let request = PublishRequest {
                client_id: client_id.to_string(),
                principal: who.clone(),
                topic: topic.to_string(),
                event: event.to_string(),
                data: data.clone(),
            };
            return Ok(match decide(request).await {
                PublishDecision::Allow => PublishVerdict::Allowed(None),
                PublishDecision::Replace(data) => PublishVerdict::Allowed(Some(data)),
                PublishDecision::Deny => PublishVerdict::Forbidden,
            });
        }
        let body = PublishCall {
            client_id,
            user_id: &who.user_id,
            role: &who.role,
            topic,
            event,
            data,
        };
        let answer = self.hook(Hook::Publish)?.call(Hook::Publish, &body).await?;
        if answer.status != 200 {
            return Ok(PublishVerdict::Forbidden);
        }
        Ok(PublishVerdict::Allowed(answer.body.get("data").cloned()))
    }

    /// Whether a message type that is no command goes to the backend's `rpc` hook.
    pub(crate) fn has_rpc(&self) -> bool {
        self.hook(Hook::Rpc).is_ok()
    }

    /// The backend's answer to a client message of type `kind`.
    pub(crate) async fn proxy_rpc(
        &self,
        client_id: &str,
        who: &Principal,
        kind: &str,
        data: &Value,
    ) -> Result<RpcVerdict, EngineError> {
        let body = RpcCall {
            client_id,
            user_id: &who.user_id,
            role: &who.role,
            kind,
            data,
        };
        let answer = self.hook(Hook::Rpc)?.call(Hook::Rpc, &body).await?;
        Ok(match answer.status {
            204 => RpcVerdict::Nothing,
            200..=299 => {
                RpcVerdict::Result(answer.body.get("data").cloned().unwrap_or(Value::Null))
            }
            status => {
                let error = answer.body.get("error");
                let text = |field: &str| error.and_then(|e| e.get(field)).and_then(Value::as_str);
                RpcVerdict::Error {
                    code: text("code").unwrap_or("forbidden").to_string(),
                    message: text("message")
                        .map_or_else(|| format!("the backend answered {status}"), str::to_string),
                }
            }
        })
    }
}
