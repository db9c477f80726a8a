//! The `switchboard` command with a third-party adapter registered before
//! `switchboard_cli::main()`: `--broker echo://…` and the bare kind `echo`
//! reach it, and an unknown scheme's error lists it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn switchboard_echo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard-echo"))
        .env_remove("BROKER_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_demo_runs_through_the_echo_adapter() {
    let output = switchboard_echo(&["--broker", "echo://demo", "demo", "--interval", "0s"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("echo://demo"), "{stdout}");
    assert!(
        stdout.contains("done: 3 alerts sent, 3 received"),
        "{stdout}"
    );
}

#[test]
fn send_reaches_it_by_url_and_by_bare_kind() {
    for broker in ["echo://send", "echo"] {
        let output = switchboard_echo(&["--broker", broker, "send", "--on", "alerts.cpu", "hi"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{broker}: {stderr}");
        assert!(!stderr.contains("error"), "{broker}: {stderr}");
    }
}

#[test]
fn an_unknown_scheme_lists_the_registered_one() {
    let output = switchboard_echo(&["--broker", "kafka://h", "send", "--on", "a.b", "x"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unsupported broker \"kafka\""), "{stderr}");
    assert!(stderr.contains("echo://"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The adapter says where its URLs lead, so `bridge` sees one hub written
/// two ways (a query, a trailing slash) and refuses to loop it into itself.
#[test]
fn a_bridge_from_a_hub_to_itself_is_refused() {
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_switchboard-echo"))
        .args([
            "bridge",
            "--from",
            "echo://hub?capacity=8",
            "--to",
            "echo://hub/",
        ])
        .args(["--on", "a.>"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A bridge that was not refused runs until stopped: give it 20 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bridge.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = bridge.kill();
    let output = bridge.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("are the same broker (both reach echo://hub)"),
        "{stderr}"
    );
}
