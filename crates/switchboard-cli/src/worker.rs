//! `switchboard worker`: runs the reactions of a config file — exec a command,
//! forward to another subject, or log — with retries, dead letters,
//! concurrency limits and graceful shutdown (the `switchboard::worker` library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use switchboard::worker::{Running, StopReason, Summary, Worker};
use tokio::sync::watch;

use crate::connection;
use crate::signals::{Signal, Signals};
use crate::stdout::Stdout;

mod action;
mod asyncapi;
mod config;
mod metrics;

const SIGNALS_HELP: &str = "\
Stopping:
  Ctrl-C or SIGTERM shuts down gracefully: no new message is taken, in-flight
  actions get the grace period to finish (then they are cancelled, an `exec`
  command with its whole process group), what they published is flushed, and
  the subscriptions and the connection are closed, all within the grace period
  whatever the broker or the link does (a cancelled action may add a second to
  give its message back). Exits 0 with a summary on stderr.
  A second Ctrl-C or SIGTERM kills the running `exec` commands' process groups
  and exits at once with 130 (Ctrl-C) or 143 (SIGTERM).
  `log` lines are written by a thread of their own: a stdout nobody reads holds
  those actions (until the grace period cancels them), never the shutdown.

Exits 1 with one `error:` line if the config or the broker is wrong, or if
the broker ends the subscription of every route (a durable consumer removed,
say); a route whose subscription ended while others run makes `/readyz`
answer 503.";

/// Arguments of `switchboard worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = SIGNALS_HELP)]
pub struct WorkerArgs {
    /// The reactions file (TOML): `[[route]]` tables with `on` and one of `exec`, `publish`, `log`.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// Stop once N messages were taken and finished: exit 0 if each was
    /// handled (succeeded or dead-lettered), 1 if any failed (a failed one
    /// on a durable route is delivered again to the next run).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// How long in-flight actions may take to finish after Ctrl-C/SIGTERM
    /// (overrides the file's `grace_period`; default 10s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration_arg::above_zero)]
    pub grace: Option<Duration>,

    /// Only check the config file, then exit.
    #[arg(long)]
    pub check: bool,

    /// Print the AsyncAPI 3.0 document of the routes (the broker from
    /// --broker/BROKER_URL as its server, credentials left out), then exit
    /// without connecting.
    #[arg(long, conflicts_with = "check")]
    pub asyncapi: bool,

    /// Serve Prometheus metrics on http://ADDR/metrics, with /healthz (200
    /// while the process runs) and /readyz (200 while subscribed and
    /// connected, 503 while the broker connection is down), e.g.
    /// 127.0.0.1:9464 or localhost:9464 (0.0.0.0:9464 for every interface).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// The --asyncapi document's format.
    #[arg(long, value_enum, default_value_t = asyncapi::Format::Yaml, requires = "asyncapi")]
    pub format: asyncapi::Format,
}

/// Runs `switchboard worker`.
pub(crate) async fn run(url: &str, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // A bad config is refused before connecting anywhere.
    let config = config::load(&args.config)?;
    if args.asyncapi {
        let document = asyncapi::render(url, &args.config, &config, args.format)?;
        crate::stdout::write_now(document.as_bytes())
            .context("cannot write the AsyncAPI document")?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        eprintln!(
            "{}: ok, {} route(s)",
            args.config.display(),
            config.routes.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = args.metrics.as_deref().map(metrics::address).transpose()?;
    let shown_url = connection::display_url(url);
    let grace = args
        .grace
        .or(config.grace_period)
        .unwrap_or(switchboard::worker::DEFAULT_GRACE_PERIOD);
    let children = crate::child::Children::default();
    let stopping = watch_signals(Signals::install()?, grace, children.clone());
    let stdout = Stdout::start().context("cannot start writing to stdout")?;
    let starting = start(url, &args, &config, grace, &children, &stdout);
    let mut first = stopping.clone();
    let running = tokio::select! {
        running = starting => running?,
        _ = first.wait_for(Option::is_some) => {
            // The signal task has said which signal it was.
            let signal = stopping.borrow().unwrap_or(Signal::Interrupt);
            eprintln!("worker: stopped before it was ready");
            return Ok(signal.exit_code());
        }
    };
    // Kept until the worker is done: dropping it stops the server.
    let _metrics = match metrics {
        Some(addr) => match metrics::serve(&running, addr).await {
            Ok(server) => Some(server),
            Err(error) => {
                running.shutdown().await;
                return Err(error);
            }
        },
        None => None,
    };
    let routes = config.routes.len();
    eprintln!(
        "worker ready: {routes} route{} on {shown_url} (Ctrl-C to stop)",
        if routes == 1 { "" } else { "s" }
    );
    let mut first = stopping.clone();
    let signalled = async move {
        // The sender lives as long as the signal task, which never ends.
        let _ = first.wait_for(Option::is_some).await;
    };
    let summary: Summary = running.run_until(signalled).await;
    // What went wrong while shutting down was logged as it happened.
    eprintln!("{summary}");
    if summary.reason == StopReason::SubscriptionsEnded {
        // Nobody asked it to stop: a supervisor restarting on failure must
        // see one, as with `listen` (the warnings above say why they ended).
        anyhow::bail!(
            "the broker ended the subscription of every route, so the worker stopped; the warnings above say why (a durable consumer that was removed is made anew, empty, when the worker starts again)"
        );
    }
    if summary.reason == StopReason::MaxMessages && summary.stats.failed > 0 {
        // `--count N` drains N messages: one that failed is not drained.
        anyhow::bail!(
            "{} of the {} message(s) taken failed (see the warnings above): neither handled nor dead-lettered",
            summary.stats.failed,
            summary.stats.received
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects, checks the routes against the broker and starts the worker.
async fn start(
    url: &str,
    args: &WorkerArgs,
    config: &config::Config,
    grace: Duration,
    children: &crate::child::Children,
    stdout: &Stdout,
) -> anyhow::Result<Running> {
    let broker = connection::connect(url).await?;
    if let Some(route) = config.routes.iter().find(|route| route.group.is_some()) {
        if !broker.capabilities().queue_groups {
            let kind = broker.kind();
            let _ = connection::close(&broker).await;
            anyhow::bail!(
                "{}: the route on {:?} sets `group`, but {kind} has no queue groups (every subscriber gets every message); remove `group` from the route, or use --broker nats, amqp or mqtt",
                args.config.display(),
                route.on.as_str()
            );
        }
    }
    if config.routes.iter().any(|route| route.durable.is_some()) {
        connection::warn_if_durable_is_not_stored(&broker, url);
    }
    // The worker closes the connection at the end of its shutdown, within the
    // grace period like the rest of it.
    let mut worker = Worker::new(broker).grace_period(grace).close_broker(true);
    for route in &config.routes {
        let handler = action::handler(route.on.as_str(), &route.action, children, stdout);
        worker = worker.route(route.route(handler));
    }
    if let Some(count) = args.count {
        worker = worker.max_messages(count);
    }
    Ok(worker.start().await?)
}

/// Watches for stop signals on a task of its own: the first one is published
/// on the returned channel (the worker then shuts down gracefully, within
/// `grace`); a second one kills the running `exec` commands and exits at once
/// with 130 (Ctrl-C) or 143 (SIGTERM).
fn watch_signals(
    mut signals: Signals,
    grace: Duration,
    children: crate::child::Children,
) -> watch::Receiver<Option<Signal>> {
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let first = signals.recv().await;
        eprintln!(
            "worker: caught {first}: shutting down (in-flight actions get up to {}; Ctrl-C again to quit now)",
            humantime::format_duration(grace)
        );
        sender.send_replace(Some(first));
        let second = signals.recv().await;
        let killed = children.kill_all();
        let commands = match killed {
            0 => String::new(),
            n => format!(", killed {n} running command(s)"),
        };
        eprintln!("worker: caught {second} again: quitting without waiting{commands}");
        std::process::exit(second.exit_status().into());
    });
    receiver
}
