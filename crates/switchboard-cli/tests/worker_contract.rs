//! The worker's contract from the command line: `switchboard worker
//! --asyncapi` prints an AsyncAPI 3.0 document that validates against the
//! AsyncAPI schema (vendored with the worker crate's tests), without
//! connecting and without credentials; a route's `schema` is checked at
//! start-up (`--check` too) and dead-letters payloads that do not match, on
//! NATS, Redis and RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::time::Duration;

use harness::{
    assert_one_error_line, broker_url, send, switchboard, Listener, Process, Stdout, TempDir,
    PATIENCE,
};
use serde_json::Value;

/// The vendored AsyncAPI 3.0.0 schema, compiled.
fn asyncapi_validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../switchboard-worker/tests/asyncapi/3.0.0.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

const SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["robot", "severity"],
  "properties": {
    "robot": { "type": "string", "minLength": 1 },
    "severity": { "enum": ["low", "high"] }
  }
}"#;

/// A reactions file with a schema route, in `dir`.
fn config(dir: &TempDir, on: &str) -> String {
    dir.write("robot.schema.json", SCHEMA);
    dir.write(
        "reactions.toml",
        &format!(
            r#"
[asyncapi]
title = "Pager"
version = "2.0.0"

[[route]]
on = "{on}"
schema = "robot.schema.json"
log = true

[[route]]
on = "some_event"
exec = ["sh", "-c", "curl -H 'token: hunter2' https://pager.invalid"]
dead_letter = false
"#
        ),
    )
}

fn asyncapi(config: &str, format: &[&str]) -> (String, String) {
    let output = switchboard()
        // Nothing listens there: --asyncapi must not connect.
        .env("BROKER_URL", "amqp://guest:s3cret@127.0.0.1:1/prod")
        .args(["worker", "--config", config, "--asyncapi"])
        .args(format)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

#[test]
fn asyncapi_prints_a_valid_document_in_yaml_and_json() {
    let dir = TempDir::new("asyncapi");
    let config = config(&dir, "robots.>");
    let (yaml, stderr) = asyncapi(&config, &[]);
    assert!(stderr.is_empty(), "{stderr}");
    let (json, _) = asyncapi(&config, &["--format", "json"]);
    let from_yaml: Value = serde_norway::from_str(&yaml).unwrap();
    let from_json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(from_yaml, from_json, "YAML and JSON say the same");
    assert!(yaml.starts_with("asyncapi: 3.0.0\ninfo:\n"), "{yaml}");

    let validator = asyncapi_validator();
    let errors: Vec<String> = validator
        .iter_errors(&from_json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{json}");

    for secret in ["s3cret", "guest", "hunter2"] {
        assert!(!json.contains(secret), "{secret} leaked: {json}");
    }
    assert_eq!(from_json["info"]["title"], "Pager");
    assert_eq!(from_json["info"]["version"], "2.0.0");
    assert_eq!(
        from_json["servers"]["broker"],
        serde_json::json!({
            "host": "127.0.0.1:1", "protocol": "amqp", "protocolVersion": "0-9-1", "pathname": "/prod"
        })
    );
    let robots = &from_json["channels"]["robots.rest"];
    assert_eq!(robots["address"], "robots.{rest}");
    assert_eq!(
        robots["messages"]["robot"]["payload"]["$ref"],
        "#/components/schemas/robot"
    );
    assert_eq!(
        from_json["components"]["schemas"]["robot"]["required"],
        serde_json::json!(["robot", "severity"])
    );
    assert_eq!(
        from_json["operations"]["receive_robots.rest"]["description"],
        "Prints the message on stdout."
    );
    assert_eq!(
        from_json["operations"]["receive_some_event"]["description"],
        "Runs `sh` with the payload on stdin."
    );
    assert!(from_json["operations"]
        .get("dead_letter_dlq.robots.rest")
        .is_some());
    assert!(
        from_json["operations"]
            .get("dead_letter_dlq.some_event")
            .is_none(),
        "no dead letter on a route without one"
    );
}

#[test]
fn the_example_config_has_a_valid_contract() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/reactions.toml");
    let (json, _) = asyncapi(example, &["--format", "json"]);
    let document: Value = serde_json::from_str(&json).unwrap();
    assert!(asyncapi_validator().is_valid(&document), "{json}");
    assert_eq!(document["info"]["title"], "Sarah Connor's pager");
}

#[test]
fn bad_schemas_are_one_line_errors_before_connecting() {
    let dir = TempDir::new("badschema");
    dir.write("typo.schema.json", r#"{ "type": "strin" }"#);
    dir.write("broken.schema.json", "{ \"type\": ");
    let cases = [
        ("missing.schema.json", "reactions.toml:4: schema file "),
        ("typo.schema.json", "is not a valid JSON Schema: at /type: "),
        ("broken.schema.json", "is not JSON: EOF while parsing"),
    ];
    for (schema, expected) in cases {
        let config = dir.write(
            "reactions.toml",
            &format!("[[route]]\non = \"a\"\nlog = true\nschema = \"{schema}\"\n"),
        );
        for mode in [&["--check"][..], &["--asyncapi"], &[]] {
            let output = switchboard()
                .args([
                    "--broker",
                    "nats://127.0.0.1:1",
                    "worker",
                    "--config",
                    &config,
                ])
                .args(mode)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(1), "{schema} {mode:?}");
            assert_one_error_line(&String::from_utf8_lossy(&output.stderr), expected);
        }
    }
}

/// A worker with a schema route logs the payload that matches and
/// dead-letters the one that does not, with why.
fn schema_dead_letters(kind: &str) {
    let Some(url) = broker_url(kind, "schema_dead_letters") else {
        return;
    };
    let prefix = switchboard_testkit::unique("schema");
    let dir = TempDir::new("schemaroute");
    let config = config(&dir, &format!("{prefix}.robots.>"));
    let dead = Listener::start(
        &url,
        &["--on", &format!("dlq.{prefix}.>"), "--format", "json"],
    )
    .unwrap();
    let worker = Process::start(
        &[
            "--broker", &url, "worker", "--config", &config, "--count", "2",
        ],
        Stdout::Read,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    let subject = format!("{prefix}.robots.t800");
    send(
        &url,
        &["--on", &subject, r#"{"robot":"T-800","severity":"high"}"#],
        b"",
    );
    send(
        &url,
        &[
            "--on",
            &subject,
            r#"{"robot":"T-1000","severity":"apocalyptic"}"#,
        ],
        b"",
    );
    let (status, stdout, stderr) = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(r#""robot":"T-800""#), "{stdout}");
    assert!(!stdout.contains("T-1000"), "{stdout}");
    assert!(stderr.contains("1 not decodable"), "{stderr}");
    let letter: Value = serde_json::from_str(&dead.lines(1)[0]).unwrap();
    assert_eq!(letter["subject"], format!("dlq.{subject}"));
    assert_eq!(letter["headers"]["switchboard-permanent"], "true");
    assert_eq!(letter["headers"]["switchboard-attempts"], "1");
    let error = letter["headers"]["switchboard-error"].as_str().unwrap();
    assert!(
        error.starts_with("the payload does not match schema \"robot\": at /severity: "),
        "{error}"
    );
}

#[test]
fn schema_dead_letters_on_nats() {
    schema_dead_letters("nats");
}

#[test]
fn schema_dead_letters_on_redis() {
    schema_dead_letters("redis");
}

#[test]
fn schema_dead_letters_on_amqp() {
    schema_dead_letters("amqp");
}
