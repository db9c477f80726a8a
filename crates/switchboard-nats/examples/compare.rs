//! Throughput of the adapter against plain async-nats on the same server:
//! publish-only and 1→1 end-to-end, 16-byte messages, alternating runs.
//!
//! `cargo run -p switchboard-nats --example compare [-- URL [MESSAGES]]`
//! (build with optimisations for meaningful absolute numbers).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use switchboard_core::{Broker, Message, Publisher, Subject, Subscriber};

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn raw_publish(url: &str, n: usize, subject: &str, receive: bool) -> Fallible<Duration> {
    let publisher = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let mut sub = subscriber.subscribe(subject.to_string()).await?;
    subscriber.flush().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let payload = Bytes::from_static(b"0123456789abcdef");
    let nats_subject = async_nats::Subject::from(subject);
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        if receive {
            for _ in 0..n {
                if sub.next().await.is_none() {
                    break;
                }
            }
        }
    });
    for _ in 0..n {
        publisher
            .publish(nats_subject.clone(), payload.clone())
            .await?;
    }
    publisher.flush().await?;
    if receive {
        reader.await?;
    }
    Ok(started.elapsed())
}

async fn switchboard_publish(
    url: &str,
    n: usize,
    subject: &str,
    receive: bool,
) -> Fallible<Duration> {
    let publisher = switchboard_nats::connect(url).await?;
    let subscriber = switchboard_nats::connect(url).await?;
    let mut sub = subscriber.subscribe(&subject.parse()?).await?;
    let payload = Bytes::from_static(b"0123456789abcdef");
    let subject = Subject::new(subject)?;
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut errors = 0;
        if receive {
            let mut got = 0;
            while got < n {
                match sub.next().await {
                    Some(Ok(_)) => got += 1,
                    Some(Err(e)) => {
                        eprintln!("error item: {e}");
                        errors += 1;
                        if errors > 3 {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
    });
    for _ in 0..n {
        publisher
            .publish(Message::from_parts(
                subject.clone(),
                payload.clone(),
                Default::default(),
            ))
            .await?;
    }
    publisher.flush().await?;
    if receive {
        reader.await?;
    }
    let elapsed = started.elapsed();
    publisher.close().await?;
    subscriber.close().await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Fallible<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    for receive in [false, true] {
        let label = if receive {
            "1→1 end-to-end"
        } else {
            "publish only"
        };
        let (mut raw, mut sb) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let subject = format!("sbcompare.{}.{round}.{receive}", std::process::id());
            raw.push(raw_publish(&url, n, &subject, receive).await?);
            sb.push(switchboard_publish(&url, n, &format!("{subject}.sb"), receive).await?);
        }
        let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let (r, s) = (rate(best(&raw)), rate(best(&sb)));
        println!(
            "{label}: raw async-nats {r:.0} msg/s, switchboard {s:.0} msg/s, ratio {:.3} (best of 3, {n} x 16 B)",
            s / r
        );
    }
    Ok(())
}
