//! What can be wrong with TLS settings, found before any connection is made.

use std::path::PathBuf;

/// TLS settings that cannot be used: a missing or unreadable file, a file
/// without what it should hold, a key that does not match its certificate,
/// contradicting keys. The message names the file or key and never includes a
/// file's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file named by `ca`, `cert` or `key` cannot be read.
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        /// What the file should hold: `CA`, `client certificate`, `client key`.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The error reading it.
        #[source]
        source: std::io::Error,
    },
    /// A file holds nothing usable of what it should.
    #[error("the {what} file {path} {problem}")]
    Content {
        /// What the file should hold.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What is wrong, e.g. `holds no PEM certificate`.
        problem: String,
    },
    /// The client key does not belong to the client certificate.
    #[error("the client key {key} does not belong to the certificate {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// The settings contradict each other or a value is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Nothing would be trusted: no CA file, and the platform's store is empty or unreadable.
    #[error("no CA to trust: the system trust store has no usable certificate ({0}); pass the CA that signed the server's certificate with `ca=/path/to/ca.pem`")]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}
