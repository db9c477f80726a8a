//! Running the real `switchboard` binary in tests: brokers to test against
//! (skipped when they do not answer), listeners in the background, senders.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a listener may take to say it is subscribed, or a message to arrive.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `switchboard` binary, with no broker, log or OpenTelemetry settings
/// from the environment.
pub fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.env_remove("BROKER_URL").env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// A subject prefix no other test (or test run) uses.
pub use switchboard_testkit::unique;

/// The URL of broker `kind` (`nats`, `redis`, `amqp`, `mqtt`) from `SWITCHBOARD_<KIND>_URL`,
/// or its loopback default; `None` (after printing `skipped: ...`) when it does
/// not answer, unless `SWITCHBOARD_REQUIRE_BROKERS=1`, which makes that a failure.
pub fn broker_url(kind: &str, test: &str) -> Option<String> {
    let variable = format!("SWITCHBOARD_{}_URL", kind.to_uppercase());
    let url = switchboard_conformance::broker_url(&variable, switchboard::resolve_url(kind));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(10), switchboard::connect(&url)).await {
            Ok(Ok(broker)) => {
                let _ = broker.close().await;
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 10s".to_string()),
        }
    });
    match answer {
        Ok(()) => Some(url),
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!(
                "{test} on {kind}: {url} does not answer: {error}"
            ));
            None
        }
    }
}

/// Runs `switchboard --broker URL ARGS...` to completion, feeding it `stdin`.
pub fn run(url: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = switchboard()
        .arg("--broker")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = wait_output(child, PATIENCE);
    writer.join().unwrap();
    output
}

/// Sends with `switchboard send` and checks it succeeded quietly.
pub fn send(url: &str, args: &[&str], stdin: &[u8]) {
    let mut full = vec!["send"];
    full.extend_from_slice(args);
    let output = run(url, &full, stdin);
    assert!(
        output.status.success(),
        "send {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "send printed on stdout");
}

/// Waits for `child` to exit (killing it after `patience`) and collects its output.
pub fn wait_output(child: Child, patience: Duration) -> Output {
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(patience).is_err() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        let output = waiter.join().unwrap().unwrap();
        panic!(
            "switchboard did not exit within {patience:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

/// A `switchboard listen` running in the background.
pub struct Listener {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Listener {
    /// Starts `switchboard --broker URL listen ARGS...` and waits for its ready
    /// line. Fails with its exit status and stderr if it exits instead.
    pub fn start(url: &str, args: &[&str]) -> Result<Listener, (ExitStatus, String)> {
        Self::start_reading(url, args, usize::MAX)
    }

    /// Like [`Listener::start`], but stops reading (and closes) stdout after
    /// `lines` lines, like `| head -n LINES`.
    pub fn start_reading(
        url: &str,
        args: &[&str],
        lines: usize,
    ) -> Result<Listener, (ExitStatus, String)> {
        let mut child = switchboard()
            .arg("--broker")
            .arg(url)
            .arg("listen")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_sender, line_receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.lines().take(lines) {
                let Ok(line) = line else { break };
                if line_sender.send(line).is_err() {
                    break;
                }
            }
            // Dropping the reader closes the pipe, as `head` does.
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let (ready_sender, ready_receiver) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening on ") {
                    let _ = ready_sender.send(());
                }
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let started = Instant::now();
        loop {
            match ready_receiver.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => {
                    return Ok(Listener {
                        child,
                        lines: line_receiver,
                        stderr: stderr_text,
                    })
                }
                Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the stderr thread catch up with what the process wrote.
                std::thread::sleep(Duration::from_millis(100));
                let text = stderr_text.lock().unwrap().clone();
                return Err((status, text));
            }
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!(
                    "listen {args:?} did not get ready within {PATIENCE:?}; stderr: {}",
                    stderr_text.lock().unwrap()
                );
            }
        }
    }

    /// The next line it printed on stdout, waiting at most `patience`.
    pub fn line(&self, patience: Duration) -> Option<String> {
        self.lines.recv_timeout(patience).ok()
    }

    /// The next `n` lines, failing the test if they do not come in time.
    pub fn lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.line(PATIENCE).unwrap_or_else(|| {
                    panic!(
                        "line {} of {n} did not arrive; stderr: {}",
                        i + 1,
                        self.stderr()
                    )
                })
            })
            .collect()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends signal `name` (`INT`, `TERM`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        switchboard_testkit::process::signal(self.child.id(), name);
    }

    /// Waits for it to exit; returns its status and complete stderr.
    pub fn wait(mut self, patience: Duration) -> (ExitStatus, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.stderr());
            }
            if started.elapsed() > patience {
                let _ = self.child.kill();
                panic!(
                    "listen did not exit within {patience:?}; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Checks that a failed run printed exactly one `error: ...` line and no panic.
pub fn assert_one_error_line(stderr: &str, expected: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].starts_with("error: "),
        "not an error line: {stderr}"
    );
    assert!(
        lines[0].contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

/// What a [`Process`] does with the command's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Read it all (returned by [`Process::wait`]).
    Read,
    /// Keep the pipe open and never read it: once the pipe buffer is full,
    /// every write blocks, as with a reader that stopped reading.
    Unread,
}

/// A `switchboard` process of a fault test: stdin piped (take it with
/// [`Process::stdin`]), stderr collected line by line, signals sent by pid,
/// killed on drop if it is still running.
pub struct Process {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stderr: Arc<Mutex<String>>,
    stderr_lines: Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    unread: Option<std::process::ChildStdout>,
}

impl Process {
    /// Starts `switchboard ARGS...` (pass `--broker` in `args`).
    pub fn start(args: &[&str], stdout: Stdout) -> Process {
        Process::start_with_env(args, &[], stdout)
    }

    /// Starts `switchboard ARGS...` with `env` added to its environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], stdout: Stdout) -> Process {
        let mut child = switchboard()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sender, stderr_lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                {
                    let mut text = collected.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
                let _ = sender.send(line);
            }
        });
        let pipe = child.stdout.take().unwrap();
        let (stdout, unread) = match stdout {
            Stdout::Read => {
                let mut pipe = pipe;
                let reader = std::thread::spawn(move || {
                    let mut text = String::new();
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
                    text
                });
                (Some(reader), None)
            }
            Stdout::Unread => (None, Some(pipe)),
        };
        Process {
            child,
            stdin,
            stderr,
            stderr_lines,
            stdout,
            unread,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdin (once); dropping it closes the pipe.
    pub fn stdin(&mut self) -> std::process::ChildStdin {
        self.stdin.take().expect("stdin taken once")
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a stderr line containing `needle` and returns it, failing
    /// the test after `patience`.
    pub fn wait_stderr(&self, needle: &str, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {patience:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Sends signal `name` (`INT`, `TERM`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        switchboard_testkit::process::signal(self.child.id(), name);
    }

    /// Waits for it to exit within `limit` (else kills it and fails the test);
    /// returns its status, stdout (empty unless read) and complete stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "switchboard did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(self.unread.take());
        let stdout = self
            .stdout
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default();
        // Let the stderr thread read the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status, stdout, self.stderr())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `path` holds a complete line (a command the test started has
/// written it) and returns its text, failing the test after [`PATIENCE`].
pub fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` with the library's `Broker::request` on its own
/// connection to `url`: the reply's bytes exactly as they came.
pub fn request(
    url: &str,
    request: switchboard::Message,
    timeout: Duration,
) -> switchboard::Result<switchboard::Message> {
    block_on(async {
        let broker = switchboard::connect(url).await.unwrap();
        let reply = broker.request(request, timeout).await;
        let _ = broker.close().await;
        reply
    })
}

/// A temporary directory removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` in it; returns the path as text, for arguments.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of `stderr` that start with `error:`.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect()
}

/// What the broker at `url` declares, read on a connection of its own.
pub fn capabilities(url: &str) -> switchboard::Capabilities {
    block_on(async {
        let broker = switchboard::connect(url).await.unwrap();
        let capabilities = broker.capabilities();
        broker.close().await.unwrap();
        capabilities
    })
}

/// Removes the durable consumer `name` over `pattern` from the broker at `url`.
pub fn remove_durable(url: &str, pattern: &str, name: &str) {
    block_on(async {
        let broker = switchboard::connect(url).await.unwrap();
        broker
            .remove_durable(
                &pattern.parse().unwrap(),
                &switchboard::Durable::new(name).unwrap(),
            )
            .await
            .unwrap();
        broker.close().await.unwrap();
    });
}

/// Runs `future` to completion on a runtime of its own, for the library calls
/// a test makes beside the binary it runs.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
