//! The `abaco` binary: reads the configuration, connects the store, channels and container
//! runtime, and runs one or all components. `main` holds no logic of its own beyond wiring.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use abaco_channels::Channels;
use abaco_control::Control;
use abaco_core::config::Backend;
use abaco_core::Config;
use abaco_runtime::Runtime;
use abaco_store::Store;

/// mimalloc: the request path allocates many small short-lived objects; glibc's malloc spent
/// ~17 % of the ingest profile in `_int_malloc`/`malloc_consolidate`/`free` (docs/performance.md).
/// Built with `no_thp`: with transparent huge pages its eagerly committed arenas raised the idle
/// resident size from 17 to 29 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "abaco",
    version,
    about = "An Abaco-compatible actor (function-as-a-service) platform"
)]
struct Cli {
    /// Configuration file (INI). `{section}_{option}` environment variables override it.
    #[arg(long, global = true, env = "ABACO_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded store keeps its data (overrides `[store] data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Listen address of the API (overrides `[web] bind`).
    #[arg(long, global = true)]
    bind: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Every component in one process (the default).
    Serve,
    /// Only the REST API.
    Api,
    /// Only a spawner (and the workers it runs) for this host's queues.
    Spawner,
    /// Only the health agent (and the autoscaler).
    Health,
    /// Only clientg: OAuth clients and tokens for workers.
    Clientg,
    /// Check the configuration and print the effective values.
    CheckConfig,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::load(Some(path)),
        None => {
            let default = PathBuf::from("abaco.conf");
            Config::load(default.exists().then_some(default.as_path()))
        }
    }
    .context("invalid configuration")?;
    if let Some(dir) = &cli.data_dir {
        config.store.data_dir = dir.clone();
    }
    if let Some(bind) = &cli.bind {
        config.web.bind = bind.clone();
        config = Config::from_parts(config).context("invalid --bind")?;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.logs.level)),
        )
        .init();
    let command = cli.command.unwrap_or(Command::Serve);
    if command == Command::CheckConfig {
        println!("{config:#?}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(command, Arc::new(config)))
}

async fn run(command: Command, config: Arc<Config>) -> Result<()> {
    if config.store.backend == Backend::Embedded {
        if command != Command::Serve {
            bail!(
                "`abaco {}` runs one component of a distributed deployment; set [store] backend = distributed \
                 (the embedded store belongs to a single `abaco serve` process)",
                name(command)
            );
        }
        std::fs::create_dir_all(&config.store.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.store.data_dir.display()
            )
        })?;
    }
    let store = Store::connect(&config.store)
        .await
        .context("cannot open the store")?;
    let channels = Channels::connect(&config)
        .await
        .context("cannot open the channels")?;
    let control = Control::new(store, channels);
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let needs_docker = matches!(command, Command::Serve | Command::Spawner | Command::Health);
    let docker = if needs_docker {
        let rt = Runtime::connect(&config.docker).context("invalid [docker] dd")?;
        rt.ping().await.with_context(|| {
            format!(
                "the Docker engine at {} is not reachable; start it (e.g. `dockerd &`) or set [docker] dd",
                config.docker.dd
            )
        })?;
        Some(rt)
    } else {
        None
    };

    if matches!(command, Command::Serve | Command::Api) {
        let listener = tokio::net::TcpListener::bind(&config.web.bind)
            .await
            .with_context(|| format!("cannot listen on {} ([web] bind)", config.web.bind))?;
        let api = abaco_actors::Api::new(config.clone(), control.clone())
            .await
            .context("cannot load the API keys")?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            abaco_actors::run(api, listener, token)
                .await
                .context("API server failed")
        });
    }
    if let Some(rt) = docker
        .clone()
        .filter(|_| matches!(command, Command::Serve | Command::Spawner))
    {
        let ctx = abaco_spawner::SpawnerContext {
            config: config.clone(),
            control: control.clone(),
            runtime: rt,
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            abaco_spawner::run(ctx, token)
                .await
                .context("spawner failed")
        });
    }
    if let Some(rt) = docker.filter(|_| matches!(command, Command::Serve | Command::Health)) {
        let ctx = abaco_health::HealthContext {
            config: config.clone(),
            control: control.clone(),
            runtime: rt,
            period: Duration::from_secs(config.workers.health_period),
        };
        let token = shutdown.clone();
        let autoscaler = ctx.clone();
        tasks.spawn(async move {
            abaco_health::run(ctx, token).await;
            Ok(())
        });
        let token = shutdown.clone();
        let events = autoscaler.clone();
        tasks.spawn(async move {
            abaco_health::events::run(events, token).await;
            Ok(())
        });
        let token = shutdown.clone();
        let cron = autoscaler.clone();
        tasks.spawn(async move {
            abaco_health::cron::run(cron, token).await;
            Ok(())
        });
        if config.workers.autoscaling {
            let token = shutdown.clone();
            tasks.spawn(async move {
                abaco_health::autoscaler::run(autoscaler, token).await;
                Ok(())
            });
        }
    }
    if matches!(command, Command::Serve | Command::Clientg) {
        let ctx = abaco_clientg::ClientgContext {
            config: config.clone(),
            control: control.clone(),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            abaco_clientg::run(ctx, token)
                .await
                .context("clientg failed")
        });
    }
    tracing::info!(component = name(command), backend = ?config.store.backend, "abaco started");

    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(join) => Err(anyhow::anyhow!("component panicked: {join}")),
        },
    };
    tracing::info!("shutting down; finishing in-flight work");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    result
}

fn name(command: Command) -> &'static str {
    match command {
        Command::Serve => "serve",
        Command::Api => "api",
        Command::Spawner => "spawner",
        Command::Health => "health",
        Command::Clientg => "clientg",
        Command::CheckConfig => "check-config",
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
