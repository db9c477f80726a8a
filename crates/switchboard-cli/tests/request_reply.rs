//! `switchboard request` and `switchboard reply` against real brokers, each
//! test run on NATS, Redis and RabbitMQ (plain clients in another language
//! are in `plain_clients.rs`). A broker that does not answer is skipped
//! unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{
    assert_one_error_line, broker_url, run, unique, wait_for_file, Process, Stdout, TempDir,
    PATIENCE,
};
use switchboard::Message;

/// Starts `switchboard reply ARGS...` and waits until it answers requests.
fn replier(url: &str, args: &[&str]) -> Process {
    let mut full = vec!["--broker", url, "reply"];
    full.extend_from_slice(args);
    let process = Process::start(&full, Stdout::Read);
    process.wait_stderr("answering requests on", PATIENCE);
    process
}

/// A command's reply: stdin is the request, SWITCHBOARD_SUBJECT its subject;
/// a failing command gets the requester an error reply, one line saying how
/// it failed (not what the command was), long before its 60 s timeout (the
/// harness gives up after 20 s); the replier counts only what it answered.
fn command_replies(kind: &str) {
    let Some(url) = broker_url(kind, "command_replies") else {
        return;
    };
    let prefix = unique("rr");
    let pattern = format!("{prefix}.>");
    let answering = replier(
        &url,
        &[
            "--on",
            &pattern,
            "--count",
            "1",
            "--command",
            r#"body=$(cat); test "$body" = fail && exit 3; printf '%s:%s' "$SWITCHBOARD_SUBJECT" "$body" | tr a-z A-Z"#,
        ],
    );
    let failing = run(
        &url,
        &[
            "request",
            "--on",
            &format!("{prefix}.x"),
            "--timeout",
            "60s",
            "fail",
        ],
        b"",
    );
    assert_eq!(failing.status.code(), Some(1), "{failing:?}");
    let refused = String::from_utf8_lossy(&failing.stderr);
    assert_one_error_line(
        &refused,
        "failed: the command failed (exit status: 3) (error code 500)",
    );
    assert!(!refused.contains("SWITCHBOARD_SUBJECT"), "{refused}");

    let subject = format!("{prefix}.robots");
    let asked = run(&url, &["request", "--on", &subject, "t-800?"], b"");
    assert!(asked.status.success(), "{asked:?}");
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout),
        format!("[{subject}] {}:T-800?\n", subject.to_uppercase())
    );
    let (status, _, stderr) = answering.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("failed (exit status: 3)"), "{stderr}");
    assert!(stderr.contains("an error reply was sent"), "{stderr}");
    assert!(stderr.contains("answered 1 request(s)"), "{stderr}");
}

#[test]
fn command_replies_nats() {
    command_replies("nats");
}

#[test]
fn command_replies_redis() {
    command_replies("redis");
}

#[test]
fn command_replies_amqp() {
    command_replies("amqp");
}

/// A request larger than a pipe holds (1 MiB less room for the subject and
/// headers: NATS's max_payload) is answered by `--command cat` byte for byte:
/// the command's stdin is written while its stdout is read, so `cat` never
/// blocks on a full stdout pipe while the replier blocks on its full stdin.
#[test]
fn a_command_answers_a_request_larger_than_a_pipe() {
    let Some(url) = broker_url("nats", "a_command_answers_a_large_request") else {
        return;
    };
    let subject = format!("{}.big", unique("rr"));
    let answering = replier(
        &url,
        &[
            "--on",
            &subject,
            "--count",
            "1",
            "--command",
            "cat",
            "--command-timeout",
            "10s",
        ],
    );
    let payload: Vec<u8> = (0..1024 * 1024 - 4096).map(|i| (i % 251) as u8).collect();
    let request = Message::new(subject.as_str(), payload.clone()).unwrap();
    let reply = harness::request(&url, request, Duration::from_secs(15));
    let reply = reply.unwrap_or_else(|error| panic!("{error}\n{}", clipped(&answering.stderr())));
    assert_eq!(reply.payload().len(), payload.len());
    assert!(
        reply.payload().as_ref() == payload.as_slice(),
        "not the request's bytes"
    );
    let (status, _, stderr) = answering.wait(PATIENCE);
    let stderr = clipped(&stderr);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("answered 1 request(s)"), "{stderr}");
}

/// `text` with each line cut to 300 characters: a warning about a large
/// request shows all its payload.
fn clipped(text: &str) -> String {
    text.lines()
        .map(|line| line.chars().take(300).collect::<String>() + "\n")
        .collect()
}

/// The pids of the running processes whose arguments are exactly `argv` (a
/// zombie has none, so a killed process not yet reaped is not among them).
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (cmdline == wanted).then_some(pid)
        })
        .collect()
}

/// Waits up to 10s for every process running `argv` to be gone; kills those
/// left (so a failing test leaves none behind) and fails the test.
fn assert_gone(argv: &[&str], context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes(argv);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("{argv:?} still runs (pids {left:?}) after the replier let it go\n{context}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A --command that writes a line to a file, then waits in a `sleep` with an
/// argument no other process has (`whole.<this test process's pid>`, so runs
/// of this file side by side never share one), then prints.
struct Sleeper {
    _dir: TempDir,
    started: std::path::PathBuf,
    argv: [String; 2],
    command: String,
}

impl Sleeper {
    fn new(tag: &str, whole: u32) -> Sleeper {
        let dir = TempDir::new(tag);
        let started = dir.path("started");
        let argv = [
            "sleep".to_string(),
            format!("{whole}.{}", std::process::id()),
        ];
        let command = format!(
            "echo started > {}; {} {}; echo hi",
            started.display(),
            argv[0],
            argv[1]
        );
        Sleeper {
            _dir: dir,
            started,
            argv,
            command,
        }
    }

    /// Fails the test unless its `sleep` is gone within 10s.
    fn assert_gone(&self, context: &str) {
        assert_gone(&[&self.argv[0], &self.argv[1]], context);
    }
}

/// A command still running after --command-timeout is killed with what it
/// started (its process group): the shell's `sleep` does not outlive it.
#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let Some(url) = broker_url("nats", "a_command_past_its_timeout_is_killed") else {
        return;
    };
    let subject = format!("{}.slow", unique("rr"));
    let sleeper = Sleeper::new("rr-timeout", 37);
    let answering = replier(
        &url,
        &[
            "--on",
            &subject,
            "--count",
            "1",
            "--command",
            &sleeper.command,
            "--command-timeout",
            "2s",
        ],
    );
    let asked = run(
        &url,
        &["request", "--on", &subject, "--timeout", "15s", "x"],
        b"",
    );
    assert_eq!(asked.status.code(), Some(1), "{asked:?}");
    // The requester is told why, without waiting out its 15 s.
    assert_one_error_line(
        &String::from_utf8_lossy(&asked.stderr),
        "the command was still running after 2s; it was killed (error code 500)",
    );
    wait_for_file(&sleeper.started);
    answering.wait_stderr("was still running after 2s", PATIENCE);
    sleeper.assert_gone(&answering.stderr());
}

/// Ctrl-C while a command runs: the replier exits 130 and the command's
/// process group goes with it.
#[test]
fn ctrl_c_kills_a_running_command_with_its_children() {
    ctrl_c_mid_request_kills_the_command_and_tells_the_requester("nats");
}

#[test]
fn ctrl_c_mid_request_tells_the_requester_on_amqp() {
    ctrl_c_mid_request_kills_the_command_and_tells_the_requester("amqp");
}

/// The request a signal interrupted gets an error reply at once (it waited
/// out its timeout), and RabbitMQ's delivery is settled, not dropped.
fn ctrl_c_mid_request_kills_the_command_and_tells_the_requester(kind: &str) {
    let Some(url) = broker_url(kind, "ctrl_c_kills_a_running_command") else {
        return;
    };
    let subject = format!("{}.interrupted", unique("rr"));
    let sleeper = Sleeper::new(&format!("rr-interrupted-{kind}"), 38);
    let answering = replier(&url, &["--on", &subject, "--command", &sleeper.command]);
    let asking = {
        let url = url.clone();
        let subject = subject.clone();
        std::thread::spawn(move || {
            run(
                &url,
                &["request", "--on", &subject, "--timeout", "60s", "x"],
                b"",
            )
        })
    };
    wait_for_file(&sleeper.started);
    answering.signal("INT");
    let (status, _, stderr) = answering.wait(PATIENCE);
    assert_eq!(status.code(), Some(130), "{stderr}");
    sleeper.assert_gone(&stderr);
    assert!(stderr.contains("told the requester"), "{stderr}");
    assert!(!stderr.contains("without ack"), "{stderr}");
    let asked = asking.join().unwrap();
    assert_eq!(asked.status.code(), Some(1), "{asked:?}");
    let said = String::from_utf8_lossy(&asked.stderr);
    assert!(
        said.contains("the replier stopped (Ctrl-C) before answering"),
        "{said}"
    );
}

/// Nobody subscribed: the request fails at once (well within its timeout),
/// one line naming the subject and how to answer it.
fn no_responders_fail_at_once(kind: &str) {
    let Some(url) = broker_url(kind, "no_responders_fail_at_once") else {
        return;
    };
    let subject = format!("{}.nobody", unique("rr"));
    let started = Instant::now();
    let output = run(
        &url,
        &["request", "--on", &subject, "--timeout", "30s", "anyone?"],
        b"",
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited for the timeout"
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_one_error_line(&stderr, "no responders");
    assert!(
        stderr.contains(&format!("switchboard reply --on {subject}")),
        "{stderr}"
    );
}

#[test]
fn no_responders_fail_at_once_nats() {
    no_responders_fail_at_once("nats");
}

#[test]
fn no_responders_fail_at_once_redis() {
    no_responders_fail_at_once("redis");
}

#[test]
fn no_responders_fail_at_once_amqp() {
    no_responders_fail_at_once("amqp");
}

/// A published (not requested) message is skipped with a warning and not
/// counted; SIGTERM stops the replier with 143.
#[test]
fn plain_messages_are_skipped_and_signals_stop_the_replier() {
    let Some(url) = broker_url("nats", "plain_messages_are_skipped") else {
        return;
    };
    let subject = format!("{}.plain", unique("rr"));
    let answering = replier(&url, &["--on", &subject, "pong"]);
    let sent = run(&url, &["send", "--on", &subject, "just news"], b"");
    assert!(sent.status.success(), "{sent:?}");
    answering.wait_stderr("it was published, not sent as a request", PATIENCE);
    answering.signal("TERM");
    let (status, _, stderr) = answering.wait(PATIENCE);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("answered 0 request(s)"), "{stderr}");
}

/// Bad input is one line and exit 2 (clap) or 1, before connecting.
#[test]
fn bad_arguments_are_one_line() {
    let url = "nats://127.0.0.1:1";
    let output = run(
        url,
        &["request", "--on", "a.b", "--timeout", "soon", "x"],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("write e.g. 500ms, 2s or 1m"));
    let output = run(url, &["request", "--on", "a.*", "x"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert_one_error_line(&String::from_utf8_lossy(&output.stderr), "a.*");
    let output = run(url, &["reply", "--on", "a.b"], b"");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a reply needs TEXT, --echo or --command"
    );
}

/// A reply larger than the broker carries (2 MB against NATS's 1 MiB) is
/// refused for its size, and the requester gets an error reply saying so at
/// once instead of waiting out its 60 s timeout.
#[test]
fn a_reply_too_large_to_send_becomes_an_error_reply() {
    let Some(url) = broker_url("nats", "a_reply_too_large_to_send") else {
        return;
    };
    let subject = format!("{}.huge", unique("rr"));
    let answering = replier(
        &url,
        &["--on", &subject, "--command", "head -c 2000000 /dev/zero"],
    );
    let asked = run(
        &url,
        &["request", "--on", &subject, "--timeout", "60s", "x"],
        b"",
    );
    assert_eq!(asked.status.code(), Some(1), "{asked:?}");
    assert_one_error_line(
        &String::from_utf8_lossy(&asked.stderr),
        "the reply could not be sent: nats: message to",
    );
    assert!(
        String::from_utf8_lossy(&asked.stderr)
            .contains("is 2000000 bytes, over the broker's limit"),
        "{asked:?}"
    );
    answering.wait_stderr("an error reply was sent instead", PATIENCE);
    answering.signal("INT");
    let _ = answering.wait(PATIENCE);
}
