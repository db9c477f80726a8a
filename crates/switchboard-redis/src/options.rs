//! [`RedisOptions`] and the parsing of `redis://` / `rediss://` URLs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_core::options::{self, Query};
use switchboard_core::{Backoff, Error, Result};
use switchboard_tls::TlsOptions;

use crate::tls::{tls_target, TlsTarget};
use crate::RedisBroker;

pub use switchboard_core::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE,
};

/// Deliveries a subscription buffers before it drops (and counts) what comes, unless configured.
///
/// 2^20, as for NATS: Redis disconnects a subscriber whose server-side backlog
/// passes `client-output-buffer-limit pubsub` (32 MiB by default), which a
/// burst from switchboard's pipelined publisher (1–2 M msg/s) fills in a
/// fraction of a second; reading ahead into this buffer absorbs such bursts.
/// The buffer holds deliveries, not bytes: lower it where messages are large
/// and memory is tight.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Entries a durable subject space's stream keeps at most, unless configured
/// (`XADD ... MAXLEN ~ N`): about a million messages, so a consumer can be
/// away for a while under load without the stream growing without bound.
/// Entries trimmed past the cap are gone even if not yet acknowledged.
pub const DEFAULT_STREAM_MAXLEN: usize = 1_000_000;

/// The URL key setting [`RedisOptions::stream_maxlen`].
pub const STREAM_MAXLEN: &str = "stream_maxlen";

/// The connection name Redis shows (`CLIENT LIST`) unless configured.
pub const DEFAULT_NAME: &str = "switchboard";

/// The URL key giving the database on unix socket URLs
/// (`redis+unix:///run/redis.sock?db=2`), whose path is the socket's; a TCP
/// URL gives it as its path (`redis://host/2`).
pub const DB: &str = "db";

/// The URL query keys the Redis adapter takes: the ones every adapter shares
/// ([`options::COMMON`]), [`DB`] on unix socket URLs and, on `rediss://`
/// URLs, the TLS ones ([`options::TLS`], see [`RedisOptions::tls`]).
pub const QUERY_KEYS: &[&str] = &[
    options::CONNECT_TIMEOUT,
    options::FLUSH_TIMEOUT,
    options::CAPACITY,
    options::NAME,
    options::KEEPALIVE,
    STREAM_MAXLEN,
    DB,
    options::CA,
    options::CERT,
    options::KEY,
    options::TLS_SERVER_NAME,
];

/// The schemes of unix socket URLs.
const UNIX_SCHEMES: [&str; 2] = ["redis+unix", "unix"];

/// The scheme of Redis Cluster URLs.
const CLUSTER_SCHEME: &str = "redis+cluster";

/// The scheme of a Redis Cluster over TLS.
const TLS_CLUSTER_SCHEME: &str = "rediss+cluster";

/// The port of a URL that names none.
const DEFAULT_PORT: u16 = 6379;

/// Options of a Redis connection: set with the builder methods, each named
/// after its option, and read from the public fields (as on every
/// switchboard adapter). [`connect`](crate::connect) uses the defaults. Every
/// option but `reconnect_backoff` can also be set in the URL's query
/// ([`QUERY_KEYS`]), which wins:
/// `redis://host?connect_timeout=2s&capacity=65536&name=billing&keepalive=10s`.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// use std::time::Duration;
/// use switchboard_redis::RedisOptions;
/// let broker = RedisOptions::new()
///     .connect_timeout(Duration::from_secs(2))
///     .flush_timeout(Duration::from_secs(3))
///     .name("billing")
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// assert_eq!(broker.options().name.as_deref(), Some("billing"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// How long connecting may take (TCP, TLS, `AUTH`, `SELECT`). URL:
    /// `connect_timeout=5s`; default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long `flush` (and the flush in `close`) waits for Redis's replies.
    /// URL: `flush_timeout=10s`; default [`DEFAULT_FLUSH_TIMEOUT`].
    pub flush_timeout: Duration,
    /// Deliveries each subscription buffers before it drops what comes and
    /// reports how many (0 is read as 1). URL: `capacity=N`; default [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// The name connections show in `CLIENT LIST` (subscriptions add
    /// `-sub`; characters other than visible ASCII become `-`). URL:
    /// `name=billing`; default [`DEFAULT_NAME`].
    pub name: Option<String>,
    /// How soon a connection that passes nothing is declared dead; `None`
    /// leaves it to TCP keepalive. URL: `keepalive=15s`, `keepalive=off`;
    /// default [`DEFAULT_KEEPALIVE`].
    pub keepalive: Option<Duration>,
    /// The delays between reconnection attempts (builder only); default
    /// [`Backoff::DEFAULT`].
    pub reconnect_backoff: Backoff,
    /// How `rediss://` connections verify the server and identify the
    /// client. URL: `ca=`, `cert=`, `key=`, `tls_server_name=`; default the
    /// platform's trust store.
    pub tls: TlsOptions,
    /// The length cap of durable streams (`XADD ... MAXLEN ~ N`, see
    /// [Durable mode](crate#durable-mode)): what publishers from this handle
    /// pass when a message is stored for durable consumers. URL:
    /// `stream_maxlen=N`; default [`DEFAULT_STREAM_MAXLEN`].
    pub stream_maxlen: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            capacity: DEFAULT_CAPACITY,
            name: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            reconnect_backoff: Backoff::DEFAULT,
            tls: TlsOptions::new(),
            stream_maxlen: DEFAULT_STREAM_MAXLEN,
        }
    }
}

impl RedisOptions {
    /// The defaults: 5 s connect timeout, 10 s flush timeout, client name
    /// `switchboard`, 2^20 buffered deliveries per subscription, reconnect
    /// backoff 100 ms to 5 s, a 15 s keepalive.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long connecting (TCP, TLS, AUTH, SELECT) may take before failing.
    /// URL: `connect_timeout=5s`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long [`flush`](switchboard_core::Publisher::flush) (and the flush in
    /// [`close`](switchboard_core::Broker::close)) waits for Redis to answer
    /// the publishes made before it. When the time is up it fails with
    /// [`Error::Timeout`](switchboard_core::Error::Timeout) (operation
    /// `"flush"`), e.g. when the server hangs or the network silently went
    /// away; the publishes stay counted, so a later `flush` still waits for
    /// them and reports those that failed. URL: `flush_timeout=10s`.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many deliveries each subscription buffers (allocated as they
    /// come). When the buffer is full, what comes for the subscription is
    /// dropped and counted, and the stream yields one
    /// [`Error::Lost`](switchboard_core::Error::Lost) item with the count: the
    /// connection every subscription of the handle shares is never stalled
    /// for one slow reader.
    /// URL: `capacity=65536`.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, switchboard_core::options::MAX_CAPACITY);
        self
    }

    /// The name connections show in `CLIENT LIST`: the publishing connection
    /// uses `name`, the subscriptions' shared connection `name-sub`. Spaces become `-`
    /// (Redis refuses them); an empty name keeps the one set before.
    /// URL: `name=billing`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !name.is_empty() {
            self.name = Some(name);
        }
        self
    }

    /// How soon a connection that passes nothing is declared dead. A
    /// the subscriptions' connection sends `PING` after `keepalive / 3` of
    /// silence and is dropped (reported as
    /// [`Error::Disconnected`](switchboard_core::Error::Disconnected), then
    /// resubscribed) when nothing came back for `keepalive`; the publishing
    /// connection does the same while idle, and while publishes await their
    /// replies. `None` leaves it to TCP keepalive (about 30 s for a vanished
    /// host; never for a peer that is up but silent). URL: `keepalive=15s`,
    /// `keepalive=off`.
    pub fn keepalive(mut self, keepalive: Option<Duration>) -> Self {
        self.keepalive = keepalive.filter(|k| !k.is_zero());
        self
    }

    /// The delays between reconnection attempts of the publishing connection
    /// and of each subscription: `min` doubling to `max` ([`Backoff::DEFAULT`],
    /// 100 ms to 5 s, as on every adapter). Not a URL option.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// How `rediss://` connections verify the server and identify the client:
    /// CA files, a client certificate, the server name. URL: `ca=PATH`,
    /// `cert=PATH&key=PATH`, `tls_server_name=NAME` (added to what is set here).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The length cap of the streams that keep messages for durable
    /// consumers (at least 1; Redis trims approximately). URL: `stream_maxlen=N`.
    pub fn stream_maxlen(mut self, maxlen: usize) -> Self {
        self.stream_maxlen = maxlen.max(1);
        self
    }

    /// Connects to a `redis://` or `rediss://` URL with these options.
    pub async fn connect(&self, url: &str) -> Result<RedisBroker> {
        RedisBroker::connect_with(url, self.clone()).await
    }

    /// The name `CLIENT SETNAME` is given: [`name`](Self::name) or
    /// [`DEFAULT_NAME`], with anything but visible ASCII as `-`.
    pub(crate) fn client_name(&self) -> String {
        self.name
            .as_deref()
            .filter(|name| !name.is_empty())
            .unwrap_or(DEFAULT_NAME)
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '-' })
            .collect()
    }

    /// Applies the URL query's settings, which win over the ones set in code.
    fn apply(&mut self, query: &Query) -> Result<()> {
        if let Some(timeout) = query.duration(options::CONNECT_TIMEOUT)? {
            self.connect_timeout = timeout;
        }
        if let Some(timeout) = query.duration(options::FLUSH_TIMEOUT)? {
            self.flush_timeout = timeout;
        }
        if let Some(capacity) = query.capacity()? {
            self.capacity = capacity;
        }
        if let Some(name) = query.text(options::NAME).filter(|name| !name.is_empty()) {
            self.name = Some(name.to_string());
        }
        if let Some(keepalive) = query.keepalive()? {
            self.keepalive = keepalive;
        }
        if let Some(maxlen) = query.count(STREAM_MAXLEN)? {
            self.stream_maxlen = maxlen;
        }
        Ok(())
    }
}

/// Where and how to connect, read from the URL once.
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL as given, for error messages (redacted when shown).
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The unix socket to connect to instead of `host:port`.
    pub(crate) socket: Option<PathBuf>,
    pub(crate) tls: Option<TlsTarget>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
    /// A Redis Cluster's nodes (`redis+cluster://h1:p1,h2:p2,…`), tried in
    /// turn from the one that answered last; empty for one server.
    pub(crate) cluster: Vec<(String, u16)>,
    /// Which node of `cluster` to try first.
    pub(crate) next_node: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// How many replicas the master of the durable keys' slot had when a
    /// connection last found it (`CLUSTER SLOTS`); 0 on one server.
    pub(crate) owner_replicas: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &switchboard_core::redact_url(&self.url))
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Reads a `redis[s]://[[user]:password@]host[:port][/database][?query][#insecure]`
    /// URL; the query's options are applied to `options`.
    pub(crate) fn parse(url: &str, options: &mut RedisOptions) -> Result<Self> {
        const FORM: &str = "the form is redis[s]://[[user]:password@]host[:port][/database]";
        if let Some((scheme, rest)) = url.split_once("://") {
            if UNIX_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Self::parse_unix(url, scheme, rest, options);
            }
            if scheme.eq_ignore_ascii_case(CLUSTER_SCHEME) {
                return Self::parse_cluster(url, rest, options, false);
            }
            if scheme.eq_ignore_ascii_case(TLS_CLUSTER_SCHEME) {
                return Self::parse_cluster(url, rest, options, true);
            }
        }
        let parsed =
            url::Url::parse(url).map_err(|e| Error::invalid_url(url, format!("{e}; {FORM}")))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => {
                return Err(Error::invalid_url(
                    url,
                    "a Redis URL starts with redis:// (or rediss:// for TLS), e.g. redis://127.0.0.1:6379",
                ))
            }
        };
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
            _ => {
                return Err(Error::invalid_url(
                    url,
                    format!("the URL names no host; {FORM}"),
                ))
            }
        }
        .to_string();
        let insecure = match (parsed.fragment(), tls) {
            (None, _) => false,
            (Some("insecure"), true) => true,
            (Some(other), _) => {
                return Err(Error::invalid_url(
                    url,
                    format!("unknown fragment `#{other}`; only rediss:// URLs take one, `#insecure` (no certificate check)"),
                ))
            }
        };
        let db = match parsed.path().trim_matches('/') {
            "" => 0,
            path => path.parse::<i64>().map_err(|_| {
                Error::invalid_url(
                    url,
                    format!("the database `{path}` is not a number; {FORM}"),
                )
            })?,
        };
        let username = match parsed.username() {
            "" => None,
            user => Some(options::decode(url, "user name", user)?),
        };
        let password = parsed
            .password()
            .map(|p| options::decode(url, "password", p))
            .transpose()?;
        let query = Query::parse(url, &parsed, QUERY_KEYS)?;
        if query.has(DB) {
            return Err(Error::invalid_url(
                url,
                format!("`{DB}=` is for unix socket URLs; a TCP URL gives the database as its path: redis://host:6379/2"),
            ));
        }
        options.apply(&query)?;
        let tls = tls_target(url, &query, &options.tls, &host, tls, insecure)?;
        Ok(Target {
            url: url.to_string(),
            port: parsed.port().unwrap_or(DEFAULT_PORT),
            host,
            socket: None,
            tls,
            username,
            password,
            db,
            cluster: Vec::new(),
            next_node: Default::default(),
            owner_replicas: Default::default(),
        })
    }

    /// Reads a `redis[s]+cluster://[[user]:password@]host:port[,host:port…][?query]`
    /// URL: `rest` is what follows `scheme://`. The nodes are the entry
    /// points; PUBSUB messages reach every node of a cluster, so one
    /// connection to any of them is enough. A cluster has database 0 only.
    /// With `tls`, every node is reached over TLS with the same settings,
    /// each checked against its own host name (or `tls_server_name`).
    fn parse_cluster(url: &str, rest: &str, options: &mut RedisOptions, tls: bool) -> Result<Self> {
        const FORM: &str =
            "the form is redis[s]+cluster://[[user]:password@]host:port[,host:port...][?query]";
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (tail, fragment) = match tail.split_once('#') {
            Some((tail, fragment)) => (tail, Some(fragment)),
            None => (tail, None),
        };
        match (fragment, tls) {
            (None, _) | (Some("insecure"), true) => {}
            (Some(other), _) => {
                return Err(Error::invalid_url(
                    url,
                    format!(
                        "unknown fragment `#{other}`; only rediss+cluster:// URLs take one, `#insecure` (no certificate check)"
                    ),
                ))
            }
        }
        if !matches!(tail.split('?').next(), Some("" | "/" | "/0")) {
            return Err(Error::invalid_url(
                url,
                format!("a Redis Cluster has database 0 only; remove the path; {FORM}"),
            ));
        }
        let mut nodes = Vec::new();
        for node in hosts.split(',') {
            let node = node.trim();
            let parsed = url::Url::parse(&format!("redis://{node}"))
                .ok()
                .filter(|p| p.host_str().is_some_and(|h| !h.is_empty()) && p.path() == "");
            let Some(parsed) = parsed else {
                return Err(Error::invalid_url(
                    url,
                    format!("`{node}` is not a host:port; {FORM}"),
                ));
            };
            let host = parsed.host_str().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            nodes.push((host, parsed.port().unwrap_or(DEFAULT_PORT)));
        }
        // The first node, with the credentials and the query, read as a
        // one-server URL: the same keys and checks as there.
        let first = hosts.split(',').next().unwrap_or_default().trim();
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let query = tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        let scheme = if tls { "rediss" } else { "redis" };
        let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
        let mut target = Self::parse(
            &format!("{scheme}://{userinfo}{first}{query}{fragment}"),
            options,
        )
        .map_err(|e| match e {
            Error::InvalidUrl { reason, .. } => Error::invalid_url(url, reason),
            other => other,
        })?;
        target.url = url.to_string();
        target.cluster = nodes;
        Ok(target)
    }

    /// Whether this names a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// Reads a `redis+unix://[[user]:password@]/path/redis.sock[?db=N&query]`
    /// URL (or `unix://…`): `rest` is what follows `scheme://`. The
    /// credentials are taken out by hand, since a URL parser refuses them
    /// without a host; `redact_url` still finds them before the path.
    fn parse_unix(url: &str, scheme: &str, rest: &str, options: &mut RedisOptions) -> Result<Self> {
        const FORM: &str = "the form is redis+unix://[[user]:password@]/path/to/redis.sock[?db=N]";
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (userinfo, host) = match rest[..authority_end].rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, &rest[..authority_end]),
        };
        if !host.is_empty() {
            return Err(Error::invalid_url(
                url,
                format!("a unix socket URL names no host, found `{host}`; {FORM}"),
            ));
        }
        let (username, password) = match userinfo.map(|u| u.split_once(':')) {
            None => (None, None),
            Some(None) => {
                return Err(Error::invalid_url(
                    url,
                    format!("a user name without a password; {FORM}"),
                ))
            }
            Some(Some((user, password))) => (
                Some(options::decode(url, "user name", user)?).filter(|u| !u.is_empty()),
                Some(options::decode(url, "password", password)?),
            ),
        };
        let without_credentials = format!("{scheme}://{}", &rest[authority_end..]);
        let parsed = url::Url::parse(&without_credentials)
            .map_err(|e| Error::invalid_url(url, format!("{e}; {FORM}")))?;
        let path = options::decode(url, "socket path", parsed.path())?;
        if path.is_empty() || path == "/" {
            return Err(Error::invalid_url(
                url,
                format!("the URL names no socket; {FORM}"),
            ));
        }
        if parsed.fragment().is_some() {
            return Err(Error::invalid_url(
                url,
                "a unix socket URL takes no fragment (there is no TLS over a unix socket)",
            ));
        }
        let query = Query::parse(url, &parsed, QUERY_KEYS)?;
        if let Some(key) = switchboard_tls::QUERY_KEYS
            .iter()
            .find(|key| query.has(key))
        {
            return Err(Error::invalid_url(
                url,
                format!("`{key}` is a TLS key; a unix socket connection has no TLS"),
            ));
        }
        let db = query
            .parse_as::<i64>(DB, "a database number, e.g. `db=2`")?
            .unwrap_or(0);
        options.apply(&query)?;
        Ok(Target {
            url: url.to_string(),
            host: path.clone(),
            port: 0,
            socket: Some(PathBuf::from(path)),
            tls: None,
            username,
            password,
            db,
            cluster: Vec::new(),
            next_node: Default::default(),
            owner_replicas: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target> {
        Target::parse(url, &mut RedisOptions::new())
    }

    #[test]
    fn reads_urls_like_redis_rs() {
        let t = parse("redis://:secret@127.0.0.1:6380/3").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 6380);
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert_eq!(t.db, 3);
        assert!(t.tls.is_none());
        assert!(!format!("{t:?}").contains("secret"));
        let t = parse("rediss://user:pw@example.com").unwrap();
        assert_eq!(t.port, 6379);
        assert_eq!(t.username.as_deref(), Some("user"));
        assert!(t.tls.is_some());
        let t = parse("rediss://example.com/#insecure").unwrap();
        assert!(t.tls.unwrap().options.accepts_invalid_certs());
        let t = parse("redis://:p%40ss%3Aw@[::1]:6380").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss:w"));
        assert_eq!(t.host, "::1");
    }

    #[test]
    fn cluster_urls() {
        let t = parse("redis+cluster://u:pw@10.0.0.1:7001,10.0.0.2:7002,h3?name=x").unwrap();
        assert!(t.is_cluster());
        assert_eq!(
            t.cluster,
            [
                ("10.0.0.1".to_string(), 7001),
                ("10.0.0.2".to_string(), 7002),
                ("h3".to_string(), 6379)
            ]
        );
        assert_eq!(t.username.as_deref(), Some("u"));
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert!(!parse("redis://h:1").unwrap().is_cluster());
        let t =
            parse("rediss+cluster://h1:1,h2:2?tls_server_name=redis.internal#insecure").unwrap();
        assert!(t.is_cluster());
        let tls = t.tls.expect("rediss+cluster:// is TLS");
        assert!(tls.options.accepts_invalid_certs());
        assert!(parse("rediss+cluster://h1:1,h2:2").unwrap().tls.is_some());
        assert!(parse("redis+cluster://h1:1,h2:2").unwrap().tls.is_none());
        for (url, expected) in [
            ("redis+cluster://h1:1,h2:2/3", "database 0 only"),
            ("redis+cluster://h1:1,h2:x", "is not a host:port"),
            (
                "redis+cluster://h1:1,h2:2#insecure",
                "only rediss+cluster://",
            ),
            (
                "rediss+cluster://h1:1,h2:2#other",
                "unknown fragment `#other`",
            ),
            ("redis+cluster://h1:1,h2:2?ca=/x.pem", "rediss://"),
            ("redis+cluster://h1:1?bogus=1", "bogus"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(expected), "{url}: {e}");
        }
        let e = parse("redis+cluster://u:hunter2@h1:1,h2:2/3")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn unix_socket_urls() {
        let t = parse("redis+unix:///run/redis/redis.sock").unwrap();
        assert_eq!(
            t.socket.as_deref(),
            Some(std::path::Path::new("/run/redis/redis.sock"))
        );
        assert_eq!((t.db, t.password.as_deref()), (0, None));
        let t = parse("unix://alice:s%40cret@/tmp/my%20dir/r.sock?db=3&name=x").unwrap();
        assert_eq!(
            t.socket.as_deref(),
            Some(std::path::Path::new("/tmp/my dir/r.sock"))
        );
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.db, 3);
        assert!(t.tls.is_none());
        let t = parse("redis+unix://:pw@/tmp/r.sock").unwrap();
        assert_eq!((t.username, t.password.as_deref()), (None, Some("pw")));
        for (bad, needle) in [
            ("redis+unix://host/tmp/r.sock", "names no host"),
            ("redis+unix://", "names no socket"),
            ("redis+unix:///tmp/r.sock?db=x", "`db=x`"),
            ("redis+unix:///tmp/r.sock?ca=/ca.pem", "no TLS"),
            ("redis+unix:///tmp/r.sock#insecure", "no fragment"),
            ("redis+unix://alice@/tmp/r.sock", "without a password"),
            ("redis://h?db=2", "database as its path"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
        let e = parse("unix://u:hunter2@/tmp/r.sock?bogus=1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn the_query_sets_options() {
        let mut options = RedisOptions::new().name("code");
        Target::parse(
            "redis://h?connect_timeout=2s&flush_timeout=3s&capacity=7&name=url+name&keepalive=off&stream_maxlen=500",
            &mut options,
        )
        .unwrap();
        assert_eq!(options.connect_timeout, Duration::from_secs(2));
        assert_eq!(options.flush_timeout, Duration::from_secs(3));
        assert_eq!(options.capacity, 7);
        assert_eq!(options.stream_maxlen, 500);
        assert_eq!(options.client_name(), "url-name");
        assert_eq!(options.keepalive, None);
        assert_eq!(RedisOptions::new().keepalive, Some(DEFAULT_KEEPALIVE));
    }

    #[test]
    fn malformed_urls_say_so() {
        for (bad, needle) in [
            ("nats://x", "redis://"),
            ("127.0.0.1:6379", "the form is"),
            ("redis://:pw@h:notaport", "the form is"),
            ("redis://h/x", "`x` is not a number"),
            ("redis://:pw@h?foo=1", "unknown parameter `foo`"),
            ("redis://:pw@h?capacity=0", "`capacity=0`"),
            ("redis://:p%zz@h", "a `%` at character 2"),
            ("redis://h#insecure", "only rediss://"),
            ("rediss://h#secure", "`#secure`"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }

    #[test]
    fn tls_keys_from_the_url_and_the_options() {
        let t = parse("rediss://h:1?ca=/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            t.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{t}"
        );
        let e = parse("redis://h:1?ca=/ca.pem").unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{e}");
        assert!(e.to_string().contains("write rediss://"), "{e}");
        let e = parse("rediss://h:1?cert=/c.pem").unwrap_err().to_string();
        assert!(e.contains("without `key`"), "{e}");
        let e = parse("rediss://h:1/?ca=/ca.pem#insecure")
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradicts"), "{e}");
        let named = Target::parse(
            "rediss://127.0.0.1:1",
            &mut RedisOptions::new()
                .tls(switchboard_tls::TlsOptions::new().server_name("cache.internal")),
        )
        .unwrap();
        assert_eq!(named.tls.unwrap().name.to_str(), "cache.internal");
        // Set in code, TLS settings apply to rediss:// URLs and are left unused on redis://.
        let mut coded =
            RedisOptions::new().tls(switchboard_tls::TlsOptions::new().ca("/nonexistent/ca.pem"));
        assert!(Target::parse("redis://h:1", &mut coded)
            .unwrap()
            .tls
            .is_none());
        // `ca` may be repeated; every file is kept, in order.
        let e = parse("rediss://h:1?ca=/nonexistent/a.pem&ca=/nonexistent/b.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/a.pem"), "{e}");
        // The TLS keys are among the keys an unknown one is told about.
        let e = parse("rediss://h:1?cafile=/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ca`, `cert`, `key` and `tls_server_name`"),
            "{e}"
        );
        for key in switchboard_tls::QUERY_KEYS {
            assert!(QUERY_KEYS.contains(&key), "{key}");
        }
    }
}
