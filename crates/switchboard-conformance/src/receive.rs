//! Bounded receiving: every wait ends, so a broken adapter fails instead of hanging.
//!
//! The helpers that return deliveries acknowledge them first (a no-op on
//! brokers without acknowledgement), as a well-behaved consumer does; on
//! brokers that limit unacknowledged deliveries a test would otherwise stall.

use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{Delivery, Error, Message, Publisher, Subscription};
use tokio::time::{timeout, Instant};

/// Longest wait for the next expected delivery.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for `flush` or a broker's `close`, which may wait for the
/// broker to confirm a backlog of messages.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long "nothing else arrives" checks listen, after a flush.
pub const SILENCE: Duration = Duration::from_millis(500);

fn describe(subscription: &Subscription) -> String {
    match subscription.group() {
        Some(group) => format!("{:?} (group {group:?})", subscription.pattern()),
        None => format!("{:?}", subscription.pattern()),
    }
}

/// Receives the next delivery without acknowledging it. Panics if none comes
/// within [`RECEIVE_TIMEOUT`], if the stream ends, or if it yields an error.
pub async fn recv_unacked(subscription: &mut Subscription) -> Delivery {
    match timeout(RECEIVE_TIMEOUT, subscription.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!(
            "subscription {} yielded an error instead of a delivery: {error}",
            describe(subscription)
        ),
        Ok(None) => panic!(
            "subscription {} ended while a delivery was expected",
            describe(subscription)
        ),
        Err(_) => panic!(
            "subscription {} received nothing within {RECEIVE_TIMEOUT:?}",
            describe(subscription)
        ),
    }
}

/// Receives and acknowledges the next delivery. Panics if none comes within
/// [`RECEIVE_TIMEOUT`], if the stream ends or yields an error, or if the ack fails.
pub async fn recv(subscription: &mut Subscription) -> Delivery {
    let mut delivery = recv_unacked(subscription).await;
    ack(&mut delivery).await;
    delivery
}

async fn ack(delivery: &mut Delivery) {
    if let Err(error) = delivery.ack().await {
        panic!(
            "acknowledging a delivery on {:?} failed: {error}",
            delivery.subject()
        );
    }
}

/// Receives and acknowledges `n` deliveries, allowing [`RECEIVE_TIMEOUT`]
/// between one and the next. Panics (saying how many came) if they do not all
/// arrive, if the stream ends, or if it yields an error.
pub async fn recv_n(subscription: &mut Subscription, n: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(n);
    while deliveries.len() < n {
        match timeout(RECEIVE_TIMEOUT, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                ack(&mut delivery).await;
                deliveries.push(delivery);
            }
            Ok(Some(Err(error))) => panic!(
                "subscription {} yielded an error after {} of {n} deliveries: {error}",
                describe(subscription),
                deliveries.len()
            ),
            Ok(None) => panic!(
                "subscription {} ended after {} of {n} deliveries",
                describe(subscription),
                deliveries.len()
            ),
            Err(_) => panic!(
                "subscription {} received {} of {n} deliveries, then nothing for {RECEIVE_TIMEOUT:?}",
                describe(subscription),
                deliveries.len()
            ),
        }
    }
    deliveries
}

/// Receives and acknowledges whatever arrives within `window` (stopping early
/// if the stream ends). Panics if the stream yields an error.
pub async fn collect_for(subscription: &mut Subscription, window: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + window;
    let mut deliveries = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                ack(&mut delivery).await;
                deliveries.push(delivery);
            }
            Ok(Some(Err(error))) => panic!(
                "subscription {} yielded an error: {error}",
                describe(subscription)
            ),
            Ok(None) | Err(_) => return deliveries,
        }
    }
}

/// Receives and acknowledges up to `expected` deliveries (allowing
/// [`RECEIVE_TIMEOUT`] between them), then whatever else arrives within
/// `grace`, and returns them all. Unlike [`recv_n`] a shortfall does not
/// panic, so the caller can report exactly what was missing or extra.
/// Panics if the stream yields an error.
pub async fn gather(
    subscription: &mut Subscription,
    expected: usize,
    grace: Duration,
) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(expected);
    while deliveries.len() < expected {
        match timeout(RECEIVE_TIMEOUT, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                ack(&mut delivery).await;
                deliveries.push(delivery);
            }
            Ok(Some(Err(error))) => panic!(
                "subscription {} yielded an error: {error}",
                describe(subscription)
            ),
            Ok(None) | Err(_) => return deliveries,
        }
    }
    deliveries.extend(collect_for(subscription, grace).await);
    deliveries
}

/// Asserts nothing arrives on `subscription` within `grace` (use [`SILENCE`]
/// after a flush): no delivery, no error, and the stream does not end.
pub async fn expect_silence(subscription: &mut Subscription, grace: Duration) {
    match timeout(grace, subscription.next()).await {
        Err(_) => {}
        Ok(Some(Ok(delivery))) => panic!(
            "subscription {} received a message it should not have: subject {:?}, payload {}",
            describe(subscription),
            delivery.subject(),
            show_payload(delivery.payload())
        ),
        Ok(Some(Err(error))) => panic!(
            "subscription {} yielded an error where nothing was expected: {error}",
            describe(subscription)
        ),
        Ok(None) => panic!(
            "subscription {} ended where it should have stayed open",
            describe(subscription)
        ),
    }
}

/// Asserts the stream ends (yields `None`) within `within`. Error items before
/// the end are tolerated (a closing connection may report one); a delivery is not.
pub async fn expect_end(subscription: &mut Subscription, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(None) => return,
            Ok(Some(Err(_))) => {}
            Ok(Some(Ok(delivery))) => panic!(
                "subscription {} delivered {:?} where it should have ended",
                describe(subscription),
                delivery.subject()
            ),
            Err(_) => panic!(
                "subscription {} did not end within {within:?}",
                describe(subscription)
            ),
        }
    }
}

/// Waits for the [`Error::Disconnected`] item an outage (a frozen or cut
/// link, a broker restart) must bring, from broker `broker`, and returns how
/// long it took and its reason. Panics if anything else comes first, or
/// nothing within `within`.
pub async fn expect_disconnected(
    subscription: &mut Subscription,
    broker: &str,
    within: Duration,
) -> (Duration, String) {
    let started = Instant::now();
    match timeout(within, subscription.next()).await {
        Ok(Some(Err(Error::Disconnected {
            broker: reported,
            reason,
        }))) => {
            assert_eq!(reported, broker, "the broker the report names");
            (started.elapsed(), reason)
        }
        Ok(other) => panic!(
            "subscription {}: expected a Disconnected item, got {other:?}",
            describe(subscription)
        ),
        Err(_) => panic!(
            "subscription {}: no Disconnected item within {within:?}",
            describe(subscription)
        ),
    }
}

/// Publishes a message on `subject` with `publisher` (again every 300 ms)
/// until `subscription` receives one, and returns it acknowledged: for
/// checking that a subscription (and a publisher) recovered from an outage.
/// Publish failures and error items on the way (the outage's own) are
/// printed and tolerated. Panics if nothing arrives within `within` or the
/// stream ends.
pub async fn publish_until_received(
    publisher: &dyn Publisher,
    subscription: &mut Subscription,
    subject: &str,
    within: Duration,
) -> Delivery {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "subscription {}: nothing on {subject:?} within {within:?}",
            describe(subscription)
        );
        let message = Message::new(subject, "again").expect("a valid subject");
        if let Err(error) = publisher.publish(message).await {
            eprintln!("publishing while recovering: {error}");
        }
        if let Err(error) = publisher.flush().await {
            eprintln!("flushing while recovering: {error}");
        }
        match timeout(Duration::from_millis(300), subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                delivery.ack().await.expect("ack");
                return delivery;
            }
            Ok(Some(Err(error))) => eprintln!("error item while recovering: {error}"),
            Ok(None) => panic!(
                "subscription {} ended while recovering",
                describe(subscription)
            ),
            Err(_) => {}
        }
    }
}

/// A short printable form of a payload for failure messages.
pub(crate) fn show_payload(payload: &[u8]) -> String {
    const SHOWN: usize = 64;
    match std::str::from_utf8(payload) {
        Ok(text) if text.len() <= SHOWN => format!("{text:?}"),
        Ok(text) => format!(
            "{:?}... ({} bytes)",
            text.chars().take(SHOWN).collect::<String>(),
            payload.len()
        ),
        Err(_) if payload.len() <= SHOWN => format!("{payload:?}"),
        Err(_) => format!("{:?}... ({} bytes)", &payload[..SHOWN], payload.len()),
    }
}
