//! lapin errors as switchboard errors: a reason in words, a [`ConnectKind`]
//! for connect errors, and lapin's error as the source.

use std::fmt;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::ErrorKind;
use switchboard_core::{BoxError, ConnectKind, Error};
use switchboard_tls::TlsFailure;

use crate::options::Config;
use crate::KIND;

/// A lapin error as a `source`: shown without the text of the error under it
/// (`IO error` rather than `IO error: connection refused`), which is its own
/// source. lapin prints that text inside its own *and* returns it from
/// `source()`, so a report of the whole chain would show it twice.
pub(crate) struct ClientError(lapin::Error);

impl ClientError {
    pub(crate) fn boxed(error: lapin::Error) -> BoxError {
        Box::new(ClientError(error))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind() {
            ErrorKind::IOError(_) => f.write_str("IO error"),
            ErrorKind::RuntimeShutdownError(_) => f.write_str("runtime shutdown error"),
            ErrorKind::ParsingError(_) => f.write_str("failed to parse"),
            ErrorKind::ProtocolError(_) => f.write_str("protocol error"),
            ErrorKind::SerialisationError(_) => f.write_str("failed to serialise"),
            _ => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl Config {
    /// A connect error for this URL (password redacted).
    pub(crate) fn connect_error(
        &self,
        kind: ConnectKind,
        reason: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Error {
        Error::Connect {
            broker: KIND,
            url: self.redacted.clone(),
            kind,
            reason: reason.to_string(),
            source,
        }
    }
}

/// The AMQP reply (`ACCESS_REFUSED`, `NOT_FOUND`, ...) a lapin error carries, if any.
pub(crate) fn amqp_error(error: &lapin::Error) -> Option<&AMQPErrorKind> {
    match error.kind() {
        ErrorKind::ProtocolError(e) => Some(e.kind()),
        _ => None,
    }
}

/// One line saying what went wrong while connecting and what to fix.
pub(crate) fn connect_error(config: &Config, error: lapin::Error) -> Error {
    // A handshake rustls failed (with TLS 1.3 a refused client certificate
    // shows on the first read after it): said in the terms of the TLS
    // settings. rustls' own text follows as the source, so a failure with
    // no more precise meaning gets a reason that does not repeat it.
    if let (Some(_), ErrorKind::IOError(io)) = (&config.tls, error.kind()) {
        if let Some(failure) = config.options.tls.explain(io.as_ref()) {
            let reason = match failure {
                TlsFailure::Other { .. } => tls_failed(&config.address()),
                failure => failure.to_string(),
            };
            return config.connect_error(ConnectKind::Tls, reason, Some(ClientError::boxed(error)));
        }
    }
    // Every host of a list failed: each with its reason, no source (it
    // would repeat them).
    if let ErrorKind::IOError(io) = error.kind() {
        if let Some(failed) = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::tls::HostsFailed>())
        {
            let kinds: Vec<_> = failed.0.iter().map(|(_, e)| e.kind()).collect();
            let kind = if kinds
                .iter()
                .all(|k| *k == std::io::ErrorKind::ConnectionRefused)
            {
                ConnectKind::Refused
            } else if kinds.iter().all(|k| *k == std::io::ErrorKind::TimedOut) {
                ConnectKind::Timeout
            } else {
                ConnectKind::Other
            };
            return config.connect_error(
                kind,
                format!(
                    "no host of the list could be reached: {failed}; check the hosts and ports and that RabbitMQ runs on at least one"
                ),
                None,
            );
        }
    }
    let user = &config.uri.authority.userinfo.username;
    let vhost = &config.uri.vhost;
    let address = config.address();
    let (kind, reason) = match error.kind() {
        ErrorKind::IOError(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => (
                ConnectKind::Refused,
                format!(
                    "connection refused by {address}; check the host and port and that RabbitMQ is running"
                ),
            ),
            std::io::ErrorKind::TimedOut => (
                ConnectKind::Timeout,
                format!("no answer from {address}; check the host, port and firewall"),
            ),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => (
                ConnectKind::Other,
                format!(
                    "{address} closed the connection during the handshake; check the port speaks AMQP 0-9-1 (amqps:// needs the TLS port, usually 5671) and, on amqps://, whether the server requires a client certificate (`cert=` and `key=`)"
                ),
            ),
            // The server ends the handshake without a reason, as RabbitMQ
            // does when the client's SASL mechanism is not among those it
            // offers (lapin only logs the mismatch). Not `Auth`: a broker
            // that is starting or stopping ends handshakes the same way, and
            // that is worth retrying.
            std::io::ErrorKind::ConnectionAborted => (
                ConnectKind::Other,
                format!(
                    "{address} ended the connection during the handshake; the server may not offer the authentication mechanism asked for ({}): a server set up for client-certificate login offers only EXTERNAL (add `auth_mechanism=external` with `cert=` and `key=`); otherwise check the user name, password and vhost",
                    config
                        .uri
                        .query
                        .auth_mechanism
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "PLAIN".to_string())
                ),
            ),
            // rustls reports a failed handshake as invalid data.
            std::io::ErrorKind::InvalidData => (ConnectKind::Tls, tls_failed(&address)),
            _ => (ConnectKind::Other, format!("cannot reach {address}")),
        },
        ErrorKind::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => (
                ConnectKind::Auth,
                format!(
                    "authentication failed for user `{user}`; check the user name and password in the URL"
                ),
            ),
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => (
                ConnectKind::Protocol,
                format!(
                    "vhost `{vhost}` does not exist or user `{user}` may not use it; check the vhost in the URL path (`/` is written %2f) or grant access with `rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'`"
                ),
            ),
            _ => (
                ConnectKind::Other,
                "the broker refused the connection".to_string(),
            ),
        },
        ErrorKind::AuthProviderError(_) => (
            ConnectKind::Auth,
            format!("authentication failed for user `{user}`"),
        ),
        ErrorKind::InvalidProtocolVersion(_) | ErrorKind::ParsingError(_) => (
            ConnectKind::Protocol,
            format!(
                "{address} does not speak AMQP 0-9-1; check the port (5672 for amqp://, 5671 for amqps://)"
            ),
        ),
        ErrorKind::InvalidConnectionState(_) => (
            ConnectKind::Other,
            format!(
                "{address} closed the connection during the handshake; check the user name, password and vhost, and that the port speaks AMQP 0-9-1"
            ),
        ),
        _ => (ConnectKind::Other, "connecting failed".to_string()),
    };
    // lapin's parser errors are debug dumps that help no user: the reason says it all.
    let source = match error.kind() {
        ErrorKind::InvalidProtocolVersion(_) | ErrorKind::ParsingError(_) => None,
        _ => Some(ClientError::boxed(error)),
    };
    config.connect_error(kind, reason, source)
}

/// The reason for a TLS failure that says nothing more precise.
fn tls_failed(address: &str) -> String {
    format!(
        "the TLS handshake with {address} failed; use amqps:// only on a TLS port (usually 5671), and check the certificate"
    )
}

/// Declaring (or, for `amq.*`, checking) the exchange failed.
pub(crate) fn exchange_error(config: &Config, exchange: &str, error: lapin::Error) -> Error {
    let (kind, reason) = match amqp_error(&error) {
        Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) => (ConnectKind::Protocol, format!(
            "exchange `{exchange}` does not exist; names starting with amq. are reserved, use amq.topic or another name switchboard can declare"
        )),
        Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) => (ConnectKind::Protocol, format!(
            "exchange `{exchange}` exists but is not a durable topic exchange; switchboard needs a topic exchange, use another ?exchange="
        )),
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => (ConnectKind::Auth, format!(
            "user `{}` may not declare exchange `{exchange}`; grant configure permission or use amq.topic",
            config.uri.authority.userinfo.username
        )),
        _ => (ConnectKind::Other, format!("cannot declare exchange `{exchange}`")),
    };
    config.connect_error(kind, reason, Some(ClientError::boxed(error)))
}

/// Declaring, binding or consuming a subscription's queue failed.
pub(crate) fn declare_error(config: &Config, pattern: &str, error: lapin::Error) -> Error {
    let reason = match amqp_error(&error) {
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => format!(
            "user `{}` may not declare, bind or consume the queue; grant configure/read permissions on the vhost",
            config.uri.authority.userinfo.username
        ),
        Some(AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED)) => {
            "the queue is exclusive to another connection".to_string()
        }
        Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) => {
            "a queue of the same name exists with other settings (switchboard declares group queues non-durable and auto-delete)".to_string()
        }
        _ => "declaring, binding or consuming the queue failed".to_string(),
    };
    Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason,
        source: Some(ClientError::boxed(error)),
    }
}
