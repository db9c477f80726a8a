//! The Redis durable mode beyond the conformance suite: the server-side
//! matcher against `Pattern::matches`, publishers that learn of a new
//! durable consumer before `subscribe_durable` returns, at-most-once
//! subjects staying plain PUBLISHes, reconnecting, removal and the stream cap.
//!
//! Against the Redis at `SWITCHBOARD_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), with unique names that every test removes, and
//! against redis-servers started here where a test counts commands or kills
//! connections. Without a server a test prints `skipped: ...` and passes,
//! unless `SWITCHBOARD_REQUIRE_BROKERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{
    Broker, Delivery, Durable, Error, Message, Pattern, Publisher, Subscriber, Subscription,
};
use switchboard_redis::{RedisBroker, RedisOptions};
use switchboard_testkit::{unique, RedisServer};

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
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Kills the connections named `name` (CLIENT LIST's `name=`).
fn kill_clients(url: &str, name: &str) -> usize {
    let list = redis_cli(url, &["CLIENT", "LIST"]);
    let ids: Vec<String> = list
        .lines()
        .filter(|line| line.split(' ').any(|field| field == format!("name={name}")))
        .filter_map(|line| {
            line.split(' ')
                .next()?
                .strip_prefix("id=")
                .map(String::from)
        })
        .collect();
    for id in &ids {
        redis_cli(url, &["CLIENT", "KILL", "ID", id]);
    }
    ids.len()
}

/// A command's call count from INFO commandstats (0 if never called).
fn calls(url: &str, command: &str) -> u64 {
    let stats = redis_cli(url, &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

async fn next(sub: &mut Subscription) -> switchboard_core::Result<Delivery> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the stream goes on")
}

async fn silent(sub: &mut Subscription, within: Duration) {
    if let Ok(item) = tokio::time::timeout(within, sub.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

fn durable(name: &str) -> Durable {
    Durable::new(name).unwrap().ack_wait(Duration::from_secs(1))
}

/// `unique()` as a consumer name (no dots).
fn consumer_name(test: &str) -> String {
    unique(test).replace('.', "-")
}

/// The Lua matcher the publish function uses agrees with `Pattern::matches`.
#[tokio::test]
async fn the_server_side_matcher_agrees_with_pattern_matches() {
    // Connecting loads the library. Closed before the blocking redis-cli
    // calls: an open handle whose runtime is blocked would hold up other
    // tests' registry changes until it acknowledges them.
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    broker.close().await.unwrap();
    let patterns = [
        "a",
        "a.b",
        "a.*",
        "a.>",
        "*",
        ">",
        "*.b",
        "a.*.c",
        "a.*.>",
        "*.*",
        "a.b.>",
        "a-b.*",
        "wild.*.alert.>",
    ];
    let subjects = [
        "a",
        "b",
        "a.b",
        "a.c",
        "a.b.c",
        "a.b.c.d",
        "ab",
        "x.b",
        "a-b.c",
        "wild.eu.alert",
        "wild.eu.alert.cpu",
        "wild.us.alert.disk.full",
        "wild.alert.cpu",
        "wildly.eu.alert.x",
        "a.bb",
        "a.b.cc",
    ];
    let mut checked = 0;
    for pattern in patterns {
        let parsed: Pattern = pattern.parse().unwrap();
        for subject in subjects {
            let server = redis_cli(
                &url(),
                &["FCALL", "switchboard_v1_matches", "0", pattern, subject],
            );
            assert_eq!(
                server == "1",
                parsed.matches(subject),
                "pattern {pattern:?}, subject {subject:?}: the server says {server}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, patterns.len() * subjects.len());
}

/// A publisher connected (on its own connections) before the durable
/// consumer existed, publishing right after `subscribe_durable` returned,
/// is captured every time: no retry, no sleep.
#[tokio::test]
async fn a_publisher_elsewhere_is_captured_right_after_subscribe_durable_returns() {
    let Some(subscriber) = shared(RedisOptions::new()).await else {
        return;
    };
    let Some(publisher) = shared(RedisOptions::new()).await else {
        return;
    };
    let base = unique("durable.window");
    let mut took = Vec::new();
    for round in 0..20 {
        let pattern: Pattern = format!("{base}.r{round}.>").parse().unwrap();
        let consumer = durable(&format!("{}-{round}", consumer_name("window")));
        let started = std::time::Instant::now();
        let mut sub = subscriber
            .subscribe_durable(&pattern, &consumer)
            .await
            .unwrap();
        took.push(started.elapsed());
        let message = Message::new(format!("{base}.r{round}.x"), format!("round {round}")).unwrap();
        publisher.publish(message).await.unwrap();
        publisher.flush().await.unwrap();
        let mut got = next(&mut sub).await.unwrap();
        assert_eq!(got.payload_str(), Some(format!("round {round}").as_str()));
        assert_eq!(got.delivery_count(), Some(1));
        got.ack().await.unwrap();
        drop(sub);
        subscriber
            .remove_durable(&pattern, &consumer)
            .await
            .unwrap();
    }
    took.sort();
    eprintln!(
        "subscribe_durable (new pattern, publishers' confirmations included): median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
}

/// Subjects no durable pattern matches are plain PUBLISHes; those matching
/// one known pattern are an `XADD` to its stream plus the PUBLISH, without
/// the function; counted by the server.
#[tokio::test]
async fn at_most_once_subjects_stay_plain_publishes() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let subscriber = switchboard_redis::connect(&url).await.unwrap();
    let publisher = switchboard_redis::connect(&url).await.unwrap();
    let pattern: Pattern = "kept.>".parse().unwrap();
    let consumer = durable("counted");
    let sub = subscriber
        .subscribe_durable(&pattern, &consumer)
        .await
        .unwrap();
    sub.close().await.unwrap();
    let (fcall, xadd, publish) = (
        calls(&url, "fcall"),
        calls(&url, "xadd"),
        calls(&url, "publish"),
    );
    for i in 0..100 {
        publisher
            .publish(Message::new("plain.x", format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    for i in 0..10 {
        publisher
            .publish(Message::new("kept.x", format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    assert_eq!(calls(&url, "fcall") - fcall, 0, "no FCALL for one pattern");
    assert_eq!(
        calls(&url, "xadd") - xadd,
        10,
        "one XADD per durable publish"
    );
    // Durable subjects are PUBLISHed too (for at-most-once subscribers).
    assert_eq!(calls(&url, "publish") - publish, 110);
    assert_eq!(
        redis_cli(&url, &["XLEN", "switchboard:durable:stream:kept.>"]),
        "10"
    );
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
}

/// A publisher whose routing link is down routes everything through the
/// function, so a durable consumer created meanwhile misses nothing.
#[tokio::test]
async fn a_publisher_without_its_routing_link_still_is_captured() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let subscriber = switchboard_redis::connect(&url).await.unwrap();
    let publisher = RedisOptions::new()
        .name("blind")
        .connect(&url)
        .await
        .unwrap();
    for round in 0..5 {
        assert_eq!(kill_clients(&url, "blind-routing"), 1, "round {round}");
        let pattern: Pattern = format!("blind.r{round}.>").parse().unwrap();
        let consumer = durable(&format!("blind-{round}"));
        let mut sub = subscriber
            .subscribe_durable(&pattern, &consumer)
            .await
            .unwrap();
        publisher
            .publish(Message::new(format!("blind.r{round}.x"), "seen").unwrap())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let mut got = next(&mut sub).await.unwrap();
        assert_eq!(got.payload_str(), Some("seen"));
        got.ack().await.unwrap();
        // Let the link come back before the next round kills it again.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !redis_cli(&url, &["CLIENT", "LIST"]).contains("name=blind-routing ") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the routing link is not back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
}

/// A durable subscription whose connection is killed reports it, reconnects,
/// and delivers again what it had delivered unacknowledged (its own pending
/// entries first), then what came meanwhile.
#[tokio::test]
async fn a_durable_subscription_resumes_after_its_connection_is_killed() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let broker = RedisOptions::new()
        .name("resumer")
        .connect(&url)
        .await
        .unwrap();
    let pattern: Pattern = "jobs.>".parse().unwrap();
    let consumer = durable("worker").ack_wait(Duration::from_secs(30));
    let mut sub = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    broker
        .publish(Message::new("jobs.a", "first").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let held = next(&mut sub).await.unwrap();
    assert_eq!(held.payload_str(), Some("first"));
    assert_eq!(kill_clients(&url, "resumer-durable"), 1);
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Err(Error::Disconnected { reason, .. }))) => {
            assert!(reason.contains("Nothing is lost"), "{reason}")
        }
        other => panic!("expected a Disconnected item, got {other:?}"),
    }
    broker
        .publish(Message::new("jobs.b", "second").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    // The held delivery comes again at once (not after the 30 s ack_wait):
    // a reconnected member reads its own pending entries first.
    let mut again = next(&mut sub).await.unwrap();
    assert_eq!(again.payload_str(), Some("first"));
    assert_eq!(again.delivery_count(), Some(2));
    again.ack().await.unwrap();
    let mut second = next(&mut sub).await.unwrap();
    assert_eq!(second.payload_str(), Some("second"));
    assert_eq!(second.delivery_count(), Some(1));
    second.ack().await.unwrap();
    drop(held);
    silent(&mut sub, Duration::from_millis(500)).await;
    broker.close().await.unwrap();
}

/// `remove_durable` destroys the group; the stream and the registry entry
/// go with the last group on the pattern, and publishers stop storing.
#[tokio::test]
async fn remove_durable_deletes_the_group_then_the_stream_and_registry_entry() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let base = unique("durable.remove");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let stream = format!("switchboard:durable:stream:{pattern}");
    let first = durable(&consumer_name("first"));
    let second = durable(&consumer_name("second"));
    for consumer in [&first, &second] {
        let sub = broker.subscribe_durable(&pattern, consumer).await.unwrap();
        sub.close().await.unwrap();
    }
    let registered = || {
        redis_cli(
            &url(),
            &["HEXISTS", "switchboard:durable", pattern.as_str()],
        )
    };
    assert_eq!(registered(), "1");
    broker.remove_durable(&pattern, &first).await.unwrap();
    assert_eq!(
        redis_cli(&url(), &["EXISTS", &stream]),
        "1",
        "a group is left"
    );
    assert_eq!(registered(), "1");
    broker.remove_durable(&pattern, &second).await.unwrap();
    assert_eq!(redis_cli(&url(), &["EXISTS", &stream]), "0");
    assert_eq!(registered(), "0");
    // Removing again is fine, and publishing no longer creates the stream.
    broker.remove_durable(&pattern, &second).await.unwrap();
    broker
        .publish(Message::new(format!("{base}.x"), "gone").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert_eq!(redis_cli(&url(), &["EXISTS", &stream]), "0");
    broker.close().await.unwrap();
}

/// `stream_maxlen=N` caps the stream (approximately, as `MAXLEN ~` does).
#[tokio::test]
async fn stream_maxlen_caps_the_stream() {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let capped = RedisOptions::new()
        .connect(&format!("{}?stream_maxlen=10", url()))
        .await
        .unwrap();
    assert_eq!(capped.options().stream_maxlen, 10);
    let base = unique("durable.maxlen");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let consumer = durable(&consumer_name("capped"));
    let sub = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    sub.close().await.unwrap();
    for i in 0..2000 {
        capped
            .publish(Message::new(format!("{base}.x"), format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    capped.flush().await.unwrap();
    let len: usize = redis_cli(
        &url(),
        &["XLEN", &format!("switchboard:durable:stream:{pattern}")],
    )
    .parse()
    .unwrap();
    // `~` trims whole nodes (stream-node-max-entries, 100 by default).
    assert!((10..=200).contains(&len), "XLEN {len}");
    broker.remove_durable(&pattern, &consumer).await.unwrap();
    broker.close().await.unwrap();
    capped.close().await.unwrap();
}

/// After a `FUNCTION FLUSH`, the durable publishes that met it fail (and
/// `flush` says so), the library is loaded again at once, and the next
/// publishes are stored. The subject matches two durable patterns, so its
/// publishes go through the function (one pattern: an `XADD`, no function).
#[tokio::test]
async fn a_flushed_function_library_is_loaded_again() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let broker = switchboard_redis::connect(&url).await.unwrap();
    let pattern: Pattern = "kept.>".parse().unwrap();
    let consumer = durable("reloaded");
    let mut sub = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    let also: Pattern = "kept.*".parse().unwrap();
    broker
        .subscribe_durable(&also, &durable("reloaded-too"))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    redis_cli(&url, &["FUNCTION", "FLUSH"]);
    broker
        .publish(Message::new("kept.x", "lost").unwrap())
        .await
        .unwrap();
    let error = broker.flush().await.unwrap_err();
    assert!(error.to_string().contains("Function not found"), "{error}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !redis_cli(&url, &["FUNCTION", "LIST"]).contains("switchboard_v1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the library was not loaded again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker
        .publish(Message::new("kept.x", "kept").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let mut got = next(&mut sub).await.unwrap();
    assert_eq!(got.payload_str(), Some("kept"));
    got.ack().await.unwrap();
    broker.close().await.unwrap();
}

/// On a server with `appendonly yes` (`appendfsync always`), what a durable
/// consumer had not acknowledged survives a SIGKILL of Redis: the
/// subscription reports the lost connection, reconnects and delivers every
/// message (duplicates counted, not hidden).
#[tokio::test]
async fn unacknowledged_messages_survive_a_killed_redis_with_appendonly() {
    let dir = std::env::temp_dir().join(unique("redis-aof"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let Some(mut server) = RedisServer::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]) else {
        return;
    };
    let broker = switchboard_redis::connect(&server.url()).await.unwrap();
    assert!(broker.capabilities().durable_storage);
    let pattern: Pattern = "orders.>".parse().unwrap();
    let consumer = durable("survivor").ack_wait(Duration::from_secs(30));
    let mut sub = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    const N: usize = 100;
    for i in 0..N {
        broker
            .publish(Message::new("orders.new", format!("{i}")).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    let mut seen = vec![0u32; N];
    for _ in 0..10 {
        let mut delivery = next(&mut sub).await.unwrap();
        seen[delivery.payload_str().unwrap().parse::<usize>().unwrap()] += 1;
        delivery.ack().await.unwrap();
    }
    server.process.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut disconnects = 0;
    while seen.contains(&0) {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                seen[delivery.payload_str().unwrap().parse::<usize>().unwrap()] += 1;
                delivery.ack().await.unwrap();
            }
            Ok(Some(Err(Error::Disconnected { .. }))) => disconnects += 1,
            other => panic!(
                "{} of {N} received, then {other:?}",
                seen.iter().filter(|&&n| n > 0).count()
            ),
        }
    }
    let duplicates: u32 = seen.iter().map(|&n| n - 1).sum();
    eprintln!("all {N} received across a SIGKILL of Redis; {duplicates} duplicate(s), {disconnects} disconnect report(s)");
    assert!(disconnects >= 1, "the lost connection was not reported");
    broker.close().await.unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Durable publish throughput (the function stores and PUBLISHes) next to
/// plain PUBLISHes of the same handle and to raw redis-rs `XADD MAXLEN ~`
/// pipelined 256 deep; run against a private server with
/// `SWITCHBOARD_REDIS_URL=redis://127.0.0.1:PORT N=200000 cargo test --release
/// -p switchboard-redis --test durable -- --ignored --nocapture durable_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn durable_throughput() {
    use std::time::Instant;
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let payload = bytes::Bytes::from_static(&[b'x'; 16]);
    let pattern: Pattern = "sbbench.durable.>".parse().unwrap();
    let consumer = durable("sbbench-durable");
    broker
        .subscribe_durable(&pattern, &consumer)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let rate = |started: Instant| n as f64 / started.elapsed().as_secs_f64();
    for round in 0..3 {
        let mut rates = Vec::new();
        for subject in ["sbbench.plain.x", "sbbench.durable.x"] {
            let subject: switchboard_core::Subject = subject.parse().unwrap();
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
            rates.push(rate(started));
        }
        let client = redis::Client::open(url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let started = Instant::now();
        let mut inflight = futures::stream::FuturesUnordered::new();
        for _ in 0..n {
            if inflight.len() >= 256 {
                let r: redis::RedisResult<String> = inflight.next().await.unwrap();
                r.unwrap();
            }
            let mut c = conn.clone();
            let payload = payload.clone();
            inflight.push(async move {
                redis::cmd("XADD")
                    .arg("sbbench:raw")
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(1_000_000)
                    .arg("*")
                    .arg("s")
                    .arg("sbbench.raw.x")
                    .arg("b")
                    .arg(&payload[..])
                    .query_async(&mut c)
                    .await
            });
        }
        while let Some(r) = inflight.next().await {
            let _: String = r.unwrap();
        }
        rates.push(rate(started));
        let _: () = redis::cmd("DEL")
            .arg("sbbench:raw")
            .query_async(&mut conn)
            .await
            .unwrap();
        println!(
            "round {round}: {n} x 16 B: switchboard plain PUBLISH {:.0} msg/s, switchboard durable (FCALL: XADD + PUBLISH) {:.0} msg/s, raw redis-rs XADD {:.0} msg/s",
            rates[0], rates[1], rates[2]
        );
    }
    broker.remove_durable(&pattern, &consumer).await.unwrap();
    broker.close().await.unwrap();
}

/// A member that leaves (closed, or dropped) hands the entries it had read
/// ahead, and nobody took, back to its group: the other member gets them at
/// once, with delivery count 1, not after the 30 s ack deadline.
async fn a_leaving_member_hands_back_its_read_ahead(close: bool) {
    let Some(broker) = shared(RedisOptions::new()).await else {
        return;
    };
    let Some(other) = shared(RedisOptions::new()).await else {
        return;
    };
    let name = consumer_name(if close {
        "handback-close"
    } else {
        "handback-drop"
    });
    let base = unique("handback");
    let pattern: Pattern = format!("{base}.>").parse().unwrap();
    let subject = format!("{base}.job");
    let member = |who: &str| {
        Durable::new(&format!("{name}-{who}"))
            .and_then(|d| d.group(&name))
            .unwrap()
            .ack_wait(Duration::from_secs(30))
    };
    let mut a = broker
        .subscribe_durable(&pattern, &member("a"))
        .await
        .unwrap();
    const N: usize = 20;
    for seq in 0..N {
        broker
            .publish(Message::new(subject.as_str(), seq.to_string()).unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    // A reads ahead all of them (nobody else is there) and takes one.
    let mut first = next(&mut a).await.unwrap();
    first.ack().await.unwrap();
    let mut b = other
        .subscribe_durable(&pattern, &member("b"))
        .await
        .unwrap();
    if close {
        tokio::time::timeout(WAIT, a.close())
            .await
            .unwrap()
            .unwrap();
    } else {
        drop(a);
    }
    let mut rest = Vec::new();
    while rest.len() < N - 1 {
        let mut delivery = next(&mut b)
            .await
            .unwrap_or_else(|e| panic!("after {} of {} handed back: {e}", rest.len(), N - 1));
        assert_eq!(
            delivery.delivery_count(),
            Some(1),
            "no handler saw it before: {:?}",
            delivery.payload_str()
        );
        delivery.ack().await.unwrap();
        rest.push(delivery.payload_str().unwrap().parse::<usize>().unwrap());
    }
    rest.push(first.payload_str().unwrap().parse().unwrap());
    rest.sort_unstable();
    assert_eq!(rest, (0..N).collect::<Vec<_>>());
    silent(&mut b, Duration::from_millis(500)).await;
    drop(b);
    broker.remove_durable(&pattern, &member("b")).await.unwrap();
    broker.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test]
async fn a_closed_member_hands_back_its_read_ahead_to_the_group() {
    a_leaving_member_hands_back_its_read_ahead(true).await;
}

#[tokio::test]
async fn a_dropped_member_hands_back_its_read_ahead_to_the_group() {
    a_leaving_member_hands_back_its_read_ahead(false).await;
}
