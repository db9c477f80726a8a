//! Signals against the real binary: `send` interrupted mid-stream, `listen` and
//! `worker` stopped while their stdout pipe is full, a second Ctrl-C on the
//! worker with `exec` commands running. Shared brokers, unique subjects; each
//! bound is a generous "does not hang", never a speed check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::io::Write as _;
use std::time::{Duration, Instant};

use harness::{broker_url, unique, wait_for_file, Listener, Process, Stdout, TempDir, PATIENCE};
use switchboard::Message;

/// How long a stopped command may take to exit before the test calls it a hang.
const EXIT_PATIENCE: Duration = Duration::from_secs(15);

/// Publishes `count` messages of `size` bytes on `subject` and flushes.
fn publish_many(url: &str, subject: &str, count: usize, size: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = switchboard::connect(url).await.unwrap();
        let payload = "x".repeat(size);
        for _ in 0..count {
            broker
                .publish(Message::new(subject, payload.clone()).unwrap())
                .await
                .unwrap();
        }
        broker.flush().await.unwrap();
        broker.close().await.unwrap();
    });
}

fn send_is_interrupted(kind: &str, signal: &str, code: i32) {
    let Some(url) = broker_url(kind, "send_is_interrupted") else {
        return;
    };
    let subject = unique("sendsig");
    let listen = Listener::start(&url, &["--on", &subject]).unwrap();
    let mut send = Process::start(&["--broker", &url, "send", "--on", &subject], Stdout::Read);
    let mut stdin = send.stdin();
    stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    stdin.flush().unwrap();
    // Sent and received: `send` is now waiting for the next line.
    assert_eq!(listen.lines(3).len(), 3);
    send.signal(signal);
    let (status, _stdout, stderr) = send.wait(EXIT_PATIENCE);
    drop(stdin);
    assert_eq!(status.code(), Some(code), "SIG{signal}: {status}; {stderr}");
    assert!(stderr.contains("sent 3 message(s)"), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn send_stops_on_sigint_after_flushing_what_it_sent() {
    send_is_interrupted("nats", "INT", 130);
}

#[test]
fn send_stops_on_sigterm_after_flushing_what_it_sent() {
    send_is_interrupted("nats", "TERM", 143);
}

#[test]
fn send_stops_on_sigint_on_amqp() {
    send_is_interrupted("amqp", "INT", 130);
}

#[test]
fn listen_with_a_full_stdout_pipe_stops_on_sigterm() {
    let Some(url) = broker_url("nats", "listen_with_a_full_stdout_pipe") else {
        return;
    };
    let subject = unique("fullpipe");
    let listen = Process::start(
        &["--broker", &url, "listen", "--on", &subject],
        Stdout::Unread,
    );
    listen.wait_stderr("listening on", PATIENCE);
    // Far more than a pipe holds (64 KiB on Linux): the listener blocks writing.
    publish_many(&url, &subject, 4000, 200);
    std::thread::sleep(Duration::from_millis(500));
    listen.signal("TERM");
    let (status, _stdout, stderr) = listen.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("caught SIGTERM"), "{stderr}");
    assert!(stderr.contains("after printing"), "{stderr}");
}

#[test]
fn worker_with_a_full_stdout_pipe_stops_within_its_grace_period() {
    let Some(url) = broker_url("nats", "worker_with_a_full_stdout_pipe") else {
        return;
    };
    let subject = unique("wfullpipe");
    let dir = TempDir::new("wfullpipe");
    let config = dir.write(
        "reactions.toml",
        &format!("[[route]]\non = \"{subject}\"\nlog = true\nconcurrency = 4\n"),
    );
    let worker = Process::start(
        &[
            "--broker", &url, "worker", "--config", &config, "--grace", "2s",
        ],
        Stdout::Unread,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    publish_many(&url, &subject, 4000, 200);
    std::thread::sleep(Duration::from_millis(500));
    worker.signal("TERM");
    let (status, _stdout, stderr) = worker.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

/// Whether process `pid` runs (a zombie, killed and not yet reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Kills a process the test started indirectly, if the test failed before it ended.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if alive(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A worker on `url` whose one route runs `sh -c` with the script
/// `script(pid_file)` makes (which writes a pid to `pid_file`), handed one
/// message; the worker, and the pid once written (killed when the test
/// ends, should it outlive the test).
fn worker_running(
    url: &str,
    name: &str,
    script: fn(&std::path::Path) -> String,
    extra: &[&str],
) -> (Process, u32, KillOnDrop, TempDir) {
    let subject = unique(name);
    let dir = TempDir::new(name);
    let pid_file = dir.path("pid");
    let config = dir.write(
        "reactions.toml",
        &format!(
            "[[route]]\non = \"{subject}\"\nexec = [\"sh\", \"-c\", \"{}\"]\n",
            script(&pid_file)
        ),
    );
    let mut args = vec!["--broker", url, "worker", "--config", &config];
    args.extend_from_slice(extra);
    let worker = Process::start(&args, Stdout::Read);
    worker.wait_stderr("worker ready", PATIENCE);
    publish_many(url, &subject, 1, 1);
    let pid: u32 = wait_for_file(&pid_file).trim().parse().unwrap();
    let cleanup = KillOnDrop(Some(pid));
    assert!(alive(pid));
    (worker, pid, cleanup, dir)
}

/// Waits until `pid` has exited, or fails the test naming what outlived what.
fn wait_gone(pid: u32, what: &str, stderr: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) outlived switchboard; stderr:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_ctrl_c_kills_running_exec_commands_before_exiting() {
    let Some(url) = broker_url("nats", "a_second_ctrl_c_kills_exec_commands") else {
        return;
    };
    let writes_its_own_pid = |pid_file: &std::path::Path| {
        let pid_file = pid_file.display();
        format!("echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300")
    };
    let (worker, pid, _cleanup, _dir) =
        worker_running(&url, "twice", writes_its_own_pid, &["--grace", "60s"]);
    worker.signal("INT");
    worker.wait_stderr("shutting down", PATIENCE);
    assert!(alive(pid), "the first Ctrl-C lets the command finish");
    worker.signal("INT");
    let (status, _stdout, stderr) = worker.wait(EXIT_PATIENCE);
    assert_eq!(status.code(), Some(130), "{status}; {stderr}");
    wait_gone(pid, "the exec command", &stderr);
}

/// A command whose shell started a child of its own and waits for it, and
/// writes the child's pid to `pid_file` once it runs.
fn shell_with_a_child(pid_file: &std::path::Path) -> String {
    let pid_file = pid_file.display();
    format!("sleep 300 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait")
}

#[test]
fn a_sigkilled_worker_takes_its_exec_commands_and_their_children_with_it() {
    let Some(url) = broker_url("nats", "a_sigkilled_worker_takes_its_exec_commands") else {
        return;
    };
    let (worker, pid, _cleanup, _dir) = worker_running(&url, "sigkilled", shell_with_a_child, &[]);
    worker.signal("KILL");
    let (status, _stdout, stderr) = worker.wait(EXIT_PATIENCE);
    assert_eq!(status.code(), None, "{status}; {stderr}");
    wait_gone(pid, "the exec command's child", &stderr);
}

#[test]
fn a_sigkilled_reply_takes_its_running_command_with_it() {
    let Some(url) = broker_url("nats", "a_sigkilled_reply_takes_its_command") else {
        return;
    };
    let subject = unique("sigkilledreply");
    let dir = TempDir::new("sigkilledreply");
    let pid_file = dir.path("pid");
    let reply = Process::start(
        &[
            "--broker",
            &url,
            "reply",
            "--on",
            &subject,
            "--command-timeout",
            "120s",
            "--command",
            &shell_with_a_child(&pid_file),
        ],
        Stdout::Read,
    );
    reply.wait_stderr("answering", PATIENCE);
    let request = Process::start(
        &[
            "--broker",
            &url,
            "request",
            "--on",
            &subject,
            "--timeout",
            "30s",
            "ping",
        ],
        Stdout::Read,
    );
    let pid: u32 = wait_for_file(&pid_file).trim().parse().unwrap();
    let _cleanup = KillOnDrop(Some(pid));
    assert!(alive(pid));
    reply.signal("KILL");
    let (_status, _stdout, stderr) = reply.wait(EXIT_PATIENCE);
    wait_gone(pid, "the reply command's child", &stderr);
    request.signal("KILL");
    let _ = request.wait(EXIT_PATIENCE);
}
