//! A RabbitMQ node of the test's own, for fault tests that kill the broker.
//!
//! The shared node on 5672 is never touched: this one has its own node name,
//! AMQP and distribution ports, data directory and an empty plugin list (no
//! management listener to collide with), and is killed by pid on drop. Its
//! data directory survives [`RabbitNode::restart`], so what RabbitMQ stored
//! (quorum queues, persistent messages) is there again after a crash.
//!
//! Starting a node takes several seconds (15 s on this 2-core machine under
//! load), so tests use one node per test, not per case.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::process::find_program;

/// How long a node may take to accept AMQP connections after it was started.
pub const RABBIT_START_PATIENCE: Duration = Duration::from_secs(120);

/// A private RabbitMQ node (`rabbitmq-server` with its own `RABBITMQ_*` environment).
#[derive(Debug)]
pub struct RabbitNode {
    program: PathBuf,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RabbitNode {
    /// Starts a node on free loopback ports and waits until it accepts AMQP
    /// connections. `None` (after a skip, or a failure in CI) when
    /// `rabbitmq-server` is not installed.
    pub fn start() -> Option<Self> {
        let Some(program) = find_program("rabbitmq-server") else {
            switchboard_conformance::skip_or_fail("rabbitmq: `rabbitmq-server` is not installed");
            return None;
        };
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("switchboard-rabbit-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the RabbitMQ node directory");
        // rabbitmq-server started as root runs the node as the `rabbitmq`
        // user, which must be able to write its data, logs and pid file here.
        set_mode(&dir, 0o777);
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("writing enabled_plugins");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("writing rabbitmq.conf");
        let mut node = RabbitNode {
            program,
            port,
            dist_port: free_port(),
            dir,
            child: None,
        };
        node.spawn();
        Some(node)
    }

    fn spawn(&mut self) {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let child = Command::new(&self.program)
            .env(
                "RABBITMQ_NODENAME",
                format!("sbtest-{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir("log"))
            .env("RABBITMQ_PID_FILE", dir("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("rabbitmq-server does not start: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + RABBIT_START_PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "rabbitmq-server on port {} exited with {status} before listening; see {}",
                    self.port,
                    self.dir.join("log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server did not listen on 127.0.0.1:{} within {RABBIT_START_PATIENCE:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // `kill` needs the VM's pid, which it writes early in its boot.
        while !self.dir.join("pid").exists() {
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server on port {} wrote no pid file",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the node (`SIGKILL`, a crash: nothing is shut down cleanly) and
    /// waits until its port is closed.
    pub fn kill(&mut self) {
        // The Erlang VM is not our child (the script hands it to the
        // `rabbitmq` user); it wrote its pid. epmd is shared with the other
        // nodes and is left alone.
        if let Some(pid) = std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            // Not `signal`: the VM may be gone already, and this runs in `drop`.
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node again after [`kill`](Self::kill), with the same data.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Kills the node and starts it again with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("making the RabbitMQ node directory writable");
}
