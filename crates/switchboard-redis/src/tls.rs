//! TLS for Redis: the shared `ca`, `cert`, `key` and `tls_server_name` URL
//! keys, and the rustls configuration `rediss://` connections use.

use std::sync::Arc;

use switchboard_core::options::Query;
use switchboard_core::{ConnectKind, Error, Result};
use switchboard_tls::rustls::pki_types::ServerName;
use switchboard_tls::rustls::ClientConfig;
use switchboard_tls::TlsOptions;

use crate::KIND;

/// How `rediss://` connections are opened: built once per broker, reused on
/// every reconnection.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    pub(crate) config: Arc<ClientConfig>,
    /// The name verified and sent as SNI: `tls_server_name` or the URL's host.
    pub(crate) name: ServerName<'static>,
    /// The settings, to explain a failed handshake.
    pub(crate) options: TlsOptions,
}

/// The TLS settings of `url`: `base` (from [`RedisOptions::tls`](crate::RedisOptions::tls))
/// plus the TLS keys of the URL's `query`; `#insecure` accepts any
/// certificate. Other query keys are left to [`RedisOptions`](crate::RedisOptions).
/// `None` for `redis://`, where TLS keys in the URL are refused (settings
/// from the options are left unused).
pub(crate) fn tls_target(
    url: &str,
    query: &Query,
    base: &TlsOptions,
    host: &str,
    tls: bool,
    insecure: bool,
) -> Result<Option<TlsTarget>> {
    let mut options = base.clone();
    let in_url = options.apply_url_query(url, query)?;
    if !tls {
        if in_url {
            return Err(switchboard_tls::keys_need_tls(url, "rediss://", "redis://"));
        }
        return Ok(None);
    }
    let options = options.danger_accept_invalid_certs(insecure || base.accepts_invalid_certs());
    options.check_url(url)?;
    let name = options
        .name_for(host)
        .map_err(|e| Error::invalid_url(url, e))?;
    let config = options
        .client_config()
        .map_err(|e| Error::connect(KIND, url, ConnectKind::Tls, e, None))?;
    Ok(Some(TlsTarget {
        config,
        name,
        options,
    }))
}
