//! The HTTP face of a node: the `/ws` upgrade, the server API under `/api/v1`, the user-management API's
//! `/ws/stats` and `/ws/broadcast`, health, readiness and metrics. The app is a function
//! ([`router`]) that the server binary and tests call alike. The browser console at `/` is a
//! second router ([`console_router`], outside the route table: pages, not API) that the
//! server binary merges and an embedding app may.
//!
//! Every route is declared once in [`routes`], which records it in a table beside the router,
//! so the OpenAPI document can be checked against what is really served.

mod admin;
mod api;
mod body;
mod console;
mod error;
pub(crate) mod forwarded;
mod members;
mod ops;
mod serve;
mod topics;
mod websocket_api;
mod ws;

use serve::HttpLimits;

use crate::protocol::answers::Health;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};

use crate::node::Herald;

/// The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A router that remembers which methods and paths it serves.
struct Routes {
    router: Router<Herald>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        methods: &[&'static str],
        path: &'static str,
        handler: MethodRouter<Herald>,
    ) -> Self {
        self.table.extend(methods.iter().map(|m| (*m, path)));
        self.router = self.router.route(path, handler);
        self
    }
}

/// The parts of Herald's HTTP surface, which `herald serve` puts on one port, or two with
/// `internal_listen`, and an embedding app picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `/ws` (and its alias `/ws/connect`): what clients connect to.
    Clients,
    /// `/health` and `/ready`: probes, no credentials, nothing disclosed.
    Probes,
    /// The server HTTP API (`/api/v1/...`, `/ws/stats`, `/ws/broadcast`) and `/metrics`:
    /// for backends and operators ([`Part::Api`] and [`Part::Metrics`] together).
    Internal,
    /// The server HTTP API alone, for backends: every call needs an API key or what the
    /// node's admin check takes ([`crate::auth::AdminCheck`]).
    Api,
    /// `/metrics` (Prometheus text), for operators: no credentials.
    Metrics,
}

/// Every route of the canonical protocol (the route table of the OpenAPI test).
#[cfg(test)]
fn routes() -> Routes {
    routes_of(&[Part::Clients, Part::Probes, Part::Internal], None)
}

/// The routes of `parts`, and those a profile adds to the server API.
fn routes_of(parts: &[Part], profile: Option<crate::config::Profile>) -> Routes {
    let mut routes = Routes {
        router: Router::new(),
        table: Vec::new(),
    };
    if parts.contains(&Part::Clients) {
        routes = routes.add(&["GET"], "/ws", get(ws::upgrade)).add(
            &["GET"],
            "/ws/connect",
            get(ws::upgrade),
        );
    }
    if parts.contains(&Part::Probes) {
        routes = routes
            .add(&["GET"], "/health", get(health))
            .add(&["GET"], "/ready", get(ready));
    }
    if parts.contains(&Part::Internal) || parts.contains(&Part::Api) {
        routes = api_routes(routes);
        if profile.is_some_and(|p| p.websocket_api()) {
            routes = websocket_api::routes(routes);
        }
    }
    #[cfg(feature = "prometheus")]
    if parts.contains(&Part::Internal) || parts.contains(&Part::Metrics) {
        routes = routes.add(&["GET"], "/metrics", get(metrics));
    }
    routes
}

fn api_routes(routes: Routes) -> Routes {
    routes
        .add(&["GET"], "/ws/stats", get(ops::ws_stats))
        .add(&["POST"], "/ws/broadcast", post(ops::ws_broadcast))
        .add(&["POST"], "/api/v1/publish", post(api::publish))
        .add(&["POST"], "/api/v1/publish/batch", post(api::publish_batch))
        .add(&["GET"], "/api/v1/stats", get(ops::stats))
        .add(&["GET"], "/api/v1/connections", get(ops::connections))
        .add(&["GET"], "/api/v1/connections/count", get(ops::count))
        .add(
            &["POST"],
            "/api/v1/users/{id}/disconnect",
            post(ops::disconnect_user),
        )
        .add(
            &["POST"],
            "/api/v1/projects/{id}/disconnect",
            post(ops::disconnect_project),
        )
        .add(
            &["POST"],
            "/api/v1/users/{id}/message",
            post(api::user_message),
        )
        .add(
            &["POST"],
            "/api/v1/projects/{id}/message",
            post(api::project_message),
        )
        .add(
            &["GET"],
            "/api/v1/projects/{id}/members",
            get(members::list),
        )
        .add(
            &["PUT", "DELETE"],
            "/api/v1/projects/{id}/members/{user_id}",
            put(members::add).delete(members::remove),
        )
        .add(
            &["GET"],
            "/api/v1/topics/{topic}/presence",
            get(topics::presence),
        )
        .add(
            &["GET"],
            "/api/v1/topics/{topic}/history",
            get(topics::history),
        )
        .add(&["GET"], "/api/v1/openapi.json", get(openapi))
}

/// Every route Herald serves, with the node as state.
pub fn router(node: Herald) -> Router {
    router_of(node, &[Part::Clients, Part::Probes, Part::Internal])
}

/// The routes of `parts`, with the node as state.
pub fn router_of(node: Herald, parts: &[Part]) -> Router {
    let limit = node.config().limits.max_body_size;
    let mut router = routes_of(parts, node.config().profile).router;
    if node.config().test_echo_endpoint && parts.contains(&Part::Clients) {
        // Test-only, so deliberately outside the route table and the OpenAPI document.
        router = router.route("/test/echo", get(ws::echo));
    }
    router.layer(DefaultBodyLimit::max(limit)).with_state(node)
}

/// The browser console (`/`, `/console.js`, `/console.css`, `/herald.js`), with the node as
/// state. Separate from [`router`] so an embedding app keeps its own `/`.
pub fn console_router(node: Herald) -> Router {
    console::router().with_state(node)
}

/// The `(method, path)` pairs [`router`] serves, paths in OpenAPI form (`{id}`).
#[cfg(test)]
fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().table
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        error: None,
    })
}

/// 200 when every engine answers, 503 otherwise.
async fn ready(State(node): State<Herald>) -> impl IntoResponse {
    match node.check_engines().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                error: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                error: Some(e.to_string()),
            }),
        ),
    }
}

#[cfg(feature = "prometheus")]
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// The HTTP face of a node, for an embedding app (kept here, beside what it serves, so that
/// `node` never reaches up into `http`).
impl Herald {
    /// Every route Herald serves (`/ws`, `/api/v1/...`, health, metrics): the sum of
    /// [`ws_router`](Self::ws_router), [`api_router`](Self::api_router) and
    /// [`ops_router`](Self::ops_router), as `herald serve` serves it. An app with routes of
    /// its own usually wants those three apart. Serve it with [`serve`](Self::serve) for the fastest fan-out;
    /// with `axum::serve`, use `into_make_service_with_connect_info::<SocketAddr>()` for per-IP
    /// limits and remote addresses in logs.
    pub fn router(&self) -> axum::Router {
        router(self.clone())
    }

    /// Only what clients connect to: `/ws` and `/ws/connect`. Mount it beside the app's own
    /// routes (they cannot collide with its `/health`), or under a prefix with
    /// `Router::nest("/realtime", herald.ws_router())`.
    pub fn ws_router(&self) -> axum::Router {
        router_of(self.clone(), &[Part::Clients])
    }

    /// Only the server API (`/api/v1/...`, `/ws/stats`, `/ws/broadcast`), for the app's
    /// backends. A caller needs an API key (`api_key`, `api_keys`) or to pass the app's
    /// [`admin_check`](crate::HeraldBuilder::admin_check); with the app's own authenticator
    /// and no check, a client's role never opens it.
    pub fn api_router(&self) -> axum::Router {
        router_of(self.clone(), &[Part::Api])
    }

    /// Only the operators' routes: `/health`, `/ready` and `/metrics` (no credentials: keep
    /// it off a public port, or merge only what the app does not serve itself).
    pub fn ops_router(&self) -> axum::Router {
        router_of(self.clone(), &[Part::Probes, Part::Metrics])
    }

    /// Only the routes of `parts`: e.g. [`Part::Clients`] on the public port and
    /// [`Part::Internal`] with [`Part::Probes`] on a private one (`internal_listen`).
    pub fn router_of(&self, parts: &[Part]) -> axum::Router {
        router_of(self.clone(), parts)
    }

    /// Serves `app` (this node's [`router`](Self::router), merged with the app's own routes
    /// if any) over HTTP/1.1 on `listener` until `shutdown` resolves; then stops accepting and
    /// waits for requests in flight. WebSockets upgraded here are written by the node straight
    /// from their queues (docs/BENCHMARKS.md); call [`shutdown`](Self::shutdown) after this
    /// returns to close them with 1001.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let limits = &self.config().limits;
        let http = HttpLimits {
            ip_slots: self.slots().ip.clone(),
            trusted_proxies: self.config().trusted_proxies.clone(),
            header_timeout: limits.http_header_timeout,
            idle_timeout: limits.http_idle_timeout,
        };
        serve::serve(listener, app, shutdown, http).await
    }

    /// The browser console: `/` (token input, live messages, subscriptions, presence, an
    /// admin view) and the JS client at `/herald.js`. `herald serve` serves it beside
    /// [`router`](Self::router); an embedding app merges it only if it wants it at its `/`.
    pub fn console_router(&self) -> axum::Router {
        console_router(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn only_the_auto_devs_profile_adds_routes_and_only_under_its_prefix() {
        use crate::config::Profile;
        let parts = [
            super::Part::Clients,
            super::Part::Probes,
            super::Part::Internal,
        ];
        let canonical = super::routes_of(&parts, None).table;
        for profile in [
            Profile::Pulse,
            Profile::UsersApi,
            Profile::Conduit,
            Profile::Cartographer,
        ] {
            assert_eq!(super::routes_of(&parts, Some(profile)).table, canonical);
        }
        let auto_devs = super::routes_of(&parts, Some(Profile::AutoDevs)).table;
        let added: Vec<_> = auto_devs
            .iter()
            .filter(|route| !canonical.contains(route))
            .collect();
        assert_eq!(added.len(), 12, "{added:?}");
        assert!(added
            .iter()
            .all(|(_, path)| path.starts_with("/api/v1/websocket/")));
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = super::route_table()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not documented: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "documented but not served: {unserved:?}"
        );
    }
}
