//! A link that passes nothing (a frozen proxy between client and server) is
//! noticed within the `keepalive` time: every subscription yields
//! `Error::Disconnected`, and once the link moves again messages flow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_conformance::{expect_disconnected, publish_until_received};
use switchboard_core::{Broker, Subscriber};
use switchboard_testkit::{unique, NatsServer, TcpProxy};

async fn frozen_link_is_detected(query: &str, within: Duration) {
    let Some(server) = NatsServer::start(&[]) else {
        return;
    };
    let proxy = TcpProxy::to_port(server.port());
    let url = format!("nats://{}{query}", proxy.address());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let direct = switchboard_nats::connect(&server.url()).await.unwrap();
    let subject = unique("keepalive");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(10)).await;

    proxy.freeze();
    let (took, _) = expect_disconnected(&mut sub, "nats", within).await;
    eprintln!("a frozen link was detected after {took:?} ({query:?})");
    assert!(!broker.status().connected);

    proxy.thaw();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(30)).await;
    assert!(broker.status().connected);
    assert_eq!(broker.status().disconnects, 1);
    broker.close().await.unwrap();
    direct.close().await.unwrap();
}

#[tokio::test]
async fn a_short_keepalive_detects_a_frozen_link() {
    frozen_link_is_detected("?keepalive=2s", Duration::from_secs(15)).await;
}

/// Without a setting, a frozen link is detected after about 15 s (async-nats
/// alone takes 3 minutes).
#[tokio::test]
async fn the_default_keepalive_detects_a_frozen_link() {
    frozen_link_is_detected("", Duration::from_secs(40)).await;
}
