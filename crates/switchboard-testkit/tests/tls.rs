//! The TLS fixtures work: the PKI's certificates verify as intended, and the
//! TLS proxy terminates TLS (optionally mutual) in front of a plain port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use switchboard_testkit::{Pki, TlsProxy};
use switchboard_tls::rustls::pki_types::ServerName;
use switchboard_tls::TlsOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain TCP echo server on a loopback port, one connection at a time.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Says `hello` through the proxy with `tls` and returns what came back.
async fn echo_through(proxy: &TlsProxy, tls: TlsOptions) -> std::io::Result<Vec<u8>> {
    let config = tls.client_config().unwrap();
    let tcp = tokio::net::TcpStream::connect(proxy.address()).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await?;
    stream.write_all(b"hello").await?;
    let mut answer = vec![0u8; 5];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn the_proxy_terminates_tls_for_clients_trusting_the_ca() {
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, echo_server());
    let answer = echo_through(&proxy, TlsOptions::new().ca(pki.ca()))
        .await
        .unwrap();
    assert_eq!(answer, b"hello");
    let refused = echo_through(&proxy, TlsOptions::new().ca(pki.untrusted_ca())).await;
    let error = refused.unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn the_mutual_proxy_wants_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let proxy = TlsProxy::mutual(&pki, echo_server());
    let trusted = TlsOptions::new().ca(pki.ca());
    // With TLS 1.3 the refusal arrives after the client's handshake, on read.
    assert!(echo_through(&proxy, trusted.clone()).await.is_err());
    let stranger = trusted
        .clone()
        .client_cert(pki.untrusted_client_cert(), pki.untrusted_client_key());
    assert!(echo_through(&proxy, stranger).await.is_err());
    let client = trusted.client_cert(pki.client_cert(), pki.client_key());
    assert_eq!(echo_through(&proxy, client).await.unwrap(), b"hello");
}

#[test]
fn the_pki_is_removed_with_its_handle() {
    let pki = Pki::new();
    let dir = pki.dir().to_path_buf();
    for file in [
        pki.ca(),
        pki.server_cert(),
        pki.server_key(),
        pki.client_key(),
    ] {
        assert!(
            file.starts_with(&dir) && file.is_file(),
            "{}",
            file.display()
        );
    }
    drop(pki);
    assert!(!dir.exists());
}
