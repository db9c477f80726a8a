//! TLS for NATS: checking the shared `ca`, `cert`, `key` and
//! `tls_server_name` URL keys against the scheme, and handing switchboard's rustls configuration to async-nats.

use switchboard_core::{ConnectKind, Error, Result};
use switchboard_tls::TlsOptions;

use crate::options::NatsOptions;

/// Refuses TLS settings that contradict each other, and TLS keys in a URL
/// whose servers are not all `tls://` (they would not be used on a server
/// that does not ask for TLS). Settings from [`NatsOptions::tls`] are kept for
/// whichever URL asks for TLS.
pub(crate) fn check_tls(
    url: &str,
    options: &NatsOptions,
    tls_in_url: bool,
    all_tls: bool,
) -> Result<()> {
    options.tls.check_url(url)?;
    if tls_in_url && !all_tls {
        return Err(switchboard_tls::keys_need_tls(url, "tls://", "nats://"));
    }
    Ok(())
}

/// Gives async-nats switchboard's rustls configuration (ring, the CA files
/// and/or the platform's roots, the client certificate). Always for
/// `tls://`; for `nats://` too (a server may still require TLS), unless the
/// configuration cannot be built there, in which case async-nats' own is left.
pub(crate) fn configure(
    url: &str,
    connect: async_nats::ConnectOptions,
    tls: &TlsOptions,
    tls_required: bool,
) -> Result<async_nats::ConnectOptions> {
    match tls.client_config() {
        Ok(config) => {
            let connect = connect.tls_client_config(config.as_ref().clone());
            Ok(if tls_required {
                connect.require_tls(true)
            } else {
                connect
            })
        }
        Err(e) if tls_required => Err(Error::connect(crate::KIND, url, ConnectKind::Tls, e, None)),
        Err(e) => {
            tracing::debug!(error = %e, "no TLS configuration for a nats:// URL");
            Ok(connect)
        }
    }
}
