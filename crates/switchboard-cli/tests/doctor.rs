//! `switchboard doctor` on every broker: every declared capability checked
//! live holds; a broker that does not answer is one error line.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{assert_one_error_line, broker_url, run};

fn healthy(kind: &str, expected: &[&str], skipped: &[&str]) {
    let Some(url) = broker_url(kind, "doctor") else {
        return;
    };
    let output = run(&url, &["doctor"], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for check in expected {
        assert!(
            stdout.contains(&format!("ok     {check}")),
            "{check}: {stdout}"
        );
    }
    for check in skipped {
        assert!(
            stdout.contains(&format!("skip   {check}")),
            "{check}: {stdout}"
        );
    }
    assert!(stdout.contains("link       connected"), "{stdout}");
}

const ALL: &[&str] = &[
    "round trip",
    "headers",
    "wildcards",
    "queue groups",
    "max payload",
    "request/reply",
];

#[test]
fn doctor_nats() {
    healthy("nats", ALL, &[]);
}

#[test]
fn doctor_redis() {
    healthy(
        "redis",
        &[
            "round trip",
            "headers",
            "wildcards",
            "max payload",
            "request/reply",
        ],
        &["queue groups"],
    );
}

#[test]
fn doctor_amqp() {
    healthy("amqp", ALL, &[]);
}

#[test]
fn doctor_memory() {
    let output = run("memory://", &["doctor"], b"");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok     queue groups"));
}

#[test]
fn doctor_without_a_broker_is_one_line() {
    let port = switchboard_testkit::free_port();
    let output = run(&format!("nats://127.0.0.1:{port}"), &["doctor"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert_one_error_line(&String::from_utf8_lossy(&output.stderr), "cannot connect");
}
