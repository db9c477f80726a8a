//! [`TlsFailure`]: a failed handshake, said in the terms a user acts on.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

use crate::TlsOptions;

/// Why a TLS connection failed. Its `Display` is one line saying which and
/// what to do; built by [`TlsOptions::explain`] from whatever error the client
/// library returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted CA.
    NotTrusted {
        /// What was trusted: `the CA file /etc/ca.pem`, `the system trust store`, ….
        trusted: String,
    },
    /// The certificate is valid, but not for the name checked.
    NameMismatch {
        /// The name checked (the URL's host or `tls_server_name`).
        expected: String,
        /// The names the certificate holds, when rustls says.
        presented: Vec<String>,
    },
    /// The certificate is expired, not yet valid, revoked or malformed.
    CertificateInvalid {
        /// Which.
        problem: String,
    },
    /// The server requires a client certificate and none was configured.
    ClientCertRequired,
    /// The server refused the client certificate presented.
    ClientCertRefused {
        /// The certificate file.
        cert: PathBuf,
        /// The alert the server sent.
        alert: String,
    },
    /// What answered does not speak TLS.
    NotTls,
    /// Any other TLS error.
    Other {
        /// rustls' description.
        detail: String,
    },
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NotTrusted { trusted } => write!(
                f,
                "the server's certificate is not trusted: no CA in {trusted} signed it; pass the CA that did with `ca=/path/to/ca.pem`"
            ),
            TlsFailure::NameMismatch { expected, presented } if presented.is_empty() => write!(
                f,
                "host name mismatch: the server's certificate is not valid for {expected}; connect by a name it holds or set `tls_server_name=` to one"
            ),
            TlsFailure::NameMismatch { expected, presented } => write!(
                f,
                "host name mismatch: the server's certificate is for {}, not {expected}; connect by one of those names or set `tls_server_name=` to one",
                presented.join(", ")
            ),
            TlsFailure::CertificateInvalid { problem } => {
                write!(f, "the server's certificate is invalid: {problem}")
            }
            TlsFailure::ClientCertRequired => write!(
                f,
                "the server requires a client certificate (mutual TLS); pass `cert=/path/to/client.pem&key=/path/to/client-key.pem`"
            ),
            TlsFailure::ClientCertRefused { cert, alert } => write!(
                f,
                "the server refused the client certificate {} ({alert}); is it signed by a CA the server trusts, and still valid?",
                cert.display()
            ),
            TlsFailure::NotTls => write!(
                f,
                "the server does not answer in TLS; is this its TLS port, and has it TLS enabled?"
            ),
            TlsFailure::Other { detail } => write!(f, "TLS failed: {detail}"),
        }
    }
}

impl TlsOptions {
    /// Finds the rustls error in `error`'s chain (through `io::Error`s too)
    /// and says what it means with these options: which CA files were
    /// trusted, whether a client certificate was configured. `None` if the
    /// chain holds no rustls error: the failure was not TLS's.
    pub fn explain(&self, error: &(dyn StdError + 'static)) -> Option<TlsFailure> {
        let rustls_error = find_rustls_error(error)?;
        Some(self.explain_rustls(rustls_error))
    }

    fn explain_rustls(&self, error: &rustls::Error) -> TlsFailure {
        use AlertDescription as Alert;
        match error {
            rustls::Error::InvalidCertificate(certificate) => self.explain_certificate(certificate),
            rustls::Error::AlertReceived(alert) => match (self.client_cert_files(), alert) {
                (None, Alert::CertificateRequired | Alert::BadCertificate) => {
                    TlsFailure::ClientCertRequired
                }
                (
                    Some((cert, _)),
                    Alert::CertificateRequired
                    | Alert::BadCertificate
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
                    | Alert::AccessDenied,
                ) => TlsFailure::ClientCertRefused {
                    cert: cert.to_path_buf(),
                    alert: format!("{alert:?} alert"),
                },
                (_, alert) => TlsFailure::Other {
                    detail: format!("the server sent a {alert:?} alert"),
                },
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                TlsFailure::NotTls
            }
            other => TlsFailure::Other {
                detail: other.to_string(),
            },
        }
    }

    fn explain_certificate(&self, error: &CertificateError) -> TlsFailure {
        let invalid = |problem: &str| TlsFailure::CertificateInvalid {
            problem: problem.to_string(),
        };
        match error {
            CertificateError::UnknownIssuer => TlsFailure::NotTrusted {
                trusted: self.trusted(),
            },
            CertificateError::NotValidForName => TlsFailure::NameMismatch {
                expected: self
                    .server_name_override()
                    .unwrap_or("the host")
                    .to_string(),
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TlsFailure::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.iter().map(|name| plain_name(name)).collect(),
            },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                invalid("it has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                invalid("it is not valid yet (check this machine's clock)")
            }
            CertificateError::Revoked => invalid("it was revoked"),
            other => invalid(&format!("{other:?}")),
        }
    }
}

/// `localhost` from rustls' `DnsName("localhost")`, `127.0.0.1` from `IpAddress(127.0.0.1)`.
fn plain_name(presented: &str) -> String {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(presented)
        .trim_matches('"')
        .to_string()
}

/// The first `rustls::Error` in the chain, looking inside `io::Error`s
/// (whose `source()` skips the error they wrap).
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain(options: &TlsOptions, error: rustls::Error) -> TlsFailure {
        // Wrapped as client libraries hand it over: in an io::Error inside another error.
        let io = std::io::Error::other(error);
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "connect failed")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        options
            .explain(&Outer(io))
            .expect("a rustls error in the chain")
    }

    #[test]
    fn an_unknown_issuer_names_what_was_trusted() {
        let options = TlsOptions::new().ca("/etc/sb/ca.pem");
        let failure = explain(
            &options,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            failure.to_string(),
            "the server's certificate is not trusted: no CA in the CA file /etc/sb/ca.pem signed it; pass the CA that did with `ca=/path/to/ca.pem`"
        );
    }

    #[test]
    fn alerts_mean_different_things_with_and_without_a_client_certificate() {
        let alert = || rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(
            explain(&TlsOptions::new(), alert()),
            TlsFailure::ClientCertRequired
        );
        let with_cert = TlsOptions::new().client_cert("/c.pem", "/k.pem");
        let failure = explain(
            &with_cert,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert!(
            matches!(failure, TlsFailure::ClientCertRefused { ref cert, .. } if cert.to_str() == Some("/c.pem")),
            "{failure:?}"
        );
    }

    #[test]
    fn presented_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("broker.internal"), "broker.internal");
    }

    #[test]
    fn errors_without_tls_in_them_are_not_explained() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(TlsOptions::new().explain(&refused), None);
    }
}
