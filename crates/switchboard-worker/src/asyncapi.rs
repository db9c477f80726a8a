//! The contract you can publish: an [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document of a worker's routes, built from the same routes it runs.
//!
//! ```
//! use switchboard_core::MemoryBroker;
//! use switchboard_worker::{asyncapi::AsyncApi, Context, HandlerError, Worker};
//!
//! #[derive(serde::Deserialize)]
//! struct Alert { robot: String }
//!
//! let worker = Worker::new(MemoryBroker::new())
//!     .on_json::<Alert>("alerts.>", |_alert, _ctx| async { Ok::<_, HandlerError>(()) })
//!     .on("some_event", |_ctx: Context| async { Ok::<_, HandlerError>(()) });
//! let document = AsyncApi::new("Sarah Connor's pager", "1.0.0")
//!     .server_url("nats://user:secret@nats.example.com:4222")?
//!     .document(worker.routes());
//! let json = serde_json::to_value(&document)?;
//! assert_eq!(json["servers"]["broker"]["host"], "nats.example.com:4222"); // no credentials
//! assert_eq!(json["channels"]["alerts.rest"]["address"], "alerts.{rest}");
//! assert_eq!(json["operations"]["receive_alerts.rest"]["action"], "receive");
//! assert_eq!(json["operations"]["dead_letter_dlq.alerts.rest"]["action"], "send");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the document says
//!
//! - **servers**: the broker, from its URL ([`AsyncApi::server_url`]): the
//!   protocol from the scheme (`nats`, `redis`, `amqp`/`amqps`,
//!   `mqtt`/`secure-mqtt`), the host and port, and the path (an AMQP vhost,
//!   a Redis database). User name, password and query keys are left out. The
//!   in-memory broker (`memory://`) lives inside the process, so it is no
//!   server.
//! - **channels**: one per subject pattern a route receives, publishes to or
//!   dead-letters to. The channel's `address` is the pattern with each
//!   wildcard as a parameter: `*` at (1-based) token position *n* becomes
//!   `{tokenN}` (any one token), `>` becomes `{rest}` (one or more
//!   dot-separated tokens), each described in the channel's `parameters`; the
//!   pattern itself is kept in `x-switchboard-pattern`. A publish or dead-letter
//!   template's `{subject}` is the route's pattern (`dlq.{subject}` on
//!   `alerts.>` is `dlq.alerts.{rest}`). Channel keys are the address with
//!   the braces dropped (`alerts.rest`), made unique if needed. (A literal
//!   token containing `{` would read as a parameter: avoid braces in subjects.)
//! - **operations**: per route, `receive_<channel>` on its pattern (with
//!   `x-switchboard-group` for a queue group and the route's
//!   [description](crate::Route::describe)), `send_<channel>` for each target
//!   declared with [`Route::publishes_to`](crate::Route::publishes_to), and
//!   `dead_letter_<channel>` when the route dead-letters.
//! - **messages**: where a route declares its payload — a typed route's
//!   codec (`contentType`) and type (`title`), a [schema](crate::Route::schema)
//!   (`payload`, in `components.schemas`). A dead letter is the received
//!   message with the `switchboard-*` headers the dead-letter layer adds,
//!   described as a headers schema. What a handler publishes is its own
//!   business, so `send` operations name no message.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use switchboard_core::{Codec, Json, Pattern, Token};

use crate::schema::component_name;
use crate::{
    Route, Via, ATTEMPTS_HEADER, ERROR_HEADER, ORIGINAL_SUBJECT_HEADER, PERMANENT_HEADER,
    ROUTE_HEADER,
};

/// The AsyncAPI version of the documents made here.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The component name of the dead letters' headers schema.
const DEAD_LETTER_HEADERS: &str = "switchboardDeadLetterHeaders";

/// The server key of the broker.
const SERVER: &str = "broker";

/// What goes around the routes in an AsyncAPI document: title, version,
/// description and the broker. Make the document with [`AsyncApi::document`].
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    servers: Vec<Value>,
}

/// A broker URL that cannot be a server of the document.
#[derive(Debug, thiserror::Error)]
#[error("cannot describe broker URL {url} as an AsyncAPI server: {reason}")]
#[non_exhaustive]
pub struct ServerError {
    /// The URL, credentials redacted.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AsyncApi {
    /// A document titled `title`, of the API's `version` (yours, not AsyncAPI's).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        AsyncApi {
            title: title.into(),
            version: version.into(),
            description: None,
            servers: Vec::new(),
        }
    }

    /// Sets the description (CommonMark).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Describes the broker at `url` (or a comma-separated list of URLs, one
    /// cluster) as the document's server — see [the module docs](self) for
    /// what is kept. A `memory://` URL adds no server.
    pub fn server_url(mut self, url: &str) -> Result<Self, ServerError> {
        self.servers = url
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(server)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        Ok(self)
    }

    /// The document of `routes` (e.g. [`Worker::routes`](crate::Worker::routes)).
    pub fn document(&self, routes: &[Route]) -> Document {
        let mut builder = Builder::default();
        for (index, route) in routes.iter().enumerate() {
            builder.route(index, route);
        }
        let mut info = Map::new();
        info.insert("title".into(), Value::from(self.title.as_str()));
        info.insert("version".into(), Value::from(self.version.as_str()));
        if let Some(description) = &self.description {
            info.insert("description".into(), Value::from(description.as_str()));
        }
        let servers = self
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let key = match index {
                    0 => SERVER.to_string(),
                    n => format!("{SERVER}-{}", n + 1),
                };
                (key, server.clone())
            })
            .collect();
        let components = if builder.schemas.is_empty() {
            None
        } else {
            Some(json!({ "schemas": builder.schemas }))
        };
        Document {
            asyncapi: ASYNCAPI_VERSION,
            info: Value::Object(info),
            servers,
            default_content_type: Json::CONTENT_TYPE,
            channels: builder.channels,
            operations: builder.operations,
            components,
        }
    }
}

/// An AsyncAPI 3.0 document: serialize it with `serde_json` or a YAML
/// serializer (its fields come out in the specification's order).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Document {
    /// The AsyncAPI version, [`ASYNCAPI_VERSION`].
    pub asyncapi: &'static str,
    /// Title, version and description.
    pub info: Value,
    /// The broker, if described.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, Value>,
    /// JSON: what a payload without `content-type` is read as.
    pub default_content_type: &'static str,
    /// The channels, by key.
    pub channels: BTreeMap<String, Value>,
    /// The operations, by key.
    pub operations: BTreeMap<String, Value>,
    /// The payload schemas and the dead letters' headers schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Value>,
}

/// The server for one broker URL; `None` for the in-memory broker.
fn server(url: &str) -> Result<Option<Value>, ServerError> {
    let fail = |reason: String| ServerError {
        url: switchboard_core::redact_url(url),
        reason,
    };
    let parsed = url::Url::parse(url)
        .map_err(|error| fail(format!("{error}; give a URL such as nats://127.0.0.1:4222")))?;
    let scheme = parsed.scheme().to_ascii_lowercase();
    let (protocol, version) = match scheme.as_str() {
        "memory" => return Ok(None),
        "nats" | "tls" => ("nats", None),
        "redis" | "rediss" => ("redis", None),
        "amqp" => ("amqp", Some("0-9-1")),
        "amqps" => ("amqps", Some("0-9-1")),
        "mqtt" => ("mqtt", None),
        "mqtts" => ("secure-mqtt", None),
        other => (other, None),
    };
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| fail("it names no host".to_string()))?;
    let host = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let mut server = Map::new();
    server.insert("host".into(), Value::from(host));
    server.insert("protocol".into(), Value::from(protocol));
    if let Some(version) = version {
        server.insert("protocolVersion".into(), Value::from(version));
    }
    let path = parsed.path();
    if !path.is_empty() && path != "/" {
        server.insert("pathname".into(), Value::from(path));
    }
    if matches!(scheme.as_str(), "tls" | "rediss" | "amqps" | "mqtts") {
        server.insert("description".into(), Value::from("over TLS"));
    }
    Ok(Some(Value::Object(server)))
}

/// A channel address made from a pattern: the address and its parameters.
struct Address {
    address: String,
    parameters: Map<String, Value>,
}

/// The address of the subjects `pattern` matches.
fn pattern_address(pattern: &Pattern) -> Address {
    let mut parameters = Map::new();
    let tokens: Vec<String> = pattern
        .tokens()
        .iter()
        .enumerate()
        .map(|(index, token)| match token {
            Token::Literal(literal) => literal.to_string(),
            Token::Any => {
                let name = format!("token{}", index + 1);
                parameters.insert(
                    name.clone(),
                    json!({ "description": format!("any one token (`*` at position {} of the pattern)", index + 1) }),
                );
                format!("{{{name}}}")
            }
            Token::Rest => {
                parameters.insert(
                    "rest".into(),
                    json!({ "description": "one or more dot-separated tokens (`>` in the pattern)" }),
                );
                "{rest}".to_string()
            }
        })
        .collect();
    Address {
        address: tokens.join("."),
        parameters,
    }
}

/// The channel key for `address`: braces dropped, other characters a key
/// cannot hold turned into `_`.
fn channel_key(address: &str) -> String {
    component_name(&address.replace(['{', '}'], ""))
}

/// The headers a dead letter adds, as a schema.
fn dead_letter_headers() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "type": "object",
        "required": [ORIGINAL_SUBJECT_HEADER, ATTEMPTS_HEADER, ERROR_HEADER, PERMANENT_HEADER, ROUTE_HEADER],
        "properties": {
            ORIGINAL_SUBJECT_HEADER: text("The subject the message was published to."),
            ATTEMPTS_HEADER: { "type": "string", "pattern": "^[0-9]+$", "description": "How many attempts were made." },
            ERROR_HEADER: text("The last error, as one line (a payload that did not decode or match its schema says so here)."),
            PERMANENT_HEADER: { "type": "string", "enum": ["true", "false"], "description": "`true` when the last error was permanent (not retried; handling the message again as it is would fail again)." },
            ROUTE_HEADER: text("The pattern of the route that gave up."),
        }
    })
}

/// Collects channels, operations and schemas route by route.
#[derive(Default)]
struct Builder {
    channels: BTreeMap<String, Value>,
    /// Channel key by address.
    keys: BTreeMap<String, String>,
    operations: BTreeMap<String, Value>,
    schemas: BTreeMap<String, Value>,
}

impl Builder {
    fn route(&mut self, index: usize, route: &Route) {
        // A route whose pattern is invalid is refused by `Worker::start`; its
        // channel would say nothing true.
        let Ok(pattern) = Pattern::new(route.pattern()) else {
            return;
        };
        let input = pattern_address(&pattern);
        let message = self.message(route);
        let channel = self.channel(&input, route.pattern(), message.clone());
        let mut receive = Map::new();
        receive.insert("action".into(), Value::from("receive"));
        receive.insert(
            "channel".into(),
            reference(&format!("#/channels/{channel}")),
        );
        receive.insert(
            "summary".into(),
            Value::from(format!("Route {} on `{}`", index + 1, route.pattern())),
        );
        if let Some(description) = &route.contract.description {
            receive.insert("description".into(), Value::from(description.as_str()));
        }
        if let Some((name, _)) = &message {
            receive.insert(
                "messages".into(),
                json!([reference(&format!("#/channels/{channel}/messages/{name}"))]),
            );
        }
        if let Some(group) = &route.group {
            receive.insert("x-switchboard-group".into(), Value::from(group.as_str()));
        }
        self.operation(&format!("receive_{channel}"), receive);
        for (via, template) in route.targets() {
            let address = Address {
                address: template.replace("{subject}", &input.address),
                parameters: if template.contains("{subject}") {
                    input.parameters.clone()
                } else {
                    Map::new()
                },
            };
            let pattern_text = template.replace("{subject}", route.pattern());
            let (prefix, letter) = match via {
                Via::DeadLetter => ("dead_letter", Some(self.dead_letter(message.as_ref()))),
                _ => ("send", None),
            };
            let target = self.channel(&address, &pattern_text, letter.clone());
            let mut send = Map::new();
            send.insert("action".into(), Value::from("send"));
            send.insert("channel".into(), reference(&format!("#/channels/{target}")));
            let summary = match via {
                Via::DeadLetter => format!(
                    "Route {} on `{}` dead-letters what it finally fails to `{template}`",
                    index + 1,
                    route.pattern()
                ),
                _ => format!(
                    "Route {} on `{}` publishes to `{template}`",
                    index + 1,
                    route.pattern()
                ),
            };
            send.insert("summary".into(), Value::from(summary));
            if let Some((name, _)) = &letter {
                send.insert(
                    "messages".into(),
                    json!([reference(&format!("#/channels/{target}/messages/{name}"))]),
                );
            }
            self.operation(&format!("{prefix}_{target}"), send);
        }
    }

    /// The message a route receives, if it declares anything about it: its
    /// key and the message object.
    fn message(&mut self, route: &Route) -> Option<(String, Value)> {
        let contract = &route.contract;
        let content_type = contract.content_type()?;
        let mut message = Map::new();
        message.insert("contentType".into(), Value::from(content_type));
        let short_type = contract
            .type_name
            .map(|name| name.rsplit("::").next().unwrap_or(name).to_string());
        let name = match (&contract.schema, &short_type) {
            (Some(Ok(schema)), _) => {
                let key = self.schema(schema.name(), schema.value());
                message.insert(
                    "payload".into(),
                    reference(&format!("#/components/schemas/{key}")),
                );
                key
            }
            (_, Some(short)) => component_name(short),
            _ => "payload".to_string(),
        };
        message.insert("name".into(), Value::from(name.as_str()));
        if let Some(type_name) = contract.type_name {
            message.insert("title".into(), Value::from(type_name));
        }
        Some((name, Value::Object(message)))
    }

    /// The dead letter of a route that receives `message`.
    fn dead_letter(&mut self, message: Option<&(String, Value)>) -> (String, Value) {
        self.schemas
            .entry(DEAD_LETTER_HEADERS.to_string())
            .or_insert_with(dead_letter_headers);
        let (name, mut letter) = match message {
            Some((name, Value::Object(body))) => (format!("{name}.dead_letter"), body.clone()),
            _ => ("dead_letter".to_string(), Map::new()),
        };
        letter.insert("name".into(), Value::from(name.as_str()));
        letter.insert(
            "summary".into(),
            Value::from(
                "A message a route gave up on: the original payload and headers, plus why in the switchboard-* headers",
            ),
        );
        letter.insert(
            "headers".into(),
            reference(&format!("#/components/schemas/{DEAD_LETTER_HEADERS}")),
        );
        (name, Value::Object(letter))
    }

    /// Adds the channel at `address` (once) with `message` among its
    /// messages; returns its key.
    fn channel(
        &mut self,
        address: &Address,
        pattern: &str,
        message: Option<(String, Value)>,
    ) -> String {
        let key = match self.keys.get(&address.address) {
            Some(key) => key.clone(),
            None => {
                let key = unique_key(&self.channels, &channel_key(&address.address));
                let mut channel = Map::new();
                channel.insert("address".into(), Value::from(address.address.as_str()));
                if !address.parameters.is_empty() {
                    channel.insert(
                        "parameters".into(),
                        Value::Object(address.parameters.clone()),
                    );
                }
                channel.insert("x-switchboard-pattern".into(), Value::from(pattern));
                self.channels.insert(key.clone(), Value::Object(channel));
                self.keys.insert(address.address.clone(), key.clone());
                key
            }
        };
        if let (Some((name, body)), Some(Value::Object(channel))) =
            (message, self.channels.get_mut(&key))
        {
            if let Value::Object(messages) = channel
                .entry("messages")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                messages.entry(name).or_insert(body);
            }
        }
        key
    }

    /// Adds an operation under `key`, made unique.
    fn operation(&mut self, key: &str, operation: Map<String, Value>) {
        let key = unique_key(&self.operations, &component_name(key));
        self.operations.insert(key, Value::Object(operation));
    }

    /// Adds schema `value` named `name` to the components (once; another
    /// schema of the same name gets a suffix); returns its key. Its own
    /// references (`#/definitions/...`) are rewritten to point into it.
    fn schema(&mut self, name: &str, value: &Value) -> String {
        let name = component_name(name);
        let mut candidate = name.clone();
        let mut n = 1;
        loop {
            let mut embedded = value.clone();
            if let Value::Object(object) = &mut embedded {
                // Its references are made absolute below, so its own base goes.
                object.remove("$id");
            }
            rebase_references(&mut embedded, &format!("#/components/schemas/{candidate}"));
            match self.schemas.get(&candidate) {
                None => {
                    self.schemas.insert(candidate.clone(), embedded);
                    return candidate;
                }
                Some(existing) if *existing == embedded => return candidate,
                Some(_) => {
                    n += 1;
                    candidate = format!("{name}_{n}");
                }
            }
        }
    }
}

/// `{"$ref": target}`.
fn reference(target: &str) -> Value {
    json!({ "$ref": target })
}

/// `key`, or `key_2`, `key_3`… if taken in `map`.
fn unique_key(map: &BTreeMap<String, Value>, key: &str) -> String {
    if !map.contains_key(key) {
        return key.to_string();
    }
    (2..)
        .map(|n| format!("{key}_{n}"))
        .find(|candidate| !map.contains_key(candidate))
        .unwrap_or_else(|| key.to_string())
}

/// Rewrites every local `$ref` (`#...`) in `schema` to start at `base`.
fn rebase_references(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value {
                    Value::String(target) if key == "$ref" && target.starts_with('#') => {
                        *target = format!("{base}{}", &target[1..]);
                    }
                    other => rebase_references(other, base),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rebase_references(item, base)),
        _ => {}
    }
}

impl Route {
    /// Describes what the route does, for the AsyncAPI document (its receive
    /// operation's `description`, CommonMark).
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.contract.description = Some(description.into());
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wildcards_become_parameters() {
        let address = pattern_address(&Pattern::new("jobs.*.done.>").unwrap());
        assert_eq!(address.address, "jobs.{token2}.done.{rest}");
        assert_eq!(
            address.parameters.keys().collect::<Vec<_>>(),
            ["rest", "token2"]
        );
        assert_eq!(channel_key(&address.address), "jobs.token2.done.rest");
    }

    #[test]
    fn servers_keep_no_credentials() {
        let amqp = server("amqp://guest:secret@rabbit.local:5672/%2f?heartbeat=10")
            .unwrap()
            .unwrap();
        assert_eq!(
            amqp,
            json!({ "host": "rabbit.local:5672", "protocol": "amqp", "protocolVersion": "0-9-1", "pathname": "/%2f" })
        );
        assert!(server("memory://").unwrap().is_none());
        let error = server("nats://user:hunter2@").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn references_are_rebased() {
        let mut schema = json!({ "$ref": "#/definitions/A", "definitions": { "A": { "items": [{ "$ref": "#" }] } } });
        rebase_references(&mut schema, "#/components/schemas/x");
        assert_eq!(schema["$ref"], "#/components/schemas/x/definitions/A");
        assert_eq!(
            schema["definitions"]["A"]["items"][0]["$ref"],
            "#/components/schemas/x"
        );
    }
}
