//! A Redis Cluster of the test's own: redis-servers in cluster mode on
//! loopback ports (each with its own cluster bus port and nodes file), joined
//! by `redis-cli --cluster create`, every process killed by pid on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Pki;
use crate::free_port;
use crate::process::{find_program, redis_has_tls, RedisServer};

/// How long the nodes may take to agree that the cluster is up.
pub const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);

/// Several redis-servers forming one Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, masters first; kill, restart or pause one through its `process`.
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
    /// `redis-cli`'s TLS arguments for a TLS cluster; empty otherwise.
    cli_tls: Vec<String>,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as Redis Cluster requires), each
    /// with `replicas` replicas, creates the cluster and waits until every
    /// node says `cluster_state:ok`. `None` (after a skip, or a failure in
    /// CI) when redis-server or redis-cli is not installed.
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        Self::launch(masters, replicas, None)
    }

    /// Like [`RedisCluster::start`], every node serving TLS only (clients,
    /// the cluster bus and replication) with [`Pki::server_cert`], no client
    /// certificate asked; [`RedisCluster::tls_url`] reaches it. `None`
    /// (after a skip, or a failure in CI) if redis-server has no TLS.
    pub fn start_tls(masters: usize, replicas: usize, pki: &Pki) -> Option<Self> {
        if !redis_has_tls() {
            switchboard_conformance::skip_or_fail(
                "redis cluster: this redis-server was built without TLS (`--tls-port`)",
            );
            return None;
        }
        Self::launch(masters, replicas, Some(pki))
    }

    fn launch(masters: usize, replicas: usize, pki: Option<&Pki>) -> Option<Self> {
        let Some(cli) = find_program("redis-cli") else {
            switchboard_conformance::skip_or_fail("redis cluster: `redis-cli` is not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(crate::unique("redis-cluster"));
        std::fs::create_dir_all(&dir).expect("creating the Redis Cluster directory");
        // The cluster bus is mutual TLS: a node presents the client
        // certificate (the server one is for serverAuth only) to the others.
        let tls: Option<[String; 5]> = pki.map(|pki| {
            [
                pki.server_cert(),
                pki.server_key(),
                pki.ca(),
                pki.client_cert(),
                pki.client_key(),
            ]
            .map(|p| p.display().to_string())
        });
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let port_text = port.to_string();
            let nodes_file = dir.join(format!("nodes-{port}.conf")).display().to_string();
            let bus = free_port().to_string();
            let dir_text = dir.display().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &nodes_file,
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "2000",
                // A replica syncs at once (not after the default 5 s wait
                // for more replicas), so a failover can happen soon after start.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &dir_text,
            ];
            let node = match &tls {
                None => RedisServer::start_on(port, &args),
                Some([cert, key, ca, client_cert, client_key]) => {
                    args.extend([
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                        "--tls-auth-clients",
                        "no",
                        "--tls-cert-file",
                        cert,
                        "--tls-key-file",
                        key,
                        "--tls-ca-cert-file",
                        ca,
                        "--tls-client-cert-file",
                        client_cert,
                        "--tls-client-key-file",
                        client_key,
                    ]);
                    RedisServer::launch(port, &["--port", "0", "--tls-port", &port_text], &args)
                }
            };
            match node {
                Some(node) => nodes.push(node),
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return None;
                }
            }
        }
        let cluster = RedisCluster {
            nodes,
            dir,
            cli_tls: tls
                .map(|[_, _, ca, _, _]| vec!["--tls".to_string(), "--cacert".to_string(), ca])
                .unwrap_or_default(),
        };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        // `--cluster create` waits for the nodes to meet with no limit of
        // its own: a cluster that cannot form must fail the test, not hang it.
        let mut create = Command::new(cli)
            .args(&cluster.cli_tls)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running redis-cli --cluster create");
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        let status = loop {
            if let Some(status) = create.try_wait().expect("waiting for redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = create
            .wait_with_output()
            .expect("reading redis-cli's output");
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed{}: {}{}",
            if status.is_none() {
                format!(" (no cluster within {CLUSTER_PATIENCE:?})")
            } else {
                String::new()
            },
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        // A replica that has not synced cannot take over: a test may kill a
        // master as soon as this returns.
        for index in cluster.replicas() {
            cluster.wait_replica_synced(index);
        }
        Some(cluster)
    }

    /// Blocks until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        for node in &self.nodes {
            if node.process.pid().is_none() {
                continue;
            }
            loop {
                let info = Command::new("redis-cli")
                    .args(&self.cli_tls)
                    .args(["-p", &node.port().to_string(), "cluster", "info"])
                    .stdin(Stdio::null())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster node on port {} did not reach cluster_state:ok within \
                     {CLUSTER_PATIENCE:?}: {info}",
                    node.port()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `redis-cli` on node `index` with `args`; its output (empty if it
    /// does not answer).
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(&self.cli_tls)
            .args(["-p", &self.nodes[index].port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a running node).
    pub fn key_slot(&self, key: &str) -> u16 {
        let running = self.running().next().expect("a running node");
        let answer = self.cli(running, &["cluster", "keyslot", key]);
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} answered {answer:?}"))
    }

    /// The indexes of the running nodes that are replicas (`role:slave`).
    fn replicas(&self) -> Vec<usize> {
        self.running()
            .filter(|&i| self.cli(i, &["role"]).starts_with("slave"))
            .collect()
    }

    /// The indexes of the nodes whose process runs.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].process.pid().is_some())
    }

    /// The node that serves `slot` as a master, as node `asked` sees it
    /// (`CLUSTER NODES`; a master flagged `fail` does not count).
    pub fn master_of(&self, slot: u16, asked: usize) -> Option<usize> {
        let nodes = self.cli(asked, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if !serves {
                continue;
            }
            let port = address
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok());
            return self.nodes.iter().position(|n| Some(n.port()) == port);
        }
        None
    }

    /// Waits until every running node agrees that a running node other than
    /// `old` is the master of `slot`, and the cluster is `ok`; returns it
    /// and how long it took. Panics after [`CLUSTER_PATIENCE`].
    pub fn wait_failover(&self, slot: u16, old: usize) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            let views: Vec<Option<usize>> =
                self.running().map(|i| self.master_of(slot, i)).collect();
            if let Some(Some(new)) = views.first() {
                if *new != old
                    && self.nodes[*new].process.pid().is_some()
                    && views.iter().all(|v| *v == Some(*new))
                {
                    self.wait_ok();
                    return (*new, started.elapsed());
                }
            }
            assert!(
                started.elapsed() < CLUSTER_PATIENCE,
                "no replica took over slot {slot} from node {old} within {CLUSTER_PATIENCE:?} (views: {views:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `index`, a replica, has its link to its master up
    /// and has finished the initial sync. Panics after [`CLUSTER_PATIENCE`].
    pub fn wait_replica_synced(&self, index: usize) {
        let started = Instant::now();
        loop {
            let info = self.cli(index, &["info", "replication"]);
            if info.contains("role:slave")
                && info.contains("master_link_status:up")
                && info.contains("master_sync_in_progress:0")
            {
                return;
            }
            assert!(
                started.elapsed() < CLUSTER_PATIENCE,
                "node {index} did not sync as a replica within {CLUSTER_PATIENCE:?}: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` over every node.
    pub fn url(&self) -> String {
        let hosts = crate::loopback_hosts(self.nodes.iter().map(RedisServer::port));
        format!("redis+cluster://{hosts}")
    }

    /// `rediss+cluster://127.0.0.1:P1,…` over every node (a cluster of
    /// [`RedisCluster::start_tls`]); the test adds `?ca=`.
    pub fn tls_url(&self) -> String {
        self.url()
            .replacen("redis+cluster://", "rediss+cluster://", 1)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
