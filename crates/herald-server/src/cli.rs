//! Command-line flags, their `HERALD_*` environment twins, and how they layer over the file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herald::Config;

use crate::Unusable;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version = herald::LONG_VERSION,
    about = "Herald, a real-time messaging server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Herald node.
    Serve(ServeArgs),
    /// Print a JWT signed with the configured (or development) secret.
    Token(TokenArgs),
    /// Copy the embedded store (history, inboxes, membership) to a new file, online.
    Backup(BackupArgs),
    /// Put a backup in place of the embedded store (no server may be running on it).
    Restore(RestoreArgs),
    /// Check or print the configuration `herald serve` would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration (the file, the environment and these flags) without starting.
    Check(ConfigArgs),
    /// Print the effective configuration as TOML, secrets redacted.
    Print(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The config file (the same as --config).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

impl ConfigArgs {
    pub fn config(&mut self) -> Result<Loaded, Unusable> {
        if let Some(file) = self.file.take() {
            self.serve.source.config = Some(file);
        }
        self.serve.config()
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    source: Source,
    /// The backup to restore (written by `herald backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
}

impl RestoreArgs {
    pub fn config(&self) -> Result<Loaded, Unusable> {
        self.source.load(None)
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    source: Source,
    /// The new file to write the copy to.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

impl BackupArgs {
    pub fn config(&self) -> Result<Loaded, Unusable> {
        self.source.load(None)
    }
}

/// Where the configuration comes from; shared by both commands.
#[derive(Debug, Args)]
pub struct Source {
    /// TOML config file.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the embedded store (and the development secret).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Shared secret for HS256/384/512 tokens.
    #[arg(long, value_name = "S")]
    jwt_secret: Option<String>,
    /// PEM public key for RS256 or ES256 tokens.
    #[arg(long, value_name = "PEM_FILE")]
    jwt_public_key: Option<PathBuf>,
}

/// A configuration, and what to warn about once logging runs.
pub struct Loaded {
    pub config: Config,
    /// Unknown `HERALD_*` variables.
    pub warnings: Vec<String>,
}

impl Source {
    /// Defaults (a profile's own among them: `profile`, the flag's or else the file's or the
    /// environment's), then the file, then the environment (`env`), then these flags.
    fn load(&self, profile: Option<&str>) -> Result<Loaded, Unusable> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Unusable(format!("config {}: {e}", path.display())))?;
                // Parsed whole first: its errors name the file's line.
                Config::from_toml(&text)
                    .map_err(|e| Unusable(format!("config {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| Unusable(format!("config {}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let (mut merged, warnings) = crate::env::apply(file, std::env::vars())?;
        let profile = profile.map(str::to_string).or_else(|| {
            merged
                .get("profile")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        });
        if let Some(profile) = profile.as_deref().and_then(|name| parse_profile(name).ok()) {
            with_profile_defaults(&mut merged, profile);
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| Unusable(e.message().trim().replace('\n', " ")))?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(Unusable(
                    "give a JWT secret or a JWT public key, not both".into(),
                ))
            }
            (Some(secret), None) => {
                config.jwt.secret = Some(secret.clone());
                config.jwt.public_key = None;
            }
            (None, Some(key)) => {
                config.jwt.public_key = Some(key.clone());
                config.jwt.secret = None;
            }
            (None, None) => {}
        }
        Ok(Loaded { config, warnings })
    }
}

/// A profile by its name.
fn parse_profile(name: &str) -> Result<herald::config::Profile, Unusable> {
    let value = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name);
    serde::Deserialize::deserialize(value).map_err(|e| Unusable(e.to_string()))
}

/// Puts the profile's own defaults under what the file and the environment set.
fn with_profile_defaults(merged: &mut toml::Table, profile: herald::config::Profile) {
    for &(section, key, value) in profile.defaults() {
        let section = merged
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section) = section {
            section.entry(key).or_insert(toml::Value::Integer(value));
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    source: Source,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Bearer key for the server HTTP API.
    #[arg(long, value_name = "K")]
    api_key: Option<String>,
    /// A private address for the server API, /metrics and the probes (the public one then
    /// serves /ws, the probes and the console only).
    #[arg(long, value_name = "ADDR")]
    internal_listen: Option<String>,
    /// Do not serve the browser console.
    #[arg(long)]
    no_console: bool,
    /// Redis URL: run as one node of a cluster.
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    redis_url: Option<String>,
    /// A Redis Cluster's seed URLs (any of its nodes), comma-separated: run as one node of a
    /// cluster on it.
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
    redis_cluster: Option<Vec<String>>,
    /// This node's id in a cluster.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Speak as a product Herald replaces (docs/MIGRATING.md): pulse, users-api, auto-devs,
    /// conduit, cartographer.
    #[arg(long, value_name = "NAME", value_parser = ["pulse", "users-api", "auto-devs", "conduit", "cartographer"])]
    profile: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Log lines as text (default) or JSON objects, one per line, on stderr.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve `/test/echo` (no auth, every frame echoed) for protocol conformance runs.
    #[arg(long, hide = true)]
    test_echo_endpoint: bool,
}

/// The connection limits of `[limits]` (docs/OPERATIONS.md), each with its flag and twin.
#[derive(Debug, Args)]
struct LimitArgs {
    /// Open WebSocket connections allowed on this node; 0: unlimited.
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
    /// Open WebSocket connections allowed per user; 0: unlimited.
    #[arg(long, value_name = "N")]
    max_connections_per_user: Option<u32>,
    /// Open HTTP and WebSocket connections allowed per client IP; 0: unlimited.
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<u32>,
    /// Subscriptions one connection may hold; 0: unlimited.
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Longest wait for an HTTP request head, e.g. 10s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    http_header_timeout: Option<Duration>,
    /// Longest idle time of a keep-alive HTTP connection, e.g. 60s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    http_idle_timeout: Option<Duration>,
}

impl LimitArgs {
    fn apply(&self, limits: &mut herald::config::Limits) {
        let set = |target: &mut u32, value: Option<u32>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut limits.max_connections, self.max_connections);
        set(
            &mut limits.max_connections_per_user,
            self.max_connections_per_user,
        );
        set(
            &mut limits.max_connections_per_ip,
            self.max_connections_per_ip,
        );
        if let Some(max) = self.max_subscriptions {
            limits.max_subscriptions = max;
        }
        if let Some(timeout) = self.http_header_timeout {
            limits.http_header_timeout = timeout;
        }
        if let Some(timeout) = self.http_idle_timeout {
            limits.http_idle_timeout = timeout;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Loaded, Unusable> {
        let Loaded {
            mut config,
            warnings,
        } = self.source.load(self.profile.as_deref())?;
        if let Some(listen) = &self.listen {
            config.listen = listen.clone();
        }
        if let Some(key) = &self.api_key {
            config.api_key = Some(key.clone());
        }
        if let Some(listen) = &self.internal_listen {
            config.internal_listen = Some(listen.clone());
        }
        if self.no_console {
            config.console = false;
        }
        if let Some(url) = &self.redis_url {
            config.redis_url = Some(url.clone());
            config.redis_cluster.clear();
        }
        if let Some(urls) = &self.redis_cluster {
            config.redis_cluster = urls.clone();
            config.redis_url = None;
        }
        if let Some(id) = &self.node_id {
            config.node_id = Some(id.clone());
        }
        if let Some(name) = &self.profile {
            config.profile = Some(parse_profile(name)?);
        }
        self.limits.apply(&mut config.limits);
        config.test_echo_endpoint = self.test_echo_endpoint;
        config.validate().map_err(|e| Unusable(e.0))?;
        Ok(Loaded { config, warnings })
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    source: Source,
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The role claim.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// Project ids for the `projects` claim, comma separated.
    #[arg(long, value_name = "a,b")]
    pub projects: Option<String>,
    /// Lifetime of the token, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

impl TokenArgs {
    pub fn config(&self) -> Result<Loaded, Unusable> {
        self.source.load(None)
    }
}
