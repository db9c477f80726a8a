//! The URL and its options: what [`connect`](crate::connect) understands.

use std::fmt;
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use switchboard_core::options::{self, Query};
use switchboard_core::{Backoff, Error, Result};
use switchboard_tls::TlsOptions;
use url::Url;

use crate::tls::{tls_target, TlsTarget};

pub use switchboard_core::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE,
};

/// The exchange used when the URL names none.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";
/// Unacknowledged deliveries one subscription holds at most, unless configured.
pub const DEFAULT_PREFETCH: u16 = 256;
/// Published messages awaiting their broker confirm at most, unless configured.
pub const DEFAULT_CONFIRM_WINDOW: usize = 256;
/// RabbitMQ's default `max_message_size` (128 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 134_217_728;
/// The connection name RabbitMQ shows unless configured.
pub const DEFAULT_NAME: &str = "switchboard";

/// The query keys [`connect`](crate::connect) accepts: the keys every
/// adapter shares but `capacity` (`connect_timeout`, `flush_timeout`,
/// `name`, `keepalive`; `prefetch` bounds a subscription instead), AMQP's
/// own, the older spellings `connection_timeout` (milliseconds) and
/// `connection_name`, which still work, and on `amqps://` URLs the TLS keys
/// ([`options::TLS`]).
pub const QUERY_KEYS: &[&str] = &[
    options::CONNECT_TIMEOUT,
    options::FLUSH_TIMEOUT,
    options::NAME,
    options::KEEPALIVE,
    "exchange",
    "prefetch",
    "confirm_window",
    "max_payload",
    "heartbeat",
    "frame_max",
    "channel_max",
    "auth_mechanism",
    "connection_timeout",
    "connection_name",
    options::CA,
    options::CERT,
    options::KEY,
    options::TLS_SERVER_NAME,
];

/// Options of an AMQP connection: set with the builder methods, each named
/// after its option, and read from the public fields (as on every
/// switchboard adapter). Every option but `reconnect_backoff` can also be
/// set by a URL query key of the same name, which takes precedence.
///
/// ```
/// use std::time::Duration;
/// use switchboard_amqp::AmqpOptions;
/// let options = AmqpOptions::new()
///     .exchange("events")
///     .prefetch(64)
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!(options.exchange, "events");
/// assert_eq!(options.prefetch, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpOptions {
    /// How long connecting (and reconnecting, and declaring a subscription's
    /// queue) may take. URL: `connect_timeout=5s` (or the older
    /// `connection_timeout=` in milliseconds); default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long `flush` (and `close`, `Subscription::close`, and a delivery's
    /// `ack` or `nack`) wait for the broker. URL: `flush_timeout=10s`;
    /// default [`DEFAULT_FLUSH_TIMEOUT`].
    pub flush_timeout: Duration,
    /// The connection name RabbitMQ shows. URL: `name=api` (or the older
    /// `connection_name=`); default [`DEFAULT_NAME`].
    pub name: Option<String>,
    /// How soon a connection that passes nothing is declared dead (the AMQP
    /// heartbeat at half of it); `None` takes the broker's heartbeat. URL:
    /// `keepalive=15s`, `keepalive=off`; default [`DEFAULT_KEEPALIVE`].
    pub keepalive: Option<Duration>,
    /// The delays between a subscription's reconnection attempts (builder
    /// only); default [`Backoff::DEFAULT`].
    pub reconnect_backoff: Backoff,
    /// How `amqps://` connections verify the server and identify the client.
    /// URL: `ca=`, `cert=`, `key=`, `tls_server_name=`; default the platform's
    /// trust store.
    pub tls: TlsOptions,
    /// The topic exchange published to and bound to. URL: `exchange=`;
    /// default [`DEFAULT_EXCHANGE`].
    pub exchange: String,
    /// Unacknowledged deliveries one subscription holds (0: no limit). URL:
    /// `prefetch=`; default [`DEFAULT_PREFETCH`].
    pub prefetch: u16,
    /// Publishes that may be in flight (being written by lapin's I/O thread
    /// or awaiting their confirm) before `publish` waits (0 is read as 1). URL: `confirm_window=`; default [`DEFAULT_CONFIRM_WINDOW`].
    pub confirm_window: usize,
    /// The largest payload `publish` accepts. URL: `max_payload=`; default
    /// [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: usize,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            name: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            reconnect_backoff: Backoff::DEFAULT,
            tls: TlsOptions::new(),
            exchange: DEFAULT_EXCHANGE.to_string(),
            prefetch: DEFAULT_PREFETCH,
            confirm_window: DEFAULT_CONFIRM_WINDOW,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl AmqpOptions {
    /// The defaults: the `amq.topic` exchange, a prefetch and confirm window
    /// of 256, 5 s to connect, 10 s to flush, a 15 s keepalive, reconnect
    /// backoff 100 ms to 5 s, 128 MiB payloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long connecting (and reconnecting, and declaring a subscription's
    /// queue) may take before failing (default 5 s; URL `?connect_timeout=5s`,
    /// or the older `?connection_timeout=` in milliseconds).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `flush` (and the flush in `close`) waits for the broker's
    /// confirms before failing with [`Error::Timeout`]; the confirms not seen
    /// yet stay counted, so a later `flush` waits for them again. Also the
    /// most `close` and `Subscription::close` wait for the broker to confirm
    /// the close, and a delivery's `ack` or `nack` waits to be sent (default
    /// 10 s; URL `?flush_timeout=10s`).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The connection name RabbitMQ shows (`rabbitmqctl list_connections
    /// client_properties`, management UI); default `switchboard`; URL `?name=`
    /// (or the older `?connection_name=`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How soon a connection that passes nothing is declared dead: it is the
    /// AMQP heartbeat, whole seconds, at half of it (RabbitMQ and lapin give a
    /// connection up after two heartbeats without a frame). A dead connection
    /// makes every subscription yield
    /// [`Error::Disconnected`](switchboard_core::Error::Disconnected) and
    /// resubscribe. `None` takes the broker's heartbeat (RabbitMQ: 60 s, so
    /// about 2 minutes). Default 15 s; URL `?keepalive=15s`, `?keepalive=off`
    /// (or lapin's `?heartbeat=` in seconds, which wins).
    pub fn keepalive(mut self, keepalive: Option<Duration>) -> Self {
        self.keepalive = keepalive.filter(|k| !k.is_zero());
        self
    }

    /// The delays between a lost subscription's attempts to declare its
    /// queue, binding and consumer again: `min` doubling to `max`
    /// ([`Backoff::DEFAULT`], 100 ms to 5 s, as on every adapter). Not a URL option.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// How `amqps://` connections verify the server and identify the client:
    /// CA files, a client certificate, the server name. URL: `ca=PATH`,
    /// `cert=PATH&key=PATH`, `tls_server_name=NAME` (added to what is set here).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The topic exchange to publish to and bind to (default `amq.topic`; URL `?exchange=`).
    /// Another name is declared as a durable topic exchange; other `amq.*`
    /// names are refused (they are the broker's own, none of them a usable topic exchange).
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The most unacknowledged deliveries a subscription holds (default 256;
    /// URL `?prefetch=`; 0 means no limit, not recommended).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How many published messages may be in flight (being written or
    /// awaiting their broker confirm) before `publish` waits for the oldest (default 256; URL `?confirm_window=`; at least 1).
    pub fn confirm_window(mut self, window: usize) -> Self {
        self.confirm_window = window.max(1);
        self
    }

    /// The largest payload `publish` accepts, matching the server's
    /// `max_message_size` (default 128 MiB, RabbitMQ's default; URL `?max_payload=`).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }
}

/// A parsed URL: where to connect (for lapin) and our options.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) uri: AMQPUri,
    /// The URL as given, password redacted, for messages.
    pub(crate) redacted: String,
    pub(crate) options: AmqpOptions,
    /// For `amqps://`: switchboard's rustls configuration.
    pub(crate) tls: Option<TlsTarget>,
    /// Every host of the URL (`host:port`), tried in this order on each
    /// connect and reconnect; the first is also `uri`'s.
    pub(crate) hosts: Vec<(String, u16)>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URI holds the password: show only the redacted URL.
        f.debug_struct("Config")
            .field("url", &self.redacted)
            .field("options", &self.options)
            .finish()
    }
}

impl Config {
    pub(crate) fn parse(url: &str, mut options: AmqpOptions) -> Result<Config> {
        let (first_only, more_hosts) = split_hosts(url)?;
        let parsed = Url::parse(&first_only).map_err(|e| {
            Error::invalid_url(
                url,
                format!("{e}; expected amqp://user:password@host:5672/vhost"),
            )
        })?;
        let scheme = match parsed.scheme() {
            "amqp" => AMQPScheme::AMQP,
            "amqps" => AMQPScheme::AMQPS,
            other => {
                return Err(Error::invalid_url(
                    url,
                    format!("scheme `{other}` is not AMQP; use amqp:// or amqps://"),
                ))
            }
        };
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
            _ => {
                return Err(Error::invalid_url(
                    url,
                    "no host; expected amqp://user:password@host:5672/vhost",
                ))
            }
        }
        .to_string();
        let username = match parsed.username() {
            "" => "guest".to_string(),
            u => options::decode(url, "user name", u)?,
        };
        let password = match parsed.password() {
            None => "guest".to_string(),
            Some(p) => options::decode(url, "password", p)?,
        };
        // `amqp://host`, `amqp://host/` and `amqp://host/%2f` all mean the default vhost `/`.
        let vhost = match parsed.path() {
            "" | "/" => "/".to_string(),
            path => {
                let raw = &path[1..];
                if raw.contains('/') {
                    return Err(Error::invalid_url(
                        url,
                        "the vhost must be one path segment; write `/` inside it as %2f",
                    ));
                }
                options::decode(url, "vhost", raw)?
            }
        };
        let query = Query::parse(url, &parsed, QUERY_KEYS)?;
        let heartbeat = apply_query(&query, &mut options)?;
        let tls_in_url = options.tls.apply_url_query(url, &query)?;
        let mut query = AMQPQueryString {
            heartbeat,
            frame_max: query.parse_as("frame_max", "a number of bytes")?,
            channel_max: query.parse_as("channel_max", "a number of channels")?,
            auth_mechanism: query.parse_as(
                "auth_mechanism",
                "one of plain, amqplain, external or anonymous",
            )?,
            ..Default::default()
        };
        if options.exchange.starts_with("amq.") && options.exchange != DEFAULT_EXCHANGE {
            return Err(Error::invalid_url(
                url,
                format!(
                    "exchange `{}` is reserved by the broker and not a usable topic exchange; use amq.topic or a name of your own (switchboard declares it)",
                    options.exchange
                ),
            ));
        }
        if lapin::types::ShortString::try_new(options.exchange.clone()).is_err() {
            return Err(Error::invalid_url(
                url,
                "the exchange name is longer than 255 bytes",
            ));
        }
        // lapin bounds its TCP connect by this; the whole handshake is bounded by `connect`.
        query.connection_timeout = Some(options.connect_timeout.as_millis().max(1) as u64);
        let port = parsed.port().unwrap_or_else(|| scheme.default_port());
        let mut hosts = vec![(host.clone(), port)];
        for more in more_hosts {
            hosts.push(parse_host(
                url,
                parsed.scheme(),
                &more,
                scheme.default_port(),
            )?);
        }
        let tls = tls_target(url, &options, tls_in_url, scheme.clone(), &hosts)?;
        Ok(Config {
            uri: AMQPUri {
                scheme,
                authority: AMQPAuthority {
                    userinfo: AMQPUserInfo { username, password },
                    host,
                    port,
                },
                vhost,
                query,
            },
            redacted: switchboard_core::redact_url(url),
            options,
            tls,
            hosts,
        })
    }

    /// `host:port`, for messages; with a list of hosts, all of them
    /// (`a:5672 or b:5672`).
    pub(crate) fn address(&self) -> String {
        self.hosts
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// Splits a URL with a list of hosts (`amqp://u:p@h1:5672,h2:5673/vhost`)
/// into the URL with only the first host, which the URL parser reads, and
/// the other `host[:port]` entries as written.
fn split_hosts(url: &str) -> Result<(String, Vec<String>)> {
    let Some(scheme_end) = url.find("://") else {
        return Ok((url.to_string(), Vec::new()));
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |end| authority_start + end);
    let hosts_start = url[authority_start..authority_end]
        .rfind('@')
        .map_or(authority_start, |at| authority_start + at + 1);
    let hosts = &url[hosts_start..authority_end];
    if !hosts.contains(',') {
        return Ok((url.to_string(), Vec::new()));
    }
    let mut entries = hosts.split(',').map(str::trim);
    let first = entries.next().unwrap_or_default();
    let more: Vec<String> = entries.map(str::to_string).collect();
    if first.is_empty() || more.iter().any(String::is_empty) {
        return Err(Error::invalid_url(
            url,
            "an empty entry in the list of hosts; expected amqp://user:password@host1:5672,host2:5672/vhost",
        ));
    }
    let first_only = format!("{}{first}{}", &url[..hosts_start], &url[authority_end..]);
    Ok((first_only, more))
}

/// One `host[:port]` entry of a list of hosts.
fn parse_host(url: &str, scheme: &str, entry: &str, default_port: u16) -> Result<(String, u16)> {
    let invalid = |why: String| {
        Error::invalid_url(
            url,
            format!("the host `{entry}` in the list {why}; each entry is host[:port], e.g. amqp://user:password@host1:5672,host2:5672/vhost"),
        )
    };
    let parsed = Url::parse(&format!("{scheme}://{entry}"))
        .map_err(|e| invalid(format!("is not valid ({e})")))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("names no host".to_string()))?;
    if !matches!(parsed.path(), "" | "/")
        || parsed.query().is_some()
        || !parsed.username().is_empty()
    {
        return Err(invalid(
            "has more than host and port (credentials, vhost and query are written once, around the list)".to_string(),
        ));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        parsed.port().unwrap_or(default_port),
    ))
}

/// Applies the query to `options`; returns the AMQP heartbeat to ask for (in
/// seconds; `None`: the broker's).
fn apply_query(query: &Query, options: &mut AmqpOptions) -> Result<Option<u16>> {
    if let Some(exchange) = query.text("exchange") {
        if exchange.is_empty() {
            return Err(query.invalid(
                "exchange",
                exchange,
                "a topic exchange's name such as amq.topic (the default exchange cannot route by topic)",
            ));
        }
        options.exchange = exchange.to_string();
    }
    if let Some(prefetch) = query.parse_as("prefetch", "a number from 0 to 65535")? {
        options.prefetch = prefetch;
    }
    if let Some(ms) = query.parse_as::<u64>("connection_timeout", "a number of milliseconds")? {
        options.connect_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(timeout) = query.duration(options::CONNECT_TIMEOUT)? {
        options.connect_timeout = timeout;
    }
    if let Some(timeout) = query.duration(options::FLUSH_TIMEOUT)? {
        options.flush_timeout = timeout;
    }
    if let Some(window) = query.count("confirm_window")? {
        options.confirm_window = window;
    }
    if let Some(name) = query
        .text(options::NAME)
        .or_else(|| query.text("connection_name"))
    {
        options.name = Some(name.to_string());
    }
    // 0 would refuse every message, the empty one included.
    if let Some(max) = query.count("max_payload")? {
        options.max_payload = max;
    }
    if let Some(keepalive) = query.keepalive()? {
        options.keepalive = keepalive;
    }
    let heartbeat = query.parse_as::<u16>("heartbeat", "a number of seconds (0 to 65535)")?;
    if heartbeat.is_some() && query.has(options::KEEPALIVE) {
        return Err(query.invalid(
            "heartbeat",
            query.text("heartbeat").unwrap_or_default(),
            "left out when `keepalive` is given (keepalive sets the heartbeat)",
        ));
    }
    Ok(heartbeat.or_else(|| options.keepalive.map(heartbeat_for)))
}

/// The AMQP heartbeat (whole seconds, at least 1) that notices a dead link
/// after about `keepalive`: both ends give up after two silent heartbeats.
pub(crate) fn heartbeat_for(keepalive: Duration) -> u16 {
    u16::try_from(keepalive.as_secs() / 2)
        .unwrap_or(u16::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Config> {
        Config::parse(url, AmqpOptions::default())
    }

    #[test]
    fn lists_of_hosts() {
        let c =
            parse("amqp://u:p%2Cw@a.example:5673,b.example, [::1]:5675/prod?prefetch=3").unwrap();
        assert_eq!(
            c.hosts,
            vec![
                ("a.example".to_string(), 5673),
                ("b.example".to_string(), 5672),
                ("::1".to_string(), 5675)
            ]
        );
        assert_eq!(c.uri.authority.host, "a.example");
        assert_eq!(c.uri.authority.userinfo.password, "p,w");
        assert_eq!(c.uri.vhost, "prod");
        assert_eq!(c.options.prefetch, 3);
        assert_eq!(c.address(), "a.example:5673 or b.example:5672 or ::1:5675");
        assert_eq!(parse("amqps://a,b").unwrap().hosts[1].1, 5671);
        assert_eq!(parse("amqp://h:1/").unwrap().hosts.len(), 1);
        for (bad, needle) in [
            ("amqp://u:secret@a,,b/", "empty entry"),
            ("amqp://u:secret@a,/", "empty entry"),
            ("amqp://u:secret@a,b:x/", "`b:x`"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn max_payload_is_a_number_above_zero() {
        assert_eq!(
            parse("amqp://h/?max_payload=10")
                .unwrap()
                .options
                .max_payload,
            10
        );
        for bad in ["0", "x", "-1"] {
            let e = parse(&format!("amqp://h/?max_payload={bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("a whole number above 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_and_params() {
        let c = parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(c.uri.vhost, "/");
        assert_eq!(c.uri.authority.host, "127.0.0.1");
        assert_eq!(c.uri.authority.port, 5672);
        assert_eq!(c.options.exchange, "amq.topic");
        let c = parse("amqps://u:p%40ss@broker.example/prod?exchange=events&prefetch=10&heartbeat=30&connection_timeout=1500").unwrap();
        assert_eq!(c.uri.authority.port, 5671);
        assert_eq!(c.uri.authority.userinfo.password, "p@ss");
        assert_eq!(c.uri.vhost, "prod");
        assert_eq!(c.options.exchange, "events");
        assert_eq!(c.options.prefetch, 10);
        assert_eq!(c.uri.query.heartbeat, Some(30));
        assert_eq!(c.options.connect_timeout, Duration::from_millis(1500));
        assert!(!format!("{c:?}").contains("p@ss"));
        // The keys every adapter shares, with humantime durations.
        let c =
            parse("amqp://h/?connect_timeout=2s&flush_timeout=3s&name=api&keepalive=10s").unwrap();
        assert_eq!(c.options.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.options.flush_timeout, Duration::from_secs(3));
        assert_eq!(c.options.name.as_deref(), Some("api"));
        assert_eq!(c.uri.query.heartbeat, Some(5));
        assert_eq!(parse("amqp://h").unwrap().uri.query.heartbeat, Some(7));
        assert_eq!(
            parse("amqp://h?keepalive=off").unwrap().uri.query.heartbeat,
            None
        );
        assert_eq!(
            parse("amqp://h?keepalive=1s").unwrap().uri.query.heartbeat,
            Some(1)
        );
        assert_eq!(
            parse("amqp://h?connection_name=old")
                .unwrap()
                .options
                .name
                .as_deref(),
            Some("old")
        );
        assert_eq!(parse("amqp://h").unwrap().uri.vhost, "/");
        assert_eq!(parse("amqp://h/").unwrap().uri.vhost, "/");
        assert_eq!(
            parse("amqp://[::1]:5673/v").unwrap().uri.authority.host,
            "::1"
        );
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        let e = parse("amqp://u:secret@h/?exchnage=x&foo=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`exchnage`") && e.contains("`prefetch`"), "{e}");
        assert!(
            e.contains("`ca`, `cert`, `key` and `tls_server_name`"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        for key in options::COMMON.iter().chain(&switchboard_tls::QUERY_KEYS) {
            if *key != options::CAPACITY {
                assert!(QUERY_KEYS.contains(key), "{key}");
            }
        }
        for (url, needle) in [
            ("amqp://h/%zz", "`%zz`"),
            ("amqp://u:p%2@h/", "a `%` at character 2"),
            ("amqp://h/?connect_timeout=5000", "`connect_timeout=5000`"),
            ("amqp://h/?keepalive=5s&heartbeat=3", "`heartbeat=3`"),
            ("amqp://h/?auth_mechanism=magic", "`auth_mechanism=magic`"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
        let e = parse("amqp://h/?prefetch=lots").unwrap_err().to_string();
        assert!(e.contains("prefetch=lots"), "{e}");
        let e = parse("http://h/").unwrap_err().to_string();
        assert!(e.contains("amqp://"), "{e}");
        assert!(parse("amqp://").is_err());
        assert!(parse("not a url").is_err());
        assert!(parse("amqp://h/a/b").is_err());
        assert!(parse("amqp://h/?exchange=").is_err());
        let e = parse("amqp://h/?ca=/ca.pem").unwrap_err().to_string();
        assert!(e.contains("write amqps://"), "{e}");
        let e = parse("amqps://h/?ca=/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{e}"
        );
        // Set in code, TLS settings apply to amqps:// URLs and are left unused on amqp://.
        let coded = AmqpOptions::default().tls(TlsOptions::new().ca("/nonexistent/ca.pem"));
        assert!(Config::parse("amqp://h", coded).unwrap().tls.is_none());
        // `ca` may be repeated; every file is kept, in order.
        let e = parse("amqps://h/?ca=/nonexistent/a.pem&ca=/nonexistent/b.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/a.pem"), "{e}");
        let e = parse("amqps://h/?key=/k.pem").unwrap_err().to_string();
        assert!(e.contains("without `cert`"), "{e}");
        let e = parse("amqp://h/?exchange=amq.direct")
            .unwrap_err()
            .to_string();
        assert!(e.contains("amq.direct") && e.contains("amq.topic"), "{e}");
    }
}
