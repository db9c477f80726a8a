//! The typed reaction worker (`examples/typed_alert.rs`) unit-tested with
//! `switchboard::testing`: the README's "how to test your reactions".
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[allow(dead_code)] // the example's `main`
#[path = "../examples/typed_alert.rs"]
mod example;

use std::time::Duration;

use example::{Alert, Page, Severity, PAGER};
use switchboard::testing::TestBroker;
use switchboard::worker::{ERROR_HEADER, PERMANENT_HEADER};
use switchboard::{Broker, Message, PublisherExt};

fn t800(severity: Severity) -> Alert {
    Alert {
        robot: "T-800".into(),
        severity,
    }
}

#[tokio::test]
async fn a_sighting_pages_sarah_connor() {
    let broker = TestBroker::new();
    let worker = broker
        .start(example::reactions(broker.clone()))
        .await
        .unwrap();
    broker
        .publish_json("alerts.robot", &t800(Severity::High))
        .await
        .unwrap();
    worker.idle().await;
    let page = broker
        .published_on(PAGER)
        .with_header("severity", "high")
        .one();
    assert_eq!(
        page.decode_json::<Page>().unwrap(),
        Page {
            to: "Sarah Connor".into(),
            text: "T-800 sighted on alerts.robot".into()
        }
    );
}

#[tokio::test]
async fn what_is_not_an_alert_is_dead_lettered_at_once() {
    let broker = TestBroker::new();
    let worker = broker
        .start(example::reactions(broker.clone()))
        .await
        .unwrap();
    broker
        .publish_to("alerts.robot", "bad robot detected")
        .await
        .unwrap();
    // Decodes, but the schema of `Alert` wants a robot's name.
    broker
        .publish_json(
            "alerts.nameless",
            &serde_json::json!({ "robot": "", "severity": "low" }),
        )
        .await
        .unwrap();
    worker.idle().await;
    broker.published_on(PAGER).none();
    let letter = broker
        .published_on("dlq.alerts.robot")
        .with_header(PERMANENT_HEADER, "true")
        .one();
    assert!(letter
        .headers()
        .get(ERROR_HEADER)
        .unwrap()
        .contains("the payload does not decode into a value to check against schema \"Alert\""));
    let letter = broker.published_on("dlq.alerts.nameless").one();
    assert!(letter
        .headers()
        .get(ERROR_HEADER)
        .unwrap()
        .starts_with("the payload does not match schema \"Alert\": at /robot: "));
    let stats = worker.stats();
    assert_eq!((stats.decode_failed, stats.retried), (2, 0), "{stats}");
}

#[tokio::test]
async fn asking_gets_a_typed_answer() {
    let broker = TestBroker::new();
    let _worker = broker
        .start(example::reactions(broker.clone()))
        .await
        .unwrap();
    let ask = |severity| Message::json("ask.safe", &t800(severity)).unwrap();
    let safe = broker
        .request(ask(Severity::Low), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(safe.decode_json::<bool>().unwrap());
    let safe = broker
        .request(ask(Severity::High), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!safe.decode_json::<bool>().unwrap());
}
