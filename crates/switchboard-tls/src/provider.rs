//! The one rustls crypto provider switchboard uses: ring (see the crate docs for why).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every configuration built here uses: rustls' ring provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for clients that build their
/// own rustls configuration with `ClientConfig::builder()` (async-nats without
/// a configuration of ours, redis-rs, lapin's default connector).
///
/// Call it once at the start of a binary. It does nothing if a default is
/// already installed (by this call or by the program), so calling it again is
/// harmless.
pub fn install_default_provider() {
    // Err means a provider is installed already: keep the program's choice.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
