//! `switchboard listen`: print every message whose subject matches a pattern.

use std::io::Write as _;
use std::process::ExitCode;

use futures::StreamExt as _;
use switchboard::{AnyBroker, Pattern, QueueGroup, Subscription};

use crate::connection;
use crate::format::Format;

const OUTPUT_HELP: &str = "\
Output (stdout, one line per message, flushed at once):
  text  [SUBJECT] PAYLOAD {NAME=VALUE, ...}
        e.g. [alerts.cpu] CPU at 98% {host=web-1, severity=high}
        The headers part is left out when there are none. Line breaks, tabs and
        other control characters are shown escaped (\\n, \\t, \\u{1b}); a payload
        that is not UTF-8 is shown as <N bytes, not UTF-8, base64 ...>.
  json  {\"subject\":\"alerts.cpu\",\"headers\":{\"severity\":\"high\"},\"payload\":\"CPU at 98%\"}
        A payload that is not UTF-8 comes as \"payload_base64\" instead of \"payload\".

Once subscribed, `listening on 'PATTERN' at URL (Ctrl-C to stop)` is printed on
stderr: a message sent after that line is received. Warnings (lost messages,
reconnects) go to stderr too. Exits 0 after --count messages, on Ctrl-C or
SIGTERM (after unsubscribing), or when stdout is closed (`| head -1`); exits 1
if the broker ends the subscription.

Examples:
  switchboard listen --on 'alerts.>'
  switchboard --broker redis listen --on 'alerts.*' --format json | jq .payload
  switchboard listen --on jobs.resize --group resizers --count 1";

/// Arguments of `switchboard listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = OUTPUT_HELP)]
pub struct ListenArgs {
    /// Subject pattern to listen on: `*` matches one token, `>` one or more trailing
    /// tokens (e.g. `alerts.>`, `alerts.*.high`). Quote it in the shell.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) on: String,

    /// Join queue group NAME: each message goes to one member of the group.
    #[arg(long, value_name = "NAME")]
    pub(crate) group: Option<String>,

    /// Exit after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Output format (see below).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Why listening stopped.
enum Stop {
    /// `--count` messages were printed.
    Count,
    /// A signal asked to stop; holds its name.
    Signal(&'static str),
    /// Whoever read stdout went away.
    StdoutClosed,
    /// The subscription's stream ended.
    Ended,
}

/// Runs `switchboard listen`.
pub(crate) async fn run(url: &str, args: ListenArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before connecting.
    let pattern = Pattern::new(&args.on)?;
    let group = args.group.as_deref().map(QueueGroup::new).transpose()?;
    // Installed before the ready line, so a signal right after it is ours to handle.
    let mut signals = Signals::install()?;

    let subscribing = subscribe(url, &pattern, group.as_ref());
    let (broker, mut subscription) = tokio::select! {
        subscribed = subscribing => subscribed?,
        name = signals.recv() => {
            // Dropping the connection attempt is all the cleaning up there is.
            eprintln!("caught {name} before the subscription was ready: stopped");
            return Ok(ExitCode::from(130));
        }
    };
    let shown_url = connection::display_url(url);
    let in_group = group
        .as_ref()
        .map(|g| format!(" in group '{g}'"))
        .unwrap_or_default();
    eprintln!("listening on '{pattern}'{in_group} at {shown_url} (Ctrl-C to stop)");

    let stop = receive(&mut subscription, args.format, args.count, &mut signals).await;
    match stop {
        Ok(Stop::Count) | Ok(Stop::StdoutClosed) => {
            if let Err(error) = unsubscribe(subscription, &broker).await {
                tracing::warn!("{error:#}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Stop::Signal(name)) => {
            tokio::select! {
                cleaned = unsubscribe(subscription, &broker) => match cleaned {
                    Ok(()) => eprintln!("caught {name}: unsubscribed from '{pattern}'"),
                    Err(error) => eprintln!("caught {name}: warning: unsubscribing from '{pattern}' failed: {error:#}"),
                },
                second = signals.recv() => {
                    eprintln!("caught {second} again: exiting without unsubscribing");
                    return Ok(ExitCode::from(130));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Stop::Ended) => {
            let _ = connection::close(&broker).await;
            anyhow::bail!(
                "the subscription to '{pattern}' at {shown_url} ended: the broker or connection closed it"
            )
        }
        Err(error) => {
            let _ = unsubscribe(subscription, &broker).await;
            Err(error)
        }
    }
}

/// Connects and subscribes, closing the connection again if subscribing fails.
async fn subscribe(
    url: &str,
    pattern: &Pattern,
    group: Option<&QueueGroup>,
) -> anyhow::Result<(AnyBroker, Subscription)> {
    let broker = connection::connect(url).await?;
    connection::warn_if_in_process(&broker);
    let subscribed = match group {
        Some(group) => broker.subscribe_group(pattern, group).await,
        None => broker.subscribe(pattern).await,
    };
    match subscribed {
        Ok(subscription) => Ok((broker, subscription)),
        Err(error) => {
            let _ = connection::close(&broker).await;
            Err(connection::one_line(error))
        }
    }
}

/// Prints deliveries until one of the [`Stop`] reasons.
async fn receive(
    subscription: &mut Subscription,
    format: Format,
    count: Option<u64>,
    signals: &mut Signals,
) -> anyhow::Result<Stop> {
    let mut received = 0u64;
    loop {
        let item = tokio::select! {
            name = signals.recv() => return Ok(Stop::Signal(name)),
            item = subscription.next() => item,
        };
        let mut delivery = match item {
            None => return Ok(Stop::Ended),
            Some(Err(error)) => {
                eprintln!("warning: {:#}", connection::one_line(error));
                continue;
            }
            Some(Ok(delivery)) => delivery,
        };
        let line = format.line(delivery.message());
        if let Err(error) = print_line(&line) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(Stop::StdoutClosed);
            }
            return Err(anyhow::Error::new(error).context("cannot write to stdout"));
        }
        if let Err(error) = delivery.ack().await {
            eprintln!("warning: {:#}", connection::one_line(error));
        }
        received += 1;
        if Some(received) == count {
            return Ok(Stop::Count);
        }
    }
}

/// Writes `line` and a line break to stdout and flushes, so pipes see it at once.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Ends the subscription and closes the connection, each within the shutdown deadline.
async fn unsubscribe(subscription: Subscription, broker: &AnyBroker) -> anyhow::Result<()> {
    let closed = tokio::time::timeout(connection::SHUTDOWN_DEADLINE, subscription.close()).await;
    let close_broker = connection::close(broker).await;
    match closed {
        Ok(result) => result.map_err(connection::one_line)?,
        Err(_) => anyhow::bail!(
            "unsubscribing did not finish within {}s",
            connection::SHUTDOWN_DEADLINE.as_secs()
        ),
    }
    close_broker
}

/// The signals that stop `listen`: Ctrl-C (SIGINT) and SIGTERM.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals now (rather than when first awaited).
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use anyhow::Context as _;
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal and returns its name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
