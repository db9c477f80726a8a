//! [`MqttOptions`] and the parsing of `mqtt://` / `mqtts://` URLs.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::options::{self, Query};
use switchboard_core::{Backoff, Error, Result};
use switchboard_tls::rustls::ClientConfig;
use switchboard_tls::TlsOptions;

use crate::tls::tls_config;

pub use switchboard_core::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE,
};

/// Messages each subscription buffers while its reader is behind, unless
/// configured: 2^20 (as on NATS). The buffer only fills while the reader is
/// behind; past it messages are dropped and counted (an
/// [`Error::Lost`](switchboard_core::Error::Lost) item says how many).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The URL query keys the MQTT adapter takes: the ones every adapter shares
/// ([`options::COMMON`]) and, on `mqtts://` URLs, the TLS ones ([`options::TLS`]).
pub const QUERY_KEYS: &[&str] = options::COMMON_AND_TLS;

/// The usual MQTT port.
pub(crate) const DEFAULT_PORT: u16 = 1883;
/// The usual MQTT-over-TLS port.
pub(crate) const DEFAULT_TLS_PORT: u16 = 8883;

/// Options of an MQTT connection: set with the builder methods, each named
/// after its option, and read from the public fields (as on every
/// switchboard adapter). Every option but `reconnect_backoff` can also be set
/// in the URL's query (`mqtt://host:1883?capacity=65536&connect_timeout=2s&name=api`);
/// values in the URL win over the ones set here.
///
/// ```
/// use std::time::Duration;
/// use switchboard_mqtt::MqttOptions;
/// let options = MqttOptions::new()
///     .connect_timeout(Duration::from_secs(2))
///     .capacity(100_000)
///     .name("billing");
/// assert_eq!(options.capacity, 100_000);
/// assert_eq!(options.name.as_deref(), Some("billing"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttOptions {
    /// How long connecting may take (TCP, TLS and CONNECT/CONNACK).
    /// URL: `connect_timeout=5s`; default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long `flush`, `subscribe` and `Subscription::close` wait for the
    /// server's acknowledgement, and the most `close` and a `publish` into a
    /// full client queue take. URL: `flush_timeout=10s`; default
    /// [`DEFAULT_FLUSH_TIMEOUT`].
    pub flush_timeout: Duration,
    /// Messages each subscription buffers while its reader is behind (0 is
    /// read as 1). URL: `capacity=N`; default [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// The start of the MQTT client identifier (a random suffix keeps two
    /// connections with one name apart: the server would disconnect the
    /// first). URL: `name=api`; default `switchboard`.
    pub name: Option<String>,
    /// How soon a connection that passes nothing is declared dead; `None`
    /// leaves rumqttc's keep-alive of 60 s. URL: `keepalive=15s`,
    /// `keepalive=off`; default [`DEFAULT_KEEPALIVE`].
    pub keepalive: Option<Duration>,
    /// The delays between reconnection attempts (builder only); default
    /// [`Backoff::DEFAULT`].
    pub reconnect_backoff: Backoff,
    /// How `mqtts://` connections verify the server and identify the client.
    /// URL: `ca=`, `cert=`, `key=`, `tls_server_name=`; default the platform's
    /// trust store.
    pub tls: TlsOptions,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            capacity: DEFAULT_CAPACITY,
            name: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            reconnect_backoff: Backoff::DEFAULT,
            tls: TlsOptions::new(),
        }
    }
}

impl MqttOptions {
    /// The defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_FLUSH_TIMEOUT`],
    /// [`DEFAULT_CAPACITY`], [`DEFAULT_KEEPALIVE`], [`Backoff::DEFAULT`], the
    /// client identifier `switchboard-<random>`.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long connecting may take (TCP, TLS and CONNECT/CONNACK) before
    /// [`connect`](crate::connect) fails saying why. URL: `connect_timeout=5s`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `flush`, `subscribe` and `Subscription::close` wait for the
    /// server to acknowledge; also the most `close` takes, and how long a
    /// `publish` waits for room in the client's queue. URL: `flush_timeout=10s`.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How many messages each subscription buffers while its reader is behind
    /// (at least 1). Past that messages are dropped and the subscription
    /// yields an [`Error::Lost`] item with the count. URL: `capacity=1048576`.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, switchboard_core::options::MAX_CAPACITY);
        self
    }

    /// The start of the client identifier the server shows (`api-3f2a…`).
    /// URL: `name=api`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How soon a connection that passes nothing is declared dead: the client
    /// sends PINGREQ every half of this (at least every 5 s, rumqttc's
    /// minimum) and drops the connection when a PINGRESP has not come by the
    /// next one; every subscription then yields [`Error::Disconnected`] and
    /// the adapter reconnects. `None` leaves rumqttc's 60 s.
    /// URL: `keepalive=15s`, `keepalive=off`.
    pub fn keepalive(mut self, keepalive: Option<Duration>) -> Self {
        self.keepalive = keepalive.filter(|k| !k.is_zero());
        self
    }

    /// The delays between reconnection attempts once a connection is lost:
    /// the first at once, then `min` doubling to `max` ([`Backoff::DEFAULT`],
    /// 100 ms to 5 s, as on every adapter). Not a URL option.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// How `mqtts://` connections verify the server and identify the client:
    /// CA files, a client certificate, the server name. URL: `ca=PATH`,
    /// `cert=PATH&key=PATH`, `tls_server_name=NAME` (added to what is set here).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The MQTT keep-alive to announce: half the dead-link time, at least
    /// rumqttc's minimum of 5 s; 60 s without one.
    pub(crate) fn keep_alive_interval(&self) -> Duration {
        match self.keepalive {
            Some(keepalive) => (keepalive / 2).max(Duration::from_secs(5)),
            None => Duration::from_secs(60),
        }
    }
}

/// Credentials found in a URL. Not `Debug`, so they cannot end up in a log.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

/// A parsed connection URL: where to connect, how, and the options with the
/// URL's query applied.
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL as given, for errors (redacted when shown).
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<Credentials>,
    /// The rustls configuration, for `mqtts://`.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) options: MqttOptions,
}

/// Parses `mqtt[s]://[user[:password]@]host[:port][?param=value...]`.
pub(crate) fn parse_url(url: &str, mut options: MqttOptions) -> Result<Target> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| {
        // `h1:1883,h2:1883` reads as a bad port to a URL parser.
        let authority = url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains(',') {
            return Error::invalid_url(
                url,
                "an MQTT URL names one server (rumqttc connects to one); put a load balancer \
                 or DNS name in front of several",
            );
        }
        Error::invalid_url(url, format!("{e}; expected e.g. mqtt://127.0.0.1:1883"))
    })?;
    let scheme = parsed.scheme().to_ascii_lowercase();
    if !crate::SCHEMES.contains(&scheme.as_str()) {
        return Err(Error::invalid_url(
            url,
            format!(
                "the scheme `{}` is not an MQTT scheme; use mqtt:// or mqtts://",
                parsed.scheme()
            ),
        ));
    }
    let tls = scheme == "mqtts";
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
        _ => {
            return Err(Error::invalid_url(
                url,
                "the URL names no host; expected e.g. mqtt://127.0.0.1:1883",
            ))
        }
    };
    if !matches!(parsed.path(), "" | "/") {
        return Err(Error::invalid_url(
            url,
            format!(
                "MQTT URLs have no path, found `{}`; remove it",
                parsed.path()
            ),
        ));
    }
    if let Some(fragment) = parsed.fragment() {
        return Err(Error::invalid_url(
            url,
            format!("MQTT URLs take no fragment, found `#{fragment}`; remove it"),
        ));
    }
    let query = Query::parse(url, &parsed, QUERY_KEYS)?;
    let tls_in_url = options.tls.apply_url_query(url, &query)?;
    apply_query(&query, &mut options)?;
    let user = options::decode(url, "user name", parsed.username())?;
    let password = parsed
        .password()
        .map(|p| options::decode(url, "password", p))
        .transpose()?;
    let credentials = match (user.is_empty(), password) {
        (true, None) => None,
        (_, password) => Some(Credentials {
            user,
            password: password.unwrap_or_default(),
        }),
    };
    let tls = if tls {
        Some(tls_config(url, &options.tls)?)
    } else if tls_in_url {
        return Err(switchboard_tls::keys_need_tls(url, "mqtts://", "mqtt://"));
    } else {
        None
    };
    let port = parsed.port().unwrap_or(if tls.is_some() {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    });
    Ok(Target {
        url: url.to_string(),
        host: host.to_string(),
        port,
        credentials,
        tls,
        options,
    })
}

fn apply_query(query: &Query, options: &mut MqttOptions) -> Result<()> {
    if let Some(capacity) = query.capacity()? {
        options.capacity = capacity;
    }
    if let Some(timeout) = query.duration(options::CONNECT_TIMEOUT)? {
        options.connect_timeout = timeout;
    }
    if let Some(timeout) = query.duration(options::FLUSH_TIMEOUT)? {
        options.flush_timeout = timeout;
    }
    if let Some(name) = query.text(options::NAME) {
        if let Some(problem) = name_problem(name) {
            return Err(query.invalid(options::NAME, name, problem));
        }
        options.name = Some(name.to_string());
    }
    if let Some(keepalive) = query.keepalive()? {
        options.keepalive = keepalive;
    }
    Ok(())
}

/// What is wrong with `name` as the start of an MQTT client id, if
/// anything: the id is a level of the adapter's own topic filters (its
/// inbox, its flush marks), where `+` and `#` are wildcards and a control
/// character is refused, so the server dropped those subscriptions and
/// every flush failed with an error about something else.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.contains(['+', '#']) {
        Some("a name without `+` or `#` (they are MQTT wildcards)")
    } else if name.chars().any(char::is_control) {
        Some("a name without control characters")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target> {
        parse_url(url, MqttOptions::new())
    }

    #[test]
    fn plain_url() {
        let target = parse("mqtt://127.0.0.1").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 1883));
        assert!(target.credentials.is_none());
        assert!(target.tls.is_none());
        assert_eq!(target.options, MqttOptions::new());
        let target = parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 1884));
    }

    #[test]
    fn credentials() {
        let target = parse("mqtt://alice:s%40cret@localhost:1883").unwrap();
        let credentials = target.credentials.unwrap();
        assert_eq!(
            (credentials.user.as_str(), credentials.password.as_str()),
            ("alice", "s@cret")
        );
        let target = parse("mqtt://bob@localhost").unwrap();
        assert_eq!(target.credentials.unwrap().password, "");
    }

    #[test]
    fn tls_scheme_and_keys() {
        let target = parse("mqtts://broker.example").unwrap();
        assert_eq!(target.port, 8883);
        assert!(target.tls.is_some());
        for key in options::COMMON.iter().chain(&switchboard_tls::QUERY_KEYS) {
            assert!(QUERY_KEYS.contains(key), "{key}");
        }
        for (url, needle) in [
            ("mqtt://h:1?ca=/ca.pem", "write mqtts:// instead of mqtt://"),
            ("mqtts://h:1?cert=/c.pem", "without `key`"),
            ("mqtts://h:1?ca=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
        ] {
            let err = parse(url).err().unwrap().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn query_parameters() {
        let target = parse(
            "mqtt://h:1?capacity=16&connect_timeout=250ms&flush_timeout=2s&name=api&keepalive=30s",
        )
        .unwrap();
        assert_eq!(target.options.capacity, 16);
        assert_eq!(target.options.connect_timeout, Duration::from_millis(250));
        assert_eq!(target.options.flush_timeout, Duration::from_secs(2));
        assert_eq!(target.options.name.as_deref(), Some("api"));
        assert_eq!(
            target.options.keep_alive_interval(),
            Duration::from_secs(15)
        );
        let target = parse("mqtt://h?keepalive=off").unwrap();
        assert_eq!(target.options.keepalive, None);
        // rumqttc refuses a keep-alive under 5 s; it is raised, not a panic.
        let target = parse("mqtt://h?keepalive=2s").unwrap();
        assert_eq!(target.options.keep_alive_interval(), Duration::from_secs(5));
    }

    #[test]
    fn bad_urls_say_why_and_redact() {
        let err = parse("mqtt://u:hunter2@h:1?bogus=1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown parameter `bogus`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for (url, needle) in [
            ("mqtt://h?capacity=0", "capacity=0"),
            ("mqtt://h?connect_timeout=5", "with a unit"),
            ("mqtt://u:p%zz@h", "a `%` at character 2"),
            ("nats://h", "not an MQTT scheme"),
            ("mqtt://h/path", "no path"),
            ("mqtt://h#frag", "no fragment"),
            ("mqtt://", "no host"),
            ("not a url", "expected e.g."),
            (
                "mqtt://h?name=web%2B1",
                "`name=web+1` must be a name without `+` or `#`",
            ),
            ("mqtt://h?name=a%23", "without `+` or `#`"),
            ("mqtt://h?name=%00", "without control characters"),
            ("mqtt://h1:1883,h2:1883", "names one server"),
        ] {
            let err = parse(url).err().unwrap().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
