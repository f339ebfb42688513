//! `spinpay-host up`: serve a `spin.toml` locally with Spin 4.1 semantics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spinpay_host::app::{self, AppOptions};

/// mimalloc instead of glibc's allocator: requests allocate on one async worker and free
/// on another, and glibc's per-thread arenas then contend on their locks (futex wake-ups
/// in the profile); mimalloc frees cross-thread without a lock (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "spinpay-host",
    version,
    about = "Runs a spin.toml's components on wasmtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the app, then serve it.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "file", default_value = "spin.toml")]
    file: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Spin runtime-config file (key-value stores, variable providers).
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// Run each component's build command first (like `spin up --build`).
    #[arg(long)]
    build: bool,
    /// Requests an instance serves before it is dropped (1 = fresh instance per request).
    #[arg(long, default_value_t = app::DEFAULT_MAX_INSTANCE_REUSE_COUNT, value_parser = clap::value_parser!(u32).range(1..))]
    max_instance_reuse_count: u32,
    /// Requests an instance serves at the same time.
    #[arg(long, default_value_t = app::DEFAULT_MAX_CONCURRENT_REUSE_COUNT, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_reuse_count: u32,
    /// Seconds an idle instance is kept for reuse.
    #[arg(long, default_value_t = 1)]
    idle_instance_timeout: u64,
    /// Seconds a guest may take to answer before it is cut off with a 500.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout: u64,
    /// Threads that serve requests, each with its own instances (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    serving_threads: Option<u32>,
}

fn main() -> ExitCode {
    spinpay_host::logging::init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        Command::Up(args) => runtime.block_on(up(args)),
    };
    spinpay_host::logging::flush();
    code
}

async fn up(args: UpArgs) -> ExitCode {
    let mut opts = AppOptions::new(args.file);
    opts.listen = args.listen;
    opts.runtime_config_file = args.runtime_config_file;
    opts.build = args.build;
    opts.variables = BTreeMap::new();
    opts.max_instance_reuse_count = args.max_instance_reuse_count;
    opts.max_concurrent_reuse_count = args.max_concurrent_reuse_count;
    opts.idle_instance_timeout = Duration::from_secs(args.idle_instance_timeout);
    opts.request_timeout = Duration::from_secs(args.request_timeout);
    if let Some(threads) = args.serving_threads {
        opts.serving_threads = threads as usize;
    }
    let app = match app::start(opts).await {
        Ok(app) => app,
        Err(e) => {
            // `{:#}`: the cause too ("binding 127.0.0.1:3000: Address already in use").
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("Serving {}", app.base_url());
    wait_for_signal().await;
    app.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
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
