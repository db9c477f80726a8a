//! `switchboard request`: send one request and print the reply (natscli's
//! `nats request` is the model).

use std::process::ExitCode;
use std::time::Duration;

use switchboard::{Bytes, ErrorKind, Message, Subject};

use crate::connection;
use crate::format::Format;
use crate::send::parse_headers;
use crate::signals::Signals;

const EXAMPLES: &str = "\
Examples:
  switchboard request --on robots.status 'T-800?'
  switchboard --broker redis request --on billing.quote --timeout 5s -H currency=EUR '42 units'
  switchboard --broker amqp request --on jobs.resize --format json 'photo-1.jpg'

Prints the reply on stdout (one line, as `listen` prints messages) and exits 0.
Exits 1 with one `error:` line when nobody is subscribed to answer (NATS,
Redis and RabbitMQ say so at once), when no reply came within --timeout, or
when the broker has no request/reply. Answer requests with `switchboard reply`
or a `reply` route of the worker.";

/// Arguments of `switchboard request`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct RequestArgs {
    /// Subject to send the request on (no wildcards).
    #[arg(long, value_name = "SUBJECT")]
    pub(crate) on: String,

    /// How long to wait for the reply (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::duration_arg::above_zero)]
    pub(crate) timeout: Duration,

    /// Header to attach, as NAME=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub(crate) headers: Vec<String>,

    /// How the reply is printed (as `listen --format`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,

    /// The request's payload (empty if left out).
    #[arg(value_name = "PAYLOAD")]
    pub(crate) payload: Option<String>,
}

/// Runs `switchboard request`.
pub(crate) async fn run(url: &str, args: RequestArgs) -> anyhow::Result<ExitCode> {
    let subject = Subject::new(&args.on)?;
    let headers = parse_headers(&args.headers)?;
    let payload = Bytes::from(args.payload.unwrap_or_default());
    let request = Message::from_parts(subject.clone(), payload, headers);
    let mut signals = Signals::install()?;
    let asking = async {
        let broker = connection::connect(url).await?;
        connection::warn_if_in_process(&broker);
        let reply = broker.request(request, args.timeout).await;
        let _ = connection::close(&broker).await;
        match reply {
            Ok(reply) => Ok(reply),
            Err(error) if error.kind() == ErrorKind::NoResponders => Err(anyhow::anyhow!(
                "{error} (start one with `switchboard reply --on {subject}`)"
            )),
            Err(error) => Err(connection::one_line(error)),
        }
    };
    tokio::select! {
        reply = asking => {
            crate::stdout::line_now(&args.format.line(&reply?, None))?;
            Ok(ExitCode::SUCCESS)
        }
        signal = signals.recv() => {
            eprintln!("caught {signal}: the request was given up");
            Ok(signal.exit_code())
        }
    }
}
