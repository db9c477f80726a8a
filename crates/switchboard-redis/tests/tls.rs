//! TLS against redis-server processes of the test's own (`--tls-port`), with
//! certificates made by the test: the shared TLS checks
//! (`switchboard_testkit::tls_checks`) and what is Redis's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_conformance::Connector;
use switchboard_redis::{RedisOptions, TlsOptions};
use switchboard_testkit::{Pki, RedisServer, TlsChecks, TlsEndpoint};

fn checks() -> TlsChecks {
    TlsChecks::new(
        |pki, mutual| {
            let server = if mutual {
                RedisServer::start_mutual_tls(pki)
            } else {
                RedisServer::start_tls(pki)
            }?;
            Some(TlsEndpoint::new(server.tls_url(), server))
        },
        Connector::new(|url: String| async move { switchboard_redis::connect(&url).await }),
    )
}

switchboard_testkit::tls_checks!(checks());

#[tokio::test]
async fn trusts_the_ca_from_the_options_builder() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_mutual_tls(&pki) else {
        return;
    };
    let broker = RedisOptions::new()
        .tls(
            TlsOptions::new()
                .ca(pki.ca())
                .client_cert(pki.client_cert(), pki.client_key()),
        )
        .connect(&server.tls_url())
        .await
        .unwrap();
    switchboard_core::Broker::close(&broker).await.unwrap();
}

#[tokio::test]
async fn insecure_accepts_the_unknown_certificate() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    let broker = switchboard_redis::connect(&format!("{}/#insecure", server.tls_url()))
        .await
        .unwrap();
    switchboard_core::Broker::close(&broker).await.unwrap();
}

#[tokio::test]
async fn tls_to_a_plain_server_does_not_hang() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    // Redis waits for more of what it takes for a command: the connect timeout ends it.
    let url = format!("rediss://127.0.0.1:{}", server.port());
    checks().fails(&url, &["speaking TLS"]).await;
}
