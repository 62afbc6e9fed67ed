//! `GET /ws`: checks made before the upgrade (origin, token from the query or the header), then
//! the socket is handed to [`crate::connection::serve`].

use std::collections::HashMap;
use std::net::SocketAddr;

use std::sync::Arc;
#[cfg(feature = "compression")]
use std::sync::LazyLock;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::admin::bearer;
use super::error::ApiError;
use hyper_util::rt::TokioIo;

use crate::connection::{self, Link, Socket, Start};
use crate::metrics::Peer;
use crate::node::slots::{Holds, IpSlot};
use crate::node::Herald;
use crate::protocol::{Encoding, ErrorCode};

/// Per-connection socket buffers, in bytes. Clients send small commands, and tungstenite
/// zeroes a read chunk each time the connection's task polls the socket (once per wake-up,
/// deliveries included), so the read chunk is small: 1 KiB saves 3 KB per idle connection
/// over 4 KiB (docs/BENCHMARKS.md).
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 4096;

/// permessage-deflate state shared by every deflate connection: with no context takeover
/// imposed both ways, a connection holds a compressor only while it compresses a message, so
/// an idle deflate connection costs what a plain one does (docs/BENCHMARKS.md).
#[cfg(feature = "compression")]
static DEFLATE_POOL: LazyLock<yawc::DeflatePool> = LazyLock::new(|| yawc::DeflatePool::new(32));

/// The `?encoding=` values this build takes (MessagePack with the `msgpack` feature).
const SUPPORTED_ENCODINGS: &str = if cfg!(feature = "msgpack") {
    "json or msgpack"
} else {
    "json"
};

pub async fn upgrade(
    State(node): State<Herald>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let config = node.config();
    let peer = super::forwarded::client(
        &config.trusted_proxies,
        config.forwarded_header,
        peer.map(|Extension(ConnectInfo(addr))| addr),
        &headers,
    );
    let shown = || Peer(peer);
    if !config.allowed_origins.is_empty() {
        if let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) {
            if !config
                .allowed_origins
                .iter()
                .any(|allowed| allowed == origin)
            {
                crate::metrics::refused("origin", shown(), origin);
                return ApiError::forbidden(format!("origin `{origin}` is not allowed"))
                    .into_response();
            }
        }
    }
    let encoding = match query.get("encoding").map(String::as_str) {
        None | Some("json") => Encoding::Json,
        #[cfg(feature = "msgpack")]
        Some("msgpack") => Encoding::MsgPack,
        Some(other) => {
            crate::metrics::refused("encoding", shown(), other);
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("encoding `{other}` is not supported: use {SUPPORTED_ENCODINGS}"),
            )
            .into_response();
        }
    };
    let resume = match query.get("resume").map(|r| resume_param(r)).transpose() {
        Ok(resume) => resume,
        Err(e) => {
            crate::metrics::refused("resume", shown(), &e);
            return ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, e)
                .into_response();
        }
    };
    let token = query
        .get("token")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(&headers));
    let connecting = crate::auth::ConnectRequest {
        headers: headers.clone(),
        remote_addr: peer,
        query: query.clone(),
    };
    let principal = match node.authenticate_request(token, &connecting).await {
        Ok(principal) => principal,
        Err(e) => {
            // A backend that could not decide is no bad token: the hook's own metric and log
            // count it (herald_hook_requests_total{outcome="failed"}).
            if let crate::auth::AuthError::Unavailable(_) = e {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ProcessingError,
                    e.to_string(),
                )
                .into_response();
            }
            crate::metrics::auth_failure(e.reason());
            let detail = format!("{} token, {}", e.reason(), redact_token(&uri));
            crate::metrics::refused("bad_token", shown(), &detail);
            return ApiError::unauthorized(e.to_string()).into_response();
        }
    };
    // A profile whose product refused a connection without a token does so too (a connect
    // hook has had its say already).
    if principal.is_none() && config.profile.is_some_and(|p| p.token_at_upgrade()) {
        crate::metrics::auth_failure("missing");
        crate::metrics::refused("bad_token", shown(), "no token at the upgrade");
        return ApiError::unauthorized("missing token".to_string()).into_response();
    }
    let mut auto_topics = Vec::new();
    if let Some(project) = query.get("project_id").filter(|p| !p.is_empty()) {
        auto_topics.push(format!("project:{project}"));
    }
    if let Some(board) = query.get("board_id").filter(|b| !b.is_empty()) {
        auto_topics.push(format!("board:{board}"));
    }
    // A profile whose product took connections without a token (`cartographer`) takes them as
    // anonymous readers of the query's topics (a connect hook has had its say already).
    let anonymous = principal.is_none() && config.profile.is_some_and(|p| p.anonymous_readers());
    let remote_addr = peer;
    let holds = match hold_slots(&node, &request, remote_addr, principal.as_ref()) {
        Ok(holds) => holds,
        Err(refusal) => return refusal.into_response(),
    };
    let start = Start {
        principal,
        auto_topics,
        anonymous,
        resume,
        remote_addr,
        holds,
        echo: false,
        encoding,
    };
    accept(node, request, start).await
}

/// Takes the slots a new WebSocket holds for its life, or refuses it: too many connections
/// from its IP (429; Herald's own server took that slot when the TCP connection was accepted),
/// on the node (503), or of its user (429).
fn hold_slots(
    node: &Herald,
    request: &Request,
    remote_addr: Option<SocketAddr>,
    principal: Option<&crate::auth::Principal>,
) -> Result<Holds, ApiError> {
    let slots = node.slots();
    let mut holds = Holds::default();
    if let Some(slot) = request.extensions().get::<Arc<IpSlot>>() {
        holds.ip = Some(slot.clone());
    } else if let Some(addr) = remote_addr {
        match slots.ip.acquire(addr.ip()) {
            Some(slot) => holds.ip = Some(Arc::new(slot)),
            None => return Err(too_many_from_ip(addr.ip())),
        }
    }
    holds.node = match slots.node.acquire(()) {
        Some(slot) => Some(slot),
        None => {
            crate::metrics::dropped("max_connections");
            crate::metrics::refused("max_connections", Peer(remote_addr), "the node is full");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ProcessingError,
                "this node holds the most connections it allows: try another node or later",
            ));
        }
    };
    if let Some(who) = principal {
        holds.user = match slots.user.acquire(who.user_id.clone()) {
            Some(slot) => Some(slot),
            None => {
                crate::metrics::dropped("max_connections_per_user");
                crate::metrics::refused(
                    "max_connections_per_user",
                    Peer(remote_addr),
                    &who.user_id,
                );
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyConnections,
                    "this user holds the most connections allowed",
                ));
            }
        };
    }
    Ok(holds)
}

/// The refusal of a connection beyond `max_connections_per_ip`.
pub(crate) fn too_many_from_ip(ip: std::net::IpAddr) -> ApiError {
    crate::metrics::dropped("max_connections_per_ip");
    crate::metrics::refused("max_connections_per_ip", ip, "");
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many connections from {ip}"),
    )
}

/// `GET /test/echo`, only with `--test-echo-endpoint`: no auth, every data frame echoed, through
/// the same connection code (reader, limits, writer) as `/ws`.
pub async fn echo(
    State(node): State<Herald>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let start = Start {
        remote_addr: peer.map(|Extension(ConnectInfo(addr))| addr),
        echo: true,
        ..Start::default()
    };
    accept(node, request, start).await
}

/// Completes the upgrade and runs the connection: with permessage-deflate (yawc) when
/// `compression` is on and the client offers it, else plain (tungstenite).
async fn accept(node: Herald, request: Request, start: Start) -> Response {
    let (mut parts, _body) = request.into_parts();
    #[cfg(feature = "compression")]
    if let Some(offer) = node
        .config()
        .compression
        .then(|| usable_deflate_offer(&parts.headers))
        .flatten()
    {
        return accept_deflate(node, parts, offer, start).await;
    }
    if parts.extensions.get::<super::serve::Direct>().is_some() {
        return direct_upgrade(node, parts, start);
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &node).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    configure(ws, &node).on_upgrade(move |socket| {
        let tasks = node.connection_tasks().clone();
        tasks.track_future(connection::serve(
            Link::Socket(Socket::Plain(Box::new(socket))),
            node,
            start,
        ))
    })
}

/// A plain upgrade on Herald's own server ([`super::serve`]): the handshake is answered here
/// and the TCP socket taken back from hyper, so the node writes it directly.
fn direct_upgrade(node: Herald, mut parts: axum::http::request::Parts, start: Start) -> Response {
    use axum::http::{header, HeaderValue, Method};
    let has = |name: header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if parts.method != Method::GET {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidMessage,
            "a WebSocket upgrade is a GET request",
        )
        .into_response();
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (Some(key), true, true, true) = (
        key,
        has(header::CONNECTION, "upgrade"),
        has(header::UPGRADE, "websocket"),
        has(header::SEC_WEBSOCKET_VERSION, "13"),
    ) else {
        return not_a_websocket(StatusCode::BAD_REQUEST);
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return not_a_websocket(StatusCode::UPGRADE_REQUIRED);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return not_a_websocket(StatusCode::BAD_REQUEST);
    };
    let max_message = node.config().limits.max_message_size;
    let tasks = node.connection_tasks().clone();
    tokio::spawn(tasks.track_future(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "upgrade did not complete"),
        };
        let Ok(raw) = upgraded.downcast::<TokioIo<super::serve::Watched>>() else {
            return tracing::error!("an upgraded connection of Herald's server is not TCP");
        };
        let stream = raw.io.into_inner().into_stream();
        let link = Link::direct(stream, &raw.read_buf, max_message);
        // A task of its own, so that the connection's long life keeps only its own state
        // (not this upgrade's, nor hyper's early bytes).
        let tasks = node.connection_tasks().clone();
        tokio::spawn(tasks.track_future(connection::serve(link, node, start)));
    }));
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

fn not_a_websocket(status: StatusCode) -> Response {
    ApiError::new(
        status,
        ErrorCode::InvalidMessage,
        "not a WebSocket upgrade request",
    )
    .into_response()
}

/// The upgrade with permessage-deflate (yawc), for a client whose `offer` Herald honours.
#[cfg(feature = "compression")]
async fn accept_deflate(
    node: Herald,
    mut parts: axum::http::request::Parts,
    offer: axum::http::HeaderValue,
    start: Start,
) -> Response {
    // yawc reads one offer: hand it the first one Herald can honour.
    parts
        .headers
        .insert(axum::http::header::SEC_WEBSOCKET_EXTENSIONS, offer);
    let upgrade = match yawc::IncomingUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(status) => return not_a_websocket(status),
    };
    let (response, socket) = match upgrade.upgrade(deflate_options(&node)) {
        Ok(pair) => pair,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                e.to_string(),
            )
            .into_response()
        }
    };
    let tasks = node.connection_tasks().clone();
    tokio::spawn(tasks.track_future(async move {
        match socket.await {
            Ok(socket) => {
                connection::serve(Link::Socket(Socket::deflate(socket)), node, start).await
            }
            Err(e) => tracing::debug!(error = %e, "deflate upgrade did not complete"),
        }
    }));
    response.map(axum::body::Body::new)
}

/// The first permessage-deflate offer (RFC 7692) in `Sec-WebSocket-Extensions` that Herald can
/// honour: any, except one that limits the server's window below 9 bits (the smallest window
/// the deflate backend writes).
#[cfg_attr(not(feature = "compression"), allow(dead_code))]
fn usable_deflate_offer(headers: &HeaderMap) -> Option<axum::http::HeaderValue> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|offer| {
            let mut params = offer.split(';').map(str::trim);
            params.next() == Some("permessage-deflate")
                && params.all(|param| match param.split_once('=') {
                    Some(("server_max_window_bits", bits)) => bits
                        .trim_matches('"')
                        .parse::<u8>()
                        .is_ok_and(|b| (9..=15).contains(&b)),
                    _ => true,
                })
        })
        .and_then(|offer| axum::http::HeaderValue::from_str(offer).ok())
}

/// A deflate connection's settings: the same limits and buffers as a plain one, no context
/// takeover either way (RFC 7692 lets the server impose it) so compressors come from the
/// shared pool, and small messages uncompressed.
#[cfg(feature = "compression")]
fn deflate_options(node: &Herald) -> yawc::Options {
    let max = node.config().limits.max_message_size;
    yawc::Options::default()
        .with_utf8()
        .with_limits(max.saturating_add(1), max.saturating_add(1))
        .with_read_buffer_capacity(READ_BUFFER)
        .with_write_buffer_capacity(WRITE_BUFFER)
        .with_low_latency_compression()
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(DEFLATE_POOL.clone())
        .with_compression_threshold(node.config().compression_min_size)
}

/// The socket settings every plain upgrade uses.
fn configure(ws: WebSocketUpgrade, node: &Herald) -> WebSocketUpgrade {
    let limits = &node.config().limits;
    // Measured (docs/BENCHMARKS.md): tungstenite's default 128 KiB read buffer costs ~139 KB per
    // idle connection, a 4 KiB one about 3 KB more than 1 KiB, with the same fan-out cost. The
    // writer batches with feed + flush, so a 4 KiB write threshold still writes a batch in few
    // syscalls.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
}

/// `?resume=`: URL-encoded JSON `{"<stream>": {"offset", "epoch"}}` (docs/PROTOCOL.md
/// section 15).
fn resume_param(text: &str) -> Result<crate::protocol::Resume, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("`resume` is not JSON: {e}"))?;
    crate::protocol::parse_resume(&value)
}

/// The request's path and query with the value of `token=` replaced, for logs: tokens never
/// appear in logs.
pub fn redact_token(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if percent_decoded(key).eq_ignore_ascii_case("token") => {
                format!("{key}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// A query key as a server decodes it (`%74oken` is `token`, `+` a space): what the key
/// means, for redaction. Undecodable escapes stay as they are.
fn percent_decoded(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match bytes[i] {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    fn offer(values: &[&str]) -> Option<String> {
        let mut headers = axum::http::HeaderMap::new();
        for v in values {
            headers.append(
                axum::http::header::SEC_WEBSOCKET_EXTENSIONS,
                v.parse().expect("header"),
            );
        }
        super::usable_deflate_offer(&headers).map(|v| v.to_str().unwrap_or("").to_string())
    }

    #[test]
    fn the_first_deflate_offer_herald_can_honour_is_picked() {
        assert_eq!(offer(&[]), None);
        assert_eq!(offer(&["x-webkit-deflate-frame"]), None);
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some("permessage-deflate; client_max_window_bits")
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover"])
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover"),
            "an 8-bit server window cannot be honoured"
        );
        assert_eq!(
            offer(&["foo", "permessage-deflate; server_max_window_bits=10"]).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
    }

    #[test]
    fn tokens_are_redacted_from_logged_uris() {
        let uri: axum::http::Uri = "/ws?project_id=p1&token=eyJsecret.x.y&board_id=b"
            .parse()
            .expect("uri");
        let logged = super::redact_token(&uri);
        assert_eq!(logged, "/ws?project_id=p1&token=REDACTED&board_id=b");
        assert!(!logged.contains("eyJ"));
        for spelled in ["%74oken", "%74%6F%6B%65%6E", "TOKEN", "to%6ben"] {
            let uri: axum::http::Uri = format!("/ws?{spelled}=eyJsecret.x.y").parse().expect("uri");
            let logged = super::redact_token(&uri);
            assert_eq!(logged, format!("/ws?{spelled}=REDACTED"), "{spelled}");
        }
    }
}
