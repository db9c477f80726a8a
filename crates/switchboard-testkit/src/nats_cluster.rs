//! A NATS cluster of the test's own: nats-servers on loopback ports, each
//! with a cluster port and routes to all the others, every process killed by
//! pid on drop (also when the test panics).

use crate::free_port;
use crate::process::NatsServer;

/// Several nats-servers routed to each other (`--cluster`, `--routes`).
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, in the order of [`url`](Self::url); kill, restart or pause
    /// one through its `process`.
    pub nodes: Vec<NatsServer>,
    /// The JetStream store directories, removed on drop.
    stores: Vec<std::path::PathBuf>,
}

impl NatsCluster {
    /// Starts `size` nodes named `sbtest` on free ports and waits until each
    /// listens for clients (routes form a moment later; a test that needs
    /// them waits for a message across nodes). `None` (after a skip, or a
    /// failure in CI) if nats-server is not installed.
    pub fn start(size: usize) -> Option<Self> {
        Self::launch(size, false)
    }

    /// Like [`start`](Self::start), with JetStream on every node (`-js`,
    /// each with a store directory of its own that survives a restart of
    /// the node and is removed on drop): streams can be replicated.
    pub fn start_jetstream(size: usize) -> Option<Self> {
        Self::launch(size, true)
    }

    fn launch(size: usize, jetstream: bool) -> Option<Self> {
        let mut stores = Vec::new();
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes = Vec::with_capacity(size);
        for (index, port) in cluster_ports.iter().enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, port)| format!("nats://127.0.0.1:{port}"))
                .collect();
            let listen = format!("nats://127.0.0.1:{port}");
            let routes = routes.join(",");
            let name = format!("sbtest-node-{index}");
            let mut args = vec![
                "--name".to_string(),
                name,
                "--cluster_name".into(),
                "sbtest".into(),
                "--cluster".into(),
                listen,
                "--routes".into(),
                routes,
            ];
            if jetstream {
                let store = std::env::temp_dir().join(crate::unique("js-cluster"));
                std::fs::create_dir_all(&store).expect("creating a JetStream store directory");
                args.extend(["-js".into(), "-sd".into(), store.display().to_string()]);
                stores.push(store);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match NatsServer::start(&args) {
                Some(node) => nodes.push(node),
                None => {
                    for store in &stores {
                        let _ = std::fs::remove_dir_all(store);
                    }
                    return None;
                }
            }
        }
        Some(NatsCluster { nodes, stores })
    }

    /// Every node's client URL, comma-separated: `nats://127.0.0.1:P1,nats://127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node whose client port is `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port() == port)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
        }
        for store in &self.stores {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}
