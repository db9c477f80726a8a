//! Subscription scale (issue 13): N subscriptions on N distinct subjects over
//! one connection, per broker — how long subscribing all of them takes, how
//! much resident memory each idle subscription costs this process, and
//! whether one message published to each subject reaches exactly its
//! subscriber.
//!
//! Not a criterion benchmark (a run is one measurement of a few seconds):
//!
//! ```text
//! cargo bench --bench subscriptions -- nats 10000
//! cargo bench --bench subscriptions -- redis,amqp,mqtt,memory 10000
//! ```
//!
//! Arguments: a comma-separated list of broker kinds or URLs, and N (default
//! 10 000). Run with no arguments (as a plain `cargo bench` does) it does
//! nothing. One line per broker on stdout; a broker that fails says why and
//! the others still run. Exits non-zero if any message went astray.
//!
//! RSS is read from `/proc/self/statm` after one subscription was made and
//! its message received (so the connection's own buffers and lazily started
//! tasks are already counted), then after the N subscriptions: the
//! difference ÷ N is the cost of one idle subscription in this process. The
//! broker's own memory is not counted. The messages come from a second
//! connection, after every subscription is confirmed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::{Message, Pattern};

/// How long the messages may take to arrive, all together.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let Some(brokers) = args.first() else {
        return;
    };
    let count: usize = args
        .get(1)
        .map(|n| n.parse().expect("N is a number of subscriptions"))
        .unwrap_or(10_000);
    let mut astray = false;
    println!("broker   subscriptions  subscribe s  per sub µs  RSS before KiB  RSS after KiB  KiB/sub  delivered  wrong  extra");
    for kind in brokers.split(',') {
        match measure(kind, count).await {
            Ok(line) => {
                astray |= line.wrong > 0 || line.extra > 0 || line.delivered != count;
                println!(
                    "{:<8} {:>13}  {:>11.2}  {:>10.1}  {:>14}  {:>13}  {:>7.2}  {:>9}  {:>5}  {:>5}",
                    kind,
                    count,
                    line.subscribe.as_secs_f64(),
                    line.subscribe.as_secs_f64() * 1e6 / count as f64,
                    line.rss_before / 1024,
                    line.rss_after / 1024,
                    (line.rss_after as f64 - line.rss_before as f64) / 1024.0 / count as f64,
                    line.delivered,
                    line.wrong,
                    line.extra,
                );
            }
            Err(error) => {
                astray = true;
                println!("{kind:<8} error: {error:#}");
            }
        }
    }
    if astray {
        std::process::exit(1);
    }
}

struct Line {
    subscribe: Duration,
    rss_before: u64,
    rss_after: u64,
    delivered: usize,
    wrong: usize,
    extra: usize,
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn measure(kind: &str, count: usize) -> anyhow::Result<Line> {
    let url = switchboard::resolve_url(kind).to_string();
    let broker = switchboard::connect(&url).await?;
    let publisher = switchboard::connect(&url).await?;
    let run = format!(
        "scale.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    );
    // One subscription and its message first: what the connection sets up
    // on first use is not charged to the N.
    let mut first = broker
        .subscribe(&Pattern::new(&format!("{run}.warm"))?)
        .await?;
    publisher
        .publish(Message::new(format!("{run}.warm").as_str(), "warm")?)
        .await?;
    publisher.flush().await?;
    tokio::time::timeout(DELIVERY_TIMEOUT, first.next())
        .await
        .map_err(|_| anyhow::anyhow!("the warm-up message did not arrive"))?;

    let rss_before = rss();
    let started = Instant::now();
    let mut subscriptions = Vec::with_capacity(count);
    for i in 0..count {
        subscriptions.push(
            broker
                .subscribe(&Pattern::new(&format!("{run}.{i}"))?)
                .await?,
        );
    }
    let subscribe = started.elapsed();
    let rss_after = rss();

    for i in 0..count {
        publisher
            .publish(Message::new(format!("{run}.{i}").as_str(), i.to_string())?)
            .await?;
    }
    publisher.flush().await?;

    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
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
                    delivery.ack().await?;
                }
            }
            Ok(Some(Err(error))) => anyhow::bail!("subscription {i}: {error}"),
            Ok(None) => anyhow::bail!("subscription {i} ended"),
            Err(_) => break,
        }
    }
    // Exactly its subscriber: nothing else is waiting anywhere, after a
    // moment for strays to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for subscription in &mut subscriptions {
        while let Some(Some(_)) = futures::FutureExt::now_or_never(subscription.next()) {
            extra += 1;
        }
    }
    drop(subscriptions);
    publisher.close().await?;
    broker.close().await?;
    Ok(Line {
        subscribe,
        rss_before,
        rss_after,
        delivered,
        wrong,
        extra,
    })
}
