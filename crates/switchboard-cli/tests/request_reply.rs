//! `switchboard request` and `switchboard reply` against real brokers, each
//! test run on NATS, Redis and RabbitMQ (plain clients in another language
//! are in `plain_clients.rs`). A broker that does not answer is skipped
//! unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{assert_one_error_line, broker_url, run, unique, Process, Stdout, PATIENCE};

/// Starts `switchboard reply ARGS...` and waits until it answers requests.
fn replier(url: &str, args: &[&str]) -> Process {
    let mut full = vec!["--broker", url, "reply"];
    full.extend_from_slice(args);
    let process = Process::start(&full, Stdout::Read);
    process.wait_stderr("answering requests on", PATIENCE);
    process
}

/// A command's reply: stdin is the request, SWITCHBOARD_SUBJECT its subject;
/// a failing command leaves the request unanswered and the requester times
/// out with one line; the replier counts only what it answered.
fn command_replies(kind: &str) {
    let Some(url) = broker_url(kind, "command_replies") else {
        return;
    };
    let prefix = unique("rr");
    let pattern = format!("{prefix}.>");
    let answering = replier(
        &url,
        &[
            "--on",
            &pattern,
            "--count",
            "1",
            "--command",
            r#"body=$(cat); test "$body" = fail && exit 3; printf '%s:%s' "$SWITCHBOARD_SUBJECT" "$body" | tr a-z A-Z"#,
        ],
    );
    let failing = run(
        &url,
        &[
            "request",
            "--on",
            &format!("{prefix}.x"),
            "--timeout",
            "1s",
            "fail",
        ],
        b"",
    );
    assert_eq!(failing.status.code(), Some(1), "{failing:?}");
    assert_one_error_line(
        &String::from_utf8_lossy(&failing.stderr),
        "timed out after 1s",
    );

    let subject = format!("{prefix}.robots");
    let asked = run(&url, &["request", "--on", &subject, "t-800?"], b"");
    assert!(asked.status.success(), "{asked:?}");
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout),
        format!("[{subject}] {}:T-800?\n", subject.to_uppercase())
    );
    let (status, _, stderr) = answering.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("failed (exit status: 3)"), "{stderr}");
    assert!(stderr.contains("answered 1 request(s)"), "{stderr}");
}

#[test]
fn command_replies_nats() {
    command_replies("nats");
}

#[test]
fn command_replies_redis() {
    command_replies("redis");
}

#[test]
fn command_replies_amqp() {
    command_replies("amqp");
}

/// Nobody subscribed: the request fails at once (well within its timeout),
/// one line naming the subject and how to answer it.
fn no_responders_fail_at_once(kind: &str) {
    let Some(url) = broker_url(kind, "no_responders_fail_at_once") else {
        return;
    };
    let subject = format!("{}.nobody", unique("rr"));
    let started = Instant::now();
    let output = run(
        &url,
        &["request", "--on", &subject, "--timeout", "30s", "anyone?"],
        b"",
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited for the timeout"
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_one_error_line(&stderr, "no responders");
    assert!(
        stderr.contains(&format!("switchboard reply --on {subject}")),
        "{stderr}"
    );
}

#[test]
fn no_responders_fail_at_once_nats() {
    no_responders_fail_at_once("nats");
}

#[test]
fn no_responders_fail_at_once_redis() {
    no_responders_fail_at_once("redis");
}

#[test]
fn no_responders_fail_at_once_amqp() {
    no_responders_fail_at_once("amqp");
}

/// A published (not requested) message is skipped with a warning and not
/// counted; SIGTERM stops the replier with 143.
#[test]
fn plain_messages_are_skipped_and_signals_stop_the_replier() {
    let Some(url) = broker_url("nats", "plain_messages_are_skipped") else {
        return;
    };
    let subject = format!("{}.plain", unique("rr"));
    let answering = replier(&url, &["--on", &subject, "pong"]);
    let sent = run(&url, &["send", "--on", &subject, "just news"], b"");
    assert!(sent.status.success(), "{sent:?}");
    answering.wait_stderr("it was published, not sent as a request", PATIENCE);
    answering.signal("TERM");
    let (status, _, stderr) = answering.wait(PATIENCE);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("answered 0 request(s)"), "{stderr}");
}

/// Bad input is one line and exit 2 (clap) or 1, before connecting.
#[test]
fn bad_arguments_are_one_line() {
    let url = "nats://127.0.0.1:1";
    let output = run(
        url,
        &["request", "--on", "a.b", "--timeout", "soon", "x"],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("write e.g. 500ms, 2s or 1m"));
    let output = run(url, &["request", "--on", "a.*", "x"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert_one_error_line(&String::from_utf8_lossy(&output.stderr), "a.*");
    let output = run(url, &["reply", "--on", "a.b"], b"");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a reply needs TEXT, --echo or --command"
    );
}
