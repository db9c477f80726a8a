//! `send --count` with templates, and `listen --format json | send --format
//! json` moving a capture from one broker to another byte for byte, on NATS,
//! Redis and RabbitMQ. A broker that does not answer is skipped unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;

use harness::{assert_one_error_line, broker_url, run, send, unique, Listener};

fn listener(url: &str, args: &[&str]) -> Listener {
    Listener::start(url, args).unwrap_or_else(|(status, stderr)| {
        panic!("listen {args:?} exited with {status} before getting ready: {stderr}")
    })
}

/// `--count 3` sends three messages with {{Count}}, {{ID}} and {{Unix}}
/// filled in, in the payload and in header values.
fn templates(kind: &str) {
    let Some(url) = broker_url(kind, "templates") else {
        return;
    };
    let subject = format!("{}.tick", unique("tpl"));
    let listen = listener(
        &url,
        &["--on", &subject, "--count", "3", "--format", "json"],
    );
    send(
        &url,
        &[
            "--on",
            &subject,
            "--count",
            "3",
            "--sleep",
            "10ms",
            "-H",
            "seq={{Count}}",
            "tick {{Count}} {{ID}} {{Unix}}",
        ],
        b"",
    );
    let lines = listen.lines(3);
    let mut ids = BTreeSet::new();
    for (index, line) in lines.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let payload = value["payload"].as_str().unwrap();
        let words: Vec<&str> = payload.split(' ').collect();
        assert_eq!(words.len(), 4, "{payload}");
        assert_eq!(words[0], "tick");
        assert_eq!(words[1], (index + 1).to_string(), "{payload}");
        assert!(
            words[3].parse::<u64>().unwrap() > 1_700_000_000,
            "{payload}"
        );
        ids.insert(words[2].to_string());
        assert_eq!(value["headers"]["seq"], (index + 1).to_string(), "{line}");
    }
    assert_eq!(ids.len(), 3, "{{{{ID}}}} is unique per message: {lines:?}");
}

#[test]
fn templates_nats() {
    templates("nats");
}

#[test]
fn templates_redis() {
    templates("redis");
}

#[test]
fn templates_amqp() {
    templates("amqp");
}

/// A capture made with `listen --format json` on `from` is replayed with
/// `send --format json` to `to`, and `listen` there prints the same lines:
/// subjects, headers, UTF-8 and binary payloads intact.
fn replay(from: &str, to: &str) {
    let (Some(from_url), Some(to_url)) =
        (broker_url(from, "replay_from"), broker_url(to, "replay_to"))
    else {
        return;
    };
    let prefix = unique("replay");
    let pattern = format!("{prefix}.>");
    let capture = listener(
        &from_url,
        &["--on", &pattern, "--count", "3", "--format", "json"],
    );
    send(
        &from_url,
        &[
            "--on",
            &format!("{prefix}.a"),
            "-H",
            "k=v",
            "-H",
            "Trace=abc 1",
            "héllo ✓",
        ],
        b"",
    );
    send(
        &from_url,
        &["--on", &format!("{prefix}.b.c"), "--file", "-"],
        &[0, 159, 255, 10, 1],
    );
    send(&from_url, &["--on", &format!("{prefix}.d")], b"line\n");
    let captured = capture.lines(3);

    let replayed = listener(
        &to_url,
        &["--on", &pattern, "--count", "3", "--format", "json"],
    );
    let mut input = captured.join("\n").into_bytes();
    input.push(b'\n');
    send(&to_url, &["--format", "json"], &input);
    assert_eq!(replayed.lines(3), captured, "{from} -> {to}");
}

#[test]
fn replay_nats_to_redis() {
    replay("nats", "redis");
}

#[test]
fn replay_redis_to_amqp() {
    replay("redis", "amqp");
}

#[test]
fn replay_amqp_to_nats() {
    replay("amqp", "nats");
}

/// A line that is not a message stops `send` with one line naming the line
/// and what is wrong; nothing is sent before connecting when arguments
/// contradict each other.
#[test]
fn bad_json_lines_are_one_line() {
    let Some(url) = broker_url("nats", "bad_json_lines") else {
        return;
    };
    let subject = format!("{}.ok", unique("badjson"));
    let good = format!("{{\"subject\":\"{subject}\",\"payload\":\"x\"}}\n");
    for (line, expected) in [
        ("not json\n", "line 2 of stdin: not a JSON message"),
        (
            "[]\n",
            "line 2 of stdin: not a JSON message (not a JSON object)",
        ),
        (
            "{\"payload\":\"x\"}\n",
            "line 2 of stdin: the line has no \"subject\"",
        ),
        (
            "{\"subject\":\"a.b\",\"payload_base64\":\"%%\"}\n",
            "is not base64",
        ),
        (
            "{\"subject\":\"a.b\",\"payload\":\"x\",\"extra\":1}\n",
            "unknown field `extra`",
        ),
    ] {
        let output = run(
            &url,
            &["send", "--format", "json"],
            format!("{good}{line}").as_bytes(),
        );
        assert_eq!(output.status.code(), Some(1), "{line}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_one_error_line(&stderr, expected);
        assert!(stderr.contains("sent 1 message(s)"), "{stderr}");
    }
    // Blank lines are skipped but counted: the error names the line a user
    // finds in the file. A durable capture's `delivery_count` is no part of
    // the message and is accepted.
    let captured = format!(
        "{{\"subject\":\"{subject}\",\"headers\":{{}},\"payload\":\"y\",\"delivery_count\":2}}\n"
    );
    let output = run(
        &url,
        &["send", "--format", "json"],
        format!("{good}\n  \n{captured}\nnot json\n").as_bytes(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_one_error_line(&stderr, "line 6 of stdin: not a JSON message");
    assert!(stderr.contains("sent 2 message(s)"), "{stderr}");
    let output = run(&url, &["send", "--format", "json", "hello"], b"");
    assert_one_error_line(
        &String::from_utf8_lossy(&output.stderr),
        "leave out MESSAGE",
    );
    let output = run(&url, &["send", "hello"], b"");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a missing --on is a usage error"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("--on <SUBJECT>"));
    let output = run(&url, &["send", "--format", "text", "hello"], b"");
    assert_one_error_line(
        &String::from_utf8_lossy(&output.stderr),
        "--on SUBJECT is needed",
    );
}
