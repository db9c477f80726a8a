//! `switchboard worker`: runs the reactions of a config file — exec a command,
//! forward to another subject, or log — with retries, dead letters,
//! concurrency limits and graceful shutdown (the `switchboard::worker` library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchboard::worker::{Summary, Worker};

use crate::connection;

mod action;
mod config;

/// Arguments of `switchboard worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The reactions file (TOML): `[[route]]` tables with `on` and one of `exec`, `publish`, `log`.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// Exit 0 once N messages were handled (succeeded or dead-lettered).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// How long in-flight actions may take to finish after Ctrl-C/SIGTERM
    /// (overrides the file's `grace_period`; default 10s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,

    /// Only check the config file, then exit.
    #[arg(long)]
    pub check: bool,
}

/// Resolves on Ctrl-C or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    wait_signal().await;
    eprintln!("worker: shutting down (waiting for in-flight actions; Ctrl-C again to quit now)");
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("worker: quitting without waiting");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Runs `switchboard worker`.
pub(crate) async fn run(url: &str, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // A bad config is refused before connecting anywhere.
    let config = config::load(&args.config)?;
    if args.check {
        eprintln!(
            "{}: ok, {} route(s)",
            args.config.display(),
            config.routes.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let shown_url = connection::display_url(url);
    let broker = connection::connect(url).await?;
    if let Some(route) = config.routes.iter().find(|route| route.group.is_some()) {
        if !broker.capabilities().queue_groups {
            let kind = broker.kind();
            let _ = connection::close(&broker).await;
            anyhow::bail!(
                "{}: the route on {:?} sets `group`, but {kind} has no queue groups (every subscriber gets every message); remove `group` from the route, or use --broker nats or amqp",
                args.config.display(),
                route.on.as_str()
            );
        }
    }
    let mut worker = Worker::new(broker.clone());
    for route in &config.routes {
        let handler = action::handler(route.on.as_str(), &route.action);
        worker = worker.route(route.route(handler));
    }
    if let Some(grace) = args.grace.or(config.grace_period) {
        worker = worker.grace_period(grace);
    }
    if let Some(count) = args.count {
        worker = worker.max_messages(count);
    }
    let routes = config.routes.len();
    let running = worker.start().await?;
    eprintln!(
        "worker ready: {routes} route{} on {shown_url} (Ctrl-C to stop)",
        if routes == 1 { "" } else { "s" }
    );
    let summary: Summary = running.run_until(shutdown_signal()).await;
    eprintln!("{summary}");
    for error in &summary.errors {
        eprintln!("worker: {error}");
    }
    if let Err(error) = broker.close().await {
        eprintln!("worker: closing the broker connection failed: {error}");
    }
    Ok(ExitCode::SUCCESS)
}
