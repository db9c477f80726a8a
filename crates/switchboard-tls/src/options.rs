//! [`TlsOptions`]: what to trust and how to identify, from a URL or a builder.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;
use switchboard_core::options::{CA, CERT, KEY, TLS_SERVER_NAME};

use crate::TlsError;

/// The URL query keys [`TlsOptions::apply_query`] takes, the same on every
/// broker (named in [`switchboard_core::options`]).
pub const QUERY_KEYS: [&str; 4] = [CA, CERT, KEY, TLS_SERVER_NAME];

/// The value of `ca` that means the platform's trust store rather than a file.
const SYSTEM: &str = "system";

/// How a client verifies the server and identifies itself over TLS.
///
/// The defaults verify the server against the platform's trust store, check
/// its certificate against the URL's host name, and present no client
/// certificate. Files are read when connecting
/// ([`client_config`](Self::client_config)), so a missing file is reported then,
/// naming the file.
///
/// ```
/// use switchboard_tls::TlsOptions;
/// let tls = TlsOptions::new()
///     .ca("/etc/switchboard/ca.pem")
///     .client_cert("/etc/switchboard/client.pem", "/etc/switchboard/client-key.pem")
///     .server_name("broker.internal");
/// assert!(!tls.uses_system_roots());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    ca: Vec<PathBuf>,
    system_roots: Option<bool>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    accept_invalid_certs: bool,
}

impl TlsOptions {
    /// The defaults: the platform's trust store, the URL's host name, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CAs in the PEM file at `path` (URL: `ca=PATH`, repeatable).
    /// Once a CA file is given, the platform's trust store is no longer used
    /// unless [`system_roots(true)`](Self::system_roots) (URL: `ca=system`) asks for it too.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(path.into());
        self
    }

    /// Whether to trust the platform's trust store as well as the CA files
    /// (URL: `ca=system`). By default it is trusted only when no CA file is given.
    pub fn system_roots(mut self, trust: bool) -> Self {
        self.system_roots = Some(trust);
        self
    }

    /// Presents the certificate chain in the PEM file `cert`, with the private
    /// key in the PEM file `key`, to servers that ask for one (mutual TLS).
    /// URL: `cert=PATH&key=PATH`.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Checks the server's certificate against `name` instead of the URL's
    /// host (and sends it as SNI where the client library lets switchboard
    /// choose). For servers reached by an address their certificate does not
    /// name. URL: `tls_server_name=NAME`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts any server certificate: no trust or name check, only the
    /// handshake's signatures are verified. Anyone on the path can then read
    /// and change the traffic; it exists for redis-rs' `rediss://…#insecure`
    /// and is refused together with a `ca`.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Applies one URL query pair. `Ok(false)` if `key` is not one of
    /// [`QUERY_KEYS`] (the adapter handles it); an error if the value is empty
    /// or the server name is malformed.
    pub fn apply_query(&mut self, key: &str, value: &str) -> Result<bool, TlsError> {
        if !QUERY_KEYS.contains(&key) {
            return Ok(false);
        }
        if value.is_empty() {
            return Err(TlsError::Invalid(format!(
                "`{key}=` is empty; it takes {}",
                match key {
                    "ca" => "the path of a PEM file of CA certificates, or `system`",
                    "cert" => "the path of the client certificate's PEM file",
                    "key" => "the path of the client key's PEM file",
                    _ => "the host name the server's certificate names",
                }
            )));
        }
        match key {
            "ca" if value == SYSTEM => self.system_roots = Some(true),
            "ca" => self.ca.push(PathBuf::from(value)),
            "cert" => self.cert = Some(PathBuf::from(value)),
            "key" => self.key = Some(PathBuf::from(value)),
            _ => self.server_name = Some(value.to_string()),
        }
        Ok(true)
    }

    /// Checks that the settings fit together: `cert` and `key` both or
    /// neither, a well-formed server name, no `ca` with "accept invalid certs".
    pub fn check(&self) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(TlsError::Invalid(
                    "`cert` is given without `key`; mutual TLS needs both (cert=client.pem&key=client-key.pem)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::Invalid(
                    "`key` is given without `cert`; mutual TLS needs both (cert=client.pem&key=client-key.pem)".into(),
                ))
            }
            _ => {}
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                TlsError::Invalid(format!(
                    "`tls_server_name={name}` is not a valid DNS name or IP address"
                ))
            })?;
        }
        if self.accept_invalid_certs && (!self.ca.is_empty() || self.system_roots == Some(true)) {
            return Err(TlsError::Invalid(
                "`#insecure` (accept any certificate) contradicts `ca`; drop one of them".into(),
            ));
        }
        Ok(())
    }

    /// Whether anything differs from the defaults, i.e. whether TLS was asked
    /// for through these options (adapters refuse that on a plain scheme).
    pub fn is_configured(&self) -> bool {
        *self != Self::default()
    }

    /// The CA files to trust.
    pub fn ca_files(&self) -> &[PathBuf] {
        &self.ca
    }

    /// Whether the platform's trust store is trusted.
    pub fn uses_system_roots(&self) -> bool {
        !self.accept_invalid_certs && self.system_roots.unwrap_or(self.ca.is_empty())
    }

    /// The client certificate and key files, if set.
    pub fn client_cert_files(&self) -> Option<(&Path, &Path)> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    /// The name set with [`server_name`](Self::server_name), if any.
    pub fn server_name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether any certificate is accepted (see [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs)).
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// The name to connect to `host` with: the override if set, else `host`
    /// (brackets of an IPv6 literal removed).
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self
            .server_name
            .as_deref()
            .unwrap_or(host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(name.to_string()).map_err(|_| {
            TlsError::Invalid(format!(
                "`{name}` is not a valid TLS server name; set `tls_server_name=` to the name the server's certificate holds"
            ))
        })
    }

    /// What the server's certificate is checked against, for messages:
    /// `the CA file /etc/ca.pem`, `the system trust store`, ….
    pub fn trusted(&self) -> String {
        let files = self
            .ca
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        let files = match files.len() {
            0 => None,
            1 => Some(format!("the CA file {}", files[0])),
            _ => Some(format!("the CA files {}", files.join(", "))),
        };
        match (files, self.uses_system_roots()) {
            (Some(files), true) => format!("{files} or the system trust store"),
            (Some(files), false) => files,
            (None, true) => "the system trust store".to_string(),
            (None, false) => "nothing".to_string(),
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths only: the key file's contents are never read here.
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca)
            .field("system_roots", &self.uses_system_roots())
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_name", &self.server_name)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_query(pairs: &[(&str, &str)]) -> Result<TlsOptions, TlsError> {
        let mut options = TlsOptions::new();
        for (key, value) in pairs {
            assert!(options.apply_query(key, value)?, "{key} is a TLS key");
        }
        options.check()?;
        Ok(options)
    }

    #[test]
    fn query_keys_set_the_same_fields_as_the_builder() {
        let options = from_query(&[
            ("ca", "/a.pem"),
            ("ca", "/b.pem"),
            ("cert", "/c.pem"),
            ("key", "/k.pem"),
            ("tls_server_name", "broker.internal"),
        ])
        .unwrap();
        assert_eq!(
            options,
            TlsOptions::new()
                .ca("/a.pem")
                .ca("/b.pem")
                .client_cert("/c.pem", "/k.pem")
                .server_name("broker.internal")
        );
        assert!(!options.uses_system_roots());
        assert_eq!(options.trusted(), "the CA files /a.pem, /b.pem");
        let mut other = TlsOptions::new();
        assert!(!other.apply_query("capacity", "1").unwrap());
        assert!(!other.is_configured());
    }

    #[test]
    fn system_roots_by_default_or_when_asked() {
        assert!(TlsOptions::new().uses_system_roots());
        assert_eq!(TlsOptions::new().trusted(), "the system trust store");
        let both = from_query(&[("ca", "/a.pem"), ("ca", "system")]).unwrap();
        assert!(both.uses_system_roots());
        assert_eq!(
            both.trusted(),
            "the CA file /a.pem or the system trust store"
        );
    }

    #[test]
    fn contradictions_and_bad_values_say_what_to_fix() {
        for (pairs, needle) in [
            (&[("cert", "/c.pem")][..], "without `key`"),
            (&[("key", "/k.pem")][..], "without `cert`"),
            (&[("ca", "")][..], "`ca=` is empty"),
            (
                &[("tls_server_name", "not a name")][..],
                "not a valid DNS name",
            ),
        ] {
            let error = from_query(pairs).unwrap_err().to_string();
            assert!(error.contains(needle), "{pairs:?}: {error}");
        }
        let error = TlsOptions::new()
            .ca("/a.pem")
            .danger_accept_invalid_certs(true)
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.contains("contradicts"), "{error}");
    }

    #[test]
    fn the_name_to_connect_with() {
        let plain = TlsOptions::new();
        assert_eq!(plain.name_for("localhost").unwrap().to_str(), "localhost");
        assert_eq!(plain.name_for("[::1]").unwrap().to_str(), "::1");
        let named = TlsOptions::new().server_name("broker.internal");
        assert_eq!(
            named.name_for("127.0.0.1").unwrap().to_str(),
            "broker.internal"
        );
    }
}
