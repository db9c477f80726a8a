//! `switchboard worker --metrics ADDR`: the worker's Prometheus metrics and
//! health endpoints (the library's `Running::serve_metrics`).

use std::net::SocketAddr;

use switchboard::worker::{MetricsServer, Running};

/// The `--metrics` address: `HOST:PORT` with an IP address as host.
pub(crate) fn address(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--metrics {text:?} is not an address to listen on; give IP:PORT, e.g. 127.0.0.1:9464 (0.0.0.0:9464 for every interface)"
        )
    })
}

/// Starts serving `/metrics`, `/healthz` and `/readyz` of `running` on `addr`.
pub(crate) async fn serve(running: &Running, addr: SocketAddr) -> anyhow::Result<MetricsServer> {
    match running.serve_metrics(addr).await {
        Ok(server) => {
            eprintln!(
                "worker: metrics on http://{}/metrics (health: /healthz, /readyz)",
                server.local_addr()
            );
            Ok(server)
        }
        Err(error) => Err(anyhow::anyhow!(
            "{error}; pick another --metrics address (or stop what listens there)"
        )),
    }
}
