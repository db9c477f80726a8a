//! Connection options.

use std::time::Duration;

use switchboard_core::options::{self, Query};
use switchboard_core::Result;
use switchboard_tls::TlsOptions;

use crate::RedisBroker;

/// How long connecting (TCP, TLS and handshake) may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`flush`](switchboard_core::Publisher::flush) waits for Redis's
/// replies before failing with [`Error::Timeout`](switchboard_core::Error::Timeout),
/// unless configured. 10 s, as for NATS.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Deliveries a subscription buffers before its connection stops being read, unless configured.
///
/// 2^20, as for NATS: Redis disconnects a subscriber whose server-side backlog
/// passes `client-output-buffer-limit pubsub` (32 MiB by default), which a
/// burst from switchboard's pipelined publisher (1–2 M msg/s) fills in a
/// fraction of a second; reading ahead into this buffer absorbs such bursts.
/// The buffer holds deliveries, not bytes: lower it where messages are large
/// and memory is tight.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// How soon a connection that passes nothing is declared dead, unless
/// configured: 15 s, as on every broker ([`options::DEFAULT_KEEPALIVE`]).
pub const DEFAULT_KEEPALIVE: Duration = options::DEFAULT_KEEPALIVE;

/// The URL query keys the Redis adapter takes: `connect_timeout`,
/// `flush_timeout`, `capacity` (see [`RedisOptions::subscription_capacity`]),
/// `name` (see [`RedisOptions::client_name`]), `keepalive` and, on `rediss://`
/// URLs, the TLS keys ([`switchboard_tls::QUERY_KEYS`], see [`RedisOptions::tls`]).
pub const QUERY_KEYS: &[&str] = &[
    options::CONNECT_TIMEOUT,
    options::FLUSH_TIMEOUT,
    options::CAPACITY,
    options::NAME,
    options::KEEPALIVE,
    "ca",
    "cert",
    "key",
    "tls_server_name",
];

/// Options for [`RedisOptions::connect`]; [`connect`](crate::connect) uses the defaults.
/// Each can also be set in the URL's query ([`QUERY_KEYS`]), which wins:
/// `redis://host?connect_timeout=2s&capacity=65536&name=billing&keepalive=10s`.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// use std::time::Duration;
/// use switchboard_redis::RedisOptions;
/// let broker = RedisOptions::new()
///     .connect_timeout(Duration::from_secs(2))
///     .flush_timeout(Duration::from_secs(3))
///     .client_name("billing")
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) flush_timeout: Duration,
    pub(crate) client_name: String,
    pub(crate) subscription_capacity: usize,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) tls: TlsOptions,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            client_name: "switchboard".to_string(),
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            keepalive: Some(DEFAULT_KEEPALIVE),
            tls: TlsOptions::new(),
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

    /// The name connections show in `CLIENT LIST`: the publishing connection
    /// uses `name`, subscription connections `name-sub`. Spaces become `-`
    /// (Redis refuses them). URL: `name=billing`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        let name: String = name
            .into()
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '-' })
            .collect();
        if !name.is_empty() {
            self.client_name = name;
        }
        self
    }

    /// How many deliveries each subscription buffers. When the buffer is full
    /// the subscription's connection is not read until the application catches
    /// up; if that lasts, Redis disconnects it and the stream reports
    /// [`Error::Disconnected`](switchboard_core::Error::Disconnected).
    /// URL: `capacity=65536`.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// The delay between reconnection attempts: starts at `min`, doubles up to `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// How `rediss://` connections verify the server and identify the client:
    /// CA files, a client certificate, the server name. URL: `ca=PATH`,
    /// `cert=PATH&key=PATH`, `tls_server_name=NAME` (added to what is set here).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS settings.
    pub fn tls_options(&self) -> &TlsOptions {
        &self.tls
    }

    /// How soon a connection that passes nothing is declared dead. A
    /// subscription's connection sends `PING` after `keepalive / 3` of
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

    /// Applies the URL query's settings, which win over the ones set in code.
    pub(crate) fn apply(&mut self, query: &Query) -> Result<()> {
        if let Some(timeout) = query.duration(options::CONNECT_TIMEOUT)? {
            *self = self.clone().connect_timeout(timeout);
        }
        if let Some(timeout) = query.duration(options::FLUSH_TIMEOUT)? {
            *self = self.clone().flush_timeout(timeout);
        }
        if let Some(capacity) = query.count(options::CAPACITY)? {
            self.subscription_capacity = capacity;
        }
        if let Some(name) = query.text(options::NAME) {
            *self = self.clone().client_name(name);
        }
        if let Some(keepalive) = query.keepalive()? {
            self.keepalive = keepalive;
        }
        Ok(())
    }

    /// Connects to a `redis://` or `rediss://` URL with these options.
    pub async fn connect(&self, url: &str) -> Result<RedisBroker> {
        RedisBroker::connect_with(url, self.clone()).await
    }
}
