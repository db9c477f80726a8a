//! The one error type every switchboard crate returns.

use std::fmt;

/// A boxed error from a broker client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with switchboard's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to a broker through switchboard.
///
/// Each message names what was wrong (the broker, the subject, the URL with its
/// password redacted) and, where there is one, how to fix it. Use [`Error::kind`]
/// to branch on the category without matching every variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject (publish target) is malformed.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The subject as given.
        subject: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A subscription pattern is malformed.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A queue group name is malformed.
    #[error("invalid queue group {group:?}: {reason}")]
    InvalidGroup {
        /// The group name as given.
        group: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A durable consumer's (or member's) name is malformed.
    #[error("invalid durable consumer name {name:?}: {reason}")]
    InvalidDurable {
        /// The name as given.
        name: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A header name or value is malformed.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A broker URL could not be understood.
    #[error("invalid broker URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// The URL names a broker this build does not know or was compiled without.
    #[error("unsupported broker {scheme:?} in {url}: this build supports {supported}")]
    UnknownScheme {
        /// The scheme or kind as given.
        scheme: String,
        /// The URL, password redacted.
        url: String,
        /// The schemes this build supports, comma-separated.
        supported: String,
    },
    /// A driver was registered for a URL scheme another broker kind's driver
    /// already takes (see `switchboard::register`).
    #[error("cannot register the {kind} driver: the URL scheme {scheme:?} is taken by the {taken_by} driver; give the {kind} driver schemes of its own")]
    SchemeTaken {
        /// The scheme both drivers claim.
        scheme: String,
        /// The kind of the driver being registered.
        kind: String,
        /// The kind of the driver that has the scheme.
        taken_by: String,
    },
    /// A driver given to `switchboard::register` cannot be registered as it
    /// is: an empty kind, no URL scheme, a scheme a URL cannot have, or a
    /// default URL of a scheme not its own.
    #[error("cannot register the driver {kind:?}: {reason}")]
    InvalidDriver {
        /// The driver's kind, as given.
        kind: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Connecting to the broker failed (refused, timed out, authentication, TLS).
    ///
    /// `kind` says which, for callers that retry: see [`ConnectKind::is_temporary`].
    #[error("{broker}: cannot connect to {url}: {reason}")]
    Connect {
        /// The broker kind (`nats`, `redis`, `amqp`, `memory`).
        broker: &'static str,
        /// The URL, password redacted.
        url: String,
        /// What kind of failure it was.
        kind: ConnectKind,
        /// What went wrong, with a hint where one helps. It does not repeat
        /// the text of `source`, which follows it in a full report.
        reason: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The broker cannot do what was asked; nothing was faked.
    #[error("{broker} does not support {feature}")]
    Unsupported {
        /// The broker kind.
        broker: &'static str,
        /// The feature that was asked for.
        feature: String,
    },
    /// Publishing a message failed.
    #[error("{broker}: publish to {subject:?} failed: {reason}")]
    Publish {
        /// The broker kind.
        broker: &'static str,
        /// The subject of the message.
        subject: String,
        /// What went wrong.
        reason: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A payload is larger than the broker accepts.
    #[error(
        "{broker}: message to {subject:?} is {size} bytes, over the broker's limit of {max} bytes"
    )]
    PayloadTooLarge {
        /// The broker kind.
        broker: &'static str,
        /// The subject of the message.
        subject: String,
        /// The encoded size.
        size: usize,
        /// The broker's limit.
        max: usize,
    },
    /// Subscribing failed.
    #[error("{broker}: subscribe to {pattern:?} failed: {reason}")]
    Subscribe {
        /// The broker kind.
        broker: &'static str,
        /// The pattern subscribed to.
        pattern: String,
        /// What went wrong.
        reason: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Flushing (waiting for the broker to have every earlier publish) failed.
    #[error("{broker}: flush failed: {reason}")]
    Flush {
        /// The broker kind.
        broker: &'static str,
        /// What went wrong.
        reason: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The broker refused published messages because this user may not
    /// publish there: NATS' `Permissions Violation`, a Redis ACL's `NOPERM`,
    /// RabbitMQ's `ACCESS_REFUSED`. Reported by `flush`, which knows how many.
    /// They were not delivered, and publishing them again fails the same way
    /// until the broker's permissions change, so this is not temporary.
    #[error("{broker}: the broker refused {count} message(s): {reason}")]
    Refused {
        /// The broker kind.
        broker: &'static str,
        /// How many messages were refused since the previous flush.
        count: u64,
        /// The broker's words, with a subject refused.
        reason: String,
    },
    /// Acknowledging or rejecting a delivery failed.
    #[error("{broker}: {action} of a message on {subject:?} failed: {reason}")]
    Ack {
        /// The broker kind.
        broker: &'static str,
        /// `ack` or `nack`.
        action: &'static str,
        /// The subject of the delivery.
        subject: String,
        /// What went wrong.
        reason: String,
    },
    /// Messages for a subscription were lost (for example a client-side buffer overflowed).
    ///
    /// Shown as `N message(s) lost` when the adapter knows how many, and as
    /// `an unknown number of messages lost` when it does not (`count` 0): a
    /// count is never a guess.
    #[error("{broker}: {} lost on subscription {pattern:?}: {reason}", LostCount(*.count))]
    Lost {
        /// The broker kind.
        broker: &'static str,
        /// The subscription's pattern.
        pattern: String,
        /// Exactly how many were lost, or 0 when the client cannot know.
        count: u64,
        /// Why, and how to avoid it.
        reason: String,
    },
    /// The connection to the broker broke; the adapter is reconnecting.
    #[error("{broker}: connection lost: {reason}")]
    Disconnected {
        /// The broker kind.
        broker: &'static str,
        /// What happened.
        reason: String,
    },
    /// The broker handle was closed; no more publishing or subscribing.
    #[error("{broker}: the connection is closed")]
    Closed {
        /// The broker kind.
        broker: &'static str,
    },
    /// A request found nobody subscribed to answer it.
    #[error(
        "{broker}: no responders for a request on {subject:?}: nothing is subscribed to answer it"
    )]
    NoResponders {
        /// The broker kind.
        broker: &'static str,
        /// The subject of the request.
        subject: String,
    },
    /// The responder answered a request with an error reply
    /// ([`Delivery::reply_error`](crate::Delivery::reply_error), or any NATS
    /// micro service's `Nats-Service-Error` headers) instead of a result.
    #[error("{broker}: the responder to a request on {subject:?} failed: {description} ({})", crate::error_reply::ServiceCode(*.code))]
    Service {
        /// The broker kind.
        broker: &'static str,
        /// The subject of the request.
        subject: String,
        /// The responder's error code: by convention 400 for a request that
        /// fails the same way however often it is sent, 500 for a failure
        /// that may pass, or the responder's own; `None` when the reply
        /// carries none, or none that reads as a number from 0 to 65535.
        code: Option<u16>,
        /// The responder's one-line description of what went wrong.
        description: String,
    },
    /// A payload could not be encoded or decoded as JSON.
    #[error("JSON payload on {subject:?}: {source}")]
    Json {
        /// The subject of the message.
        subject: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A payload could not be encoded or decoded with a [`Codec`](crate::Codec)
    /// other than JSON (whose errors are [`Error::Json`]), such as MessagePack or CBOR.
    #[error("{codec} payload on {subject:?}: {source}")]
    Codec {
        /// The codec's name ([`Codec::NAME`](crate::Codec::NAME)).
        codec: &'static str,
        /// The subject of the message.
        subject: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// An operation did not finish in time.
    #[error("{broker}: {operation} timed out after {after:?}")]
    Timeout {
        /// The broker kind.
        broker: &'static str,
        /// What was being done.
        operation: String,
        /// How long was waited.
        after: std::time::Duration,
    },
}

/// What kind of failure an [`Error::Connect`] is, for callers that decide
/// whether to try again: a refused port or a timeout may pass, a wrong
/// password or a TLS mismatch will not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectKind {
    /// Nothing listens on the port (connection refused or reset at once).
    Refused,
    /// No answer in time.
    Timeout,
    /// The server rejected the credentials, or requires some.
    Auth,
    /// The TLS handshake failed (no TLS on the port, a certificate not trusted).
    Tls,
    /// Something answered that does not speak the broker's protocol, or the
    /// server refused the request itself (an unknown vhost or database).
    Protocol,
    /// The host name cannot be resolved.
    Dns,
    /// Anything else (I/O errors, a connection lost during the handshake).
    Other,
}

impl ConnectKind {
    /// Whether connecting again may succeed without changing the URL or the
    /// server's configuration: true for refused, timed out, DNS and other
    /// failures; false for authentication, TLS and protocol failures.
    pub fn is_temporary(self) -> bool {
        !matches!(
            self,
            ConnectKind::Auth | ConnectKind::Tls | ConnectKind::Protocol
        )
    }
}

impl fmt::Display for ConnectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectKind::Refused => "refused",
            ConnectKind::Timeout => "timeout",
            ConnectKind::Auth => "authentication",
            ConnectKind::Tls => "TLS",
            ConnectKind::Protocol => "protocol",
            ConnectKind::Dns => "DNS",
            ConnectKind::Other => "other",
        })
    }
}

/// How [`Error::Lost`] shows its count.
struct LostCount(u64);

impl fmt::Display for LostCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("an unknown number of messages"),
            n => write!(f, "{n} message(s)"),
        }
    }
}

/// The category of an [`Error`], for callers that branch on what kind of thing went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input from the caller: subject, pattern, group, header, URL or payload size.
    InvalidInput,
    /// Connecting failed.
    Connect,
    /// The broker does not provide the feature.
    Unsupported,
    /// A broker operation failed; it may succeed if tried again.
    Broker,
    /// The broker refused messages this user may not publish ([`Error::Refused`]).
    Refused,
    /// Messages were lost or the connection broke while subscribed.
    Lost,
    /// The handle is closed.
    Closed,
    /// A request had nobody to answer it.
    NoResponders,
    /// The responder answered a request with an error ([`Error::Service`]).
    Service,
    /// JSON encoding or decoding failed.
    Json,
    /// Encoding or decoding with another [`Codec`](crate::Codec) failed.
    Codec,
    /// An operation timed out.
    Timeout,
}

/// Lets `Message::new` take a [`Subject`](crate::Subject) as well as text: that conversion cannot fail.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSubject { .. }
            | Error::InvalidPattern { .. }
            | Error::InvalidGroup { .. }
            | Error::InvalidDurable { .. }
            | Error::InvalidHeader { .. }
            | Error::InvalidUrl { .. }
            | Error::UnknownScheme { .. }
            | Error::SchemeTaken { .. }
            | Error::InvalidDriver { .. }
            | Error::PayloadTooLarge { .. } => ErrorKind::InvalidInput,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Publish { .. }
            | Error::Subscribe { .. }
            | Error::Flush { .. }
            | Error::Ack { .. } => ErrorKind::Broker,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Lost { .. } | Error::Disconnected { .. } => ErrorKind::Lost,
            Error::Closed { .. } => ErrorKind::Closed,
            Error::NoResponders { .. } => ErrorKind::NoResponders,
            Error::Service { .. } => ErrorKind::Service,
            Error::Json { .. } => ErrorKind::Json,
            Error::Codec { .. } => ErrorKind::Codec,
            Error::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    /// Whether trying the same operation again may succeed (connection trouble,
    /// timeouts, a request nobody answered yet). A connect error is temporary
    /// only if its [`ConnectKind`] is:
    /// a wrong password or a TLS mismatch stays wrong however often it is tried.
    /// An error reply is temporary when its code is 500 or above (the
    /// responder failed), or unreadable, not below (the request itself was
    /// refused).
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Connect { kind, .. } => kind.is_temporary(),
            Error::Service { code, .. } => code.is_none_or(|code| code >= 500),
            _ => matches!(
                self.kind(),
                ErrorKind::Broker | ErrorKind::Lost | ErrorKind::Timeout | ErrorKind::NoResponders
            ),
        }
    }

    /// The kind of a connect error; `None` for every other error.
    pub fn connect_kind(&self) -> Option<ConnectKind> {
        match self {
            Error::Connect { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(broker: &'static str, feature: impl Into<String>) -> Self {
        Error::Unsupported {
            broker,
            feature: feature.into(),
        }
    }

    /// The [`Error::Timeout`] of a request on `subject` that got no reply
    /// within `after`: one wording on every broker.
    pub fn request_timeout(
        broker: &'static str,
        subject: &str,
        after: std::time::Duration,
    ) -> Self {
        Error::Timeout {
            broker,
            operation: format!(
                "a request on {subject:?} (no reply: is anything subscribed to answer it? a responder still at work, or one whose failure sends no error reply, leaves the requester waiting)"
            ),
            after,
        }
    }

    /// Shorthand for [`Error::Connect`], redacting the password in `url`.
    /// `reason` should not repeat `source`'s text: reports show both.
    pub fn connect(
        broker: &'static str,
        url: &str,
        kind: ConnectKind,
        reason: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Self {
        Error::Connect {
            broker,
            url: crate::redact_url(url),
            kind,
            reason: reason.to_string(),
            source,
        }
    }

    /// Shorthand for [`Error::InvalidUrl`], redacting the password in `url`.
    /// When the user information holds `#`, `?` or `/`, which end the host
    /// part for a URL parser (so the complaint is about the host or port),
    /// the reason says to percent-encode them.
    pub fn invalid_url(url: &str, reason: impl fmt::Display) -> Self {
        let hint = if raw_delimiter_in_password(url) {
            "; if the password holds `#`, `?` or `/`, percent-encode them (%23, %3F, %2F)"
        } else {
            ""
        };
        Error::InvalidUrl {
            url: crate::redact_url(url),
            reason: format!("{reason}{hint}"),
        }
    }
}

/// Whether `url`'s text before its last `@` looks like `user:password` with
/// a `#`, `?` or `/` in it.
fn raw_delimiter_in_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let Some(at) = rest.rfind('@') else {
        return false;
    };
    let userinfo = &rest[..at];
    userinfo.contains(':') && userinfo.contains(['#', '?', '/'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unencoded_delimiter_in_a_password_is_named() {
        for url in [
            "redis://:pa#ss@h:1",
            "nats://u:pa/ss@h",
            "amqp://u:se?cret@h/%2f",
        ] {
            let text = Error::invalid_url(url, "empty host").to_string();
            assert!(
                text.contains("percent-encode them (%23, %3F, %2F)"),
                "{text}"
            );
            assert!(!text.contains("ss@") && !text.contains("cret"), "{text}");
        }
        for url in ["nats://h:4222", "nats://u:p@h/x?y", "redis://h/0"] {
            let text = Error::invalid_url(url, "bad").to_string();
            assert!(!text.contains("percent-encode"), "{url}: {text}");
        }
    }

    #[test]
    fn connect_errors_are_temporary_by_kind() {
        let error = |kind| Error::connect("test", "test://u:pw@h", kind, "failed", None);
        for kind in [
            ConnectKind::Refused,
            ConnectKind::Timeout,
            ConnectKind::Dns,
            ConnectKind::Other,
        ] {
            assert!(error(kind).is_temporary(), "{kind}");
        }
        for kind in [ConnectKind::Auth, ConnectKind::Tls, ConnectKind::Protocol] {
            let error = error(kind);
            assert!(!error.is_temporary(), "{kind}");
            assert_eq!(error.connect_kind(), Some(kind));
            assert_eq!(error.kind(), ErrorKind::Connect);
        }
        assert!(!error(ConnectKind::Auth).to_string().contains("pw"));
    }

    #[test]
    fn an_unknown_loss_says_so() {
        let lost = |count| Error::Lost {
            broker: "test",
            pattern: "a.>".into(),
            count,
            reason: "why".into(),
        };
        assert_eq!(
            lost(0).to_string(),
            "test: an unknown number of messages lost on subscription \"a.>\": why"
        );
        assert_eq!(
            lost(3).to_string(),
            "test: 3 message(s) lost on subscription \"a.>\": why"
        );
    }
}
