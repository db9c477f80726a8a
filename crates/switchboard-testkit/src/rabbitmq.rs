//! A RabbitMQ node of the test's own, beside the shared one: its own node
//! name, ports and data directory (nothing of the shared node on 5672 is
//! touched), for what the shared node is not set up for — a TLS listener
//! that requires client certificates and accepts the EXTERNAL mechanism
//! (plugin `rabbitmq_auth_mechanism_ssl`). Starting one takes about 7 s.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Pki;
use crate::free_port;
use crate::process::find_program;

/// How long a node may take to listen (an Erlang VM and RabbitMQ's boot).
pub const RABBITMQ_START_PATIENCE: Duration = Duration::from_secs(60);

/// The user the node knows: the common name of [`Pki::client_cert`].
pub const EXTERNAL_USER: &str = "switchboard-client";

/// A private RabbitMQ node; stopped (its Erlang VM killed by pid) on drop.
#[derive(Debug)]
pub struct RabbitMqNode {
    launcher: Child,
    dir: PathBuf,
    port: u16,
}

impl RabbitMqNode {
    /// Starts a node listening only on a TLS port that requires a client
    /// certificate signed by [`Pki::ca`] and offers only EXTERNAL, with user
    /// [`EXTERNAL_USER`] (no password) allowed everything on vhost `/`.
    /// `None` (after a skip, or a failure in CI) when `rabbitmq-server` is
    /// not installed or this process cannot give the node's files to the
    /// `rabbitmq` user (it must run as root, as CI does).
    pub fn start_external_auth(pki: &Pki) -> Option<Self> {
        let Some(program) = find_program("rabbitmq-server") else {
            switchboard_conformance::skip_or_fail("rabbitmq-server is not installed");
            return None;
        };
        let port = free_port();
        let dist_port = free_port();
        let dir = pki.dir().join(format!("rabbitmq-{port}"));
        std::fs::create_dir_all(&dir).expect("creating the node's directory");
        for (from, to) in [
            (pki.ca(), "ca.pem"),
            (pki.server_cert(), "server.pem"),
            (pki.server_key(), "server-key.pem"),
        ] {
            std::fs::copy(from, dir.join(to)).expect("copying the node's certificates");
        }
        let file = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "listeners.tcp = none\n\
             listeners.ssl.default = {port}\n\
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
        );
        let definitions = format!(
            r#"{{"users":[{{"name":"{EXTERNAL_USER}","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":""}}],"vhosts":[{{"name":"/"}}],"permissions":[{{"user":"{EXTERNAL_USER}","vhost":"/","configure":".*","write":".*","read":".*"}}]}}"#
        );
        std::fs::write(dir.join("rabbitmq.conf"), config).expect("writing rabbitmq.conf");
        std::fs::write(dir.join("definitions.json"), definitions).expect("writing the definitions");
        std::fs::write(
            dir.join("enabled_plugins"),
            "[rabbitmq_auth_mechanism_ssl].\n",
        )
        .expect("writing enabled_plugins");
        // rabbitmq-server runs the node as the `rabbitmq` user: it must be
        // able to reach and write the directory.
        if !give_to_rabbitmq(pki.dir(), &dir) {
            switchboard_conformance::skip_or_fail(
                "cannot give a private RabbitMQ node's files to the rabbitmq user (not root?)",
            );
            return None;
        }
        let launcher = Command::new(program)
            .env("RABBITMQ_NODENAME", format!("sbtest-{port}@localhost"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", file("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", file("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", file("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", file("mnesia"))
            .env("RABBITMQ_LOG_BASE", file("log"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", file("plugins"))
            .env("RABBITMQ_PID_FILE", file("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("rabbitmq-server does not start: {e}"));
        let mut node = RabbitMqNode {
            launcher,
            dir,
            port,
        };
        let deadline = Instant::now() + RABBITMQ_START_PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = matches!(node.launcher.try_wait(), Ok(Some(_)));
            assert!(
                !exited && Instant::now() < deadline,
                "the private RabbitMQ node did not listen on 127.0.0.1:{port} within {RABBITMQ_START_PATIENCE:?}; see {}",
                node.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The definitions (the user) are imported at boot, before the
        // listeners start.
        Some(node)
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqps://127.0.0.1:PORT/%2f`, to which a test adds its query.
    pub fn tls_url(&self) -> String {
        format!("amqps://127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for RabbitMqNode {
    fn drop(&mut self) {
        // The launcher runs the VM as another user in a child of its own:
        // the VM is stopped by the pid it wrote.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

/// Lets the `rabbitmq` user traverse `parent` and own `dir`.
fn give_to_rabbitmq(parent: &Path, dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let traversable = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
    let owned = Command::new("chown")
        .args(["-R", "rabbitmq:"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    traversable.is_ok() && owned.is_ok_and(|status| status.success())
}
