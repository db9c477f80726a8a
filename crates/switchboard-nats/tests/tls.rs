//! TLS against nats-server processes of the test's own (a `tls {}` block),
//! with certificates made by the test: the shared TLS checks
//! (`switchboard_testkit::tls_checks`) and what is NATS's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_conformance::Connector;
use switchboard_nats::{NatsOptions, TlsOptions};
use switchboard_testkit::{NatsServer, Pki, TlsChecks, TlsEndpoint};

fn connector() -> Connector {
    Connector::new(|url: String| async move { switchboard_nats::connect(&url).await })
}

fn checks() -> TlsChecks {
    TlsChecks::new(
        |pki, mutual| {
            let server = if mutual {
                NatsServer::start_mutual_tls(pki)
            } else {
                NatsServer::start_tls(pki)
            }?;
            Some(TlsEndpoint::new(server.tls_url(), server))
        },
        connector(),
    )
}

switchboard_testkit::tls_checks!(checks());

#[tokio::test]
async fn trusts_the_ca_from_the_options_builder() {
    let pki = Pki::new();
    let Some(server) = NatsServer::start_tls(&pki) else {
        return;
    };
    let options = NatsOptions::new().tls(
        TlsOptions::new()
            .ca(pki.ca())
            .client_cert(pki.client_cert(), pki.client_key()),
    );
    let broker = switchboard_nats::NatsBroker::connect_with(&server.tls_url(), options)
        .await
        .unwrap();
    switchboard_core::Broker::close(&broker).await.unwrap();
}

#[tokio::test]
async fn tls_to_a_plain_server_says_it_does_not_speak_tls() {
    let Some(server) = NatsServer::start(&[]) else {
        return;
    };
    let checks = checks();
    let url = format!("tls://127.0.0.1:{}", server.port());
    checks.fails(&url, &["does not answer in TLS"]).await;
}
