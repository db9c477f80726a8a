//! `switchboard completions` and `switchboard man` print what the shells and
//! `man` read, with every subcommand in it.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Command;

use harness::switchboard;

const SUBCOMMANDS: &[&str] = &[
    "send", "listen", "request", "reply", "bridge", "worker", "bench", "demo",
];

#[test]
fn bash_completions_parse_and_know_every_subcommand() {
    let output = switchboard()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    for subcommand in SUBCOMMANDS {
        assert!(script.contains(subcommand), "{subcommand} missing");
    }
    assert!(script.contains("--broker"));
    let path = std::env::temp_dir().join(format!(
        "switchboard-completions-{}.bash",
        std::process::id()
    ));
    std::fs::write(&path, &script).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn zsh_and_fish_completions_are_printed() {
    for shell in ["zsh", "fish"] {
        let output = switchboard().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("bridge"),
            "{shell}"
        );
    }
    let output = switchboard()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("possible values: bash"));
}

#[test]
fn the_man_page_is_roff_with_every_subcommand() {
    let output = switchboard().arg("man").output().unwrap();
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.starts_with(".ie"), "{}", &page[..40.min(page.len())]);
    assert!(page.contains(".TH switchboard 1"));
    for subcommand in SUBCOMMANDS {
        assert!(page.contains(subcommand), "{subcommand} missing");
    }
}
