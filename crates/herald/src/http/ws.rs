//! `GET /ws`: checks made before the upgrade (origin, token from the query or the header), then
//! the socket is handed to [`crate::connection::serve`].

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::admin::bearer;
use super::error::ApiError;
use crate::connection::{self, Start};
use crate::node::Herald;
use crate::protocol::{Encoding, ErrorCode};

/// Per-connection socket buffers, in bytes.
const READ_BUFFER: usize = 4096;
const WRITE_BUFFER: usize = 4096;

pub async fn upgrade(
    State(node): State<Herald>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let config = node.config();
    if !config.allowed_origins.is_empty() {
        if let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) {
            if !config
                .allowed_origins
                .iter()
                .any(|allowed| allowed == origin)
            {
                return ApiError::forbidden(format!("origin `{origin}` is not allowed"))
                    .into_response();
            }
        }
    }
    let encoding = match query.get("encoding").map(String::as_str) {
        None | Some("json") => Encoding::Json,
        Some("msgpack") => Encoding::MsgPack,
        Some(other) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("encoding `{other}` is not supported: use json or msgpack"),
            )
            .into_response()
        }
    };
    let token = query
        .get("token")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(&headers));
    let verdict = match token {
        Some(token) => Some(node.authenticate(token).await),
        None => None,
    };
    let principal = match verdict {
        None => None,
        Some(Ok(principal)) => Some(principal),
        Some(Err(e)) => {
            crate::metrics::auth_failure(e.reason());
            tracing::info!(
                remote_addr = ?peer.as_ref().map(|Extension(ConnectInfo(addr))| *addr),
                uri = %redact_token(&uri),
                reason = e.reason(),
                "refused connection: bad token"
            );
            return ApiError::unauthorized(e.to_string()).into_response();
        }
    };
    let mut auto_topics = Vec::new();
    if let Some(project) = query.get("project_id").filter(|p| !p.is_empty()) {
        auto_topics.push(format!("project:{project}"));
    }
    if let Some(board) = query.get("board_id").filter(|b| !b.is_empty()) {
        auto_topics.push(format!("board:{board}"));
    }
    let remote_addr = peer.map(|Extension(ConnectInfo(addr))| addr);
    let ip_slot = match remote_addr {
        Some(addr) => match node.ip_slots().acquire(addr.ip()) {
            Some(slot) => Some(slot),
            None => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    format!("too many connections from {}", addr.ip()),
                )
                .into_response()
            }
        },
        None => None,
    };
    let start = Start {
        principal,
        auto_topics,
        remote_addr,
        ip_slot,
        echo: false,
        encoding,
    };
    configure(ws, &node).on_upgrade(move |socket| {
        let tasks = node.connection_tasks().clone();
        tasks.track_future(connection::serve(socket, node, start))
    })
}

/// `GET /test/echo`, only with `--test-echo-endpoint`: no auth, every data frame echoed, through
/// the same connection code (reader, limits, writer) as `/ws`.
pub async fn echo(
    State(node): State<Herald>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let start = Start {
        remote_addr: peer.map(|Extension(ConnectInfo(addr))| addr),
        echo: true,
        ..Start::default()
    };
    configure(ws, &node).on_upgrade(move |socket| {
        let tasks = node.connection_tasks().clone();
        tasks.track_future(connection::serve(socket, node, start))
    })
}

/// The socket settings every upgrade uses.
fn configure(ws: WebSocketUpgrade, node: &Herald) -> WebSocketUpgrade {
    let limits = &node.config().limits;
    // Measured (docs/BENCHMARKS.md): tungstenite's default 128 KiB read buffer costs ~139 KB per
    // idle connection; 4 KiB costs ~8 KB with the same fan-out cost. The writer batches with
    // feed + flush, so a 4 KiB write threshold still writes a batch in few syscalls.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
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
            Some(("token", _)) => "token=REDACTED".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_redacted_from_logged_uris() {
        let uri: axum::http::Uri = "/ws?project_id=p1&token=eyJsecret.x.y&board_id=b"
            .parse()
            .expect("uri");
        let logged = super::redact_token(&uri);
        assert_eq!(logged, "/ws?project_id=p1&token=REDACTED&board_id=b");
        assert!(!logged.contains("eyJ"));
    }
}
