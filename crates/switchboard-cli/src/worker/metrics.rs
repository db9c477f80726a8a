//! `switchboard worker --metrics ADDR`: the worker's Prometheus metrics and
//! health endpoints (the library's `Running::serve_metrics`).

use std::net::SocketAddr;

use switchboard::worker::{MetricsServer, Running};

/// The `--metrics` address: `HOST:PORT`, the host an IP address or a name
/// (`localhost:9464`), which is looked up once; the first address it has is
/// the one listened on.
pub(crate) fn address(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let usage = "give HOST:PORT, e.g. 127.0.0.1:9464 (0.0.0.0:9464 for every interface)";
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(mut found) => found.next().ok_or_else(|| {
            anyhow::anyhow!("--metrics {text:?}: the host name has no address; {usage}")
        }),
        Err(error) => Err(anyhow::anyhow!(
            "--metrics {text:?} is not an address to listen on ({error}); {usage}"
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_host_names() {
        assert_eq!(address("127.0.0.1:9464").unwrap().port(), 9464);
        let local = address("localhost:9465").unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 9465);
        for bad in ["9464", "localhost", "127.0.0.1:x"] {
            let error = address(bad).unwrap_err().to_string();
            assert!(error.contains("give HOST:PORT"), "{bad}: {error}");
        }
    }
}
