//! The AsyncAPI document of a worker's routes validates against the AsyncAPI
//! 3.0.0 JSON Schema (vendored in `tests/asyncapi/`, see its README), and says
//! what the routes do.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use serde_json::Value;

/// The validator of the vendored AsyncAPI 3.0.0 schema, compiled once.
fn asyncapi_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asyncapi/3.0.0.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::draft7::new(&schema).expect("the AsyncAPI schema compiles")
    })
}

#[test]
fn the_schema_compiles_and_refuses_nonsense() {
    let validator = asyncapi_validator();
    assert!(!validator.is_valid(&serde_json::json!({ "asyncapi": "3.0.0" })));
    assert!(validator.is_valid(
        &serde_json::json!({ "asyncapi": "3.0.0", "info": { "title": "t", "version": "1" } })
    ));
}

use std::time::Duration;

use switchboard_core::MemoryBroker;
use switchboard_worker::asyncapi::AsyncApi;
use switchboard_worker::{Context, HandlerError, HandlerExt, Route, Schema, Worker};

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read by serde
struct Alert {
    robot: String,
}

async fn nothing(_ctx: Context) -> Result<(), HandlerError> {
    Ok(())
}

/// Every local `$ref` in `document` points at something in it.
fn assert_references_resolve(document: &Value, at: &Value) {
    match at {
        Value::Object(object) => {
            for (key, value) in object {
                match value {
                    Value::String(target) if key == "$ref" => {
                        let pointer = target.strip_prefix('#').expect("a local reference");
                        assert!(
                            document.pointer(pointer).is_some(),
                            "{target} points at nothing"
                        );
                    }
                    other => assert_references_resolve(document, other),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| assert_references_resolve(document, item)),
        _ => {}
    }
}

/// `document` as JSON, checked against the AsyncAPI 3.0.0 schema and for
/// dangling references.
fn checked(document: &switchboard_worker::asyncapi::Document) -> Value {
    let json = serde_json::to_value(document).unwrap();
    let validator = asyncapi_validator();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
    assert_references_resolve(&json, &json);
    json
}

fn schema_with_references() -> Schema {
    Schema::new(
        "alert",
        serde_json::json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "https://example.invalid/alert.json",
            "type": "object",
            "required": ["robot"],
            "properties": {
                "robot": { "$ref": "#/definitions/robot" },
                "seen": { "type": "array", "items": { "$ref": "#/definitions/robot" } }
            },
            "definitions": { "robot": { "type": "string", "minLength": 1 } }
        }),
    )
    .unwrap()
}

#[test]
fn the_document_of_a_worker_validates_and_says_what_its_routes_do() {
    let worker = Worker::new(MemoryBroker::new())
        .route(
            Route::json::<Alert>("alerts.>", |_alert, _ctx| async {
                Ok::<_, HandlerError>(())
            })
            .group("pagers")
            .describe("Pages Sarah Connor.")
            .publishes_to("audit.{subject}"),
        )
        .route(Route::new("jobs.*.done", nothing).schema(schema_with_references()))
        .route(Route::new("some_event", nothing).no_dead_letter())
        .route(Route::custom("raw.>", nothing.catch_panic()))
        .route(Route::new("audit.>", nothing).dead_letter("dead.audit"));
    let document = AsyncApi::new("Sarah Connor's pager", "1.2.0")
        .description("Reactions to robots.")
        .server_url("nats://pager:s3cret@nats.example.com:4222")
        .unwrap()
        .document(worker.routes());
    let json = checked(&document);
    let text = json.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("pager:"),
        "{text}"
    );
    assert_eq!(json["info"]["title"], "Sarah Connor's pager");
    assert_eq!(
        json["servers"]["broker"],
        serde_json::json!({ "host": "nats.example.com:4222", "protocol": "nats" })
    );

    let channels = json["channels"].as_object().unwrap();
    let mut keys: Vec<&str> = channels.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "alerts.rest",
            "audit.alerts.rest",
            "audit.rest",
            "dead.audit",
            "dlq.alerts.rest",
            "dlq.jobs.token2.done",
            "jobs.token2.done",
            "raw.rest",
            "some_event"
        ]
    );
    let jobs = &channels["jobs.token2.done"];
    assert_eq!(jobs["address"], "jobs.{token2}.done");
    assert_eq!(jobs["x-switchboard-pattern"], "jobs.*.done");
    assert!(jobs["parameters"]["token2"]["description"].is_string());
    assert_eq!(channels["dlq.alerts.rest"]["address"], "dlq.alerts.{rest}");

    // The typed route's message: its codec and type.
    let alerts = &channels["alerts.rest"]["messages"]["Alert"];
    assert_eq!(alerts["contentType"], "application/json");
    assert_eq!(alerts["title"], "asyncapi_document::Alert");
    // The schema route's payload, its references made absolute.
    let payload = &json["components"]["schemas"]["alert"];
    assert_eq!(
        payload["properties"]["robot"]["$ref"],
        "#/components/schemas/alert/definitions/robot"
    );
    assert!(payload.get("$id").is_none());
    // Dead letters: the received message plus the switchboard headers.
    let letter = &channels["dlq.jobs.token2.done"]["messages"]["alert.dead_letter"];
    assert_eq!(letter["payload"]["$ref"], "#/components/schemas/alert");
    assert_eq!(
        letter["headers"]["$ref"],
        "#/components/schemas/switchboardDeadLetterHeaders"
    );

    let operations = json["operations"].as_object().unwrap();
    let mut keys: Vec<&str> = operations.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dead_letter_dead.audit",
            "dead_letter_dlq.alerts.rest",
            "dead_letter_dlq.jobs.token2.done",
            "receive_alerts.rest",
            "receive_audit.rest",
            "receive_jobs.token2.done",
            "receive_raw.rest",
            "receive_some_event",
            "send_audit.alerts.rest"
        ]
    );
    let receive = &operations["receive_alerts.rest"];
    assert_eq!(receive["action"], "receive");
    assert_eq!(receive["x-switchboard-group"], "pagers");
    assert_eq!(receive["description"], "Pages Sarah Connor.");
    assert_eq!(
        receive["messages"][0]["$ref"],
        "#/channels/alerts.rest/messages/Alert"
    );
    assert_eq!(operations["send_audit.alerts.rest"]["action"], "send");
    assert!(operations["receive_some_event"].get("messages").is_none());
}

#[test]
fn routes_sharing_a_pattern_share_its_channel() {
    let worker = Worker::new(MemoryBroker::new())
        .on("alerts.>", nothing)
        .route(Route::new("alerts.>", nothing).group("pagers"))
        .route(
            Route::new("alerts.>", nothing)
                .timeout(Duration::from_secs(1))
                .publishes_to("audit.{subject}"),
        );
    let json = checked(&AsyncApi::new("t", "1").document(worker.routes()));
    assert_eq!(json["channels"]["alerts.rest"]["address"], "alerts.{rest}");
    for key in [
        "receive_alerts.rest",
        "receive_alerts.rest_2",
        "receive_alerts.rest_3",
        "dead_letter_dlq.alerts.rest",
        "dead_letter_dlq.alerts.rest_2",
        "dead_letter_dlq.alerts.rest_3",
    ] {
        assert!(json["operations"].get(key).is_some(), "{key}: {json:#}");
    }
    assert!(json.get("servers").is_none());
}

#[test]
fn every_broker_url_makes_a_valid_server() {
    let worker = Worker::new(MemoryBroker::new()).on("a", nothing);
    for (url, host, protocol) in [
        ("nats://127.0.0.1:4222", "127.0.0.1:4222", "nats"),
        (
            "tls://nats.example.com:4222",
            "nats.example.com:4222",
            "nats",
        ),
        ("redis://:pw@127.0.0.1:6379/0", "127.0.0.1:6379", "redis"),
        ("rediss://cache.example.com", "cache.example.com", "redis"),
        (
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "127.0.0.1:5672",
            "amqp",
        ),
        (
            "amqps://mq.example.com:5671/prod",
            "mq.example.com:5671",
            "amqps",
        ),
        ("mqtt://127.0.0.1:1883", "127.0.0.1:1883", "mqtt"),
    ] {
        let json = checked(
            &AsyncApi::new("t", "1")
                .server_url(url)
                .unwrap()
                .document(worker.routes()),
        );
        let server = &json["servers"]["broker"];
        assert_eq!(
            (server["host"].as_str(), server["protocol"].as_str()),
            (Some(host), Some(protocol)),
            "{url}"
        );
        assert!(
            !json.to_string().contains("pw@") && !json.to_string().contains("guest"),
            "{url}"
        );
    }
    let cluster = checked(
        &AsyncApi::new("t", "1")
            .server_url("nats://a:4222,nats://b:4222")
            .unwrap()
            .document(worker.routes()),
    );
    assert_eq!(cluster["servers"]["broker-2"]["host"], "b:4222");
    let memory = checked(
        &AsyncApi::new("t", "1")
            .server_url("memory://")
            .unwrap()
            .document(worker.routes()),
    );
    assert!(memory.get("servers").is_none());
    let error = AsyncApi::new("t", "1")
        .server_url("nats://user:hunter2@")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("empty host") && !error.contains("hunter2"),
        "{error}"
    );
}

#[cfg(feature = "schemars")]
#[test]
fn a_schema_from_a_type_is_published_with_its_definitions() {
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Page {
        to: String,
        robot: Robot,
        seen: Vec<Robot>,
    }
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Robot {
        model: String,
    }
    let worker = Worker::new(MemoryBroker::new()).route(
        Route::json::<Page>("pages", |_page, _ctx| async { Ok::<_, HandlerError>(()) })
            .schema_of::<Page>(),
    );
    let json = checked(&AsyncApi::new("t", "1").document(worker.routes()));
    let page = &json["components"]["schemas"]["Page"];
    assert_eq!(
        page["properties"]["robot"]["$ref"],
        "#/components/schemas/Page/definitions/Robot"
    );
    assert_eq!(
        json["channels"]["pages"]["messages"]["Page"]["payload"]["$ref"],
        "#/components/schemas/Page"
    );
}
