//! Hooks for the Criterion benchmarks in `benches/hot_path.rs` (feature `bench-internals`):
//! the hub and a connection's queue are crate-private, so the benchmarks reach them here. Not
//! part of Herald's API.

use std::sync::Arc;

use crate::auth::Principal;
use crate::hub::flusher::Flusher;
use crate::hub::{ConnHandle, Hub, Written};
use crate::protocol::Encoding;
use crate::publication::{Publication, Scope};

/// `n` direct connections subscribed to one topic, on a flusher that is not running: a
/// delivery queues the frame and lists the connection, as on a live node, and nothing writes.
pub struct FanOut {
    hub: Hub,
    conns: Vec<Arc<ConnHandle>>,
    flusher: Arc<Flusher>,
}

impl FanOut {
    pub fn new(n: usize) -> Self {
        let hub = Hub::new();
        let flusher = Arc::new(Flusher::default());
        let conns = (0..n)
            .map(|i| {
                let who = Principal::new(&format!("u{i}"), "user", Vec::new());
                let conn = ConnHandle::unconnected(hub.next_id(), who, flusher.clone());
                hub.attach(&conn);
                hub.subscribe(&conn, "bench");
                conn
            })
            .collect();
        Self {
            hub,
            conns,
            flusher,
        }
    }

    /// Delivers a publication to every connection; returns how many it reached.
    pub fn deliver(&self, publication: &Publication) -> usize {
        self.hub.deliver(publication, &[])
    }

    /// Empties every queue and the flusher's list (between measured deliveries).
    pub fn reset(&self) {
        self.flusher.take_due();
        for conn in &self.conns {
            conn.reset();
        }
    }
}

/// One direct connection on a real loopback socket, whose peer a thread reads and discards.
pub struct Writer {
    conn: Arc<ConnHandle>,
    stream: Arc<tokio::net::TcpStream>,
}

impl Writer {
    /// Must run inside a tokio runtime (the socket registers with its reactor).
    pub async fn new() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept().await?;
        server.set_nodelay(true)?;
        std::thread::spawn(move || {
            use std::io::Read;
            let mut client = client;
            let mut sink = vec![0u8; 1 << 16];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        });
        let who = Principal::new("writer", "user", Vec::new());
        let stream = Arc::new(server);
        let conn = ConnHandle::direct(
            1,
            who,
            None,
            Encoding::Json,
            usize::MAX,
            stream.clone(),
            Arc::new(Flusher::default()),
        );
        Ok(Self { conn, stream })
    }

    /// Queues `n` copies of a publication's frame.
    pub fn fill(&self, publication: &Publication, n: usize) {
        let frame = publication.frame();
        for _ in 0..n {
            self.conn.push_encoded(frame.clone());
        }
    }

    /// Writes the queue out as the flusher does, waiting whenever the socket is full (the
    /// reading thread empties it), as a connection's task does; false if the socket failed.
    pub async fn drain(&self) -> bool {
        loop {
            match self.conn.write_queued() {
                Written::All => return true,
                Written::Failed => return false,
                Written::Blocked => {
                    if self.stream.writable().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

/// A publication like an app's: a topic event with about 100 bytes of data.
pub fn publication() -> Publication {
    Publication::new(
        Scope::Topic("bench".into()),
        "task.moved",
        serde_json::json!({"task": "t-1042", "from": "doing", "to": "done", "by": "alice",
                           "note": "moved after review, all checks green"}),
    )
}
