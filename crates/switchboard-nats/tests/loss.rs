//! No silent loss: a subscriber that overflows its client buffer gets an
//! `Error::Lost` item, on that subscription only.

mod server;

use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{Broker, Error, Message, Publisher, Subscriber};
use switchboard_nats::NatsOptions;
use tokio::time::timeout;

/// The loss a slow reader is told of is either the exact number (checked
/// against the sequence numbers that did arrive) or said to be unknown (count
/// 0, "an unknown number"): never a lower bound shown as a count.
#[tokio::test]
async fn overflow_yields_lost_on_the_overflowing_subscription() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::NatsBroker::connect_with(&url, NatsOptions::new().capacity(16))
        .await
        .unwrap();
    let prefix = switchboard_testkit::unique("loss");
    let mut slow = broker
        .subscribe(&format!("{prefix}.flood").parse().unwrap())
        .await
        .unwrap();
    let mut other = broker
        .subscribe(&format!("{prefix}.quiet").parse().unwrap())
        .await
        .unwrap();

    // Enough that async-nats' bounded queue of drop reports overflows too.
    const SENT: u64 = 50_000;
    for i in 0..SENT {
        broker
            .publish(Message::new(format!("{prefix}.flood"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    broker
        .publish(Message::new(format!("{prefix}.quiet"), "hello").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    // Give the event callback a moment (events travel on their own task).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut received = 0u64;
    let mut last: Option<u64> = None;
    let mut reports = Vec::new();
    while let Ok(Some(item)) = timeout(Duration::from_millis(500), slow.next()).await {
        match item {
            Ok(delivery) => {
                let n: u64 = delivery.payload_str().unwrap().parse().unwrap();
                assert!(last.is_none_or(|last| n > last), "in order, no duplicates");
                last = Some(n);
                received += 1;
            }
            Err(error @ Error::Lost { .. }) => {
                let text = error.to_string();
                let Error::Lost {
                    broker,
                    pattern,
                    count,
                    reason,
                } = error
                else {
                    unreachable!()
                };
                assert_eq!(broker, "nats");
                assert_eq!(pattern, format!("{prefix}.flood"));
                assert!(reason.contains("capacity"), "{reason}");
                reports.push((count, text));
            }
            Err(other) => panic!("unexpected error item {other}"),
        }
    }
    let lost = SENT - received;
    eprintln!("received {received} of {SENT}, lost {lost}; reports: {reports:?}");
    assert!(received < SENT, "the buffer of 16 should have overflowed");
    assert!(!reports.is_empty(), "the loss must be reported");
    let reported: u64 = reports.iter().map(|(count, _)| count).sum();
    if reports.iter().all(|(count, _)| *count == 0) {
        for (_, text) in &reports {
            assert!(
                text.contains("an unknown number of messages lost"),
                "{text}"
            );
        }
    } else {
        assert_eq!(reported, lost, "a count must be exact: {reports:?}");
    }

    // The other subscription lost nothing and is told nothing.
    let quiet = timeout(Duration::from_secs(5), other.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(quiet.payload_str(), Some("hello"));
    assert!(timeout(Duration::from_millis(200), other.next())
        .await
        .is_err());
    broker.close().await.unwrap();
}

#[tokio::test]
async fn default_capacity_keeps_a_burst() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    assert_eq!(
        broker.options().capacity,
        switchboard_nats::DEFAULT_CAPACITY
    );
    let subject = switchboard_testkit::unique("burst");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    const SENT: usize = 100_000;
    for i in 0..SENT {
        broker
            .publish(Message::new(subject.as_str(), format!("{i:08}")).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    for i in 0..SENT {
        let d = timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            d.payload_str(),
            Some(format!("{i:08}").as_str()),
            "in order, none lost"
        );
    }
    broker.close().await.unwrap();
}
