//! The URL query options every adapter reads the same way.
//!
//! A broker URL may carry options in its query, e.g.
//! `nats://host?connect_timeout=2s&keepalive=10s&name=billing`. The keys
//! below mean the same, with the same units, on every broker that takes them;
//! each adapter lists the keys it takes, and any other key is an error naming
//! it and listing those. Durations are [humantime] text (`250ms`, `5s`, `1m`,
//! `1m 30s`); a number without a unit is refused, so `5` cannot be read as
//! seconds by one adapter and milliseconds by another.
//!
//! Percent-encoding is decoded strictly everywhere (query, user, password,
//! path): a `%` not followed by two hex digits is an error, never taken
//! literally.
//!
//! [humantime]: https://docs.rs/humantime
//!
//! ```
//! use std::time::Duration;
//! use switchboard_core::options::{self, Query};
//! let url = url::Url::parse("nats://h:4222?connect_timeout=2s&keepalive=off&name=api%201").unwrap();
//! let query = Query::parse(url.as_str(), &url, options::COMMON)?;
//! assert_eq!(query.duration(options::CONNECT_TIMEOUT)?, Some(Duration::from_secs(2)));
//! assert_eq!(query.keepalive()?, Some(None));
//! assert_eq!(query.text(options::NAME), Some("api 1"));
//! # Ok::<(), switchboard_core::Error>(())
//! ```

use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// `connect_timeout=5s`: how long connecting (TCP, TLS, handshake) may take.
pub const CONNECT_TIMEOUT: &str = "connect_timeout";
/// `flush_timeout=10s`: how long `flush` (and the flush in `close`) waits for the broker.
pub const FLUSH_TIMEOUT: &str = "flush_timeout";
/// `capacity=N`: messages each subscription buffers in the client while its reader is behind.
pub const CAPACITY: &str = "capacity";

/// The largest subscription `capacity` an adapter takes: tokio's bounded
/// channels, which buffer the NATS, MQTT and in-memory subscriptions, panic
/// above it (`2^61 - 1` on 64-bit targets).
pub const MAX_CAPACITY: usize = tokio::sync::Semaphore::MAX_PERMITS;
/// `name=api`: the connection name the broker shows.
pub const NAME: &str = "name";
/// `keepalive=15s`: a link that passes nothing for about this long is
/// declared dead (reported as `Disconnected`, then reconnected); `off` or `0`
/// leaves it to the client library and the operating system.
pub const KEEPALIVE: &str = "keepalive";

/// The keys shared by the network adapters (NATS, Redis, AMQP).
pub const COMMON: &[&str] = &[CONNECT_TIMEOUT, FLUSH_TIMEOUT, CAPACITY, NAME, KEEPALIVE];

/// `ca=PATH` (repeatable; `ca=system` adds the platform's store): CAs to trust, TLS only.
pub const CA: &str = "ca";
/// `cert=PATH`: a client certificate (PEM) for mutual TLS, with [`KEY`].
pub const CERT: &str = "cert";
/// `key=PATH`: the client certificate's private key (PEM), with [`CERT`].
pub const KEY: &str = "key";
/// `tls_server_name=NAME`: the name the server's certificate is checked against.
pub const TLS_SERVER_NAME: &str = "tls_server_name";

/// The TLS keys, the same on every adapter with TLS (`switchboard-tls` reads them).
pub const TLS: &[&str] = &[CA, CERT, KEY, TLS_SERVER_NAME];

/// [`COMMON`] and [`TLS`]: the keys of an adapter that takes the shared ones
/// and nothing of its own (NATS, Redis).
pub const COMMON_AND_TLS: &[&str] = &[
    CONNECT_TIMEOUT,
    FLUSH_TIMEOUT,
    CAPACITY,
    NAME,
    KEEPALIVE,
    CA,
    CERT,
    KEY,
    TLS_SERVER_NAME,
];

/// How long connecting may take unless `connect_timeout` says otherwise: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `flush` (and the flush in `close`) waits unless `flush_timeout`
/// says otherwise: 10 s.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon a dead link is detected unless `keepalive` says otherwise: 15 s.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// A URL's query, decoded strictly, with every key checked against the ones
/// an adapter takes. Reading a key returns `None` when the URL does not set
/// it; a key given twice keeps its last value.
#[derive(Debug, Clone)]
pub struct Query {
    /// The URL as given, for error messages (redacted when shown).
    url: String,
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Reads the query of `parsed` (the URL `url` as given, for messages).
    /// Fails with [`Error::InvalidUrl`] on a key not in `known`, naming it and
    /// listing `known`, and on a `%` not followed by two hex digits.
    pub fn parse(url: &str, parsed: &url::Url, known: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        for pair in parsed.query().unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Form encoding, as in every URL query: `+` is a space.
            let key = decode(url, "query key", &key.replace('+', " "))?;
            let value = decode(url, &format!("value of `{key}`"), &value.replace('+', " "))?;
            if !known.contains(&key.as_str()) {
                return Err(Error::invalid_url(
                    url,
                    format!(
                        "unknown parameter `{key}`; this adapter takes {}",
                        list(known)
                    ),
                ));
            }
            pairs.push((key, value));
        }
        Ok(Query {
            url: url.to_string(),
            pairs,
        })
    }

    /// The value of `key` as given (decoded), if the URL sets it.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair (decoded) in the order the URL gives them, repeated keys
    /// included: for keys that may be given more than once, such as the TLS
    /// key `ca`.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the URL sets `key`.
    pub fn has(&self, key: &str) -> bool {
        self.text(key).is_some()
    }

    /// `key` as a humantime duration above zero (`250ms`, `5s`, `1m`).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        let Some(value) = self.text(key) else {
            return Ok(None);
        };
        match humantime::parse_duration(value.trim()) {
            Ok(duration) if !duration.is_zero() => Ok(Some(duration)),
            _ => Err(self.invalid(
                key,
                value,
                "a duration above zero with a unit, e.g. `500ms`, `5s` or `1m`",
            )),
        }
    }

    /// The `keepalive` key: `Some(Some(duration))`, or `Some(None)` for
    /// `off` / `0`; `None` when the URL does not set it.
    pub fn keepalive(&self) -> Result<Option<Option<Duration>>> {
        let Some(value) = self.text(KEEPALIVE) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") || value == "0" {
            return Ok(Some(None));
        }
        match humantime::parse_duration(value) {
            Ok(duration) if duration.is_zero() => Ok(Some(None)),
            Ok(duration) => Ok(Some(Some(duration))),
            Err(_) => Err(self.invalid(
                KEEPALIVE,
                value,
                "a duration with a unit, e.g. `15s`, or `off`",
            )),
        }
    }

    /// The `capacity` key: a whole number from 1 to [`MAX_CAPACITY`].
    pub fn capacity(&self) -> Result<Option<usize>> {
        let Some(value) = self.text(CAPACITY) else {
            return Ok(None);
        };
        match value.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CAPACITY).contains(&n) => Ok(Some(n)),
            _ => Err(self.invalid(
                CAPACITY,
                value,
                &format!("a whole number from 1 to {MAX_CAPACITY}"),
            )),
        }
    }

    /// `key` as a whole number above zero.
    pub fn count(&self, key: &str) -> Result<Option<usize>> {
        let Some(value) = self.text(key) else {
            return Ok(None);
        };
        match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(self.invalid(key, value, "a whole number above 0")),
        }
    }

    /// `key` parsed as `T`; `what` describes a valid value for the error.
    pub fn parse_as<T: FromStr>(&self, key: &str, what: &str) -> Result<Option<T>> {
        let Some(value) = self.text(key) else {
            return Ok(None);
        };
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| self.invalid(key, value, what))
    }

    /// An [`Error::InvalidUrl`] saying `key=value` must be `what`.
    pub fn invalid(&self, key: &str, value: &str, what: &str) -> Error {
        Error::invalid_url(&self.url, format!("`{key}={value}` must be {what}"))
    }
}

/// Decodes `%XX` escapes in `text` (a user name, password, path segment or
/// query part of `url`; `what` names it in errors). Strict: a `%` not followed
/// by two hex digits, or bytes that are not UTF-8 once decoded, are an
/// [`Error::InvalidUrl`].
///
/// ```
/// use switchboard_core::options::decode;
/// assert_eq!(decode("amqp://h/%2f", "vhost", "%2f")?, "/");
/// assert!(decode("amqp://h/%zz", "vhost", "%zz").is_err());
/// # Ok::<(), switchboard_core::Error>(())
/// ```
pub fn decode(url: &str, what: &str, text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    for (index, _) in text.match_indices('%') {
        let valid = bytes
            .get(index + 1..index + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            // Quoting the text around the `%` would show part of a password
            // or token in an error whose URL is redacted: only parts that
            // are never secret are quoted, the others located.
            let shown = if matches!(what, "vhost" | "socket path" | "query key") {
                let escape: String = text[index..].chars().take(3).collect();
                format!("`{escape}`")
            } else {
                let at = text[..index].chars().count() + 1;
                format!("a `%` at character {at}")
            };
            return Err(Error::invalid_url(
                url,
                format!(
                    "the {what} has {shown}, which is not a percent-escape: write `%` as %25, and escapes as % and two hex digits"
                ),
            ));
        }
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| Error::invalid_url(url, format!("the {what} is not UTF-8 once decoded")))
}

/// `a`, `b` and `c`, each in backquotes.
fn list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        None => "no parameters".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str, known: &[&str]) -> Result<Query> {
        let parsed = url::Url::parse(url).unwrap();
        Query::parse(url, &parsed, known)
    }

    #[test]
    fn reads_the_common_keys() {
        let q = query(
            "x://h?connect_timeout=250ms&flush_timeout=1m%2030s&capacity=16&name=a+b%2Bc&keepalive=2s",
            COMMON,
        )
        .unwrap();
        assert_eq!(
            q.duration(CONNECT_TIMEOUT).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            q.duration(FLUSH_TIMEOUT).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(q.count(CAPACITY).unwrap(), Some(16));
        assert_eq!(q.text(NAME), Some("a b+c"));
        assert_eq!(q.keepalive().unwrap(), Some(Some(Duration::from_secs(2))));
        let q = query("x://h", COMMON).unwrap();
        assert_eq!(q.duration(CONNECT_TIMEOUT).unwrap(), None);
        assert_eq!(q.keepalive().unwrap(), None);
        for off in ["off", "OFF", "0", "0s"] {
            let q = query(&format!("x://h?keepalive={off}"), COMMON).unwrap();
            assert_eq!(q.keepalive().unwrap(), Some(None), "{off}");
        }
        let q = query("x://h?capacity=1&capacity=2", COMMON).unwrap();
        assert_eq!(q.count(CAPACITY).unwrap(), Some(2), "the last one wins");
        let q = query("x://h?ca=a.pem&name=n&ca=b%20c.pem", &["ca", NAME]).unwrap();
        assert_eq!(
            q.pairs().collect::<Vec<_>>(),
            [("ca", "a.pem"), ("name", "n"), ("ca", "b c.pem")],
            "every pair, in order"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for (url, key, needle) in [
            (
                "x://u:pw@h?connect_timeout=5",
                CONNECT_TIMEOUT,
                "with a unit",
            ),
            (
                "x://u:pw@h?connect_timeout=0s",
                CONNECT_TIMEOUT,
                "above zero",
            ),
            (
                "x://u:pw@h?flush_timeout=soon",
                FLUSH_TIMEOUT,
                "`flush_timeout=soon`",
            ),
            ("x://u:pw@h?capacity=0", CAPACITY, "from 1 to"),
            ("x://u:pw@h?capacity=-1", CAPACITY, "from 1 to"),
            (
                "x://u:pw@h?capacity=2305843009213693952",
                CAPACITY,
                "from 1 to 2305843009213693951",
            ),
            ("x://u:pw@h?keepalive=15", KEEPALIVE, "`off`"),
        ] {
            let q = query(url, COMMON).unwrap();
            let error = match key {
                CAPACITY => q.capacity().unwrap_err(),
                KEEPALIVE => q.keepalive().unwrap_err(),
                _ => q.duration(key).unwrap_err(),
            }
            .to_string();
            assert!(error.contains(needle), "{url}: {error}");
            assert!(!error.contains("pw@"), "{error}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_escapes_are_errors() {
        let error = query("x://u:pw@h?capacity=1&foo=1", COMMON)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown parameter `foo`"), "{error}");
        assert!(
            error
                .contains("`connect_timeout`, `flush_timeout`, `capacity`, `name` and `keepalive`"),
            "{error}"
        );
        assert!(!error.contains("pw"), "{error}");
        let error = query("x://h?name=%zz", COMMON).unwrap_err().to_string();
        assert!(error.contains("a `%` at character 1"), "{error}");
        let error = query("x://h?name=50%", COMMON).unwrap_err().to_string();
        assert!(error.contains("a `%` at character 3"), "{error}");
        let error = query("x://h?name=%ff", COMMON).unwrap_err().to_string();
        assert!(error.contains("not UTF-8"), "{error}");
        let error = query("x://h?a=1", &[]).unwrap_err().to_string();
        assert!(error.contains("takes no parameters"), "{error}");
    }

    #[test]
    fn decoding_is_strict() {
        assert_eq!(decode("u", "password", "s%40cret").unwrap(), "s@cret");
        assert_eq!(decode("u", "password", "plain").unwrap(), "plain");
        assert_eq!(decode("u", "vhost", "%2F").unwrap(), "/");
        for bad in ["%", "%2", "%zz", "a%g1", "%%41"] {
            assert!(decode("u", "vhost", bad).is_err(), "{bad}");
        }
    }
}
