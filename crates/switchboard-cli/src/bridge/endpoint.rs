//! Where a broker URL leads, so that `bridge` can tell when --from and --to
//! are one broker written two ways (`127.0.0.1` and `localhost`, a default
//! port left out, another user, another query): bridged to itself, a broker
//! gets every forwarded message back and forwards it again, forever.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use switchboard::Location;

/// How long a host name may take to resolve; one that does not is compared
/// by its name only.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// One broker URL, reduced to what decides which messages it carries: the
/// driver's kind (brokers of two kinds never share messages) and where the
/// driver says the URL leads (its servers with default ports filled in, or
/// the hub or socket it names, and on AMQP the vhost and exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    kind: &'static str,
    location: Location,
}

impl Endpoint {
    /// Reads `url` (a resolved URL, not a bare kind) with its driver's own
    /// parser; `None` for a URL the driver cannot read (the connection will
    /// say what is wrong with it) or of a driver that does not say where its
    /// URLs lead.
    pub(super) fn parse(url: &str) -> Option<Self> {
        let (scheme, _) = url.trim().split_once("://")?;
        let driver = switchboard::drivers()
            .into_iter()
            .find(|driver| driver.takes_scheme(scheme))?;
        Some(Self {
            kind: driver.kind(),
            location: driver.locate(url.trim())?,
        })
    }

    /// What `self` and `other` share, if they may be the same broker: a
    /// server (`127.0.0.1:4222`) both reach, or the socket or hub both name.
    /// Host names are resolved (`localhost` is `127.0.0.1` and `::1`), so
    /// this waits for the resolver (a few seconds at most).
    pub(super) async fn shared_with(&self, other: &Self) -> Option<String> {
        let (mine, theirs) = (&self.location, &other.location);
        if self.kind != other.kind || mine.scope() != theirs.scope() {
            return None;
        }
        if let (Some(place), Some(other_place)) = (mine.named_place(), theirs.named_place()) {
            return (place == other_place).then(|| place.to_string());
        }
        if let Some((host, port)) = mine.shared_servers(theirs).next() {
            return Some(show(host, *port));
        }
        let mine = resolve(mine.server_list()).await;
        let theirs = resolve(theirs.server_list()).await;
        mine.intersection(&theirs).next().map(ToString::to_string)
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn show(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// The socket addresses `servers` stand for. A name that does not resolve
/// in time stands for nothing more than itself (compared by name already).
async fn resolve(servers: impl Iterator<Item = &(String, u16)>) -> BTreeSet<SocketAddr> {
    let mut addresses = BTreeSet::new();
    for (host, port) in servers {
        if let Ok(ip) = host.parse::<IpAddr>() {
            addresses.insert(same_machine(SocketAddr::new(ip, *port)));
            continue;
        }
        let lookup = tokio::net::lookup_host((host.as_str(), *port));
        if let Ok(Ok(found)) = tokio::time::timeout(RESOLVE_DEADLINE, lookup).await {
            addresses.extend(found.map(same_machine));
        }
    }
    addresses
}

/// `address` as the one a connection to it reaches: an IPv4 address written
/// as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address, and the unspecified
/// address (`0.0.0.0`, `::`), which a connection takes for this machine, is
/// the loopback address.
fn same_machine(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip().to_canonical() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::Endpoint;

    /// What `a` and `b` share, read from URLs.
    async fn shared(a: &str, b: &str) -> Option<String> {
        let (a, b) = (Endpoint::parse(a).unwrap(), Endpoint::parse(b).unwrap());
        let shared = a.shared_with(&b).await;
        assert_eq!(shared, b.shared_with(&a).await, "not symmetric");
        shared
    }

    #[tokio::test]
    async fn one_broker_written_two_ways_is_found() {
        for (a, b, what) in [
            (
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1:4222",
                "127.0.0.1:4222",
            ),
            (
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1:4222/",
                "127.0.0.1:4222",
            ),
            (
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1",
                "127.0.0.1:4222",
            ),
            (
                "nats://127.0.0.1:4222",
                "tls://u:pw@127.0.0.1:4222?name=x",
                "127.0.0.1:4222",
            ),
            (
                "nats://a:1,nats://127.0.0.1:4222",
                "nats://127.0.0.1:4222",
                "127.0.0.1:4222",
            ),
            (
                "nats://[::1]:4222",
                "nats://[0:0:0:0:0:0:0:1]:4222",
                "[::1]:4222",
            ),
            (
                "nats://0.0.0.0:4222",
                "nats://127.0.0.1:4222",
                "127.0.0.1:4222",
            ),
            (
                "nats://HOST.example:1",
                "nats://host.example:1",
                "host.example:1",
            ),
            // PUBSUB reaches every database number.
            (
                "redis://127.0.0.1:6379/0",
                "redis://:pw@127.0.0.1/3",
                "127.0.0.1:6379",
            ),
            (
                "redis+cluster://a:7000,127.0.0.1:7001",
                "redis://127.0.0.1:7001",
                "127.0.0.1:7001",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://127.0.0.1",
                "127.0.0.1:5672",
            ),
            (
                "amqp://h:5672,127.0.0.1:5673/vh",
                "amqp://u@127.0.0.1:5673/vh",
                "127.0.0.1:5673",
            ),
            (
                "mqtt://127.0.0.1",
                "mqtt://u:pw@127.0.0.1:1883",
                "127.0.0.1:1883",
            ),
            ("memory://", "memory://?capacity=8", "memory://"),
            (
                "redis+unix:///tmp/r.sock",
                "unix://:pw@/tmp/r.sock?db=2",
                "/tmp/r.sock",
            ),
        ] {
            assert_eq!(shared(a, b).await.as_deref(), Some(what), "{a} and {b}");
        }
    }

    /// `localhost` resolves to the loopback address (IPv4, IPv6 or both).
    #[tokio::test]
    async fn host_names_are_resolved() {
        let v4 = shared("nats://127.0.0.1:4222", "nats://localhost:4222").await;
        let v6 = shared("nats://[::1]:4222", "nats://localhost:4222").await;
        assert!(v4.is_some() || v6.is_some(), "localhost is not loopback");
    }

    #[tokio::test]
    async fn different_brokers_are_told_apart() {
        for (a, b) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223"),
            ("nats://127.0.0.1:4222", "redis://127.0.0.1:4222"),
            ("amqp://127.0.0.1/%2f", "amqp://127.0.0.1/other"),
            ("amqp://127.0.0.1", "amqp://127.0.0.1?exchange=mine"),
            ("amqp://127.0.0.1", "amqps://127.0.0.1"),
            ("mqtt://127.0.0.1", "mqtts://127.0.0.1"),
            ("memory://a", "memory://b"),
            ("redis+unix:///tmp/a.sock", "redis+unix:///tmp/b.sock"),
            ("nats://a.invalid:1", "nats://b.invalid:1"),
        ] {
            assert_eq!(shared(a, b).await, None, "{a} and {b}");
        }
    }

    #[test]
    fn unreadable_urls_are_left_to_the_connection() {
        for url in ["nonsense", "kafka://h", "nats://u:pa#ss@h", "nats://"] {
            assert_eq!(Endpoint::parse(url), None, "{url}");
        }
    }
}
