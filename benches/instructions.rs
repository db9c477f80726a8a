//! Instructions per published message, counted by callgrind: the noise-free
//! measure of switchboard's cost over the raw client (issue 13), comparable
//! commit to commit on a shared, noisy machine where wall-clock runs are not.
//!
//! Not a criterion benchmark: `benches/instructions.sh` builds this program
//! and runs it under `valgrind --tool=callgrind` twice per mode, with two
//! message counts, so that start-up and connection set-up cancel out:
//! instructions per message = (I(n2) − I(n1)) ÷ (n2 − n1).
//!
//! `instructions MODE N` publishes N 16-byte messages on one subject, then
//! flushes. MODE is `memory` (the in-memory broker, no subscriber), `nats`
//! (switchboard's NATS adapter, concrete type), `nats-dyn` (the same through
//! `switchboard::connect`, a `dyn Broker` as the CLI and most programs use it),
//! `nats-raw` (async-nats itself, the baseline: the subject a cloned
//! `async_nats::Subject`, as switchboard's side clones its `Subject`) or
//! `nats-raw-static` (async-nats with a `&'static str` subject, its cheapest
//! call). Run with no arguments (as
//! `cargo bench` does) it does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use switchboard::{Headers, MemoryBroker, Message, Publisher, Subject};

const URL: &str = "nats://127.0.0.1:4222";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let [mode, count] = args.as_slice() else {
        return;
    };
    let count: u64 = count.parse().expect("N is a number of messages");
    let payload = Bytes::from_static(b"0123456789abcdef");
    let subject = Subject::new("bench.instructions").unwrap();
    let message = || Message::from_parts(subject.clone(), payload.clone(), Headers::new());
    match mode.as_str() {
        "memory" => {
            let broker = MemoryBroker::new();
            for _ in 0..count {
                broker.publish(message()).await.unwrap();
            }
            broker.flush().await.unwrap();
        }
        "nats" => {
            let broker = switchboard::nats::connect(URL).await.unwrap();
            for _ in 0..count {
                broker.publish(message()).await.unwrap();
            }
            broker.flush().await.unwrap();
        }
        "nats-dyn" => {
            let broker = switchboard::connect(URL).await.unwrap();
            for _ in 0..count {
                broker.publish(message()).await.unwrap();
            }
            broker.flush().await.unwrap();
        }
        "nats-raw" => {
            let client = async_nats::connect(URL).await.unwrap();
            // Like for like: switchboard's loop clones a subject made once
            // (a reference count); so does this one, as a program holding
            // its subject in a variable does.
            let subject = async_nats::Subject::from(String::from("bench.instructions"));
            for _ in 0..count {
                client
                    .publish(subject.clone(), payload.clone())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
        }
        "nats-raw-static" => {
            let client = async_nats::connect(URL).await.unwrap();
            // The cheapest call async-nats has: a `&'static str` subject is
            // turned into a static `Bytes`, with no reference count at all.
            for _ in 0..count {
                client
                    .publish("bench.instructions", payload.clone())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
        }
        other => {
            panic!("unknown mode {other:?}: memory, nats, nats-dyn, nats-raw or nats-raw-static")
        }
    }
}
