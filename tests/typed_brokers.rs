//! Typed routes on every real broker, through `switchboard::connect`: JSON,
//! MessagePack and CBOR payloads published with their `content-type` reach a
//! typed handler decoded, and what it publishes typed arrives; payloads that
//! do not decode (not JSON, the wrong shape, an unknown content type) or do
//! not match the route's schema are dead-lettered at once with why, never
//! retried; a typed handler answers requests where the broker has
//! request/reply.
//!
//! URLs come from `SWITCHBOARD_NATS_URL`, `SWITCHBOARD_REDIS_URL` and
//! `SWITCHBOARD_AMQP_URL` (local defaults otherwise). A broker that does not
//! answer is skipped with a printed `skipped: ...`, unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`. The in-memory broker always runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard::worker::{
    Cbor, HandlerError, MessagePack, Route, Schema, Summary, Worker, ATTEMPTS_HEADER, ERROR_HEADER,
    PERMANENT_HEADER,
};
use switchboard::{AnyBroker, Message, PublisherExt, SubscriberExt, Subscription};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Alert {
    robot: String,
    severity: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Page {
    to: String,
    robot: String,
}

fn t800() -> Alert {
    Alert {
        robot: "T-800".into(),
        severity: 9,
    }
}

async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .expect("no error")
        .into_message()
}

async fn finish(running: switchboard::worker::Running) -> Summary {
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the worker finishes")
}

async fn typed_round_trip(broker: AnyBroker) {
    let prefix = switchboard_testkit::unique("typed");
    let pager = format!("{prefix}.pager");
    let mut pages = broker.subscribe_to(&pager).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let to = pager.clone();
    let running = Worker::new(broker.clone())
        .route(
            Route::json::<Alert>(format!("{prefix}.alerts.>"), move |alert, ctx| {
                let (recorded, to) = (recorded.clone(), to.clone());
                async move {
                    let codec = ctx.headers().get("content-type").map(str::to_string);
                    let page = Page {
                        to: "Sarah Connor".into(),
                        robot: alert.robot.clone(),
                    };
                    ctx.publish(Message::json(to.as_str(), &page)?).await?;
                    recorded.lock().unwrap().push((alert, codec));
                    Ok::<_, HandlerError>(())
                }
            })
            .publishes_to(pager.as_str()),
        )
        .max_messages(3)
        .start()
        .await
        .unwrap();
    let subject = format!("{prefix}.alerts.robot");
    broker.publish_json(&subject, &t800()).await.unwrap();
    broker
        .publish_encoded(&subject, &t800(), MessagePack)
        .await
        .unwrap();
    broker
        .publish_encoded(&subject, &t800(), Cbor)
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 3, "{summary}");
    let mut codecs: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(alert, codec)| {
            assert_eq!(*alert, t800());
            codec.clone().unwrap_or_default()
        })
        .collect();
    codecs.sort();
    assert_eq!(
        codecs,
        [
            "application/cbor",
            "application/json",
            "application/msgpack"
        ]
    );
    for _ in 0..3 {
        let page = next(&mut pages).await;
        assert_eq!(
            page.decode_json::<Page>().unwrap(),
            Page {
                to: "Sarah Connor".into(),
                robot: "T-800".into()
            }
        );
    }
}

async fn undecodable_payloads_are_dead_lettered_at_once(broker: AnyBroker) {
    let prefix = switchboard_testkit::unique("undecodable");
    let mut dead = broker
        .subscribe_to(&format!("dlq.{prefix}.>"))
        .await
        .unwrap();
    let schema = Schema::new(
        "alert",
        serde_json::json!({
            "type": "object",
            "properties": { "severity": { "type": "integer", "maximum": 10 } }
        }),
    )
    .unwrap();
    let running = Worker::new(broker.clone())
        .route(
            Route::json::<Alert>(format!("{prefix}.typed.*"), |_alert, _ctx| async {
                Ok::<_, HandlerError>(())
            })
            .attempts(5)
            .backoff(Duration::from_millis(1)),
        )
        .route(
            Route::json::<Alert>(format!("{prefix}.checked.*"), |_alert, _ctx| async {
                Ok::<_, HandlerError>(())
            })
            .schema(schema)
            .attempts(5),
        )
        .max_messages(5)
        .start()
        .await
        .unwrap();
    let on = |tail: &str| format!("{prefix}.{tail}");
    broker
        .publish_to(&on("typed.text"), "bad robot detected")
        .await
        .unwrap();
    broker
        .publish_json(
            &on("typed.shape"),
            &serde_json::json!({ "robot": "T-1000" }),
        )
        .await
        .unwrap();
    broker
        .publish(
            Message::json(on("typed.protobuf"), &t800())
                .unwrap()
                .with_header("content-type", "application/x-protobuf")
                .unwrap(),
        )
        .await
        .unwrap();
    broker
        .publish_encoded(
            &on("checked.severe"),
            &Alert {
                robot: "T-X".into(),
                severity: 11,
            },
            Cbor,
        )
        .await
        .unwrap();
    broker
        .publish_json(&on("checked.fine"), &t800())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let summary = finish(running).await;
    assert_eq!(summary.stats.succeeded(), 1, "{summary}");
    assert_eq!(summary.stats.decode_failed, 4, "{summary}");
    assert_eq!(summary.stats.retried, 0, "{summary}");
    let mut letters = BTreeMap::new();
    for _ in 0..4 {
        let letter = next(&mut dead).await;
        assert_eq!(letter.headers().get(PERMANENT_HEADER), Some("true"));
        assert_eq!(letter.headers().get(ATTEMPTS_HEADER), Some("1"));
        letters.insert(letter.subject().to_string(), letter);
    }
    let expected = [
        ("typed.text", "expected value at line 1 column 1"),
        ("typed.shape", "missing field `severity`"),
        (
            "typed.protobuf",
            "content-type \"application/x-protobuf\" is not a format this route reads",
        ),
        (
            "checked.severe",
            "the payload does not match schema \"alert\": at /severity: 11 is greater than the maximum of 10",
        ),
    ];
    for (tail, why) in expected {
        let error = letters[&format!("dlq.{prefix}.{tail}")]
            .headers()
            .get(ERROR_HEADER)
            .unwrap();
        assert!(error.contains(why), "{tail}: {error}");
    }
    // The dead letter keeps the payload and its content type as they came.
    let severe = &letters[&format!("dlq.{prefix}.checked.severe")];
    assert_eq!(
        severe.headers().get("content-type"),
        Some("application/cbor")
    );
    assert_eq!(severe.decode::<Alert>(Cbor).unwrap().severity, 11);
}

async fn typed_reply(broker: AnyBroker) {
    if !broker.capabilities().request_reply {
        // Request/reply comes to this adapter with its own issue; the typed
        // reply then works unchanged (it goes through `Delivery::reply`).
        eprintln!(
            "note: {} has no request/reply yet; typed replies not exercised",
            broker.kind()
        );
        return;
    }
    let prefix = switchboard_testkit::unique("reply");
    let running = Worker::new(broker.clone())
        .on_json::<Alert>(format!("{prefix}.ask"), |alert, _ctx| async move {
            Ok::<_, HandlerError>(Some(Page {
                to: "Sarah Connor".into(),
                robot: alert.robot,
            }))
        })
        .max_messages(2)
        .start()
        .await
        .unwrap();
    for (request, codec) in [
        (
            Message::json(format!("{prefix}.ask"), &t800()).unwrap(),
            "application/json",
        ),
        (
            Message::encode(format!("{prefix}.ask"), &t800(), MessagePack).unwrap(),
            "application/msgpack",
        ),
    ] {
        let reply = broker
            .request(request, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply.headers().get("content-type"), Some(codec));
        let page: Page = if codec == "application/json" {
            reply.decode_json().unwrap()
        } else {
            reply.decode(MessagePack).unwrap()
        };
        assert_eq!(page.robot, "T-800");
    }
    finish(running).await;
}

macro_rules! on_broker {
    ($module:ident, $kind:literal, $env:literal, $default:literal) => {
        mod $module {
            use super::broker_or_skip;

            #[tokio::test]
            async fn typed_round_trip() {
                let test = concat!(stringify!($module), "::typed_round_trip");
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::typed_round_trip(broker).await;
                }
            }

            #[tokio::test]
            async fn undecodable_payloads_are_dead_lettered_at_once() {
                let test = concat!(
                    stringify!($module),
                    "::undecodable_payloads_are_dead_lettered_at_once"
                );
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::undecodable_payloads_are_dead_lettered_at_once(broker).await;
                }
            }

            #[tokio::test]
            async fn typed_reply() {
                let test = concat!(stringify!($module), "::typed_reply");
                if let Some(broker) = broker_or_skip($kind, $env, $default, test).await {
                    super::typed_reply(broker).await;
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
