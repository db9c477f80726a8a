//! OpenTelemetry export (feature `otel`; run with
//! `cargo test -p switchboard-cli --features otel --test otel`): spans reach
//! an OTLP/HTTP receiver started by the test, and their ids agree with the
//! `traceparent` headers that travel with the messages.
//!
//! - `switchboard worker` (NATS, Redis, RabbitMQ): a message with a known
//!   `traceparent` through a `publish` route is exported as a span of that
//!   trace, whose parent is the message's parent id and whose span id is the
//!   parent id of the forwarded message's `traceparent`; `switchboard send`
//!   (with export on, it starts a trace) is exported as the root span, the
//!   worker's span its child.
//! - The library on the in-memory broker: the same, with the SDK installed in
//!   the test process and a [`PublishSpan`] starting the trace.
//!
//! A broker that does not answer is skipped unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use harness::{broker_url, unique, wait_output, Process, Stdout, TempDir, PATIENCE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use switchboard::worker::{Context, HandlerError, PublishSpan, Worker};
use switchboard::{Broker, MemoryBroker, Message, Publisher, Subscriber, Subscription};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// OTLP span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
const KIND_PRODUCER: i32 = 4;
const KIND_CONSUMER: i32 = 5;

/// One span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// Status code: 0 unset, 1 ok, 2 error.
    status: i32,
}

/// An OTLP/HTTP receiver on a loopback port: `POST /v1/traces` with an
/// `ExportTraceServiceRequest` in protobuf, as any collector takes it.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(spans.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            endpoint,
            spans,
            _runtime: runtime,
        }
    }

    /// Waits (bounded) for the first span `matching`.
    fn span(&self, what: &str, matching: impl Fn(&Exported) -> bool) -> Exported {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| matching(s)) {
                return span.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no exported span {what} within {PATIENCE:?}; got {:#?}",
                self.spans.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Exported>>>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                },
            )
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(Exported {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    status: span.status.map(|status| status.code).unwrap_or(0),
                });
            }
        }
    }
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The fields of a `traceparent`: trace id, parent id.
fn ids(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent:?}");
    (fields[1].to_string(), fields[2].to_string())
}

fn traceparent_of(message: &Message) -> &str {
    message
        .headers()
        .get("traceparent")
        .unwrap_or_else(|| panic!("no traceparent on {:?}", message.subject()))
}

async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .expect("no error")
        .into_message()
}

/// The environment that turns export on, to `receiver`, quickly.
fn otel_env<'a>(receiver: &'a Receiver, service: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_SERVICE_NAME", service),
        // Batches leave every 100ms instead of 5s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

fn worker_spans_match_headers(kind: &str) {
    let Some(url) = broker_url(kind, "worker_spans_match_headers") else {
        return;
    };
    let receiver = Receiver::start();
    let prefix = unique("otel");
    let route = format!("{prefix}.in.>");
    let dir = TempDir::new("otel");
    let config = dir.write(
        "worker.toml",
        &format!("[[route]]\non = \"{route}\"\npublish = \"{prefix}.out.{{subject}}\"\n"),
    );
    let worker = Process::start_with_env(
        &["--broker", &url, "worker", "--config", &config],
        &otel_env(&receiver, "otel-test-worker"),
        Stdout::Read,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = runtime.block_on(switchboard::connect(&url)).unwrap();
    let mut out = runtime
        .block_on(broker.subscribe(&format!("{prefix}.out.>").parse().unwrap()))
        .unwrap();
    let mut sent = runtime
        .block_on(broker.subscribe(&format!("{prefix}.in.>").parse().unwrap()))
        .unwrap();

    // A message with a known traceparent.
    let forwarded = runtime.block_on(async {
        let message = Message::new(format!("{prefix}.in.known"), "hello")
            .unwrap()
            .with_header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
            .unwrap();
        broker.publish(message).await.unwrap();
        broker.flush().await.unwrap();
        next(&mut out).await
    });
    let (trace, child_parent) = ids(traceparent_of(&forwarded));
    assert_eq!(trace, TRACE_ID);
    let span = receiver.span("of the worker in the known trace", |span| {
        span.trace_id == TRACE_ID
    });
    assert_eq!(span.name, format!("process {route}"));
    assert_eq!(span.kind, KIND_CONSUMER);
    assert_eq!(span.service, "otel-test-worker");
    assert_eq!(span.parent_span_id, PARENT_ID, "the message's parent id");
    assert_eq!(
        span.span_id, child_parent,
        "the exported span is the parent named in the forwarded message's traceparent"
    );
    assert_eq!(span.status, 0, "{span:?}");

    // `switchboard send` with export on starts the trace.
    let mut command = harness::switchboard();
    command
        .args(["--broker", &url, "send", "--on"])
        .arg(format!("{prefix}.in.sent"))
        .arg("from the CLI")
        .envs(otel_env(&receiver, "otel-test-send"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = wait_output(command.spawn().unwrap(), PATIENCE);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (as_sent, forwarded) = runtime.block_on(async {
        let mut as_sent = next(&mut sent).await;
        if as_sent.subject().as_str().ends_with(".known") {
            as_sent = next(&mut sent).await;
        }
        (as_sent, next(&mut out).await)
    });
    let (trace, send_id) = ids(traceparent_of(&as_sent));
    let (forwarded_trace, worker_id) = ids(traceparent_of(&forwarded));
    assert_eq!(forwarded_trace, trace);
    let send_span = receiver.span("of send", |span| span.service == "otel-test-send");
    assert_eq!(send_span.kind, KIND_PRODUCER);
    assert_eq!(send_span.name, format!("send {prefix}.in.sent"));
    assert_eq!(send_span.trace_id, trace);
    assert_eq!(send_span.span_id, send_id);
    assert_eq!(send_span.parent_span_id, "", "send starts the trace");
    let worker_span = receiver.span("of the worker in the trace send started", |span| {
        span.trace_id == trace && span.kind == KIND_CONSUMER
    });
    assert_eq!(worker_span.parent_span_id, send_id);
    assert_eq!(worker_span.span_id, worker_id);

    runtime.block_on(async {
        let _ = broker.close().await;
    });
    worker.signal("INT");
    let (status, _, stderr) = worker.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("OpenTelemetry"), "{stderr}");
}

#[test]
fn worker_spans_match_headers_nats() {
    worker_spans_match_headers("nats");
}

#[test]
fn worker_spans_match_headers_redis() {
    worker_spans_match_headers("redis");
}

#[test]
fn worker_spans_match_headers_amqp() {
    worker_spans_match_headers("amqp");
}

/// The library on the in-memory broker, the SDK installed here: a trace
/// started with [`PublishSpan`] continues through the worker's handler.
#[test]
fn library_spans_match_headers_in_memory() {
    use opentelemetry_sdk::trace::SdkTracerProvider;

    let receiver = Receiver::start();
    let exporter = {
        use opentelemetry_otlp::WithExportConfig as _;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", receiver.endpoint))
            .build()
            .unwrap()
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("otel-test-library")
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (as_sent, forwarded, handler_saw) = runtime.block_on(async {
        let broker = MemoryBroker::new();
        let mut out = broker.subscribe(&"out.>".parse().unwrap()).await.unwrap();
        let mut sent = broker.subscribe(&"in.>".parse().unwrap()).await.unwrap();
        let running = Worker::new(broker.clone())
            .on("in.>", |ctx: Context| async move {
                let seen = ctx.trace().map(|trace| trace.span_id()).unwrap_or_default();
                ctx.publish(Message::new("out.x", seen)?).await?;
                Ok::<_, HandlerError>(())
            })
            .start()
            .await
            .unwrap();
        let mut alert = Message::new("in.alert", "disk full").unwrap();
        let span = PublishSpan::start(&mut alert).unwrap();
        let published = broker.publish(alert).await;
        span.end(&published);
        published.unwrap();
        let as_sent = next(&mut sent).await;
        let forwarded = next(&mut out).await;
        tokio::time::timeout(PATIENCE, running.shutdown())
            .await
            .unwrap();
        let handler_saw = forwarded.payload_str().unwrap().to_string();
        (as_sent, forwarded, handler_saw)
    });
    // Sends what is buffered now (a blocking call, outside the runtime).
    provider.force_flush().unwrap();

    let (trace, send_id) = ids(traceparent_of(&as_sent));
    let (forwarded_trace, worker_id) = ids(traceparent_of(&forwarded));
    assert_eq!(forwarded_trace, trace);
    assert_eq!(
        handler_saw, worker_id,
        "ctx.trace() names the exported span"
    );
    let send_span = receiver.span("of the publish", |span| span.kind == KIND_PRODUCER);
    assert_eq!(send_span.service, "otel-test-library");
    assert_eq!(send_span.name, "send in.alert");
    assert_eq!(
        (send_span.trace_id.as_str(), send_span.span_id.as_str()),
        (trace.as_str(), send_id.as_str())
    );
    assert_eq!(send_span.parent_span_id, "");
    let worker_span = receiver.span("of the handler", |span| span.kind == KIND_CONSUMER);
    assert_eq!(worker_span.name, "process in.>");
    assert_eq!(worker_span.trace_id, trace);
    assert_eq!(worker_span.parent_span_id, send_id);
    assert_eq!(worker_span.span_id, worker_id);
    let _ = provider.shutdown();
}
