//! TLS for AMQP: the configuration of `amqps://` URLs (the shared `ca`,
//! `cert`, `key` and `tls_server_name` keys), and opening connections: to
//! the first host of the URL's list that answers, then TLS with switchboard's
//! rustls configuration instead of lapin's default one.

use std::sync::Arc;

use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use switchboard_core::{ConnectKind, Error, Result};
use switchboard_tls::rustls::ClientConfig;

use crate::options::AmqpOptions;
use crate::KIND;

/// How `amqps://` connections are opened: built once when the URL is read,
/// reused on every reconnection.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    config: Arc<ClientConfig>,
    /// The name verified and sent as SNI for each host of the URL, in its
    /// order: `tls_server_name`, or the host.
    names: Vec<String>,
}

/// The TLS configuration for `amqps://` (the files are read now); `None` for
/// `amqp://`, where TLS keys in the URL are refused rather than silently
/// unused (settings from [`AmqpOptions::tls`] are left unused).
pub(crate) fn tls_target(
    url: &str,
    options: &AmqpOptions,
    tls_in_url: bool,
    scheme: AMQPScheme,
    hosts: &[(String, u16)],
) -> Result<Option<TlsTarget>> {
    let tls = &options.tls;
    tls.check_url(url)?;
    if scheme == AMQPScheme::AMQP {
        if tls_in_url {
            return Err(switchboard_tls::keys_need_tls(url, "amqps://", "amqp://"));
        }
        return Ok(None);
    }
    let names = hosts
        .iter()
        .map(|(host, _)| {
            tls.name_for(host)
                .map(|name| name.to_str().into_owned())
                .map_err(|e| Error::invalid_url(url, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = tls
        .client_config()
        .map_err(|e| Error::connect(KIND, url, ConnectKind::Tls, e, None))?;
    Ok(Some(TlsTarget { config, names }))
}

/// Every host of a URL's list refused or failed the TCP connection: each
/// address with its error, in the order tried.
#[derive(Debug)]
pub(crate) struct HostsFailed(pub(crate) Vec<(String, std::io::Error)>);

impl std::fmt::Display for HostsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, (address, error)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            let what = match error.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => "no answer in time".to_string(),
                _ => error.to_string(),
            };
            write!(f, "{address} ({what})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HostsFailed {}

/// Opens an AMQP connection to `uri`: TCP to the first of `hosts` that
/// accepts it (in order; with several hosts each gets an equal share of the
/// URI's TCP connect timeout), then TLS with `tls` if given, then lapin's
/// handshake. lapin calls the connecting closure again on its own
/// reconnections, which so go through the list in order too. When every
/// host fails, the error is a [`HostsFailed`] naming each.
pub(crate) async fn connect(
    uri: AMQPUri,
    hosts: Vec<(String, u16)>,
    tls: Option<TlsTarget>,
    properties: ConnectionProperties,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let share = uri
                .query
                .connection_timeout
                .map(|ms| (ms / hosts.len().max(1) as u64).max(1));
            let mut failures = Vec::new();
            for (index, (host, port)) in hosts.iter().enumerate() {
                // TCP by lapin's own code (the scheme only decides on TLS there).
                let mut plain = uri.clone();
                plain.scheme = AMQPScheme::AMQP;
                plain.authority.host = host.clone();
                plain.authority.port = *port;
                if hosts.len() > 1 {
                    plain.query.connection_timeout = share;
                }
                let stream = match plain.connect_async(&runtime).await {
                    Ok(stream) => stream,
                    Err(error) if hosts.len() == 1 => return Err(error.into()),
                    Err(error) => {
                        tracing::debug!(host = %format!("{host}:{port}"), %error, "amqp: host unreachable; trying the next of the list");
                        failures.push((format!("{host}:{port}"), error));
                        continue;
                    }
                };
                if !failures.is_empty() {
                    tracing::info!(
                        "amqp: connecting to {host}:{port}; {} host(s) before it in the list failed",
                        failures.len()
                    );
                }
                return match (&tls, tls.as_ref().and_then(|t| t.names.get(index))) {
                    (Some(tls), Some(name)) => Ok(stream
                        .into_rustls(&RustlsConnector::from(tls.config.clone()), name)
                        .await?),
                    _ => Ok(stream),
                };
            }
            let kind = failures
                .last()
                .map_or(std::io::ErrorKind::NotConnected, |(_, e)| e.kind());
            Err(std::io::Error::new(kind, HostsFailed(failures)).into())
        },
        properties,
    )
    .await
}
