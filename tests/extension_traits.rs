//! `SubscriberExt` and `PublisherExt` on every real broker: through the
//! `Arc<dyn Broker>` that `switchboard::connect` returns, and on a concrete
//! adapter type (NATS, whose broker has a private method of the same name as
//! `subscribe_to`: the extension method must still be the one users reach).
//!
//! URLs come from `SWITCHBOARD_NATS_URL`, `SWITCHBOARD_REDIS_URL` and
//! `SWITCHBOARD_AMQP_URL` (local defaults otherwise); a broker that does not
//! answer is skipped unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::time::Duration;

use switchboard::{Broker, Error, Publisher, PublisherExt, SubscriberExt, Subscription};

/// The payload of the next delivery (acknowledged), as text.
async fn next_payload(subscription: &mut Subscription) -> String {
    let delivery = switchboard_conformance::recv(subscription).await;
    delivery.payload_str().unwrap().to_string()
}

/// Subscribes and publishes by text on `broker`, checks a group subscription
/// is made or refused as the broker's capabilities say, and a bad pattern is
/// refused.
async fn by_text<B: Broker + ?Sized>(broker: &B, prefix: &str) {
    let mut alerts = broker.subscribe_to(&format!("{prefix}.>")).await.unwrap();
    let group = broker
        .subscribe_group_to(&format!("{prefix}.*"), "pagers")
        .await;
    let mut group = match group {
        Ok(group) => {
            assert!(broker.capabilities().queue_groups, "{}", broker.kind());
            Some(group)
        }
        Err(Error::Unsupported { .. }) => {
            assert!(!broker.capabilities().queue_groups, "{}", broker.kind());
            None
        }
        Err(error) => panic!("{}: {error}", broker.kind()),
    };
    broker
        .publish_to(&format!("{prefix}.cpu"), "CPU at 98%")
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next_payload(&mut alerts).await, "CPU at 98%");
    if let Some(group) = &mut group {
        assert_eq!(next_payload(group).await, "CPU at 98%");
    }
    assert!(matches!(
        broker.subscribe_to(&format!("{prefix}.>.x")).await,
        Err(Error::InvalidPattern { .. })
    ));
}

macro_rules! on_broker {
    ($module:ident, $env:literal, $default:literal) => {
        #[tokio::test]
        async fn $module() {
            let url = switchboard_conformance::broker_url($env, $default);
            let connected =
                tokio::time::timeout(Duration::from_secs(10), switchboard::connect(&url)).await;
            let broker = match connected {
                Ok(Ok(broker)) => broker,
                Ok(Err(error)) => {
                    return switchboard_conformance::skip_or_fail(format_args!(
                        "{} ({}): {error}",
                        stringify!($module),
                        $env
                    ))
                }
                Err(_) => {
                    return switchboard_conformance::skip_or_fail(format_args!(
                        "{} ({}): connecting timed out",
                        stringify!($module),
                        $env
                    ))
                }
            };
            by_text(&broker, &switchboard_testkit::unique(stringify!($module))).await;
            broker.close().await.unwrap();
        }
    };
}

on_broker!(memory, "SWITCHBOARD_MEMORY_URL", "memory://");
on_broker!(nats, "SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222");
on_broker!(redis, "SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379");
on_broker!(
    amqp,
    "SWITCHBOARD_AMQP_URL",
    "amqp://guest:guest@127.0.0.1:5672/%2f"
);

#[tokio::test]
async fn on_a_concrete_adapter_type() {
    let url = switchboard_conformance::broker_url("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222");
    let broker: switchboard::nats::NatsBroker = match switchboard::nats::connect(&url).await {
        Ok(broker) => broker,
        Err(error) => {
            return switchboard_conformance::skip_or_fail(format_args!(
                "on_a_concrete_adapter_type (SWITCHBOARD_NATS_URL): {error}"
            ))
        }
    };
    let prefix = switchboard_testkit::unique("concrete");
    let mut alerts = broker.subscribe_to(&format!("{prefix}.>")).await.unwrap();
    broker
        .publish_to(&format!("{prefix}.disk"), "disk full")
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next_payload(&mut alerts).await, "disk full");
    broker.close().await.unwrap();
}
