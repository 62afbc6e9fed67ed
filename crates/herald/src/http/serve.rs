//! [`Herald::serve`](crate::Herald::serve): the HTTP/1.1 server the `herald` binary runs.
//!
//! Why not `axum::serve`: it wraps each socket in a private type (for HTTP/2 detection), so an
//! upgraded WebSocket can only be reached through a boxed stream, which only its own task can
//! write. Here each request is marked [`Direct`], and `/ws` takes the socket itself back from
//! the upgrade: the node then writes publications to it straight from its queue
//! (`hub::outbox`). Any other server (an embedding app's `axum::serve`) still works, with the
//! connection's task doing the writes.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// At most this many bytes of a socket's data wait unsent in the kernel (Linux
/// `TCP_NOTSENT_LOWAT`); beyond it a write takes nothing and the frames stay in the
/// connection's queue. Without it Linux buffers up to 4 MB per socket, so 10,000 clients that
/// stop reading could pin 40 GB of kernel memory before their queues fill and they are closed
/// as slow consumers; with it, 640 MB. Data in flight (sent, not yet acknowledged) does not
/// count, so a client on a long link keeps its throughput; the fan-out figures are unchanged
/// (docs/BENCHMARKS.md).
#[cfg(target_os = "linux")]
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Set on every request this server handles: the connection is a `TcpStream` in
/// [`TokioIo`], so an upgrade can take the socket back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish and idle keep-alive connections close, and returns. Upgraded WebSockets
/// are the node's: [`Herald::shutdown`](crate::Herald::shutdown) says goodbye to them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let open = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most often: wait for some to be released
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Frames are small and each is written as soon as it is queued: no Nagle delay.
        let _ = stream.set_nodelay(true);
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let app = app.clone();
        let mut stopping = stopping.clone();
        open.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(remote));
                    request.extensions_mut().insert(Direct);
                    let mut app = app.clone();
                    async move { app.call(request).await }
                });
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    open.close();
    open.wait().await;
    Ok(())
}
