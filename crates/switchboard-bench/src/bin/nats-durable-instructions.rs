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
//! at-most-once path, with the streams of the server known). Everything runs
//! on one thread, so callgrind counts the connection's work too.
//!
//! Instructions per message = (I(n2) − I(n1)) ÷ (n2 − n1):
//!
//! ```sh
//! cargo build --release -p switchboard-bench --bin nats-durable-instructions
//! for m in raw switchboard; do for n in 20000 70000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/nats-durable-instructions $m $n 2>&1 | grep Collected
//! done; done
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::VecDeque;

use async_nats::jetstream::{self, stream};
use switchboard::{Bytes, Headers, Message, Publisher, Subject};

/// PubAcks outstanding at most on the raw side (the bench baseline's window).
const ACK_WINDOW: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, count) = match args.as_slice() {
        [mode, count, ..] => (mode.as_str(), count.parse::<u64>().expect("N is a number")),
        _ => {
            eprintln!("usage: nats-durable-instructions switchboard|raw|switchboard-plain|raw-plain N [URL]");
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
        "raw" => {
            let client = async_nats::connect(url).await.expect("NATS");
            let jetstream = jetstream::new(client);
            let subject = async_nats::Subject::from(subject.as_str());
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
