//! A private PKI made for one test: a CA, a server certificate for the
//! loopback names, a client certificate, and a second CA nobody trusts, all
//! written as PEM files to a directory removed on drop.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The names the server certificate holds: the loopback address and host
/// name, and [`Pki::OTHER_NAME`], a name only `tls_server_name` can reach.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", Pki::OTHER_NAME];

/// Certificates and keys in PEM files, made fresh (ECDSA P-256).
///
/// | file | what |
/// |---|---|
/// | [`ca`](Self::ca) | the CA that signed the server and client certificates |
/// | [`server_cert`](Self::server_cert), [`server_key`](Self::server_key) | the server's, for [`SERVER_NAMES`] |
/// | [`client_cert`](Self::client_cert), [`client_key`](Self::client_key) | a client's, signed by the CA |
/// | [`untrusted_ca`](Self::untrusted_ca) | another CA, which signed nothing the servers use |
/// | [`untrusted_client_cert`](Self::untrusted_client_cert), [`untrusted_client_key`](Self::untrusted_client_key) | a client certificate signed by that other CA |
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A name in the server certificate that does not resolve: reachable only
    /// by connecting to 127.0.0.1 with `tls_server_name` set to it.
    pub const OTHER_NAME: &'static str = "broker.switchboard.test";

    /// Makes the certificates and writes them to a fresh temporary directory.
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(crate::unique("pki"));
        std::fs::create_dir_all(&dir).expect("a temporary directory for the PKI");
        let pki = Pki { dir };

        let ca = issuer("switchboard test CA");
        pki.write("ca.pem", &ca.pem());
        let untrusted = issuer("switchboard untrusted CA");
        pki.write("untrusted-ca.pem", &untrusted.pem());

        let server = leaf(&SERVER_NAMES, ExtendedKeyUsagePurpose::ServerAuth);
        let (cert, key) = sign(server, &ca);
        pki.write("server.pem", &cert);
        pki.write("server-key.pem", &key);

        let client = leaf(&["switchboard-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let (cert, key) = sign(client, &ca);
        pki.write("client.pem", &cert);
        pki.write("client-key.pem", &key);

        let stranger = leaf(
            &["switchboard-stranger"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (cert, key) = sign(stranger, &untrusted);
        pki.write("untrusted-client.pem", &cert);
        pki.write("untrusted-client-key.pem", &key);
        pki
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.dir.join(name), pem).expect("writing a PEM file");
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trusted CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate (signed by [`ca`](Self::ca)).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// A client certificate signed by [`ca`](Self::ca).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// Its private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// A CA that signed neither the server's certificate nor the client's.
    pub fn untrusted_ca(&self) -> PathBuf {
        self.dir.join("untrusted-ca.pem")
    }

    /// A client certificate signed by [`untrusted_ca`](Self::untrusted_ca).
    pub fn untrusted_client_cert(&self) -> PathBuf {
        self.dir.join("untrusted-client.pem")
    }

    /// Its private key.
    pub fn untrusted_client_key(&self) -> PathBuf {
        self.dir.join("untrusted-client-key.pem")
    }

    /// `ca=…` for a URL query.
    pub fn ca_query(&self) -> String {
        format!("ca={}", self.ca().display())
    }

    /// `cert=…&key=…` (the trusted client certificate) for a URL query.
    pub fn client_query(&self) -> String {
        format!(
            "cert={}&key={}",
            self.client_cert().display(),
            self.client_key().display()
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("a CA key");
    CertifiedIssuer::self_signed(params, key).expect("a self-signed CA")
}

fn leaf(names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params
}

/// (certificate PEM, private key PEM).
fn sign(params: CertificateParams, issuer: &CertifiedIssuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("a key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}
