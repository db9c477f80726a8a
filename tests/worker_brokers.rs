//! The worker's key behaviours on every real broker, through `switchboard::connect`:
//! a failing-then-succeeding handler is retried and succeeds; an always-failing
//! one is dead-lettered with the right headers after exactly N attempts; a
//! failure without a dead letter is nacked and redelivered where the broker
//! can (and logged as such), reported as not redeliverable elsewhere, while
//! one whose error is permanent is rejected without redelivery; the
//! worker acknowledges only after its handler finished, so a worker that dies
//! mid-handler leaves the message to the next one; a route ordered per
//! subject keeps each subject's order at concurrency 8.
//!
//! URLs come from `SWITCHBOARD_NATS_URL`, `SWITCHBOARD_REDIS_URL` and
//! `SWITCHBOARD_AMQP_URL` (local defaults otherwise). A broker that does not
//! answer is skipped with a printed `skipped: ...`, unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`. The in-memory broker always runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use switchboard::worker::{
    Context, HandlerError, Route, StopReason, Summary, Worker, ATTEMPTS_HEADER, ERROR_HEADER,
    ORIGINAL_SUBJECT_HEADER, PERMANENT_HEADER,
};
use switchboard::{AnyBroker, Message};
use switchboard_testkit::unique;

async fn broker_or_skip(kind: &str, env: &str, default: &str, test: &str) -> Option<AnyBroker> {
    let url = switchboard_conformance::broker_url(env, default);
    match tokio::time::timeout(Duration::from_secs(10), switchboard::connect(&url)).await {
        Ok(Ok(broker)) => Some(broker),
        outcome => {
            let why = match outcome {
                Ok(Err(error)) => error.to_string(),
                _ => "connecting timed out".to_string(),
            };
            switchboard_conformance::skip_or_fail(format_args!("{test} on {kind} ({env}): {why}"));
            None
        }
    }
}

/// Starts `worker`, publishes "work" to `<prefix>.jobs.a` and waits until the worker stops.
async fn one_job(worker: Worker, broker: &AnyBroker, prefix: &str) -> Summary {
    let running = worker.start().await.unwrap();
    broker
        .publish(Message::new(format!("{prefix}.jobs.a"), "work").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the worker finishes")
}

async fn retry_then_success(broker: AnyBroker) {
    let prefix = unique("retry");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.jobs.*"), move |ctx: Context| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(ctx.attempt());
                    if ctx.attempt() < 3 {
                        return Err(HandlerError::new("not yet"));
                    }
                    assert_eq!(ctx.payload_str(), Some("work"));
                    Ok(())
                }
            })
            .attempts(4)
            .backoff(Duration::from_millis(10)),
        )
        .max_messages(1);
    let summary = one_job(worker, &broker, &prefix).await;
    assert_eq!(summary.reason, StopReason::MaxMessages);
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(summary.stats.handled, 1);
    assert_eq!(summary.stats.retried, 2);
    assert_eq!(summary.stats.dead_lettered, 0);
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    broker.close().await.unwrap();
}

async fn dead_letter_after_n_attempts(broker: AnyBroker) {
    let prefix = unique("dlq");
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let mut dead = broker
        .subscribe(&format!("{prefix}.dead.>").parse().unwrap())
        .await
        .unwrap();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.jobs.*"), move |_ctx: Context| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("backend down:\nconnection refused") }
            })
            .attempts(3)
            .backoff(Duration::from_millis(10))
            .dead_letter(format!("{prefix}.dead.{{subject}}")),
        )
        .max_messages(1);
    let running = worker.start().await.unwrap();
    let message = Message::new(format!("{prefix}.jobs.resize"), "img-7")
        .unwrap()
        .with_header("trace-id", "t-1")
        .unwrap();
    broker.publish(message).await.unwrap();
    broker.flush().await.unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .expect("a dead letter in time")
        .expect("subscription open")
        .expect("no error");
    let summary = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the worker finishes");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let original = format!("{prefix}.jobs.resize");
    assert_eq!(
        letter.subject().as_str(),
        format!("{prefix}.dead.{original}")
    );
    assert_eq!(&letter.payload()[..], b"img-7");
    let headers = letter.headers();
    assert_eq!(
        headers.get(ORIGINAL_SUBJECT_HEADER),
        Some(original.as_str())
    );
    assert_eq!(headers.get(ATTEMPTS_HEADER), Some("3"));
    assert_eq!(headers.get(PERMANENT_HEADER), Some("false"));
    assert_eq!(
        headers.get(ERROR_HEADER),
        Some("backend down: connection refused")
    );
    assert_eq!(headers.get("trace-id"), Some("t-1"));
    assert_eq!(summary.stats.handled, 1);
    assert_eq!(summary.stats.dead_lettered, 1);
    assert_eq!(summary.stats.retried, 2);
    broker.close().await.unwrap();
}

/// Log lines written while the returned guard lives (on this thread: the
/// test runs a current-thread runtime, so the worker's tasks log here too).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(logs.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || sink.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// Without a dead letter, a failed message is nacked: where the broker
/// redelivers it comes back (`redelivered()`), is handled, and the log says
/// "nacked for redelivery"; elsewhere the log says the broker cannot redeliver.
async fn failure_without_dead_letter_is_nacked(broker: AnyBroker) {
    let (logs, _guard) = capture_logs();
    let redelivery = broker.capabilities().redelivery;
    let prefix = unique("nack");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = seen.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.jobs.*"), move |ctx: Context| {
                calls.lock().unwrap().push(ctx.redelivered());
                let redelivered = ctx.redelivered();
                async move {
                    if redelivered {
                        Ok(())
                    } else {
                        Err(HandlerError::new("first try fails"))
                    }
                }
            })
            .attempts(1)
            .no_dead_letter(),
        )
        .max_messages(if redelivery { 2 } else { 1 });
    let summary = one_job(worker, &broker, &prefix).await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(summary.stats.failed, 1, "{logs}");
    if redelivery {
        assert_eq!(*seen.lock().unwrap(), vec![false, true]);
        assert_eq!(summary.stats.handled, 1);
        assert!(logs.contains("nacked for redelivery"), "{logs}");
        assert!(!logs.contains("cannot redeliver"), "{logs}");
    } else {
        assert_eq!(*seen.lock().unwrap(), vec![false]);
        assert!(logs.contains("cannot redeliver"), "{logs}");
        assert!(!logs.contains("nacked for redelivery"), "{logs}");
    }
    broker.close().await.unwrap();
}

/// Without a dead letter, a message whose error is permanent is rejected, not
/// redelivered (it would fail again without end) and not retried: the next
/// message is the one handled after it, and the log says so.
async fn permanent_failure_is_not_redelivered(broker: AnyBroker) {
    let (logs, _guard) = capture_logs();
    let prefix = unique("perm");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = seen.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.jobs.*"), move |ctx: Context| {
                let payload = ctx.payload_str().unwrap_or_default().to_string();
                calls.lock().unwrap().push(payload.clone());
                async move {
                    if payload == "malformed" {
                        Err(HandlerError::permanent("cannot parse the job"))
                    } else {
                        Ok(())
                    }
                }
            })
            .attempts(3)
            .backoff(Duration::from_millis(10))
            .no_dead_letter(),
        )
        .max_messages(2);
    let running = worker.start().await.unwrap();
    for payload in ["malformed", "fine"] {
        broker
            .publish(Message::new(format!("{prefix}.jobs.a"), payload).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the worker finishes");
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["malformed", "fine"], "{logs}");
    assert_eq!(summary.stats.permanent, 1);
    assert_eq!(summary.stats.failed, 1);
    assert_eq!(summary.stats.handled, 1);
    assert_eq!(summary.stats.retried, 0);
    assert!(logs.contains("rejected without redelivery"), "{logs}");
    assert!(!logs.contains("nacked for redelivery"), "{logs}");
    broker.close().await.unwrap();
}

/// A worker that dies while its handler runs (its connection closes under
/// it) has not acknowledged the message: where the broker redelivers, the
/// next member of the queue group receives it, marked redelivered.
async fn dying_mid_handler_leaves_the_message(broker: AnyBroker, url: String) {
    let capabilities = broker.capabilities();
    if !(capabilities.redelivery && capabilities.queue_groups) {
        eprintln!(
            "skipped: {} neither redelivers nor has queue groups: nothing is left for another worker",
            broker.kind()
        );
        broker.close().await.unwrap();
        return;
    }
    let prefix = unique("crash");
    let group = format!("{prefix}-workers");
    let started = Arc::new(tokio::sync::Notify::new());
    let entered = started.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.jobs.*"), move |_ctx: Context| {
                entered.notify_one();
                // Stuck until the worker goes away.
                std::future::pending::<Result<(), HandlerError>>()
            })
            .group(group.clone())
            .no_timeout(),
        )
        .grace_period(Duration::from_millis(100));
    let running = worker.start().await.unwrap();
    let other = switchboard::connect(&url).await.unwrap();
    other
        .publish(Message::new(format!("{prefix}.jobs.a"), "work").unwrap())
        .await
        .unwrap();
    other.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the handler starts");
    let mut next = other
        .subscribe_group(
            &format!("{prefix}.jobs.*").parse().unwrap(),
            &group.parse().unwrap(),
        )
        .await
        .unwrap();
    // The worker's connection dies under the running handler.
    broker.close().await.unwrap();
    let mut again = tokio::time::timeout(Duration::from_secs(10), next.next())
        .await
        .expect("the next group member receives the message the dead worker held")
        .expect("subscription open")
        .expect("no error");
    assert_eq!(again.payload_str(), Some("work"));
    assert!(again.redelivered());
    again.ack().await.unwrap();
    // The stuck handler holds the route's only slot: stop the worker (its
    // grace period cancels the handler).
    let summary = tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .expect("the worker finishes");
    assert_eq!(summary.stats.handled, 0);
    assert_eq!(summary.stats.unfinished, 1);
    other.close().await.unwrap();
}

/// A route ordered per subject at concurrency 8 handles each subject's
/// messages in the order published (the broker keeps one publisher's order),
/// however long each handler takes.
async fn ordered_per_subject(broker: AnyBroker) {
    const SUBJECTS: usize = 3;
    const EACH: usize = 20;
    let prefix = unique("ordered");
    let seen = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let record = seen.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(format!("{prefix}.orders.*"), move |ctx: Context| {
                let record = record.clone();
                async move {
                    let n: usize = ctx.payload_str().unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(((n * 7) % 5) as u64)).await;
                    let subject = ctx.message().subject().to_string();
                    record.lock().unwrap().push((subject, n));
                    Ok::<_, HandlerError>(())
                }
            })
            .concurrency(8)
            .ordered_per_subject(),
        )
        .max_messages((SUBJECTS * EACH) as u64);
    let running = worker.start().await.unwrap();
    for n in 0..EACH {
        for s in 0..SUBJECTS {
            let message = Message::new(format!("{prefix}.orders.{s}"), n.to_string()).unwrap();
            broker.publish(message).await.unwrap();
        }
    }
    broker.flush().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the worker finishes");
    assert_eq!(summary.stats.handled as usize, SUBJECTS * EACH);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for s in 0..SUBJECTS {
        let subject = format!("{prefix}.orders.{s}");
        let order: Vec<usize> = seen
            .iter()
            .filter(|(on, _)| *on == subject)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, (0..EACH).collect::<Vec<_>>(), "{subject}");
    }
    broker.close().await.unwrap();
}

/// A durable route whose handler is still running when the worker stops
/// hands its message back: the summary says it is requeued (it was "not
/// redeliverable" on NATS and Redis, whose core modes do not redeliver), and
/// the next member of the durable consumer gets it at once, not after the
/// 30 s ack wait (on JetStream the nack went to the stopping worker's own
/// pull request, still open on the server).
async fn a_stopped_durable_route_hands_its_message_back(broker: AnyBroker, url: String) {
    if !broker.capabilities().durable {
        eprintln!("skipped: {} has no durable subscriptions", broker.kind());
        broker.close().await.unwrap();
        return;
    }
    let prefix = unique("handback");
    let pattern: switchboard::Pattern = format!("{prefix}.jobs.*").parse().unwrap();
    let name = format!("{}-workers", prefix.replace('.', "-"));
    let durable = switchboard::Durable::new(&name).unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let entered = started.clone();
    let worker = Worker::new(broker.clone())
        .route(
            Route::new(pattern.as_str(), move |_ctx: Context| {
                entered.notify_one();
                std::future::pending::<Result<(), HandlerError>>()
            })
            .durable(name.clone())
            .no_timeout(),
        )
        .grace_period(Duration::from_millis(300));
    let running = worker.start().await.unwrap();
    broker
        .publish(Message::new(format!("{prefix}.jobs.a"), "work").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the handler starts");
    let summary = tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .expect("the worker stops");
    assert_eq!(summary.unfinished.len(), 1, "{:?}", summary.unfinished);
    assert!(summary.unfinished[0].started);
    assert!(summary.unfinished[0].requeued, "{:?}", summary.unfinished);
    let other = if broker.kind() == "memory" {
        broker.clone()
    } else {
        switchboard::connect(&url).await.unwrap()
    };
    let mut next = other.subscribe_durable(&pattern, &durable).await.unwrap();
    let mut again = tokio::time::timeout(Duration::from_secs(10), next.next())
        .await
        .expect("the message handed back comes again before the ack wait is over")
        .expect("subscription open")
        .expect("no error");
    assert_eq!(again.payload_str(), Some("work"));
    again.ack().await.unwrap();
    next.close().await.unwrap();
    other.remove_durable(&pattern, &durable).await.unwrap();
    other.close().await.unwrap();
}

macro_rules! on_broker {
    ($module:ident, $kind:literal, $env:literal, $default:literal) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn retry_then_success() {
                let test = concat!(stringify!($module), "::retry_then_success");
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::retry_then_success(broker).await;
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn dead_letter_after_n_attempts() {
                let test = concat!(stringify!($module), "::dead_letter_after_n_attempts");
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::dead_letter_after_n_attempts(broker).await;
                }
            }

            // Current-thread, so that the worker's tasks log to the captured output.
            #[tokio::test]
            async fn failure_without_dead_letter_is_nacked() {
                let test = concat!(
                    stringify!($module),
                    "::failure_without_dead_letter_is_nacked"
                );
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::failure_without_dead_letter_is_nacked(broker).await;
                }
            }

            // Current-thread, so that the worker's tasks log to the captured output.
            #[tokio::test]
            async fn permanent_failure_is_not_redelivered() {
                let test = concat!(
                    stringify!($module),
                    "::permanent_failure_is_not_redelivered"
                );
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::permanent_failure_is_not_redelivered(broker).await;
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_stopped_durable_route_hands_its_message_back() {
                let test = concat!(
                    stringify!($module),
                    "::a_stopped_durable_route_hands_its_message_back"
                );
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    let url = switchboard_conformance::broker_url($env, $default);
                    super::a_stopped_durable_route_hands_its_message_back(broker, url).await;
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn ordered_per_subject() {
                let test = concat!(stringify!($module), "::ordered_per_subject");
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::ordered_per_subject(broker).await;
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn dying_mid_handler_leaves_the_message() {
                let test = concat!(
                    stringify!($module),
                    "::dying_mid_handler_leaves_the_message"
                );
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    let url = switchboard_conformance::broker_url($env, $default);
                    super::dying_mid_handler_leaves_the_message(broker, url).await;
                }
            }
        }
    };
}

on_broker!(memory, "memory", "SWITCHBOARD_MEMORY_URL", "memory://");
on_broker!(
    nats,
    "nats",
    "SWITCHBOARD_NATS_URL",
    "nats://127.0.0.1:4222"
);
on_broker!(
    redis,
    "redis",
    "SWITCHBOARD_REDIS_URL",
    "redis://127.0.0.1:6379"
);
on_broker!(
    amqp,
    "amqp",
    "SWITCHBOARD_AMQP_URL",
    "amqp://guest:guest@127.0.0.1:5672/%2f"
);
