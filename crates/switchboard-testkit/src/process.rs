//! Broker servers of a test's own, on private loopback ports.
//!
//! Every process is killed by pid when its handle drops (also when the test
//! panics), so a fault test never leaves a server behind and never touches the
//! shared brokers on 4222/6379/5672/1883.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Pki;
use crate::free_port;

/// How long a server may take to listen after it was started.
pub const START_PATIENCE: Duration = Duration::from_secs(15);

/// One server process started by a test: killed on drop, restartable on the
/// same port with the same arguments, pausable with `SIGSTOP`.
#[derive(Debug)]
pub struct BrokerProcess {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    paused: bool,
}

impl BrokerProcess {
    /// Starts `program args…` and waits until something listens on `port`.
    /// `None` (after a skip or, in CI, a failure) if the program is not installed.
    pub fn start(name: &'static str, program: &str, args: Vec<String>, port: u16) -> Option<Self> {
        let Some(program) = find_program(program) else {
            switchboard_conformance::skip_or_fail(format_args!(
                "{name}: `{program}` is not installed"
            ));
            return None;
        };
        let mut process = BrokerProcess {
            name,
            program,
            args,
            port,
            child: None,
            paused: false,
        };
        process.spawn();
        Some(process)
    }

    fn spawn(&mut self) {
        // The server's own words, kept for a failure message: a server that
        // exits at start-up says why only there.
        let log = self.log_path();
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ok();
        let stdout = output
            .as_ref()
            .and_then(|file| file.try_clone().ok())
            .map_or_else(Stdio::null, Stdio::from);
        let stderr = output.map_or_else(Stdio::null, Stdio::from);
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.name));
        self.child = Some(child);
        self.wait_listening();
    }

    /// Where the server's stdout and stderr go: the temp directory, one file
    /// per name, port and test process (a restart appends to it).
    pub fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "switchboard-testkit-{}-{}-{}.log",
            self.name,
            self.port,
            std::process::id()
        ))
    }

    /// Blocks until the port accepts connections, failing after
    /// [`START_PATIENCE`], or at once if the server exited (its log's path
    /// in the message).
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited at start-up ({status}) instead of listening on 127.0.0.1:{}; its output is in {}",
                    self.name,
                    self.port,
                    self.log_path().display()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on 127.0.0.1:{} within {START_PATIENCE:?}; its output is in {}",
                self.name,
                self.port,
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (`SIGKILL`) and waits for it to be gone.
    pub fn kill(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again after [`kill`](Self::kill) (no-op while it runs).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Freezes it with `SIGSTOP`: connections stay open, nothing answers.
    pub fn pause(&mut self) {
        if let (Some(pid), false) = (self.pid(), self.paused) {
            signal(pid, "STOP");
            self.paused = true;
        }
    }

    /// Lets a paused process run again (`SIGCONT`).
    pub fn resume(&mut self) {
        if let (Some(pid), true) = (self.pid(), self.paused) {
            signal(pid, "CONT");
            self.paused = false;
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
        // Kept when the test fails, for its post-mortem; a passing test
        // leaves nothing behind.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(self.log_path());
        }
    }
}

/// Sends `SIGNAME` to `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// `program` as a path: itself if it names a file, else found on `PATH` or in
/// the usual system directories (nats-server lives in /usr/sbin on Debian).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let as_path = Path::new(program);
    if as_path.components().count() > 1 {
        return as_path.exists().then(|| as_path.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/local/sbin",
                "/sbin",
                "/usr/local/bin",
                "/usr/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A nats-server of the test's own.
#[derive(Debug)]
pub struct NatsServer {
    /// The process; use it to kill, restart or pause the server.
    pub process: BrokerProcess,
}

impl NatsServer {
    /// Starts one on a free loopback port with extra `args` (e.g. `["-js", "-sd", dir]`).
    /// The binary is `$NATS_SERVER_BIN` or `nats-server`.
    pub fn start(args: &[&str]) -> Option<Self> {
        Self::start_on(free_port(), args)
    }

    /// Starts one on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> Option<Self> {
        let program = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let mut all = vec![
            "-a".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        BrokerProcess::start("nats-server", &program, all, port)
            .map(|process| NatsServer { process })
    }

    /// One serving TLS only (a `tls {}` block in a config file written to
    /// the PKI's directory), with [`Pki::server_cert`]; no client certificate asked.
    pub fn start_tls(pki: &Pki) -> Option<Self> {
        Self::start_with_tls_block(pki, false)
    }

    /// One requiring mutual TLS: clients must present a certificate signed by [`Pki::ca`].
    pub fn start_mutual_tls(pki: &Pki) -> Option<Self> {
        Self::start_with_tls_block(pki, true)
    }

    fn start_with_tls_block(pki: &Pki, verify: bool) -> Option<Self> {
        let port = free_port();
        let config = pki.dir().join(format!("nats-{port}.conf"));
        // JetStream too, so that the conformance suite's durable cases run
        // over TLS as they do in plain text.
        let block = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\njetstream {{\n  store_dir: {:?}\n}}\n",
            pki.server_cert().display().to_string(),
            pki.server_key().display().to_string(),
            pki.ca().display().to_string(),
            pki.dir().join(format!("jetstream-{port}")).display().to_string(),
        );
        std::fs::write(&config, block).expect("writing the nats-server TLS config");
        Self::start_on(port, &["-c", &config.display().to_string()])
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.port())
    }

    /// `tls://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.process.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.process.port()
    }
}

/// A redis-server of the test's own (nothing kept on disk).
#[derive(Debug)]
pub struct RedisServer {
    /// The process; use it to kill, restart or pause the server.
    pub process: BrokerProcess,
}

impl RedisServer {
    /// Starts one on a free loopback port with extra `args` (e.g. `["--requirepass", "pw"]`).
    pub fn start(args: &[&str]) -> Option<Self> {
        Self::start_on(free_port(), args)
    }

    /// Starts one on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> Option<Self> {
        Self::launch(port, &["--port", &port.to_string()], args)
    }

    /// One serving TLS only (`--tls-port`, no plain port) with
    /// [`Pki::server_cert`]; no client certificate asked. `None` (after a
    /// skip, or a failure in CI) if this redis-server was built without TLS.
    pub fn start_tls(pki: &Pki) -> Option<Self> {
        Self::start_with_tls(pki, false)
    }

    /// One requiring mutual TLS: clients must present a certificate signed by [`Pki::ca`].
    pub fn start_mutual_tls(pki: &Pki) -> Option<Self> {
        Self::start_with_tls(pki, true)
    }

    fn start_with_tls(pki: &Pki, mutual: bool) -> Option<Self> {
        if !redis_has_tls() {
            switchboard_conformance::skip_or_fail(format_args!(
                "redis-server: this build has no TLS support (`--tls-port`)"
            ));
            return None;
        }
        let port = free_port();
        let (cert, key, ca) = (
            pki.server_cert().display().to_string(),
            pki.server_key().display().to_string(),
            pki.ca().display().to_string(),
        );
        Self::launch(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if mutual { "yes" } else { "no" },
            ],
            &[],
        )
    }

    pub(crate) fn launch(port: u16, listen: &[&str], args: &[&str]) -> Option<Self> {
        let mut all: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
        all.extend(
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|a| a.to_string()),
        );
        all.extend(args.iter().map(|a| a.to_string()));
        BrokerProcess::start("redis-server", "redis-server", all, port)
            .map(|process| RedisServer { process })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port())
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.process.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.process.port()
    }
}

/// Whether the installed redis-server was built with TLS. A build without it
/// refuses `--tls-port` at start-up, which would look like a server that never
/// listens; a TLS build holds its TLS settings' names (`tls-cert-file`) in the
/// binary, which is cheaper to check than starting one.
pub(crate) fn redis_has_tls() -> bool {
    find_program("redis-server")
        .and_then(|path| std::fs::read(path).ok())
        .is_some_and(|binary| {
            binary
                .windows(b"tls-cert-file".len())
                .any(|window| window == b"tls-cert-file")
        })
}

/// A mosquitto of the test's own: MQTT 5 on a private loopback port, nothing
/// kept on disk, its config (and password file) in a directory removed on drop.
#[derive(Debug)]
pub struct MosquittoServer {
    /// The process; use it to kill, restart or pause the server.
    pub process: BrokerProcess,
    dir: PathBuf,
}

impl MosquittoServer {
    /// Starts one on a free loopback port that lets anyone in.
    pub fn start() -> Option<Self> {
        Self::launch(None)
    }

    /// Starts one that lets in only `user` with `password` (a password file
    /// made with `mosquitto_passwd`); `None` after a skip (or a failure in CI)
    /// when `mosquitto_passwd` is not installed.
    pub fn start_with_password(user: &str, password: &str) -> Option<Self> {
        Self::launch(Some((user, password)))
    }

    fn launch(credentials: Option<(&str, &str)>) -> Option<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-mosquitto-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("creating the mosquitto test directory");
        let mut config = format!(
            "listener {port} 127.0.0.1\npersistence false\n# Run as root keeps root, so it reads the files made here.\nuser root\n"
        );
        match credentials {
            None => config.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let Some(tool) = find_program("mosquitto_passwd") else {
                    switchboard_conformance::skip_or_fail(format_args!(
                        "mosquitto: `mosquitto_passwd` is not installed"
                    ));
                    let _ = std::fs::remove_dir_all(&dir);
                    return None;
                };
                let file = dir.join("passwords");
                let status = Command::new(tool)
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("running mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed: {status}");
                config.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, config).expect("writing the mosquitto config");
        let process = BrokerProcess::start(
            "mosquitto",
            "mosquitto",
            vec!["-c".into(), path.display().to_string()],
            port,
        );
        match process {
            Some(process) => Some(MosquittoServer { process, dir }),
            None => {
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.process.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.process.port()
    }
}

impl Drop for MosquittoServer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
