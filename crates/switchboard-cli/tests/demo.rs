//! `switchboard demo` runs the alert/reaction scenario and exits 0.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Stdio;

use harness::{broker_url, switchboard, wait_output, PATIENCE};

fn demo(broker: Option<&str>) {
    let mut command = switchboard();
    if let Some(url) = broker {
        command.arg("--broker").arg(url);
    }
    let child = command
        .args(["demo", "--interval", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, PATIENCE);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("alerting Sarah Connor").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("done: 3 alerts sent, 3 received"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn demo_runs_on_memory_by_default() {
    demo(None);
}

#[test]
fn demo_runs_on_nats() {
    if let Some(url) = broker_url("nats", "demo_runs_on_nats") {
        demo(Some(&url));
    }
}

#[test]
fn demo_output_to_a_closed_pipe_does_not_panic() {
    let mut child = switchboard()
        .args(["demo", "--interval", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = wait_output(child, PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
