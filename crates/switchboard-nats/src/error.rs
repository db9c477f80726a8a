//! async-nats errors as switchboard errors: a reason in words, a
//! [`ConnectKind`] for connect errors, and the client's error as the source.

use std::fmt;

use switchboard_core::{BoxError, ConnectKind, Error};
use switchboard_tls::TlsFailure;

use crate::options::NatsOptions;
use crate::KIND;

/// An async-nats error as a `source`: shown as its kind only (`IO error`),
/// with the error underneath as its own source. async-nats' errors print
/// their source inside their own text *and* return it from `source()`, so a
/// report of the whole chain would show it twice.
pub(crate) struct ClientError<K: Kind>(async_nats::error::Error<K>);

/// What async-nats requires of an error kind.
pub(crate) trait Kind:
    Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static
{
}

impl<K: Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static> Kind for K {}

impl<K: Kind> ClientError<K> {
    pub(crate) fn boxed(error: async_nats::error::Error<K>) -> BoxError {
        Box::new(ClientError(error))
    }
}

impl<K: Kind> fmt::Display for ClientError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.kind(), f)
    }
}

impl<K: Kind> fmt::Debug for ClientError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<K: Kind> std::error::Error for ClientError<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// The reason for a TLS failure that says nothing more precise.
const TLS_FAILED: &str =
    "TLS failed; use tls:// only if the server has TLS enabled, and check its certificate";

/// A connect error that says what went wrong and what to check.
pub(crate) fn connect_error(
    url: &str,
    options: &NatsOptions,
    error: async_nats::ConnectError,
) -> Error {
    use async_nats::ConnectErrorKind as Kind;
    let source = std::error::Error::source(&error);
    let io_kind = source
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    // A handshake rustls failed: said in the terms of the TLS settings (which
    // CA, which name, which client certificate). rustls' own text follows as
    // the source, so a failure with no more precise meaning gets a reason
    // that does not repeat it.
    if let Some(failure) = options.tls.explain(&error) {
        let reason = match failure {
            TlsFailure::Other { .. } => TLS_FAILED.to_string(),
            failure => failure.to_string(),
        };
        return Error::connect(
            KIND,
            url,
            ConnectKind::Tls,
            reason,
            Some(ClientError::boxed(error)),
        );
    }
    let (kind, reason) = match (error.kind(), io_kind) {
        (Kind::AuthorizationViolation, _) => (ConnectKind::Auth, crate::auth::rejected(options)),
        (Kind::Authentication, _) => (
            ConnectKind::Auth,
            "authentication failed: the credentials could not be used; check the user:password or token in the URL".to_string(),
        ),
        (Kind::TimedOut, _) => (
            ConnectKind::Timeout,
            format!(
                "timed out after {:?}: something accepted the connection but did not complete a NATS handshake; is it a NATS server, and does it expect TLS (tls://)?",
                options.connect_timeout
            ),
        ),
        (Kind::Io, Some(std::io::ErrorKind::ConnectionRefused)) => (
            ConnectKind::Refused,
            "nothing answers (connection refused); is nats-server running?".to_string(),
        ),
        // tokio-rustls reports a failed handshake as invalid data.
        (Kind::Io, Some(std::io::ErrorKind::InvalidData)) | (Kind::Tls, _) => {
            (ConnectKind::Tls, TLS_FAILED.to_string())
        }
        // A line that is not NATS protocol.
        (Kind::Io, Some(std::io::ErrorKind::InvalidInput)) => (
            ConnectKind::Protocol,
            "the server does not speak the NATS protocol; check the port (4222 by default)".to_string(),
        ),
        // async-nats says so in text only: a greeting other than INFO.
        (Kind::Io, None)
            if source.is_some_and(|s| {
                let text = s.to_string();
                text.starts_with("expected INFO, got ") && !text.ends_with("nothing")
            }) =>
        {
            (
                ConnectKind::Protocol,
                "the server does not speak the NATS protocol; check the port (4222 by default)".to_string(),
            )
        }
        (Kind::Io, _) => (
            ConnectKind::Other,
            "the connection failed during the NATS handshake".to_string(),
        ),
        (Kind::Dns, _) => (
            ConnectKind::Dns,
            "cannot resolve the host; check its name".to_string(),
        ),
        (_, _) => (ConnectKind::Other, "connecting failed".to_string()),
    };
    Error::connect(KIND, url, kind, reason, Some(ClientError::boxed(error)))
}
