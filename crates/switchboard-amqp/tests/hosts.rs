//! A list of hosts (`amqp://u:p@h1:5672,h2:5673/vhost`) against the shared
//! RabbitMQ: a dead port first and the broker second connects (and names
//! nothing secret); every host dead is one line listing them; a reconnect
//! goes through the list again when the host in use dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_conformance::publish_until_received;
use switchboard_core::{Broker, ConnectKind, Message, Publisher, SubscriberExt};
use switchboard_testkit::{assert_chain_does_not_repeat, free_port, unique, TcpProxy};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The shared broker's URL, and its `host:port`, if it answers (else a skip,
/// or a failure in CI).
async fn broker() -> Option<(String, String)> {
    let url = std::env::var("SWITCHBOARD_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    match switchboard_amqp::connect(&url).await {
        Ok(broker) => {
            broker.close().await.unwrap();
            let parsed = url::Url::parse(&url).unwrap();
            let address = format!(
                "{}:{}",
                parsed.host_str().unwrap(),
                parsed.port().unwrap_or(5672)
            );
            Some((url, address))
        }
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!("RabbitMQ not available ({error})"));
            None
        }
    }
}

/// `url` with its `host:port` replaced by the list `hosts`.
fn with_hosts(url: &str, address: &str, hosts: &[String]) -> String {
    url.replacen(address, &hosts.join(","), 1)
}

#[tokio::test]
async fn a_dead_host_first_is_passed_over() {
    let Some((url, address)) = broker().await else {
        return;
    };
    let dead = format!("127.0.0.1:{}", free_port());
    let listed = with_hosts(&url, &address, &[dead, address.clone()]);
    let broker = switchboard_amqp::connect(&listed).await.unwrap();
    let shown = format!("{broker:?}");
    assert!(!shown.contains(":guest@"), "{shown}");
    let subject = unique("hosts");
    let mut subscription = broker.subscribe_to(&subject).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "through the second").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let delivery = switchboard_conformance::recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("through the second"));
    broker.close().await.unwrap();
}

#[tokio::test]
async fn every_host_dead_is_one_line_naming_each() {
    let dead: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let url = format!("amqp://guest:hunter2@{}/%2f", dead.join(","));
    let err = switchboard_amqp::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Refused), "{text}");
    assert!(err.is_temporary(), "{text}");
    assert!(
        text.contains("no host of the list could be reached"),
        "{text}"
    );
    for host in &dead {
        assert!(
            text.contains(&format!("{host} (connection refused)")),
            "{text}"
        );
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("guest:***@"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_chain_does_not_repeat(&err);
}

#[tokio::test]
async fn a_reconnect_goes_through_the_list_again() {
    let Some((url, address)) = broker().await else {
        return;
    };
    let target: std::net::SocketAddr = address.parse().unwrap();
    // The first host is a proxy in front of the broker, the second the broker itself.
    let proxy = TcpProxy::start(target);
    let listed = with_hosts(&url, &address, &[proxy.address(), address.clone()]);
    let broker = switchboard_amqp::connect(&format!("{listed}?keepalive=2s"))
        .await
        .unwrap();
    assert!(
        proxy.accepted() > 0,
        "the first host of the list is tried first"
    );
    let subject = unique("hosts");
    let mut subscription = broker.subscribe_to(&subject).await.unwrap();
    publish_until_received(
        &broker,
        &mut subscription,
        &subject,
        Duration::from_secs(10),
    )
    .await;
    // The first host dies: its connections reset, its port closed.
    let first = proxy.address();
    proxy.cut();
    drop(proxy);
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(first.as_str()),
    )
    .await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the first host's port is closed now"
    );
    publish_until_received(
        &broker,
        &mut subscription,
        &subject,
        Duration::from_secs(30),
    )
    .await;
    broker.close().await.unwrap();
}
