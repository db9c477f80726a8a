//! Durable subscriptions on JetStream beyond the conformance suite: data
//! survives nats-server restarts, `flush` means stored, and `remove_durable`
//! leaves nothing behind, and deleting the consumer ends a subscription.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server;

use std::time::Duration;

use futures::StreamExt;
use switchboard_conformance::Connector;
use switchboard_core::{Broker, Durable, Message, Pattern, Publisher, Subscriber};
use switchboard_testkit::{unique, NatsServer, RestartDrill};
use tokio::time::timeout;

/// A private `nats-server -js -sd DIR` is killed and started again with the
/// same directory twice while 10,000 numbered messages are published at a
/// steady rate (the [`RestartDrill`]): a durable consumer reading throughout,
/// and one that was away until the end, each receive every one at least
/// once; duplicates are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_survive_server_restarts() {
    let dir = std::env::temp_dir().join(unique("js-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.display().to_string();
    let Some(mut server) = NatsServer::start(&["-js", "-sd", &store]) else {
        return;
    };
    let connector =
        Connector::new(|url: String| async move { switchboard_nats::connect(&url).await });
    let drill = RestartDrill::default();
    let report = drill
        .run(&connector, &server.url(), |outage| {
            server.process.kill();
            std::thread::sleep(outage);
            server.process.start_again();
        })
        .await;
    println!(
        "durable over 2 nats-server restarts: {} messages, all received by both consumers; {report:?}",
        drill.messages
    );
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

/// More messages than the PubAck window holds (4,096): publishes await the
/// oldest PubAcks as they go, and after `flush` every message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_means_stored_past_the_puback_window() {
    let Some(url) = server::url() else { return };
    let base = unique("window");
    let name = base.replace('.', "-");
    let admin = async_nats::connect(&url).await.unwrap();
    let jetstream = async_nats::jetstream::new(admin);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{base}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    // Connected after the stream exists: it publishes through JetStream.
    let publisher = switchboard_nats::connect(&url).await.unwrap();
    const COUNT: u64 = 12_000;
    for seq in 0..COUNT {
        publisher
            .publish(Message::new(format!("{base}.x"), seq.to_string()).unwrap())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let stored = jetstream
        .get_stream(&name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stored, COUNT, "messages stored when flush returned");
    jetstream.delete_stream(&name).await.unwrap();
    publisher.close().await.unwrap();
}

/// JetStream refusing to store messages (a stream full, discarding new
/// ones) makes `flush` fail, counting them: those whose PubAck a publish
/// awaited (the window slid) and those `flush` awaited itself. The next
/// `flush` reports nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_reports_messages_jetstream_refused() {
    use async_nats::jetstream::stream::{Config, DiscardPolicy};
    let Some(url) = server::url() else { return };
    let base = unique("refused");
    let name = base.replace('.', "-");
    let admin = async_nats::connect(&url).await.unwrap();
    let jetstream = async_nats::jetstream::new(admin);
    jetstream
        .create_stream(Config {
            name: name.clone(),
            subjects: vec![format!("{base}.>")],
            max_messages: 10,
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = switchboard_nats::connect(&url).await.unwrap();
    const COUNT: u64 = 6_000;
    for seq in 0..COUNT {
        publisher
            .publish(Message::new(format!("{base}.x"), seq.to_string()).unwrap())
            .await
            .unwrap();
    }
    let error = publisher
        .flush()
        .await
        .expect_err("JetStream refused messages");
    let text = error.to_string();
    assert!(
        text.contains(&format!("did not store {} of {COUNT}", COUNT - 10)),
        "{text}"
    );
    publisher.flush().await.unwrap();
    jetstream.delete_stream(&name).await.unwrap();
    publisher.close().await.unwrap();
}

/// How many pull requests of consumer `name` wait on the server.
async fn waiting_pulls(stream: &mut async_nats::jetstream::stream::Stream, name: &str) -> usize {
    stream.consumer_info(name).await.unwrap().num_waiting
}

/// Polls `waiting_pulls` every 100 ms until `done` says yes, for up to 10 s
/// (a third of the 30 s a pull request lives on the server); the last count.
async fn wait_for_pulls(
    stream: &mut async_nats::jetstream::stream::Stream,
    name: &str,
    done: impl Fn(usize) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = waiting_pulls(stream, name).await;
        if done(waiting) || tokio::time::Instant::now() >= deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `close` of a durable subscription ends its pull request on the server at
/// once, not when it expires (30 s later): the server sees no pull waiting,
/// so a message published after the close is not handed to a subscription
/// that is gone (it would wait out `ack_wait` before anyone got it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_pull_request_waiting() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let base = unique("closing");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let name = base.replace('.', "-");
    let durable = Durable::new(&name).unwrap();
    let mut subscription = broker.subscribe_durable(&pattern, &durable).await.unwrap();
    // The first pull request goes out once the stream is polled.
    assert!(
        timeout(Duration::from_millis(300), subscription.next())
            .await
            .is_err(),
        "nothing was published"
    );
    let jetstream = async_nats::jetstream::new(broker.client().clone());
    let stream_name = jetstream
        .stream_by_subject(pattern.as_str())
        .await
        .expect("a stream captures the pattern");
    let mut stream = jetstream.get_stream(&stream_name).await.unwrap();
    let waiting = wait_for_pulls(&mut stream, &name, |n| n > 0).await;
    assert!(waiting > 0, "the open subscription's pull request waits");
    let closing = std::time::Instant::now();
    subscription.close().await.unwrap();
    let waiting = wait_for_pulls(&mut stream, &name, |n| n == 0).await;
    assert_eq!(waiting, 0, "pull requests still waiting 10 s after close");
    eprintln!(
        "no pull request waiting {:?} after close",
        closing.elapsed()
    );
    broker.remove_durable(&pattern, &durable).await.unwrap();
    broker.close().await.unwrap();
}

/// Deleting the consumer under an open durable subscription ends it: one
/// error item naming the consumer, then the end of the stream (the server
/// tells the waiting pull request `409 Consumer Deleted`), instead of a
/// subscription that waits for messages that can no longer come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_consumer_ends_the_subscription() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let base = unique("deleted");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let name = base.replace('.', "-");
    let durable = Durable::new(&name).unwrap();
    let mut subscription = broker.subscribe_durable(&pattern, &durable).await.unwrap();
    let subject = format!("{base}.one");
    broker
        .publish(Message::new(subject.as_str(), "before").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let mut first = timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message published before the delete arrives")
        .expect("the subscription is open")
        .expect("a delivery");
    first.ack().await.unwrap();

    let jetstream = async_nats::jetstream::new(broker.client().clone());
    let stream_name = jetstream
        .stream_by_subject(pattern.as_str())
        .await
        .expect("a stream captures the pattern");
    jetstream
        .get_stream(&stream_name)
        .await
        .unwrap()
        .delete_consumer(&name)
        .await
        .unwrap();

    let error = timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("the subscription hears of the delete")
        .expect("an error item before the end")
        .expect_err("no delivery after the consumer is gone");
    assert!(
        error.to_string().contains(&format!("{name:?} was deleted")),
        "the error names the deleted consumer: {error}"
    );
    let end = timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the subscription ends after the delete");
    assert!(end.is_none(), "the stream ends, got {end:?}");
    jetstream.delete_stream(&stream_name).await.unwrap();
    broker.close().await.unwrap();
}

/// A user's work-queue stream over the pattern refuses switchboard's
/// consumer (it must start at the stream's beginning): the refusal is one
/// error at once naming the stream and what to do, not 20 retries over five
/// seconds blamed on a leader election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_stream_is_refused_at_once_with_why() {
    let Some(url) = server::url() else { return };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let base = unique("wq");
    let jetstream = async_nats::jetstream::new(broker.client().clone());
    let stream_name = base.replace('.', "_").to_uppercase();
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{base}.>")],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let pattern: Pattern = format!("{base}.a").parse().unwrap();
    let durable = Durable::new(&base.replace('.', "-")).unwrap();
    let started = std::time::Instant::now();
    let error = match broker.subscribe_durable(&pattern, &durable).await {
        Ok(_) => panic!("a consumer on a work-queue stream was accepted"),
        Err(error) => error.to_string(),
    };
    jetstream.delete_stream(&stream_name).await.unwrap();
    assert!(error.contains("is a work-queue stream"), "{error}");
    assert!(!error.contains("electing a leader"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    broker.close().await.unwrap();
}
