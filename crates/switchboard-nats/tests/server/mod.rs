//! Test support: the shared server's URL (or a skip), dedicated nats-server
//! processes that are killed on drop, and unique subjects.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Skips (returns `None` after printing why) or fails, per `SWITCHBOARD_REQUIRE_BROKERS`.
pub(crate) fn skip<T>(why: &str) -> Option<T> {
    switchboard_conformance::skip_or_fail(why);
    None
}

/// The shared server's URL, if it answers.
pub(crate) fn url() -> Option<String> {
    let url = std::env::var("SWITCHBOARD_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let parsed = url::Url::parse(url.split(',').next().unwrap_or_default()).ok()?;
    let address = format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(4222)
    );
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&address)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    if reachable {
        Some(url)
    } else {
        skip(&format!(
            "no NATS server answers at {address} (set SWITCHBOARD_NATS_URL)"
        ))
    }
}

/// A subject prefix no other test run uses.
pub(crate) fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "sbtest.{name}.{}x{nanos}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nothing listens on (right now).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn binary() -> Option<String> {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return Some(path);
    }
    for candidate in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(candidate).exists() {
            return Some(candidate.to_string());
        }
    }
    Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "nats-server".to_string())
}

fn spawn(binary: &str, port: u16, args: &[String]) -> Child {
    Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts")
}

/// A nats-server process of the test's own, on a loopback port, killed on drop.
pub(crate) struct NatsServer {
    child: Child,
    pub(crate) port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts one on a free port with extra `args` (`None`, after printing
    /// `skipped: ...`, if there is no nats-server binary).
    pub(crate) fn start(args: &[&str]) -> Option<Self> {
        Self::start_on(free_port(), args)
    }

    /// Starts one on `port`.
    pub(crate) fn start_on(port: u16, args: &[&str]) -> Option<Self> {
        let Some(binary) = binary() else {
            return skip("no nats-server binary (set NATS_SERVER_BIN)");
        };
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(&binary, port, &args);
        let server = NatsServer { child, port, args };
        server.wait_listening();
        Some(server)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the process and waits for it.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it and starts it again on the same port with the same arguments.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let binary = binary().expect("nats-server binary");
        self.child = spawn(&binary, self.port, &self.args);
        self.wait_listening();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
