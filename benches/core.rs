//! Micro-benchmarks of switchboard's own per-message costs: subjects and
//! patterns, headers and the Redis envelope, the in-memory broker's
//! publish→deliver path, and publishing through `dyn Publisher` versus the
//! concrete adapter type (and, for NATS, versus async-nats itself).
//!
//! `cargo bench --bench core`. The NATS group runs only when a server answers
//! on 127.0.0.1:4222 (or `NATS_URL`); it is skipped with a note otherwise.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use switchboard::{
    Broker, Headers, MemoryBroker, Message, Pattern, Publisher, Subject, Subscriber,
};

/// Messages per measured batch in the broker benchmarks.
const BATCH: u64 = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn subjects_and_patterns(c: &mut Criterion) {
    let mut group = c.benchmark_group("subject");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_subject", |b| {
        b.iter(|| Subject::new(black_box("alerts.eu-west.cpu.high")).unwrap())
    });
    group.bench_function("parse_pattern", |b| {
        b.iter(|| Pattern::new(black_box("alerts.*.cpu.>")).unwrap())
    });
    let cases = [
        ("literal", "alerts.eu-west.cpu.high"),
        ("star", "alerts.*.cpu.high"),
        ("tail", "alerts.>"),
        ("mixed_miss", "alerts.*.disk.>"),
    ];
    for (name, pattern) in cases {
        let pattern = Pattern::new(pattern).unwrap();
        group.bench_with_input(BenchmarkId::new("matches", name), &pattern, |b, p| {
            b.iter(|| p.matches(black_box("alerts.eu-west.cpu.high")))
        });
    }
    group.finish();
}

fn sample_headers() -> Headers {
    let mut headers = Headers::new();
    headers
        .insert("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap();
    headers.insert("content-type", "application/json").unwrap();
    headers.insert("host", "web-1").unwrap();
    headers
}

fn headers_and_wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_3", |b| b.iter(sample_headers));
    let headers = sample_headers();
    group.bench_function("get", |b| b.iter(|| black_box(&headers).get("host")));
    group.bench_function("clone_3", |b| b.iter(|| black_box(&headers).clone()));
    let payload = vec![b'x'; 128];
    let none = Headers::new();
    group.bench_function("redis_encode_no_headers_128B", |b| {
        b.iter(|| switchboard::redis::wire::encode(black_box(&none), black_box(&payload)))
    });
    group.bench_function("redis_encode_3_headers_128B", |b| {
        b.iter(|| switchboard::redis::wire::encode(black_box(&headers), black_box(&payload)))
    });
    let body = Bytes::from(switchboard::redis::wire::encode(&headers, &payload));
    group.bench_function("redis_decode_3_headers_128B", |b| {
        b.iter(|| switchboard::redis::wire::decode(black_box(body.clone())))
    });
    let plain = Bytes::from(payload.clone());
    group.bench_function("redis_decode_no_headers_128B", |b| {
        b.iter(|| switchboard::redis::wire::decode(black_box(plain.clone())))
    });
    group.finish();
}

fn message(subject: &Subject, size: usize) -> Message {
    Message::from_parts(
        subject.clone(),
        Bytes::from(vec![b'x'; size]),
        Headers::new(),
    )
}

/// Publishes `BATCH` messages through `publisher` per iteration, then flushes.
fn publish_batches<P: Publisher + ?Sized>(
    runtime: &tokio::runtime::Runtime,
    publisher: &P,
    subject: &Subject,
    iters: u64,
) -> Duration {
    let payload = Bytes::from(vec![b'x'; 16]);
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            for _ in 0..BATCH {
                let m = Message::from_parts(subject.clone(), payload.clone(), Headers::new());
                publisher.publish(m).await.unwrap();
            }
            publisher.flush().await.unwrap();
        }
        start.elapsed()
    })
}

fn memory_broker(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(BATCH));
    let subject = Subject::new("bench.memory").unwrap();

    for size in [16usize, 1024] {
        group.bench_function(BenchmarkId::new("publish_deliver", size), |b| {
            let broker = MemoryBroker::new();
            let mut subscription = runtime
                .block_on(broker.subscribe(&Pattern::from(subject.clone())))
                .unwrap();
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        // Publish and receive one batch concurrently (the buffer
                        // holds the whole batch, so no deadlock either way).
                        for _ in 0..BATCH {
                            broker.publish(message(&subject, size)).await.unwrap();
                        }
                        for _ in 0..BATCH {
                            black_box(subscription.next().await.unwrap().unwrap());
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }

    // Dispatch cost: the same broker as its concrete type and as `dyn Publisher`.
    let concrete = MemoryBroker::new();
    group.bench_function("publish_concrete", |b| {
        b.iter_custom(|iters| publish_batches(&runtime, &concrete, &subject, iters))
    });
    let dynamic: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    group.bench_function("publish_dyn", |b| {
        b.iter_custom(|iters| publish_batches(&runtime, dynamic.as_ref(), &subject, iters))
    });
    group.finish();
}

fn nats(c: &mut Criterion) {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let runtime = runtime();
    let connect = || {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(3), switchboard::nats::connect(&url)).await
        })
    };
    let (Ok(Ok(concrete)), Ok(Ok(other))) = (connect(), connect()) else {
        eprintln!("nats: no server answers at {url}; skipping the NATS benchmarks");
        return;
    };
    let dynamic: Arc<dyn Broker> = Arc::new(other);
    let subject = Subject::new("bench.criterion.nats").unwrap();
    let mut group = c.benchmark_group("nats");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish_concrete", |b| {
        b.iter_custom(|iters| publish_batches(&runtime, &concrete, &subject, iters))
    });
    group.bench_function("publish_dyn", |b| {
        b.iter_custom(|iters| publish_batches(&runtime, dynamic.as_ref(), &subject, iters))
    });
    // The same loop on async-nats itself: the floor switchboard is measured against.
    if let Ok(Ok(raw)) = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), async_nats::connect(&url)).await
    }) {
        let raw_subject = async_nats::Subject::from(subject.as_str());
        let payload = Bytes::from(vec![b'x'; 16]);
        group.bench_function("publish_raw_async_nats", |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..BATCH {
                            raw.publish(raw_subject.clone(), payload.clone())
                                .await
                                .unwrap();
                        }
                        raw.flush().await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        let _ = concrete.close().await;
        let _ = dynamic.close().await;
    });
}

criterion_group!(
    benches,
    subjects_and_patterns,
    headers_and_wire,
    memory_broker,
    nats
);
criterion_main!(benches);
