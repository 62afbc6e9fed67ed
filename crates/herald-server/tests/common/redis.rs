//! A private `redis-server` for the cluster tests, on a free loopback port, with no
//! persistence: stopping and starting it again is a Redis restart that lost everything.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments beyond the port, bind address and persistence (e.g. `--replicaof`).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a fresh `redis-server` and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(Vec::new())
    }

    /// Starts a fresh `redis-server` that replicates `primary`.
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        let args = ["--replicaof", "127.0.0.1", &primary.port.to_string()];
        Self::start_with(args.iter().map(|a| a.to_string()).collect())
    }

    fn start_with(args: Vec<String>) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port, args)
    }

    fn start_on(port: u16, args: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            args,
        };
        server.start_again();
        server
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else {
            return;
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: scripts/test installs it (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..250 {
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Sends one command (RESP) and returns the raw reply, or None if Redis is not there.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = vec![0u8; 64 * 1024];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Redis Cluster: six `redis-server --cluster-enabled yes` on free loopback ports
/// (each port + 10000, the cluster bus, free too), joined by `redis-cli --cluster create` as
/// three primaries with a replica each. Dropping it kills them all.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_cluster_port();
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                RedisServer::start_on(port, args.iter().map(|a| a.to_string()).collect())
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (it comes with redis-server)");
        assert!(created.success(), "redis-cli --cluster create");
        // Up when every node sees the cluster whole and every replica has its first copy.
        for _ in 0..500 {
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
                    && n.command(&["INFO", "replication"]).is_some_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
            });
            if ok {
                return RedisCluster { nodes };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the Redis Cluster did not reach cluster_state:ok with its replicas in sync");
    }

    /// Any node's URL (each serves as a seed).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Moves `key`'s slot to the primary `to` while traffic goes on, the way `redis-cli
    /// --cluster reshard` does: IMPORTING / MIGRATING, MIGRATE of its keys in batches, then
    /// the slot's new owner announced to every primary.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.primary_of(key);
        assert_ne!(from, to, "the slot is on that primary already");
        let slot = self.slot_of(key).to_string();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let id = |n: &RedisServer| {
            let reply = n.command(&["CLUSTER", "MYID"]).expect("CLUSTER MYID");
            reply.lines().nth(1).expect("an id").to_string()
        };
        let (from_id, to_id) = (id(source), id(target));
        let ok = |reply: Option<String>| {
            let reply = reply.expect("redis answers");
            assert!(reply.starts_with("+OK"), "{reply}");
        };
        ok(target.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
        ok(source.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]));
        loop {
            let reply = source
                .command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .expect("GETKEYSINSLOT");
            let keys: Vec<&str> = reply
                .lines()
                .filter(|l| !l.starts_with('*') && !l.starts_with('$') && !l.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = target.port.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys);
            ok(source.command(&migrate));
        }
        for node in [target, source] {
            ok(node.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
        }
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            // Replicas refuse SETSLOT; the primaries learn it.
            let _ = node.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// A primary other than the one serving `key`.
    pub fn other_primary_than(&self, key: &str) -> usize {
        let serving = self.primary_of(key);
        (0..self.nodes.len())
            .find(|i| {
                *i != serving
                    && self.nodes[*i]
                        .command(&["INFO", "replication"])
                        .is_some_and(|info| info.contains("role:master"))
            })
            .expect("another primary")
    }

    fn slot_of(&self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        live.command(&["CLUSTER", "KEYSLOT", key])
            .and_then(|r| r.trim().strip_prefix(':').and_then(|n| n.parse().ok()))
            .expect("CLUSTER KEYSLOT")
    }

    /// The index in `nodes` of the primary that serves `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let nodes = live.command(&["CLUSTER", "NODES"]).expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("one of ours");
            }
        }
        panic!("no primary serves slot {slot}");
    }
}

/// A free loopback port under 55536 whose cluster bus port (+ 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if port < 55536 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// What the cluster tests run on: one Redis or a Redis Cluster, to the same scenarios.
pub trait SharedRedis {
    /// The config line that puts a node on it.
    fn config_line(&self) -> String;
    /// Where the engine's own tests find it.
    fn deployment(&self) -> herald::engine::redis::Deployment;
    /// Cuts every Pub/Sub connection (Redis keeps its data); returns how many it cut.
    fn cut_pubsub(&self) -> usize;
    /// The nodes' `redis_timeout`: short on one Redis; on a Redis Cluster half of it bounds
    /// each write's wait for a replica, which six servers and three nodes on two cores need.
    fn redis_timeout(&self) -> &'static str;
}

impl SharedRedis for RedisServer {
    fn config_line(&self) -> String {
        format!("redis_url = \"{}\"", self.url())
    }

    fn deployment(&self) -> herald::engine::redis::Deployment {
        herald::engine::redis::Deployment::Single(self.url())
    }

    fn cut_pubsub(&self) -> usize {
        killed(self)
    }

    fn redis_timeout(&self) -> &'static str {
        "500ms"
    }
}

impl SharedRedis for RedisCluster {
    fn config_line(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("redis_cluster = [{}]", urls.join(", "))
    }

    fn deployment(&self) -> herald::engine::redis::Deployment {
        herald::engine::redis::Deployment::Cluster(self.nodes.iter().map(|n| n.url()).collect())
    }

    fn cut_pubsub(&self) -> usize {
        self.nodes.iter().map(killed).sum()
    }

    fn redis_timeout(&self) -> &'static str {
        "2s"
    }
}

/// `CLIENT KILL TYPE pubsub` on one server: how many connections it cut.
fn killed(server: &RedisServer) -> usize {
    let reply = server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("redis answers");
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected CLIENT KILL reply {reply:?}"))
}
