//! Smoke runs of `switchboard bench`, the binary: the subcommand reaches
//! `switchboard_bench::run` with its flags and the global `--broker`, prints the
//! table and warnings, writes the files, and turns failures into one `error:`
//! line and a non-zero exit. What the bench measures is tested in the
//! `switchboard-bench` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env_remove("BROKER_URL")
        .env_remove("RUST_LOG")
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("switchboard-bench-{}-{name}", std::process::id()))
}

#[test]
fn bench_prints_the_table_warns_once_and_writes_json_and_svg() {
    let json = temp("smoke.json");
    let plot = temp("smoke.svg");
    let output = bench(&[
        "--broker",
        "nats://bob:hunter2@127.0.0.1:1,memory",
        "--mode",
        "pub,latency",
        "--size",
        "16",
        "--msgs",
        "1000",
        "--duration",
        "1s",
        "--rate",
        "1000",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One warning for the broker that does not answer, its password redacted.
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(stderr.contains("nats://bob:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stdout.starts_with("broker"), "{stdout}");
    assert!(stdout.contains("msgs/s"), "{stdout}");
    for row in ["memory  pub", "memory  latency", "nats    pub"] {
        assert!(stdout.contains(row), "no {row:?} row in {stdout}");
    }

    let document: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = document["runs"].as_array().unwrap();
    // memory: 2 modes; nats: 2 modes x (switchboard, raw), unavailable.
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(document["command"].as_str().unwrap().contains("bench"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg"), "not an SVG");
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(plot);
}

#[test]
fn bench_failures_are_one_error_line_and_a_non_zero_exit() {
    let cases: [(&[&str], &str); 2] = [
        (
            &["--broker", "memory", "--size", "8"],
            "error: --size 8 is too small: every message carries a 16-byte header (sequence number and send time)\n",
        ),
        (
            &[
                "--broker",
                "nats://127.0.0.1:1",
                "--mode",
                "pub",
                "--size",
                "16",
                "--msgs",
                "100",
            ],
            "error: no run succeeded\n",
        ),
    ];
    for (args, last_line) in cases {
        let output = bench(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.ends_with(last_line), "{args:?}: {stderr}");
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(errors, 1, "{args:?}: {stderr}");
    }
}
