//! `switchboard listen --durable NAME`: messages sent while no listener of
//! NAME runs are kept, `--count N` acknowledges exactly N and leaves the rest
//! for the next run (at once: what a run fetched and did not print is handed
//! back when it ends), and `--format json` shows the delivery count. On NATS
//! (JetStream), Redis (Streams) and RabbitMQ (durable queues), with the same
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::io::Read as _;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use harness::{broker_url, capabilities, remove_durable, run, send, unique, Listener, PATIENCE};

fn listener(url: &str, args: &[&str]) -> Listener {
    Listener::start(url, args).unwrap_or_else(|(status, stderr)| {
        panic!("listen {args:?} exited with {status} before getting ready: {stderr}")
    })
}

#[test]
fn durable_listen_keeps_what_was_sent_meanwhile_on_nats() {
    if let Some(url) = broker_url("nats", "durable_listen") {
        keeps_what_was_sent_meanwhile(&url);
    }
}

/// `switchboard send` is unchanged: its plain publishes are stored for the
/// durable consumer on Redis too.
#[test]
fn durable_listen_keeps_what_was_sent_meanwhile_on_redis() {
    if let Some(url) = broker_url("redis", "durable_listen") {
        keeps_what_was_sent_meanwhile(&url);
    }
}

#[test]
fn durable_listen_keeps_what_was_sent_meanwhile_on_amqp() {
    if let Some(url) = broker_url("amqp", "durable_listen") {
        keeps_what_was_sent_meanwhile(&url);
    }
}

fn keeps_what_was_sent_meanwhile(url: &str) {
    let url = url.to_string();
    let prefix = unique("durable");
    let pattern = format!("{prefix}.>");
    let subject = format!("{prefix}.alert");
    let name = prefix.replace('.', "-");
    // The first run creates the consumer.
    let first = listener(
        &url,
        &["--on", &pattern, "--durable", &name, "--count", "1"],
    );
    send(&url, &["--on", &subject, "first"], b"");
    assert_eq!(first.lines(1), [format!("[{subject}] first")]);
    let (status, stderr) = first.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("as durable consumer '{name}'")),
        "{stderr}"
    );
    // A server that keeps durable messages in memory only (the shared Redis
    // runs without `appendonly yes`) is said to lose them on a restart.
    assert_eq!(
        stderr.contains("so a restart of the server loses it"),
        !capabilities(&url).durable_storage,
        "{stderr}"
    );
    // Nobody listens while these are sent.
    for text in ["a", "b", "c"] {
        send(&url, &["--on", &subject, text], b"");
    }
    // --count 2 acknowledges exactly two and leaves the third: this run may
    // have fetched it already, and hands it back as it leaves, so the next run
    // gets it at once (well within PATIENCE, 20 s), not after the 60 s ack wait.
    let second = listener(
        &url,
        &[
            "--on",
            &pattern,
            "--durable",
            &name,
            "--count",
            "2",
            "--format",
            "json",
            "--ack-wait",
            "60s",
        ],
    );
    let lines = second.lines(2);
    let (status, stderr) = second.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    let payloads: Vec<(String, u64)> = lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["payload"].as_str().unwrap().to_string(),
                value["delivery_count"].as_u64().expect("delivery_count"),
            )
        })
        .collect();
    assert_eq!(payloads, [("a".to_string(), 1), ("b".to_string(), 1)]);
    // Same settings as the run before (a run's --ack-wait updates the consumer).
    let third = listener(
        &url,
        &[
            "--on",
            &pattern,
            "--durable",
            &name,
            "--count",
            "1",
            "--ack-wait",
            "60s",
        ],
    );
    assert_eq!(third.lines(1), [format!("[{subject}] c")]);
    let (status, stderr) = third.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    // `remove-durable` deletes the consumer with what was kept for it: a
    // message stored for it is not delivered to the consumer made again
    // under the same name.
    send(&url, &["--on", &subject, "kept"], b"");
    let removed = run(&url, &["remove-durable", "--on", &pattern, &name], b"");
    let stderr = String::from_utf8_lossy(&removed.stderr);
    assert!(removed.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("durable consumer '{name}' over '{pattern}' at")),
        "{stderr}"
    );
    let again = listener(
        &url,
        &["--on", &pattern, "--durable", &name, "--count", "1"],
    );
    send(&url, &["--on", &subject, "after"], b"");
    assert_eq!(again.lines(1), [format!("[{subject}] after")]);
    let (status, stderr) = again.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    remove_durable(&url, &pattern, &name);
}

/// A listener still running as NAME when `remove-durable` removes NAME
/// stops, exit 1, on every broker: on RabbitMQ it took the broker's cancel
/// for a lost channel and declared the queue again, so the retired consumer
/// came back and went on storing every matching message.
fn a_running_listener_stops_when_its_consumer_is_removed(url: &str) {
    let prefix = unique("removed");
    let pattern = format!("{prefix}.>");
    let name = prefix.replace('.', "-");
    let running = listener(url, &["--on", &pattern, "--durable", &name]);
    let removed = run(url, &["remove-durable", "--on", &pattern, &name], b"");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let (status, stderr) = running.wait(PATIENCE);
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Nothing declared it again behind the operator's back.
    let probe = format!("{prefix}-probe");
    send(url, &["--on", &format!("{prefix}.x"), "after"], b"");
    let again = listener(url, &["--on", &pattern, "--durable", &name, "--count", "1"]);
    send(url, &["--on", &format!("{prefix}.x"), &probe], b"");
    assert_eq!(again.lines(1), [format!("[{prefix}.x] {probe}")]);
    let (status, stderr) = again.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    remove_durable(url, &pattern, &name);
}

#[test]
fn a_running_listener_stops_when_its_consumer_is_removed_on_nats() {
    if let Some(url) = broker_url("nats", "durable_listen_removed") {
        a_running_listener_stops_when_its_consumer_is_removed(&url);
    }
}

#[test]
fn a_running_listener_stops_when_its_consumer_is_removed_on_redis() {
    if let Some(url) = broker_url("redis", "durable_listen_removed") {
        a_running_listener_stops_when_its_consumer_is_removed(&url);
    }
}

#[test]
fn a_running_listener_stops_when_its_consumer_is_removed_on_amqp() {
    if let Some(url) = broker_url("amqp", "durable_listen_removed") {
        a_running_listener_stops_when_its_consumer_is_removed(&url);
    }
}

/// A line `listen --durable NAME` could not write (its reader went away in
/// the middle of it) is not acknowledged but given back, with the messages
/// fetched ahead, so the next run gets them all at once; on NATS the message
/// waited out the 30 s ack wait. The line is longer than a pipe holds, so the
/// write is still under way when the test closes the pipe: nothing else here
/// decides whether the message was taken before or after the reader left.
fn an_unwritten_message_comes_back_at_once(url: &str) {
    let prefix = unique("unwritten");
    let pattern = format!("{prefix}.>");
    let subject = format!("{prefix}.x");
    let name = prefix.replace('.', "-");
    let created = listener(url, &["--on", &pattern, "--durable", &name, "--count", "1"]);
    send(url, &["--on", &subject, "0"], b"");
    assert_eq!(created.lines(1).len(), 1);
    assert!(created.wait(PATIENCE).0.success());
    // 100 kB: more than a pipe's 64 KiB, less than any broker's limit.
    let filler = "x".repeat(100_000);
    send(
        url,
        &[
            "--on",
            &subject,
            "--count",
            "5",
            &format!("m {{{{Count}}}} {filler}"),
        ],
        b"",
    );
    let mut child = harness::switchboard()
        .args([
            "--broker",
            url,
            "listen",
            "--on",
            &pattern,
            "--durable",
            &name,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (started, start) = mpsc::channel();
    std::thread::spawn(move || {
        let mut begun = [0u8; 1000];
        let read = stdout.read_exact(&mut begun).map(|()| begun.to_vec());
        // Closing the pipe now, with the line only begun, as `head -c` would.
        drop(stdout);
        let _ = started.send(read);
    });
    let Ok(Ok(begun)) = start.recv_timeout(PATIENCE) else {
        let output = harness::wait_output(child, Duration::ZERO);
        panic!(
            "listen printed nothing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    assert!(begun.starts_with(format!("[{subject}] m 1 x").as_bytes()));
    let output = harness::wait_output(child, PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a closed stdout should exit 0: {stderr}"
    );
    // Well within the 30 s ack wait: all five, the first one again.
    let rest = listener(url, &["--on", &pattern, "--durable", &name, "--count", "5"]);
    let mut lines: Vec<String> = rest
        .lines(5)
        .iter()
        .map(|line| line.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    let expected: Vec<String> = (1..=5).map(|n| format!("[{subject}] m {n}")).collect();
    assert_eq!(lines, expected);
    assert!(rest.wait(PATIENCE).0.success());
    remove_durable(url, &pattern, &name);
}

#[test]
fn an_unwritten_message_comes_back_at_once_on_nats() {
    if let Some(url) = broker_url("nats", "durable_listen_unwritten") {
        an_unwritten_message_comes_back_at_once(&url);
    }
}

#[test]
fn an_unwritten_message_comes_back_at_once_on_redis() {
    if let Some(url) = broker_url("redis", "durable_listen_unwritten") {
        an_unwritten_message_comes_back_at_once(&url);
    }
}

#[test]
fn an_unwritten_message_comes_back_at_once_on_amqp() {
    if let Some(url) = broker_url("amqp", "durable_listen_unwritten") {
        an_unwritten_message_comes_back_at_once(&url);
    }
}

/// On a broker without durable consumers, `remove-durable` is one error line.
#[test]
fn remove_durable_on_mqtt_is_one_error_line() {
    let Some(url) = broker_url("mqtt", "remove_durable_on_mqtt") else {
        return;
    };
    let output = run(&url, &["remove-durable", "--on", "a.>", "x"], b"");
    assert_eq!(output.status.code(), Some(1));
    harness::assert_one_error_line(
        &String::from_utf8_lossy(&output.stderr),
        "mqtt does not support durable subscriptions",
    );
}
