//! The test kit users unit-test their reactions with: a recording broker, a
//! worker run until idle, assertions on what was published.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_core::{Broker, MemoryBroker, Message, PublisherExt};
use switchboard_worker::testing::TestBroker;
use switchboard_worker::{Context, HandlerError, Route, Worker, PERMANENT_HEADER};

#[derive(Debug, Serialize, Deserialize)]
struct Alert {
    robot: String,
}

/// Alerts are audited; the auditor fails its first two attempts at each.
fn auditing(broker: impl Broker + 'static) -> Worker {
    let attempts = Arc::new(AtomicU32::new(0));
    Worker::new(broker)
        .route(
            Route::json::<Alert>("alerts.>", |alert, ctx| async move {
                let audit = Message::new(format!("audit.{}", ctx.subject()), alert.robot)?
                    .with_header("severity", "high")?;
                ctx.publish(audit).await?;
                Ok::<_, HandlerError>(())
            })
            .publishes_to("audit.{subject}"),
        )
        .route(
            Route::new("audit.>", move |_ctx: Context| {
                let attempts = attempts.clone();
                async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
                        return Err(HandlerError::new("the audit log is busy"));
                    }
                    Ok(())
                }
            })
            .backoff(Duration::from_secs(1)),
        )
}

#[tokio::test(start_paused = true)]
async fn idle_waits_for_what_handlers_publish_and_for_retries() {
    let broker = TestBroker::new();
    let worker = broker.start(auditing(broker.clone())).await.unwrap();
    for robot in ["T-800", "T-1000", "T-X"] {
        broker
            .publish_json(
                "alerts.robot",
                &Alert {
                    robot: robot.into(),
                },
            )
            .await
            .unwrap();
    }
    worker.idle().await;
    let stats = worker.stats();
    // 3 alerts and 3 audits, each audit after two retries.
    assert_eq!(
        (stats.received, stats.succeeded(), stats.retried),
        (6, 6, 6),
        "{stats}"
    );
    let audits = broker
        .published_on("audit.>")
        .with_header("severity", "high")
        .count(3);
    let robots: Vec<_> = audits
        .messages()
        .iter()
        .map(|m| m.payload_str().unwrap())
        .collect();
    assert_eq!(robots, ["T-800", "T-1000", "T-X"]);
    broker.published_on("dlq.>").none();
    let summary = worker.stop().await;
    assert!(summary.unfinished.is_empty());
}

#[tokio::test]
async fn idle_returns_at_once_when_nothing_was_published() {
    let broker = TestBroker::new();
    let worker = broker.start(auditing(broker.clone())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker.idle())
        .await
        .expect("idle at once");
    assert!(broker.published().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_means_every_message_is_done_with_on_many_threads() {
    let broker = TestBroker::new();
    let handler = |_ctx: Context| async {
        tokio::task::yield_now().await;
        Ok::<_, HandlerError>(())
    };
    let worker = broker
        .start(
            Worker::new(broker.clone())
                .route(Route::new("jobs.a", handler).concurrency(8))
                .route(Route::new("jobs.b", handler)),
        )
        .await
        .unwrap();
    let mut sent = 0;
    // Many rounds, so that `idle` often looks while a route is polling.
    for round in 1..=200 {
        for n in 0..25 {
            let subject = if n % 2 == 0 { "jobs.a" } else { "jobs.b" };
            broker.publish_to(subject, "work").await.unwrap();
            sent += 1;
        }
        tokio::time::timeout(Duration::from_secs(30), worker.idle())
            .await
            .unwrap_or_else(|_| panic!("round {round}: not idle after 30 s: {}", worker.stats()));
        let stats = worker.stats();
        assert_eq!(
            (stats.received, stats.completed()),
            (sent, sent),
            "round {round}: {stats}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_built_for_another_broker_runs_on_the_test_broker() {
    let broker = TestBroker::new();
    // Built as production code builds it; the kit runs it on `broker`.
    let worker = broker.start(auditing(MemoryBroker::new())).await.unwrap();
    broker
        .publish_json(
            "alerts.robot",
            &Alert {
                robot: "T-800".into(),
            },
        )
        .await
        .unwrap();
    broker.publish_to("alerts.robot", "not JSON").await.unwrap();
    worker.idle().await;
    assert_eq!(
        broker
            .published_on("audit.alerts.robot")
            .one()
            .payload_str(),
        Some("T-800")
    );
    let letter = broker
        .published_on("dlq.alerts.robot")
        .with_header(PERMANENT_HEADER, "true")
        .one();
    assert_eq!(letter.payload_str(), Some("not JSON"));
    assert_eq!(worker.stats().decode_failed, 1);
}

#[tokio::test]
async fn requests_get_typed_replies_through_the_kit() {
    let broker = TestBroker::new();
    let worker = broker
        .start(Worker::new(broker.clone()).on_json::<Alert>(
            "pagers.ask",
            |alert, _ctx| async move {
                Ok::<_, HandlerError>(Some(format!("paging about {}", alert.robot)))
            },
        ))
        .await
        .unwrap();
    let reply = broker
        .request(
            Message::json(
                "pagers.ask",
                &Alert {
                    robot: "T-X".into(),
                },
            )
            .unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(reply.decode_json::<String>().unwrap(), "paging about T-X");
    worker.idle().await;
    broker.published_on("pagers.ask").one();
}

#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "expected exactly one message published on `audit.>` with severity: low, found 0; everything published: [alerts.robot \"{\\\"robot\\\":\\\"T-800\\\"}\" {content-type: application/json}, audit.alerts.robot \"T-800\" {severity: high}]"
)]
async fn a_failed_assertion_lists_what_was_published() {
    let broker = TestBroker::new();
    let worker = broker.start(auditing(broker.clone())).await.unwrap();
    broker
        .publish_json(
            "alerts.robot",
            &Alert {
                robot: "T-800".into(),
            },
        )
        .await
        .unwrap();
    worker.idle().await;
    broker
        .published_on("audit.>")
        .with_header("severity", "low")
        .one();
}
