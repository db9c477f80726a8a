//! How connecting to Redis fails, in words: a [`ConnectKind`], a reason
//! saying what to check, and the I/O or TLS error as the source.

use std::fmt;
use std::io;
use std::time::Duration;

use switchboard_core::{BoxError, ConnectKind, Error};
use switchboard_tls::TlsFailure;

use crate::options::Target;
use crate::tls::TlsTarget;
use crate::KIND;

impl Target {
    /// A connect error for this URL (password redacted).
    pub(crate) fn error(
        &self,
        kind: ConnectKind,
        reason: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Error {
        Error::connect(KIND, &self.url, kind, reason, source)
    }
}

/// Nothing answered within the connect timeout.
pub(crate) fn connect_timed_out(target: &Target, timeout: Duration) -> Error {
    target.error(
        ConnectKind::Timeout,
        format!(
            "no answer within {timeout:?}; is the host reachable, the port right{}?",
            if target.tls.is_some() {
                " and the server speaking TLS there"
            } else {
                ""
            }
        ),
        None,
    )
}

/// The TCP connection could not be opened.
pub(crate) fn tcp_failed(target: &Target, e: io::Error) -> Error {
    let (kind, reason) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            ConnectKind::Refused,
            "nothing answers (connection refused); is redis-server running?".to_string(),
        ),
        // tokio says so in text only.
        _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => (
            ConnectKind::Dns,
            format!("cannot resolve host {:?}; check the host name", target.host),
        ),
        _ => (
            ConnectKind::Other,
            format!(
                "cannot reach {}:{}; is the host reachable?",
                target.host, target.port
            ),
        ),
    };
    target.error(kind, reason, Some(Box::new(e)))
}

/// The unix socket at `path` could not be opened.
pub(crate) fn unix_failed(target: &Target, path: &std::path::Path, e: io::Error) -> Error {
    let path = path.display();
    let (kind, reason) = match e.kind() {
        io::ErrorKind::NotFound => (
            ConnectKind::Refused,
            format!("no socket at {path}; is redis-server running with `unixsocket {path}`?"),
        ),
        io::ErrorKind::ConnectionRefused => (
            ConnectKind::Refused,
            format!("nothing listens on {path} (connection refused); is redis-server running?"),
        ),
        io::ErrorKind::PermissionDenied => (
            ConnectKind::Other,
            format!("no permission to open {path}; check the server's `unixsocketperm` and this user's groups"),
        ),
        _ => (ConnectKind::Other, format!("cannot open the socket {path}")),
    };
    target.error(kind, reason, Some(Box::new(e)))
}

/// The TLS handshake failed: said in the terms of the TLS settings where
/// rustls' error has a precise meaning. rustls' own text follows as the
/// source, so a failure with no more precise meaning gets a reason that does
/// not repeat it.
pub(crate) fn tls_failed(target: &Target, tls: &TlsTarget, e: io::Error) -> Error {
    let reason = match tls.options.explain(&e) {
        Some(failure) if !matches!(failure, TlsFailure::Other { .. }) => failure.to_string(),
        _ => "TLS handshake failed; does the server speak TLS on this port (tls-port)?".to_string(),
    };
    target.error(ConnectKind::Tls, reason, Some(Box::new(e)))
}

/// Reading or writing failed during `AUTH`, `SELECT` or `CLIENT SETNAME`.
pub(crate) fn handshake_failed(target: &Target, e: io::Error) -> Error {
    // With TLS 1.3 a refused client certificate shows only now, as the
    // server's alert on the first read after the handshake.
    if let Some(failure) = target.tls.as_ref().and_then(|tls| tls.options.explain(&e)) {
        return target.error(ConnectKind::Tls, failure, Some(Box::new(e)));
    }
    let kind = if e.kind() == io::ErrorKind::InvalidData {
        ConnectKind::Protocol
    } else {
        ConnectKind::Other
    };
    target.error(
        kind,
        format!(
            "the handshake failed; is it a Redis server{}?",
            if target.tls.is_none() {
                " (a TLS-only server needs rediss://)"
            } else {
                ""
            }
        ),
        Some(Box::new(e)),
    )
}

/// Redis refused `AUTH` (`reply` is its error).
pub(crate) fn auth_refused(target: &Target, reply: &[u8]) -> Error {
    let text = String::from_utf8_lossy(reply);
    let hint = if text.contains("without any password configured") {
        "the server has no password; remove it from the URL"
    } else {
        "check the user and password in the URL (redis://[user]:PASSWORD@host:port)"
    };
    target.error(
        ConnectKind::Auth,
        format!("authentication failed ({text}); {hint}"),
        None,
    )
}

/// Redis wants a password the URL does not give (`reply` is its `NOAUTH` error).
pub(crate) fn auth_required(target: &Target, reply: &[u8]) -> Error {
    target.error(
        ConnectKind::Auth,
        format!(
            "authentication required ({}); put the password in the URL: redis://[user]:PASSWORD@host:port",
            String::from_utf8_lossy(reply)
        ),
        None,
    )
}

/// Redis refused `SELECT` (`reply` is its error).
pub(crate) fn select_refused(target: &Target, reply: &[u8]) -> Error {
    target.error(
        ConnectKind::Protocol,
        format!(
            "cannot select database {} ({}); use a database below the server's `databases` setting",
            target.db,
            String::from_utf8_lossy(reply)
        ),
        None,
    )
}
