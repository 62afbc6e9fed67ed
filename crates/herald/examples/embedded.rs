//! Herald inside an axum app: the app's own routes beside Herald's, a custom `chat` message
//! handler, and a background task that broadcasts. Run it with
//!
//! ```sh
//! cargo run -p herald --example embedded        # then connect to ws://127.0.0.1:3000/ws
//! ```
//!
//! Tokens are HS256 JWTs signed with `HERALD_EXAMPLE_SECRET` (default `example-secret`).

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use herald::{Config, HandlerError, Herald, StartError};
use serde_json::json;

/// The app: its own `/hello`, all of Herald's routes, and a `chat` handler that publishes
/// `{"type": "chat", "data": {"room", "text"}}` to `room:<room>` and confirms to the sender.
pub async fn app(config: Config) -> Result<(Router, Herald), StartError> {
    let herald = Herald::builder()
        .config(config)
        .on("chat", |msg| async move {
            let room = msg.data()["room"].as_str().unwrap_or_default().to_string();
            let text = msg.data()["text"].as_str().unwrap_or_default().to_string();
            if room.is_empty() || text.is_empty() {
                return Err(HandlerError::invalid("chat needs data.room and data.text"));
            }
            let from = msg.principal.user_id.to_string();
            msg.herald()
                .broadcast_to_topic(
                    &format!("room:{room}"),
                    "chat.message",
                    json!({ "from": from, "text": text }),
                )
                .await?;
            msg.reply("chat.sent", json!({ "room": room }));
            Ok(())
        })
        .build()
        .await?;
    // The app's routes, Herald's WebSocket, and its server API under a prefix (API key or an
    // admin JWT); /health, /ready and /metrics stay off this port (`herald.ops_router()`).
    let router = Router::new()
        .route("/hello", get(|| async { "hello from the app" }))
        .merge(herald.ws_router())
        .nest("/herald", herald.api_router());
    Ok((router, herald))
}

/// The app's background work: a `tick` to every connection every `period`.
pub fn spawn_ticker(herald: Herald, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        let mut n = 0u64;
        loop {
            interval.tick().await;
            n += 1;
            if let Err(e) = herald.broadcast_to_all("tick", json!({ "n": n })).await {
                eprintln!("tick failed: {e}");
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.jwt.secret =
        Some(std::env::var("HERALD_EXAMPLE_SECRET").unwrap_or_else(|_| "example-secret".into()));
    config.data_dir = "./herald-example-data".into();
    let addr = std::env::var("HERALD_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let (router, herald) = app(config).await?;
    spawn_ticker(herald.clone(), Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("example app listening on http://{}", listener.local_addr()?);
    // Herald's own HTTP/1.1 server (axum::serve works too: see docs/EMBEDDING.md).
    let stopping = herald.clone();
    let ctrl_c = async move {
        let _ = tokio::signal::ctrl_c().await;
        stopping.begin_shutdown();
    };
    herald.serve(listener, router, ctrl_c).await?;
    herald.shutdown().await;
    Ok(())
}
