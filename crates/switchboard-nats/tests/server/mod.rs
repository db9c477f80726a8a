//! Test support: the shared server's URL, or a skip. Servers of a test's
//! own, unique names and free ports come from `switchboard_testkit`.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::Duration;

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
