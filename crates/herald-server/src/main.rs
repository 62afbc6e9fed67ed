//! The `herald` binary: `herald serve` runs a node, `herald token` mints a token for it,
//! `herald backup` and `herald restore` copy its embedded store out and back.
//!
//! Settings are layered defaults, then the TOML file, then the environment, then flags (clap
//! reads a flag or its `HERALD_*` twin, so a flag wins over the environment, which wins over
//! the file). Any unusable setting ends start-up with one line on stderr and exit code 2.

mod cli;
mod dev_secret;
mod env;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use herald::auth::{mint_hs256, TokenRequest};
use herald::{Herald, Part};

use cli::{BackupArgs, Cli, Command, LogFormat, RestoreArgs, ServeArgs, TokenArgs};

/// mimalloc instead of glibc's malloc (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A setting that stops start-up: printed as one line, exit 2.
struct Unusable(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
        Command::Config(cli::ConfigCommand::Check(args)) => config_check(args),
        Command::Config(cli::ConfigCommand::Print(args)) => config_print(args),
    };
    match result {
        Ok(code) => code,
        Err(Unusable(line)) => {
            eprintln!("herald: {line}");
            ExitCode::from(2)
        }
    }
}

/// The configuration of a command that does not log: its warnings go to stderr.
fn quiet_config(loaded: cli::Loaded) -> herald::Config {
    for warning in &loaded.warnings {
        eprintln!("herald: warning: {warning}");
    }
    loaded.config
}

fn token(args: TokenArgs) -> Result<ExitCode, Unusable> {
    let config = quiet_config(args.config()?);
    if config.jwt.public_key.is_some() {
        return Err(Unusable(
            "herald token signs with a shared secret, but a public key is configured: mint tokens where the private key lives".into(),
        ));
    }
    let secret = match &config.jwt.secret {
        Some(secret) => secret.clone(),
        None => dev_secret::load_or_create(&config.data_dir).map_err(Unusable)?,
    };
    let projects: Vec<String> = args
        .projects
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let request = TokenRequest {
        sub: &args.sub,
        role: &args.role,
        projects: &projects,
        ttl: args.ttl,
        issuer: config.jwt.issuer.as_deref(),
        audience: config.jwt.audience.as_deref(),
    };
    let jwt = mint_hs256(&secret, &request).map_err(Unusable)?;
    println!("{jwt}");
    Ok(ExitCode::SUCCESS)
}

/// `herald backup --to FILE`: a consistent copy of the data dir's database, taken while a
/// server may be running on it (docs/OPERATIONS.md, backup and restore).
fn backup(args: BackupArgs) -> Result<ExitCode, Unusable> {
    let config = quiet_config(args.config()?);
    herald::engine::sqlite::backup(&config.data_dir, &args.to).map_err(|e| Unusable(e.0))?;
    println!(
        "herald: backed up {} to {}",
        config.data_dir.join("herald.db").display(),
        args.to.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `herald restore --from FILE`: the backup becomes the data dir's database, with a new epoch
/// for every topic stream (docs/OPERATIONS.md, backup and restore).
fn restore(args: RestoreArgs) -> Result<ExitCode, Unusable> {
    let config = quiet_config(args.config()?);
    herald::engine::sqlite::restore(&config.data_dir, &args.from).map_err(|e| Unusable(e.0))?;
    println!(
        "herald: restored {} from {}; every topic stream has a new epoch",
        config.data_dir.join("herald.db").display(),
        args.from.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `herald config check`: everything `herald serve` checks before it touches the network or
/// the disk (the settings, the listen address, the JWT key), then one line.
fn config_check(mut args: cli::ConfigArgs) -> Result<ExitCode, Unusable> {
    let config = quiet_config(args.config()?);
    config
        .listen
        .parse::<SocketAddr>()
        .map_err(|e| Unusable(format!("listen address `{}`: {e}", config.listen)))?;
    if let Some(internal) = &config.internal_listen {
        internal
            .parse::<SocketAddr>()
            .map_err(|e| Unusable(format!("internal listen address `{internal}`: {e}")))?;
    }
    if config.jwt.has_keys() {
        herald::auth::Verifier::from_config(&config.jwt, None).map_err(Unusable)?;
    }
    println!("herald: the configuration is usable");
    Ok(ExitCode::SUCCESS)
}

/// `herald config print`: the effective configuration, as TOML, secrets redacted.
fn config_print(mut args: cli::ConfigArgs) -> Result<ExitCode, Unusable> {
    let mut config = quiet_config(args.config()?);
    const REDACTED: &str = "REDACTED";
    if config.jwt.secret.is_some() {
        config.jwt.secret = Some(REDACTED.into());
    }
    if config.api_key.is_some() {
        config.api_key = Some(REDACTED.into());
    }
    for key in &mut config.api_keys {
        *key = REDACTED.into();
    }
    for key in &mut config.jwt.keys {
        if key.secret.is_some() {
            key.secret = Some(REDACTED.into());
        }
    }
    if let Some(url) = &config.redis_url {
        config.redis_url = Some(redact_password(url));
    }
    for url in &mut config.redis_cluster {
        *url = redact_password(url);
    }
    let text = toml::to_string(&config)
        .map_err(|e| Unusable(format!("cannot print the configuration: {e}")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A URL with the password of its user part replaced: `redis://:REDACTED@host:6379`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:REDACTED@{host}")
        }
        _ => url.to_string(),
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode, Unusable> {
    let cli::Loaded { config, warnings } = args.config()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colors only for a person at a terminal: files and journals get plain text.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Unusable(format!("cannot start the runtime: {e}")))?;
    // SIGHUP reads the settings again, the same way, for their credentials.
    let reload = move || args.config().map(|loaded| loaded.config);
    runtime.block_on(run(config, reload))
}

async fn run(
    config: herald::Config,
    reload: impl Fn() -> Result<herald::Config, Unusable> + Send + 'static,
) -> Result<ExitCode, Unusable> {
    let address: SocketAddr = config
        .listen
        .parse()
        .map_err(|e| Unusable(format!("listen address `{}`: {e}", config.listen)))?;
    // The port first: a server that cannot listen stops before it creates or locks anything.
    let listener =
        listen(address).map_err(|e| Unusable(format!("cannot listen on {address}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Unusable(format!("cannot read the bound address: {e}")))?;
    let internal = match &config.internal_listen {
        Some(text) => {
            let address: SocketAddr = text
                .parse()
                .map_err(|e| Unusable(format!("internal listen address `{text}`: {e}")))?;
            let listener = listen(address)
                .map_err(|e| Unusable(format!("cannot listen on {address}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| Unusable(format!("cannot read the bound address: {e}")))?;
            Some((listener, local))
        }
        None => None,
    };
    let console = config.console;
    let dev_secret = if !config.jwt.has_keys() {
        let path = config.data_dir.join(dev_secret::FILE_NAME);
        let secret = dev_secret::load_or_create(&config.data_dir).map_err(Unusable)?;
        // A log event (JSON in JSON mode), not a bare line on stderr.
        tracing::warn!(
            path = %path.display(),
            "no JWT secret configured: using the development secret (set --jwt-secret in production)"
        );
        Some(secret)
    } else {
        None
    };
    let data_dir = config.data_dir.clone();
    let grace = config.limits.shutdown_grace;
    let node_id = config.node_id.clone().unwrap_or_else(|| "-".into());
    let engines = if config.on_redis() { "redis" } else { "sqlite" };
    let node = Herald::open(config, dev_secret.as_deref())
        .await
        .map_err(|e| Unusable(e.0))?;
    // Every connection is a file descriptor: take all the hard limit allows (the usual soft
    // limit, 1024, would refuse the 1,025th client).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = herald::COMMIT,
        listen = %local,
        node_id,
        engines,
        data_dir = %data_dir.display(),
        "herald started"
    );
    println!("herald listening on http://{local} (WebSocket: ws://{local}/ws)");
    if dev_secret.is_some() {
        println!(
            "get a token: herald token --sub alice --data-dir {}",
            data_dir.display()
        );
    }

    #[cfg(unix)]
    reload_on_hangup(node.clone(), reload);
    #[cfg(not(unix))]
    drop(reload);

    // With an internal listener the public port serves clients, probes and the console only.
    let public_parts: &[Part] = match internal {
        Some(_) => &[Part::Clients, Part::Probes],
        None => &[Part::Clients, Part::Probes, Part::Internal],
    };
    let mut app = node.router_of(public_parts);
    if console {
        app = app.merge(node.console_router());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = node.clone();
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: closing connections with 1001");
        stopping.begin_shutdown();
        signalled.cancel();
    });
    let internal_server = async {
        match internal {
            Some((listener, local)) => {
                println!(
                    "herald internal API on http://{local} (/api/v1, /metrics, /health, /ready)"
                );
                let app = node.router_of(&[Part::Internal, Part::Probes]);
                node.serve(listener, app, stop.clone().cancelled_owned())
                    .await
            }
            None => Ok(()),
        }
    };
    let public_server = node.serve(listener, app, stop.clone().cancelled_owned());
    let (public, internal) = tokio::join!(public_server, internal_server);
    if let Err(e) = public.and(internal) {
        eprintln!("herald: server error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    // Upgraded sockets outlive the HTTP server: give them the grace period to say goodbye.
    if !node.shutdown().await {
        tracing::warn!(grace = ?grace, "connections still open at the end of the grace period");
    }
    Ok(ExitCode::SUCCESS)
}

/// A listening socket whose accept queue holds a reconnect storm: the standard backlog of 128
/// overflows when a few hundred clients connect at once, and each refused SYN waits a 1 s
/// retransmission (docs/BENCHMARKS.md). The kernel caps it at `net.core.somaxconn`.
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// On SIGHUP: the file, the environment and the flags are read again and their credentials
/// (JWT keys, API keys) put in force, with no connection dropped. A configuration that does
/// not load keeps the old credentials, and says why.
#[cfg(unix)]
fn reload_on_hangup(
    node: Herald,
    reload: impl Fn() -> Result<herald::Config, Unusable> + Send + 'static,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: credentials reload disabled");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloaded =
                reload().and_then(|config| node.reload_credentials(&config).map_err(Unusable));
            match reloaded {
                Ok(()) => tracing::info!("SIGHUP: credentials reloaded"),
                Err(Unusable(why)) => {
                    tracing::warn!(error = %why, "SIGHUP: the new settings do not load; the old credentials stay")
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
