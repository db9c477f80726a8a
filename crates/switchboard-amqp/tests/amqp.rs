//! Adapter-specific tests against a real RabbitMQ (`SWITCHBOARD_AMQP_URL`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`). Without a broker they
//! print `skipped: ...` and pass, unless `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use switchboard_amqp::AmqpBroker;
use switchboard_core::{Broker, Error, Message, Publisher, Subscriber, Subscription};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(10);

fn url() -> String {
    std::env::var("SWITCHBOARD_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Connects, or says why the test is skipped (fails instead when brokers are required).
async fn broker_at(url: &str) -> Option<AmqpBroker> {
    match switchboard_amqp::connect(url).await {
        Ok(broker) => Some(broker),
        Err(error) => {
            switchboard_conformance::skip_or_fail(format_args!("RabbitMQ not available ({error})"));
            None
        }
    }
}

macro_rules! broker_or_skip {
    () => {
        broker_or_skip!(&url())
    };
    ($url:expr) => {
        match broker_at($url).await {
            Some(broker) => broker,
            None => return,
        }
    };
}

async fn raw_connection() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap()
}

async fn next(sub: &mut Subscription) -> switchboard_core::Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the stream goes on")
        .expect("a delivery, not an error")
}

async fn nothing_more(sub: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        panic!("expected nothing more, got {item:?}");
    }
}

#[tokio::test]
async fn raw_publish_with_headers_arrives_as_headers_and_exact_bytes() {
    let broker = broker_or_skip!();
    let p =
        switchboard_testkit::unique("raw_publish_with_headers_arrives_as_headers_and_exact_bytes");
    let mut sub = broker
        .subscribe(&format!("{p}.raw.>").parse().unwrap())
        .await
        .unwrap();

    let raw = raw_connection().await;
    let channel = raw.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("trace-id".into(), AMQPValue::LongString("abc-123".into()));
    headers.insert("count".into(), AMQPValue::LongInt(7));
    headers.insert("urgent".into(), AMQPValue::Boolean(true));
    headers.insert(
        "nested".into(),
        AMQPValue::FieldTable(FieldTable::default()),
    );
    let body: Vec<u8> = vec![0, 159, 146, 150, 255, b'\n', 0];
    channel
        .basic_publish(
            "amq.topic".into(),
            format!("{p}.raw.x").into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();

    let delivery = next(&mut sub).await;
    assert_eq!(delivery.subject().as_str(), format!("{p}.raw.x"));
    assert_eq!(&delivery.payload()[..], &body[..]);
    assert_eq!(delivery.headers().get("trace-id"), Some("abc-123"));
    assert_eq!(delivery.headers().get("count"), Some("7"));
    assert_eq!(delivery.headers().get("urgent"), Some("true"));
    assert!(!delivery.headers().contains("nested"));
    assert!(delivery.is_acknowledgeable());
    assert!(!delivery.redelivered());
    broker.close().await.unwrap();
}

#[tokio::test]
async fn switchboard_publish_is_plain_amqp_to_a_raw_consumer() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("switchboard_publish_is_plain_amqp_to_a_raw_consumer");
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            "amq.topic".into(),
            format!("{p}.sb.*").into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let body: Vec<u8> = (0..=255u8).collect();
    let with_headers = Message::new(format!("{p}.sb.one"), body.clone())
        .unwrap()
        .with_header("trace-id", "xyz")
        .unwrap()
        .with_header("Case-Kept", "Ünïcode ok")
        .unwrap();
    broker.publish(with_headers).await.unwrap();
    broker
        .publish(Message::new(format!("{p}.sb.two"), "plain").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();

    let first = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.routing_key.as_str(), format!("{p}.sb.one"));
    assert_eq!(first.data, body);
    let table = first.properties.headers().clone().expect("a header table");
    assert_eq!(
        table.inner().get("trace-id"),
        Some(&AMQPValue::LongString(LongString::from("xyz")))
    );
    assert_eq!(
        table.inner().get("Case-Kept"),
        Some(&AMQPValue::LongString(LongString::from("Ünïcode ok")))
    );
    assert_eq!(table.inner().len(), 2);
    first.ack(BasicAckOptions::default()).await.unwrap();

    let second = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.data, b"plain");
    assert!(second
        .properties
        .headers()
        .as_ref()
        .is_none_or(|t| t.inner().is_empty()));
    broker.close().await.unwrap();
}

#[tokio::test]
async fn tail_wildcard_needs_a_token_and_literal_hash_is_literal() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("tail_wildcard_needs_a_token_and_literal_hash_is_literal");
    let mut tail = broker
        .subscribe(&format!("{p}.a.>").parse().unwrap())
        .await
        .unwrap();
    let mut one = broker
        .subscribe(&format!("{p}.a.*").parse().unwrap())
        .await
        .unwrap();
    // `#` is a literal token to switchboard but a wildcard to AMQP.
    let mut hash = broker
        .subscribe(&format!("{p}.#").parse().unwrap())
        .await
        .unwrap();
    for subject in ["a", "a.b", "a.b.c", "#"] {
        broker
            .publish(Message::new(format!("{p}.{subject}"), subject).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    assert_eq!(next(&mut tail).await.subject().as_str(), format!("{p}.a.b"));
    assert_eq!(
        next(&mut tail).await.subject().as_str(),
        format!("{p}.a.b.c")
    );
    assert_eq!(next(&mut one).await.subject().as_str(), format!("{p}.a.b"));
    assert_eq!(next(&mut hash).await.subject().as_str(), format!("{p}.#"));
    nothing_more(&mut tail).await;
    nothing_more(&mut one).await;
    nothing_more(&mut hash).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn nack_redelivers_and_reject_drops() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("nack_redelivers_and_reject_drops");
    let mut sub = broker
        .subscribe(&format!("{p}.n").parse().unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new(format!("{p}.n"), "again").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let mut first = next(&mut sub).await;
    assert!(!first.redelivered());
    first.nack().await.unwrap();
    let mut second = next(&mut sub).await;
    assert_eq!(second.payload_str(), Some("again"));
    assert!(second.redelivered());
    second.reject().await.unwrap();
    nothing_more(&mut sub).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_delivery_is_not_acknowledged() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("a_dropped_delivery_is_not_acknowledged");
    let pattern = format!("{p}.d").parse().unwrap();
    let group = format!("{p}-g").parse().unwrap();
    let mut first = broker.subscribe_group(&pattern, &group).await.unwrap();
    broker
        .publish(Message::new(format!("{p}.d"), "once").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    drop(next(&mut first).await);
    // Unacknowledged, it moves to the remaining member when the first leaves.
    let mut second = broker.subscribe_group(&pattern, &group).await.unwrap();
    nothing_more(&mut second).await;
    first.close().await.unwrap();
    let mut again = next(&mut second).await;
    assert_eq!(again.payload_str(), Some("once"));
    assert!(again.redelivered());
    again.ack().await.unwrap();
    nothing_more(&mut second).await;
    broker.close().await.unwrap();
}

/// Publishes `<tag>0` .. `<tag>{n-1}` to `subject` and flushes.
async fn publish_numbered(broker: &AmqpBroker, subject: &str, tag: &str, n: usize) {
    for i in 0..n {
        broker
            .publish(Message::new(subject, format!("{tag}{i}")).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
}

#[tokio::test]
async fn dropped_deliveries_fill_the_prefetch_window() {
    let broker = broker_or_skip!(&with_params(&url(), "prefetch=3"));
    let p = switchboard_testkit::unique("dropped_deliveries_fill_the_prefetch_window");
    let mut sub = broker
        .subscribe(&format!("{p}.w").parse().unwrap())
        .await
        .unwrap();
    publish_numbered(&broker, &format!("{p}.w"), "m", 5).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let delivery = next(&mut sub).await;
        assert_eq!(delivery.payload_str(), Some(format!("m{i}").as_str()));
        held.push(delivery);
    }
    // Three dropped unsettled: the window is full, nothing more comes...
    drop(held);
    nothing_more(&mut sub).await;
    broker.close().await.unwrap();
    // ...and acknowledging as it goes keeps it flowing.
    let broker = broker_or_skip!(&with_params(&url(), "prefetch=3"));
    let mut sub = broker
        .subscribe(&format!("{p}.w").parse().unwrap())
        .await
        .unwrap();
    publish_numbered(&broker, &format!("{p}.w"), "n", 5).await;
    for i in 0..5 {
        let mut delivery = next(&mut sub).await;
        assert_eq!(delivery.payload_str(), Some(format!("n{i}").as_str()));
        delivery.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn queue_group_members_share_and_fan_out_still_gets_all() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("queue_group_members_share_and_fan_out_still_gets_all");
    let pattern = format!("{p}.q.*").parse().unwrap();
    let group = "workers".parse().unwrap();
    let mut a = broker.subscribe_group(&pattern, &group).await.unwrap();
    let mut b = broker.subscribe_group(&pattern, &group).await.unwrap();
    let mut all = broker.subscribe(&pattern).await.unwrap();
    for i in 0..20 {
        broker
            .publish(Message::new(format!("{p}.q.{i}"), "w").unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    for _ in 0..20 {
        next(&mut all).await;
    }
    let (mut got_a, mut got_b) = (0, 0);
    while got_a + got_b < 20 {
        tokio::select! {
            Some(d) = a.next() => { d.unwrap(); got_a += 1; }
            Some(d) = b.next() => { d.unwrap(); got_b += 1; }
            _ = tokio::time::sleep(WAIT) => panic!("only {got_a}+{got_b} of 20"),
        }
    }
    assert!(got_a > 0 && got_b > 0, "{got_a} / {got_b}");
    nothing_more(&mut a).await;
    nothing_more(&mut b).await;
    broker.close().await.unwrap();
}

fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Closes, from the server side, the connections whose client-provided name is `name`.
fn kill_connection(name: &str) -> bool {
    let Some(listing) = rabbitmqctl(&["list_connections", "pid", "client_properties"]) else {
        return false;
    };
    let pids: Vec<String> = listing
        .lines()
        .filter(|line| line.contains(&format!("\"{name}\"")))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    !pids.is_empty()
        && pids
            .iter()
            .all(|pid| rabbitmqctl(&["close_connection", pid, "switchboard test"]).is_some())
}

#[tokio::test]
async fn lost_connection_is_reported_and_recovered() {
    let name = format!(
        "switchboard-test-{}",
        switchboard_testkit::unique("lost_connection_is_reported_and_recovered")
    );
    let broker = broker_or_skip!(&with_params(&url(), &format!("connection_name={name}")));
    if rabbitmqctl(&["status"]).is_none() {
        println!("skipped: rabbitmqctl cannot reach the broker to close connections");
        return;
    }
    let p = switchboard_testkit::unique("lost_connection_is_reported_and_recovered");
    let mut sub = broker
        .subscribe(&format!("{p}.r.>").parse().unwrap())
        .await
        .unwrap();
    let mut group = broker
        .subscribe_group(&format!("{p}.r.>").parse().unwrap(), &"rg".parse().unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new(format!("{p}.r.before"), "1").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload_str(), Some("1"));
    assert_eq!(next(&mut group).await.payload_str(), Some("1"));

    assert!(kill_connection(&name), "found and closed connection {name}");

    for s in [&mut sub, &mut group] {
        let item = tokio::time::timeout(WAIT, s.next()).await.unwrap().unwrap();
        match item {
            Err(Error::Disconnected { reason, .. }) => println!("reported: {reason}"),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    // The publish reconnects; the subscriptions resubscribe on the next poll.
    // Publish until both are back (their re-declaration races the first publishes).
    let deadline = Instant::now() + WAIT;
    let (mut sub_ok, mut group_ok) = (false, false);
    let mut n = 0;
    while !(sub_ok && group_ok) {
        assert!(
            Instant::now() < deadline,
            "resubscribed in time: {sub_ok} {group_ok}"
        );
        n += 1;
        broker
            .publish(Message::new(format!("{p}.r.after"), n.to_string()).unwrap())
            .await
            .unwrap();
        broker.flush().await.unwrap();
        tokio::select! {
            Some(d) = sub.next(), if !sub_ok => { d.unwrap(); sub_ok = true; }
            Some(d) = group.next(), if !group_ok => { d.unwrap(); group_ok = true; }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    broker.close().await.unwrap();
}

async fn connect_error(url: &str) -> Option<String> {
    let started = Instant::now();
    let result = switchboard_amqp::connect(url).await;
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "bounded by the connect timeout: {:?}",
        started.elapsed()
    );
    match result {
        Ok(_) => panic!("connecting to {url} should fail"),
        Err(error) => {
            let text = error.to_string();
            println!("{text}");
            assert!(!text.contains('\n'), "one line: {text}");
            assert!(text.contains("amqp"), "names the broker: {text}");
            Some(text)
        }
    }
}

fn broker_available_with(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    Some((
        parsed.host_str()?.to_string(),
        parsed.port().unwrap_or(5672).to_string(),
    ))
}

#[tokio::test]
async fn bad_input_gives_one_clear_line() {
    let broker = broker_or_skip!();
    broker.close().await.unwrap();
    let Some((host, port)) = broker_available_with(&url()) else {
        return;
    };

    let text = connect_error(&format!("amqp://guest:wrong-secret@{host}:{port}/%2f"))
        .await
        .unwrap();
    assert!(
        text.contains("password") && !text.contains("wrong-secret"),
        "{text}"
    );

    let text = connect_error(&format!("amqp://guest:guest@{host}:{port}/no-such-vhost"))
        .await
        .unwrap();
    assert!(
        text.contains("no-such-vhost") && text.contains("vhost"),
        "{text}"
    );

    let text = connect_error("amqp://guest:guest@127.0.0.1:1/%2f")
        .await
        .unwrap();
    assert!(
        text.contains("refused") && text.contains("127.0.0.1:1"),
        "{text}"
    );

    let text = connect_error(&format!(
        "amqp://guest:guest@{host}:{port}/%2f?exchange=amq.direct"
    ))
    .await
    .unwrap();
    assert!(text.contains("amq.direct"), "{text}");

    let text = connect_error(&format!(
        "amqp://guest:guest@{host}:{port}/%2f?exchange=amq.direct&prefetc=1"
    ))
    .await
    .unwrap();
    assert!(text.contains("`prefetc`"), "{text}");

    let error = switchboard_amqp::connect("amqp//guest:pw@host")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error}");
}

#[tokio::test]
async fn unresponsive_port_times_out() {
    // A listener that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let error = switchboard_amqp::connect(&format!(
        "amqp://guest:guest@127.0.0.1:{port}/%2f?connection_timeout=1000"
    ))
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(text.contains("within"), "{text}");
    drop(listener);
}

#[tokio::test]
async fn own_exchange_is_declared_and_used() {
    let p = switchboard_testkit::unique("own_exchange_is_declared_and_used");
    let broker = broker_or_skip!(&with_params(
        &url(),
        &format!("exchange=switchboard.test.{p}")
    ));
    let mut sub = broker
        .subscribe(&format!("{p}.>").parse().unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new(format!("{p}.e"), "x").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload_str(), Some("x"));
    broker.close().await.unwrap();
    // Clean up the durable exchange this test declared.
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.unwrap();
    channel
        .exchange_delete(
            format!("switchboard.test.{p}").into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_publishing() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("close_ends_subscriptions_and_refuses_publishing");
    let mut sub = broker
        .subscribe(&format!("{p}.c").parse().unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new(format!("{p}.c"), "x").unwrap())
        .await
        .unwrap();
    broker.close().await.unwrap();
    broker.close().await.unwrap();
    let error = broker
        .publish(Message::new(format!("{p}.c"), "y").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Closed { .. }), "{error}");
    let rest: Vec<_> = tokio::time::timeout(WAIT, sub.by_ref().collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    assert!(rest.len() <= 1, "{rest:?}");
    assert!(broker.subscribe(&"x".parse().unwrap()).await.is_err());
    assert_eq!(broker.kind(), "amqp");
}

#[tokio::test]
async fn payload_over_the_limit_is_refused_before_sending() {
    let broker = broker_or_skip!(&with_params(&url(), "max_payload=10"));
    let error = broker
        .publish(Message::new("big.one", vec![0u8; 11]).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::PayloadTooLarge {
                size: 11,
                max: 10,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(broker.capabilities().max_payload, Some(10));
    broker.close().await.unwrap();
}

/// Publish throughput with confirms against raw lapin with the same window of
/// 256 outstanding confirms, in alternating batches so both see the same load.
/// Run: `BENCH_N=40000 cargo test -p switchboard-amqp --test amqp -- --ignored
/// --nocapture publish_throughput` (add `--release` for real numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn publish_throughput_vs_raw_lapin() {
    use std::collections::VecDeque;
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let batches = 10;
    let batch = n / batches;
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("publish_throughput_vs_raw_lapin");
    let payload = vec![7u8; 64];
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (mut raw_time, mut our_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..batches {
        let raw_batch = async {
            let started = Instant::now();
            let mut window = VecDeque::new();
            for _ in 0..batch {
                let confirm = channel
                    .basic_publish(
                        "amq.topic".into(),
                        format!("{p}.bench").into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap();
                window.push_back(confirm);
                if window.len() > 256 {
                    assert!(window.pop_front().unwrap().await.unwrap().is_ack());
                }
            }
            for confirm in window {
                assert!(confirm.await.unwrap().is_ack());
            }
            started.elapsed()
        };
        let our_batch = async {
            let started = Instant::now();
            for _ in 0..batch {
                broker
                    .publish(Message::new(format!("{p}.bench"), payload.clone()).unwrap())
                    .await
                    .unwrap();
            }
            broker.flush().await.unwrap();
            started.elapsed()
        };
        if round % 2 == 0 {
            raw_time += raw_batch.await;
            our_time += our_batch.await;
        } else {
            our_time += our_batch.await;
            raw_time += raw_batch.await;
        }
    }
    let total = (batch * batches) as f64;
    let raw_rate = total / raw_time.as_secs_f64();
    let ours = total / our_time.as_secs_f64();
    println!(
        "raw lapin {raw_rate:.0} msg/s, switchboard {ours:.0} msg/s, ratio {:.3}",
        ours / raw_rate
    );
    broker.close().await.unwrap();
}

/// Issue 13: more fan-out subscriptions on one handle than RabbitMQ allows
/// channels on a connection (2,047 by default): they share channels, and a
/// message to each subject reaches exactly its subscriber.
#[tokio::test]
async fn more_subscriptions_than_channels_each_get_exactly_theirs() {
    const N: usize = 3_000;
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("more_subscriptions_than_channels");
    let subscriptions: Vec<_> = futures::stream::iter(0..N)
        .map(|i| {
            let broker = broker.clone();
            let p = p.clone();
            async move {
                let sub = broker
                    .subscribe(&format!("{p}.s{i}").parse().unwrap())
                    .await
                    .unwrap();
                (i, sub)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for i in 0..N {
        broker
            .publish(Message::new(format!("{p}.s{i}"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    let mut subscriptions = subscriptions;
    subscriptions.sort_by_key(|(i, _)| *i);
    for (i, sub) in &mut subscriptions {
        let mut d = next(sub).await;
        assert_eq!(d.subject().as_str(), format!("{p}.s{i}"));
        assert_eq!(d.payload_str(), Some(format!("{i}").as_str()));
        d.ack().await.unwrap();
    }
    for (i, sub) in &mut subscriptions {
        if let Ok(Some(item)) = tokio::time::timeout(Duration::ZERO, sub.next()).await {
            panic!("subscription {i} got an extra item: {item:?}");
        }
    }
    drop(subscriptions);
    broker.close().await.unwrap();
}

/// Fan-out subscriptions sharing a channel keep their own acks, nacks,
/// rejects and prefetch windows, and closing one leaves the others.
#[tokio::test]
async fn subscriptions_sharing_a_channel_keep_their_own_acks() {
    let broker = broker_or_skip!(&with_params(&url(), "prefetch=1"));
    let p = switchboard_testkit::unique("sharing_a_channel_acks");
    let mut subs = Vec::new();
    for name in ["a", "b", "c", "d"] {
        subs.push(
            broker
                .subscribe(&format!("{p}.{name}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let [a, b, c, d] = &mut subs[..] else {
        unreachable!()
    };
    for name in ["a", "b", "c", "d"] {
        publish_numbered(&broker, &format!("{p}.{name}"), name, 2).await;
    }
    // a nacks: its own message comes back, redelivered.
    let mut first = next(a).await;
    assert_eq!(first.payload_str(), Some("a0"));
    first.nack().await.unwrap();
    let mut again = next(a).await;
    assert_eq!(again.payload_str(), Some("a0"));
    assert!(again.redelivered());
    again.ack().await.unwrap();
    // b rejects: gone, and its next one comes.
    let mut rejected = next(b).await;
    assert_eq!(rejected.payload_str(), Some("b0"));
    rejected.reject().await.unwrap();
    let mut b1 = next(b).await;
    assert_eq!(b1.payload_str(), Some("b1"));
    assert!(!b1.redelivered());
    b1.ack().await.unwrap();
    // c holds its delivery unsettled: its window (prefetch 1) is full...
    let held = next(c).await;
    assert_eq!(held.payload_str(), Some("c0"));
    nothing_more(c).await;
    // ...which stalls nobody else.
    let mut a1 = next(a).await;
    assert_eq!(a1.payload_str(), Some("a1"));
    a1.ack().await.unwrap();
    for i in 0..2 {
        let mut delivery = next(d).await;
        assert_eq!(delivery.payload_str(), Some(format!("d{i}").as_str()));
        delivery.ack().await.unwrap();
    }
    // Closing c (its unsettled delivery goes with its queue) ends nobody else.
    drop(held);
    let c = subs.remove(2);
    c.close().await.unwrap();
    for (sub, name) in subs.iter_mut().zip(["a", "b", "d"]) {
        broker
            .publish(Message::new(format!("{p}.{name}"), "after").unwrap())
            .await
            .unwrap();
        broker.flush().await.unwrap();
        let mut delivery = next(sub).await;
        assert_eq!(delivery.payload_str(), Some("after"));
        delivery.ack().await.unwrap();
        nothing_more(sub).await;
    }
    broker.close().await.unwrap();
}

/// A subscription the server refuses (its queue exists with other
/// arguments) fails alone: the subscriptions already there, sharing
/// channels, keep receiving and report nothing.
#[tokio::test]
async fn a_refused_subscription_ends_no_neighbour() {
    let broker = broker_or_skip!();
    let p = switchboard_testkit::unique("a_refused_subscription");
    let mut neighbours = Vec::new();
    for i in 0..3 {
        neighbours.push(
            broker
                .subscribe(&format!("{p}.n{i}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    // The group's queue, declared durable elsewhere: switchboard's
    // non-durable declare of it is refused (PRECONDITION_FAILED).
    let group = format!("{p}-g");
    let queue = format!(
        "{}{group}@{}",
        switchboard_amqp::GROUP_QUEUE_PREFIX,
        broker.options().exchange
    );
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let refused = broker
        .subscribe_group(&format!("{p}.g").parse().unwrap(), &group.parse().unwrap())
        .await;
    assert!(
        matches!(refused, Err(Error::Subscribe { .. })),
        "{refused:?}"
    );
    // And one more fan-out subscription after it works.
    neighbours.push(
        broker
            .subscribe(&format!("{p}.n3").parse().unwrap())
            .await
            .unwrap(),
    );
    for (i, sub) in neighbours.iter_mut().enumerate() {
        broker
            .publish(Message::new(format!("{p}.n{i}"), "still").unwrap())
            .await
            .unwrap();
        broker.flush().await.unwrap();
        let mut delivery = next(sub).await;
        assert_eq!(delivery.payload_str(), Some("still"));
        delivery.ack().await.unwrap();
        nothing_more(sub).await;
    }
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    broker.close().await.unwrap();
}

/// Issue 13: `publish` hands a message to lapin's I/O thread without waiting
/// for it to be written (a deep window of writes and confirms in flight), and
/// order is still kept per subject: many subjects interleaved, every message
/// confirmed by `flush` and received once, in publish order per subject.
#[tokio::test]
async fn pipelined_publishes_keep_order_per_subject() {
    const SUBJECTS: usize = 40;
    const PER_SUBJECT: usize = 150;
    let broker = broker_or_skip!(&with_params(&url(), "confirm_window=4096"));
    let p = switchboard_testkit::unique("pipelined_publishes_keep_order_per_subject");
    let mut sub = broker
        .subscribe(&format!("{p}.>").parse().unwrap())
        .await
        .unwrap();
    for i in 0..PER_SUBJECT {
        for s in 0..SUBJECTS {
            broker
                .publish(Message::new(format!("{p}.s{s}"), i.to_string()).unwrap())
                .await
                .unwrap();
        }
    }
    broker.flush().await.unwrap();
    let mut next_expected = std::collections::HashMap::new();
    for _ in 0..SUBJECTS * PER_SUBJECT {
        let mut delivery = next(&mut sub).await;
        delivery.ack().await.unwrap();
        let n: usize = delivery.payload_str().unwrap().parse().unwrap();
        let expected = next_expected
            .entry(delivery.subject().to_string())
            .or_insert(0);
        assert_eq!(n, *expected, "order on {}", delivery.subject());
        *expected += 1;
    }
    assert_eq!(next_expected.len(), SUBJECTS);
    assert!(next_expected.values().all(|&n| n == PER_SUBJECT));
    nothing_more(&mut sub).await;
    broker.close().await.unwrap();
}

/// A RabbitMQ user of the test's own on the broker under test, deleted when
/// dropped (also when the test fails).
struct RabbitUser {
    name: String,
}

impl RabbitUser {
    /// Adds `name` with password `password` and the vhost `/` permissions
    /// `configure`, `write`, `read`; `None` (the test skips, or fails when
    /// brokers are required) without a `rabbitmqctl` that answers.
    fn add(name: &str, password: &str, [configure, write, read]: [&str; 3]) -> Option<Self> {
        let ctl = |args: &[&str]| {
            std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .is_ok_and(|out| out.status.success())
        };
        if !ctl(&["add_user", name, password]) {
            switchboard_conformance::skip_or_fail(format_args!("rabbitmqctl add_user failed"));
            return None;
        }
        let user = RabbitUser { name: name.into() };
        assert!(ctl(&[
            "set_permissions",
            "-p",
            "/",
            name,
            configure,
            write,
            read
        ]));
        Some(user)
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// A user who may not write to the exchange: the next `flush` says the
/// broker refused the messages, how many, and that trying again will not
/// help. It said they "may or may not have been delivered".
#[tokio::test]
async fn a_publish_this_user_may_not_make_is_refused() {
    let _ = broker_or_skip!();
    let name = switchboard_testkit::unique("refused").replace('.', "-");
    let Some(_user) = RabbitUser::add(&name, "refused-pw", ["^$", "^$", "^$"]) else {
        return;
    };
    let mut parsed = url::Url::parse(&url()).unwrap();
    parsed.set_username(&name).unwrap();
    parsed.set_password(Some("refused-pw")).unwrap();
    let broker = broker_or_skip!(parsed.as_str());
    for n in 0..3 {
        broker
            .publish(Message::new("refused.x", format!("m{n}")).unwrap())
            .await
            .unwrap();
    }
    let err = broker.flush().await.unwrap_err();
    assert!(matches!(err, Error::Refused { count: 3, .. }), "{err:?}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    assert!(!err.to_string().contains("refused-pw"), "{err}");
    let _ = broker.close().await;
}
