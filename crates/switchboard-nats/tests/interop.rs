//! Interoperability with a plain async-nats client, and the adapter's
//! publish/subscribe/close behaviour against the shared server.

mod server;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use switchboard_core::{Broker, Error, Message, Pattern, Publisher, QueueGroup, Subscriber};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// A plain async-nats client (test setup: panics if it cannot connect).
#[allow(clippy::unwrap_used)]
async fn raw(url: &str) -> async_nats::Client {
    let first = url.split('?').next().unwrap_or(url);
    async_nats::connect(first).await.unwrap()
}

#[tokio::test]
async fn raw_publish_with_headers_reaches_switchboard() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let prefix = switchboard_testkit::unique("rawin");
    let mut sub = broker
        .subscribe(&format!("{prefix}.>").parse().unwrap())
        .await
        .unwrap();

    let client = raw(&url).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Trace-Id", "abc-123");
    headers.insert("severity", "high: really");
    let payload = Bytes::from_static(b"\x00\x01binary\xff\r\n");
    client
        .publish_with_headers(format!("{prefix}.cpu"), headers, payload.clone())
        .await
        .unwrap();
    client
        .publish(format!("{prefix}.plain"), Bytes::from_static(b"plain"))
        .await
        .unwrap();
    client.flush().await.unwrap();

    let first = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.subject().as_str(), format!("{prefix}.cpu"));
    assert_eq!(first.payload(), &payload);
    assert_eq!(first.headers().get("Trace-Id"), Some("abc-123"));
    assert_eq!(first.headers().get("trace-id"), None);
    assert_eq!(first.headers().get("severity"), Some("high: really"));
    assert_eq!(first.headers().len(), 2);
    assert!(!first.is_acknowledgeable());

    let second = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(&second.payload()[..], b"plain");
    assert!(second.headers().is_empty());
    broker.close().await.unwrap();
}

#[tokio::test]
async fn switchboard_publish_reaches_raw_client() {
    let Some(url) = server::url() else { return };
    let client = raw(&url).await;
    let prefix = switchboard_testkit::unique("rawout");
    let mut raw_sub = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    // Let the raw SUB reach the server (raw flush is socket-level only).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let broker = switchboard_nats::connect(&url).await.unwrap();
    let payload = Bytes::from_static(b"\x00exact\xffbytes");
    let with = Message::new(format!("{prefix}.with"), payload.clone())
        .unwrap()
        .with_header("Trace-Id", "t-1")
        .unwrap()
        .with_header("a", "")
        .unwrap();
    broker.publish(with).await.unwrap();
    broker
        .publish(Message::new(format!("{prefix}.without"), payload.clone()).unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();

    let with = timeout(WAIT, raw_sub.next()).await.unwrap().unwrap();
    assert_eq!(with.subject.as_str(), format!("{prefix}.with"));
    assert_eq!(with.payload, payload);
    let headers = with.headers.expect("native headers");
    assert_eq!(headers.get("Trace-Id").map(|v| v.as_str()), Some("t-1"));
    assert_eq!(headers.get("a").map(|v| v.as_str()), Some(""));
    assert_eq!(headers.len(), 2);

    let without = timeout(WAIT, raw_sub.next()).await.unwrap().unwrap();
    assert_eq!(without.subject.as_str(), format!("{prefix}.without"));
    assert_eq!(without.payload, payload);
    assert!(
        without.headers.is_none(),
        "a plain PUB: {:?}",
        without.headers
    );
    broker.close().await.unwrap();
}

#[tokio::test]
async fn subscribe_resolves_when_the_server_delivers() {
    // Publish from a separate connection right after subscribe resolves, many
    // times: every first message must arrive.
    let Some(url) = server::url() else { return };
    let subscriber = switchboard_nats::connect(&url).await.unwrap();
    let publisher = raw(&url).await;
    for round in 0..50 {
        let subject = format!("{}.r{round}", switchboard_testkit::unique("ready"));
        let mut sub = subscriber
            .subscribe(&subject.parse().unwrap())
            .await
            .unwrap();
        publisher
            .publish(subject.clone(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let got = timeout(WAIT, sub.next()).await;
        assert!(matches!(got, Ok(Some(Ok(_)))), "round {round}: {got:?}");
    }
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn queue_group_shares_and_fan_out_copies() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let prefix = switchboard_testkit::unique("group");
    let pattern: Pattern = format!("{prefix}.*").parse().unwrap();
    let group = QueueGroup::new("workers").unwrap();
    let mut a = broker.subscribe_group(&pattern, &group).await.unwrap();
    let mut b = broker.subscribe_group(&pattern, &group).await.unwrap();
    let mut all = broker.subscribe(&pattern).await.unwrap();
    assert_eq!(a.group(), Some(&group));
    for i in 0..20 {
        broker
            .publish(Message::new(format!("{prefix}.m"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    let mut fan = 0;
    while fan < 20 {
        timeout(WAIT, all.next()).await.unwrap().unwrap().unwrap();
        fan += 1;
    }
    let mut shared = 0;
    for sub in [&mut a, &mut b] {
        while let Ok(Some(item)) = timeout(Duration::from_millis(300), sub.next()).await {
            item.unwrap();
            shared += 1;
        }
    }
    assert_eq!(shared, 20);
    broker.close().await.unwrap();
}

#[tokio::test]
async fn payload_too_large_fails_before_sending() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let max = broker.capabilities().max_payload.expect("from INFO");
    assert!(max > 0);
    let big = Message::new("sbtest.big", vec![0u8; max + 1]).unwrap();
    match broker.publish(big).await {
        Err(Error::PayloadTooLarge {
            size,
            max: limit,
            broker: "nats",
            subject,
        }) => {
            assert_eq!(
                (size, limit, subject.as_str()),
                (max + 1, max, "sbtest.big")
            );
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // Headers count too.
    let edge = Message::new("sbtest.big", vec![0u8; max])
        .unwrap()
        .with_header("k", "v")
        .unwrap();
    assert!(matches!(
        broker.publish(edge).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    // Exactly max without headers is fine.
    broker
        .publish(Message::new("sbtest.big", vec![0u8; max]).unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn capabilities_are_core_nats() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let caps = broker.capabilities();
    assert!(caps.queue_groups && caps.native_headers && caps.headers);
    assert!(caps.native_wildcards && caps.ordered_per_publisher);
    assert!(!caps.ack && !caps.redelivery && !caps.persistence);
    assert_eq!(broker.kind(), "nats");
    let debug = format!("{broker:?}");
    assert!(debug.contains("NatsBroker"), "{debug}");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn dropping_or_closing_a_subscription_unsubscribes() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let subject = switchboard_testkit::unique("unsub");
    let pattern: Pattern = subject.parse().unwrap();
    let sub = broker.subscribe(&pattern).await.unwrap();
    sub.close().await.unwrap();
    let dropped = broker.subscribe(&pattern).await.unwrap();
    drop(dropped);
    broker.flush().await.unwrap();
    // The server no longer has an interest: a raw request gets "no responders".
    let client = raw(&url).await;
    let reply = client.request(subject, Bytes::new()).await;
    assert!(reply.is_err(), "someone still subscribed: {reply:?}");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_publishing() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let clone = broker.clone();
    let subject = switchboard_testkit::unique("close");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "last").unwrap())
        .await
        .unwrap();
    broker.close().await.unwrap();
    // What was in flight is delivered, then the stream ends.
    let last = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(last.payload_str(), Some("last"));
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    let err = clone
        .publish(Message::new("a.b", "x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { broker: "nats" }), "{err:?}");
    assert!(matches!(clone.flush().await, Err(Error::Closed { .. })));
    assert!(matches!(
        clone.subscribe(&"a".parse().unwrap()).await,
        Err(Error::Closed { .. })
    ));
    clone.close().await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn nats_receivers_trim_header_values_so_padded_values_are_rejected() {
    let Some(url) = server::url() else { return };
    let client = raw(&url).await;
    let subject = switchboard_testkit::unique("trim");
    let mut raw_sub = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("padded", "  x  ");
    client
        .publish_with_headers(subject.clone(), headers, Bytes::new())
        .await
        .unwrap();
    let got = timeout(WAIT, raw_sub.next()).await.unwrap().unwrap();
    let value = got
        .headers
        .unwrap()
        .get("padded")
        .map(|v| v.as_str().to_string());
    assert_eq!(value.as_deref(), Some("x"), "async-nats trims on receive");

    // So switchboard refuses such a value before anything is sent, on every broker.
    match Message::new(subject.as_str(), "")
        .unwrap()
        .with_header("padded", "  x  ")
    {
        Err(Error::InvalidHeader { name, reason }) => {
            assert_eq!(name, "padded");
            assert!(reason.contains("whitespace"), "{reason}");
        }
        other => panic!("expected InvalidHeader, got {other:?}"),
    }
    let broker = switchboard_nats::connect(&url).await.unwrap();
    broker.close().await.unwrap();
}
