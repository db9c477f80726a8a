//! TLS for AMQP: the configuration of `amqps://` URLs (the shared `ca`,
//! `cert`, `key` and `tls_server_name` keys), and opening `amqps://` connections with switchboard's rustls
//! configuration instead of lapin's default one.

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
    /// The name verified and sent as SNI: `tls_server_name` or the URL's host.
    name: String,
}

/// The TLS configuration for `amqps://` (the files are read now); `None` for
/// `amqp://`, where TLS keys in the URL are refused rather than silently
/// unused (settings from [`AmqpOptions::tls`] are left unused).
pub(crate) fn tls_target(
    url: &str,
    options: &AmqpOptions,
    tls_in_url: bool,
    scheme: AMQPScheme,
    host: &str,
) -> Result<Option<TlsTarget>> {
    let tls = &options.tls;
    tls.check_url(url)?;
    if scheme == AMQPScheme::AMQP {
        if tls_in_url {
            return Err(switchboard_tls::keys_need_tls(url, "amqps://", "amqp://"));
        }
        return Ok(None);
    }
    let name = tls
        .name_for(host)
        .map_err(|e| Error::invalid_url(url, e))?
        .to_str()
        .into_owned();
    let config = tls
        .client_config()
        .map_err(|e| Error::connect(KIND, url, ConnectKind::Tls, e, None))?;
    Ok(Some(TlsTarget { config, name }))
}

/// Opens an AMQP connection to `uri`: TCP, then TLS with `tls` if given, then
/// lapin's handshake. lapin calls the connecting closure again on its own
/// reconnections, with the same TLS configuration.
pub(crate) async fn connect(
    uri: AMQPUri,
    tls: Option<TlsTarget>,
    properties: ConnectionProperties,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            // TCP by lapin's own code (the scheme only decides on TLS there).
            let mut plain = uri;
            plain.scheme = AMQPScheme::AMQP;
            let stream = plain.connect_async(&runtime).await?;
            match &tls {
                None => Ok(stream),
                Some(tls) => Ok(stream
                    .into_rustls(&RustlsConnector::from(tls.config.clone()), &tls.name)
                    .await?),
            }
        },
        properties,
    )
    .await
}
