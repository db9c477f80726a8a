//! Durable subscriptions on JetStream beyond the conformance suite: data
//! survives nats-server restarts, `flush` means stored, and `remove_durable`
//! leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{Broker, Durable, Message, Pattern, Publisher, Subscriber};
use switchboard_testkit::{unique, NatsServer};
use tokio::time::{timeout, Instant};

/// Messages the restart test publishes.
const N: u32 = 5000;
/// Messages published between two flushes; a batch whose flush fails is
/// published again (so it may arrive twice, and duplicates are counted).
const BATCH: u32 = 100;

fn numbered(seq: u32) -> Message {
    Message::new("restart.jobs", seq.to_be_bytes().to_vec()).unwrap()
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("a 4-byte sequence number"))
}

/// Receives until every number `0..N` arrived, acknowledging each; returns
/// the duplicates and error items seen. Fails naming what is missing after
/// 60 s without a delivery.
async fn receive_all(mut subscription: switchboard_core::Subscription) -> (u32, u32) {
    let mut seen = vec![0u32; N as usize];
    let mut distinct = 0;
    let mut errors = 0;
    while distinct < N {
        match timeout(Duration::from_secs(60), subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                let seq = number(delivery.payload());
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
                    "LOST: {} of {N} messages never arrived (first: {:?})",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                );
            }
        }
    }
    let duplicates = seen.iter().map(|&c| c.saturating_sub(1)).sum();
    (duplicates, errors)
}

/// A private `nats-server -js -sd DIR` is killed and started again with the
/// same directory twice while numbered messages are published at a steady
/// rate: a durable consumer reading throughout, and one that was away until
/// the end, each receive every one at least once; duplicates are counted and
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_survive_server_restarts() {
    let dir = std::env::temp_dir().join(unique("js-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.display().to_string();
    let Some(mut server) = NatsServer::start(&["-js", "-sd", &store]) else {
        return;
    };
    let url = server.url();
    let subscriber = switchboard_nats::connect(&url).await.unwrap();
    let pattern: Pattern = "restart.>".parse().unwrap();
    let durable = Durable::new("restart-worker")
        .unwrap()
        .ack_wait(Duration::from_secs(2));
    let subscription = subscriber
        .subscribe_durable(&pattern, &durable)
        .await
        .unwrap();
    // Created now, away until every message was published.
    let late_durable = Durable::new("restart-late")
        .unwrap()
        .ack_wait(Duration::from_secs(2));
    drop(
        subscriber
            .subscribe_durable(&pattern, &late_durable)
            .await
            .unwrap(),
    );
    // Connected after the stream exists: its publishes wait for PubAcks.
    let publisher = Arc::new(switchboard_nats::connect(&url).await.unwrap());
    let confirmed = Arc::new(AtomicU32::new(0));
    let republished = Arc::new(AtomicU32::new(0));
    let publishing = {
        let (publisher, confirmed, republished) =
            (publisher.clone(), confirmed.clone(), republished.clone());
        tokio::spawn(async move {
            let mut start = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while start < N {
                assert!(Instant::now() < deadline, "publishing did not finish");
                let end = (start + BATCH).min(N);
                let mut sent = true;
                for seq in start..end {
                    if publisher.publish(numbered(seq)).await.is_err() {
                        sent = false;
                        break;
                    }
                }
                if sent && publisher.flush().await.is_ok() {
                    confirmed.store(end, Ordering::Release);
                    start = end;
                    // A steady rate: about 2,000 messages a second.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    republished.fetch_add(end - start, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };
    let receiving = tokio::spawn(receive_all(subscription));
    for third in [N / 3, 2 * N / 3] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while confirmed.load(Ordering::Acquire) < third {
            assert!(
                Instant::now() < deadline,
                "publishing stalled before a restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::task::block_in_place(|| {
            server.process.kill();
            // The outage: the server is gone this long.
            std::thread::sleep(Duration::from_millis(500));
            server.process.start_again();
        });
    }
    timeout(Duration::from_secs(150), publishing)
        .await
        .expect("publishing finished")
        .expect("the publishing task");
    let (duplicates, errors) = timeout(Duration::from_secs(200), receiving)
        .await
        .expect("receiving finished")
        .expect("the receiving task");
    println!(
        "durable over 2 nats-server restarts, consumer reading throughout: {N} messages, all received; \
         {duplicates} duplicates, {} republished after a failed flush, {errors} error items",
        republished.load(Ordering::Relaxed)
    );
    // The consumer that was away during both restarts reads everything
    // from the server's storage now.
    let late = subscriber
        .subscribe_durable(&pattern, &late_durable)
        .await
        .unwrap();
    let (duplicates, errors) = receive_all(late).await;
    println!(
        "durable over 2 nats-server restarts, consumer away meanwhile: {N} messages, all received; \
         {duplicates} duplicates, {errors} error items"
    );
    subscriber.remove_durable(&pattern, &durable).await.unwrap();
    subscriber
        .remove_durable(&pattern, &late_durable)
        .await
        .unwrap();
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// After `flush`, JetStream has stored every message published on a
/// subject a stream captures; `remove_durable` then deletes the consumer
/// and the stream the adapter provisioned, and removing again succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_means_stored_and_remove_cleans_up() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let base = unique("stored");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let durable = Durable::new(&base.replace('.', "-")).unwrap();
    let subscription = broker.subscribe_durable(&pattern, &durable).await.unwrap();
    let publisher = switchboard_nats::connect(&url).await.unwrap();
    const COUNT: u64 = 500;
    for seq in 0..COUNT {
        publisher
            .publish(Message::new(format!("{base}.x"), seq.to_string()).unwrap())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let jetstream = async_nats::jetstream::new(broker.client().clone());
    let name = jetstream
        .stream_by_subject(pattern.as_str())
        .await
        .expect("a stream captures the pattern");
    assert!(
        name.starts_with(switchboard_nats::STREAM_PREFIX),
        "provisioned stream {name:?}"
    );
    let mut stream = jetstream.get_stream(&name).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert_eq!(stored, COUNT, "messages stored when flush returned");
    drop(subscription);
    broker.remove_durable(&pattern, &durable).await.unwrap();
    assert!(
        jetstream.get_stream(&name).await.is_err(),
        "the provisioned stream {name:?} is left after remove_durable"
    );
    broker.remove_durable(&pattern, &durable).await.unwrap();
    publisher.close().await.unwrap();
    broker.close().await.unwrap();
}

/// A connection that learned of a stream keeps publishing normally after
/// the stream was deleted: `flush` succeeds and plain subscribers still
/// get the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_succeeds_after_the_stream_is_gone() {
    let Some(url) = server::url() else { return };
    let owner = switchboard_nats::connect(&url).await.unwrap();
    let base = unique("gone");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let durable = Durable::new(&base.replace('.', "-")).unwrap();
    drop(owner.subscribe_durable(&pattern, &durable).await.unwrap());
    // Connected while the stream exists: it publishes through JetStream.
    let publisher = switchboard_nats::connect(&url).await.unwrap();
    owner.remove_durable(&pattern, &durable).await.unwrap();
    let mut plain = owner.subscribe(&pattern).await.unwrap();
    publisher
        .publish(Message::new(format!("{base}.x"), "still here").unwrap())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let delivery = timeout(Duration::from_secs(10), plain.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.payload_str(), Some("still here"));
    publisher.close().await.unwrap();
    owner.close().await.unwrap();
}
