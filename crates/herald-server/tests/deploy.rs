//! The deployment kit (`deploy/`, docs/DEPLOY.md) against a real `herald`: the shipped nginx
//! site in a real nginx with TLS in front of it, the Grafana dashboard's and the alerts'
//! queries against a real `/metrics`, the Containerfile's health check against a real server,
//! and the systemd unit, the Kubernetes manifests and the example configs against the
//! defaults and checks of the binary.
//!
//! The nginx test needs `/usr/sbin/nginx` and `openssl` (scripts/test installs both); without
//! them it says so and passes. No TLS crate is in Cargo.lock, so the TLS client is `openssl
//! s_client`: a local tunnel turns each plain TCP connection from the test's WebSocket and
//! HTTP clients into one `s_client` that verifies nginx's certificate and carries the bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Files of the kit

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_file(path: &str) -> String {
    let full = repo_root().join("deploy").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// A `herald` command with no `HERALD_*` variable from the test's environment.
fn herald() -> Command {
    let mut command = Command::new(herald_bin());
    command.env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    command
}

/// A duration as herald and systemd write them: `30s`, `1min`, `10m`, or bare seconds.
fn duration(text: &str) -> Duration {
    let text = text.trim().trim_matches('"');
    if let Ok(seconds) = text.parse::<u64>() {
        return Duration::from_secs(seconds);
    }
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

/// `limits.shutdown_grace` of a TOML config, if it sets one.
fn shutdown_grace_of(toml_text: &str) -> Option<Duration> {
    let value: toml::Value = toml::from_str(toml_text).expect("TOML");
    value
        .get("limits")?
        .get("shutdown_grace")?
        .as_str()
        .map(duration)
}

/// The default `limits.shutdown_grace`, as the binary prints its effective configuration.
fn default_shutdown_grace() -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = herald()
        .args(["config", "print", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("herald config print");
    assert!(output.status.success(), "herald config print failed");
    shutdown_grace_of(&String::from_utf8_lossy(&output.stdout)).expect("shutdown_grace printed")
}

/// The longest shutdown grace the kit configures: the default, or a shipped config's.
fn shipped_shutdown_grace() -> Duration {
    let mut grace = default_shutdown_grace();
    for config in [deploy_file("herald.toml"), configmap_toml()] {
        if let Some(set) = shutdown_grace_of(&config) {
            grace = grace.max(set);
        }
    }
    grace
}

/// The `herald.toml: |` block of deploy/k8s/configmap.yaml, unindented.
fn configmap_toml() -> String {
    let text = deploy_file("k8s/configmap.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "herald.toml: |");
    let header = lines.next().expect("herald.toml: | in configmap.yaml");
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("a non-empty herald.toml block");
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The path of a tool, if this machine has it.
fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
            (found.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
}

// ---------------------------------------------------------------------------------------------
// nginx, TLS and the tunnel

/// deploy/nginx/herald.conf with this test's ports, upstream and certificate: every line the
/// test changes must be in the shipped file exactly once, so the file tested is the file shipped.
fn site_config(
    herald_addr: &str,
    tls_port: u16,
    http_port: u16,
    cert: &Path,
    key: &Path,
) -> String {
    let mut site = deploy_file("nginx/herald.conf");
    let substitutions = [
        (
            "server 127.0.0.1:8080 ".to_string(),
            format!("server {herald_addr} "),
        ),
        (
            "listen 80;".into(),
            format!("listen 127.0.0.1:{http_port};"),
        ),
        ("listen [::]:80;".into(), String::new()),
        (
            "listen 443 ssl;".into(),
            format!("listen 127.0.0.1:{tls_port} ssl;"),
        ),
        ("listen [::]:443 ssl;".into(), String::new()),
        (
            "/etc/letsencrypt/live/herald.example.com/fullchain.pem".into(),
            cert.display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/herald.example.com/privkey.pem".into(),
            key.display().to_string(),
        ),
    ];
    for (from, to) in substitutions {
        assert_eq!(
            site.matches(&from).count(),
            1,
            "deploy/nginx/herald.conf should have `{from}` once (the test substitutes it)"
        );
        site = site.replace(&from, &to);
    }
    site
}

/// A self-signed certificate for `localhost`; returns (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        output.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// An nginx master (`daemon off`) of this test, on its own prefix, config and logs; stopped
/// (`-s stop`) when dropped.
struct Nginx {
    bin: PathBuf,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, site: &str, tls_port: u16) -> Nginx {
        std::fs::write(dir.join("site.conf"), site).expect("write site");
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             access_log {d}/access.log;\nclient_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\ninclude {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("write nginx.conf");
        let check = Command::new(bin)
            .args(Self::args_for(dir))
            .arg("-t")
            .output()
            .expect("nginx -t");
        assert!(
            check.status.success(),
            "nginx -t refuses the config:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(bin)
            .args(Self::args_for(dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            bin: bin.to_path_buf(),
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            if let Some(status) = nginx.child.try_wait().expect("wait") {
                panic!("nginx exited ({status}):\n{}", nginx.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn args_for(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/error.log"),
        ]
    }

    fn signal(&self, signal: &str) -> bool {
        Command::new(&self.bin)
            .args(Self::args_for(&self.dir))
            .args(["-s", signal])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.signal("stop") {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain TCP port whose every connection is carried over TLS to nginx by one `openssl
/// s_client` that verifies the certificate (the test's CA, host name `localhost`) and connects
/// from `bind`: the test's clients speak plain WebSocket and HTTP to it, nginx sees TLS.
struct TlsTunnel {
    port: u16,
    children: Arc<Mutex<Vec<Arc<Mutex<Child>>>>>,
}

impl TlsTunnel {
    fn start(tls_port: u16, bind: &str, ca: &Path, log: &Path) -> TlsTunnel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tunnel");
        let port = listener.local_addr().expect("addr").port();
        let children: Arc<Mutex<Vec<Arc<Mutex<Child>>>>> = Arc::default();
        let (all, bind, ca, log) = (
            children.clone(),
            bind.to_string(),
            ca.to_path_buf(),
            log.to_path_buf(),
        );
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(socket) = socket else { return };
                let stderr = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("tunnel log");
                let mut child = Command::new("openssl")
                    .args([
                        "s_client",
                        "-quiet",
                        "-verify_quiet",
                        "-verify_return_error",
                    ])
                    .args(["-connect", &format!("127.0.0.1:{tls_port}")])
                    .args(["-bind", &bind])
                    .args(["-servername", "localhost", "-verify_hostname", "localhost"])
                    .arg("-CAfile")
                    .arg(&ca)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .spawn()
                    .expect("spawn openssl s_client");
                let mut to_tls = child.stdin.take().expect("stdin");
                let mut from_tls = child.stdout.take().expect("stdout");
                let child = Arc::new(Mutex::new(child));
                all.lock().expect("lock").push(child.clone());
                let mut reader = socket.try_clone().expect("clone socket");
                let mut writer = socket;
                std::thread::spawn(move || {
                    pump(&mut from_tls, &mut writer);
                    let _ = writer.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    pump(&mut reader, &mut to_tls);
                    let mut child = child.lock().expect("lock");
                    let _ = child.kill();
                    let _ = child.wait();
                });
            }
        });
        TlsTunnel { port, children }
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?token={token}", self.port)
    }
}

/// Copies until EOF or an error, with plain reads and writes: `std::io::copy` between a socket
/// and a pipe uses splice(2), which holds the pipe's lock while it waits for the socket, so
/// `s_client` could not read what came before (a deadlock).
fn pump(from: &mut impl Read, to: &mut impl Write) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to
                    .write_all(&buffer[..n])
                    .and_then(|()| to.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

impl Drop for TlsTunnel {
    fn drop(&mut self) {
        for child in self.children.lock().expect("lock").iter() {
            let mut child = child.lock().expect("lock");
            let _ = child.kill();
            // Reaped here, or by its pump thread; never waited for without a bound.
            for _ in 0..250 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A WebSocket through a tunnel, within [`WAIT`]; its `connection.established` is read.
async fn connect(url: &str, headers: &[(&str, &str)]) -> Client {
    let mut client = tokio::time::timeout(WAIT, Client::connect_with(url, headers))
        .await
        .expect("the WebSocket through nginx took too long to connect");
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connection.established", "{hello}");
    client
}

/// An HTTP call through a tunnel (so over TLS through nginx); returns the status and the body
/// as JSON (or as a string when it is not JSON).
async fn call(url: &str, method: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    let value = match location {
        Some(location) => json!({ "location": location }),
        None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    (status, value)
}

/// Each connection's user and remote_addr, through the tunnel.
async fn remote_addrs(tunnel: &TlsTunnel) -> BTreeMap<String, String> {
    let (status, list) = call(
        &tunnel.http("/api/v1/connections"),
        "GET",
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            (
                c["user_id"].as_str().expect("user_id").to_string(),
                c["remote_addr"].as_str().expect("remote_addr").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn nginx_terminates_tls_for_websockets_and_the_api_and_passes_the_client_address() {
    let Some(nginx_bin) = tool("nginx", &["/usr/sbin/nginx"]) else {
        eprintln!("SKIPPED: no nginx (/usr/sbin/nginx): apt-get install nginx (scripts/test does)");
        return;
    };
    if tool("openssl", &[]).is_none() {
        eprintln!("SKIPPED: no openssl: apt-get install openssl (scripts/test does)");
        return;
    }
    let mut server = Server::start("trusted_proxies = [\"127.0.0.1\"]\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let (tls_port, http_port) = (free_port(), free_port());
    let site = site_config(&server.addr, tls_port, http_port, &cert, &key);
    let nginx = Nginx::start(&nginx_bin, dir.path(), &site, tls_port);
    let log = dir.path().join("s_client.log");
    // A client on nginx's own host, and one elsewhere (another loopback address: nginx sees
    // it as 127.0.0.2, and the /metrics location does not allow it).
    let local = TlsTunnel::start(tls_port, "127.0.0.1", &cert, &log);
    let remote = TlsTunnel::start(tls_port, "127.0.0.2", &cert, &log);

    // TLS verified by s_client (CA and host name), nginx, herald: /ready answers.
    let (status, ready) = call(&remote.http("/ready"), "GET", None, None).await;
    assert_eq!(
        (status, &ready),
        (200, &json!({"status": "ready"})),
        "s_client: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // wss:// through nginx: connect, subscribe, receive a publication made over https.
    let mut alice = connect(&remote.ws(&token("alice", "user", &[])), &[]).await;
    alice.subscribe("news").await;
    let publish = |n: u32| {
        let url = remote.http("/api/v1/publish");
        async move {
            call(
                &url,
                "POST",
                Some(API_KEY),
                Some(
                    json!({"scope": "topic", "target": "news", "type": "story", "data": {"n": n}}),
                ),
            )
            .await
        }
    };
    let (status, answer) = publish(1).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recipients"], 1);
    let got = alice.recv().await;
    assert_eq!(
        (&got["type"], &got["topic"], &got["data"]),
        (&json!("story"), &json!("news"), &json!({"n": 1})),
        "{got}"
    );
    assert_eq!(got["id"], answer["id"]);

    // The client address reaches herald: X-Forwarded-For, appended by nginx, believed because
    // the TCP peer (nginx) is a trusted proxy. A direct peer would show with its port.
    let headers = [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=203.0.113.9"),
    ];
    let mut mallory = connect(&remote.ws(&token("mallory", "user", &[])), &headers).await;
    let mut bob = connect(&local.ws(&token("bob", "user", &[])), &[]).await;
    let addrs = remote_addrs(&local).await;
    assert_eq!(
        addrs["alice"], "127.0.0.2",
        "the client nginx saw: {addrs:?}"
    );
    assert_eq!(
        addrs["mallory"], "127.0.0.2",
        "a client's own X-Forwarded-For and Forwarded name nobody: {addrs:?}"
    );
    assert_eq!(
        addrs["bob"], "127.0.0.1",
        "a client on nginx's host, forwarded (no port): {addrs:?}"
    );

    // /metrics is for the private side only; plain HTTP redirects to https.
    let (status, metrics) = call(&local.http("/metrics"), "GET", None, None).await;
    assert_eq!(status, 200);
    assert!(metrics
        .as_str()
        .is_some_and(|m| m.contains("herald_build_info")));
    let (status, _) = call(&remote.http("/metrics"), "GET", None, None).await;
    assert_eq!(status, 403, "/metrics from an address nginx does not allow");
    let plain = format!("http://127.0.0.1:{http_port}/ws");
    let (status, redirect) = call(&plain, "GET", None, None).await;
    assert_eq!(status, 301);
    assert!(
        redirect["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://127.0.0.1/ws")),
        "{redirect}"
    );

    // A graceful reload: new workers take new connections, the old worker keeps alice's.
    assert!(nginx.signal("reload"), "nginx -s reload");
    eventually("nginx to reload (old worker shutting down)", || async {
        nginx
            .error_log()
            .contains("gracefully shutting down")
            .then_some(())
    })
    .await;
    let mut carol = connect(&remote.ws(&token("carol", "user", &[])), &[]).await;
    carol.subscribe("news").await;
    assert!(
        alice.is_alive().await,
        "alice's connection outlives the reload"
    );
    let (status, answer) = publish(2).await;
    assert_eq!(
        (status, &answer["recipients"]),
        (200, &json!(2)),
        "{answer}"
    );
    for client in [&mut alice, &mut carol] {
        let got = client.recv().await;
        assert_eq!(
            (&got["type"], &got["data"]),
            (&json!("story"), &json!({"n": 2}))
        );
    }

    // herald's SIGTERM: every client, through either worker, gets 1001 going away.
    let terminating = tokio::task::spawn_blocking(move || {
        let code = server.terminate();
        (server, code)
    });
    let (a, c, m, b) = tokio::join!(
        alice.closed(),
        carol.closed(),
        mallory.closed(),
        bob.closed()
    );
    for (who, closed) in [("alice", a), ("carol", c), ("mallory", m), ("bob", b)] {
        assert_eq!(closed.code, 1001, "{who}: {closed:?}");
        assert_eq!(closed.reason, "going away", "{who}");
    }
    let (_server, code) = terminating.await.expect("terminate");
    assert_eq!(code, Some(0), "herald exits 0 after a graceful shutdown");
    drop(nginx);
}

// ---------------------------------------------------------------------------------------------
// Prometheus: the dashboard's and the alerts' queries

/// One metric selector of a PromQL expression: the name and its label matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// A quoted string starting at `i`; returns its value and the index after it.
fn quoted(chars: &[char], mut i: usize) -> (String, usize) {
    let quote = chars[i];
    let mut value = String::new();
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && i + 1 < chars.len() {
            i += 1;
        }
        value.push(chars[i]);
        i += 1;
    }
    (value, i + 1)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The matchers of `{label op "value", ...}` starting at the `{` at `i`; and the index after.
fn matchers(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    i += 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (out, i + 1);
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let start = i;
        while i < chars.len() && "=!~".contains(chars[i]) {
            i += 1;
        }
        let op: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        assert!(
            i < chars.len() && "\"'`".contains(chars[i]),
            "a matcher's value must be quoted: {label}{op}..."
        );
        let (value, next) = quoted(chars, i);
        i = next;
        out.push((label, op, value));
    }
}

/// Every metric selector of a PromQL expression (functions, aggregations, their grouping
/// labels, keywords, numbers, ranges and Grafana variables are not metrics).
fn selectors(expr: &str) -> Vec<Selector> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put their grouping first: `sum by (le) (...)`.
    const KEYWORDS: [&str; 21] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "group_left",
        "group_right",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if "\"'`".contains(c) {
            i = quoted(&chars, i).1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '{' {
            i = matchers(&chars, i).1;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, a number (0.99, 1e9), a duration.
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let opens = |ch: char| next < chars.len() && chars[next] == ch;
            if GROUPING.contains(&word.as_str()) && opens('(') {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            } else if opens('(') || KEYWORDS.contains(&word.as_str()) {
                // A function or aggregation name, or a keyword.
            } else if opens('{') {
                let (found, after) = matchers(&chars, next);
                out.push(Selector {
                    name: word,
                    matchers: found,
                });
                i = after;
            } else {
                out.push(Selector {
                    name: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// A Prometheus text scrape: each family's type, and each sample name's label sets.
struct Scrape {
    types: BTreeMap<String, String>,
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

fn parse_scrape(text: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut series: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().expect("TYPE name").to_string();
            types.insert(name, words.next().expect("TYPE kind").to_string());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let end = chars.iter().position(|c| !is_ident(*c)).expect("a value");
        let name: String = chars[..end].iter().collect();
        let labels = if chars[end] == '{' {
            matchers(&chars, end)
                .0
                .into_iter()
                .map(|(label, _, value)| (label, value))
                .collect()
        } else {
            BTreeMap::new()
        };
        series.entry(name).or_default().push(labels);
    }
    Scrape { types, series }
}

/// Series Prometheus makes itself for every target; not Herald's to export.
const PROMETHEUS_OWN: [&str; 1] = ["up"];
/// Labels Prometheus adds at scrape time.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Checks that `expr` queries only what `scrape` has: each metric, each histogram's series
/// (of a family typed histogram), and each label value a matcher names.
fn check_expr(expr: &str, scrape: &Scrape, source: &str, used: &mut BTreeSet<String>) {
    let found = selectors(expr);
    assert!(!found.is_empty(), "{source}: no metric in `{expr}`");
    for selector in found {
        let name = selector.name.as_str();
        if PROMETHEUS_OWN.contains(&name) {
            continue;
        }
        let Some(samples) = scrape.series.get(name) else {
            panic!("{source}: `{expr}` queries {name}, which herald does not export");
        };
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (scrape.types.get(base).map(String::as_str) == Some("histogram"))
                    .then(|| base.to_string())
            })
            .unwrap_or_else(|| name.to_string());
        if name.ends_with("_bucket") {
            assert_ne!(family, name, "{source}: {name} is not a histogram's bucket");
        }
        assert!(
            scrape.types.contains_key(&family),
            "{source}: {family} has no # TYPE line"
        );
        used.insert(family);
        for (label, op, value) in &selector.matchers {
            if TARGET_LABELS.contains(&label.as_str()) || value.contains('$') {
                continue;
            }
            let values: Vec<&str> = match op.as_str() {
                "=" => vec![value.as_str()],
                "=~" if value.chars().all(|c| is_ident(c) || c == '|') => {
                    value.split('|').collect()
                }
                _ => continue,
            };
            for value in values {
                assert!(
                    samples
                        .iter()
                        .any(|l| l.get(label).map(String::as_str) == Some(value)),
                    "{source}: `{expr}` selects {name}{{{label}=\"{value}\"}}, which herald \
                     does not export"
                );
            }
        }
    }
}

/// Every string under an `expr` key, anywhere in the dashboard; and the selectors of its
/// template variables' `label_values(...)` queries.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    ("definition", Value::String(query)) => {
                        if let Some(inner) = query.strip_prefix("label_values(") {
                            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
                            out.push(selector.to_string());
                        }
                    }
                    _ => dashboard_queries(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_queries(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let server = Server::start("");
    // A little traffic: a connection, a subscription, a publication, a refused API call.
    let mut alice = server.user("alice").await;
    alice.subscribe("news").await;
    let (status, _) = server
        .publish(json!({"scope": "topic", "target": "news", "type": "story", "data": {}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(alice.recv().await["type"], "story");
    let (status, _) = server.api("GET", "/api/v1/stats", None, None).await;
    assert_eq!(status, 401);
    let text = reqwest::get(server.http("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let scrape = parse_scrape(&text);
    assert!(scrape.series.contains_key("herald_build_info"));

    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/herald.json")).expect("dashboard JSON");
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() > 10, "the dashboard's queries: {queries:?}");
    let mut used = BTreeSet::new();
    for expr in &queries {
        check_expr(expr, &scrape, "deploy/grafana/herald.json", &mut used);
    }
    // Every Herald family has a panel, and each histogram its p50 and p99.
    for family in scrape.types.keys().filter(|f| f.starts_with("herald_")) {
        assert!(
            used.contains(family),
            "deploy/grafana/herald.json shows nothing of {family}: add a panel"
        );
    }
    for (family, _) in scrape.types.iter().filter(|(_, t)| *t == "histogram") {
        for quantile in ["0.5", "0.99"] {
            let wanted = format!("histogram_quantile({quantile}, ");
            assert!(
                queries
                    .iter()
                    .any(|q| q.starts_with(&wanted) && q.contains(&format!("{family}_bucket"))),
                "the dashboard has no p{} of {family}",
                quantile.trim_start_matches("0.")
            );
        }
    }
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(used.contains(process), "the dashboard shows no {process}");
    }

    let alerts = deploy_file("prometheus/herald-alerts.yml");
    let exprs: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(str::trim)
        .collect();
    assert!(!exprs.is_empty(), "no expr in herald-alerts.yml");
    for expr in exprs {
        check_expr(
            expr,
            &scrape,
            "deploy/prometheus/herald-alerts.yml",
            &mut used,
        );
    }
}

#[test]
fn the_promql_reader_finds_metrics_and_nothing_else() {
    let found = selectors(
        "histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~\"$job\", \
         reason=\"x\"}[$__rate_interval]))) / on (instance) group_left b and time() - c > 1e9",
    );
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(
        found[0].matchers,
        [
            ("job".into(), "=~".into(), "$job".into()),
            ("reason".into(), "=".into(), "x".into())
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The container image, systemd, Kubernetes, the example configs

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn containerfile() -> Vec<String> {
    let text = deploy_file("Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn the_container_image_runs_herald_serve_as_non_root_and_its_health_check_asks_ready() {
    let instructions = containerfile();
    let find = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|i| i.strip_prefix(keyword))
            .filter_map(|rest| rest.strip_prefix(' '))
            .collect()
    };
    let froms = find("FROM");
    assert!(froms.len() >= 2, "a build stage and a runtime stage");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    let users = find("USER");
    let user = users.last().expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    assert!(find("EXPOSE").contains(&"8080"));
    assert!(find("VOLUME").iter().any(|v| v.contains("/var/lib/herald")));
    let env = find("ENV").join(" ");
    assert!(env.contains("HERALD_LISTEN=0.0.0.0:8080"), "{env}");
    assert!(env.contains("HERALD_DATA_DIR=/var/lib/herald"), "{env}");
    let entrypoint: Vec<String> =
        serde_json::from_str(find("ENTRYPOINT").last().expect("ENTRYPOINT")).expect("exec form");
    let cmd: Vec<String> =
        serde_json::from_str(find("CMD").last().expect("CMD")).expect("exec form");
    assert_eq!(
        (entrypoint.as_slice(), cmd.as_slice()),
        (
            ["/usr/local/bin/herald".to_string()].as_slice(),
            ["serve".to_string()].as_slice()
        )
    );

    let healthcheck = find("HEALTHCHECK");
    let check = healthcheck.last().expect("a HEALTHCHECK");
    let array = &check[check.find("CMD [").expect("HEALTHCHECK ... CMD [...]") + 4..];
    let command: Vec<String> = serde_json::from_str(array).expect("HEALTHCHECK CMD in exec form");
    if !Path::new(&command[0]).is_file() {
        eprintln!("SKIPPED running the health check: no {}", command[0]);
        return;
    }
    let port_of = "/dev/tcp/127.0.0.1/8080";
    let run = |port: &str| {
        let mut args = command.clone();
        for arg in &mut args {
            *arg = arg.replace(port_of, &format!("/dev/tcp/127.0.0.1/{port}"));
        }
        Command::new(&args[0])
            .args(&args[1..])
            .stderr(Stdio::null())
            .status()
            .expect("run the health check")
            .success()
    };
    assert!(command.iter().any(|a| a.contains(port_of)), "{command:?}");
    let server = Server::start("");
    let port = server.addr.rsplit_once(':').expect("port").1.to_string();
    assert!(run(&port), "healthy: /ready answers 200");
    drop(server);
    assert!(!run(&port), "unhealthy when nothing answers");
}

/// The `[Service]` settings of a unit file, each key with all its values.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((key, value)) = line.split_once('=') {
                out.entry(key.trim().to_string())
                    .or_default()
                    .push(value.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn the_systemd_unit_outlasts_the_shutdown_grace_and_reloads_keys_with_sighup() {
    let text = deploy_file("herald.service");
    let unit = unit_settings(&text);
    let one = |key: &str| -> &str {
        let values = unit
            .get(key)
            .unwrap_or_else(|| panic!("herald.service sets no {key}"));
        values.last().expect("a value")
    };
    let grace = shipped_shutdown_grace();
    let stop = duration(one("TimeoutStopSec"));
    assert!(
        stop > grace,
        "TimeoutStopSec ({stop:?}) must exceed limits.shutdown_grace ({grace:?})"
    );
    let nofile = one("LimitNOFILE");
    assert!(
        nofile == "infinity" || nofile.parse::<u64>().is_ok_and(|n| n >= 65536),
        "LimitNOFILE={nofile}"
    );
    let reload = one("ExecReload");
    assert!(
        reload.contains("kill") && reload.contains("-HUP") && reload.contains("$MAINPID"),
        "ExecReload={reload}"
    );
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("ExecStart").contains("herald serve --config /etc/herald/herald.toml"));
    assert!(one("EnvironmentFile").trim_start_matches('-') == "/etc/herald/herald.env");
    assert_eq!(one("StateDirectory"), "herald");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("CapabilityBoundingSet"), "");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(unit["SystemCallFilter"]
        .iter()
        .any(|f| f == "@system-service"));
    assert!(one("RestrictAddressFamilies").contains("AF_INET6"));

    // systemd's own check, where this machine has it, on a copy that starts the binary built
    // here (the unit's /usr/local/bin/herald is not installed on a test machine).
    let Some(analyze) = tool("systemd-analyze", &[]) else {
        eprintln!("SKIPPED systemd-analyze verify: no systemd-analyze");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("herald.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/herald", herald_bin())).expect("write");
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    assert!(
        output.status.success(),
        "systemd-analyze verify:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The first value of `key:` in a YAML text, unquoted.
fn yaml_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let value = line.trim().trim_start_matches("- ").strip_prefix(key)?;
        Some(value.strip_prefix(':')?.trim().trim_matches('"'))
    })
}

/// The YAML document of `kind` in a multi-document file.
fn yaml_document<'a>(text: &'a str, kind: &str) -> &'a str {
    text.split("\n---")
        .find(|doc| doc.lines().any(|l| l.trim() == format!("kind: {kind}")))
        .unwrap_or_else(|| panic!("no kind: {kind}"))
}

/// The text after the first line `key:` in `text`.
fn after<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text
        .find(&format!("{key}:"))
        .unwrap_or_else(|| panic!("no {key}:"));
    &text[at..]
}

#[test]
fn the_kubernetes_deployments_probe_health_and_ready_and_outlast_the_grace() {
    let grace = shipped_shutdown_grace();
    for file in ["k8s/deployment.yaml", "k8s/single-node.yaml"] {
        let text = deploy_file(file);
        let deployment = yaml_document(&text, "Deployment");
        let termination: u64 = yaml_value(deployment, "terminationGracePeriodSeconds")
            .expect("terminationGracePeriodSeconds")
            .parse()
            .expect("seconds");
        // A preStop sleep comes out of the same grace period.
        let pre_stop = deployment
            .find("preStop:")
            .map(|at| {
                let command = yaml_value(&deployment[at..], "command").expect("preStop command");
                let args: Vec<String> = serde_json::from_str(command).expect("a JSON-style list");
                assert_eq!(args[0], "sleep", "{file}: preStop {args:?}");
                Duration::from_secs(args[1].parse().expect("sleep seconds"))
            })
            .unwrap_or_default();
        assert!(
            Duration::from_secs(termination) > grace + pre_stop,
            "{file}: terminationGracePeriodSeconds {termination} must exceed preStop \
             ({pre_stop:?}) plus limits.shutdown_grace ({grace:?})"
        );
        assert_eq!(
            yaml_value(after(deployment, "livenessProbe"), "path"),
            Some("/health"),
            "{file}"
        );
        assert_eq!(
            yaml_value(after(deployment, "readinessProbe"), "path"),
            Some("/ready"),
            "{file}"
        );
        assert_eq!(
            yaml_value(deployment, "runAsNonRoot"),
            Some("true"),
            "{file}"
        );
        assert_eq!(
            yaml_value(deployment, "readOnlyRootFilesystem"),
            Some("true"),
            "{file}"
        );
        assert_eq!(
            yaml_value(deployment, "allowPrivilegeEscalation"),
            Some("false"),
            "{file}"
        );
        assert_eq!(
            yaml_value(deployment, "mountPath"),
            Some("/etc/herald"),
            "{file}: the config"
        );
        assert!(
            deployment.contains("mountPath: /var/lib/herald"),
            "{file}: a volume for the data dir (the root filesystem is read-only)"
        );
        for secret in ["HERALD_JWT_SECRET", "HERALD_API_KEY"] {
            let at = deployment
                .find(&format!("- name: {secret}\n"))
                .unwrap_or_else(|| panic!("{file}: no env {secret}"));
            let env = &deployment[at..];
            assert_eq!(
                yaml_value(env, "key"),
                Some(secret),
                "{file}: {secret} from the Secret"
            );
            assert!(env
                .lines()
                .nth(2)
                .is_some_and(|l| l.contains("secretKeyRef:")));
        }
        assert!(
            yaml_value(deployment, "requests").is_some()
                && yaml_value(deployment, "limits").is_some()
        );
        let replicas: u32 = yaml_value(deployment, "replicas")
            .expect("replicas")
            .parse()
            .expect("a number");
        if file.ends_with("single-node.yaml") {
            assert_eq!(replicas, 1, "one pod per SQLite data dir");
            assert_eq!(yaml_value(deployment, "type"), Some("Recreate"));
            assert!(!deployment.contains("HERALD_REDIS_URL"));
            let claim = yaml_value(yaml_document(&text, "PersistentVolumeClaim"), "name");
            assert_eq!(
                yaml_value(after(deployment, "persistentVolumeClaim"), "claimName"),
                claim
            );
        } else {
            assert!(replicas > 1, "cluster mode: several replicas");
            assert!(deployment.contains("- name: HERALD_REDIS_URL"));
        }
    }
    let service = deploy_file("k8s/service.yaml");
    assert_eq!(yaml_value(&service, "targetPort"), Some("http"));
    let redis = deploy_file("k8s/redis.yaml");
    yaml_document(&redis, "Deployment");
    assert_eq!(
        yaml_value(yaml_document(&redis, "Service"), "name"),
        Some("herald-redis")
    );
    assert!(deploy_file("k8s/deployment.yaml").contains("value: redis://herald-redis:6379"));
}

#[test]
fn the_example_configs_pass_herald_config_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let configmap = dir.path().join("configmap.toml");
    std::fs::write(&configmap, configmap_toml()).expect("write");
    for config in [repo_root().join("deploy/herald.toml"), configmap] {
        let output = herald()
            .args(["config", "check"])
            .arg(&config)
            // The examples listen on 0.0.0.0:8080 and keep their data in /var/lib/herald.
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("herald config check");
        assert!(
            output.status.success(),
            "herald config check {}: {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&config).expect("read");
        let value: toml::Value = toml::from_str(&text).expect("TOML");
        let proxies = value["trusted_proxies"]
            .as_array()
            .expect("trusted_proxies");
        assert!(!proxies.is_empty(), "{}: trusted_proxies", config.display());
    }
    // herald.env: every variable, commented out or not, is a Herald setting that loads.
    let mut check = herald();
    check
        .args(["config", "check"])
        .arg(repo_root().join("deploy/herald.toml"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"));
    let env = deploy_file("herald.env");
    let mut names = Vec::new();
    for line in env.lines().map(|l| l.trim_start_matches('#')) {
        if let Some((key, value)) = line
            .split_once('=')
            .filter(|(k, _)| k.starts_with("HERALD_"))
        {
            check.env(key, value);
            names.push(key.to_string());
        }
    }
    assert!(names.contains(&"HERALD_NODE_ID".to_string()), "{names:?}");
    let output = check.output().expect("herald config check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald.env: {stderr}");
    assert!(
        !stderr.contains("not a Herald setting"),
        "herald.env: {stderr}"
    );
}
