//! `switchboard listen`: print every message whose subject matches a pattern.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use switchboard::{AnyBroker, Durable, Pattern, QueueGroup, Subscription};

use crate::connection;
use crate::format::Format;
use crate::membership::Membership;
use crate::signals::{Signal, Signals};
use crate::stdout::Stdout;

const OUTPUT_HELP: &str = "\
Output (stdout, one line per message, flushed at once):
  text  [SUBJECT] PAYLOAD {NAME=VALUE, ...}
        e.g. [alerts.cpu] CPU at 98% {host=web-1, severity=high}
        The headers part is left out when there are none. Line breaks, tabs and
        other control characters are shown escaped (\\n, \\t, \\u{1b}); a payload
        that is not UTF-8 is shown as <N bytes, not UTF-8, base64 ...>.
  json  {\"subject\":\"alerts.cpu\",\"headers\":{\"severity\":\"high\"},\"payload\":\"CPU at 98%\"}
        A payload that is not UTF-8 comes as \"payload_base64\" instead of \"payload\".
        With --durable, \"delivery_count\" says how many times the broker
        delivered the message (1 the first time).

With --durable NAME, `listen` creates the durable consumer NAME over the
pattern, or resumes it: messages published while no listener of NAME ran
were kept and come first. Each is acknowledged once its line is written,
and only then removed; with --count N exactly N are acknowledged and the
rest stay for the next run (those the broker had already handed to this run
are given back as it ends, so they come at once to the next run; only a run
that crashed leaves them until --ack-wait is over). With --group G, NAME is this member and
G the consumer the members share (each message to one of them).

Once subscribed, `listening on 'PATTERN' at URL (Ctrl-C to stop)` is printed on
stderr: a message sent after that line is received. Warnings (lost messages,
reconnects) go to stderr too. Exits 0 after --count messages, on Ctrl-C or
SIGTERM (after unsubscribing), or when stdout is closed (`| head -1`); exits 1
if the broker ends the subscription.

A signal stops `listen` whatever the broker, the link or stdout do: lines are
written by a thread of their own, so a reader that stopped reading does not
keep `listen` from stopping; the last line on stderr says how many messages
were printed (and how many were received but not printed). Unsubscribing is
skipped when the connection is down and given up after 5s on a link that does
not answer. A second signal exits at once with 130 (Ctrl-C) or 143 (SIGTERM).
On brokers that acknowledge, a message is acknowledged only once its line was
written.

Examples:
  switchboard listen --on 'alerts.>'
  switchboard --broker redis listen --on 'alerts.*' --format json | jq .payload
  switchboard listen --on jobs.resize --group resizers --count 1
  switchboard listen --on 'alerts.>' --durable pager --count 10";

/// Arguments of `switchboard listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = OUTPUT_HELP)]
pub struct ListenArgs {
    /// Subject pattern to listen on: `*` matches one token, `>` one or more trailing
    /// tokens (e.g. `alerts.>`, `alerts.*.high`). Quote it in the shell.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) on: String,

    /// Join queue group NAME: each message goes to one member of the group
    /// (with --durable: the durable consumer the members share).
    #[arg(long, value_name = "NAME")]
    pub(crate) group: Option<String>,

    /// Listen as durable consumer NAME (letters, digits, `-`, `_`): created
    /// on first use, resumed afterwards; what was published meanwhile is kept.
    #[arg(long, value_name = "NAME")]
    pub(crate) durable: Option<String>,

    /// With --durable: how long a message may stay unacknowledged before the
    /// broker delivers it again (at least 1s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration_arg::ack_wait, default_value = "30s", requires = "durable")]
    pub(crate) ack_wait: Duration,

    /// Exit after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Output format (see below).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// How long `listen` gives stdout to take the lines already received when a
/// signal stops it: a reader that keeps up takes them at once, one that stopped
/// reading would never.
const STDOUT_PATIENCE: Duration = Duration::from_millis(200);

/// How long unsubscribing and closing the connection may take once `listen`
/// stops, together: a frozen link never answers, while a healthy but busy
/// broker may take a second or two.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);

/// Why listening stopped.
enum Stop {
    /// `--count` messages were printed.
    Count,
    /// A signal asked to stop.
    Signal(Signal),
    /// Whoever read stdout went away.
    StdoutClosed,
    /// The subscription's stream ended.
    Ended,
}

/// Runs `switchboard listen`.
pub(crate) async fn run(url: &str, args: ListenArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before connecting.
    let pattern = Pattern::new(&args.on)?;
    let mode = match (&args.durable, &args.group) {
        (Some(name), group) => {
            let durable = Durable::new(name)?.ack_wait(args.ack_wait);
            Membership::Durable(match group {
                Some(group) => durable.group(group)?,
                None => durable,
            })
        }
        (None, Some(group)) => Membership::Group(QueueGroup::new(group)?),
        (None, None) => Membership::Plain,
    };
    // Installed before the ready line, so a signal right after it is ours to handle.
    let mut signals = Signals::install()?;
    let stdout = Stdout::start()
        .context("cannot start writing to stdout")?
        .watching_reader();

    let subscribing = subscribe(url, &pattern, &mode);
    let (broker, mut subscription) = tokio::select! {
        subscribed = subscribing => subscribed?,
        signal = signals.recv() => {
            // Dropping the connection attempt is all the cleaning up there is.
            eprintln!("caught {signal} before the subscription was ready: stopped");
            return Ok(signal.exit_code());
        }
    };
    if matches!(mode, Membership::Durable(_)) {
        connection::warn_if_durable_is_not_stored(&broker, url);
    }
    let shown_url = connection::display_url(url);
    let in_group = match &mode {
        Membership::Plain => String::new(),
        Membership::Group(group) => format!(" in group '{group}'"),
        Membership::Durable(durable) if durable.group.is_some() => format!(
            " as member '{}' of durable consumer '{}'",
            durable.name,
            durable.consumer()
        ),
        Membership::Durable(durable) => format!(" as durable consumer '{}'", durable.consumer()),
    };
    eprintln!("listening on '{pattern}'{in_group} at {shown_url} (Ctrl-C to stop)");

    let mut received = 0u64;
    let stop = receive(
        &mut subscription,
        &stdout,
        args.format,
        args.count,
        &mut signals,
        &mut received,
    )
    .await;
    match stop {
        Ok(Stop::Count) | Ok(Stop::StdoutClosed) => {
            match unsubscribe(subscription, &broker).await {
                Ok(Cleanup::Unsubscribed) => {}
                Ok(Cleanup::LinkDown) => tracing::warn!(
                    "the connection to {shown_url} is down: nothing to unsubscribe from"
                ),
                Err(error) => tracing::warn!("{error:#}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Stop::Signal(signal)) => {
            // Lines still queued get out now unless stdout is not being read.
            let _ = tokio::time::timeout(STDOUT_PATIENCE, stdout.finish()).await;
            let printed = stdout.printed();
            let what = if printed < received {
                format!(
                    "after printing {printed} of {received} message(s) received (stdout was not being read)"
                )
            } else {
                format!("after printing {printed} message(s)")
            };
            tokio::select! {
                cleaned = unsubscribe(subscription, &broker) => match cleaned {
                    Ok(Cleanup::Unsubscribed) => eprintln!("caught {signal} {what}: unsubscribed from '{pattern}'"),
                    Ok(Cleanup::LinkDown) => eprintln!("caught {signal} {what}: the connection is down, so there was nothing to unsubscribe from"),
                    Err(error) => eprintln!("caught {signal} {what}: warning: unsubscribing from '{pattern}': {error:#}"),
                },
                second = signals.recv() => {
                    eprintln!("caught {signal} {what}; caught {second} again: exiting without unsubscribing");
                    return Ok(second.exit_code());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Stop::Ended) => {
            let _ = tokio::time::timeout(CLEANUP_DEADLINE, stdout.finish()).await;
            let _ = tokio::time::timeout(CLEANUP_DEADLINE, connection::close(&broker)).await;
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
    mode: &Membership,
) -> anyhow::Result<(AnyBroker, Subscription)> {
    let broker = connection::connect(url).await?;
    connection::warn_if_in_process(&broker);
    let subscribed = mode.subscribe(&broker, pattern).await;
    match subscribed {
        Ok(subscription) => Ok((broker, subscription)),
        Err(error) => {
            let _ = connection::close(&broker).await;
            Err(connection::one_line(error))
        }
    }
}

/// Prints deliveries until one of the [`Stop`] reasons; counts in `received`
/// the lines handed to stdout. A signal wins over a broker that sends nothing
/// and over a stdout nobody reads.
async fn receive(
    subscription: &mut Subscription,
    stdout: &Stdout,
    format: Format,
    count: Option<u64>,
    signals: &mut Signals,
    received: &mut u64,
) -> anyhow::Result<Stop> {
    loop {
        let item = tokio::select! {
            signal = signals.recv() => return Ok(Stop::Signal(signal)),
            // A reader that went away is noticed while waiting for messages.
            error = stdout.failed() => return stdout_failed(error),
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
        let line = format.line(delivery.message(), delivery.delivery_count());
        // A message the broker would redeliver is acknowledged only once its
        // line is out; the others need not wait for the writer.
        let acknowledgeable = delivery.is_acknowledgeable();
        let printed = async {
            if acknowledgeable {
                stdout.print_and_wait(line).await
            } else {
                stdout.print(line).await
            }
        };
        let printed = tokio::select! {
            signal = signals.recv() => Err(Ok(Stop::Signal(signal))),
            printed = printed => printed.map_err(stdout_failed),
        };
        if let Err(stop) = printed {
            // Not shown, so not acknowledged: given back to come at once to
            // the next reader (JetStream kept it for the ack wait, 30 s).
            let _ = tokio::time::timeout(HAND_BACK_PATIENCE, delivery.hand_back()).await;
            return stop;
        }
        *received += 1;
        if let Err(error) = delivery.ack().await {
            eprintln!("warning: {:#}", connection::one_line(error));
        }
        if Some(*received) == count {
            let finished = tokio::select! {
                signal = signals.recv() => return Ok(Stop::Signal(signal)),
                finished = stdout.finish() => finished,
            };
            return match finished {
                Ok(()) => Ok(Stop::Count),
                Err(error) => stdout_failed(error),
            };
        }
    }
}

/// How long giving back the message whose line was not written may take
/// (the link may be down).
const HAND_BACK_PATIENCE: Duration = Duration::from_secs(2);

/// A failed write: a reader that went away (`| head -1`) ends `listen` quietly.
fn stdout_failed(error: std::io::Error) -> anyhow::Result<Stop> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(Stop::StdoutClosed)
    } else {
        Err(anyhow::Error::new(error).context("cannot write to stdout"))
    }
}

/// How [`unsubscribe`] ended.
enum Cleanup {
    /// The broker was told, and the connection closed.
    Unsubscribed,
    /// The connection was down: the broker forgot the subscription with it.
    LinkDown,
}

/// Ends the subscription and closes the connection, both within
/// [`CLEANUP_DEADLINE`]. With the connection down there is nothing to
/// unsubscribe from, so nothing is waited for.
async fn unsubscribe(subscription: Subscription, broker: &AnyBroker) -> anyhow::Result<Cleanup> {
    if !broker.status().connected {
        return Ok(Cleanup::LinkDown);
    }
    let cleanup = async {
        let closed = subscription.close().await;
        let close_broker = broker.close().await;
        closed.map_err(connection::one_line)?;
        close_broker.map_err(connection::one_line)
    };
    match tokio::time::timeout(CLEANUP_DEADLINE, cleanup).await {
        Ok(result) => result.map(|()| Cleanup::Unsubscribed),
        Err(_) => anyhow::bail!(
            "no answer from the {} broker within {}s (is the link frozen?)",
            broker.kind(),
            CLEANUP_DEADLINE.as_secs()
        ),
    }
}
