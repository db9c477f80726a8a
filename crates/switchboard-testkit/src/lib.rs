//! Fixtures for switchboard's own tests (not published).
//!
//! - [`unique`] names and [`free_port`]s, so test runs never see each other;
//! - [`process`]: broker servers of a test's own (nats-server, redis-server,
//!   mosquitto with or without a password file, …) on
//!   private loopback ports, killed by pid on drop, restartable, pausable
//!   (`SIGSTOP`) to freeze a live connection;
//! - [`TcpProxy`] (from `switchboard-conformance`): a TCP proxy the test controls, to freeze a link (bytes stop
//!   flowing, sockets stay open) or cut it (every connection reset);
//! - [`certs`]: a [`Pki`] made per test (a CA, a server certificate for the
//!   loopback names, a client certificate, an untrusted CA) in PEM files, for
//!   nats-server and redis-server with TLS ([`NatsServer::start_tls`],
//!   [`RedisServer::start_mutual_tls`], …) and for [`tls_proxy`]: a
//!   [`TlsProxy`] terminating TLS (optionally mutual) in front of a plain port;
//! - [`tls_checks`](mod@tls_checks): the TLS behaviour every adapter shows (`ca`, mutual TLS,
//!   `tls_server_name`, one-line errors), checked once for all against a
//!   listener the adapter's test starts;
//! - [`nats_auth`]: NKey users and an operator-mode (JWT, `.creds`) setup
//!   made per test, with nats-servers configured for them;
//! - [`nats_cluster`]: a [`NatsCluster`] of nats-servers routed to each other;
//! - [`redis_cluster`]: a [`RedisCluster`] of redis-servers in cluster mode;
//! - [`rabbit`]: a [`RabbitNode`] of the test's own (its own node name, ports
//!   and data), to kill and start again;
//! - [`restart_drill`]: the [`RestartDrill`] every durable mode goes through:
//!   numbered messages at a steady rate while the broker is killed twice;
//! - [`errors`]: checks on how an error reads with its chain of sources;
//! - [`subscription_scale`](mod@subscription_scale): the measurement of N idle
//!   subscriptions on one handle that each adapter's ignored `tests/scale.rs` runs.
//!
//! A fixture that cannot start (no binary on this machine) returns `None` after
//! [`switchboard_conformance::skip_or_fail`], so a missing tool is a skip
//! locally and a failure in CI (`SWITCHBOARD_REQUIRE_BROKERS=1`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Test fixtures: a fixture that cannot do its job must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod certs;
pub mod errors;
pub mod nats_auth;
pub mod nats_cluster;
pub mod process;
pub mod rabbit;
pub mod redis_cluster;
pub mod restart_drill;
pub mod subscription_scale;
pub mod tls_checks;
pub mod tls_proxy;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use certs::Pki;
pub use errors::assert_chain_does_not_repeat;
pub use nats_auth::{NatsAuth, NatsOperator, NkeyUser};
pub use nats_cluster::NatsCluster;
pub use process::{BrokerProcess, MosquittoServer, NatsServer, RedisServer};
pub use rabbit::{RabbitCluster, RabbitNode};
pub use redis_cluster::RedisCluster;
pub use restart_drill::{DrillReport, Received, RestartDrill};
pub use subscription_scale::{scale_count, subscription_scale};
/// The TCP proxy lives in the conformance suite, whose link cases cut connections with it.
pub use switchboard_conformance::TcpProxy;
pub use tls_checks::{TlsChecks, TlsEndpoint};
pub use tls_proxy::TlsProxy;

/// A name (subject prefix, queue, consumer) no other test or test run uses:
/// `sbtest.<test>.p<pid>n<nanos>c<counter>`. Valid as a subject prefix on every broker.
pub fn unique(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "sbtest.{test}.p{}n{nanos}c{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port nothing listens on right now, never handed out before
/// in this process.
///
/// Ports come from below Linux's ephemeral range (32768–60999), walking from a
/// start that depends on the process id: a port the kernel gave out with
/// `bind(0)` could be given again to the next caller, or to a client
/// connection's own end, between the moment it is freed here and the moment
/// the server a test starts binds it — two fixtures started at once would
/// then share a port.
///
/// On Linux the check reads the kernel's socket tables instead of binding the
/// port: a probe listener, however briefly open, is copied into any child
/// another test thread forks at that moment and keeps listening there until
/// the child's `exec`. A server started on the port meanwhile looked ready
/// (the copy accepted the readiness check), then the copy closed and the
/// test's first connection was refused or reset (seen in CI, and in 1 of ~40
/// runs of switchboard-redis's durable tests).
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let taken = ports_in_use();
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = FIRST + (start + step) % SPAN;
        let port = u16::try_from(port).expect("below 32000");
        let free = match &taken {
            Some(taken) => !taken.contains(&port),
            None => TcpListener::bind(("127.0.0.1", port)).is_ok(),
        };
        if free {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// The local ports of every TCP socket (any state, IPv4 and IPv6) in the
/// kernel's tables, or `None` where `/proc/net/tcp` cannot be read.
fn ports_in_use() -> Option<std::collections::HashSet<u16>> {
    let mut ports = std::collections::HashSet::new();
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        // `  sl  local_address rem_address st …`, local_address as HEXIP:HEXPORT.
        for line in text.lines().skip(1) {
            let local = line.split_whitespace().nth(1).unwrap_or_default();
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    read_any.then_some(ports)
}

/// `127.0.0.1:P1,127.0.0.1:P2,…`: the host list of a cluster URL.
pub(crate) fn loopback_hosts(ports: impl IntoIterator<Item = u16>) -> String {
    ports
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_listening_port_is_seen_as_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = ports_in_use().expect("this machine has /proc/net/tcp");
        assert!(
            taken.contains(&port),
            "{port} not among {} ports",
            taken.len()
        );
    }

    #[test]
    fn free_ports_are_not_listened_on_and_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "something listens on {port}"
            );
        }
    }
}
