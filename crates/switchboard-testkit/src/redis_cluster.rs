//! A Redis Cluster of the test's own: redis-servers in cluster mode on
//! loopback ports (each with its own cluster bus port and nodes file), joined
//! by `redis-cli --cluster create`, every process killed by pid on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::process::{find_program, RedisServer};

/// How long the nodes may take to agree that the cluster is up.
pub const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);

/// Several redis-servers forming one Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, masters first; kill, restart or pause one through its `process`.
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as Redis Cluster requires), each
    /// with `replicas` replicas, creates the cluster and waits until every
    /// node says `cluster_state:ok`. `None` (after a skip, or a failure in
    /// CI) when redis-server or redis-cli is not installed.
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        let Some(cli) = find_program("redis-cli") else {
            switchboard_conformance::skip_or_fail("redis cluster: `redis-cli` is not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(crate::unique("redis-cluster"));
        std::fs::create_dir_all(&dir).expect("creating the Redis Cluster directory");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let nodes_file = dir.join(format!("nodes-{port}.conf")).display().to_string();
            let bus = free_port().to_string();
            let node = RedisServer::start_on(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &nodes_file,
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    &dir.display().to_string(),
                ],
            );
            match node {
                Some(node) => nodes.push(node),
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return None;
                }
            }
        }
        let cluster = RedisCluster { nodes, dir };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
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

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` over every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
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
