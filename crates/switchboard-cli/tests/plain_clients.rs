//! The CLI exchanges messages with plain clients written in another language
//! (Python: nats-py, redis-py, pika), byte for byte and with native headers.
//!
//! Runs `tests/interop/plain_clients.py` against each real broker. Skipped, with a
//! printed reason, when python3 or its client libraries are missing or the broker
//! does not answer — unless `SWITCHBOARD_REQUIRE_BROKERS=1`, when that fails.
#![allow(clippy::expect_used)] // a test: panicking is how it reports failure

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use switchboard_conformance::skip_or_fail;

fn answers(host_port: &str) -> bool {
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

fn run(broker: &str, module: &str, port: u16) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/plain_clients.py");
    let has_module = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_module {
        return skip_or_fail(format!(
            "python3 with the `{module}` package is needed (pip install nats-py redis pika)"
        ));
    }
    if !answers(&format!("127.0.0.1:{port}")) {
        return skip_or_fail(format!("{broker} does not answer on 127.0.0.1:{port}"));
    }
    let output = Command::new("python3")
        .arg(&script)
        .arg(broker)
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "plain {broker} client interop failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn nats_plain_client_both_ways() {
    run("nats", "nats", 4222);
}

#[test]
fn redis_plain_client_both_ways() {
    run("redis", "redis", 6379);
}

#[test]
fn amqp_plain_client_both_ways() {
    run("amqp", "pika", 5672);
}
