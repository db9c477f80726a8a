//! Redis-specific behaviour, against the Redis at `SWITCHBOARD_REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and against redis-servers started here.
//!
//! Without a reachable server a test prints `skipped: ...` and passes, unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_core::{
    Backoff, Broker, Error, Message, Pattern, Publisher, QueueGroup, Subscriber,
};
use switchboard_redis::{RedisBroker, RedisOptions};
use switchboard_testkit::RedisServer;

const WAIT: Duration = Duration::from_secs(5);

fn url() -> String {
    switchboard_conformance::broker_url("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The shared server, or `None` (after printing why) when it is not there.
async fn shared(options: RedisOptions) -> Option<RedisBroker> {
    match options.connect(&url()).await {
        Ok(b) => Some(b),
        Err(e) => {
            switchboard_conformance::skip_or_fail(format_args!("no Redis at {}: {e}", url()));
            None
        }
    }
}

fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn next(
    sub: &mut switchboard_core::Subscription,
) -> switchboard_core::Result<switchboard_core::Delivery> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the stream goes on")
}

async fn silent(sub: &mut switchboard_core::Subscription, within: Duration) {
    if let Ok(item) = tokio::time::timeout(within, sub.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

#[tokio::test]
async fn refused_port_is_one_clear_line() {
    let port = switchboard_testkit::free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let started = Instant::now();
    let e = switchboard_redis::connect(&url).await.unwrap_err();
    assert!(started.elapsed() < WAIT);
    let text = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert_eq!(
        text,
        format!("redis: cannot connect to redis://:***@127.0.0.1:{port}: nothing answers (connection refused); is redis-server running?")
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let e = RedisOptions::new()
        .connect_timeout(Duration::from_millis(300))
        .connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(e.to_string().contains("no answer within"), "{e}");
    drop(listener);
}

#[tokio::test]
async fn malformed_urls_are_invalid() {
    for bad in [
        "redis://:pw@127.0.0.1:notaport",
        "redis://127.0.0.1/notadb",
        "nats://127.0.0.1",
    ] {
        let e = switchboard_redis::connect(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e:?}");
        assert!(!e.to_string().contains(":pw@"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[tokio::test]
async fn password_errors_and_success() {
    let Some(server) = RedisServer::start(&["--requirepass", "s3cret"]) else {
        return;
    };
    let port = server.port();

    let wrong = format!("redis://:wrongpw@127.0.0.1:{port}");
    let e = switchboard_redis::connect(&wrong).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("check the user and password"), "{text}");
    assert!(!text.contains("wrongpw"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    let missing = format!("redis://127.0.0.1:{port}");
    let e = switchboard_redis::connect(&missing).await.unwrap_err();
    assert!(e.to_string().contains("authentication required"), "{e}");

    let right = format!("redis://:s3cret@127.0.0.1:{port}/2");
    let broker = switchboard_redis::connect(&right).await.unwrap();
    assert!(!format!("{broker:?}").contains("s3cret"));
    let mut sub = broker.subscribe(&"auth.*".parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new("auth.ok", "yes").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().payload_str(), Some("yes"));
    broker.close().await.unwrap();
}

#[tokio::test]
async fn flush_reports_refused_publishes() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let admin = format!("redis://127.0.0.1:{}", server.port());
    redis_cli(
        &admin,
        &[
            "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-publish",
        ],
    );
    let broker =
        switchboard_redis::connect(&format!("redis://limited:pw@127.0.0.1:{}", server.port()))
            .await
            .unwrap();
    for _ in 0..3 {
        broker
            .publish(Message::new("denied.x", "no").unwrap())
            .await
            .unwrap();
    }
    let e = broker.flush().await.unwrap_err();
    assert!(matches!(e, Error::Refused { count: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("3 message(s)"), "{e}");
    assert!(e.to_string().contains("NOPERM"), "{e}");
    // Reported once.
    broker.flush().await.unwrap();
}

#[tokio::test]
async fn plain_client_publish_arrives_raw() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let p = switchboard_testkit::unique("plain_client_publish_arrives_raw");
    let mut sub = broker
        .subscribe(&format!("{p}.alerts.*").parse().unwrap())
        .await
        .unwrap();
    redis_cli(&url(), &["PUBLISH", &format!("{p}.alerts.cpu"), "hi"]);
    let d = next(&mut sub).await.unwrap();
    assert_eq!(d.subject().as_str(), format!("{p}.alerts.cpu"));
    assert_eq!(&d.payload()[..], b"hi");
    assert!(d.headers().is_empty());
    // A plain payload that starts like an envelope but is not one arrives raw.
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let odd = b"\0SBH1\nnonsense".to_vec();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{p}.alerts.mem"))
        .arg(&odd)
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = next(&mut sub).await.unwrap();
    assert_eq!(&d.payload()[..], &odd[..]);
    assert!(d.headers().is_empty());
    broker.close().await.unwrap();
}

#[tokio::test]
async fn switchboard_publish_reaches_plain_subscriber_byte_for_byte() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let p =
        switchboard_testkit::unique("switchboard_publish_reaches_plain_subscriber_byte_for_byte");
    let channel = format!("{p}.raw");
    let client = redis::Client::open(url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let payload: Vec<u8> = vec![0, 1, 2, 255, b'\r', b'\n', 0, b'x'];
    broker
        .publish(Message::new(channel.as_str(), payload.clone()).unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let msg = tokio::time::timeout(WAIT, pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_channel_name(), channel);
    assert_eq!(msg.get_payload_bytes(), &payload[..]);
    broker.close().await.unwrap();
}

#[tokio::test]
async fn headers_and_magic_payloads_round_trip() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let p = switchboard_testkit::unique("headers_and_magic_payloads_round_trip");
    let mut sub = broker
        .subscribe(&format!("{p}.h").parse().unwrap())
        .await
        .unwrap();
    let with_headers = Message::new(format!("{p}.h"), "body")
        .unwrap()
        .with_header("Trace-Id", "abc: def")
        .unwrap()
        .with_header("empty", "")
        .unwrap();
    broker.publish(with_headers.clone()).await.unwrap();
    let magic = Message::new(format!("{p}.h"), &b"\0SBH1\nx: y\n\nz"[..]).unwrap();
    broker.publish(magic.clone()).await.unwrap();
    let d = next(&mut sub).await.unwrap();
    assert_eq!(d.message(), &with_headers);
    let d = next(&mut sub).await.unwrap();
    assert_eq!(d.message(), &magic);
    // The request inbox's header is the adapter's: published, it vanished
    // from the headers and made the message a request answered to whatever
    // it named. It is refused, and nothing is sent.
    let reserved = Message::new(format!("{p}.h"), "x")
        .unwrap()
        .with_header(switchboard_redis::REPLY_TO, "elsewhere")
        .unwrap();
    match broker.publish(reserved).await {
        Err(Error::InvalidHeader { name, .. }) => assert_eq!(name, switchboard_redis::REPLY_TO),
        other => panic!("a reserved header was not refused: {other:?}"),
    }
    broker.flush().await.unwrap();
    silent(&mut sub, Duration::from_millis(300)).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn wildcards_and_glob_metacharacters() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let p = switchboard_testkit::unique("wildcards_and_glob_metacharacters");
    let mut star = broker
        .subscribe(&format!("{p}.a?.*").parse().unwrap())
        .await
        .unwrap();
    let mut rest = broker
        .subscribe(&format!("{p}.[ab].>").parse().unwrap())
        .await
        .unwrap();
    let mut literal = broker
        .subscribe(&format!("{p}.x?y").parse::<Pattern>().unwrap())
        .await
        .unwrap();
    for subject in [
        format!("{p}.ab.x"),     // `?` is literal: no match for star
        format!("{p}.a?.x.y"),   // `*` is one token: no match
        format!("{p}.a.x"),      // `[ab]` is literal: no match for rest
        format!("{p}.[ab]"),     // `>` needs one or more tokens
        format!("{p}.xzy"),      // `?` literal: no match
        format!("{p}.a?.x"),     // star
        format!("{p}.[ab].c.d"), // rest
        format!("{p}.x?y"),      // literal
    ] {
        broker
            .publish(Message::new(subject.as_str(), subject.clone()).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    assert_eq!(
        next(&mut star).await.unwrap().subject().as_str(),
        format!("{p}.a?.x")
    );
    assert_eq!(
        next(&mut rest).await.unwrap().subject().as_str(),
        format!("{p}.[ab].c.d")
    );
    assert_eq!(
        next(&mut literal).await.unwrap().subject().as_str(),
        format!("{p}.x?y")
    );
    silent(&mut star, Duration::from_millis(200)).await;
    silent(&mut rest, Duration::from_millis(50)).await;
    silent(&mut literal, Duration::from_millis(50)).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn capabilities_and_queue_groups() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let caps = broker.capabilities();
    assert!(caps.headers && !caps.native_headers && !caps.native_wildcards);
    assert!(!caps.queue_groups && !caps.ack && !caps.redelivery && !caps.persistence);
    assert!(caps.ordered_per_publisher);
    assert!(caps.max_payload.unwrap() >= 1024 * 1024);
    assert_eq!(broker.kind(), "redis");
    let e = broker
        .subscribe_group(&"a.b".parse().unwrap(), &QueueGroup::new("g").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsupported {
                broker: "redis",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "redis does not support queue groups (Redis PUBSUB delivers every message to every subscriber); the members of a durable consumer share its messages (subscribe_durable with Durable::group; listen --durable NAME --group G)"
    );
    broker.close().await.unwrap();
}

#[tokio::test]
async fn close_semantics() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let p = switchboard_testkit::unique("close_semantics");
    let mut sub = broker
        .subscribe(&format!("{p}.>").parse().unwrap())
        .await
        .unwrap();
    let other = shared(RedisOptions::new()).await.unwrap();
    let mut watcher = other
        .subscribe(&format!("{p}.>").parse().unwrap())
        .await
        .unwrap();
    for i in 0..1000 {
        broker
            .publish(Message::new(format!("{p}.n"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    broker.close().await.unwrap();
    // Everything published before close was sent.
    for i in 0..1000 {
        let d = next(&mut watcher).await.unwrap();
        assert_eq!(d.payload_str(), Some(format!("{i}").as_str()));
    }
    // The closed handle's subscription ends.
    let end = tokio::time::timeout(WAIT, async {
        while let Some(item) = sub.next().await {
            item.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "subscription did not end after close");
    let e = broker
        .publish(Message::new(format!("{p}.n"), "late").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Closed { broker: "redis" }), "{e:?}");
    assert!(matches!(
        broker.subscribe(&"a".parse().unwrap()).await,
        Err(Error::Closed { .. })
    ));
    broker.close().await.unwrap();
    other.close().await.unwrap();
}

fn client_ids(url: &str, name: &str) -> Vec<String> {
    redis_cli(url, &["CLIENT", "LIST"])
        .lines()
        .filter(|line| line.split(' ').any(|f| f == format!("name={name}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn killed_subscriber_reports_and_resubscribes() {
    let p = switchboard_testkit::unique("killed_subscriber_reports_and_resubscribes");
    let options = RedisOptions::new()
        .name(p.clone())
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
        ));
    let Some(broker) = shared(options).await else {
        return;
    };
    let mut sub = broker
        .subscribe(&format!("{p}.*").parse().unwrap())
        .await
        .unwrap();
    let ids = client_ids(&url(), &format!("{p}-sub"));
    assert_eq!(ids.len(), 1, "{ids:?}");
    redis_cli(&url(), &["CLIENT", "KILL", "ID", &ids[0]]);
    let item = next(&mut sub).await;
    assert!(matches!(item, Err(Error::Disconnected { .. })), "{item:?}");
    // It resubscribes: keep publishing until a message comes through.
    let deadline = Instant::now() + WAIT;
    loop {
        broker
            .publish(Message::new(format!("{p}.again"), "back").unwrap())
            .await
            .unwrap();
        if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            assert_eq!(item.unwrap().payload_str(), Some("back"));
            break;
        }
        assert!(Instant::now() < deadline, "no message after resubscribing");
    }
    // Also the publisher survives its connection being killed.
    let ids = client_ids(&url(), &p);
    assert_eq!(ids.len(), 1, "{ids:?}");
    redis_cli(&url(), &["CLIENT", "KILL", "ID", &ids[0]]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = broker.flush().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let sent = broker
            .publish(Message::new(format!("{p}.again"), "after").unwrap())
            .await;
        if sent.is_ok() && broker.flush().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "publisher did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let d = next(&mut sub).await.unwrap();
        if d.payload_str() == Some("after") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    broker.close().await.unwrap();
}

/// A subscriber that does not read loses what overflows its buffer, counted
/// exactly in one `Lost` item where the gap is; a neighbour on the same
/// shared connection keeps receiving meanwhile.
#[tokio::test]
async fn slow_subscriber_is_reported_not_silent_and_does_not_stall_its_neighbour() {
    let Some(broker) = shared(RedisOptions::new().capacity(16)).await else {
        return;
    };
    let p = switchboard_testkit::unique("slow_subscriber");
    let mut slow = broker
        .subscribe(&format!("{p}.slow.>").parse().unwrap())
        .await
        .unwrap();
    let mut neighbour = broker
        .subscribe(&format!("{p}.fast").parse().unwrap())
        .await
        .unwrap();
    const FLOOD: usize = 20_000;
    let payload = vec![b'x'; 1024];
    for i in 0..FLOOD {
        broker
            .publish(Message::new(format!("{p}.slow.flood"), payload.clone()).unwrap())
            .await
            .unwrap();
        if i % 2000 == 0 {
            broker
                .publish(Message::new(format!("{p}.fast"), format!("{i}")).unwrap())
                .await
                .unwrap();
        }
    }
    broker.flush().await.unwrap();
    // The neighbour gets all of its 10 (its buffer holds 16) while the slow
    // one is not read.
    for i in (0..FLOOD).step_by(2000) {
        let d = next(&mut neighbour).await.unwrap();
        assert_eq!(d.payload_str(), Some(format!("{i}").as_str()));
    }
    // Now read the slow one: what was buffered, then the count of the rest.
    let mut received = 0u64;
    let mut lost = 0u64;
    let mut reports = 0;
    while received + lost < FLOOD as u64 {
        match next(&mut slow).await {
            Ok(_) => received += 1,
            Err(Error::Lost { count, reason, .. }) => {
                assert!(reason.contains("capacity"), "{reason}");
                assert!(count > 0);
                lost += count;
                reports += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(received + lost, FLOOD as u64);
    assert!(lost > 0 && reports >= 1, "{received} received, {lost} lost");
    assert!(received >= 16, "{received}");
    silent(&mut slow, Duration::from_millis(200)).await;
    broker.close().await.unwrap();
}

fn numsub(url: &str, channel: &str) -> u64 {
    let out = redis_cli(url, &["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {out:?}"))
}

/// Several subscriptions on one channel or glob each get every message; one
/// dropped leaves the others subscribed; closing the last unsubscribes.
#[tokio::test]
async fn subscriptions_sharing_a_channel_each_get_every_message() {
    let p = switchboard_testkit::unique("sharing_a_channel");
    let Some(broker) = shared(RedisOptions::new().name(p.clone())).await else {
        return;
    };
    let literal: Pattern = format!("{p}.a").parse().unwrap();
    let mut first = broker.subscribe(&literal).await.unwrap();
    let mut second = broker.subscribe(&literal).await.unwrap();
    // `*` and `>` become the same glob; each keeps its own pattern.
    let mut star = broker
        .subscribe(&format!("{p}.*").parse().unwrap())
        .await
        .unwrap();
    let mut rest = broker
        .subscribe(&format!("{p}.>").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(client_ids(&url(), &format!("{p}-sub")).len(), 1);
    broker
        .publish(Message::new(format!("{p}.a"), "one").unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new(format!("{p}.a.deep"), "two").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    for sub in [&mut first, &mut second, &mut star, &mut rest] {
        assert_eq!(next(sub).await.unwrap().payload_str(), Some("one"));
    }
    assert_eq!(next(&mut rest).await.unwrap().payload_str(), Some("two"));
    for sub in [&mut first, &mut second, &mut star, &mut rest] {
        silent(sub, Duration::from_millis(100)).await;
    }
    // Dropping one leaves the other on the channel.
    drop(first);
    broker
        .publish(Message::new(format!("{p}.a"), "three").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(
        next(&mut second).await.unwrap().payload_str(),
        Some("three")
    );
    assert_eq!(numsub(&url(), &literal.to_string()), 1);
    // Closing the last one waits for Redis to confirm the UNSUBSCRIBE.
    second.close().await.unwrap();
    assert_eq!(numsub(&url(), &literal.to_string()), 0);
    broker.close().await.unwrap();
    // Closing the handle ended the others.
    for sub in [&mut star, &mut rest] {
        let end = tokio::time::timeout(WAIT, async {
            while let Some(item) = sub.next().await {
                let _ = item;
            }
        })
        .await;
        assert!(end.is_ok(), "a subscription did not end after close");
    }
}

/// Issue 13: 10,000 subscriptions on distinct subjects on one broker handle
/// use one connection, and one message to each subject reaches exactly its
/// subscriber.
#[tokio::test]
async fn ten_thousand_subscriptions_on_one_connection_each_get_exactly_theirs() {
    const N: usize = 10_000;
    let p = switchboard_testkit::unique("ten_thousand");
    let Some(broker) = shared(RedisOptions::new().name(p.clone())).await else {
        return;
    };
    let publisher = shared(RedisOptions::new()).await.unwrap();
    // 64 at a time, so the SUBSCRIBEs pipeline on the shared connection.
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
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(
        client_ids(&url(), &format!("{p}-sub")).len(),
        1,
        "one pub/sub connection for all of them"
    );
    for i in 0..N {
        publisher
            .publish(Message::new(format!("{p}.s{i}"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut subscriptions = subscriptions;
    subscriptions.sort_by_key(|(i, _)| *i);
    for (i, sub) in &mut subscriptions {
        let d = next(sub).await.unwrap();
        assert_eq!(d.subject().as_str(), format!("{p}.s{i}"));
        assert_eq!(d.payload_str(), Some(format!("{i}").as_str()));
    }
    // Nothing extra anywhere (all published and flushed before).
    for (i, sub) in &mut subscriptions {
        if let Ok(Some(item)) = tokio::time::timeout(Duration::ZERO, sub.next()).await {
            panic!("subscription {i} got an extra item: {item:?}");
        }
    }
    drop(subscriptions);
    publisher.close().await.unwrap();
    broker.close().await.unwrap();
}

/// A killed shared connection: every subscription on it reports the loss
/// once and gets messages again after the hub resubscribed.
#[tokio::test]
async fn a_killed_shared_connection_resubscribes_every_subscription() {
    let p = switchboard_testkit::unique("killed_shared");
    let options = RedisOptions::new()
        .name(p.clone())
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
        ));
    let Some(broker) = shared(options).await else {
        return;
    };
    let patterns = [format!("{p}.a"), format!("{p}.b.*"), format!("{p}.>")];
    let mut subs = Vec::new();
    for pattern in &patterns {
        subs.push(broker.subscribe(&pattern.parse().unwrap()).await.unwrap());
    }
    let ids = client_ids(&url(), &format!("{p}-sub"));
    assert_eq!(ids.len(), 1, "{ids:?}");
    redis_cli(&url(), &["CLIENT", "KILL", "ID", &ids[0]]);
    for sub in &mut subs {
        let item = next(sub).await;
        assert!(matches!(item, Err(Error::Disconnected { .. })), "{item:?}");
    }
    // Publish until each got a message again.
    let subjects = [format!("{p}.a"), format!("{p}.b.c"), format!("{p}.z")];
    for (sub, subject) in subs.iter_mut().zip(&subjects) {
        let deadline = Instant::now() + WAIT;
        loop {
            broker
                .publish(Message::new(subject.as_str(), "back").unwrap())
                .await
                .unwrap();
            if let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                assert_eq!(item.unwrap().payload_str(), Some("back"));
                break;
            }
            assert!(Instant::now() < deadline, "no message after resubscribing");
        }
    }
    broker.close().await.unwrap();
}

fn is_flush_timeout(e: &Error, after: Duration) -> bool {
    matches!(e, Error::Timeout { broker: "redis", operation, after: a } if operation == "flush" && *a == after)
}

#[tokio::test]
async fn flush_times_out_on_a_hung_server_and_keeps_counting() {
    let Some(mut server) = RedisServer::start(&[]) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", server.port());
    let timeout = Duration::from_millis(700);
    let broker = RedisOptions::new()
        .flush_timeout(timeout)
        .connect(&url)
        .await
        .unwrap();
    assert!(format!("{:?}", broker.options()).contains("flush_timeout: 700ms"));
    let mut sub = broker.subscribe(&"hung.>".parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new("hung.n", "before").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().payload_str(), Some("before"));

    server.process.pause();
    for i in 0..10 {
        broker
            .publish(Message::new("hung.n", format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    let started = Instant::now();
    let e = broker.flush().await.unwrap_err();
    let took = started.elapsed();
    assert!(is_flush_timeout(&e, timeout), "{e:?}");
    assert!(e.is_temporary());
    assert!(took >= timeout && took < timeout + WAIT, "{took:?}");
    assert_eq!(
        e.to_string(),
        format!("redis: flush timed out after {timeout:?}")
    );
    // The replies are still owed: the next flush waits for them again.
    let e = broker.flush().await.unwrap_err();
    assert!(is_flush_timeout(&e, timeout), "{e:?}");

    // Redis resumes: it answers everything, a later flush succeeds and every
    // message arrives, in order.
    server.process.resume();
    broker
        .publish(Message::new("hung.n", "after").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    for i in 0..10 {
        let d = next(&mut sub).await.unwrap();
        assert_eq!(d.payload_str(), Some(format!("{i}").as_str()));
    }
    assert_eq!(next(&mut sub).await.unwrap().payload_str(), Some("after"));

    // Closing while Redis hangs is bounded by the flush timeout too.
    server.process.pause();
    broker
        .publish(Message::new("hung.n", "at close").unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let e = tokio::time::timeout(timeout + WAIT, broker.close())
        .await
        .expect("close is bounded")
        .unwrap_err();
    assert!(is_flush_timeout(&e, timeout), "{e:?}");
    assert!(started.elapsed() < timeout + WAIT);
    server.process.resume();
    broker.close().await.unwrap();
}

/// Publish throughput, for a quick comparison with raw redis-rs; run with
/// `cargo test --release -p switchboard-redis --test redis -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let payload = bytes::Bytes::from_static(&[b'x'; 16]);
    let subject: switchboard_core::Subject = "sbbench.pub".parse().unwrap();
    for round in 0..3 {
        let started = Instant::now();
        for _ in 0..n {
            broker
                .publish(Message::from_parts(
                    subject.clone(),
                    payload.clone(),
                    Default::default(),
                ))
                .await
                .unwrap();
        }
        broker.flush().await.unwrap();
        let s = started.elapsed().as_secs_f64();
        println!(
            "switchboard round {round}: {n} x 16 B in {s:.3}s = {:.0} msg/s",
            n as f64 / s
        );

        let client = redis::Client::open(url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let started = Instant::now();
        let mut inflight = futures::stream::FuturesUnordered::new();
        for _ in 0..n {
            if inflight.len() >= 256 {
                let r: redis::RedisResult<i64> = inflight.next().await.unwrap();
                r.unwrap();
            }
            let mut c = conn.clone();
            let payload = payload.clone();
            inflight.push(async move {
                redis::cmd("PUBLISH")
                    .arg("sbbench.pub")
                    .arg(&payload[..])
                    .query_async::<i64>(&mut c)
                    .await
            });
        }
        while let Some(r) = inflight.next().await {
            r.unwrap();
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "raw redis-rs round {round}: {n} x 16 B in {s:.3}s = {:.0} msg/s",
            n as f64 / s
        );
        let _ = &mut conn;
    }
    broker.close().await.unwrap();
}

/// With every subscription gone, the shared connection stays (and is kept
/// alive by PING, answered outside pub/sub mode); the next subscription
/// uses it without a reconnection.
#[tokio::test]
async fn the_shared_connection_outlives_its_last_subscription() {
    let p = switchboard_testkit::unique("outlives_last");
    let options = RedisOptions::new()
        .name(p.clone())
        .keepalive(Some(Duration::from_millis(300)));
    let Some(broker) = shared(options).await else {
        return;
    };
    let sub = broker
        .subscribe(&format!("{p}.a").parse().unwrap())
        .await
        .unwrap();
    let before = client_ids(&url(), &format!("{p}-sub"));
    assert_eq!(before.len(), 1, "{before:?}");
    sub.close().await.unwrap();
    // Several keepalive PINGs with nothing subscribed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut sub = broker
        .subscribe(&format!("{p}.b").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(client_ids(&url(), &format!("{p}-sub")), before);
    broker
        .publish(Message::new(format!("{p}.b"), "same").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().payload_str(), Some("same"));
    broker.close().await.unwrap();
}

/// The declared `max_payload` stays under the PUBSUB subscribers' output
/// buffer hard limit (`client-output-buffer-limit pubsub`, 32 MiB by
/// default): a larger message disconnected every subscriber and was lost
/// while `publish` and `flush` succeeded. At the declared limit a message
/// arrives; one byte more is refused before it is sent.
#[tokio::test]
async fn max_payload_stays_under_the_pubsub_output_buffer_limit() {
    let Some(server) = RedisServer::start(&["--client-output-buffer-limit", "pubsub 1048576 0 0"])
    else {
        return;
    };
    let broker = switchboard_redis::connect(&server.url()).await.unwrap();
    let max = broker.capabilities().max_payload.unwrap();
    assert!(max < 1_048_576 && max > 700_000, "declared {max}");
    let mut subscription = broker
        .subscribe(&"big.x".parse::<Pattern>().unwrap())
        .await
        .unwrap();
    broker
        .publish(Message::new("big.x", vec![7u8; max]).unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message at the limit arrives")
        .unwrap()
        .expect("no disconnect");
    assert_eq!(delivery.payload().len(), max);
    let error = broker
        .publish(Message::new("big.x", vec![7u8; max + 1]).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(error, switchboard_core::Error::PayloadTooLarge { .. }),
        "{error}"
    );
    broker.close().await.unwrap();
}
