//! TLS for MQTT: the shared `ca`, `cert`, `key` and `tls_server_name` URL
//! keys, and the rustls configuration `mqtts://` connections hand to rumqttc.
//!
//! rumqttc is built without a crypto provider of its own
//! (`use-rustls-no-provider`); it gets switchboard-tls' configuration, whose
//! provider is ring, as on every adapter. rumqttc verifies the URL's host;
//! with `tls_server_name` the configuration's verifier checks that name
//! instead.

use std::sync::Arc;

use switchboard_core::{ConnectKind, Error, Result};
use switchboard_tls::rustls::ClientConfig;
use switchboard_tls::TlsOptions;

use crate::KIND;

/// The rustls configuration for an `mqtts://` URL, built once per broker and
/// reused on every reconnection.
pub(crate) fn tls_config(url: &str, options: &TlsOptions) -> Result<Arc<ClientConfig>> {
    options.check_url(url)?;
    options
        .client_config()
        .map_err(|e| Error::connect(KIND, url, ConnectKind::Tls, e, None))
}
