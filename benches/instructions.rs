//! Instructions per message published, received or handled, counted by
//! callgrind: the noise-free measure of switchboard's cost over the raw
//! client (issue 13), comparable commit to commit on a shared, noisy machine
//! where wall-clock runs are not.
//!
//! Not a criterion benchmark: `benches/instructions.sh` builds this program
//! and runs it under `valgrind --tool=callgrind` twice per mode, with two
//! message counts, so that start-up and connection set-up cancel out:
//! instructions per message = (I(n2) − I(n1)) ÷ (n2 − n1).
//!
//! `instructions MODE N` publishes N 16-byte messages on one subject, then
//! flushes (the receiving modes below also take them). MODE is `memory` (the in-memory broker, no subscriber), `nats`
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
//!
//! # Receiving and reacting
//!
//! The other modes publish N messages the same way on every side (a raw
//! async-nats client, or the memory broker itself) and take them in a task
//! of their own, so what differs between two modes is the receiving side
//! alone; the script subtracts the publishing (`nats-raw`) to report it.
//!
//! - `nats-raw-recv` (baseline) / `nats-recv` / `memory-recv`: a subscriber
//!   reading N messages (async-nats' `Subscriber`, or switchboard's
//!   `Subscription` through `switchboard::connect`), each payload's length
//!   summed. `nats-pubsub` is `nats-recv` with switchboard publishing too (a
//!   `dyn Broker` of its own), as `switchboard bench --mode pubsub` runs it:
//!   the one mode whose publishing differs from its baseline's.
//! - `nats-raw-loop` (baseline: `while let Some(m) = sub.next().await {
//!   handle(m).await }`, the leanest loop a program writes) /
//!   `nats-raw-foreach` (`for_each_concurrent(1, handle)`, as the `switchboard
//!   bench --mode worker` baseline runs it) / `nats-worker` / `memory-worker`
//!   (a switchboard `Worker` with one route, its default layers on: dead
//!   letter, retry, timeout, catch panic, the metrics): a handler that counts
//!   the message, the same on every side.
//!
//! Publishing gives way to the receiving task every [`CHUNK`] messages, on
//! every side alike, so that no buffer overflows and no message is dropped;
//! every mode checks it received exactly N. `--fresh-payload` applies to
//! these modes' publishing too.
//!
//! `--lockstep` makes the publisher wait, after each [`CHUNK`], until the
//! receiving side has taken all it published: no backlog builds up, so the
//! process's CPU time (`/usr/bin/time`) is what the messages cost, not what
//! a backlog of a different size costs in page faults and cache misses (a
//! receiving side slower by a few per cent lets the publisher run further
//! ahead, and its backlog's memory costs more than the difference itself).
//! Its waits are idle time: read the CPU time, not the wall clock.
//!
//! A run whose receiving side takes nothing for [`STALL`] ends with its
//! counts (exit status 2) instead of waiting for ever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use switchboard::worker::{Context, HandlerError, Route, Worker};
use switchboard::{Headers, MemoryBroker, Message, Pattern, Publisher, Subject};
use tokio::sync::Notify;

const URL: &str = "nats://127.0.0.1:4222";

/// The subject of the receiving modes.
const RECEIVED_ON: &str = "bench.instructions.received";

/// Messages published before the publisher gives way to the receiver.
const CHUNK: u64 = 1_000;

/// Messages the handler of a reacting mode has counted.
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// How many it waits for.
static EXPECTED: AtomicU64 = AtomicU64::new(u64::MAX);
/// Told once the handler has counted all it waits for.
static ALL_HANDLED: Notify = Notify::const_new();

/// Messages the receiving side took (`--lockstep`).
static TAKEN: AtomicU64 = AtomicU64::new(0);
/// How many the publisher waits for (`--lockstep`).
static CAUGHT_UP_AT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Told once the receiving side took as many as the publisher waits for.
static CAUGHT_UP: Notify = Notify::const_new();

/// The handler of every reacting mode: counts the message.
fn count_handled() {
    let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
    if handled == EXPECTED.load(Ordering::Relaxed) {
        ALL_HANDLED.notify_one();
    }
    took(handled);
}

/// Tells a publisher in lockstep that the receiving side has taken `taken`.
fn took(taken: u64) {
    TAKEN.store(taken, Ordering::Release);
    if taken == CAUGHT_UP_AT.load(Ordering::Acquire) {
        CAUGHT_UP.notify_one();
    }
}

/// How long the receiving side may take nothing before the run is ended as stalled.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Ends the process, with the counts, once the receiving side has taken
/// nothing for [`STALL`]: a message lost on the way would otherwise leave
/// the run waiting for it forever, with nothing said.
async fn watch_for_stalls(mode: String, count: u64) {
    let mut seen = 0;
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let taken = TAKEN.load(Ordering::Acquire);
        if taken != seen {
            (seen, since) = (taken, std::time::Instant::now());
        } else if since.elapsed() >= STALL {
            eprintln!(
                "error: {mode}: the receiving side took {taken} of {count} messages, then nothing for {STALL:?}"
            );
            std::process::exit(2);
        }
    }
}

/// `--lockstep`: waits until the receiving side has taken `sent` messages.
async fn catch_up(sent: u64) {
    CAUGHT_UP_AT.store(sent, Ordering::Release);
    // A permit left by an earlier chunk can end a wait early: check again.
    while TAKEN.load(Ordering::Acquire) < sent {
        CAUGHT_UP.notified().await;
    }
}

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
    runtime.block_on(run(
        flags.iter().any(|f| f == "--fresh-payload"),
        flags.iter().any(|f| f == "--lockstep"),
    ));
}

async fn run(fresh_payload: bool, lockstep: bool) {
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
        "nats-raw-recv" | "nats-recv" | "nats-pubsub" | "memory-recv" | "nats-raw-loop"
        | "nats-raw-foreach" | "nats-worker" | "memory-worker" => {
            receive(mode, count, payload, lockstep).await
        }
        other => {
            panic!("unknown mode {other:?}: memory, nats, nats-dyn, nats-raw, nats-raw-static, nats-raw-recv, nats-recv, nats-pubsub, memory-recv, nats-raw-loop, nats-raw-foreach, nats-worker or memory-worker")
        }
    }
}

/// The receiving and reacting modes: `count` messages published, taken by
/// the side `mode` names.
async fn receive(mode: &str, count: u64, payload: impl Fn() -> Bytes, lockstep: bool) {
    EXPECTED.store(count, Ordering::Relaxed);
    tokio::spawn(watch_for_stalls(mode.to_string(), count));
    let memory = MemoryBroker::new();
    let switchboard_publisher = if mode == "nats-pubsub" {
        Some(switchboard::connect(URL).await.unwrap())
    } else {
        None
    };
    let nats_publisher = if mode.starts_with("nats") && switchboard_publisher.is_none() {
        Some(async_nats::connect(URL).await.unwrap())
    } else {
        None
    };
    let pattern = Pattern::new(RECEIVED_ON).unwrap();
    // The receiving side, subscribed before anything is published.
    let taking = match mode {
        "nats-raw-recv" => {
            let (_client, mut messages) = raw_subscription().await;
            tokio::spawn(async move {
                let mut bytes = 0;
                for taken in 1..=count {
                    bytes += messages.next().await.unwrap().payload.len();
                    took(taken);
                }
                (bytes, None)
            })
        }
        "nats-recv" | "nats-pubsub" | "memory-recv" => {
            let broker = receiving_broker(mode != "memory-recv", &memory).await;
            let mut deliveries = broker.subscribe(&pattern).await.unwrap();
            tokio::spawn(async move {
                let mut bytes = 0;
                for taken in 1..=count {
                    bytes += deliveries.next().await.unwrap().unwrap().payload().len();
                    took(taken);
                }
                (bytes, None)
            })
        }
        "nats-raw-loop" | "nats-raw-foreach" => {
            let (_client, mut messages) = raw_subscription().await;
            let foreach = mode == "nats-raw-foreach";
            tokio::spawn(async move {
                async fn handle(_message: async_nats::Message) {
                    count_handled();
                }
                let looping = async {
                    if foreach {
                        (&mut messages).for_each_concurrent(1, handle).await;
                    } else {
                        while let Some(message) = messages.next().await {
                            handle(message).await;
                        }
                    }
                };
                tokio::select! {
                    () = looping => panic!("the subscription ended"),
                    () = ALL_HANDLED.notified() => {}
                }
                (0, None)
            })
        }
        _ => {
            let broker = receiving_broker(mode == "nats-worker", &memory).await;
            let handler = |_ctx: Context| async {
                count_handled();
                Ok::<_, HandlerError>(())
            };
            let running = Worker::new(broker)
                .route(Route::new(RECEIVED_ON, handler))
                .start()
                .await
                .unwrap();
            tokio::spawn(async move {
                ALL_HANDLED.notified().await;
                (0, Some(running.shutdown().await))
            })
        }
    };
    let nats_subject = async_nats::Subject::from(String::from(RECEIVED_ON));
    let subject = Subject::new(RECEIVED_ON).unwrap();
    let message = || Message::from_parts(subject.clone(), payload(), Headers::new());
    for sent in 1..=count {
        match (&nats_publisher, &switchboard_publisher) {
            (Some(client), _) => client
                .publish(nats_subject.clone(), payload())
                .await
                .unwrap(),
            (None, Some(broker)) => broker.publish(message()).await.unwrap(),
            (None, None) => memory.publish(message()).await.unwrap(),
        }
        if sent % CHUNK == 0 {
            if lockstep {
                if let Some(client) = &nats_publisher {
                    client.flush().await.unwrap();
                }
                if let Some(broker) = &switchboard_publisher {
                    broker.flush().await.unwrap();
                }
                catch_up(sent).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
    if let Some(client) = &nats_publisher {
        client.flush().await.unwrap();
    }
    if let Some(broker) = &switchboard_publisher {
        broker.flush().await.unwrap();
    }
    let (bytes, summary) = taking.await.unwrap();
    match summary {
        Some(summary) => {
            let stats = summary.stats;
            assert_eq!(stats.handled, count, "{mode}: {stats}");
        }
        None if mode.ends_with("-recv") || mode == "nats-pubsub" => {
            assert_eq!(bytes as u64, count * 16, "{mode}")
        }
        None => assert_eq!(HANDLED.load(Ordering::Relaxed), count, "{mode}"),
    }
}

/// A raw async-nats subscription to the receiving modes' subject, buffering
/// as many messages as switchboard's (`capacity`) so that neither side drops
/// any, and its client; resolves once the server has the SUB.
async fn raw_subscription() -> (async_nats::Client, async_nats::Subscriber) {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(URL)
        .await
        .unwrap();
    let messages = client.subscribe(RECEIVED_ON).await.unwrap();
    // `flush` only writes the SUB to the socket: the first messages of the
    // publisher (another connection) could reach the server before it, and
    // be dropped (the receiving side then took 958 or 972 of the first
    // 1,000 and waited for ever). An echo through the server comes back
    // only once the server processed the SUB before it.
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, Bytes::new()).await.unwrap();
    client.flush().await.unwrap();
    echo.next().await.unwrap();
    (client, messages)
}

/// The broker switchboard's side of a receiving mode takes from: its own
/// NATS connection (`nats`), or the memory broker the publisher uses.
async fn receiving_broker(nats: bool, memory: &MemoryBroker) -> switchboard::AnyBroker {
    if nats {
        switchboard::connect(&format!("{URL}?capacity=1048576"))
            .await
            .unwrap()
    } else {
        std::sync::Arc::new(memory.clone())
    }
}
