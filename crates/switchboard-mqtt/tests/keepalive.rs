//! A link that stops passing bytes without closing (frozen by a proxy in
//! front of the shared mosquitto) is noticed within about `keepalive`: the
//! subscription yields `Disconnected`, `status()` says so, and once the link
//! passes bytes again the adapter reconnects and the subscription resumes.
// Test helpers: a failed expectation must panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchboard_conformance::{
    broker_url, expect_disconnected, publish_until_received, skip_or_fail,
};
use switchboard_core::{Broker, Subscriber};
use switchboard_testkit::TcpProxy;

#[tokio::test]
async fn a_frozen_link_is_noticed_within_keepalive() {
    let url = broker_url("SWITCHBOARD_MQTT_URL", "mqtt://127.0.0.1:1883");
    let port = url::Url::parse(&url).unwrap().port().unwrap_or(1883);
    let direct = match switchboard_mqtt::connect(&url).await {
        Ok(broker) => broker,
        Err(e) => {
            skip_or_fail(format_args!("mqtt at {url} does not answer: {e}"));
            return;
        }
    };
    let proxy = TcpProxy::to_port(port);
    let keepalive = Duration::from_secs(10);
    let broker = switchboard_mqtt::connect(&format!("mqtt://{}?keepalive=10s", proxy.address()))
        .await
        .unwrap();
    let subject = switchboard_testkit::unique("mqttka");
    let mut subscription = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    publish_until_received(&direct, &mut subscription, &subject, Duration::from_secs(5)).await;

    proxy.freeze();
    let frozen = Instant::now();
    let (_, reason) = expect_disconnected(
        &mut subscription,
        "mqtt",
        keepalive * 2 + Duration::from_secs(5),
    )
    .await;
    assert!(
        frozen.elapsed() >= keepalive / 2,
        "noticed after {:?}, before any ping could go unanswered: {reason}",
        frozen.elapsed()
    );
    assert!(!broker.status().connected);

    proxy.thaw();
    publish_until_received(
        &direct,
        &mut subscription,
        &subject,
        Duration::from_secs(30),
    )
    .await;
    assert!(broker.status().connected);
    assert_eq!(broker.status().disconnects, 1);
    broker.close().await.unwrap();
    direct.close().await.unwrap();
}
