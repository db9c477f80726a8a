//! Where a broker URL leads, so that `bridge` can tell when --from and --to
//! are one broker written two ways (`127.0.0.1` and `localhost`, a default
//! port left out, another user, another query): bridged to itself, a broker
//! gets every forwarded message back and forwards it again, forever.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// How long a host name may take to resolve; one that does not is compared
/// by its name only.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// The AMQP exchange a URL without `exchange=` publishes to (the AMQP
/// adapter's default).
const AMQP_DEFAULT_EXCHANGE: &str = switchboard::amqp::DEFAULT_EXCHANGE;

/// One broker URL, reduced to what decides which messages it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The driver's kind (`nats`, `redis`, ...): brokers of two kinds never
    /// share messages.
    kind: &'static str,
    /// The servers, as written (host lowercased, brackets taken off) with
    /// the scheme's port when none is written: any one of a list may be
    /// the one connected to.
    servers: BTreeSet<(String, u16)>,
    /// What names the broker where there is no host: the in-memory hub's
    /// name, a Redis unix socket's path.
    place: Option<String>,
    /// The part of one server whose messages are apart from the rest: an
    /// AMQP vhost and exchange. Empty where a server has no such parts (a
    /// Redis PUBSUB channel is global across database numbers, MQTT and
    /// NATS have none in the URL).
    scope: String,
}

impl Endpoint {
    /// Reads `url` (a resolved URL, not a bare kind); `None` for a URL this
    /// cannot read (the connection will say what is wrong with it) or of a
    /// driver it does not know.
    pub(super) fn parse(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once("://")?;
        let scheme = scheme.trim().to_ascii_lowercase();
        let kind = switchboard::drivers()
            .into_iter()
            .find(|driver| driver.takes_scheme(&scheme))?
            .kind();
        let default_port = match scheme.as_str() {
            "nats" | "tls" => 4222,
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => 6379,
            "amqp" => 5672,
            "amqps" => 5671,
            "mqtt" => 1883,
            "mqtts" => 8883,
            "memory" => {
                let parsed = url::Url::parse(url.trim()).ok()?;
                return Some(Self {
                    kind,
                    servers: BTreeSet::new(),
                    place: Some(format!(
                        "memory://{}",
                        parsed.host_str().unwrap_or_default()
                    )),
                    scope: String::new(),
                });
            }
            "redis+unix" | "unix" => return Some(Self::unix_socket(kind, url)),
            _ => return None,
        };
        // A list of servers: `nats://a:1,nats://b:2` (each with its scheme),
        // `amqp://u:p@a:5672,b:5672/vh` and `redis+cluster://a:1,b:2` (hosts
        // only after the first; the path and query follow the last).
        let mut servers = BTreeSet::new();
        let mut last = None;
        for part in url.trim().split(',') {
            let part = part.trim();
            let parsed = if part.contains("://") {
                url::Url::parse(part)
            } else {
                url::Url::parse(&format!("{scheme}://{part}"))
            }
            .ok()?;
            let host = parsed.host_str().filter(|host| !host.is_empty())?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            servers.insert((
                host.to_ascii_lowercase(),
                parsed.port().unwrap_or(default_port),
            ));
            last = Some(parsed);
        }
        let scope = match kind {
            "amqp" => amqp_scope(&last?),
            _ => String::new(),
        };
        Some(Self {
            kind,
            servers,
            place: None,
            scope,
        })
    }

    /// A Redis unix socket URL (`redis+unix://[:pw@]/path.sock[?db=N]`): the
    /// socket's path names the server.
    fn unix_socket(kind: &'static str, url: &str) -> Self {
        let rest = url.trim().split_once("://").map_or("", |(_, rest)| rest);
        let path_start = rest.find('/').unwrap_or(rest.len());
        let path = rest[path_start..]
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        let path = percent_decode_str(path).decode_utf8_lossy().into_owned();
        let place = std::fs::canonicalize(&path)
            .map(|canonical| canonical.to_string_lossy().into_owned())
            .unwrap_or(path);
        Self {
            kind,
            servers: BTreeSet::new(),
            place: Some(place),
            scope: String::new(),
        }
    }

    /// What `self` and `other` share, if they may be the same broker: a
    /// server (`127.0.0.1:4222`) both reach, or the socket or hub both name.
    /// Host names are resolved (`localhost` is `127.0.0.1` and `::1`), so
    /// this waits for the resolver (a few seconds at most).
    pub(super) async fn shared_with(&self, other: &Self) -> Option<String> {
        if self.kind != other.kind || self.scope != other.scope {
            return None;
        }
        if let (Some(place), Some(other_place)) = (&self.place, &other.place) {
            return (place == other_place).then(|| place.clone());
        }
        if let Some((host, port)) = self.servers.intersection(&other.servers).next() {
            return Some(show(host, *port));
        }
        let mine = resolve(&self.servers).await;
        let theirs = resolve(&other.servers).await;
        mine.intersection(&theirs).next().map(ToString::to_string)
    }
}

/// The AMQP vhost and exchange a parsed URL names: `amqp://h`, `amqp://h/`
/// and `amqp://h/%2f` are all the default vhost `/`.
fn amqp_scope(url: &url::Url) -> String {
    let vhost = match url.path() {
        "" | "/" => "/".to_string(),
        path => percent_decode_str(&path[1..])
            .decode_utf8_lossy()
            .into_owned(),
    };
    let exchange = url
        .query_pairs()
        .find(|(key, _)| key == "exchange")
        .map_or_else(
            || AMQP_DEFAULT_EXCHANGE.to_string(),
            |(_, v)| v.into_owned(),
        );
    format!("vhost {vhost}, exchange {exchange}")
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
async fn resolve(servers: &BTreeSet<(String, u16)>) -> BTreeSet<SocketAddr> {
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
