//! `amqps://` through a TLS-terminating proxy of the test's own (the testkit's
//! `TlsProxy`, optionally requiring client certificates) in front of the
//! shared RabbitMQ (`SWITCHBOARD_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), with certificates made by the
//! test: the shared TLS checks (`switchboard_testkit::tls_checks`) and what
//! is AMQP's own. Without RabbitMQ they print `skipped: ...` and pass,
//! unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_amqp::{AmqpOptions, TlsOptions};
use switchboard_conformance::Connector;
use switchboard_testkit::{Pki, TlsChecks, TlsEndpoint, TlsProxy};

/// The shared RabbitMQ's port, if it answers.
fn rabbitmq_port() -> Option<u16> {
    let url = switchboard_conformance::broker_url(
        "SWITCHBOARD_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    let port = url::Url::parse(&url).ok()?.port().unwrap_or(5672);
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        Some(port)
    } else {
        switchboard_conformance::skip_or_fail(format_args!("RabbitMQ not available at {url}"));
        None
    }
}

fn tls_url(proxy: &TlsProxy) -> String {
    format!("amqps://guest:guest@{}/%2f", proxy.address())
}

fn checks() -> TlsChecks {
    TlsChecks::new(
        |pki, mutual| {
            let port = rabbitmq_port()?;
            let proxy = if mutual {
                TlsProxy::mutual(pki, port)
            } else {
                TlsProxy::start(pki, port)
            };
            Some(TlsEndpoint::new(tls_url(&proxy), proxy))
        },
        Connector::new(|url: String| async move { switchboard_amqp::connect(&url).await }),
    )
    // 200,000 messages through the test's own TLS proxy (one thread,
    // rustls unoptimized in test builds) took 227 s here; the case runs in
    // plain text in tests/conformance.rs.
    .leave_out_of_conformance(
        "no_silent_loss_under_flood",
        "200,000 messages through the test's single-threaded TLS proxy take minutes; run in plain text by tests/conformance.rs",
    )
}

switchboard_testkit::tls_checks!(checks());

#[tokio::test]
async fn trusts_the_ca_from_the_options_builder() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::mutual(&pki, port);
    let options = AmqpOptions::default().tls(
        TlsOptions::new()
            .ca(pki.ca())
            .client_cert(pki.client_cert(), pki.client_key()),
    );
    let broker = switchboard_amqp::AmqpBroker::connect_with(&tls_url(&proxy), options)
        .await
        .unwrap();
    switchboard_core::Broker::close(&broker).await.unwrap();
}

#[tokio::test]
async fn tls_to_a_plain_port_says_it_does_not_speak_tls() {
    let Some(port) = rabbitmq_port() else { return };
    checks()
        .fails(
            &format!("amqps://guest:guest@127.0.0.1:{port}/%2f"),
            &["does not answer in TLS"],
        )
        .await;
}
