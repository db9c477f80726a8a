//! Building the rustls [`ClientConfig`] from [`TlsOptions`].

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::verifier::{AcceptAnyCertificate, VerifyAs};
use crate::{crypto_provider, TlsError, TlsOptions};

impl TlsOptions {
    /// A rustls client configuration from these options, with ring as its
    /// crypto provider: the server is verified against the CA files and/or the
    /// platform's roots by rustls' `WebPkiServerVerifier` (against
    /// [`server_name`](Self::server_name) if set), and the client certificate
    /// is presented when the server asks for one.
    ///
    /// Reads the files now; the platform's store is read once per process.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.check()?;
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.accepts_invalid_certs() {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider)))
        } else {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Invalid(format!("cannot verify servers: {e}")))?;
            match self.server_name_override() {
                None => builder.with_webpki_verifier(webpki),
                Some(name) => {
                    let verifier: Arc<dyn ServerCertVerifier> =
                        Arc::new(VerifyAs::new(webpki, self.name_for(name)?));
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(verifier)
                }
            }
        };
        let config = match self.client_cert_files() {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certificates(cert, "client certificate")?;
                let private = read_key(key)?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    TlsError::KeyMismatch {
                        cert: cert.to_path_buf(),
                        key: key.to_path_buf(),
                        reason: e.to_string(),
                    }
                })?
            }
        };
        Ok(Arc::new(config))
    }

    /// The trust anchors: the CA files and/or the platform's store.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        if self.uses_system_roots() {
            match system_roots() {
                Ok(system) => store.roots.extend(system.roots.iter().cloned()),
                // With CA files as well, those alone are trusted.
                Err(e) if !self.ca_files().is_empty() => {
                    tracing::debug!(error = %e, "the system trust store is unusable; trusting the CA files only")
                }
                Err(e) => return Err(TlsError::NoRoots(e.clone())),
            }
        }
        for path in self.ca_files() {
            let (added, _) = store.add_parsable_certificates(read_certificates(path, "CA")?);
            if added == 0 {
                return Err(TlsError::Content {
                    what: "CA",
                    path: path.to_path_buf(),
                    problem: "holds no certificate usable as a CA".into(),
                });
            }
        }
        Ok(store)
    }
}

/// The platform's trust store, read once per process (rustls-native-certs:
/// the OpenSSL certificate file and directory on Linux, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` if set, the keychain on macOS, the system store on Windows).
fn system_roots() -> Result<&'static RootCertStore, &'static String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            // A file or directory named in SSL_CERT_FILE / SSL_CERT_DIR was
            // asked for: one that cannot be read is said, not left to a later
            // "not trusted" that does not name it.
            let asked = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
                .iter()
                .any(|name| std::env::var_os(name).is_some());
            for error in &found.errors {
                if asked {
                    tracing::warn!(%error, "reading the trust store SSL_CERT_FILE or SSL_CERT_DIR names failed");
                } else {
                    tracing::debug!(%error, "reading the system trust store");
                }
            }
            if added > 0 {
                Ok(store)
            } else if found.errors.is_empty() {
                Err("it is empty".to_string())
            } else {
                Err(found
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        })
        .as_ref()
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            what,
            path: path.to_path_buf(),
            problem: format!("is not valid PEM ({e})"),
        })?;
    if certificates.is_empty() {
        // DER starts with a SEQUENCE tag; PEM is text.
        let problem = if pem.first() == Some(&0x30) {
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); it looks like DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`"
        } else {
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        };
        return Err(TlsError::Content {
            what,
            path: path.to_path_buf(),
            problem: problem.into(),
        });
    }
    Ok(certificates)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "client key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        what: "client key",
        path: path.to_path_buf(),
        problem: match e {
            // PKCS#8's `BEGIN ENCRYPTED PRIVATE KEY` and OpenSSL's older
            // `Proc-Type: 4,ENCRYPTED` both say so.
            rustls::pki_types::pem::Error::NoItemsFound
                if pem.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") =>
            {
                "is encrypted, and switchboard reads only an unencrypted key: write one with `openssl pkey -in FILE -out FILE.plain` (keep it readable by this user only)".to_string()
            }
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_string()
            }
            other => format!("is not a valid PEM private key ({other})"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("switchboard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn the_default_trusts_the_system_store() {
        // Every machine that runs the tests has a CA bundle (the Debian
        // ca-certificates package); without one this says so in one line.
        match TlsOptions::new().client_config() {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("ca=/path/to/ca.pem"), "{e}"),
        }
    }

    #[test]
    fn file_problems_name_the_file() {
        let missing = TlsOptions::new().ca("/nonexistent/ca.pem");
        let error = missing.client_config().unwrap_err().to_string();
        assert!(
            error.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{error}"
        );
        let empty = temp_file("empty.pem", "no pem here\n");
        let error = TlsOptions::new()
            .ca(&empty)
            .client_config()
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let error = TlsOptions::new()
            .client_cert("/nonexistent/client.pem", &empty)
            .client_config()
            .unwrap_err()
            .to_string();
        assert!(error.contains("client certificate file"), "{error}");
    }

    #[test]
    fn a_key_file_without_a_key_says_so_and_not_what_it_holds() {
        let secret = "-----BEGIN CERTIFICATE-----\nc2VjcmV0LXRleHQ=\n-----END CERTIFICATE-----\n";
        let not_a_key = temp_file("not-a-key.pem", secret);
        let error = read_key(&not_a_key).unwrap_err().to_string();
        assert!(error.contains("holds no PEM private key"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "{error}");
    }

    /// An encrypted key or a DER certificate says what it is and how to
    /// convert it (both were "holds no PEM …", which the file seemed to belie).
    #[test]
    fn an_encrypted_key_and_a_der_certificate_say_how_to_convert_them() {
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let key = temp_file("encrypted-key.pem", encrypted);
        let error = read_key(&key).unwrap_err().to_string();
        assert!(
            error.contains("is encrypted") && error.contains("openssl pkey"),
            "{error}"
        );
        let der = std::env::temp_dir()
            .join(format!("switchboard-tls-{}", std::process::id()))
            .join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a, 0x02, 0x82]).unwrap();
        let error = read_certificates(&der, "CA").unwrap_err().to_string();
        assert!(
            error.contains("looks like DER") && error.contains("-inform der"),
            "{error}"
        );
    }
}
