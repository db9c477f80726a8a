//! Durable routes on the in-memory broker: kept while the worker is away,
//! acknowledged only after the handler, and with `max_deliver` a failing
//! message is dead-lettered exactly once, on its last delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{Durable, MemoryBroker, Message, Publisher, Subscriber};
use switchboard_worker::{Context, Error, Route, Worker, ORIGINAL_SUBJECT_HEADER};
use tokio::time::timeout;

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the handler saw: payload, delivery count, last delivery.
type Call = (String, Option<u32>, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_once_on_the_last_delivery() {
    let broker = MemoryBroker::new();
    // A durable listener of the dead letters, created before, read after.
    let dlq_pattern = "dlq.jobs.>".parse().unwrap();
    let dlq_reader = Durable::new("dlq-reader").unwrap();
    drop(
        broker
            .subscribe_durable(&dlq_pattern, &dlq_reader)
            .await
            .unwrap(),
    );
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let seen = calls.clone();
    let route = Route::new("jobs.>", move |ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push((
                ctx.payload_str().unwrap_or_default().to_string(),
                ctx.delivery_count(),
                ctx.is_last_delivery(),
            ));
            Err::<(), _>("always fails")
        }
    })
    .attempts(1)
    .durable("jobs-worker")
    .max_deliver(3);
    // Created by the first start; the messages come while it is away.
    let first = Worker::new(broker.clone())
        .route(route.clone())
        .start()
        .await
        .unwrap();
    first.shutdown().await;
    for n in 0..4 {
        broker
            .publish(Message::new("jobs.resize", format!("job {n}")).unwrap())
            .await
            .unwrap();
    }
    let running = Worker::new(broker.clone())
        .route(route)
        .start()
        .await
        .unwrap();
    wait_until("12 calls (4 messages × 3 deliveries)", || {
        calls.lock().unwrap().len() >= 12
    })
    .await;
    wait_until("4 dead letters", || running.stats().dead_lettered >= 4).await;
    let summary = running.shutdown().await;
    assert_eq!(summary.stats.dead_lettered, 4);
    let calls = calls.lock().unwrap().clone();
    for n in 0..4 {
        let mine: Vec<(Option<u32>, bool)> = calls
            .iter()
            .filter(|(payload, _, _)| *payload == format!("job {n}"))
            .map(|(_, count, last)| (*count, *last))
            .collect();
        assert_eq!(
            mine,
            [(Some(1), false), (Some(2), false), (Some(3), true)],
            "deliveries of job {n}"
        );
    }
    let mut dead = broker
        .subscribe_durable(&dlq_pattern, &dlq_reader)
        .await
        .unwrap();
    let mut letters = Vec::new();
    for _ in 0..4 {
        let mut delivery = timeout(Duration::from_secs(10), dead.next())
            .await
            .expect("a dead letter")
            .unwrap()
            .unwrap();
        assert_eq!(
            delivery.headers().get(ORIGINAL_SUBJECT_HEADER),
            Some("jobs.resize")
        );
        letters.push(delivery.payload_str().unwrap().to_string());
        delivery.ack().await.unwrap();
    }
    letters.sort();
    assert_eq!(letters, ["job 0", "job 1", "job 2", "job 3"]);
    assert!(
        timeout(Duration::from_millis(1500), dead.next())
            .await
            .is_err(),
        "a message was dead-lettered more than once"
    );
}

#[test]
fn durable_settings_are_checked() {
    let route = |r: Route| {
        Worker::new(MemoryBroker::new())
            .route(r)
            .check()
            .unwrap_err()
    };
    let handler = |_ctx: Context| async { Ok::<(), &str>(()) };
    for (bad, expected) in [
        (
            Route::new("a", handler).max_deliver(3),
            "max_deliver needs a durable route",
        ),
        (
            Route::new("a", handler).durable("x").group("g"),
            "cannot also have a queue group",
        ),
        (Route::new("a", handler).durable("a.b"), "invalid durable"),
    ] {
        let error = route(bad);
        assert!(matches!(error, Error::InvalidRoute { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}
