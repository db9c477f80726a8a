//! Bad input fails fast with one `error: ...` line, no panic and no hang.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{assert_one_error_line, switchboard, wait_output};

/// Runs `switchboard ARGS...` with `env` set, stdin empty, for at most 20 s.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let child = switchboard()
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(20))
}

/// Runs `switchboard ARGS...` and checks it fails within a few seconds with
/// exit code `code` and, for code 1, one error line containing `expected`.
fn fails(args: &[&str], code: i32, expected: &str) -> String {
    let started = Instant::now();
    let output = run_with(args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{args:?} took {:?}",
        started.elapsed()
    );
    assert!(output.stdout.is_empty(), "{args:?} printed on stdout");
    if code == 1 {
        assert_one_error_line(&stderr, expected);
    } else {
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    stderr.into_owned()
}

// Input errors are found before connecting: the broker URL here is unreachable,
// so an attempt to connect would show in the error instead.
const UNREACHABLE: &str = "nats://127.0.0.1:1";

#[test]
fn bad_subject_is_one_line_without_connecting() {
    fails(
        &["--broker", UNREACHABLE, "send", "--on", "alerts..cpu", "x"],
        1,
        "invalid subject \"alerts..cpu\"",
    );
    fails(
        &["--broker", UNREACHABLE, "send", "--on", "alerts.*", "x"],
        1,
        "wildcard",
    );
    fails(
        &["--broker", UNREACHABLE, "send", "--on", "a b", "x"],
        1,
        "invalid subject",
    );
}

#[test]
fn bad_pattern_and_group_are_one_line_without_connecting() {
    fails(
        &["--broker", UNREACHABLE, "listen", "--on", "alerts.>.cpu"],
        1,
        "invalid pattern \"alerts.>.cpu\"",
    );
    fails(
        &["--broker", UNREACHABLE, "listen", "--on", "alerts.cp*"],
        1,
        "invalid pattern",
    );
    fails(
        &[
            "--broker",
            UNREACHABLE,
            "listen",
            "--on",
            "a",
            "--group",
            "two words",
        ],
        1,
        "invalid queue group",
    );
}

#[test]
fn bad_headers_are_one_line_without_connecting() {
    let send = |header: &str, expected: &str| {
        fails(
            &[
                "--broker",
                UNREACHABLE,
                "send",
                "--on",
                "a",
                "-H",
                header,
                "x",
            ],
            1,
            expected,
        )
    };
    send("severity", "expected NAME=VALUE");
    send("=high", "the name is empty");
    send("bad name=x", "invalid --header \"bad name=x\"");
    send("a:b=x", "visible ASCII");
}

#[test]
fn unknown_scheme_and_bad_url() {
    fails(
        &["--broker", "kafka://x", "send", "--on", "a", "x"],
        1,
        "unsupported broker \"kafka\"",
    );
    fails(
        &["--broker", "kafka://x", "listen", "--on", "a"],
        1,
        "this build supports",
    );
    fails(
        &["--broker", "nonsense", "listen", "--on", "a"],
        1,
        "invalid broker URL",
    );
}

#[test]
fn unreachable_broker_fails_fast() {
    fails(
        &["--broker", UNREACHABLE, "send", "--on", "a", "x"],
        1,
        "127.0.0.1:1",
    );
    fails(
        &["--broker", UNREACHABLE, "listen", "--on", "a"],
        1,
        "127.0.0.1:1",
    );
    fails(
        &["--broker", "redis://127.0.0.1:1", "send", "--on", "a", "x"],
        1,
        "127.0.0.1:1",
    );
    fails(
        &[
            "--broker",
            "amqp://guest:secret@127.0.0.1:1/%2f",
            "listen",
            "--on",
            "a",
        ],
        1,
        "127.0.0.1:1",
    );
}

#[test]
fn unreachable_broker_url_hides_the_password() {
    let output = wait_output(
        switchboard()
            .args([
                "--broker",
                "amqp://guest:hunter2@127.0.0.1:1/%2f",
                "send",
                "--on",
                "a",
                "x",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}

#[test]
fn usage_errors_exit_2() {
    fails(&["send", "x"], 2, "--on");
    fails(&["listen", "--on", "a", "--count", "0"], 2, "--count");
    // Accepted before: the worker waited for a message, gave it back (lost
    // on a broker that cannot redeliver) and stopped.
    fails(&["worker", "-c", "w.toml", "--count", "0"], 2, "--count");
    fails(&["listen", "--on", "a", "--format", "xml"], 2, "--format");
    fails(&["remove-durable", "--on", "a.>"], 2, "<NAME>");
    // Raised to 1s in silence before.
    fails(
        &[
            "listen",
            "--on",
            "a",
            "--durable",
            "d",
            "--ack-wait",
            "100ms",
        ],
        2,
        "it must be at least 1s",
    );
    // Accepted before: no grace at all (the file's `grace_period = "0s"` was
    // refused), every command killed at once, a flush every 1ms.
    fails(
        &["worker", "-c", "w.toml", "--grace", "0s"],
        2,
        "above zero",
    );
    fails(
        &[
            "reply",
            "--on",
            "a",
            "--command",
            "cat",
            "--command-timeout",
            "0s",
        ],
        2,
        "above zero",
    );
    fails(
        &[
            "bridge", "--from", "nats", "--to", "redis", "--on", "a.>", "--flush", "0s",
        ],
        2,
        "above zero",
    );
    // A panic before (exit 101): a timer cannot tick every 0s.
    for zero in ["0s", "0ms"] {
        fails(
            &[
                "bridge", "--from", "nats", "--to", "redis", "--on", "a.>", "--report", zero,
            ],
            2,
            "--report",
        );
    }
    fails(
        &["send", "--on", "a", "--file", "f", "message"],
        2,
        "cannot be used with",
    );
}

#[test]
fn missing_file_is_one_line_without_connecting() {
    fails(
        &[
            "--broker",
            UNREACHABLE,
            "send",
            "--on",
            "a",
            "--file",
            "/nonexistent/switchboard-test",
        ],
        1,
        "cannot read /nonexistent/switchboard-test",
    );
}

/// The same rule on every broker: an unknown query key or a `%` that is not
/// a percent-escape is one line naming it, before anything is sent.
#[test]
fn unknown_url_keys_and_bad_escapes_are_one_line_on_every_broker() {
    for broker in [
        "nats://127.0.0.1:1?foo=1",
        "redis://127.0.0.1:1?foo=1",
        "amqp://guest:guest@127.0.0.1:1/%2f?foo=1",
        "memory://?foo=1",
    ] {
        fails(
            &["--broker", broker, "send", "--on", "a", "x"],
            1,
            "unknown parameter `foo`",
        );
    }
    for (broker, escape) in [
        ("amqp://guest:guest@127.0.0.1:1/%zz", "`%zz`"),
        // A password's text is never quoted, only where its `%` is.
        (
            "amqp://guest:p%zzw@127.0.0.1:1/%2f",
            "password has a `%` at character 2",
        ),
        (
            "redis://:p%zzw@127.0.0.1:1",
            "password has a `%` at character 2",
        ),
        (
            "nats://u:p%zzw@127.0.0.1:1",
            "password has a `%` at character 2",
        ),
        ("nats://127.0.0.1:1?name=%zz", "a `%` at character 1"),
    ] {
        let stderr = fails(&["--broker", broker, "listen", "--on", "a"], 1, escape);
        if broker.contains("p%zzw") {
            assert!(!stderr.contains("zz"), "{stderr}");
        }
    }
    // Durations have units on every broker.
    for broker in [
        "nats://127.0.0.1:1?connect_timeout=5",
        "redis://127.0.0.1:1?connect_timeout=5",
        "amqp://127.0.0.1:1?connect_timeout=5",
    ] {
        fails(
            &["--broker", broker, "send", "--on", "a", "x"],
            1,
            "`connect_timeout=5` must be a duration",
        );
    }
}

/// A reader that went away before the result was printed (`| true`, `| head`)
/// ends a command normally, as it does `listen`: `doctor`, `bench` and
/// `completions` exited 101 with a panic ("failed printing to stdout").
#[test]
fn a_closed_stdout_is_no_panic() {
    for args in [
        &["--broker", "memory", "doctor"][..],
        &[
            "--broker", "memory", "bench", "--mode", "pub", "--msgs", "1000", "--no-raw",
        ],
        &["completions", "bash"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = switchboard()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_output(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// A subscription capacity past what tokio's channels hold (2^61 - 1) is one
/// error line naming the range: it was a panic (exit 101) on NATS, MQTT and
/// the in-memory broker.
#[test]
fn a_capacity_too_large_is_one_error_line() {
    for url in [
        "nats://127.0.0.1:4222?capacity=18446744073709551615",
        "mqtt://127.0.0.1:1883?capacity=2305843009213693952",
        "memory://?capacity=2305843009213693952",
        "redis://127.0.0.1:6379?capacity=2305843009213693952",
    ] {
        fails(
            &["--broker", url, "send", "--on", "a.b", "x"],
            1,
            "must be a whole number from 1 to 2305843009213693951",
        );
    }
}

/// Sending where the user may not publish: one line saying how many of its
/// messages the broker took and that it refused the rest, exit 1. It said
/// whether they had reached the broker was unknown.
#[test]
fn sending_where_the_user_may_not_is_refused_counted() {
    let auth = switchboard_testkit::NatsAuth::new();
    let config = auth.write(
        "refusing.conf",
        r#"authorization { users = [ { user: lim, password: lpw, permissions: { publish: ["allowed.>", "_INBOX.>"], subscribe: ["_INBOX.>"] } } ] }"#,
    );
    let Some(server) =
        switchboard_testkit::NatsServer::start(&["-c", &config.display().to_string()])
    else {
        return;
    };
    let url = server.url().replacen("nats://", "nats://lim:lpw@", 1);
    let output = harness::run(&url, &["send", "--on", "secret.x"], b"one\ntwo\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_one_error_line(&stderr, "the broker took 0 of 2 message(s)");
    assert!(stderr.contains("refused 2 message(s)"), "{stderr}");
    assert!(stderr.contains("\"secret.x\""), "{stderr}");
    assert!(!stderr.contains("lpw"), "{stderr}");
}

/// `BROKER_URL=` (set, empty) is unset: the default broker, as 12-factor
/// setups expect. It was an error about the URL ` `, not naming BROKER_URL.
#[test]
fn an_empty_broker_url_counts_as_unset() {
    let Some(_) = harness::broker_url("nats", "an_empty_broker_url_counts_as_unset") else {
        return;
    };
    let output = run_with(
        &["send", "--on", "sbtest.empty_env", "hi"],
        &[("BROKER_URL", "")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
}
