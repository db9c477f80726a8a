//! A private mosquitto is killed and started again on the same port: every
//! subscription yields `Error::Disconnected`, `status()` says so, and once
//! the adapter has reconnected and resubscribed messages flow again.
// Test helpers: a failed expectation must panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_conformance::{expect_disconnected, publish_until_received};
use switchboard_core::{Broker, Error, Publisher, Subscriber};
use switchboard_testkit::MosquittoServer;

/// Takes the deliveries already received (all `restart.before`).
async fn drain(subscription: &mut switchboard_core::Subscription) {
    use futures::StreamExt;
    while let Ok(Some(item)) =
        tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
    {
        let delivery = item.unwrap();
        assert_eq!(delivery.subject().as_str(), "restart.before");
    }
}

#[tokio::test]
async fn subscriptions_survive_a_server_restart() {
    let Some(mut server) = MosquittoServer::start() else {
        return;
    };
    let broker = switchboard_mqtt::connect(&server.url()).await.unwrap();
    let publisher = switchboard_mqtt::connect(&server.url()).await.unwrap();
    let mut plain = broker
        .subscribe(&"restart.>".parse().unwrap())
        .await
        .unwrap();
    let mut grouped = broker
        .subscribe_group(&"restart.>".parse().unwrap(), &"g".parse().unwrap())
        .await
        .unwrap();
    for sub in [&mut plain, &mut grouped] {
        publish_until_received(&publisher, sub, "restart.before", Duration::from_secs(5)).await;
    }
    assert_eq!(broker.status().disconnects, 0);

    // Copies of the repeated "before" message may still be on their way.
    broker.flush().await.unwrap();
    publisher.flush().await.unwrap();
    drain(&mut plain).await;
    drain(&mut grouped).await;

    server.process.kill();
    for sub in [&mut plain, &mut grouped] {
        let (_, reason) = expect_disconnected(sub, "mqtt", Duration::from_secs(10)).await;
        assert!(reason.contains("restart.>"), "{reason}");
    }
    let status = broker.status();
    assert!(!status.connected);
    assert_eq!(status.disconnects, 1);
    // Flushing while down fails within the flush timeout, saying why.
    let down = switchboard_mqtt::MqttBroker::connect_with(
        &server.url(),
        switchboard_mqtt::MqttOptions::new(),
    )
    .await;
    assert!(down.is_err(), "nothing listens while killed");

    server.process.start_again();
    for sub in [&mut plain, &mut grouped] {
        let delivery =
            publish_until_received(&publisher, sub, "restart.after", Duration::from_secs(20)).await;
        assert_eq!(delivery.subject().as_str(), "restart.after");
    }
    let status = broker.status();
    assert!(status.connected);
    assert_eq!(status.disconnects, 1);
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
    publisher.close().await.unwrap();
    assert!(matches!(
        broker
            .publish(switchboard_core::Message::new("x", "y").unwrap())
            .await,
        Err(Error::Closed { .. })
    ));
}
