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
    /// Connecting to the broker failed (refused, timed out, authentication, TLS).
    #[error("{broker}: cannot connect to {url}: {reason}")]
    Connect {
        /// The broker kind (`nats`, `redis`, `amqp`, `memory`).
        broker: &'static str,
        /// The URL, password redacted.
        url: String,
        /// What went wrong, with a hint where one helps.
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
    #[error("{broker}: {count} message(s) lost on subscription {pattern:?}: {reason}")]
    Lost {
        /// The broker kind.
        broker: &'static str,
        /// The subscription's pattern.
        pattern: String,
        /// How many were lost, as far as the client knows (0 when unknown).
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
    /// A payload could not be encoded or decoded as JSON.
    #[error("JSON payload on {subject:?}: {source}")]
    Json {
        /// The subject of the message.
        subject: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
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
    /// Messages were lost or the connection broke while subscribed.
    Lost,
    /// The handle is closed.
    Closed,
    /// A request had nobody to answer it.
    NoResponders,
    /// JSON encoding or decoding failed.
    Json,
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
            | Error::PayloadTooLarge { .. } => ErrorKind::InvalidInput,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Publish { .. }
            | Error::Subscribe { .. }
            | Error::Flush { .. }
            | Error::Ack { .. } => ErrorKind::Broker,
            Error::Lost { .. } | Error::Disconnected { .. } => ErrorKind::Lost,
            Error::Closed { .. } => ErrorKind::Closed,
            Error::NoResponders { .. } => ErrorKind::NoResponders,
            Error::Json { .. } => ErrorKind::Json,
            Error::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    /// Whether trying the same operation again may succeed (connection trouble, timeouts).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Broker | ErrorKind::Lost | ErrorKind::Timeout | ErrorKind::Connect
        )
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(broker: &'static str, feature: impl Into<String>) -> Self {
        Error::Unsupported {
            broker,
            feature: feature.into(),
        }
    }

    /// Shorthand for [`Error::Connect`], redacting the password in `url`.
    pub fn connect(
        broker: &'static str,
        url: &str,
        reason: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Self {
        Error::Connect {
            broker,
            url: crate::redact_url(url),
            reason: reason.to_string(),
            source,
        }
    }

    /// Shorthand for [`Error::InvalidUrl`], redacting the password in `url`.
    pub fn invalid_url(url: &str, reason: impl fmt::Display) -> Self {
        Error::InvalidUrl {
            url: crate::redact_url(url),
            reason: reason.to_string(),
        }
    }
}
