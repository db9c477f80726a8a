//! Typed routes, codecs, replies and schemas on the in-memory broker (the
//! real brokers run the same in the root package's `tests/typed_brokers.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_core::{
    Broker, MemoryBroker, Message, Publisher, PublisherExt, Subscriber, Subscription,
};
use switchboard_worker::{
    Context, HandlerError, Route, Schema, SchemaError, Summary, Worker, ATTEMPTS_HEADER,
    ERROR_HEADER, PERMANENT_HEADER,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Alert {
    robot: String,
    severity: u8,
}

fn t800() -> Alert {
    Alert {
        robot: "T-800".into(),
        severity: 9,
    }
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .expect("no error")
        .into_message()
}

async fn finish(running: switchboard_worker::Running) -> Summary {
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the worker finishes")
}

/// A worker whose one JSON route records what its handler got.
fn recording_worker(broker: &MemoryBroker, seen: Arc<Mutex<Vec<(Alert, String)>>>) -> Worker {
    Worker::new(broker.clone()).route(
        Route::json::<Alert>("alerts.>", move |alert, ctx| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((alert, ctx.subject().to_string()));
                Ok::<_, HandlerError>(())
            }
        })
        .attempts(5)
        .backoff(Duration::from_millis(1)),
    )
}

#[tokio::test]
async fn a_json_route_gets_the_value_and_the_context() {
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let running = recording_worker(&broker, seen.clone())
        .max_messages(1)
        .start()
        .await
        .unwrap();
    broker.publish_json("alerts.robot", &t800()).await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        [(t800(), "alerts.robot".to_string())]
    );
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_dead_lettered_at_once() {
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut dlq = broker.subscribe(&"dlq.>".parse().unwrap()).await.unwrap();
    let running = recording_worker(&broker, seen.clone())
        .max_messages(2)
        .start()
        .await
        .unwrap();
    // Valid JSON of the wrong shape, then not JSON at all.
    broker
        .publish_json("alerts.robot", &serde_json::json!({ "robot": "T-1000" }))
        .await
        .unwrap();
    broker.publish_to("alerts.cpu", "CPU at 98%").await.unwrap();
    let summary = finish(running).await;
    assert!(seen.lock().unwrap().is_empty(), "the handler never runs");
    assert_eq!(summary.stats.decode_failed, 2);
    assert_eq!(summary.stats.permanent, 2);
    assert_eq!(summary.stats.retried, 0, "decode failures are not retried");
    assert_eq!(summary.stats.dead_lettered, 2);
    for (subject, why) in [
        ("dlq.alerts.robot", "missing field `severity`"),
        ("dlq.alerts.cpu", "expected value at line 1 column 1"),
    ] {
        let letter = next(&mut dlq).await;
        assert_eq!(letter.subject().as_str(), subject);
        let error = letter.headers().get(ERROR_HEADER).unwrap();
        assert!(
            error.contains("the payload does not decode into typed::Alert") && error.contains(why),
            "{error}"
        );
        assert_eq!(letter.headers().get(PERMANENT_HEADER), Some("true"));
        assert_eq!(letter.headers().get(ATTEMPTS_HEADER), Some("1"));
    }
}

#[tokio::test]
async fn an_unknown_content_type_is_named_in_the_dead_letter() {
    let broker = MemoryBroker::new();
    let mut dlq = broker.subscribe(&"dlq.>".parse().unwrap()).await.unwrap();
    let running = recording_worker(&broker, Arc::default())
        .max_messages(1)
        .start()
        .await
        .unwrap();
    let message = Message::json("alerts.robot", &t800())
        .unwrap()
        .with_header("content-type", "application/x-protobuf")
        .unwrap();
    broker.publish(message).await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.decode_failed, 1);
    let letter = next(&mut dlq).await;
    let error = letter.headers().get(ERROR_HEADER).unwrap();
    assert!(
        error.contains("content-type \"application/x-protobuf\" is not a format this route reads (application/json"),
        "{error}"
    );
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn the_content_type_picks_the_codec() {
    use switchboard_worker::MessagePack;
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let running = recording_worker(&broker, seen.clone())
        .max_messages(2)
        .start()
        .await
        .unwrap();
    broker
        .publish_encoded("alerts.a", &t800(), MessagePack)
        .await
        .unwrap();
    // The same bytes without the header are read as JSON, the route's default.
    let bytes = Message::encode("x", &t800(), MessagePack).unwrap();
    broker
        .publish(Message::new("alerts.b", bytes.payload().clone()).unwrap())
        .await
        .unwrap();
    let summary = finish(running).await;
    assert_eq!(*seen.lock().unwrap(), [(t800(), "alerts.a".to_string())]);
    assert_eq!(summary.stats.decode_failed, 1);
}

#[cfg(feature = "cbor")]
#[tokio::test]
async fn a_typed_route_reads_its_codec_without_a_header() {
    use switchboard_worker::Cbor;
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let running = Worker::new(broker.clone())
        .on_typed::<Cbor, Alert>("alerts.>", move |alert, _ctx| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(alert);
                Ok::<_, HandlerError>(())
            }
        })
        .max_messages(2)
        .start()
        .await
        .unwrap();
    let cbor = Message::encode("x", &t800(), Cbor).unwrap();
    broker
        .publish(Message::new("alerts.a", cbor.payload().clone()).unwrap())
        .await
        .unwrap();
    // A JSON message says so, and is read as JSON.
    broker.publish_json("alerts.b", &t800()).await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 2, "{summary}");
    assert_eq!(*seen.lock().unwrap(), [t800(), t800()]);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ack {
    paged: String,
}

fn replying_worker(broker: &MemoryBroker) -> Worker {
    Worker::new(broker.clone()).on_json::<Alert>("alerts.>", |alert, _ctx| async move {
        Ok::<_, HandlerError>(Some(Ack {
            paged: format!("Sarah Connor, about {}", alert.robot),
        }))
    })
}

#[tokio::test]
async fn a_typed_handler_answers_a_request_in_its_codec() {
    let broker = MemoryBroker::new();
    let running = replying_worker(&broker)
        .max_messages(2)
        .start()
        .await
        .unwrap();
    let reply = broker
        .request(
            Message::json("alerts.robot", &t800()).unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.headers().get("content-type"),
        Some("application/json")
    );
    assert_eq!(
        reply.decode_json::<Ack>().unwrap(),
        Ack {
            paged: "Sarah Connor, about T-800".into()
        }
    );
    // An event (nobody waits) gets no reply, and is handled all the same.
    broker.publish_json("alerts.robot", &t800()).await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 2);
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn a_request_in_messagepack_gets_a_messagepack_reply() {
    use switchboard_worker::MessagePack;
    let broker = MemoryBroker::new();
    let running = replying_worker(&broker)
        .max_messages(1)
        .start()
        .await
        .unwrap();
    let reply = broker
        .request(
            Message::encode("alerts.robot", &t800(), MessagePack).unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.headers().get("content-type"),
        Some("application/msgpack")
    );
    assert_eq!(
        reply.decode::<Ack>(MessagePack).unwrap().paged,
        "Sarah Connor, about T-800"
    );
    finish(running).await;
}

fn alert_schema() -> Schema {
    Schema::new(
        "alert",
        serde_json::json!({
            "type": "object",
            "required": ["robot", "severity"],
            "properties": {
                "robot": { "type": "string" },
                "severity": { "type": "integer", "minimum": 0, "maximum": 10 }
            }
        }),
    )
    .unwrap()
}

#[tokio::test]
async fn a_route_schema_dead_letters_what_does_not_match() {
    let broker = MemoryBroker::new();
    let mut dlq = broker.subscribe(&"dlq.>".parse().unwrap()).await.unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let seen = handled.clone();
    let running = Worker::new(broker.clone())
        .route(
            Route::new("alerts.>", move |ctx: Context| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(ctx.subject().to_string());
                    Ok::<_, HandlerError>(())
                }
            })
            .schema(alert_schema())
            .attempts(3)
            .backoff(Duration::from_millis(1)),
        )
        .max_messages(3)
        .start()
        .await
        .unwrap();
    broker.publish_json("alerts.ok", &t800()).await.unwrap();
    broker
        .publish_json(
            "alerts.bad",
            &serde_json::json!({ "robot": "T-1000", "severity": 11 }),
        )
        .await
        .unwrap();
    broker.publish_to("alerts.text", "not JSON").await.unwrap();
    let summary = finish(running).await;
    assert_eq!(*handled.lock().unwrap(), ["alerts.ok"]);
    assert_eq!(summary.stats.decode_failed, 2);
    assert_eq!(summary.stats.retried, 0);
    let letter = next(&mut dlq).await;
    assert_eq!(letter.subject().as_str(), "dlq.alerts.bad");
    assert_eq!(
        letter.headers().get(ERROR_HEADER),
        Some("the payload does not match schema \"alert\": at /severity: 11 is greater than the maximum of 10")
    );
    let letter = next(&mut dlq).await;
    assert_eq!(letter.subject().as_str(), "dlq.alerts.text");
    let error = letter.headers().get(ERROR_HEADER).unwrap();
    assert!(
        error.contains("does not decode into a value to check against schema \"alert\""),
        "{error}"
    );
}

#[cfg(feature = "cbor")]
#[tokio::test]
async fn a_schema_checks_payloads_of_every_codec() {
    use switchboard_worker::Cbor;
    let broker = MemoryBroker::new();
    let running = Worker::new(broker.clone())
        .route(
            Route::new("alerts.>", |_ctx: Context| async {
                Ok::<_, HandlerError>(())
            })
            .schema(alert_schema()),
        )
        .max_messages(2)
        .start()
        .await
        .unwrap();
    broker
        .publish_encoded("alerts.a", &t800(), Cbor)
        .await
        .unwrap();
    broker
        .publish_encoded(
            "alerts.b",
            &serde_json::json!({ "robot": 800, "severity": 1 }),
            Cbor,
        )
        .await
        .unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 1, "{summary}");
    assert_eq!(summary.stats.decode_failed, 1);
}

#[tokio::test]
async fn a_custom_route_with_a_schema_rejects_without_a_dead_letter() {
    let broker = MemoryBroker::new();
    let running = Worker::new(broker.clone())
        .route(
            Route::custom("alerts.>", |_ctx: Context| async {
                Ok::<_, HandlerError>(())
            })
            .schema(alert_schema()),
        )
        .max_messages(1)
        .start()
        .await
        .unwrap();
    broker.publish_to("alerts.a", "{}").await.unwrap();
    let summary = finish(running).await;
    assert_eq!(
        (
            summary.stats.failed,
            summary.stats.dead_lettered,
            summary.stats.decode_failed
        ),
        (1, 0, 1)
    );
}

#[cfg(feature = "schemars")]
#[tokio::test]
async fn a_schema_from_a_type_checks_its_constraints() {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // read by serde
    struct Pager {
        #[schemars(length(min = 1))]
        to: String,
        shift: Shift,
    }
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    enum Shift {
        Day,
        Night,
    }
    let broker = MemoryBroker::new();
    let running = Worker::new(broker.clone())
        .route(
            Route::json::<Pager>("pages", |_page, _ctx| async { Ok::<_, HandlerError>(()) })
                .schema_of::<Pager>(),
        )
        .max_messages(3)
        .start()
        .await
        .unwrap();
    for page in [
        serde_json::json!({ "to": "Sarah", "shift": "Night" }),
        serde_json::json!({ "to": "", "shift": "Night" }), // decodes, but too short
        serde_json::json!({ "to": "John", "shift": "Dusk" }),
    ] {
        broker.publish_json("pages", &page).await.unwrap();
    }
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 1, "{summary}");
    assert_eq!(summary.stats.decode_failed, 2);
}

#[test]
fn bad_schemas_are_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("sb-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let missing = dir.join("missing.schema.json");
    let cases: Vec<(std::path::PathBuf, String)> = vec![
        (
            missing.clone(),
            format!(
                "schema file {}: cannot read it: No such file",
                missing.display()
            ),
        ),
        (
            write("broken.json", "{ \"type\": \n"),
            format!(
                "schema file {} is not JSON: EOF while parsing",
                dir.join("broken.json").display()
            ),
        ),
        (
            write("typo.json", r#"{ "type": "strin" }"#),
            format!(
                "schema {:?} is not a valid JSON Schema: at /type: ",
                dir.join("typo.json").display().to_string()
            ),
        ),
        (
            write("elsewhere.json", r#"{ "$ref": "other.schema.json" }"#),
            format!(
                "schema {:?} is not a valid JSON Schema: ",
                dir.join("elsewhere.json").display().to_string()
            ),
        ),
    ];
    for (path, expected) in cases {
        let error: SchemaError = Schema::from_file(&path).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with(&expected), "{message:?}");
        assert!(!message.contains('\n'), "{message:?}");
    }
    let good = write(
        "alert.schema.json",
        &serde_json::to_string(alert_schema().value()).unwrap(),
    );
    assert_eq!(Schema::from_file(&good).unwrap().name(), "alert");
    std::fs::remove_dir_all(&dir).unwrap();
}
