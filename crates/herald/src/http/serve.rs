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
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::node::slots::{IpSlot, IpSlots};

/// At most this many bytes of a socket's data wait unsent in the kernel (Linux
/// `TCP_NOTSENT_LOWAT`); beyond it a write takes nothing and the frames stay in the
/// connection's queue. Without it Linux buffers up to 4 MB per socket, so 10,000 clients that
/// stop reading could pin 40 GB of kernel memory before their queues fill and they are closed
/// as slow consumers; with it, 640 MB. Data in flight (sent, not yet acknowledged) does not
/// count, so a client on a long link keeps its throughput; the fan-out figures are unchanged
/// (docs/BENCHMARKS.md).
#[cfg(target_os = "linux")]
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Set on every request this server handles: the connection is a [`Watched`] `TcpStream` in
/// [`TokioIo`], so an upgrade can take the socket back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct;

/// What Herald's server bounds per HTTP connection (`[limits]`).
pub(crate) struct HttpLimits {
    /// Connections per client IP: each accepted socket holds a slot for its life, but one
    /// from a trusted proxy (its WebSockets take their client's slot at the upgrade).
    pub ip_slots: Arc<IpSlots>,
    /// `trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish and idle keep-alive connections close, and returns. Upgraded WebSockets
/// are the node's: [`Herald::shutdown`](crate::Herald::shutdown) says goodbye to them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let open = TaskTracker::new();
    let limits = Arc::new(limits);
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
        let slot = if super::forwarded::is_trusted(&limits.trusted_proxies, remote.ip()) {
            None
        } else {
            let Some(slot) = limits.ip_slots.acquire(remote.ip()) else {
                open.spawn(refuse(stream, remote));
                continue;
            };
            Some(Arc::new(slot))
        };
        // Frames are small and each is written as soon as it is queued: no Nagle delay.
        let _ = stream.set_nodelay(true);
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        open.spawn(serve_connection(
            stream,
            remote,
            slot,
            app.clone(),
            limits.clone(),
            stopping.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    open.close();
    open.wait().await;
    Ok(())
}

/// One HTTP connection, until it ends, upgrades, times out, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Option<Arc<IpSlot>>,
    app: Router,
    limits: Arc<HttpLimits>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let watched = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo::<SocketAddr>(remote));
        extensions.insert(Direct);
        // A WebSocket upgraded from this connection keeps the IP's slot.
        if let Some(slot) = &slot {
            extensions.insert(slot.clone());
        }
        let mut app = app.clone();
        let activity = watched.clone();
        activity.request_started();
        async move {
            let response = app.call(request).await;
            activity.request_answered();
            response
        }
    });
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let connection = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        why = activity.expiry(limits.header_timeout, limits.idle_timeout) => {
            // Dropping the connection closes the socket.
            crate::metrics::dropped(why);
            tracing::debug!(remote_addr = %remote, reason = why, "closed an HTTP connection");
        }
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A connection beyond `max_connections_per_ip`: answered 429 and closed without being served.
/// It reads the request head (at most 8 KiB, at most one second) so that closing does not
/// reset the connection before the client reads the answer.
async fn refuse(mut stream: TcpStream, remote: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = super::ws::too_many_from_ip(remote.ip()).body().to_string();
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A socket that records when bytes move, for the header and idle timeouts.
pub(crate) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    /// The socket, once the connection was upgraded.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
            crate::metrics::received(buf.filled().len() - before);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.wrote_some();
                crate::metrics::sent(n);
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.wrote_some();
                crate::metrics::sent(n);
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Where one HTTP connection stands, for its timeouts.
struct Activity(Mutex<Phase>);

struct Phase {
    /// Requests handed to the app and not answered yet.
    in_flight: usize,
    /// A request head is on its way (or awaited, on a fresh connection) since then.
    head_since: Option<Instant>,
    /// The last answer, or the opening.
    idle_since: Instant,
    /// The last byte read or written.
    progress: Instant,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        // A fresh connection owes its first request head within the header timeout.
        Self(Mutex::new(Phase {
            in_flight: 0,
            head_since: Some(now),
            idle_since: now,
            progress: now,
        }))
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // Each update is a few field writes: a poisoned lock is still consistent.
        crate::sync::lock(&self.0)
    }

    fn read_some(&self) {
        let now = Instant::now();
        let mut phase = self.phase();
        phase.progress = now;
        if phase.in_flight == 0 && phase.head_since.is_none() {
            phase.head_since = Some(now);
        }
    }

    fn wrote_some(&self) {
        self.phase().progress = Instant::now();
    }

    fn request_started(&self) {
        let mut phase = self.phase();
        phase.in_flight += 1;
        phase.head_since = None;
    }

    fn request_answered(&self) {
        let now = Instant::now();
        let mut phase = self.phase();
        phase.in_flight = phase.in_flight.saturating_sub(1);
        phase.idle_since = now;
        phase.progress = now;
    }

    /// Resolves when the connection broke a timeout, with the reason: a request head that
    /// took longer than `header`, or an idle keep-alive or stalled request longer than `idle`.
    async fn expiry(&self, header: Duration, idle: Duration) -> &'static str {
        loop {
            let now = Instant::now();
            let (due, why) = {
                let phase = self.phase();
                match phase.head_since {
                    _ if phase.in_flight > 0 => (phase.progress + idle, "http_idle_timeout"),
                    Some(since) => (since + header, "http_header_timeout"),
                    None => (phase.idle_since + idle, "http_idle_timeout"),
                }
            };
            if due <= now {
                return why;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}
