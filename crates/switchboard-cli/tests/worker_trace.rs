//! W3C trace context through the worker, on NATS, Redis and RabbitMQ (the
//! real `switchboard worker`) and in memory (the library): a message with a
//! known `traceparent` through a `publish` route arrives with the same trace
//! id and a new parent id, `tracestate` kept; an `exec` command sees
//! `TRACEPARENT` and `TRACESTATE`. A broker that does not answer is skipped
//! unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::time::Duration;

use futures::StreamExt;
use harness::{broker_url, unique, Process, Stdout, TempDir, PATIENCE};
use switchboard::worker::{Context, HandlerError, Worker};
use switchboard::{Broker, MemoryBroker, Message, Publisher, Subscriber, Subscription};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn known_traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// Checks that `traceparent` continues the known trace with a new, valid
/// parent id; returns that id.
fn assert_child(traceparent: &str) -> String {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent:?}");
    assert_eq!(fields[0], "00", "{traceparent:?}");
    assert_eq!(fields[1], TRACE_ID, "the trace id changed: {traceparent:?}");
    let parent = fields[2];
    assert_eq!(parent.len(), 16, "{traceparent:?}");
    assert!(
        parent
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{traceparent:?}"
    );
    assert_ne!(parent, "0000000000000000", "{traceparent:?}");
    assert_ne!(
        parent, PARENT_ID,
        "the parent id was not renewed: {traceparent:?}"
    );
    assert_eq!(fields[3], "01", "{traceparent:?}");
    parent.to_string()
}

fn traced(subject: &str, payload: &str) -> Message {
    Message::new(subject.to_string(), payload.to_string())
        .unwrap()
        .with_header("traceparent", known_traceparent())
        .unwrap()
        .with_header("tracestate", STATE)
        .unwrap()
}

async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
        .expect("no error")
        .into_message()
}

fn trace_crosses_the_worker(kind: &str) {
    let Some(url) = broker_url(kind, "trace_crosses_the_worker") else {
        return;
    };
    let prefix = unique("trace");
    let dir = TempDir::new("trace");
    let config = dir.write(
        "worker.toml",
        &format!(
            r#"[[route]]
on = "{prefix}.in.>"
publish = "{prefix}.out.{{subject}}"

[[route]]
on = "{prefix}.exec.>"
exec = ["sh", "-c", 'printf "%s|%s" "$TRACEPARENT" "$TRACESTATE"']
"#
        ),
    );
    let worker = Process::start(
        &["--broker", &url, "worker", "--config", &config],
        Stdout::Read,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = switchboard::connect(&url).await.unwrap();
        let mut out = broker
            .subscribe(&format!("{prefix}.out.>").parse().unwrap())
            .await
            .unwrap();
        // The publish route: same trace, new parent id, tracestate kept.
        broker
            .publish(traced(&format!("{prefix}.in.a"), "hello"))
            .await
            .unwrap();
        broker.flush().await.unwrap();
        let forwarded = next(&mut out).await;
        assert_eq!(
            forwarded.subject().as_str(),
            format!("{prefix}.out.{prefix}.in.a")
        );
        assert_eq!(forwarded.payload_str(), Some("hello"));
        let traceparent = forwarded
            .headers()
            .get("traceparent")
            .expect("a traceparent");
        assert_child(traceparent);
        assert_eq!(forwarded.headers().get("tracestate"), Some(STATE));

        // The exec action: TRACEPARENT and TRACESTATE in the environment
        // (read back as the request's reply, the command's stdout).
        let reply = broker
            .request(
                traced(&format!("{prefix}.exec.x"), ""),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", worker.stderr()));
        let text = reply.payload_str().unwrap().to_string();
        let (traceparent, tracestate) = text.split_once('|').expect("TRACEPARENT|TRACESTATE");
        assert_child(traceparent);
        assert_eq!(tracestate, STATE);

        // Without a traceparent nothing is added.
        broker
            .publish(Message::new(format!("{prefix}.in.b"), "plain").unwrap())
            .await
            .unwrap();
        broker.flush().await.unwrap();
        let plain = next(&mut out).await;
        assert_eq!(plain.headers().get("traceparent"), None);
        let _ = broker.close().await;
    });
    worker.signal("INT");
    let (status, _, stderr) = worker.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
}

#[test]
fn trace_crosses_the_worker_nats() {
    trace_crosses_the_worker("nats");
}

#[test]
fn trace_crosses_the_worker_redis() {
    trace_crosses_the_worker("redis");
}

#[test]
fn trace_crosses_the_worker_amqp() {
    trace_crosses_the_worker("amqp");
}

/// The library: `ctx.publish` inside a handler continues the trace, and
/// `ctx.trace()` names the handler's span (the parent of what it publishes).
#[tokio::test]
async fn library_handlers_publish_in_the_trace() {
    let broker = MemoryBroker::new();
    let mut out = broker.subscribe(&"out.>".parse().unwrap()).await.unwrap();
    let running = Worker::new(broker.clone())
        .on("in.>", |ctx: Context| async move {
            let span = ctx.trace().map(|trace| trace.span_id()).unwrap_or_default();
            ctx.publish(Message::new("out.x", span)?).await?;
            Ok::<_, HandlerError>(())
        })
        .start()
        .await
        .unwrap();
    broker.publish(traced("in.a", "x")).await.unwrap();
    let published = next(&mut out).await;
    let parent = assert_child(published.headers().get("traceparent").unwrap());
    // The handler's span id is the parent id of what it published.
    assert_eq!(published.payload_str(), Some(parent.as_str()));
    assert_eq!(published.headers().get("tracestate"), Some(STATE));
    tokio::time::timeout(PATIENCE, running.shutdown())
        .await
        .unwrap();
}

/// `send --trace` starts a trace (a new trace id per message), or continues
/// the `traceparent` given with `--header` as its child; plain `send` adds none.
#[test]
fn send_trace_starts_a_trace_nats() {
    let Some(url) = broker_url("nats", "send_trace_starts_a_trace") else {
        return;
    };
    let prefix = unique("sendtrace");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = runtime.block_on(switchboard::connect(&url)).unwrap();
    let mut sent = runtime
        .block_on(broker.subscribe(&format!("{prefix}.>").parse().unwrap()))
        .unwrap();
    let subject = format!("{prefix}.alert");
    harness::send(
        &url,
        &["--on", &subject, "--trace", "--count", "2", "x"],
        b"",
    );
    harness::send(
        &url,
        &[
            "--on",
            &subject,
            "--trace",
            "--header",
            &format!("traceparent={}", known_traceparent()),
            "y",
        ],
        b"",
    );
    harness::send(&url, &["--on", &subject, "plain"], b"");
    let received: Vec<Message> = runtime.block_on(async {
        let mut received = Vec::new();
        for _ in 0..4 {
            received.push(next(&mut sent).await);
        }
        received
    });
    let first = switchboard::worker::TraceContext::from_headers(received[0].headers())
        .expect("a valid traceparent");
    let second = switchboard::worker::TraceContext::from_headers(received[1].headers())
        .expect("a valid traceparent");
    assert!(first.sampled());
    assert_ne!(first.trace_id(), TRACE_ID);
    assert_ne!(first.trace_id(), second.trace_id(), "a trace per message");
    assert_child(received[2].headers().get("traceparent").unwrap());
    assert_eq!(received[3].headers().get("traceparent"), None);
    runtime.block_on(async {
        let _ = broker.close().await;
    });
}
