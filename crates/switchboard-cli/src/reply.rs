//! `switchboard reply`: answer requests on a pattern with a fixed text, the
//! request itself, or the output of a command (natscli's `nats reply` is the
//! model).

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use switchboard::{Bytes, Delivery, Pattern, QueueGroup};
use tokio::io::AsyncReadExt as _;

use crate::child::{self, Children};
use crate::connection;
use crate::format::text_brief;
use crate::membership::Membership;
use crate::signals::Signals;

const EXAMPLES: &str = "\
Examples:
  switchboard reply --on robots.status 'all robots nominal'
  switchboard reply --on 'echo.>' --echo
  switchboard --broker redis reply --on billing.quote --command 'bc -l'
  switchboard --broker amqp reply --on jobs.resize --group resizers --count 1 --command ./resize.sh

With --command, CMD runs with `sh -c` for each request, in a process group of
its own: the request's payload on its stdin, SWITCHBOARD_SUBJECT in its
environment; its stdout is the reply. A command that fails (non-zero exit, or
still running after --command-timeout, when it is killed with whatever it
started) is reported on stderr, and the request gets an error reply (NATS
micro's Nats-Service-Error headers, code 500, saying how the command failed
but not what it was): the requester's `switchboard request` fails at once
with that line instead of timing out. Each answered request is one line on stderr. A message that was
published, not sent as a request, is skipped with a warning. Exits 0 after
--count requests; Ctrl-C/SIGTERM kills a running command's process group and
exits 130/143.";

/// Arguments of `switchboard reply`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ReplyArgs {
    /// Subject pattern of the requests to answer (`*` and `>` wildcards).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) on: String,

    /// Join queue group NAME, so several repliers share the requests.
    #[arg(long, value_name = "NAME")]
    pub(crate) group: Option<String>,

    /// Exit after answering N requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Answer with the request's own payload and headers.
    #[arg(long, conflicts_with_all = ["command", "text"])]
    pub(crate) echo: bool,

    /// Answer with the output of CMD (run with `sh -c`; see below).
    #[arg(long, value_name = "CMD", conflicts_with = "text")]
    pub(crate) command: Option<String>,

    /// How long CMD may run for one request (above zero).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration_arg::above_zero)]
    pub(crate) command_timeout: Duration,

    /// The text to answer every request with.
    #[arg(value_name = "TEXT", required_unless_present_any = ["echo", "command"])]
    pub(crate) text: Option<String>,
}

/// What a request is answered with.
enum Answer {
    Text(Bytes),
    Echo,
    Command {
        command: String,
        timeout: Duration,
        children: Children,
    },
}

/// Runs `switchboard reply`.
pub(crate) async fn run(url: &str, args: ReplyArgs) -> anyhow::Result<ExitCode> {
    let pattern = Pattern::new(&args.on)?;
    let membership = match args.group.as_deref() {
        Some(group) => Membership::Group(QueueGroup::new(group)?),
        None => Membership::Plain,
    };
    let answer = match (args.echo, args.command, args.text) {
        (true, _, _) => Answer::Echo,
        (_, Some(command), _) => Answer::Command {
            command,
            timeout: args.command_timeout,
            children: Children::default(),
        },
        (_, None, text) => Answer::Text(Bytes::from(text.unwrap_or_default())),
    };
    let mut signals = Signals::install()?;
    let subscribing = async {
        let broker = connection::connect(url).await?;
        if !broker.capabilities().request_reply {
            anyhow::bail!(
                "{} has no request/reply, so there is nothing to answer; use nats, redis, amqp, mqtt or memory",
                broker.kind()
            );
        }
        match membership.subscribe(&broker, &pattern).await {
            Ok(subscription) => anyhow::Ok((broker, subscription)),
            Err(error) => {
                let _ = connection::close(&broker).await;
                Err(connection::one_line(error))
            }
        }
    };
    let (broker, mut subscription) = tokio::select! {
        subscribed = subscribing => subscribed?,
        signal = signals.recv() => {
            eprintln!("caught {signal} before the subscription was ready: stopped");
            return Ok(signal.exit_code());
        }
    };
    eprintln!(
        "answering requests on '{pattern}' at {} (Ctrl-C to stop)",
        connection::display_url(url)
    );
    let mut answered = 0u64;
    let stopped_by = loop {
        if args.count.is_some_and(|count| answered >= count) {
            break None;
        }
        let next = tokio::select! {
            next = subscription.next() => next,
            signal = signals.recv() => break Some(signal),
        };
        let mut delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                eprintln!("warning: {}", connection::one_line(error));
                continue;
            }
            None => {
                let _ = connection::close(&broker).await;
                anyhow::bail!("the broker ended the subscription to '{pattern}'");
            }
        };
        let mut settled = false;
        let interrupted = tokio::select! {
            done = answer_one(&mut delivery, &answer, &mut settled) => {
                if done {
                    answered += 1;
                }
                None
            }
            signal = signals.recv() => Some(signal),
        };
        if let Some(signal) = interrupted {
            if !settled {
                stopped_mid_request(&mut delivery, signal).await;
            }
            break Some(signal);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), subscription.close()).await;
    let _ = connection::close(&broker).await;
    eprintln!("answered {answered} request(s)");
    Ok(stopped_by.map_or(ExitCode::SUCCESS, |signal| signal.exit_code()))
}

/// Tells the requester whose request a signal interrupted that no answer
/// will come (a command being run for it was killed with its group), and
/// settles the delivery: left unsettled, the requester waited out its
/// timeout and RabbitMQ's client warned of a delivery dropped unacknowledged.
async fn stopped_mid_request(delivery: &mut Delivery, signal: crate::signals::Signal) {
    let told = async {
        let description = format!("the replier stopped ({signal}) before answering; send it again");
        let _ = delivery.reply_error(503, &description).await;
        let _ = delivery.ack().await;
    };
    if tokio::time::timeout(Duration::from_secs(2), told)
        .await
        .is_ok()
    {
        eprintln!(
            "told the requester of {} that it will get no answer",
            text_brief(delivery)
        );
    }
}

/// Answers one delivery; whether it was a request that got its reply.
/// `settled` is set once the delivery is acknowledged (with or without a
/// reply), so that a signal after that does not answer it twice.
async fn answer_one(delivery: &mut Delivery, answer: &Answer, settled: &mut bool) -> bool {
    let shown = text_brief(delivery);
    if !delivery.is_request() {
        eprintln!("warning: skipped {shown}: it was published, not sent as a request");
        *settled = true;
        let _ = delivery.ack().await;
        return false;
    }
    let reply = match answer {
        Answer::Text(text) => Ok((text.clone(), Default::default())),
        Answer::Echo => {
            // A request carrying error-reply headers echoed back would read
            // as this replier's failure.
            let mut headers = delivery.headers().clone();
            headers.remove(switchboard::SERVICE_ERROR_HEADER);
            headers.remove(switchboard::SERVICE_ERROR_CODE_HEADER);
            Ok((delivery.payload().clone(), headers))
        }
        Answer::Command {
            command,
            timeout,
            children,
        } => run_command(command, *timeout, children, delivery)
            .await
            .map(|output| (output, Default::default()))
            .map_err(|reason| CommandFailure { command, reason }),
    };
    let outcome = match reply {
        Ok((payload, headers)) => match delivery.reply_with(payload, headers).await {
            Ok(()) => Ok(()),
            // The reply itself could not go (too large, say): the requester
            // is told why rather than left to wait out its timeout.
            Err(error) => {
                let error = connection::one_line(error).to_string();
                let told = delivery
                    .reply_error(500, &format!("the reply could not be sent: {error}"))
                    .await;
                Err(match told {
                    Ok(()) => format!("{error}; an error reply was sent instead"),
                    Err(_) => error,
                })
            }
        },
        Err(failure) => {
            // The requester learns at once why there is no answer. The
            // command itself is not named to it: it may hold secrets.
            let sent = delivery.reply_error(500, &failure.reason).await;
            Err(match sent {
                Ok(()) => format!("{}; an error reply was sent", failure.local()),
                Err(error) => format!(
                    "{}; the error reply failed too: {}",
                    failure.local(),
                    connection::one_line(error)
                ),
            })
        }
    };
    *settled = true;
    let _ = delivery.ack().await;
    match outcome {
        Ok(()) => {
            eprintln!("answered {shown}");
            true
        }
        Err(error) => {
            eprintln!("warning: no reply to {shown}: {error}");
            false
        }
    }
}

/// Why a request's command gave no reply.
struct CommandFailure<'a> {
    command: &'a str,
    /// How it failed, without the command (this goes to the requester).
    reason: String,
}

impl CommandFailure<'_> {
    /// The failure as the replier's own stderr tells it, naming the command.
    fn local(&self) -> String {
        format!("the command {:?}: {}", self.command, self.reason)
    }
}

/// Runs `command` for one request; its stdout, or how it failed (without
/// naming the command, as the requester is told). The command
/// runs in a process group of its own, killed whole when it outlives
/// `timeout` or the replier stops (this future dropped), so nothing it
/// started is left running.
async fn run_command(
    command: &str,
    timeout: Duration,
    children: &Children,
    request: &Delivery,
) -> Result<Bytes, String> {
    let running = async {
        let mut sh = tokio::process::Command::new("sh");
        sh.arg("-c")
            .arg(command)
            .env("SWITCHBOARD_SUBJECT", request.subject().as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut running = child::spawn(&mut sh, children).context("cannot start sh")?;
        let stdout = running.child.stdout.take();
        let mut output = Vec::new();
        let mut read = Ok(0);
        let out = async {
            if let Some(mut stdout) = stdout {
                read = stdout.read_to_end(&mut output).await;
            }
        };
        // Its stderr is the replier's own: nothing to read.
        let status = running
            .finish(request.payload().clone(), out, async {})
            .await
            .context("cannot wait for the command")?;
        read.context("cannot read the command's output")?;
        if !status.success() {
            anyhow::bail!("the command failed ({status})");
        }
        anyhow::Ok(Bytes::from(output))
    };
    match tokio::time::timeout(timeout, running).await {
        Ok(result) => result.map_err(|e| format!("{e:#}")),
        Err(_) => Err(format!(
            "the command was still running after {timeout:?}; it was killed"
        )),
    }
}
