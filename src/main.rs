//! The `sluice` command: a Kafka-compatible broker and Kafka-style tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sluice::broker::Broker;
use sluice::clock::SystemClock;
use sluice::config::BrokerConfig;
use sluice::net::TcpListener;
use sluice::storage::fs::FsStorage;

/// Keeps a malformed request from aborting the broker (see `sluice::alloc`).
#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A Kafka-compatible event log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (like kafka-server-start.sh).
    Broker {
        /// A Kafka-style server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on; overrides `listeners`.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory; overrides `log.dirs`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Any setting as key=value, e.g. --override log.segment.bytes=1048576.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn broker_config(
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    overrides: Vec<String>,
) -> anyhow::Result<BrokerConfig> {
    let mut broker_config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
            BrokerConfig::from_properties(&text)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    for entry in overrides {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--override {entry:?}: expected KEY=VALUE"))?;
        if !broker_config.set(key.trim(), value)? {
            anyhow::bail!("--override: unknown setting {key:?}");
        }
    }
    if let Some(listen) = listen {
        broker_config.listener = listen;
    }
    if let Some(dir) = data_dir {
        broker_config.log_dirs = dir;
    }
    Ok(broker_config)
}

async fn run_broker(config: BrokerConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listener)
        .await
        .map_err(|error| anyhow::anyhow!("binding {}: {error}", config.listener))?;
    let address = sluice::net::Listener::local_addr(&listener)?;
    let broker = Broker::open(config.clone(), Arc::new(FsStorage), Arc::new(SystemClock)).await?;
    let background = broker.spawn_background();
    tracing::info!(%address, data_dir = %config.log_dirs.display(), "sluice broker started");
    let serving = tokio::spawn(sluice::server::serve(
        Arc::clone(&broker),
        Box::new(listener),
    ));
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        result = serving => {
            for task in &background {
                task.abort();
            }
            result??;
            return Ok(());
        }
    }
    for task in &background {
        task.abort();
    }
    broker.flush_all().await;
    tracing::info!("flushed all logs; bye");
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker {
                config,
                listen,
                data_dir,
                overrides,
            } => run_broker(broker_config(config, listen, data_dir, overrides)?).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
