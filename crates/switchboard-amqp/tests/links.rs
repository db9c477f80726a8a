//! How the AMQP adapter reports what happens to its links, against the
//! shared RabbitMQ through a proxy the test controls: a frozen link (noticed
//! by the heartbeat within the keepalive time), a flush bounded by its
//! timeout, messages it cannot represent, and connect errors by kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use switchboard_amqp::AmqpBroker;
use switchboard_conformance::{expect_disconnected, publish_until_received};
use switchboard_core::{Broker, ConnectKind, Error, Message, Publisher, Subscriber};
use switchboard_testkit::{assert_chain_does_not_repeat, free_port, unique, TcpProxy};
use tokio::time::timeout;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn url() -> String {
    std::env::var("SWITCHBOARD_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// The shared broker's address, if it answers (else a skip, or a failure in CI).
async fn broker_address() -> Option<(AmqpBroker, std::net::SocketAddr)> {
    let url = url();
    match switchboard_amqp::connect(&url).await {
        Ok(broker) => {
            let parsed = url::Url::parse(&url).unwrap();
            let address = std::net::ToSocketAddrs::to_socket_addrs(&(
                parsed.host_str().unwrap(),
                parsed.port().unwrap_or(5672),
            ))
            .unwrap()
            .next()
            .unwrap();
            Some((broker, address))
        }
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!("RabbitMQ not available ({error})"));
            None
        }
    }
}

/// The shared broker's URL with its address replaced by `address`.
fn url_at(address: &str, query: &str) -> String {
    let mut parsed = url::Url::parse(&url()).unwrap();
    let (host, port) = address.split_once(':').unwrap();
    parsed.set_host(Some(host)).unwrap();
    parsed.set_port(Some(port.parse().unwrap())).unwrap();
    parsed.set_query(Some(query).filter(|q| !q.is_empty()));
    parsed.to_string()
}

#[tokio::test]
async fn a_frozen_link_is_noticed_within_the_keepalive_time() {
    let Some((direct, address)) = broker_address().await else {
        return;
    };
    let proxy = TcpProxy::start(address);
    let broker = switchboard_amqp::connect(&url_at(&proxy.address(), "keepalive=2s"))
        .await
        .unwrap();
    let subject = unique("frozen");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(10)).await;

    proxy.freeze();
    let (took, reason) = expect_disconnected(&mut sub, "amqp", Duration::from_secs(15)).await;
    eprintln!("noticed after {took:?}: {reason}");
    assert!(reason.contains("resubscribing"), "{reason}");
    assert!(!broker.status().connected);

    proxy.thaw();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(30)).await;
    publish_until_received(&broker, &mut sub, &subject, Duration::from_secs(30)).await;
    assert!(broker.status().connected);
    broker.close().await.unwrap();
    direct.close().await.unwrap();
}

#[tokio::test]
async fn flush_is_bounded_by_its_timeout_and_keeps_counting() {
    let Some((direct, address)) = broker_address().await else {
        return;
    };
    direct.close().await.unwrap();
    let proxy = TcpProxy::start(address);
    let broker = switchboard_amqp::connect(&url_at(
        &proxy.address(),
        "keepalive=off&flush_timeout=700ms",
    ))
    .await
    .unwrap();
    let subject = unique("flush");
    broker
        .publish(Message::new(subject.as_str(), "before").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();

    proxy.freeze();
    broker
        .publish(Message::new(subject.as_str(), "during").unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let error = timeout(Duration::from_secs(10), broker.flush())
        .await
        .expect("flush is bounded")
        .unwrap_err();
    assert!(
        matches!(&error, Error::Timeout { operation, .. } if operation == "flush"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The confirm is still owed: once the link moves, a flush sees it.
    proxy.thaw();
    timeout(Duration::from_secs(10), broker.flush())
        .await
        .expect("flush ends")
        .unwrap();
    broker.close().await.unwrap();
}

/// Far above the flush timeout the test sets: past it, the call hangs.
const HANG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn closing_over_a_frozen_link_is_bounded_by_the_flush_timeout() {
    let Some((direct, address)) = broker_address().await else {
        return;
    };
    direct.close().await.unwrap();
    let proxy = TcpProxy::start(address);
    // No heartbeat of ours: RabbitMQ's (60 s) would end the wait otherwise.
    let broker =
        switchboard_amqp::connect(&url_at(&proxy.address(), "keepalive=off&flush_timeout=1s"))
            .await
            .unwrap();
    let subject = unique("closefrozen");
    let sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();

    proxy.freeze();
    let started = Instant::now();
    let closed = timeout(HANG, sub.close())
        .await
        .expect("Subscription::close is bounded");
    eprintln!(
        "Subscription::close after {:?}: {closed:?}",
        started.elapsed()
    );
    assert!(
        matches!(&closed, Err(Error::Timeout { broker: "amqp", .. })),
        "{closed:?}"
    );
    let started = Instant::now();
    let closed = timeout(HANG, broker.close())
        .await
        .expect("Broker::close is bounded");
    eprintln!("Broker::close after {:?}: {closed:?}", started.elapsed());
    assert!(!broker.status().connected);
    proxy.thaw();
}

#[tokio::test]
async fn a_routing_key_that_is_not_a_subject_is_an_error_item_and_the_stream_goes_on() {
    let Some((broker, _)) = broker_address().await else {
        return;
    };
    let prefix = unique("badkey");
    let mut sub = broker
        .subscribe(&format!("{prefix}.>").parse().unwrap())
        .await
        .unwrap();
    let connection = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for key in [format!("{prefix}.bad key"), format!("{prefix}.good")] {
        channel
            .basic_publish(
                "amq.topic".into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    match timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Err(Error::InvalidSubject { subject, reason }))) => {
            assert_eq!(subject, format!("{prefix}.bad key"));
            assert!(reason.contains("amqp"), "{reason}");
        }
        other => panic!("expected InvalidSubject, got {other:?}"),
    }
    let mut delivery = timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.subject().as_str(), format!("{prefix}.good"));
    delivery.ack().await.unwrap();
    connection.close(200, "OK".into()).await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn connect_errors_have_kinds() {
    let Some((broker, address)) = broker_address().await else {
        return;
    };
    broker.close().await.unwrap();
    let mut wrong = url::Url::parse(&url_at(&address.to_string(), "")).unwrap();
    wrong.set_password(Some("wrong-secret")).unwrap();
    let error = switchboard_amqp::connect(wrong.as_str()).await.unwrap_err();
    eprintln!("{error}");
    assert_eq!(error.connect_kind(), Some(ConnectKind::Auth), "{error:?}");
    assert!(!error.is_temporary(), "a wrong password stays wrong");
    assert_chain_does_not_repeat(&error);

    let refused = url_at(&format!("127.0.0.1:{}", free_port()), "");
    let error = switchboard_amqp::connect(&refused).await.unwrap_err();
    assert_eq!(
        error.connect_kind(),
        Some(ConnectKind::Refused),
        "{error:?}"
    );
    assert!(error.is_temporary());
    assert_chain_does_not_repeat(&error);
}
