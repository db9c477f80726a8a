//! `switchboard worker`'s `exec` action answers requests with the command's
//! stdout (bytes as printed), on NATS, Redis and RabbitMQ: asked with
//! `switchboard request` and with the library's `Broker::request`; a failed
//! command's requester gets an error reply. A broker
//! that does not answer is skipped unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::time::Duration;

use harness::{broker_url, run, unique, Process, Stdout, TempDir, PATIENCE};
use switchboard::Message;

fn exec_replies_with_stdout(kind: &str) {
    let Some(url) = broker_url(kind, "exec_replies_with_stdout") else {
        return;
    };
    let prefix = unique("exec-reply");
    let dir = TempDir::new("exec-reply");
    // The binary route prints a byte that is not UTF-8 and no final newline.
    let config = dir.write(
        "worker.toml",
        &format!(
            r#"[[route]]
on = "{prefix}.text.>"
exec = ["sh", "-c", 'printf "pong %s:" "$SWITCHBOARD_SUBJECT"; cat; echo']

[[route]]
on = "{prefix}.bin.>"
exec = ["sh", "-c", 'printf "\377\000"; cat']

[[route]]
on = "{prefix}.failing.>"
exec = ["sh", "-c", 'exit 4']
attempts = 1
"#
        ),
    );
    let worker = Process::start(
        &["--broker", &url, "worker", "--config", &config],
        Stdout::Read,
    );
    worker.wait_stderr("worker ready", PATIENCE);

    // The CLI's request prints the reply as `listen` prints a message.
    let subject = format!("{prefix}.text.robots");
    let asked = run(
        &url,
        &["request", "--on", &subject, "--timeout", "10s", "t-800?"],
        b"",
    );
    assert!(asked.status.success(), "{asked:?}\n{}", worker.stderr());
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout),
        format!("[{subject}] pong {subject}:t-800?\\n\n"),
    );
    // The lines still go to stderr, prefixed with the route.
    worker.wait_stderr(
        &format!("[{prefix}.text.>] pong {subject}:t-800?"),
        PATIENCE,
    );

    // The library's request gets the bytes exactly as printed.
    let request = Message::new(format!("{prefix}.bin.x"), &b"\x01tail"[..]).unwrap();
    let reply = harness::request(&url, request, Duration::from_secs(10));
    let reply = reply.unwrap_or_else(|error| panic!("{error}\n{}", worker.stderr()));
    assert_eq!(reply.payload().as_ref(), b"\xff\x00\x01tail");

    // A request whose command fails is dead-lettered and answered with an
    // error reply, long before the requester's 60 s are up.
    let failing = run(
        &url,
        &[
            "request",
            "--on",
            &format!("{prefix}.failing.x"),
            "--timeout",
            "60s",
            "?",
        ],
        b"",
    );
    assert_eq!(failing.status.code(), Some(1), "{failing:?}");
    harness::assert_one_error_line(
        &String::from_utf8_lossy(&failing.stderr),
        "failed: command \"sh\" exited with code 4 (error code 500)",
    );

    worker.signal("INT");
    let (status, _, stderr) = worker.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("3 handled (2 succeeded, 1 dead-lettered)"),
        "{stderr}"
    );
}

#[test]
fn exec_replies_with_stdout_nats() {
    exec_replies_with_stdout("nats");
}

#[test]
fn exec_replies_with_stdout_redis() {
    exec_replies_with_stdout("redis");
}

#[test]
fn exec_replies_with_stdout_amqp() {
    exec_replies_with_stdout("amqp");
}
