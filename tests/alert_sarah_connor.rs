//! The seed's reaction worker (`examples/alert_sarah_connor.rs`) unit-tested
//! with `switchboard::testing`: its real routes run on a recording in-memory
//! broker, in milliseconds and without a server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[allow(dead_code)] // the example's `main`
#[path = "../examples/alert_sarah_connor.rs"]
mod example;

use switchboard::testing::TestBroker;
use switchboard::worker::{ATTEMPTS_HEADER, ERROR_HEADER, PERMANENT_HEADER};
use switchboard::{Message, Publisher, PublisherExt};

// The clock is paused, so the retries' backoff takes no time.
#[tokio::test(start_paused = true)]
async fn alerts_are_handled_retried_or_dead_lettered() {
    let broker = TestBroker::new();
    let worker = broker
        .start(example::reactions(broker.clone()))
        .await
        .unwrap();
    let alert = Message::new("alerts.robot", "bad robot detected")
        .unwrap()
        .with_header("severity", "high")
        .unwrap();
    broker.publish(alert).await.unwrap();
    broker
        .publish_to("some_event", "Terminator just dropped in our space-time")
        .await
        .unwrap();
    broker
        .publish_to("alerts.pager", "Sarah Connor unreachable")
        .await
        .unwrap();
    broker
        .publish_to("alerts.binary", vec![0xff, 0xfe])
        .await
        .unwrap();
    worker.idle().await;

    let stats = worker.stats();
    assert_eq!(stats.succeeded(), 2, "{stats}");
    assert_eq!(stats.dead_lettered, 2, "{stats}");
    assert_eq!(stats.retried, 2, "the unreachable alert is tried 3 times");
    // Unreachable: temporary, so retried, then dead-lettered.
    let letter = broker
        .published_on("dlq.alerts.pager")
        .with_header(PERMANENT_HEADER, "false")
        .one();
    assert_eq!(letter.headers().get(ATTEMPTS_HEADER), Some("3"));
    assert!(letter
        .headers()
        .get(ERROR_HEADER)
        .unwrap()
        .contains("Sarah Connor cannot be reached (attempt 3)"));
    // Not text: permanent, so dead-lettered at once.
    broker
        .published_on("dlq.alerts.binary")
        .with_header(PERMANENT_HEADER, "true")
        .with_header(ATTEMPTS_HEADER, "1")
        .one();
    broker.published_on("dlq.alerts.robot").none();
    broker.published_on("dlq.some_event").none();
    assert!(worker.stop().await.unfinished.is_empty());
}
