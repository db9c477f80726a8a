//! `amqps://` through a TLS-terminating proxy of the test's own (the testkit's
//! `TlsProxy`, optionally requiring client certificates) in front of the
//! shared RabbitMQ (`SWITCHBOARD_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), with certificates made by the
//! test: `ca`, mutual TLS with `cert`+`key`, `tls_server_name`, and a
//! one-line error for every way it can fail. Without RabbitMQ they print
//! `skipped: ...` and pass, unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_amqp::AmqpOptions;
use switchboard_core::{Broker, ErrorKind, Message};
use switchboard_testkit::{unique, Pki, TlsProxy};
use switchboard_tls::TlsOptions;

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

/// Publishes and receives one message: the connection really works.
async fn round_trip(broker: &impl Broker) {
    let subject = format!("{}.secure", unique("tls"));
    let mut subscription = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "over TLS").unwrap())
        .await
        .unwrap();
    let mut delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message arrives")
        .expect("the subscription is open")
        .unwrap();
    assert_eq!(delivery.payload_str(), Some("over TLS"));
    delivery.ack().await.unwrap();
}

/// Connecting to `url` fails, quickly, in one line containing every `needle`.
async fn fails(url: &str, needles: &[&str]) -> String {
    let started = Instant::now();
    let error = switchboard_amqp::connect(url).await.unwrap_err();
    // Bounded by the 5 s connect timeout; generous, only "it does not hang".
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed within the connect timeout"
    );
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    let text = error.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains("guest:guest"), "password redacted: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} in: {text}");
    }
    text
}

#[tokio::test]
async fn connects_with_the_ca_from_the_url() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    let broker = switchboard_amqp::connect(&format!("{}?{}", tls_url(&proxy), pki.ca_query()))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn connects_with_the_ca_from_the_options_builder() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    let options = AmqpOptions::default().tls(TlsOptions::new().ca(pki.ca()));
    let broker = switchboard_amqp::AmqpBroker::connect_with(&tls_url(&proxy), options)
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn without_a_ca_the_certificate_is_not_trusted() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    fails(
        &tls_url(&proxy),
        &[
            "certificate is not trusted",
            "the system trust store",
            "ca=",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_wrong_ca_is_named() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    let wrong = pki.untrusted_ca().display().to_string();
    fails(
        &format!("{}?ca={wrong}", tls_url(&proxy)),
        &[
            "certificate is not trusted",
            &format!("the CA file {wrong}"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_host_name_mismatch_says_so() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    let url = format!("{}?{}", tls_url(&proxy), pki.ca_query());
    fails(
        &format!("{url}&tls_server_name=elsewhere.example"),
        &["host name mismatch", "elsewhere.example", "tls_server_name"],
    )
    .await;
    let broker = switchboard_amqp::connect(&format!("{url}&tls_server_name={}", Pki::OTHER_NAME))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let Some(port) = rabbitmq_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::mutual(&pki, port);
    let url = format!("{}?{}", tls_url(&proxy), pki.ca_query());
    fails(&url, &["requires a client certificate", "cert=", "key="]).await;
    let stranger = format!(
        "{url}&cert={}&key={}",
        pki.untrusted_client_cert().display(),
        pki.untrusted_client_key().display()
    );
    fails(
        &stranger,
        &[
            "refused the client certificate",
            &pki.untrusted_client_cert().display().to_string(),
        ],
    )
    .await;
    let broker = switchboard_amqp::connect(&format!("{url}&{}", pki.client_query()))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn tls_to_a_plain_port_fails_in_one_line() {
    let Some(port) = rabbitmq_port() else { return };
    let text = fails(&format!("amqps://guest:guest@127.0.0.1:{port}/%2f"), &[]).await;
    assert!(text.contains("TLS"), "says it is about TLS: {text}");
}
