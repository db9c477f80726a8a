//! TLS for every switchboard adapter, set up one way.
//!
//! Every broker URL takes the same TLS query keys, and every adapter's options
//! builder takes the same [`TlsOptions`]:
//!
//! | URL key | [`TlsOptions`] | |
//! |---|---|---|
//! | `ca=PATH` | [`ca`](TlsOptions::ca) | a PEM bundle of CAs to trust **instead of** the platform's trust store; repeat the key for several files |
//! | `ca=system` | [`system_roots`](TlsOptions::system_roots) | also trust the platform's store (the default when no `ca` is given) |
//! | `cert=PATH`, `key=PATH` | [`client_cert`](TlsOptions::client_cert) | a client certificate (PEM chain) and its private key (PEM, PKCS#8, PKCS#1 or SEC1), for mutual TLS |
//! | `tls_server_name=NAME` | [`server_name`](TlsOptions::server_name) | the name the server's certificate is checked against (and sent as SNI where the client allows), when it differs from the URL's host |
//!
//! The keys need the TLS scheme (`tls://`, `rediss://`, `amqps://`): adapters
//! refuse them in a plain URL ([`keys_need_tls`]) rather than connect
//! without TLS. Options set in code apply to whichever URL asks for TLS.
//! Adapters read the keys with [`TlsOptions::apply_url_query`], so a bad
//! value is the same one-line error on every broker.
//!
//! [`TlsOptions::client_config`] turns the options into one rustls
//! [`ClientConfig`](rustls::ClientConfig), which every adapter hands to its
//! client (async-nats, lapin's TCP layer, the Redis adapter's own connection),
//! so verification is the same everywhere: rustls' `WebPkiServerVerifier` over
//! the CA files and/or the platform's roots (read with `rustls-native-certs`,
//! once per process). When a handshake fails, [`TlsOptions::explain`] turns the
//! client library's error into a [`TlsFailure`] that says in one line which it
//! was: certificate not trusted (naming the CA files used), host name mismatch,
//! client certificate required or refused, not TLS at all.
//!
//! # One crypto provider: ring
//!
//! rustls needs a crypto provider. When a binary links two (ring and
//! aws-lc-rs), rustls cannot pick a process default and any client that asks
//! for one panics (`Could not automatically determine the process-level
//! CryptoProvider`): that is what `switchboard --broker tls://…` did when
//! async-nats (ring) and lapin's default features (aws-lc-rs) were linked
//! together. The workspace now enables ring only:
//!
//! - async-nats enables ring by default, and redis-rs and tokio-rustls take
//!   either; lapin is built with `rustls--ring` instead of its default
//!   aws-lc-rs;
//! - ring builds about five times faster: alone in a fresh target directory,
//!   `cargo build -j2` took 8.6 s of CPU for ring 0.17.14 against 46 s for
//!   aws-lc-rs 1.19.0 (aws-lc-sys compiles the AWS-LC C library), measured on
//!   this project's 2-core machine; switchboard needs neither FIPS nor
//!   aws-lc-rs' post-quantum key exchange, so there is nothing to gain from it;
//! - configurations built here name the provider explicitly
//!   ([`crypto_provider`]), so they work even in a program that links both;
//!   binaries call [`install_default_provider`] so that clients which use the
//!   process default (async-nats on its own, redis-rs, lapin's default
//!   connector) work there too.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod config;
mod error;
mod explain;
mod options;
mod provider;
mod url;
mod verifier;

pub use error::TlsError;
pub use explain::TlsFailure;
pub use options::{TlsOptions, QUERY_KEYS};
pub use provider::{crypto_provider, install_default_provider};
pub use url::keys_need_tls;

/// Re-exported so adapters and users name the same rustls version.
pub use rustls;
