//! TLS against redis-server processes of the test's own (`--tls-port`),
//! with certificates made by the test: `ca`, mutual TLS with `cert`+`key`,
//! `tls_server_name`, and a one-line error for every way it can fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_core::{Broker, ErrorKind, Message};
use switchboard_redis::RedisOptions;
use switchboard_testkit::{unique, Pki, RedisServer};
use switchboard_tls::TlsOptions;

/// Publishes and receives one message: the connection really works.
async fn round_trip(broker: &impl Broker) {
    let subject = format!("{}.secure", unique("tls"));
    let mut subscription = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "over TLS").unwrap())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message arrives")
        .expect("the subscription is open")
        .unwrap();
    assert_eq!(delivery.payload_str(), Some("over TLS"));
}

/// Connecting to `url` fails, quickly, in one line containing every `needle`.
async fn fails(url: &str, needles: &[&str]) -> String {
    let started = Instant::now();
    let error = switchboard_redis::connect(url).await.unwrap_err();
    // Bounded by the 5 s connect timeout; generous, only "it does not hang".
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed within the connect timeout"
    );
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    let text = error.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} in: {text}");
    }
    text
}

#[tokio::test]
async fn connects_with_the_ca_from_the_url() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    let broker = switchboard_redis::connect(&format!("{}?{}", server.tls_url(), pki.ca_query()))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn connects_with_the_ca_from_the_options_builder() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    let options = RedisOptions::new().tls(TlsOptions::new().ca(pki.ca()));
    let broker = options.connect(&server.tls_url()).await.unwrap();
    round_trip(&broker).await;
}

#[tokio::test]
async fn without_a_ca_the_certificate_is_not_trusted() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    fails(
        &server.tls_url(),
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
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    let wrong = pki.untrusted_ca().display().to_string();
    fails(
        &format!("{}?ca={wrong}", server.tls_url()),
        &[
            "certificate is not trusted",
            &format!("the CA file {wrong}"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_host_name_mismatch_says_so() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    let url = format!("{}?{}", server.tls_url(), pki.ca_query());
    fails(
        &format!("{url}&tls_server_name=elsewhere.example"),
        &["host name mismatch", "elsewhere.example", "tls_server_name"],
    )
    .await;
    // A name only the certificate holds works once given as tls_server_name.
    let broker = switchboard_redis::connect(&format!("{url}&tls_server_name={}", Pki::OTHER_NAME))
        .await
        .unwrap();
    round_trip(&broker).await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_mutual_tls(&pki) else {
        return;
    };
    let url = format!("{}?{}", server.tls_url(), pki.ca_query());
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
    let broker = switchboard_redis::connect(&format!("{url}&{}", pki.client_query()))
        .await
        .unwrap();
    round_trip(&broker).await;
}

#[tokio::test]
async fn tls_to_a_plain_server_fails_in_one_line() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let text = fails(&url, &[]).await;
    assert!(
        text.contains("TLS") || text.contains("tls"),
        "says it is about TLS: {text}"
    );
}

#[tokio::test]
async fn unreadable_files_are_named_and_key_contents_never_shown() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    fails(
        &format!("{}?ca=/nonexistent/ca.pem", server.tls_url()),
        &["cannot read the CA file /nonexistent/ca.pem"],
    )
    .await;
    // A key file given as the certificate: named, its contents never shown.
    let key = std::fs::read_to_string(pki.client_key()).unwrap();
    let secret = key.lines().nth(1).unwrap();
    let text = fails(
        &format!(
            "{}?{}&cert={}&key={}",
            server.tls_url(),
            pki.ca_query(),
            pki.client_key().display(),
            pki.client_key().display()
        ),
        &["client certificate file"],
    )
    .await;
    assert!(!text.contains(secret), "{text}");
}
