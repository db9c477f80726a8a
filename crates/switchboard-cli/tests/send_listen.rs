//! `switchboard send` and `switchboard listen` against real brokers, each test
//! run on NATS, Redis and RabbitMQ. A broker that does not answer is skipped
//! (`skipped: ...`) unless `SWITCHBOARD_REQUIRE_BROKERS=1`. URLs come from
//! `SWITCHBOARD_NATS_URL`, `SWITCHBOARD_REDIS_URL`, `SWITCHBOARD_AMQP_URL` and `SWITCHBOARD_MQTT_URL`.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{assert_one_error_line, broker_url, send, unique, Listener, PATIENCE};

fn listener(url: &str, args: &[&str]) -> Listener {
    Listener::start(url, args).unwrap_or_else(|(status, stderr)| {
        panic!("listen {args:?} exited with {status} before getting ready: {stderr}")
    })
}

fn text_with_headers(kind: &str) {
    let Some(url) = broker_url(kind, "text_with_headers") else {
        return;
    };
    let prefix = unique("text");
    let pattern = format!("{prefix}.>");
    let listen = listener(&url, &["--on", &pattern, "--count", "2"]);
    let cpu = format!("{prefix}.cpu");
    let disk = format!("{prefix}.disk.high");
    send(
        &url,
        &[
            "--on",
            &cpu,
            "-H",
            "severity=high",
            "--header",
            "host=web-1",
            "CPU at 98%",
        ],
        b"",
    );
    send(&url, &["--on", &disk, "disk full"], b"");
    assert_eq!(
        listen.lines(2),
        [
            format!("[{cpu}] CPU at 98% {{host=web-1, severity=high}}"),
            format!("[{disk}] disk full"),
        ]
    );
    let (status, stderr) = listen.wait(PATIENCE);
    assert!(status.success(), "--count 2 should exit 0: {stderr}");
    assert!(
        stderr.contains(&format!("listening on '{pattern}' at ")) && stderr.contains("Ctrl-C"),
        "{stderr}"
    );
}

fn json_and_binary(kind: &str) {
    let Some(url) = broker_url(kind, "json_and_binary") else {
        return;
    };
    let prefix = unique("json");
    let listen = listener(
        &url,
        &[
            "--on",
            &format!("{prefix}.*"),
            "--format",
            "json",
            "--count",
            "2",
        ],
    );
    let subject = format!("{prefix}.robot");
    send(
        &url,
        &[
            "--on",
            &subject,
            "-H",
            "severity=high",
            "bad \"robot\"\ndetected",
        ],
        b"",
    );
    let file = std::env::temp_dir().join(format!("{}.bin", prefix.replace('.', "-")));
    std::fs::write(&file, [0xde, 0xad, 0xbe, 0xef, b'\n']).unwrap();
    send(
        &url,
        &["--on", &subject, "--file", file.to_str().unwrap()],
        b"",
    );
    let _ = std::fs::remove_file(&file);

    let lines = listen.lines(2);
    let text: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        text,
        serde_json::json!({
            "subject": subject,
            "headers": {"severity": "high"},
            "payload": "bad \"robot\"\ndetected",
        })
    );
    let binary: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        binary,
        serde_json::json!({"subject": subject, "headers": {}, "payload_base64": "3q2+7wo="})
    );
    assert!(listen.wait(PATIENCE).0.success());
}

fn stdin_lines(kind: &str) {
    let Some(url) = broker_url(kind, "stdin_lines") else {
        return;
    };
    let subject = unique("stdin");
    let listen = listener(&url, &["--on", &subject, "--count", "6"]);
    // A final line break does not make an empty message...
    send(&url, &["--on", &subject], b"one\ntwo\n");
    // ...but an empty line in the middle is one; CRLF is a line break too.
    send(&url, &["--on", &subject], b"a\r\n\nb");
    send(&url, &["--on", &subject, "end"], b"");
    let s = &subject;
    assert_eq!(
        listen.lines(6),
        [
            format!("[{s}] one"),
            format!("[{s}] two"),
            format!("[{s}] a"),
            format!("[{s}]"),
            format!("[{s}] b"),
            format!("[{s}] end"),
        ]
    );
    assert!(listen.wait(PATIENCE).0.success());
}

fn queue_group(kind: &str) {
    let Some(url) = broker_url(kind, "queue_group") else {
        return;
    };
    let prefix = unique("group");
    let pattern = format!("{prefix}.>");
    let first = match Listener::start(&url, &["--on", &pattern, "--group", "workers"]) {
        Ok(listener) => listener,
        Err((status, stderr)) => {
            // A broker without queue groups says so in one line.
            assert!(!status.success());
            assert_one_error_line(&stderr, "does not support");
            println!("skipped: queue_group on {kind}: {}", stderr.trim());
            return;
        }
    };
    let second = listener(&url, &["--on", &pattern, "--group", "workers"]);
    let everyone = listener(&url, &["--on", &pattern, "--count", "6"]);
    let subject = format!("{prefix}.job");
    send(&url, &["--on", &subject], b"1\n2\n3\n4\n5\n6\n");

    assert_eq!(everyone.lines(6).len(), 6);
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < 6 && Instant::now() < deadline {
        for member in [&first, &second] {
            seen.extend(member.line(Duration::from_millis(20)));
        }
    }
    assert_eq!(seen.len(), 6, "the group got {seen:?}");
    // Nothing more: each message went to one member only.
    assert!(first.line(Duration::from_millis(300)).is_none());
    assert!(second.line(Duration::from_millis(10)).is_none());
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 6, "{seen:?}");
}

fn signal_unsubscribes(kind: &str, signal: &str) {
    let Some(url) = broker_url(kind, "signal_unsubscribes") else {
        return;
    };
    let subject = unique("signal");
    let listen = listener(&url, &["--on", &subject]);
    send(&url, &["--on", &subject, "before"], b"");
    assert_eq!(listen.lines(1), [format!("[{subject}] before")]);
    listen.signal(signal);
    let (status, stderr) = listen.wait(PATIENCE);
    assert!(status.success(), "SIG{signal} should exit 0: {stderr}");
    assert!(stderr.contains("unsubscribed from"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

/// `listen | head -1`: once the reader is gone, `listen` ends (exit 0)
/// without waiting for a message to write; it used to wait for a second one
/// only to learn from the failed write that `head` had ended.
fn stdout_closed(kind: &str) {
    let Some(url) = broker_url(kind, "stdout_closed") else {
        return;
    };
    let subject = unique("pipe");
    let listen = Listener::start_reading(&url, &["--on", &subject], 1).unwrap();
    send(&url, &["--on", &subject, "first"], b"");
    assert_eq!(listen.lines(1), [format!("[{subject}] first")]);
    let (status, stderr) = listen.wait(PATIENCE);
    assert!(status.success(), "a closed stdout should exit 0: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

macro_rules! on_every_broker {
    ($($kind:ident),*) => {$(
        mod $kind {
            #[test]
            fn text_with_headers() {
                super::text_with_headers(stringify!($kind));
            }
            #[test]
            fn json_and_binary() {
                super::json_and_binary(stringify!($kind));
            }
            #[test]
            fn stdin_lines() {
                super::stdin_lines(stringify!($kind));
            }
            #[test]
            fn queue_group() {
                super::queue_group(stringify!($kind));
            }
            #[test]
            fn sigint_unsubscribes() {
                super::signal_unsubscribes(stringify!($kind), "INT");
            }
            #[test]
            fn sigterm_unsubscribes() {
                super::signal_unsubscribes(stringify!($kind), "TERM");
            }
            #[test]
            fn closed_stdout_exits_quietly() {
                super::stdout_closed(stringify!($kind));
            }
        }
    )*};
}

on_every_broker!(nats, redis, amqp, mqtt);
