//! The URL and its options: what [`connect`](crate::connect) understands.

use std::fmt;
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use switchboard_core::{Error, Result};
use switchboard_tls::TlsOptions;
use url::Url;

use crate::tls::{apply_tls_parameter, tls_target, TlsTarget};
use crate::BROKER;

/// The exchange used when the URL names none.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";
/// Unacknowledged deliveries one subscription holds at most, unless configured.
pub const DEFAULT_PREFETCH: u16 = 256;
/// How long connecting may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Published messages awaiting their broker confirm at most, unless configured.
pub const DEFAULT_CONFIRM_WINDOW: usize = 256;
/// RabbitMQ's default `max_message_size` (128 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 134_217_728;

/// The query parameters [`connect`](crate::connect) accepts.
pub const QUERY_PARAMS: &[&str] = &[
    "exchange",
    "prefetch",
    "connection_timeout",
    "confirm_window",
    "connection_name",
    "max_payload",
    "heartbeat",
    "frame_max",
    "channel_max",
    "auth_mechanism",
    "ca",
    "cert",
    "key",
    "tls_server_name",
];

/// Options of an AMQP connection. Each can also be set by a URL query
/// parameter of the same name, which takes precedence.
///
/// ```
/// use std::time::Duration;
/// use switchboard_amqp::AmqpOptions;
/// let options = AmqpOptions::default()
///     .exchange("events")
///     .prefetch(64)
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!(options.exchange_name(), "events");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    pub(crate) exchange: String,
    pub(crate) prefetch: u16,
    pub(crate) connect_timeout: Duration,
    pub(crate) confirm_window: usize,
    pub(crate) connection_name: Option<String>,
    pub(crate) max_payload: usize,
    pub(crate) tls: TlsOptions,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            exchange: DEFAULT_EXCHANGE.to_string(),
            prefetch: DEFAULT_PREFETCH,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            confirm_window: DEFAULT_CONFIRM_WINDOW,
            connection_name: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            tls: TlsOptions::new(),
        }
    }
}

impl AmqpOptions {
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

    /// How long connecting (and reconnecting, and declaring a subscription's
    /// queue) may take before failing (default 5 s; URL `?connection_timeout=` in ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many published messages may await their broker confirm before
    /// `publish` waits for the oldest (default 256; URL `?confirm_window=`; at least 1).
    pub fn confirm_window(mut self, window: usize) -> Self {
        self.confirm_window = window.max(1);
        self
    }

    /// The connection name RabbitMQ shows (`rabbitmqctl list_connections
    /// client_properties`, management UI); default `switchboard`; URL `?connection_name=`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The largest payload `publish` accepts, matching the server's
    /// `max_message_size` (default 128 MiB, RabbitMQ's default; URL `?max_payload=`).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How `amqps://` connections verify the server and identify the client:
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

    /// The exchange name.
    pub fn exchange_name(&self) -> &str {
        &self.exchange
    }
}

impl fmt::Debug for AmqpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpOptions")
            .field("exchange", &self.exchange)
            .field("prefetch", &self.prefetch)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_window", &self.confirm_window)
            .field("connection_name", &self.connection_name)
            .field("max_payload", &self.max_payload)
            .field("tls", &self.tls)
            .finish()
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

fn parse_num<T: std::str::FromStr>(url: &str, key: &str, value: &str, what: &str) -> Result<T> {
    value.parse().map_err(|_| {
        Error::invalid_url(
            url,
            format!("query parameter `{key}={value}` must be {what}"),
        )
    })
}

impl Config {
    pub(crate) fn parse(url: &str, mut options: AmqpOptions) -> Result<Config> {
        let parsed = Url::parse(url).map_err(|e| {
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
        let decode = |s: &str, what: &str| -> Result<String> {
            percent_decode(s)
                .ok_or_else(|| Error::invalid_url(url, format!("the {what} is not valid UTF-8")))
        };
        let username = match parsed.username() {
            "" => "guest".to_string(),
            u => decode(u, "user name")?,
        };
        let password = match parsed.password() {
            None => "guest".to_string(),
            Some(p) => decode(p, "password")?,
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
                decode(raw, "vhost")?
            }
        };
        let mut query = AMQPQueryString {
            connection_timeout: None,
            ..Default::default()
        };
        let mut unknown = Vec::new();
        let mut tls_in_url = false;
        for (key, value) in parsed.query_pairs() {
            let value = value.as_ref();
            if apply_tls_parameter(url, &mut options, &key, value)? {
                tls_in_url = true;
                continue;
            }
            match key.as_ref() {
                "exchange" => {
                    if value.is_empty() {
                        return Err(Error::invalid_url(
                            url,
                            "`exchange=` is empty; the default exchange cannot route by topic, name a topic exchange such as amq.topic",
                        ));
                    }
                    options.exchange = value.to_string();
                }
                "prefetch" => {
                    options.prefetch = parse_num(url, &key, value, "a number from 0 to 65535")?
                }
                "connection_timeout" => {
                    let ms: u64 = parse_num(url, &key, value, "a number of milliseconds")?;
                    options.connect_timeout = Duration::from_millis(ms);
                }
                "confirm_window" => {
                    let n: usize = parse_num(url, &key, value, "a number of messages (at least 1)")?;
                    options.confirm_window = n.max(1);
                }
                "connection_name" => options.connection_name = Some(value.to_string()),
                "max_payload" => {
                    options.max_payload = parse_num(url, &key, value, "a number of bytes")?
                }
                "heartbeat" => {
                    query.heartbeat = Some(parse_num(url, &key, value, "a number of seconds")?)
                }
                "frame_max" => {
                    query.frame_max = Some(parse_num(url, &key, value, "a number of bytes")?)
                }
                "channel_max" => {
                    query.channel_max = Some(parse_num(url, &key, value, "a number of channels")?)
                }
                "auth_mechanism" => {
                    query.auth_mechanism = Some(value.parse().map_err(|_| {
                        Error::invalid_url(
                            url,
                            format!(
                                "`auth_mechanism={value}` is unknown; use plain, amqplain, external or anonymous"
                            ),
                        )
                    })?)
                }
                other => unknown.push(other.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::invalid_url(
                url,
                format!(
                    "unknown query parameter(s) {}; accepted: {}",
                    unknown
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    QUERY_PARAMS.join(", ")
                ),
            ));
        }
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
        let tls = tls_target(url, &options, tls_in_url, scheme.clone(), &host)?;
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
        })
    }

    /// `host:port`, for messages.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    pub(crate) fn connect_error(
        &self,
        reason: impl fmt::Display,
        source: Option<lapin::Error>,
    ) -> Error {
        Error::Connect {
            broker: BROKER,
            url: self.redacted.clone(),
            reason: reason.to_string(),
            source: source.map(|e| Box::new(e) as switchboard_core::BoxError),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Config> {
        Config::parse(url, AmqpOptions::default())
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
        assert!(e.contains("`exchnage`") && e.contains("`foo`"), "{e}");
        assert!(!e.contains("secret"), "{e}");
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
        let e = parse("amqps://h/?key=/k.pem").unwrap_err().to_string();
        assert!(e.contains("without `cert`"), "{e}");
        let e = parse("amqp://h/?exchange=amq.direct")
            .unwrap_err()
            .to_string();
        assert!(e.contains("amq.direct") && e.contains("amq.topic"), "{e}");
    }
}
