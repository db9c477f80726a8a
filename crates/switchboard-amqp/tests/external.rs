//! AMQP EXTERNAL authentication with a client certificate, against a
//! RabbitMQ node of the test's own (the testkit's `RabbitNode`: a TLS
//! listener requiring client certificates, only EXTERNAL offered, plugin
//! `rabbitmq_auth_mechanism_ssl`; the shared node on 5672 is not touched).
//! The user is the certificate's common name. Skipped without
//! rabbitmq-server (or when not root), unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_core::{Broker, ErrorKind, Message, Publisher, SubscriberExt};
use switchboard_testkit::{unique, Pki, RabbitNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_auth_with_a_client_certificate() {
    let pki = Pki::new();
    let Some(node) = RabbitNode::start_external_auth(&pki) else {
        return;
    };
    let tls = format!("{}&{}", pki.ca_query(), pki.client_query());

    // The certificate is the login: no user or password in the URL.
    let url = format!("{}?auth_mechanism=external&{tls}", node.tls_url());
    let broker = tokio::time::timeout(Duration::from_secs(20), switchboard_amqp::connect(&url))
        .await
        .expect("connects in time")
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let subject = unique("external");
    let mut subscription = broker.subscribe_to(&subject).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "by certificate").unwrap())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .unwrap();
    assert_eq!(delivery.payload_str(), Some("by certificate"));
    broker.close().await.unwrap();

    // PLAIN (the default mechanism) is not offered: a connect error, in time.
    let started = Instant::now();
    let plain = format!("{}?{tls}", node.tls_url());
    let error = switchboard_amqp::connect(&plain).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    assert!(started.elapsed() < Duration::from_secs(15), "{error}");
    assert!(
        error.to_string().contains("auth_mechanism=external"),
        "the error names the mechanism to use: {error}"
    );
    eprintln!("without auth_mechanism=external: {error}");

    // Without a client certificate the handshake itself is refused.
    let no_cert = format!(
        "{}?auth_mechanism=external&{}",
        node.tls_url(),
        pki.ca_query()
    );
    let error = switchboard_amqp::connect(&no_cert).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    // TLS 1.3 checks the client's certificate after the client finished its
    // side of the handshake: the refusal is a TLS alert, or, when the server
    // closes first, a reset; either message names the client certificate.
    assert!(error.to_string().contains("client certificate"), "{error}");
    eprintln!("without a client certificate: {error}");
}
