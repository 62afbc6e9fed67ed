//! The `herald` command line (docs/PROTOCOL.md, section 12): start-up errors, the development secret,
//! `herald token`, and how flags, the environment and the file layer.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// A `herald` command with a clean `HERALD_*` environment, run in `dir`.
fn herald(dir: &std::path::Path) -> Command {
    let mut command = Command::new(herald_bin());
    command.current_dir(dir).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `herald serve` expecting it to refuse to start; returns its stderr.
fn refuses_to_start(command: &mut Command) -> String {
    let output = command.output().expect("run herald");
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code 2 for an unusable setting"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one clear line: {stderr}"
    );
    stderr
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn an_unknown_profile_stops_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let stderr = refuses_to_start(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HERALD_PROFILE", "galaxy"),
    );
    assert!(stderr.contains("galaxy"), "{stderr}");
}

/// The configuration `command` (a `config print`) prints, read back.
fn print(command: &mut Command) -> herald::Config {
    let output = command.output().expect("run");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    herald::Config::from_toml(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"))
}

#[test]
fn a_profile_brings_its_products_defaults_under_the_file_and_the_flags() {
    let dir = tempfile::tempdir().expect("dir");
    let plain = print(herald(dir.path()).args(["config", "print"]));
    assert_eq!(plain.limits.max_message_size, 64 * 1024);
    assert_eq!(plain.limits.max_connections_per_ip, 0);
    let cartographer =
        print(herald(dir.path()).args(["config", "print", "--profile", "cartographer"]));
    assert_eq!(cartographer.limits.max_message_size, 512 * 1024);
    assert_eq!(cartographer.limits.max_connections_per_ip, 100);
    let file = write(
        dir.path(),
        "herald.toml",
        "profile = \"cartographer\"\n[limits]\nmax_message_size = 4096\n",
    );
    let chosen = print(
        herald(dir.path())
            .args(["config", "print"])
            .arg(&file)
            .args(["--max-connections-per-ip", "7"]),
    );
    assert_eq!(
        chosen.limits.max_message_size, 4096,
        "the file over the profile"
    );
    assert_eq!(
        chosen.limits.max_connections_per_ip, 7,
        "the flag over the profile"
    );
}

#[test]
fn unusable_settings_stop_start_up_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    let unknown = write(
        dir.path(),
        "unknown.toml",
        "listen = \"127.0.0.1:0\"\nlisen = \"x\"\n",
    );
    let stderr = refuses_to_start(
        herald(dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&unknown),
    );
    assert!(stderr.contains("lisen"), "names the unknown key: {stderr}");

    let invalid = write(dir.path(), "invalid.toml", "listen = \n[limits\n");
    refuses_to_start(
        herald(dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&invalid),
    );

    let bad_value = write(
        dir.path(),
        "bad.toml",
        "[limits]\nping_interval = \"soon\"\n",
    );
    let stderr = refuses_to_start(
        herald(dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&bad_value),
    );
    assert!(stderr.contains("soon"), "{stderr}");

    let zero = write(
        dir.path(),
        "zero.toml",
        "[limits]\nping_interval = \"0s\"\n",
    );
    let stderr = refuses_to_start(herald(dir.path()).arg("serve").arg("--config").arg(&zero));
    assert!(stderr.contains("ping_interval"), "{stderr}");

    let stderr = refuses_to_start(herald(dir.path()).args(["serve", "--listen", "not-an-address"]));
    assert!(stderr.contains("not-an-address"), "{stderr}");

    refuses_to_start(herald(dir.path()).args([
        "serve",
        "--jwt-public-key",
        "/nonexistent/key.pem",
    ]));
    refuses_to_start(herald(dir.path()).args(["serve", "--config", "/nonexistent/herald.toml"]));
    let garbage_key = write(dir.path(), "garbage.pem", "not a key");
    refuses_to_start(
        herald(dir.path())
            .arg("serve")
            .arg("--jwt-public-key")
            .arg(&garbage_key),
    );

    // A port that is already taken: one line, and nothing created on disk.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let fresh = tempfile::tempdir().expect("dir");
    let stderr = refuses_to_start(herald(fresh.path()).args(["serve", "--listen", &addr]));
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(
        !fresh.path().join("herald-data").exists(),
        "no data dir, no development secret"
    );

    // A pong timeout no longer than the ping interval would drop idle, healthy clients.
    let short = write(
        dir.path(),
        "short.toml",
        "[limits]\nping_interval = \"10s\"\npong_timeout = \"3s\"\n",
    );
    let stderr = refuses_to_start(herald(dir.path()).arg("serve").arg("--config").arg(&short));
    assert!(stderr.contains("pong_timeout"), "{stderr}");
}

#[tokio::test]
async fn serve_then_token_just_works_with_the_development_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let (addr, _guard) = serving(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped()),
    );
    assert!(
        dir.path().join("herald-data/dev-jwt-secret").exists(),
        "kept in the data dir"
    );

    let output = herald(dir.path())
        .args(["token", "--sub", "alice"])
        .output()
        .expect("token");
    assert!(output.status.success());
    let jwt = String::from_utf8(output.stdout).expect("utf-8");
    let mut client = Client::connect(&format!("ws://{addr}/ws?token={}", jwt.trim())).await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["user_id"], "alice");
}

#[tokio::test]
async fn token_carries_role_projects_and_ttl() {
    let dir = tempfile::tempdir().expect("dir");
    let output = herald(dir.path())
        .args([
            "token",
            "--sub",
            "7",
            "--role",
            "admin",
            "--projects",
            "a,b",
            "--ttl",
            "2h",
            "--jwt-secret",
            SECRET,
        ])
        .output()
        .expect("token");
    assert!(output.status.success());
    let jwt = String::from_utf8(output.stdout).expect("utf-8");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("valid token")
    .claims;
    assert_eq!(claims["sub"], "7");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["projects"], json!(["a", "b"]));
    let ttl = claims["exp"].as_u64().expect("exp") - now();
    assert!((7100..=7200).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write(
        dir.path(),
        "herald.toml",
        &format!(
            "listen = \"127.0.0.1:1\"\napi_key = \"from-file\"\n[jwt]\nsecret = \"{SECRET}\"\n"
        ),
    );
    let (addr, _guard) = serving(
        herald(dir.path())
            .arg("serve")
            .env("HERALD_CONFIG", &config)
            .env("HERALD_LISTEN", "127.0.0.1:2")
            .env("HERALD_API_KEY", "from-env")
            .args(["--listen", "127.0.0.1:0"]),
    );
    assert!(
        !addr.ends_with(":1") && !addr.ends_with(":2"),
        "the flag's port 0 won: {addr}"
    );
    let http = reqwest::Client::new();
    let publish = |key: &'static str| {
        http.post(format!("http://{addr}/api/v1/publish"))
            .bearer_auth(key)
            .json(&json!({"scope": "all", "type": "x"}))
            .send()
    };
    assert_eq!(
        publish("from-env").await.expect("send").status(),
        200,
        "the environment's key"
    );
    assert_eq!(
        publish("from-file").await.expect("send").status(),
        401,
        "the file's key lost"
    );
}

#[tokio::test]
async fn health_and_ready_answer_without_credentials() {
    let server = Server::start("");
    for path in ["/health", "/ready"] {
        let (status, _) = server.api("GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn every_environment_twin_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("from-env-data");
    let (addr, _guard) = serving(
        herald(dir.path())
            .arg("serve")
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_DATA_DIR", &data)
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_API_KEY", API_KEY)
            .env("HERALD_NODE_ID", "node-a"),
    );
    assert!(
        data.join("herald.db").exists(),
        "HERALD_DATA_DIR chose the store"
    );
    let mut client = Client::connect(&format!(
        "ws://{addr}/ws?token={}",
        token("env", "user", &[])
    ))
    .await;
    assert_eq!(
        client.recv().await["type"],
        "connection.established",
        "HERALD_JWT_SECRET"
    );

    // HERALD_JWT_PUBLIC_KEY: an RS256 token verifies.
    let (addr, _guard) = serving(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("rs"))
            .env("HERALD_JWT_PUBLIC_KEY", fixture("rsa_public.pem")),
    );
    let pem = std::fs::read(fixture("rsa_private.pem")).expect("fixture");
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "rsa", "exp": now() + 60}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("key"),
    )
    .expect("sign");
    let mut client = Client::connect(&format!("ws://{addr}/ws?token={rs}")).await;
    assert_eq!(client.recv().await["data"]["user_id"], "rsa");

    // HERALD_REDIS_URL: read (an unusable URL is refused in one line; the cluster tests
    // run against a real Redis).
    let stderr = refuses_to_start(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", "s"])
            .env("HERALD_REDIS_URL", "not-a-redis-url"),
    );
    assert!(stderr.contains("redis_url"), "{stderr}");
}

#[tokio::test]
async fn the_connection_limits_have_environment_twins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("dir");
    let (addr, first) = serving(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .env("HERALD_MAX_SUBSCRIPTIONS", "1")
            .env("HERALD_MAX_CONNECTIONS_PER_USER", "1")
            .env("HERALD_MAX_CONNECTIONS", "2")
            .env("HERALD_HTTP_HEADER_TIMEOUT", "1s")
            .env("HERALD_HTTP_IDLE_TIMEOUT", "1s"),
    );
    let url = |user: &str| format!("ws://{addr}/ws?token={}", token(user, "user", &[]));
    let mut a = Client::connect(&url("a")).await;
    a.recv().await;
    a.subscribe("one").await;
    let reply = a
        .request(json!({"type": "subscribe", "topic": "two"}))
        .await;
    assert_eq!(
        reply["data"]["code"], "limit_exceeded",
        "HERALD_MAX_SUBSCRIPTIONS"
    );
    let (status, _) = refused_status(&url("a"), &[]).await;
    assert_eq!(status, 429, "HERALD_MAX_CONNECTIONS_PER_USER");
    let _b = Client::connect(&url("b")).await;
    let (status, _) = refused_status(&url("c"), &[]).await;
    assert_eq!(status, 503, "HERALD_MAX_CONNECTIONS");
    // A request head that never ends, and a keep-alive that idles, are closed.
    for head in [
        "GET /health HTTP/1.1\r\nHost: x\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !matches!(tcp.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "HERALD_HTTP_HEADER_TIMEOUT / HERALD_HTTP_IDLE_TIMEOUT"
        );
    }
    // The next server uses the same data dir, which one server holds at a time.
    drop(first);

    let (addr, _guard) = serving(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .env("HERALD_MAX_CONNECTIONS_PER_IP", "1"),
    );
    let _held = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let response = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 429, "HERALD_MAX_CONNECTIONS_PER_IP");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_private_and_held_by_one_server() {
    let server = Server::start("[[namespaces]]\nname = \"log\"\nhistory_size = 10\n");
    let (status, _) = server
        .publish(json!({"scope": "topic", "target": "log:a", "type": "t", "data": {}}))
        .await;
    assert_eq!(status, 200);
    let data = server.data_dir();
    assert_eq!(mode(&data), 0o700, "the data dir");
    for file in ["herald.db", "herald.db-wal", "herald.db-shm", "herald.lock"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    let elsewhere = tempfile::tempdir().expect("dir");
    let stderr = refuses_to_start(herald(elsewhere.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "another-secret",
        "--data-dir",
        &data.display().to_string(),
    ]));
    assert!(
        stderr.contains(&format!("in use by another herald (pid {})", server.pid())),
        "{stderr}"
    );
    let (status, _) = server
        .publish(json!({"scope": "topic", "target": "log:a", "type": "t", "data": {}}))
        .await;
    assert_eq!(status, 200, "the first server carries on");
}

#[test]
fn a_database_from_a_newer_herald_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    herald::engine::sqlite::create_private(&data).expect("data dir");
    let db = data.join("herald.db");
    {
        let conn = herald::engine::sqlite::open(&db).expect("open");
        assert_eq!(
            conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
                .expect("version"),
            herald::engine::sqlite::SCHEMA_VERSION as i64,
            "a new file gets the current schema version"
        );
        conn.execute_batch("PRAGMA user_version = 99").expect("set");
    }
    let before = std::fs::read(&db).expect("read");
    let stderr = refuses_to_start(herald(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "s",
        "--data-dir",
        &data.display().to_string(),
    ]));
    assert!(stderr.contains("schema version 99"), "{stderr}");
    assert_eq!(std::fs::read(&db).expect("read"), before, "left as it was");
}

/// Publishes `{n}` to `log:a`; returns the status.
async fn publish(server: &Server, n: u64) -> u16 {
    let body = json!({"scope": "topic", "target": "log:a", "type": "t", "data": {"n": n}});
    server.publish(body).await.0
}

/// A topic's history page, by the server API.
async fn history_page(server: &Server, topic: &str) -> Value {
    let (status, page) = server
        .api(
            "GET",
            &format!("/api/v1/topics/{topic}/history"),
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page
}

/// The `data.n` of a topic's history.
async fn history_of(server: &Server, topic: &str) -> Vec<u64> {
    history_page(server, topic).await["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"]["n"].as_u64().expect("n"))
        .collect()
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_with_new_epochs() {
    const CONFIG: &str = "[[namespaces]]\nname = \"log\"\nhistory_size = 100\n";
    let mut server = Server::start(CONFIG);
    for n in 1..=3 {
        assert_eq!(publish(&server, n).await, 200);
    }
    let old_epoch = history_page(&server, "log:a").await["epoch"].clone();
    let work = tempfile::tempdir().expect("dir");
    let copy = work.path().join("backup.db");
    let data = server.data_dir().display().to_string();
    let output = herald(work.path())
        .args(["backup", "--data-dir", &data, "--to"])
        .arg(&copy)
        .output()
        .expect("run herald backup");
    assert!(output.status.success(), "{output:?}");
    #[cfg(unix)]
    assert_eq!(mode(&copy), 0o600, "the copy is private too");
    assert_eq!(
        publish(&server, 4).await,
        200,
        "the server ran on during the backup"
    );

    let stderr = refuses_to_start(
        herald(work.path())
            .args(["backup", "--data-dir", &data, "--to"])
            .arg(&copy),
    );
    assert!(
        stderr.contains("exists"),
        "never over an older file: {stderr}"
    );
    let stderr = refuses_to_start(
        herald(work.path())
            .args(["restore", "--data-dir", &data, "--from"])
            .arg(&copy),
    );
    assert!(
        stderr.contains("in use by another herald"),
        "never under a running server: {stderr}"
    );

    // Restore over the server's own data dir once it has stopped.
    assert_eq!(server.terminate(), Some(0));
    let output = herald(work.path())
        .args(["restore", "--data-dir", &data, "--from"])
        .arg(&copy)
        .output()
        .expect("run herald restore");
    assert!(output.status.success(), "{output:?}");
    server.restart();
    assert_eq!(history_of(&server, "log:a").await, [1, 2, 3]);
    let page = history_page(&server, "log:a").await;
    assert_ne!(
        page["epoch"], old_epoch,
        "a new epoch: offset 4 will be another message"
    );
    assert_eq!(page["offset"], 3);
}

#[test]
fn config_print_shows_the_effective_settings_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "herald.toml",
        "api_key = \"file-key\"\napi_keys = [\"older-key\"]\nredis_url = \"redis://:hunter2@127.0.0.1:6390\"\n[limits]\nsend_queue = 5\n[jwt]\nsecret = \"file-secret\"\n[[jwt.keys]]\nsecret = \"older-secret\"\n",
    );
    let output = herald(dir.path())
        .args(["config", "print"])
        .arg(&file)
        .env("HERALD_LIMITS__SEND_QUEUE", "64")
        .env(
            "HERALD_NAMESPACES",
            r#"[{name = "chat", history_size = 10}]"#,
        )
        .env("HERALD_LISTN", "0.0.0.0:1")
        .args(["--listen", "127.0.0.1:9999"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let config = herald::Config::from_toml(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(
        config.limits.send_queue, 64,
        "the environment over the file"
    );
    assert_eq!(config.listen, "127.0.0.1:9999", "the flag over both");
    assert_eq!(config.namespace("chat").map(|ns| ns.history_size), Some(10));
    for secret in [
        "file-key",
        "file-secret",
        "hunter2",
        "older-key",
        "older-secret",
    ] {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
    }
    assert!(printed.contains("REDACTED"), "{printed}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HERALD_LISTN is not a Herald setting"),
        "a typo is reported: {stderr}"
    );

    let output = herald(dir.path())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let version = herald(dir.path()).arg("--version").output().expect("run");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.starts_with(&format!("herald {} (commit ", env!("CARGO_PKG_VERSION"))),
        "the version says which commit: {version}"
    );
    let stderr = refuses_to_start(
        herald(dir.path())
            .args(["config", "check"])
            .arg(&file)
            .env("HERALD_LIMITS__SEND_QUEUE", "lots"),
    );
    assert!(
        stderr.contains("HERALD_LIMITS__SEND_QUEUE"),
        "names the variable: {stderr}"
    );
}

#[tokio::test]
async fn a_flag_wins_over_the_environment_for_the_jwt_key_too() {
    let dir = tempfile::tempdir().expect("dir");
    let key = fixture("rsa_public.pem");
    let (addr, _guard) = serving(
        herald(dir.path())
            .env("HERALD_JWT_SECRET", SECRET)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--jwt-public-key"])
            .arg(&key),
    );
    // The public key (the flag) is in force, not the environment's secret.
    let hs = token("h", "user", &[]);
    let (status, _) = refused_status(&format!("ws://{addr}/ws?token={hs}"), &[]).await;
    assert_eq!(
        status, 401,
        "an HS256 token is refused: the flag's key verifies"
    );
}

/// Sends SIGHUP to the server (it keeps running).
fn hang_up(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_rotates_the_keys_without_dropping_a_connection() {
    let sign_as = |secret: &str, sub: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": sub, "exp": now() + 600}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let server =
        Server::start_with("api_key = \"key-one\"\n[jwt]\nsecret = \"secret-one-0123456789\"\n");
    let config = server.data_dir().with_file_name("herald.toml");
    let original = std::fs::read_to_string(&config).expect("config");
    let mut kept = server
        .connect(&sign_as("secret-one-0123456789", "kept"))
        .await;

    // Step 1: the new secret and key join the old ones.
    let both = original
        .replace(
            "api_key = \"key-one\"",
            "api_key = \"key-two\"\napi_keys = [\"key-one\"]",
        )
        .replace(
            "secret = \"secret-one-0123456789\"",
            "secret = \"secret-two-0123456789\"\n[[jwt.keys]]\nsecret = \"secret-one-0123456789\"",
        );
    std::fs::write(&config, both).expect("write");
    hang_up(&server);
    let url = |secret: &str| server.ws_url(&format!("token={}", sign_as(secret, "new")));
    connects_eventually("the new secret", &url("secret-two-0123456789")).await;
    drop(
        server
            .connect(&sign_as("secret-one-0123456789", "old"))
            .await,
    );
    for key in ["key-one", "key-two"] {
        let (status, _) = server.api("GET", "/api/v1/stats", Some(key), None).await;
        assert_eq!(status, 200, "{key} during the rotation");
    }

    // Step 2: the old ones go.
    let only_new = original
        .replace("api_key = \"key-one\"", "api_key = \"key-two\"")
        .replace("secret-one-0123456789", "secret-two-0123456789");
    std::fs::write(&config, only_new).expect("write");
    hang_up(&server);
    eventually("the old key to go", || async {
        let (status, _) = server
            .api("GET", "/api/v1/stats", Some("key-one"), None)
            .await;
        (status == 401).then_some(())
    })
    .await;
    let (status, _) = refused_status(&url("secret-one-0123456789"), &[]).await;
    assert_eq!(status, 401, "a token of the old secret is refused");
    assert!(
        kept.is_alive().await,
        "the connection made with the old secret stays"
    );

    // A file that does not load changes nothing.
    std::fs::write(&config, "listen = [").expect("write");
    hang_up(&server);
    eventually("the refusal to be logged", || async {
        server
            .logs()
            .contains("the old credentials stay")
            .then_some(())
    })
    .await;
    let (status, _) = server
        .api("GET", "/api/v1/stats", Some("key-two"), None)
        .await;
    assert_eq!(status, 200);
    assert!(kept.is_alive().await);
}

#[test]
fn a_redis_cluster_is_named_by_its_seeds_in_the_file_the_environment_or_the_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let seeds = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"];
    let from_env = print(
        herald(dir.path())
            .args(["config", "print"])
            .env("HERALD_REDIS_CLUSTER", seeds.join(",")),
    );
    assert_eq!(from_env.redis_cluster, seeds);
    let one = print(
        herald(dir.path())
            .args(["config", "print"])
            .env("HERALD_REDIS_CLUSTER", seeds[0]),
    );
    assert_eq!(one.redis_cluster, [seeds[0]]);
    let from_flag =
        print(herald(dir.path()).args(["config", "print", "--redis-cluster", &seeds.join(",")]));
    assert_eq!(from_flag.redis_cluster, seeds);
    assert_eq!(from_flag.redis_url, None);
    // One Redis or a Redis Cluster, not both.
    let stderr = refuses_to_start(
        herald(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HERALD_REDIS_URL", "redis://127.0.0.1:6379")
            .env("HERALD_REDIS_CLUSTER", seeds.join(",")),
    );
    assert!(stderr.contains("exclude each other"), "{stderr}");
}
