//! How connecting to an MQTT server fails, in words: a [`ConnectKind`], a
//! reason saying what to check, and rumqttc's error as the source.

use std::io;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use rumqttc::v5::mqttbytes::Error as MqttError;
use rumqttc::v5::{ConnectionError, StateError};
use switchboard_core::{BoxError, ConnectKind, Error};

use crate::options::Target;
use crate::KIND;

/// Nothing answered within the connect timeout.
pub(crate) fn connect_timed_out(target: &Target, timeout: Duration) -> Error {
    Error::connect(
        KIND,
        &target.url,
        ConnectKind::Timeout,
        format!(
            "no CONNACK within {timeout:?}; is the host reachable, the port right{}?",
            if target.tls.is_some() {
                " and the server speaking TLS there"
            } else {
                ""
            }
        ),
        None,
    )
}

/// Connecting failed: said in the terms of what to check. The source is the
/// innermost error that says something the reason does not (rumqttc's I/O
/// and TLS variants only prefix their inner error's text).
pub(crate) fn connect_failed(target: &Target, error: ConnectionError) -> Error {
    let (kind, reason) = match &error {
        ConnectionError::Io(e)
        | ConnectionError::MqttState(StateError::Io(e))
        | ConnectionError::MqttState(StateError::Deserialization(MqttError::Io(e))) => {
            io_reason(target, e)
        }
        ConnectionError::Timeout(_) => {
            return connect_timed_out(target, target.options.connect_timeout)
        }
        ConnectionError::ConnectionRefused(code) => refused_reason(target, *code),
        ConnectionError::Tls(e) => (ConnectKind::Tls, tls_reason(target, e)),
        ConnectionError::NotConnAck(_)
        | ConnectionError::MqttState(StateError::Deserialization(_)) => (
            ConnectKind::Protocol,
            "the server did not answer CONNECT with CONNACK; is it an MQTT 5 server (mosquitto 1.6 or later)?"
                .to_string(),
        ),
        ConnectionError::MqttState(StateError::ConnectionAborted) => (
            ConnectKind::Protocol,
            "the server closed the connection during the handshake; is it an MQTT 5 server?"
                .to_string(),
        ),
        _ => (
            ConnectKind::Other,
            "the connection failed during the MQTT handshake".to_string(),
        ),
    };
    let source: Option<BoxError> = match error {
        ConnectionError::Io(e)
        | ConnectionError::MqttState(StateError::Io(e))
        | ConnectionError::MqttState(StateError::Deserialization(MqttError::Io(e))) => {
            Some(Box::new(e))
        }
        // The reason says it all (the code is named there).
        ConnectionError::ConnectionRefused(_) => None,
        ConnectionError::Tls(rumqttc::v5::TlsError::Io(e)) => Some(Box::new(e)),
        ConnectionError::Tls(rumqttc::v5::TlsError::TLS(e)) => Some(Box::new(e)),
        other => Some(Box::new(other)),
    };
    Error::connect(KIND, &target.url, kind, reason, source)
}

fn io_reason(target: &Target, e: &io::Error) -> (ConnectKind, String) {
    // With TLS 1.3 a refused client certificate shows as the server's alert on a read.
    if target.tls.is_some() {
        if let Some(failure) = target.options.tls.explain(e) {
            return (ConnectKind::Tls, failure.to_string());
        }
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            ConnectKind::Refused,
            "nothing answers (connection refused); is mosquitto (or another MQTT server) running?"
                .to_string(),
        ),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => (
            ConnectKind::Protocol,
            format!(
                "the server closed the connection during the handshake; is it an MQTT 5 server{}?",
                if target.tls.is_none() {
                    " (a TLS-only port needs mqtts://)"
                } else {
                    ""
                }
            ),
        ),
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
    }
}

fn tls_reason(target: &Target, e: &rumqttc::v5::TlsError) -> String {
    match target.options.tls.explain(e) {
        Some(failure) => failure.to_string(),
        None => "TLS handshake failed; does the server speak TLS on this port?".to_string(),
    }
}

fn refused_reason(target: &Target, code: ConnectReturnCode) -> (ConnectKind, String) {
    match code {
        // mosquitto answers a wrong password with "not authorized" too.
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            if target.credentials.is_some() =>
        {
            (
                ConnectKind::Auth,
                "the server rejected the user name or password; check them in the URL (mqtt://USER:PASSWORD@host)".to_string(),
            )
        }
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => (
            ConnectKind::Auth,
            "the server requires a user name and password (not authorized); put them in the URL: mqtt://USER:PASSWORD@host".to_string(),
        ),
        ConnectReturnCode::UnsupportedProtocolVersion | ConnectReturnCode::RefusedProtocolVersion => (
            ConnectKind::Protocol,
            "the server does not speak MQTT 5; use mosquitto 1.6 or later (or another MQTT 5 server)".to_string(),
        ),
        ConnectReturnCode::ServerUnavailable
        | ConnectReturnCode::ServiceUnavailable
        | ConnectReturnCode::ServerBusy => (
            ConnectKind::Other,
            format!("the server is unavailable ({code:?}); try again later"),
        ),
        other => (
            ConnectKind::Protocol,
            format!("the server refused the connection ({other:?})"),
        ),
    }
}
