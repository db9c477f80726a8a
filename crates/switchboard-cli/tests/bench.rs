//! Smoke runs of `switchboard bench`: the in-memory broker always, NATS (with
//! the raw async-nats baseline) when a server answers on 127.0.0.1:4222.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn bench(args: &[&str], json: &std::path::Path) -> (std::process::Output, Vec<Value>) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env_remove("BROKER_URL")
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let document: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let runs = document["runs"].as_array().unwrap().clone();
    (output, runs)
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("switchboard-bench-{}-{name}", std::process::id()))
}

fn check_fields(run: &Value) {
    for field in [
        "broker",
        "mode",
        "size",
        "implementation",
        "messages",
        "msgs_per_s",
        "lost",
        "reordered",
        "cpu_s",
        "ratio",
        "status",
    ] {
        assert!(run.get(field).is_some(), "{field} missing in {run}");
    }
}

#[test]
fn memory_smoke_run_writes_json_without_loss() {
    let json = temp("memory.json");
    let plot = temp("memory.svg");
    let (output, runs) = bench(
        &[
            "--broker",
            "memory",
            "--mode",
            "pub,pubsub,latency",
            "--size",
            "16,128",
            "--msgs",
            "2000",
            "--duration",
            "1s",
            "--rate",
            "1000",
            "--plot",
            plot.to_str().unwrap(),
        ],
        &json,
    );
    // 3 modes x 2 sizes, switchboard only (memory has no raw client).
    assert_eq!(runs.len(), 6, "{runs:?}");
    for run in &runs {
        check_fields(run);
        assert_eq!(run["broker"], "memory");
        assert_eq!(run["implementation"], "switchboard");
        assert_eq!(run["status"], "ok", "{run}");
        assert_eq!(run["lost"], 0, "{run}");
        assert_eq!(run["reordered"], 0, "{run}");
        assert!(run["msgs_per_s"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["ratio"].is_null(), "memory has no raw baseline: {run}");
        if run["mode"] == "latency" {
            assert_eq!(run["messages"], 1000, "{run}");
            for p in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
                assert!(run[p].as_f64().unwrap() > 0.0, "{p} in {run}");
            }
            assert!(run["p50_us"].as_f64() <= run["p99_us"].as_f64());
        } else {
            assert_eq!(run["messages"], 2000, "{run}");
        }
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("msgs/s") && table.contains("memory"),
        "{table}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(plot);
}

#[test]
fn unreachable_broker_is_reported_and_others_still_run() {
    let json = temp("unreachable.json");
    let (output, runs) = bench(
        &[
            "--broker",
            "nats://127.0.0.1:1,memory",
            "--mode",
            "pub",
            "--size",
            "16",
            "--msgs",
            "1000",
        ],
        &json,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    let nats: Vec<&Value> = runs.iter().filter(|r| r["broker"] == "nats").collect();
    assert!(!nats.is_empty());
    assert!(
        nats.iter().all(|r| r["status"] == "unavailable"),
        "{nats:?}"
    );
    assert!(runs
        .iter()
        .any(|r| r["broker"] == "memory" && r["status"] == "ok"));
    let _ = std::fs::remove_file(json);
}

fn nats_answers() -> bool {
    let address: SocketAddr = "127.0.0.1:4222".parse().unwrap();
    TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

#[test]
fn nats_runs_next_to_the_raw_client() {
    if !nats_answers() {
        switchboard_conformance::skip_or_fail("no NATS server on 127.0.0.1:4222");
        return;
    }
    let json = temp("nats.json");
    let (_, runs) = bench(
        &[
            "--broker",
            "nats",
            "--mode",
            "pubsub,group,latency",
            "--size",
            "16",
            "--msgs",
            "5000",
            "--subscribers",
            "2",
            "--duration",
            "1s",
            "--rate",
            "1000",
        ],
        &json,
    );
    assert_eq!(runs.len(), 6, "{runs:?}");
    for run in &runs {
        check_fields(run);
        assert_eq!(run["status"], "ok", "{run}");
        assert_eq!(run["lost"], 0, "{run}");
    }
    for implementation in ["switchboard", "raw"] {
        assert!(runs.iter().any(|r| r["implementation"] == implementation));
    }
    // Every switchboard row is compared with its raw twin.
    for run in runs.iter().filter(|r| r["implementation"] == "switchboard") {
        assert!(run["ratio"].as_f64().unwrap() > 0.0, "{run}");
    }
    let _ = std::fs::remove_file(json);
}
