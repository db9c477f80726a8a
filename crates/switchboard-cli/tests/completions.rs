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

#[test]
fn every_page_the_main_page_names_can_be_printed() {
    let main = String::from_utf8(switchboard().arg("man").output().unwrap().stdout).unwrap();
    assert!(!main.contains("switchboard\\-help(1)"), "help has no page");
    let named: Vec<String> = main
        .lines()
        .filter_map(|line| line.strip_prefix("switchboard\\-")?.strip_suffix("(1)"))
        .map(|name| name.replace("\\-", "-"))
        .collect();
    assert!(named.len() >= SUBCOMMANDS.len(), "{named:?}");
    for name in &named {
        let output = switchboard().args(["man", name]).output().unwrap();
        assert!(output.status.success(), "man {name}");
        let page = String::from_utf8(output.stdout).unwrap();
        let title = format!(".TH switchboard-{name} 1");
        assert!(
            page.contains(&title),
            "man {name}: {}",
            &page[..80.min(page.len())]
        );
    }
}

#[test]
fn man_dir_writes_every_page_and_an_unknown_page_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("switchboard-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = switchboard()
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{output:?}");
    assert!(written.contains(&"switchboard.1".to_owned()), "{written:?}");
    for subcommand in SUBCOMMANDS {
        assert!(
            written.contains(&format!("switchboard-{subcommand}.1")),
            "{subcommand} missing from {written:?}"
        );
    }
    assert!(
        !written.iter().any(|name| name.contains("help")),
        "{written:?}"
    );

    let output = switchboard().args(["man", "sned"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no man page for `sned`") && stderr.contains("send"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
