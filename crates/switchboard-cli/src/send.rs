//! `switchboard send`: publish one message, a file, or one message per line of stdin.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use switchboard::{AnyBroker, Bytes, Headers, Message, Subject};
use tokio::io::AsyncBufReadExt as _;

use crate::connection;

const EXAMPLES: &str = "\
Examples:
  switchboard send --on alerts.robot --header severity=high 'bad robot detected'
  tail -f alerts.log | switchboard send --on alerts.log      # one message per line
  switchboard --broker redis send --on reports.daily --file report.pdf

Prints nothing on success; -v reports how many messages were sent (on stderr).";

/// Arguments of `switchboard send`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct SendArgs {
    /// Subject to publish on: dot-separated tokens such as `alerts.cpu` (no wildcards).
    #[arg(long, value_name = "SUBJECT")]
    pub(crate) on: String,

    /// Header to attach, as NAME=VALUE (repeatable; a repeated NAME keeps the last value).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub(crate) headers: Vec<String>,

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
    /// One message given on the command line or read whole from a file.
    One(Bytes),
    /// One message per line of stdin.
    StdinLines,
}

/// Runs `switchboard send`.
pub(crate) async fn run(url: &str, args: SendArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before connecting.
    let subject = Subject::new(&args.on)?;
    let headers = parse_headers(&args.headers)?;
    let source = match (args.message, args.file) {
        (Some(message), _) => Source::One(Bytes::from(message)),
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
        (None, None) => Source::StdinLines,
    };

    let broker = connection::connect(url).await?;
    connection::warn_if_in_process(&broker);
    let published = publish_all(&broker, &subject, &headers, source).await;
    let shut = connection::flush_and_close(&broker).await;
    let count = match (published, shut) {
        (Ok(count), Ok(())) => count,
        (Err(error), shut) => {
            if let Err(shut) = shut {
                tracing::warn!("{shut:#}");
            }
            return Err(error);
        }
        (Ok(_), Err(error)) => return Err(error),
    };
    tracing::info!(
        "sent {count} message(s) to '{subject}' at {}",
        connection::display_url(url)
    );
    Ok(ExitCode::SUCCESS)
}

/// Parses `NAME=VALUE` arguments into headers, with the core's header rules.
fn parse_headers(args: &[String]) -> anyhow::Result<Headers> {
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

/// Publishes what `source` holds and returns how many messages were handed to the broker.
async fn publish_all(
    broker: &AnyBroker,
    subject: &Subject,
    headers: &Headers,
    source: Source,
) -> anyhow::Result<u64> {
    let message = |payload: Bytes| Message::from_parts(subject.clone(), payload, headers.clone());
    match source {
        Source::One(payload) => {
            broker
                .publish(message(payload))
                .await
                .map_err(connection::one_line)?;
            Ok(1)
        }
        Source::StdinLines => {
            let stdin = tokio::io::stdin();
            if std::io::stdin().is_terminal() {
                eprintln!("reading messages from stdin, one per line (Ctrl-D to finish)");
            }
            let mut reader = tokio::io::BufReader::new(stdin);
            let mut line = Vec::new();
            let mut count = 0u64;
            loop {
                line.clear();
                let read = reader
                    .read_until(b'\n', &mut line)
                    .await
                    .context("cannot read stdin")?;
                if read == 0 {
                    return Ok(count);
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                broker
                    .publish(message(Bytes::copy_from_slice(&line)))
                    .await
                    .map_err(connection::one_line)
                    .with_context(|| format!("line {} of stdin", count + 1))?;
                count += 1;
            }
        }
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
