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
//!
//! Two flags, for both sides alike: `--fresh-payload` makes each message's
//! payload a new `Bytes::copy_from_slice`, as a program encoding each message
//! does (the default clones one static payload, which costs nothing; a
//! `Vec`-backed `Bytes` allocates on its first clone, and that difference
//! once hid a cost of switchboard's); `--multi-thread` runs on tokio's
//! multi-thread runtime, for CPU and wall-clock comparisons under
//! `/usr/bin/time` (the connection's task then runs on another thread, where
//! reference counts shared with the publishing thread cost more than
//! callgrind, which runs one thread at a time, shows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use switchboard::{Headers, MemoryBroker, Message, Publisher, Subject};

const URL: &str = "nats://127.0.0.1:4222";

fn main() {
    let flags: Vec<String> = std::env::args().filter(|a| a.starts_with("--")).collect();
    let runtime = if flags.iter().any(|f| f == "--multi-thread") {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .unwrap();
    runtime.block_on(run(flags.iter().any(|f| f == "--fresh-payload")));
}

async fn run(fresh_payload: bool) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let [mode, count] = args.as_slice() else {
        return;
    };
    let count: u64 = count.parse().expect("N is a number of messages");
    let fixed = Bytes::from_static(b"0123456789abcdef");
    let subject = Subject::new("bench.instructions").unwrap();
    let payload = || {
        if fresh_payload {
            Bytes::copy_from_slice(b"0123456789abcdef")
        } else {
            fixed.clone()
        }
    };
    let message = || Message::from_parts(subject.clone(), payload(), Headers::new());
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
                client.publish(subject.clone(), payload()).await.unwrap();
            }
            client.flush().await.unwrap();
        }
        "nats-raw-static" => {
            let client = async_nats::connect(URL).await.unwrap();
            // The cheapest call async-nats has: a `&'static str` subject is
            // turned into a static `Bytes`, with no reference count at all.
            for _ in 0..count {
                client
                    .publish("bench.instructions", payload())
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
