//! `switchboard send`: publish one message (or N, templated), a file, or one
//! message per line of stdin (raw, or JSON messages as `listen --format json` prints them).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::distr::{Alphanumeric, SampleString};
use switchboard::worker::PublishSpan;
use switchboard::{AnyBroker, Bytes, Headers, Message, Subject};
use tokio::io::AsyncBufReadExt as _;

use crate::connection;
use crate::format::{self, Format};
use crate::otel;
use crate::signals::{Signal, Signals};

/// How long closing may take after publishing failed: the link is broken,
/// so nothing is flushed, and the broker is only told goodbye if it answers.
const CLOSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

const EXAMPLES: &str = "\
Examples:
  switchboard send --on alerts.robot --header severity=high 'bad robot detected'
  tail -f alerts.log | switchboard send --on alerts.log      # one message per line
  switchboard --broker redis send --on reports.daily --file report.pdf
  switchboard send --on load.test --count 1000 --sleep 10ms 'tick {{Count}} {{ID}} at {{TimeStamp}}'
  switchboard listen --on 'orders.>' --format json > orders.jsonl      # capture on one broker...
  switchboard --broker amqp send --format json < orders.jsonl         # ...replay on another
  switchboard send --trace --on alerts.disk 'disk 95% full'    # starts a W3C trace

Prints nothing on success; -v reports how many messages were sent (on stderr).

Exit status and what is reported (on stderr):
  0    everything was handed to the broker's client and flushed. If the
       connection was lost and re-made meanwhile, a warning says so: messages
       handed over before a reconnect may not have reached the broker.
  1    one `error:` line. If publishing failed (e.g. the broker went away and
       the client could not take a message within the flush timeout), it says
       how many messages were handed to the client before (their delivery
       is unknown) and what was not sent (the rest of stdin, or of --count).
  130  Ctrl-C, 143 SIGTERM: stops reading, flushes what was sent (within 10s),
       says how many messages were sent. A second signal exits at once.";

/// Arguments of `switchboard send`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct SendArgs {
    /// Subject to publish on: dot-separated tokens such as `alerts.cpu` (no wildcards).
    /// Needed unless --format json, whose lines name their subjects (--on then overrides them).
    #[arg(long, value_name = "SUBJECT", required_unless_present = "format")]
    pub(crate) on: Option<String>,

    /// How each line of stdin is read: `text`, the line is the payload; `json`, the line
    /// is a whole message as `listen --format json` prints it (subject, headers, payload
    /// or payload_base64), so a capture replays to any broker byte for byte. [default: text]
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,

    /// Send MESSAGE N times. In MESSAGE and in header values, {{Count}} (1, 2, …),
    /// {{ID}} (unique per message), {{TimeStamp}} (RFC 3339) and {{Unix}} (seconds)
    /// are filled in for each message.
    #[arg(long, value_name = "N", requires = "message", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Pause this long between messages (e.g. 100ms, 1s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) sleep: Option<Duration>,

    /// Header to attach, as NAME=VALUE (repeatable; a repeated NAME keeps the last value).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub(crate) headers: Vec<String>,

    /// Start a W3C trace: each message gets a new `traceparent` header (a child of the
    /// one given with --header traceparent=…, if any), which `switchboard worker`
    /// continues. On by default in a build with OpenTelemetry export (cargo feature
    /// `otel`) when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp) is set;
    /// each send is then an exported span with the ids of that `traceparent`.
    #[arg(long)]
    pub(crate) trace: bool,

    /// Send the bytes of FILE, unchanged, as one message (`-` reads all of stdin as one message).
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    pub(crate) file: Option<PathBuf>,

    /// The message. Without it (and without --file), each line of stdin is one message,
    /// sent as it is read; the line break is not part of the message.
    #[arg(value_name = "MESSAGE")]
    pub(crate) message: Option<String>,
}

/// Where the payloads come from.
enum Source {
    /// One message read whole from a file.
    One(Bytes),
    /// The command line's message, `count` times, templates filled in.
    Repeat { template: String, count: u64 },
    /// One message per line of stdin.
    StdinLines,
    /// One message per line of stdin, each a JSON message.
    StdinJson,
}

/// How publishing ended.
enum Published {
    /// Everything was handed to the client.
    All(u64),
    /// A signal stopped it after this many messages.
    Interrupted(u64, Signal),
    /// Publishing message `count + 1` failed: the broker or the link is in
    /// trouble, so what was handed over before cannot be confirmed either.
    Failed(u64, anyhow::Error),
    /// Stopped after `count` messages by a bad line (e.g. too large) or by
    /// stdin failing; what was handed over can still be flushed.
    Stopped(u64, anyhow::Error),
}

/// Runs `switchboard send`.
pub(crate) async fn run(url: &str, args: SendArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before connecting.
    let format = args.format.unwrap_or_default();
    let subject = args.on.as_deref().map(Subject::new).transpose()?;
    if subject.is_none() && format == Format::Text {
        anyhow::bail!("--on SUBJECT is needed (only --format json lines name their own subjects)");
    }
    if format == Format::Json && (args.message.is_some() || args.file.is_some()) {
        anyhow::bail!("--format json reads messages from stdin; leave out MESSAGE and --file");
    }
    let headers = parse_headers(&args.headers)?;
    let target = match &subject {
        Some(subject) => format!("'{subject}'"),
        None => "the subjects of the lines".to_string(),
    };
    let pace = Pace {
        sleep: args.sleep,
        json: format == Format::Json,
        trace: args.trace || otel::exporting(),
    };
    // From here on a signal stops `send` the way it says, not the default way.
    let mut signals = Signals::install()?;
    let reading = async {
        anyhow::Ok(match (args.message, args.file) {
            (Some(template), _) => Source::Repeat {
                template,
                count: args.count.unwrap_or(1),
            },
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut bytes)
                    .await
                    .context("cannot read stdin")?;
                Source::One(Bytes::from(bytes))
            }
            (None, Some(path)) => Source::One(Bytes::from(
                tokio::fs::read(&path)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )),
            (None, None) if format == Format::Json => Source::StdinJson,
            (None, None) => Source::StdinLines,
        })
    };
    let prepared =
        async { Ok::<_, anyhow::Error>((reading.await?, connection::connect(url).await?)) };
    let (source, broker) = tokio::select! {
        prepared = prepared => prepared?,
        signal = signals.recv() => {
            eprintln!("caught {signal}: interrupted before sending anything");
            return Ok(signal.exit_code());
        }
    };
    connection::warn_if_in_process(&broker);
    let shown_url = connection::display_url(url);
    let disconnects = broker.status().disconnects;
    // How many --count asked for, to say what was left unsent on failure.
    let repeat = match &source {
        Source::Repeat { count, .. } => Some(*count),
        _ => None,
    };

    let published = publish_all(
        &broker,
        subject.as_ref(),
        &headers,
        source,
        pace,
        &mut signals,
    )
    .await;
    let (count, interrupted, stopped) = match published {
        Published::All(count) => (count, None, None),
        Published::Interrupted(count, signal) => (count, Some(signal), None),
        Published::Stopped(count, error) => (count, None, Some(error)),
        Published::Failed(count, error) => {
            // The link is broken: waiting for a flush would only wait longer.
            let _ = tokio::time::timeout(CLOSE_AFTER_FAILURE, broker.close()).await;
            if count == 0 {
                return Err(error);
            }
            // The message that failed is not counted: `count` went before it.
            let rest = match repeat {
                Some(total) => format!(
                    "the other {} of --count {total} were not sent",
                    total.saturating_sub(count + 1)
                ),
                None => "the rest of stdin was not sent".to_string(),
            };
            return Err(anyhow::anyhow!(
                "{error:#}; {count} earlier message(s) were handed to the client, but whether they reached the broker is unknown; {rest}"
            ));
        }
    };
    let flushed = tokio::select! {
        flushed = connection::flush_and_close(&broker) => flushed,
        signal = signals.recv() => {
            eprintln!("caught {signal} while flushing: {count} message(s) were handed to the client; whether they all reached the broker is unknown");
            return Ok(signal.exit_code());
        }
    };
    let lost = broker.status().disconnects.saturating_sub(disconnects);
    if lost > 0 {
        // Only a flush that went through shows the link came back; a failed
        // one is reported below with its reason.
        let back = if flushed.is_ok() {
            " and the client reconnected"
        } else {
            ""
        };
        eprintln!(
            "warning: the connection to {shown_url} was lost {lost} time(s) while sending{back}: messages handed to the client before a reconnect may not have reached the broker ({count} message(s) sent in all)"
        );
    }
    let reconnects = match lost {
        0 => String::new(),
        n => format!("; {n} reconnect(s) meanwhile: delivery of the messages handed over before a reconnect is unknown"),
    };
    let unknown = format!(
        "{count} message(s) were handed to the client; whether they all reached the broker is unknown"
    );
    if let Some(signal) = interrupted {
        match flushed {
            Ok(()) => eprintln!(
                "caught {signal}: interrupted; sent {count} message(s) to {target} at {shown_url} (flushed){reconnects}"
            ),
            Err(error) => eprintln!("caught {signal}: interrupted; {unknown}: {error:#}"),
        }
        return Ok(signal.exit_code());
    }
    if let Err(error) = flushed {
        // A refusal is known, not unknown: the broker said which it did not take.
        if let Some(switchboard::Error::Refused { count: refused, .. }) =
            error.downcast_ref::<switchboard::Error>()
        {
            let delivered = count.saturating_sub(*refused);
            return Err(error.context(format!(
                "the broker took {delivered} of {count} message(s){reconnects}"
            )));
        }
        return Err(error.context(unknown));
    }
    if let Some(error) = stopped {
        return Err(error.context(format!("sent {count} message(s) to {target}, then stopped")));
    }
    tracing::info!("sent {count} message(s) to {target} at {shown_url}{reconnects}");
    Ok(ExitCode::SUCCESS)
}

/// Parses `NAME=VALUE` arguments into headers, with the core's header rules.
pub(crate) fn parse_headers(args: &[String]) -> anyhow::Result<Headers> {
    let mut headers = Headers::new();
    for arg in args {
        let Some((name, value)) = arg.split_once('=') else {
            anyhow::bail!(
                "invalid --header {arg:?}: expected NAME=VALUE, e.g. --header severity=high"
            );
        };
        if let Err(error) = headers.insert(name, value) {
            match error {
                switchboard::Error::InvalidHeader { reason, .. } => {
                    anyhow::bail!("invalid --header {arg:?}: {reason}")
                }
                other => return Err(other.into()),
            }
        }
    }
    Ok(headers)
}

/// How messages are paced, read and traced.
#[derive(Clone, Copy)]
struct Pace {
    /// A pause between messages.
    sleep: Option<Duration>,
    /// Stdin lines are JSON messages.
    json: bool,
    /// Each message starts a trace (`--trace`).
    trace: bool,
}

/// Publishes `message`, in a trace of its own when `trace` is set: a
/// [`PublishSpan`] gives it its `traceparent` and, with OpenTelemetry
/// export, is exported with the publish's outcome.
async fn publish(broker: &AnyBroker, mut message: Message, trace: bool) -> switchboard::Result<()> {
    if !trace {
        return broker.publish(message).await;
    }
    let span = PublishSpan::start(&mut message)?;
    let published = broker.publish(message).await;
    span.end(&published);
    published
}

/// Fills in `{{Count}}`, `{{ID}}`, `{{TimeStamp}}` and `{{Unix}}` for message
/// number `count` (1-based); text without `{{` is returned as it is.
fn fill_in(template: &str, count: u64, id: &str, now: SystemTime) -> String {
    if !template.contains("{{") {
        return template.to_string();
    }
    let unix = now
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    template
        .replace("{{Count}}", &count.to_string())
        .replace("{{ID}}", id)
        .replace(
            "{{TimeStamp}}",
            &humantime::format_rfc3339_millis(now).to_string(),
        )
        .replace("{{Unix}}", &unix.to_string())
}

/// The message number `count` of a templated send.
fn templated(
    subject: &Subject,
    template: &str,
    headers: &Headers,
    count: u64,
) -> anyhow::Result<Message> {
    let id = Alphanumeric.sample_string(&mut rand::rng(), 22);
    let now = SystemTime::now();
    let mut filled = Headers::new();
    for (name, value) in headers {
        filled.insert(name, fill_in(value, count, &id, now))?;
    }
    Ok(Message::from_parts(
        subject.clone(),
        Bytes::from(fill_in(template, count, &id, now)),
        filled,
    ))
}

/// Publishes what `source` holds until it ends, a signal comes or publishing
/// fails; says how many messages were handed to the broker's client.
async fn publish_all(
    broker: &AnyBroker,
    subject: Option<&Subject>,
    headers: &Headers,
    source: Source,
    pace: Pace,
    signals: &mut Signals,
) -> Published {
    // Only JSON lines name their subjects (checked before connecting).
    let needs_on = || Published::Stopped(0, anyhow::anyhow!("--on SUBJECT is needed"));
    match source {
        Source::StdinLines | Source::StdinJson => {
            publish_lines(broker, subject, headers, pace, signals).await
        }
        Source::One(payload) => {
            let Some(subject) = subject else {
                return needs_on();
            };
            let message = Message::from_parts(subject.clone(), payload, headers.clone());
            tokio::select! {
                published = publish(broker, message, pace.trace) => match published {
                    Ok(()) => Published::All(1),
                    Err(error) => Published::Failed(0, connection::one_line(error)),
                },
                signal = signals.recv() => Published::Interrupted(0, signal),
            }
        }
        Source::Repeat {
            template,
            count: total,
        } => {
            let Some(subject) = subject else {
                return needs_on();
            };
            for count in 0..total {
                if count > 0 {
                    if let Some(pause) = pace.sleep {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            signal = signals.recv() => return Published::Interrupted(count, signal),
                        }
                    }
                }
                let message = match templated(subject, &template, headers, count + 1) {
                    Ok(message) => message,
                    Err(error) => return Published::Stopped(count, error),
                };
                let published = tokio::select! {
                    biased;
                    published = publish(broker, message, pace.trace) => published,
                    signal = signals.recv() => return Published::Interrupted(count, signal),
                };
                if let Err(error) = published {
                    return Published::Failed(count, connection::one_line(error));
                }
            }
            Published::All(total)
        }
    }
}

/// Publishes one message per line of stdin: the line as the payload, or with
/// `pace.json` the line as a whole message (`subject`, when given, wins over
/// the line's; `headers` are added to the line's).
async fn publish_lines(
    broker: &AnyBroker,
    subject: Option<&Subject>,
    headers: &Headers,
    pace: Pace,
    signals: &mut Signals,
) -> Published {
    let stdin = tokio::io::stdin();
    if std::io::stdin().is_terminal() {
        eprintln!("reading messages from stdin, one per line (Ctrl-D to finish)");
    }
    let mut reader = tokio::io::BufReader::new(stdin);
    let mut line = Vec::new();
    let mut count = 0u64;
    // Lines read, blank ones included, so that an error names the line a
    // user finds in the file (blank lines are skipped in JSON input).
    let mut number = 0u64;
    loop {
        line.clear();
        let read = tokio::select! {
            biased;
            read = reader.read_until(b'\n', &mut line) => read,
            signal = signals.recv() => return Published::Interrupted(count, signal),
        };
        match read {
            Ok(0) => return Published::All(count),
            Ok(_) => number += 1,
            Err(error) => {
                return Published::Stopped(
                    count,
                    anyhow::Error::new(error).context("cannot read stdin"),
                )
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if pace.json && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if count > 0 {
            if let Some(pause) = pace.sleep {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    signal = signals.recv() => return Published::Interrupted(count, signal),
                }
            }
        }
        let message = if pace.json {
            match format::message_from_json(&line, subject) {
                Ok(mut message) => {
                    for (name, value) in headers {
                        if let Err(error) = message.headers_mut().insert(name, value) {
                            return Published::Stopped(count, error.into());
                        }
                    }
                    message
                }
                Err(error) => {
                    return Published::Stopped(
                        count,
                        error.context(format!("line {number} of stdin")),
                    )
                }
            }
        } else {
            let Some(subject) = subject else {
                return Published::Stopped(count, anyhow::anyhow!("--on SUBJECT is needed"));
            };
            Message::from_parts(
                subject.clone(),
                Bytes::copy_from_slice(&line),
                headers.clone(),
            )
        };
        // Waits only while the client's queue is full (a broker that is
        // down or slow); a signal stops that wait too.
        let published = tokio::select! {
            biased;
            published = publish(broker, message, pace.trace) => published,
            signal = signals.recv() => return Published::Interrupted(count, signal),
        };
        if let Err(error) = published {
            let bad_line = error.kind() == switchboard::ErrorKind::InvalidInput;
            let error = connection::one_line(error).context(format!("line {number} of stdin"));
            return if bad_line {
                Published::Stopped(count, error)
            } else {
                Published::Failed(count, error)
            };
        }
        count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_headers;

    fn parse(args: &[&str]) -> Result<Vec<(String, String)>, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_headers(&args)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn headers_are_name_equals_value() {
        assert_eq!(
            parse(&["severity=high", "note=a=b", "empty="]).unwrap(),
            [
                ("empty".to_string(), String::new()),
                ("note".to_string(), "a=b".to_string()),
                ("severity".to_string(), "high".to_string()),
            ]
        );
        assert_eq!(
            parse(&["k=1", "k=2"]).unwrap(),
            [("k".to_string(), "2".to_string())]
        );
    }

    #[test]
    fn bad_headers_say_which_and_why() {
        let error = parse(&["severity"]).unwrap_err();
        assert!(
            error.contains("\"severity\"") && error.contains("NAME=VALUE"),
            "{error}"
        );
        let error = parse(&["=high"]).unwrap_err();
        assert!(error.contains("empty"), "{error}");
        let error = parse(&["bad name=x"]).unwrap_err();
        assert!(error.contains("visible ASCII"), "{error}");
    }
}
