//! The restart drill of a durable mode, the same on every broker: numbered
//! messages are published at a steady rate while the test's own broker is
//! killed and started again twice; a durable consumer reading throughout and
//! one that was away until the end must each receive every message at least
//! once. Duplicates are counted and reported, never hidden.
//!
//! The publisher flushes after every batch; a batch whose publish or flush
//! failed (the broker was down) is published again, so "flushed" is what
//! counts as sent, and a message may be stored twice.
//!
//! The away consumer comes back right after the second restart; a temporary
//! error then (a cluster still electing a leader) is tried again, as a
//! supervised consumer would, and printed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchboard_conformance::Connector;
use switchboard_core::{Broker, Durable, Message, Pattern, Subscription};
use tokio::time::{timeout, Instant};

use crate::unique;

/// The drill's settings; [`RestartDrill::default`] is 10,000 messages in
/// batches of 100, about 2,000 a second, with a 500 ms outage per restart.
#[derive(Debug, Clone)]
pub struct RestartDrill {
    /// Messages published.
    pub messages: u32,
    /// Messages between two flushes.
    pub batch: u32,
    /// Pause after each flushed batch (sets the rate).
    pub pause: Duration,
    /// How long the broker stays down at each restart.
    pub outage: Duration,
    /// How long the drill may go without a delivery before it reports a loss.
    pub patience: Duration,
}

impl Default for RestartDrill {
    fn default() -> Self {
        RestartDrill {
            messages: 10_000,
            batch: 100,
            pause: Duration::from_millis(50),
            outage: Duration::from_millis(500),
            patience: Duration::from_secs(120),
        }
    }
}

/// What one durable consumer of the drill received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Deliveries of a message beyond its first.
    pub duplicates: u32,
    /// Error items (lost connections) the subscription yielded.
    pub errors: u32,
}

/// The outcome of a drill that lost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrillReport {
    /// The consumer reading throughout.
    pub reading: Received,
    /// The consumer away until every message was published.
    pub away: Received,
    /// Distinct messages published again after a failed publish or flush
    /// (each counted once, however many attempts it took).
    pub republished: u32,
    /// Publishes repeated in all: a message in two failed batches counts
    /// twice. Never less than `republished`.
    pub republish_attempts: u32,
}

/// What the publisher had to publish again.
#[derive(Debug, Clone, Copy, Default)]
struct Republished {
    distinct: u32,
    attempts: u32,
}

impl RestartDrill {
    /// Runs the drill against the broker at `url`, calling `restart` (which
    /// kills the broker, waits, and starts it again with the same data)
    /// after a third and after two thirds of the messages were flushed.
    /// Panics naming the missing messages if any never arrives.
    ///
    /// Needs a multi-thread tokio runtime: `restart` blocks.
    pub async fn run(
        &self,
        connector: &Connector,
        url: &str,
        mut restart: impl FnMut(Duration) + Send,
    ) -> DrillReport {
        let prefix = unique("drill");
        let pattern: Pattern = format!("{prefix}.>").parse().expect("a valid pattern");
        let subject = format!("{prefix}.jobs");
        let name = prefix.replace('.', "-");
        let reading_durable = durable(&format!("{name}-reading"));
        let away_durable = durable(&format!("{name}-away"));

        let subscriber = connector
            .connect(url)
            .await
            .expect("connecting the subscriber");
        let reading = subscriber
            .subscribe_durable(&pattern, &reading_durable)
            .await
            .expect("creating the reading consumer");
        subscriber
            .subscribe_durable(&pattern, &away_durable)
            .await
            .expect("creating the away consumer")
            .close()
            .await
            .expect("closing the away consumer's subscription");

        let publisher = connector
            .connect(url)
            .await
            .expect("connecting the publisher");
        let started = Instant::now();
        let flushed = Arc::new(AtomicU32::new(0));
        let publishing = tokio::spawn(publish_all(
            self.clone(),
            publisher.clone(),
            subject,
            flushed.clone(),
        ));
        let receiving = tokio::spawn(receive_all(reading, self.messages, self.patience));
        for third in [self.messages / 3, 2 * self.messages / 3] {
            let deadline = Instant::now() + self.patience;
            while flushed.load(Ordering::Acquire) < third {
                assert!(
                    Instant::now() < deadline,
                    "publishing stalled at {} of {} before a restart",
                    flushed.load(Ordering::Acquire),
                    self.messages
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let outage = self.outage;
            tokio::task::block_in_place(|| restart(outage));
        }
        let republished = timeout(self.patience * 2, publishing)
            .await
            .expect("publishing finished in time")
            .expect("the publishing task");
        eprintln!("drill: every message flushed after {:?}", started.elapsed());
        let reading = timeout(self.patience * 2, receiving)
            .await
            .expect("receiving finished in time")
            .expect("the receiving task");
        eprintln!(
            "drill: the reading consumer had every message after {:?}",
            started.elapsed()
        );
        // The consumer that was away during both restarts reads everything
        // from the broker's storage now.
        let away = resume(subscriber.as_ref(), &pattern, &away_durable, self.patience).await;
        let away = receive_all(away, self.messages, self.patience).await;
        eprintln!(
            "drill: the away consumer had every message after {:?}",
            started.elapsed()
        );
        for durable in [&reading_durable, &away_durable] {
            subscriber
                .remove_durable(&pattern, durable)
                .await
                .expect("removing a drill consumer");
        }
        let _ = publisher.close().await;
        let _ = subscriber.close().await;
        DrillReport {
            reading,
            away,
            republished: republished.distinct,
            republish_attempts: republished.attempts,
        }
    }
}

fn durable(name: &str) -> Durable {
    Durable::new(name)
        .expect("a valid consumer name")
        .ack_wait(Duration::from_secs(2))
}

fn numbered(subject: &str, seq: u32) -> Message {
    Message::new(subject, seq.to_be_bytes().to_vec()).expect("a valid subject")
}

async fn publish_all(
    drill: RestartDrill,
    publisher: Arc<dyn Broker>,
    subject: String,
    flushed: Arc<AtomicU32>,
) -> Republished {
    let mut republished = Republished::default();
    // Messages handed to the broker in a batch that failed: each is
    // published again, and counted once in `distinct`.
    let mut again = vec![false; drill.messages as usize];
    let mut start = 0;
    let deadline = Instant::now() + drill.patience * 2;
    while start < drill.messages {
        assert!(Instant::now() < deadline, "publishing did not finish");
        let end = (start + drill.batch).min(drill.messages);
        // One past the last message handed over (a failed publish may
        // have reached the broker too).
        let mut tried = end;
        let mut sent = true;
        for seq in start..end {
            if publisher.publish(numbered(&subject, seq)).await.is_err() {
                tried = seq + 1;
                sent = false;
                break;
            }
        }
        if sent && publisher.flush().await.is_ok() {
            flushed.store(end, Ordering::Release);
            start = end;
            tokio::time::sleep(drill.pause).await;
        } else {
            for seq in start..tried {
                republished.attempts += 1;
                if !std::mem::replace(&mut again[seq as usize], true) {
                    republished.distinct += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    republished
}

/// Receives until every number `0..n` arrived, acknowledging each. Panics
/// naming what is missing after `patience` without a delivery.
async fn receive_all(mut subscription: Subscription, n: u32, patience: Duration) -> Received {
    let mut seen = vec![0u32; n as usize];
    let mut distinct = 0;
    let mut errors = 0;
    while distinct < n {
        match timeout(patience, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                let payload = delivery.payload();
                let seq = u32::from_be_bytes(
                    payload
                        .as_ref()
                        .try_into()
                        .expect("a 4-byte sequence number"),
                );
                if seen[seq as usize] == 0 {
                    distinct += 1;
                }
                seen[seq as usize] += 1;
                // An ack lost in a restart only means a redelivery.
                let _ = delivery.ack().await;
            }
            Ok(Some(Err(error))) => {
                errors += 1;
                eprintln!("error item (expected around restarts): {error}");
            }
            Ok(None) => panic!("the durable subscription ended"),
            Err(_) => {
                let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
                panic!(
                    "LOST: {} of {n} messages never arrived within {patience:?} of the last \
                     delivery (first: {:?})",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                );
            }
        }
    }
    Received {
        duplicates: seen.iter().map(|&c| c.saturating_sub(1)).sum(),
        errors,
    }
}

/// Subscribes to `durable` again, the way a supervised consumer coming back
/// does: a temporary error (a cluster still electing the leader of the
/// stream or consumer after a node came back) is printed and tried again,
/// for up to `patience`; any other error fails the drill.
async fn resume(
    subscriber: &dyn Broker,
    pattern: &Pattern,
    durable: &Durable,
    patience: Duration,
) -> Subscription {
    let deadline = Instant::now() + patience;
    loop {
        match subscriber.subscribe_durable(pattern, durable).await {
            Ok(subscription) => return subscription,
            Err(error) if error.is_temporary() && Instant::now() < deadline => {
                eprintln!("drill: resuming {durable:?} failed, trying again: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("resuming the away consumer: {error}"),
        }
    }
}
