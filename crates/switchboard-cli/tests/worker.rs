//! `switchboard worker` end to end: the real binary on the real NATS server
//! (`SWITCHBOARD_NATS_URL`, default `nats://127.0.0.1:4222`). Tests needing
//! NATS print `skipped: ...` when it does not answer, unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::{AnyBroker, Message, Subscription};
use switchboard_testkit::unique;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn nats_url() -> String {
    switchboard_conformance::broker_url("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222")
}

/// The NATS broker, or `None` (after printing why) when it does not answer.
async fn nats_or_skip(test: &str) -> Option<AnyBroker> {
    let url = nats_url();
    match switchboard::connect(&url).await {
        Ok(broker) => Some(broker),
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!(
                "{test}: NATS at {url} does not answer: {error}"
            ));
            None
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `switchboard worker`, killed on drop.
struct WorkerProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl WorkerProcess {
    /// Starts the worker and waits for its `worker ready` line.
    fn start(url: &str, config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--broker", url, "worker", "--config"])
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let all = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = sender.send(line);
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            text
        });
        let process = WorkerProcess {
            child,
            stderr,
            lines,
            stdout: Some(stdout),
        };
        process.wait_line("worker ready");
        process
    }

    fn wait_line(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no {needle:?} line from the worker; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit; returns its status, stdout and stderr.
    fn wait(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the worker did not exit in time; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        // Let the stderr thread read the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (status, stdout, self.stderr())
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn publish(broker: &AnyBroker, message: Message) {
    broker.publish(message).await.unwrap();
    broker.flush().await.unwrap();
}

async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .expect("no error")
        .into_message()
}

fn wait_for_file(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.contains(what) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {what:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_the_command_with_payload_and_environment() {
    let Some(broker) = nats_or_skip("exec_runs_the_command_with_payload_and_environment").await
    else {
        return;
    };
    let prefix = unique("exec");
    let dir = TempDir::new("exec");
    let out = dir.path("out.txt");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.alerts.>"
exec = ["sh", "-c", "{{ echo \"subject=$SWITCHBOARD_SUBJECT attempt=$SWITCHBOARD_ATTEMPT host=$SWITCHBOARD_HEADER_HOST trace=$SWITCHBOARD_HEADER_TRACE_ID\"; echo \"$SWITCHBOARD_HEADERS\"; cat; echo; echo said hello >&2; }} >> {out}"]
"#,
            out = out.display()
        ),
    );
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "2"]);
    for (index, host) in ["web-1", "web-2"].iter().enumerate() {
        let message = Message::new(format!("{prefix}.alerts.cpu"), format!("CPU at 9{index}%"))
            .unwrap()
            .with_header("host", *host)
            .unwrap()
            .with_header("trace-id", "t-42")
            .unwrap();
        publish(&broker, message).await;
    }
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        format!(
            "subject={prefix}.alerts.cpu attempt=1 host=web-1 trace=t-42\n\
             {{\"host\":\"web-1\",\"trace-id\":\"t-42\"}}\nCPU at 90%\n\
             subject={prefix}.alerts.cpu attempt=1 host=web-2 trace=t-42\n\
             {{\"host\":\"web-2\",\"trace-id\":\"t-42\"}}\nCPU at 91%\n"
        )
    );
    // The command's output goes to the worker's stderr with the route as prefix.
    assert!(
        stderr.contains(&format!("[{prefix}.alerts.>] said hello")),
        "{stderr}"
    );
    assert!(stderr.contains("2 handled"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_is_dead_lettered_after_n_attempts() {
    let Some(broker) = nats_or_skip("a_failing_command_is_dead_lettered_after_n_attempts").await
    else {
        return;
    };
    let prefix = unique("dlq");
    let dir = TempDir::new("dlq");
    let tries = dir.path("tries.txt");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs.*"
attempts = 3
backoff = "10ms"
dead_letter = "{prefix}.dead.{{subject}}"
exec = ["sh", "-c", "echo try $SWITCHBOARD_ATTEMPT >> {tries}; echo disk full at amqp://admin:hunter2@db:5672/ >&2; exit 3"]
"#,
            tries = tries.display()
        ),
    );
    let mut dead = broker
        .subscribe(&format!("{prefix}.dead.>").parse().unwrap())
        .await
        .unwrap();
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "1"]);
    let message = Message::new(format!("{prefix}.jobs.resize"), "img-7")
        .unwrap()
        .with_header("trace-id", "t-1")
        .unwrap();
    publish(&broker, message).await;
    let letter = next(&mut dead).await;
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(
        letter.subject().as_str(),
        format!("{prefix}.dead.{prefix}.jobs.resize")
    );
    assert_eq!(&letter.payload()[..], b"img-7");
    let headers = letter.headers();
    let original = format!("{prefix}.jobs.resize");
    assert_eq!(
        headers.get("switchboard-original-subject"),
        Some(original.as_str())
    );
    assert_eq!(headers.get("switchboard-attempts"), Some("3"));
    assert_eq!(headers.get("switchboard-permanent"), Some("false"));
    assert_eq!(
        headers.get("switchboard-error"),
        Some("command \"sh\" exited with code 3: disk full at amqp://admin:***@db:5672/")
    );
    // Neither in the dead letter nor in the worker's own log lines (the
    // command's stderr is passed on as the command wrote it).
    assert!(
        stderr
            .lines()
            .filter(|line| line.contains("WARN"))
            .all(|line| !line.contains("hunter2")),
        "{stderr}"
    );
    assert_eq!(headers.get("trace-id"), Some("t-1"));
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "try 1\ntry 2\ntry 3\n"
    );
    assert!(stderr.contains("1 dead-lettered"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_gone_after_start_is_dead_lettered_without_retries() {
    let Some(broker) =
        nats_or_skip("a_program_gone_after_start_is_dead_lettered_without_retries").await
    else {
        return;
    };
    let prefix = unique("noprog");
    let dir = TempDir::new("noprog");
    // It exists when the config is checked (a missing program is refused
    // then), and is gone when the message comes.
    let program = dir.write("gone.sh", "#!/bin/sh\nexit 0\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs.*"
attempts = 5
backoff = "10ms"
dead_letter = "{prefix}.dead.{{subject}}"
exec = ["{program}"]
"#,
            program = program.display()
        ),
    );
    let mut dead = broker
        .subscribe(&format!("{prefix}.dead.>").parse().unwrap())
        .await
        .unwrap();
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "1"]);
    std::fs::remove_file(&program).unwrap();
    publish(
        &broker,
        Message::new(format!("{prefix}.jobs.a"), "x").unwrap(),
    )
    .await;
    let letter = next(&mut dead).await;
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    // It can never start, so it is not tried 5 times.
    assert_eq!(letter.headers().get("switchboard-attempts"), Some("1"));
    assert_eq!(letter.headers().get("switchboard-permanent"), Some("true"));
    let error = letter.headers().get("switchboard-error").unwrap_or("");
    assert!(
        error.contains(&format!("cannot run {:?}", program.display().to_string())),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn count_exits_zero_after_log_and_publish_actions() {
    let Some(broker) = nats_or_skip("count_exits_zero_after_log_and_publish_actions").await else {
        return;
    };
    let prefix = unique("count");
    let dir = TempDir::new("count");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.log.>"
log = true

[[route]]
on = "{prefix}.fwd.*"
publish = "{prefix}.audit.{{subject}}"
"#
        ),
    );
    let mut audit = broker
        .subscribe(&format!("{prefix}.audit.>").parse().unwrap())
        .await
        .unwrap();
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "2"]);
    let logged = Message::new(format!("{prefix}.log.cpu"), "CPU at 98%")
        .unwrap()
        .with_header("host", "web-1")
        .unwrap();
    publish(&broker, logged).await;
    let forwarded = Message::new(format!("{prefix}.fwd.x"), "forward me")
        .unwrap()
        .with_header("k", "v")
        .unwrap();
    publish(&broker, forwarded).await;
    let copy = next(&mut audit).await;
    assert_eq!(
        copy.subject().as_str(),
        format!("{prefix}.audit.{prefix}.fwd.x")
    );
    assert_eq!(&copy.payload()[..], b"forward me");
    assert_eq!(copy.headers().get("k"), Some("v"));
    let (status, stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(
        stdout,
        format!("[{prefix}.log.cpu] CPU at 98% {{host=web-1}}\n")
    );
    assert!(
        stderr.contains("worker ready: 2 routes on nats://"),
        "{stderr}"
    );
}

/// `--count N` drains N messages: one whose command failed (no retry left,
/// no dead letter) is not drained, so the worker exits 1 saying so (it
/// exited 0, and a script draining a queue went on as if it were done).
#[tokio::test(flavor = "multi_thread")]
async fn count_exits_one_when_a_taken_message_failed() {
    let Some(broker) = nats_or_skip("count_exits_one_when_a_taken_message_failed").await else {
        return;
    };
    let prefix = unique("countfail");
    let dir = TempDir::new("countfail");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs.*"
attempts = 1
dead_letter = false
exec = ["sh", "-c", "exit 1"]
"#
        ),
    );
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "1"]);
    publish(
        &broker,
        Message::new(format!("{prefix}.jobs.a"), "x").unwrap(),
    )
    .await;
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: 1 of the 1 message(s) taken failed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_during_a_slow_command_lets_it_finish() {
    let Some(broker) = nats_or_skip("sigint_during_a_slow_command_lets_it_finish").await else {
        return;
    };
    let prefix = unique("sigint");
    let dir = TempDir::new("sigint");
    let (mark, out) = (dir.path("started"), dir.path("out.txt"));
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.slow"
exec = ["sh", "-c", "echo started > {mark}; sleep 1; cat >> {out}"]
"#,
            mark = mark.display(),
            out = out.display()
        ),
    );
    let worker = WorkerProcess::start(&nats_url(), &config, &[]);
    publish(
        &broker,
        Message::new(format!("{prefix}.slow"), "finished anyway").unwrap(),
    )
    .await;
    wait_for_file(&mark, "started");
    worker.interrupt();
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "finished anyway");
    assert!(stderr.contains("worker stopped"), "{stderr}");
    assert!(stderr.contains("1 handled"), "{stderr}");
    assert!(stderr.contains("0 unfinished"), "{stderr}");
}

/// A command that exits 0 but leaves a background job holding its stdout
/// succeeds: its exit decides, not the end of its output (it was called
/// timed out after `timeout` and failed).
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_exits_leaving_a_job_on_its_output_succeeds() {
    let Some(broker) = nats_or_skip("a_command_that_exits_leaving_a_job_on_its_output").await
    else {
        return;
    };
    let prefix = unique("bgjob");
    let dir = TempDir::new("bgjob");
    let pid_file = dir.path("pid");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs"
attempts = 1
dead_letter = false
timeout = "5s"
exec = ["sh", "-c", "sleep 300 & echo $! > {pid}; echo started the job"]
"#,
            pid = pid_file.display()
        ),
    );
    let worker = WorkerProcess::start(&nats_url(), &config, &["--count", "1"]);
    publish(
        &broker,
        Message::new(format!("{prefix}.jobs"), "x").unwrap(),
    )
    .await;
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    let job = wait_for_file(&pid_file, "\n");
    let _ = Command::new("kill").args(["-KILL", job.trim()]).status();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("started the job"), "{stderr}");
    assert!(
        stderr.contains("left a process running that holds its"),
        "{stderr}"
    );
    assert!(stderr.contains("1 handled"), "{stderr}");
}

/// Runs `switchboard worker --config <config> <extra>` on the memory broker and
/// asserts it fails with one line `error: <config>:<line>: ...` containing `what`.
fn assert_refused(config: &Path, extra: &[&str], line: usize, what: &str) {
    let output = Command::new(BIN)
        .args(["--broker", "memory://", "worker", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text:?} was accepted");
    let expected = format!("error: {}:{line}: ", config.display());
    assert!(stderr.starts_with(&expected), "{text:?}: {stderr}");
    assert!(stderr.contains(what), "{text:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn bad_configs_are_refused_with_file_and_line() {
    let dir = TempDir::new("bad");
    let cases = [
        (
            "[[route]]\non = \"a\"\nlog = true\nfoo = 1\n",
            4,
            "unknown field `foo`",
        ),
        (
            "[[route]]\non = \"a.>.b\"\nlog = true\n",
            2,
            "invalid pattern",
        ),
        ("# reactions\n[[route]]\non = \"a\"\n", 2, "has no action"),
        (
            "[[route]]\non = \"a\"\nlog = true\nexec = [\"sh\"]\n",
            1,
            "several actions",
        ),
        ("[[route]]\non = \"a\"\nexec = []\n", 3, "`exec` is empty"),
        (
            "[[route]]\non = \"a\"\nlog = true\nbackoff = \"soon\"\n",
            4,
            "bad duration",
        ),
    ];
    for (index, (text, line, what)) in cases.into_iter().enumerate() {
        let path = dir.write(&format!("bad{index}.toml"), text);
        assert_refused(&path, &[], line, what);
    }
    let missing = dir.path("missing.toml");
    let output = Command::new(BIN)
        .args(["--broker", "memory://", "worker", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the worker config"));
}

#[test]
fn check_refuses_loops_missing_programs_and_zero_durations() {
    let dir = TempDir::new("check");
    let cases = [
        (
            "[[route]]\non = \"alerts.cpu\"\npublish = \"audit.cpu\"\n\n[[route]]\non = \"audit.cpu\"\npublish = \"alerts.cpu\"\n",
            1,
            "the routes on lines 1, 5 form a loop: alerts.cpu → (publish audit.cpu) audit.cpu → (publish alerts.cpu) alerts.cpu",
        ),
        (
            "[[route]]\non = \"alerts.>\"\nlog = true\ndead_letter = \"alerts.dead\"\n",
            1,
            "the route on line 1 feeds itself: alerts.> → (dead letter alerts.dead) alerts.>",
        ),
        (
            "[[route]]\non = \"a\"\nexec = [\"no-such-program-sb8\"]\n",
            3,
            "`exec` program \"no-such-program-sb8\" is not on PATH",
        ),
        (
            "[[route]]\non = \"a\"\nlog = true\ntimeout = \"0s\"\n",
            4,
            "`timeout` is zero",
        ),
        (
            "grace_period = \"0s\"\n\n[[route]]\non = \"a\"\nlog = true\n",
            1,
            "`grace_period` is zero",
        ),
    ];
    for (index, (text, line, what)) in cases.into_iter().enumerate() {
        let path = dir.write(&format!("check{index}.toml"), text);
        assert_refused(&path, &["--check"], line, what);
        assert_refused(&path, &[], line, what);
    }
    // A catch-all route is fine once its dead letter is off.
    let path = dir.write(
        "catch-all.toml",
        "[[route]]\non = \">\"\nlog = true\ndead_letter = false\n",
    );
    let output = Command::new(BIN)
        .args(["--broker", "memory://", "worker", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reactions.toml");
    let output = Command::new(BIN)
        .args(["--broker", "memory://", "worker", "--check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A durable route whose command always fails, with `max_deliver = 3` and
/// one attempt per delivery: each message is delivered three times, reaches
/// the dead letter exactly once, and a durable listener of the dead letters
/// started after the worker stopped still reads them. On every broker whose
/// capabilities say `durable`.
async fn durable_route_dead_letters_a_poison_message_once(kind: &str) {
    let test = "durable_route_dead_letters_a_poison_message_once";
    let url = switchboard_conformance::broker_url(
        &format!("SWITCHBOARD_{}_URL", kind.to_uppercase()),
        switchboard::resolve_url(kind),
    );
    let broker = match switchboard::connect(&url).await {
        Ok(broker) => broker,
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!(
                "{test}: {kind} at {url} does not answer: {error}"
            ));
            return;
        }
    };
    if !broker.capabilities().durable {
        eprintln!("skipped: {test}: {kind} has no durable mode");
        broker.close().await.unwrap();
        return;
    }
    let prefix = unique("poison");
    let name = prefix.replace('.', "-");
    let dlq_pattern: switchboard::Pattern = format!("dlq.{prefix}.>").parse().unwrap();
    let dlq_reader = switchboard::Durable::new(&format!("{name}-dlq")).unwrap();
    // The dead letters' durable consumer exists before the worker runs.
    drop(
        broker
            .subscribe_durable(&dlq_pattern, &dlq_reader)
            .await
            .unwrap(),
    );
    let dir = TempDir::new("poison");
    let tries = dir.path("tries.txt");
    let config = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs.*"
durable = "{name}-worker"
max_deliver = 3
attempts = 1
exec = ["sh", "-c", "cat >> {tries}; echo >> {tries}; exit 3"]
"#,
            tries = tries.display()
        ),
    );
    let worker = WorkerProcess::start(&url, &config, &[]);
    for n in 0..3 {
        publish(
            &broker,
            Message::new(format!("{prefix}.jobs.resize"), format!("img-{n}")).unwrap(),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&tries).unwrap_or_default();
        if text.lines().count() >= 9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: not 9 tries (3 messages × 3 deliveries): {text:?}; stderr:\n{}",
            worker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.wait_line("dead-lettered");
    worker.interrupt();
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("3 dead-lettered"), "{stderr}");
    let text = std::fs::read_to_string(&tries).unwrap();
    for n in 0..3 {
        assert_eq!(
            text.lines().filter(|l| *l == format!("img-{n}")).count(),
            3,
            "deliveries of img-{n}: {text:?}"
        );
    }
    let mut dead = broker
        .subscribe_durable(&dlq_pattern, &dlq_reader)
        .await
        .unwrap();
    let mut letters = Vec::new();
    for _ in 0..3 {
        let mut delivery = tokio::time::timeout(Duration::from_secs(20), dead.next())
            .await
            .expect("a dead letter in time")
            .expect("subscription open")
            .expect("no error");
        letters.push(delivery.payload_str().unwrap().to_string());
        delivery.ack().await.unwrap();
    }
    letters.sort();
    assert_eq!(letters, ["img-0", "img-1", "img-2"]);
    match tokio::time::timeout(Duration::from_secs(2), dead.next()).await {
        Err(_) => {}
        Ok(other) => panic!("a message was dead-lettered twice: {other:?}"),
    }
    drop(dead);
    let worker_durable = switchboard::Durable::new(&format!("{name}-worker")).unwrap();
    broker
        .remove_durable(
            &format!("{prefix}.jobs.*").parse().unwrap(),
            &worker_durable,
        )
        .await
        .unwrap();
    broker
        .remove_durable(&dlq_pattern, &dlq_reader)
        .await
        .unwrap();
    broker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_route_dead_letters_a_poison_message_once_on_nats() {
    durable_route_dead_letters_a_poison_message_once("nats").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_route_dead_letters_a_poison_message_once_on_amqp() {
    durable_route_dead_letters_a_poison_message_once("amqp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_route_dead_letters_a_poison_message_once_on_redis() {
    durable_route_dead_letters_a_poison_message_once("redis").await;
}

/// A worker whose only route's subscription the broker ends (its durable
/// consumer removed while it runs) stops with exit 1 and an `error:` line,
/// as `listen` does: nobody asked it to stop, and a supervisor restarting on
/// failure must see one. Before, it exited 0; on RabbitMQ its route task
/// panicked draining the ended subscription, and it went on reporting ready.
async fn a_worker_whose_subscriptions_the_broker_ended_exits_1(kind: &str, gone: &str) {
    let test = "a_worker_whose_subscriptions_the_broker_ended_exits_1";
    let url = switchboard_conformance::broker_url(
        &format!("SWITCHBOARD_{}_URL", kind.to_uppercase()),
        switchboard::resolve_url(kind),
    );
    let broker = match switchboard::connect(&url).await {
        Ok(broker) => broker,
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!(
                "{test}: {kind} at {url} does not answer: {error}"
            ));
            return;
        }
    };
    let prefix = unique("ended");
    let name = format!("ended{}", std::process::id());
    let dir = TempDir::new("ended");
    let config = dir.write(
        "reactions.toml",
        &format!("[[route]]\non = \"{prefix}.>\"\ndurable = \"{name}\"\nlog = true\n"),
    );
    let worker = WorkerProcess::start(&url, &config, &[]);
    let pattern = format!("{prefix}.>").parse().unwrap();
    broker
        .remove_durable(&pattern, &switchboard::Durable::new(&name).unwrap())
        .await
        .unwrap();
    let (status, _stdout, stderr) = worker.wait(Duration::from_secs(60));
    broker.close().await.unwrap();
    assert_eq!(status.code(), Some(1), "{status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("ended the subscription of every route"),
        "{stderr}"
    );
    assert!(stderr.contains(gone), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_subscriptions_the_broker_ended_exits_1_on_redis() {
    a_worker_whose_subscriptions_the_broker_ended_exits_1("redis", "no longer exists").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_subscriptions_the_broker_ended_exits_1_on_amqp() {
    a_worker_whose_subscriptions_the_broker_ended_exits_1("amqp", "was deleted").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_subscriptions_the_broker_ended_exits_1_on_nats() {
    a_worker_whose_subscriptions_the_broker_ended_exits_1("nats", "was deleted").await;
}

/// A durable NATS route whose handlers outlive the grace period gives back
/// everything it held (two cancelled in flight, three fetched ahead) at
/// once: a `listen --durable` of the same consumer right after gets all five
/// long before the route's ack wait (30 s here), in two rounds on one
/// stream. The subscription's close, which gives back what it fetched, got
/// no time once the handlers had used the grace period; by hand, on a stream
/// with a longer history, the three fetched ahead then waited out the ack
/// wait (29 s), which this test's fresh stream did not show.
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_route_past_its_grace_period_gives_everything_back() {
    let test = "a_durable_route_past_its_grace_period_gives_everything_back";
    let Some(broker) = nats_or_skip(test).await else {
        return;
    };
    let prefix = unique("grace");
    let name = format!("grace{}", std::process::id());
    let pattern: switchboard::Pattern = format!("{prefix}.>").parse().unwrap();
    let dir = TempDir::new("grace");
    let config = dir.write(
        "reactions.toml",
        &format!(
            "grace_period = \"1s\"\n[[route]]\non = \"{prefix}.>\"\ndurable = \"{name}\"\nconcurrency = 2\ntimeout = \"5s\"\nexec = [\"sleep\", \"30\"]\n"
        ),
    );
    for round in 1..=2 {
        let worker = WorkerProcess::start(&nats_url(), &config, &[]);
        for n in 1..=5 {
            publish(
                &broker,
                Message::new(format!("{prefix}.x"), format!("m{n}")).unwrap(),
            )
            .await;
        }
        // Two handlers start; three wait in the subscription.
        std::thread::sleep(Duration::from_secs(1));
        let status = Command::new("kill")
            .args(["-TERM", &worker.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (status, _stdout, stderr) = worker.wait(Duration::from_secs(20));
        assert!(status.success(), "{status}; stderr:\n{stderr}");
        let mut listen = Command::new(BIN)
            .args(["--broker", &nats_url(), "listen", "--on", pattern.as_str()])
            .args(["--durable", &name, "--count", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let exited = loop {
            if let Some(status) = listen.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = listen.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = listen.wait_with_output().unwrap();
        broker
            .remove_durable(&pattern, &switchboard::Durable::new(&name).unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            exited.is_some_and(|status| status.success()),
            "round {round}: not all five back within 15 s: {stdout}; worker stderr:\n{stderr}"
        );
        assert_eq!(stdout.lines().count(), 5, "{stdout}");
    }
    broker.close().await.unwrap();
}

/// A message whose dead letter cannot be sent on its last delivery (here the
/// user may not publish to the dead-letter subject) is reported lost, not
/// "nacked for redelivery": the broker will not deliver it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_last_delivery_whose_dead_letter_is_refused_is_reported_lost() {
    let auth = switchboard_testkit::NatsAuth::new();
    let store = auth.dir().join("js");
    let config = auth.write(
        "no-dlq.conf",
        r#"authorization { users = [ { user: w, password: wpw, permissions: { publish: { allow: [">"], deny: ["dlq.>"] } } } ] }"#,
    );
    let Some(server) = switchboard_testkit::NatsServer::start(&[
        "-c",
        &config.display().to_string(),
        "-js",
        "-sd",
        &store.display().to_string(),
    ]) else {
        return;
    };
    let url = server.url().replacen("nats://", "nats://w:wpw@", 1);
    let prefix = unique("lastdl");
    let dir = TempDir::new("lastdl");
    let reactions = dir.write(
        "reactions.toml",
        &format!(
            r#"
[[route]]
on = "{prefix}.jobs"
durable = "lastdl"
max_deliver = 2
attempts = 1
exec = ["sh", "-c", "exit 3"]
"#
        ),
    );
    let worker = WorkerProcess::start(&url, &reactions, &[]);
    let broker = switchboard::connect(&url).await.unwrap();
    publish(
        &broker,
        Message::new(format!("{prefix}.jobs"), "x").unwrap(),
    )
    .await;
    worker.wait_line("it is lost");
    worker.interrupt();
    let (_status, _stdout, stderr) = worker.wait(Duration::from_secs(30));
    assert_eq!(
        stderr.matches("nacked for redelivery").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    broker.close().await.unwrap();
}
