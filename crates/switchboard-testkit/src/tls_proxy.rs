//! A TLS-terminating proxy a test controls: TLS (optionally mutual) on a
//! private loopback port, plain TCP to a broker behind it. It stands in for a
//! broker's own TLS listener where starting a private broker with one is
//! heavy (a RabbitMQ node), the way a load balancer terminates TLS in front of
//! one in production.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::certs::Pki;

/// TLS on `127.0.0.1:`[`port`](Self::port), forwarded in plain TCP to a target.
/// Serves [`Pki::server_cert`]; with [`TlsProxy::mutual`], requires a client
/// certificate signed by [`Pki::ca`]. Stops when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// TLS without client certificates, in front of `127.0.0.1:target_port`.
    pub fn start(pki: &Pki, target_port: u16) -> Self {
        Self::launch(pki, target_port, false)
    }

    /// Mutual TLS (a client certificate signed by [`Pki::ca`] is required)
    /// in front of `127.0.0.1:target_port`.
    pub fn mutual(pki: &Pki, target_port: u16) -> Self {
        Self::launch(pki, target_port, true)
    }

    fn launch(pki: &Pki, target_port: u16, mutual: bool) -> Self {
        let config = Arc::new(server_config(pki, mutual));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("the TLS proxy binds a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tls-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the TLS proxy");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve(listener, target, config) => {}
                    }
                });
                // Dropping the runtime drops every connection still open.
            })
            .expect("the TLS proxy thread starts");
        TlsProxy {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port clients connect to with TLS.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for building a URL.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, config: Arc<ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A client that fails the handshake gets rustls' alert and is closed.
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
        });
    }
}

fn server_config(pki: &Pki, mutual: bool) -> ServerConfig {
    let provider = switchboard_tls::crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if mutual {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.ca()).expect("the CA file") {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("a usable CA");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("a client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = CertificateDer::pem_file_iter(pki.server_cert())
        .expect("the server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(pki.server_key()).expect("the server key");
    builder
        .with_single_cert(chain, key)
        .expect("the server certificate and key")
}
