//! Subscription scale (issue 13), the measurement every adapter's ignored
//! `tests/scale.rs` runs: N subscriptions on N distinct subjects on one
//! broker handle, the time to subscribe them all, RSS per idle subscription
//! (from `/proc/self/statm`), and one message to each, which must reach
//! exactly its subscriber.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_core::{Broker, Message, Pattern};

/// How many subscriptions a scale test makes: `SCALE_N`, 10,000 by default.
pub fn scale_count() -> usize {
    std::env::var("SCALE_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

/// Subscribes `count` distinct subjects on `broker`, publishes one message
/// to each through `publisher`, prints the measurement and panics unless
/// each subscription received exactly its own message.
pub async fn subscription_scale(broker: &dyn Broker, publisher: &dyn Broker, count: usize) {
    let run = crate::unique("scale");
    let mut first = broker
        .subscribe(&Pattern::new(&format!("{run}.warm")).unwrap())
        .await
        .unwrap();
    publisher
        .publish(Message::new(format!("{run}.warm"), "warm").unwrap())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let mut warm = tokio::time::timeout(Duration::from_secs(10), first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    if warm.is_acknowledgeable() {
        warm.ack().await.unwrap();
    }
    let rss_before = rss();
    let started = Instant::now();
    let mut subscriptions = Vec::with_capacity(count);
    for i in 0..count {
        subscriptions.push(
            broker
                .subscribe(&Pattern::new(&format!("{run}.{i}")).unwrap())
                .await
                .unwrap(),
        );
    }
    let subscribe = started.elapsed();
    let rss_after = rss();
    for i in 0..count {
        publisher
            .publish(Message::new(format!("{run}.{i}"), i.to_string()).unwrap())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut delivered, mut wrong, mut extra) = (0, 0, 0);
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                if delivery.subject().as_str() == format!("{run}.{i}")
                    && delivery.payload_str() == Some(i.to_string().as_str())
                {
                    delivered += 1;
                } else {
                    wrong += 1;
                }
                if delivery.is_acknowledgeable() {
                    delivery.ack().await.unwrap();
                }
            }
            other => panic!("subscription {i}: {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for subscription in &mut subscriptions {
        while let Some(Some(_)) = futures::FutureExt::now_or_never(subscription.next()) {
            extra += 1;
        }
    }
    println!(
        "{count} subscriptions: subscribe {:.2} s ({:.1} µs each), RSS {} -> {} KiB, {:.2} KiB per subscription; delivered {delivered}, wrong {wrong}, extra {extra}",
        subscribe.as_secs_f64(),
        subscribe.as_secs_f64() * 1e6 / count as f64,
        rss_before / 1024,
        rss_after / 1024,
        (rss_after as f64 - rss_before as f64) / 1024.0 / count as f64,
    );
    assert_eq!((delivered, wrong, extra), (count, 0, 0));
    drop(subscriptions);
}

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}
