//! Instructions per durable NATS publish, switchboard next to async-nats'
//! JetStream client, for callgrind: noise-free where wall-clock ratios on a
//! shared machine are not (see BENCHMARKS.md, durable section).
//!
//! `nats-durable-instructions MODE N [URL]` creates a JetStream stream over a
//! fresh subject, publishes N 16-byte messages on it, waits until JetStream
//! stored every one (switchboard: `flush`; raw: every PubAck awaited, at most
//! 4,096 outstanding, as `switchboard bench`'s raw baseline does), and deletes
//! the stream. MODE is `switchboard` or `raw`; `switchboard-plain` and
//! `raw-plain` publish at most once to a subject no stream captures (the
//! at-most-once path, with the streams of the server known);
//! `switchboard-consume` and `raw-consume` publish N messages through the raw
//! JetStream loop above, then receive and ack them through a durable pull
//! consumer (switchboard's `subscribe_durable`, or async-nats' pull stream
//! with the bench baseline's settings: 64 a pull, 30 s expiry, 5 s
//! heartbeats), so their difference per message is the consuming side's.
//! Everything runs on one thread, so callgrind counts the connection's work
//! too.
//!
//! Instructions per message = (I(n2) − I(n1)) ÷ (n2 − n1):
//!
//! ```sh
//! cargo build --release -p switchboard-bench --bin nats-durable-instructions
//! for m in raw switchboard raw-consume switchboard-consume; do for n in 20000 70000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/nats-durable-instructions $m $n 2>&1 | grep Collected
//! done; done
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::VecDeque;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use switchboard::{
    Broker, Bytes, Durable, Headers, Message, Pattern, Publisher, Subject, Subscriber,
};

/// PubAcks outstanding at most on the raw side (the bench baseline's window).
const ACK_WINDOW: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, count) = match args.as_slice() {
        [mode, count, ..] => (mode.as_str(), count.parse::<u64>().expect("N is a number")),
        _ => {
            eprintln!("usage: nats-durable-instructions switchboard|raw|switchboard-plain|raw-plain|switchboard-consume|raw-consume N [URL]");
            std::process::exit(2);
        }
    };
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(mode, count, &url));
}

async fn run(mode: &str, count: u64, url: &str) {
    let tag = std::process::id();
    let name = format!("instructions-{tag}");
    let subject = format!("bench.instructions.{tag}");
    let admin = async_nats::connect(url).await.expect("NATS");
    let context = jetstream::new(admin.clone());
    context
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("a stream");
    let plain = format!("bench.instructions.plain.{tag}");
    let payload = Bytes::from_static(b"0123456789abcdef");
    match mode {
        "switchboard" | "switchboard-plain" => {
            let subject = if mode == "switchboard" {
                &subject
            } else {
                &plain
            };
            let broker = switchboard::nats::connect(url).await.expect("switchboard");
            let subject = Subject::new(subject.as_str()).expect("a subject");
            for _ in 0..count {
                let message = Message::from_parts(subject.clone(), payload.clone(), Headers::new());
                broker.publish(message).await.expect("publish");
            }
            broker.flush().await.expect("flush");
        }
        "raw" => publish_raw(url, &subject, &payload, count).await,
        "switchboard-consume" => {
            let broker = switchboard::nats::connect(url).await.expect("switchboard");
            let pattern = Pattern::new(subject.as_str()).expect("a pattern");
            let durable = Durable::new(&name).expect("a consumer name");
            // The consumer starts after the stream's last message: it
            // exists before anything is published.
            broker
                .subscribe_durable(&pattern, &durable)
                .await
                .expect("creating the consumer")
                .close()
                .await
                .expect("closing");
            publish_raw(url, &subject, &payload, count).await;
            let mut subscription = broker
                .subscribe_durable(&pattern, &durable)
                .await
                .expect("resuming the consumer");
            for _ in 0..count {
                let mut delivery = subscription
                    .next()
                    .await
                    .expect("a delivery")
                    .expect("not an error");
                delivery.ack().await.expect("ack");
            }
            subscription.close().await.expect("closing");
            broker.close().await.expect("closing the connection");
        }
        "raw-consume" => {
            publish_raw(url, &subject, &payload, count).await;
            let client = async_nats::connect(url).await.expect("NATS");
            let jetstream = jetstream::new(client.clone());
            let consumer: consumer::PullConsumer = jetstream
                .create_consumer_on_stream(
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                    name.as_str(),
                )
                .await
                .expect("a consumer");
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(64)
                .expires(std::time::Duration::from_secs(30))
                .heartbeat(std::time::Duration::from_secs(5))
                .messages()
                .await
                .expect("pulling");
            for _ in 0..count {
                let message = messages
                    .next()
                    .await
                    .expect("a message")
                    .expect("not an error");
                message.ack().await.expect("ack");
            }
            drop(messages);
            client.flush().await.expect("flush");
        }
        "raw-plain" => {
            let client = async_nats::connect(url).await.expect("NATS");
            let subject = async_nats::Subject::from(plain.as_str());
            for _ in 0..count {
                client
                    .publish(subject.clone(), payload.clone())
                    .await
                    .expect("publish");
            }
            client.flush().await.expect("flush");
        }
        other => panic!("unknown mode {other:?}"),
    }
    let stored = context
        .get_stream(&name)
        .await
        .expect("the stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages;
    context
        .delete_stream(&name)
        .await
        .expect("deleting the stream");
    println!("{mode} {count}: stream holds {stored}");
}

/// Publishes `count` messages on `subject` through JetStream, at most
/// [`ACK_WINDOW`] PubAcks outstanding, and awaits every PubAck.
async fn publish_raw(url: &str, subject: &str, payload: &Bytes, count: u64) {
    let client = async_nats::connect(url).await.expect("NATS");
    let jetstream = jetstream::new(client);
    let subject = async_nats::Subject::from(subject);
    let mut acks = VecDeque::with_capacity(ACK_WINDOW);
    for _ in 0..count {
        let ack = jetstream
            .publish(subject.clone(), payload.clone())
            .await
            .expect("publish");
        acks.push_back(ack);
        while acks.len() >= ACK_WINDOW {
            if let Some(oldest) = acks.pop_front() {
                oldest.await.expect("PubAck");
            }
        }
    }
    while let Some(ack) = acks.pop_front() {
        ack.await.expect("PubAck");
    }
}
