//! A RabbitMQ node of the test's own, beside the shared one, for what the
//! shared node on 5672 must not be used for: being killed (fault tests), or
//! a set-up it does not have (a TLS listener that requires client
//! certificates and offers only the EXTERNAL mechanism).
//!
//! The node has its own node name, AMQP and distribution ports, data
//! directory and plugin list (no management listener to collide with), and
//! is killed by pid on drop. Its data directory survives
//! [`RabbitNode::restart`], so what RabbitMQ stored (quorum queues,
//! persistent messages) is there again after a crash.
//!
//! Starting a node takes 7 to 15 s on this 2-core machine, so tests use one
//! node per test, not per case. rabbitmq-server started as root runs the
//! node as the `rabbitmq` user, which is given the node's directory; a test
//! not running as root is skipped (or fails in CI).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Pki;
use crate::free_port;
use crate::process::find_program;

/// The user a node of [`RabbitNode::start_external_auth`] knows: the common
/// name of [`Pki::client_cert`].
pub const EXTERNAL_USER: &str = "switchboard-client";

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
    tls: bool,
}

impl RabbitNode {
    /// Starts a node with a plain AMQP listener (user `guest`, also from
    /// other hosts than localhost) on free loopback ports and waits until it
    /// accepts connections. `None` (after a skip, or a failure in CI) when
    /// `rabbitmq-server` is not installed or the node's files cannot be
    /// given to the `rabbitmq` user.
    pub fn start() -> Option<Self> {
        Self::launch(None, free_port(), "")
    }

    /// Starts a node listening only on a TLS port that requires a client
    /// certificate signed by [`Pki::ca`] and offers only EXTERNAL, with user
    /// [`EXTERNAL_USER`] (no password) allowed everything on vhost `/`.
    pub fn start_external_auth(pki: &Pki) -> Option<Self> {
        Self::launch(Some(pki), free_port(), "")
    }

    /// Starts a node on `port` whose `rabbitmq.conf` also has `extra`.
    fn launch(pki: Option<&Pki>, port: u16, extra: &str) -> Option<Self> {
        let Some(program) = find_program("rabbitmq-server") else {
            switchboard_conformance::skip_or_fail("rabbitmq: `rabbitmq-server` is not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(crate::unique("rabbit"));
        std::fs::create_dir_all(&dir).expect("creating the RabbitMQ node directory");
        let file = |name: &str| dir.join(name).display().to_string();
        let (config, plugins) = match pki {
            None => (
                format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
                "[].\n",
            ),
            Some(pki) => {
                for (from, to) in [
                    (pki.ca(), "ca.pem"),
                    (pki.server_cert(), "server.pem"),
                    (pki.server_key(), "server-key.pem"),
                ] {
                    std::fs::copy(from, dir.join(to)).expect("copying the node's certificates");
                }
                let definitions = format!(
                    r#"{{"users":[{{"name":"{EXTERNAL_USER}","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":""}}],"vhosts":[{{"name":"/"}}],"permissions":[{{"user":"{EXTERNAL_USER}","vhost":"/","configure":".*","write":".*","read":".*"}}]}}"#
                );
                std::fs::write(dir.join("definitions.json"), definitions)
                    .expect("writing the definitions");
                (
                    format!(
                        "listeners.tcp = none\n\
                         listeners.ssl.default = 127.0.0.1:{port}\n\
                         ssl_options.cacertfile = {}\n\
                         ssl_options.certfile = {}\n\
                         ssl_options.keyfile = {}\n\
                         ssl_options.verify = verify_peer\n\
                         ssl_options.fail_if_no_peer_cert = true\n\
                         auth_mechanisms.1 = EXTERNAL\n\
                         ssl_cert_login_from = common_name\n\
                         load_definitions = {}\n",
                        file("ca.pem"),
                        file("server.pem"),
                        file("server-key.pem"),
                        file("definitions.json"),
                    ),
                    "[rabbitmq_auth_mechanism_ssl].\n",
                )
            }
        };
        std::fs::write(dir.join("rabbitmq.conf"), config + extra).expect("writing rabbitmq.conf");
        std::fs::write(dir.join("enabled_plugins"), plugins).expect("writing enabled_plugins");
        if !give_to_rabbitmq(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            switchboard_conformance::skip_or_fail(
                "cannot give a private RabbitMQ node's files to the rabbitmq user (not root?)",
            );
            return None;
        }
        let mut node = RabbitNode {
            program,
            port,
            dist_port: free_port(),
            dir,
            child: None,
            tls: pki.is_some(),
        };
        node.spawn();
        Some(node)
    }

    fn spawn(&mut self) {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let child = Command::new(&self.program)
            .env("RABBITMQ_NODENAME", self.name())
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", dir("plugins"))
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

    /// The Erlang node name, `sbtest-PORT@localhost`.
    pub fn name(&self) -> String {
        node_name(self.port)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (a node of [`RabbitNode::start`]).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://127.0.0.1:PORT/%2f`, to which a test adds its query (a node
    /// of [`RabbitNode::start_external_auth`]).
    pub fn tls_url(&self) -> String {
        format!("amqps://127.0.0.1:{}/%2f", self.port)
    }

    /// Whether it listens for TLS (and only TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The AMQP (or AMQPS) port.
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

/// The Erlang node name of the test's node on AMQP port `port`.
fn node_name(port: u16) -> String {
    format!("sbtest-{port}@localhost")
}

/// A RabbitMQ cluster of the test's own: `size` [`RabbitNode`]s on free
/// loopback ports that found each other through `classic_config` peer
/// discovery. Quorum queues declared on it are replicated on every node
/// (RabbitMQ's default initial group size is the cluster's size).
///
/// Each node is killed by pid on drop, like a lone [`RabbitNode`]; a node
/// killed and started again rejoins the cluster from its data directory.
#[derive(Debug)]
pub struct RabbitCluster {
    /// The nodes, in the order of [`RabbitCluster::url`]'s host list.
    pub nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    /// Starts `size` nodes one after the other (each later one joins the
    /// first) and waits until the first lists all of them as running.
    /// `None` (after a skip, or a failure in CI) where a lone node could
    /// not start either.
    pub fn start(size: usize) -> Option<Self> {
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut discovery =
            String::from("cluster_formation.peer_discovery_backend = classic_config\n");
        for (i, port) in ports.iter().enumerate() {
            discovery.push_str(&format!(
                "cluster_formation.classic_config.nodes.{} = {}\n",
                i + 1,
                node_name(*port)
            ));
        }
        let mut nodes = Vec::with_capacity(size);
        for port in ports {
            nodes.push(RabbitNode::launch(None, port, &discovery)?);
        }
        let cluster = RabbitCluster { nodes };
        cluster.wait_until_formed();
        Some(cluster)
    }

    /// `amqp://guest:guest@127.0.0.1:P1,127.0.0.1:P2,…/%2f`: every node, in order.
    pub fn url(&self) -> String {
        let hosts = crate::loopback_hosts(self.nodes.iter().map(RabbitNode::port));
        format!("amqp://guest:guest@{hosts}/%2f")
    }

    /// The running nodes the first node knows of, from
    /// `rabbitmqctl cluster_status` (empty when it does not answer).
    pub fn running_nodes(&self) -> Vec<String> {
        let Some(first) = self.nodes.first() else {
            return Vec::new();
        };
        let output = Command::new("rabbitmqctl")
            .args(["-n", &first.name(), "cluster_status", "--formatter", "json"])
            .stderr(Stdio::null())
            .output();
        let Ok(output) = output else {
            return Vec::new();
        };
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .ok()
            .and_then(|status| {
                status["running_nodes"].as_array().map(|nodes| {
                    nodes
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    fn wait_until_formed(&self) {
        let deadline = Instant::now() + RABBIT_START_PATIENCE;
        loop {
            let running = self.running_nodes();
            if self.nodes.iter().all(|node| running.contains(&node.name())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the RabbitMQ cluster did not form within {RABBIT_START_PATIENCE:?}: running {running:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Gives the node's directory to the `rabbitmq` user, which runs the node.
fn give_to_rabbitmq(dir: &std::path::Path) -> bool {
    Command::new("chown")
        .args(["-R", "rabbitmq:"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
