//! The one rustls crypto provider switchboard uses: ring (see the crate docs for why).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every configuration built here uses: rustls' ring provider.
///
/// rustls 0.23.48 deprecated `ring::default_provider` because ring has no
/// post-quantum key exchange (aws-lc-rs has); ring is kept for the reasons in
/// the crate docs (no C toolchain or cmake to build it), and the deprecation
/// is allowed here, so that a program depending on switchboard builds
/// without warnings (and under `-D warnings`).
#[allow(deprecated)]
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
#[allow(deprecated)] // See `crypto_provider`.
pub fn install_default_provider() {
    // Err means a provider is installed already: keep the program's choice.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
