//! The actions a route of `switchboard worker` runs: exec, publish, log.

use std::process::Stdio;
use std::sync::Arc;

use switchboard::worker::{async_trait, Context, Handler, HandlerError};
use switchboard::{Message, Subject};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::config::Action;
use crate::child::{self, Children};
use crate::stdout::Stdout;

/// The handler for `action` on the route `route` (its pattern, used as log
/// prefix). `exec` commands are registered in `children` while they run; `log`
/// lines go to `stdout`.
pub(crate) fn handler(
    route: &str,
    action: &Action,
    children: &Children,
    stdout: &Stdout,
) -> Arc<dyn Handler> {
    match action {
        Action::Exec(argv) => Arc::new(Exec {
            route: route.to_string(),
            argv: argv.clone(),
            children: children.clone(),
        }),
        Action::Publish(template) => Arc::new(Forward {
            template: template.clone(),
        }),
        Action::Log => Arc::new(Log {
            stdout: stdout.clone(),
        }),
    }
}

/// The environment variable name for header `name`: `SWITCHBOARD_HEADER_` then
/// the name upper-cased, anything not a letter or digit turned into `_`.
pub(crate) fn header_env_name(name: &str) -> String {
    let mut env = String::from("SWITCHBOARD_HEADER_");
    env.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    env
}

/// Runs a command per message: the payload on stdin, `SWITCHBOARD_SUBJECT`,
/// `SWITCHBOARD_ATTEMPT`, `SWITCHBOARD_ROUTE`, `SWITCHBOARD_HEADERS` (all
/// headers as one JSON object) and one `SWITCHBOARD_HEADER_<NAME>` per header
/// in the environment (and, for a message with a W3C
/// `traceparent`, `TRACEPARENT` and `TRACESTATE` naming the handler's span); its output lines go to stderr prefixed
/// with the route. A non-zero exit fails the attempt. When the message is a
/// request, the command's stdout, bytes as printed, is the reply once it
/// exits 0 (a failing command leaves the request unanswered). The command runs in its
/// own process group (so a terminal's Ctrl-C reaches only the worker, which
/// lets it finish) and the group is killed if the attempt is cancelled.
#[derive(Debug)]
struct Exec {
    route: String,
    argv: Vec<String>,
    children: Children,
}

/// Longest part of one line of a command's output that the worker keeps
/// and prints, in bytes: a command writing without line breaks (`cat` of a
/// binary, `yes | tr -d '\n'`) made one line of its whole output, held in
/// memory up to four times (the line, the last line kept, the error, the
/// log) and logged whole (400 MB of output: 1.6 GB of memory, a 1.2 GB log).
const MAX_SHOWN_LINE: usize = 4096;

/// Forwards the command's output to stderr line by line, prefixed with the
/// route, each line cut to [`MAX_SHOWN_LINE`] bytes and its control
/// characters escaped (as `listen` shows payloads: a line cannot drive the
/// terminal); keeps the last non-blank line in `last` and, with `capture`,
/// every byte exactly as printed (what a request's reply carries).
async fn forward_output(
    route: &str,
    stream: impl AsyncRead + Unpin,
    last: &mut Option<String>,
    mut capture: Option<&mut Vec<u8>>,
) {
    let mut reader = BufReader::new(stream);
    // The line so far (at most `MAX_SHOWN_LINE` bytes) and what was cut.
    let (mut line, mut cut) = (Vec::new(), 0usize);
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(error) => {
                eprintln!("[{route}] <cannot read the command's output: {error}>");
                break;
            }
        };
        if chunk.is_empty() {
            if !line.is_empty() || cut > 0 {
                show_line(route, &line, cut, last);
            }
            break;
        }
        let end = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..end.map_or(chunk.len(), |at| at + 1)];
        if let Some(capture) = capture.as_deref_mut() {
            capture.extend_from_slice(part);
        }
        let kept = part.len().min(MAX_SHOWN_LINE.saturating_sub(line.len()));
        line.extend_from_slice(&part[..kept]);
        // A line break cut off is no part of the line.
        cut += part.len() - kept - usize::from(end.is_some() && kept < part.len());
        let taken = part.len();
        reader.consume(taken);
        if end.is_some() {
            show_line(route, &line, cut, last);
            line.clear();
            cut = 0;
        }
    }
}

/// Prints one line of a command's output (`cut` bytes of it left out) and
/// keeps it in `last` unless it is blank.
fn show_line(route: &str, line: &[u8], cut: usize, last: &mut Option<String>) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    let mut text = crate::format::escape_controls(text).into_owned();
    if cut > 0 {
        text.push_str(&format!("… ({cut} more bytes)"));
    }
    eprintln!("[{route}] {text}");
    if !text.trim().is_empty() {
        *last = Some(text);
    }
}

#[async_trait]
impl Handler for Exec {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(HandlerError::permanent("`exec` names no command"));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("SWITCHBOARD_SUBJECT", ctx.subject().as_str())
            .env("SWITCHBOARD_ATTEMPT", ctx.attempt().to_string())
            .env("SWITCHBOARD_ROUTE", ctx.route())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in ctx.headers() {
            command.env(header_env_name(name), value);
        }
        // All of them, names as sent: names that differ only in case or
        // punctuation share one `SWITCHBOARD_HEADER_` variable.
        let headers: std::collections::BTreeMap<&str, &str> = ctx.headers().iter().collect();
        command.env(
            "SWITCHBOARD_HEADERS",
            serde_json::to_string(&headers).unwrap_or_else(|_| "{}".to_string()),
        );
        // W3C trace context for child processes: the handler's span as parent.
        command.env_remove("TRACEPARENT").env_remove("TRACESTATE");
        if let Some(trace) = ctx.trace() {
            command.env("TRACEPARENT", trace.traceparent());
            if let Some(state) = trace.tracestate() {
                command.env("TRACESTATE", state);
            }
        }
        let mut running = child::spawn(&mut command, &self.children).map_err(|error| {
            let text = format!("cannot run {program:?}: {error}");
            // A program that does not exist or may not be run will not start on a
            // later attempt either: dead-letter at once instead of retrying.
            match error.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    HandlerError::permanent(text)
                }
                _ => HandlerError::new(text),
            }
        })?;
        let (mut last_out, mut last_err) = (None, None);
        // A request is answered with the command's stdout, byte for byte.
        let mut reply = ctx.is_request().then(Vec::new);
        let stdout = running.child.stdout.take();
        let stderr = running.child.stderr.take();
        let out = async {
            if let Some(stdout) = stdout {
                forward_output(&self.route, stdout, &mut last_out, reply.as_mut()).await;
            }
        };
        let err = async {
            if let Some(stderr) = stderr {
                forward_output(&self.route, stderr, &mut last_err, None).await;
            }
        };
        let status = running
            .finish(ctx.payload().clone(), out, err)
            .await
            .map_err(|error| {
                HandlerError::new(format!("waiting for {program:?} failed: {error}"))
            })?;
        if status.success() {
            if let Some(reply) = reply {
                // A failed reply fails the message like a failed publish:
                // retried when the error is temporary.
                ctx.reply(reply).await?;
            }
            return Ok(());
        }
        let how = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_string(),
        };
        // The line goes into the error, which the worker logs and puts in
        // the dead letter and the error reply: URL passwords out of all three.
        let detail = last_err
            .or(last_out)
            .map(|line| format!(": {}", switchboard::redact_text(&line)))
            .unwrap_or_default();
        Err(HandlerError::new(format!(
            "command {program:?} {how}{detail}"
        )))
    }
}

/// Publishes each message, payload and headers kept, to a subject template.
#[derive(Debug)]
struct Forward {
    template: String,
}

#[async_trait]
impl Handler for Forward {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let subject = Subject::new(&self.template.replace("{subject}", ctx.subject().as_str()))
            .map_err(HandlerError::permanent)?;
        let message = Message::from_parts(subject, ctx.payload().clone(), ctx.headers().clone());
        ctx.publish(message).await?;
        // The original is acknowledged once this returns: make sure the broker has the copy.
        ctx.broker().flush().await?;
        Ok(())
    }
}

/// Prints each message as one line on stdout: `[subject] payload {k=v ...}`.
/// The line is written by the stdout thread and the handler succeeds once it
/// is out, so a full stdout pipe holds the handler (which a shutdown can
/// cancel), never the runtime.
#[derive(Debug)]
struct Log {
    stdout: Stdout,
}

/// The text line for a message, exactly as `switchboard listen` prints it.
pub(crate) fn log_line(message: &Message) -> String {
    crate::format::text_line(message)
}

#[async_trait]
impl Handler for Log {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self.stdout
            .print_and_wait(log_line(ctx.message()))
            .await
            .map_err(|error| HandlerError::new(format!("cannot write to stdout: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_env_names() {
        assert_eq!(header_env_name("trace-id"), "SWITCHBOARD_HEADER_TRACE_ID");
        assert_eq!(header_env_name("X.Host_1"), "SWITCHBOARD_HEADER_X_HOST_1");
    }

    /// A line without end is cut, not held whole; control characters are
    /// escaped; the capture (a request's reply) keeps every byte.
    #[tokio::test]
    async fn output_lines_are_cut_and_escaped() {
        let mut output = vec![b'x'; 3 * MAX_SHOWN_LINE];
        output.extend_from_slice(b"\nbad\rline\0\x1b[31m\n\n");
        let (mut last, mut capture) = (None, Vec::new());
        forward_output("r", &output[..], &mut last, Some(&mut capture)).await;
        assert_eq!(capture, output);
        assert_eq!(last.as_deref(), Some("bad\\rline\\u{0}\\u{1b}[31m"));
        let mut last = None;
        forward_output("r", &output[..3 * MAX_SHOWN_LINE], &mut last, None).await;
        let shown = last.unwrap();
        assert!(
            shown.ends_with(&format!("… ({} more bytes)", 2 * MAX_SHOWN_LINE)),
            "{}",
            &shown[MAX_SHOWN_LINE - 10..]
        );
        assert_eq!(
            shown.len(),
            MAX_SHOWN_LINE + format!("… ({} more bytes)", 2 * MAX_SHOWN_LINE).len()
        );
        let mut last = None;
        let exact = [vec![b'y'; MAX_SHOWN_LINE], b"\n".to_vec()].concat();
        forward_output("r", &exact[..], &mut last, None).await;
        assert_eq!(
            last.unwrap().len(),
            MAX_SHOWN_LINE,
            "a cut line break counted as cut"
        );
    }

    #[test]
    fn log_lines_are_one_line() {
        let message = Message::new("alerts.cpu", "CPU\nat 98%")
            .unwrap()
            .with_header("host", "web-1")
            .unwrap();
        assert_eq!(log_line(&message), "[alerts.cpu] CPU\\nat 98% {host=web-1}");
    }
}
