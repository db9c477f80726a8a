//! The extension traits on the in-memory broker, used as a concrete type and
//! through `Arc<dyn Broker>`, `Box<dyn Subscriber>` and `&dyn Publisher`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;

use switchboard_core::{
    Broker, Durable, Error, MemoryBroker, Publisher, PublisherExt, Subscriber, SubscriberExt,
    Subscription,
};

/// The payload of the next delivery (acknowledged), as text.
async fn next_payload(subscription: &mut Subscription) -> String {
    let delivery = switchboard_conformance::recv(subscription).await;
    delivery.payload_str().unwrap().to_string()
}

#[tokio::test]
async fn text_patterns_and_subjects_work_on_a_concrete_broker() {
    let broker = MemoryBroker::new();
    let mut alerts = broker.subscribe_to("alerts.>").await.unwrap();
    let mut group = broker
        .subscribe_group_to("alerts.*", "pagers")
        .await
        .unwrap();
    assert_eq!(alerts.pattern().as_str(), "alerts.>");
    assert_eq!(group.group().map(|g| g.as_str()), Some("pagers"));
    broker.publish_to("alerts.cpu", "CPU at 98%").await.unwrap();
    assert_eq!(next_payload(&mut alerts).await, "CPU at 98%");
    assert_eq!(next_payload(&mut group).await, "CPU at 98%");
}

#[tokio::test]
async fn text_patterns_and_subjects_work_through_trait_objects() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut alerts = broker.subscribe_to("alerts.>").await.unwrap();
    broker.publish_to("alerts.disk", "disk full").await.unwrap();
    assert_eq!(next_payload(&mut alerts).await, "disk full");

    let subscriber: Box<dyn Subscriber> = Box::new(MemoryBroker::named("ext-box"));
    let publisher = MemoryBroker::named("ext-box");
    let publisher: &dyn Publisher = &publisher;
    let mut jobs = subscriber.subscribe_to("jobs.*").await.unwrap();
    publisher.publish_to("jobs.a", "job a").await.unwrap();
    assert_eq!(next_payload(&mut jobs).await, "job a");
}

#[tokio::test]
async fn bad_text_is_refused_before_the_broker_sees_it() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut everything = broker.subscribe_to(">").await.unwrap();
    assert!(matches!(
        broker.subscribe_to("alerts.>.cpu").await,
        Err(Error::InvalidPattern { .. })
    ));
    assert!(matches!(
        broker.subscribe_group_to("alerts.>", "two words").await,
        Err(Error::InvalidGroup { .. })
    ));
    assert!(matches!(
        broker.subscribe_group_to("alerts..x", "pagers").await,
        Err(Error::InvalidPattern { .. })
    ));
    let durable = Durable::new("billing").unwrap();
    assert!(matches!(
        broker.subscribe_durable_to("orders.>.x", &durable).await,
        Err(Error::InvalidPattern { .. })
    ));
    assert!(matches!(
        broker.publish_to("alerts..cpu", "x").await,
        Err(Error::InvalidSubject { .. })
    ));
    // Nothing was published by the refused call.
    broker
        .publish_to("after", "the only message")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut everything).await, "the only message");
}

#[tokio::test]
async fn subscribe_durable_to_reaches_the_broker() {
    // The memory broker keeps what is published for the durable consumer.
    let broker = MemoryBroker::new();
    let durable = Durable::new("billing").unwrap();
    let first = broker
        .subscribe_durable_to("orders.>", &durable)
        .await
        .unwrap();
    drop(first);
    broker.publish_to("orders.42", "kept").await.unwrap();
    let mut back = broker
        .subscribe_durable_to("orders.>", &durable)
        .await
        .unwrap();
    assert_eq!(next_payload(&mut back).await, "kept");
    // A malformed pattern is refused before the broker sees it.
    assert!(matches!(
        broker.subscribe_durable_to("orders..x", &durable).await,
        Err(Error::InvalidPattern { .. })
    ));
}
