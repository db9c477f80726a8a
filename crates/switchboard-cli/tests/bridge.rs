//! `switchboard bridge` between real brokers: what is published on one
//! arrives on the other with its subject, headers and payload; a bridge
//! killed mid-stream loses nothing a RabbitMQ queue group kept for it. A
//! broker that does not answer is skipped unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;

use harness::{
    assert_one_error_line, broker_url, run, send, unique, Listener, Process, Stdout, PATIENCE,
};

fn listener(url: &str, args: &[&str]) -> Listener {
    Listener::start(url, args).unwrap_or_else(|(status, stderr)| {
        panic!("listen {args:?} exited with {status} before getting ready: {stderr}")
    })
}

/// Starts `switchboard bridge ARGS...` and waits until it is bridging.
fn bridge(args: &[&str]) -> Process {
    let mut full = vec!["bridge"];
    full.extend_from_slice(args);
    let process = Process::start(&full, Stdout::Read);
    process.wait_stderr("bridging '", PATIENCE);
    process
}

/// A bridge from NATS to a redis-server of the test's own, started with
/// `extra` arguments after `--from --to --on`, which has forwarded one
/// message (`a`) on `subject`; what the tests of a destination that dies
/// start from.
struct ToOwnRedis {
    redis: switchboard_testkit::RedisServer,
    args: Vec<String>,
    pattern: String,
    subject: String,
    first: Process,
}

impl ToOwnRedis {
    fn start(nats: &str, tag: &str, extra: &[&str]) -> Option<ToOwnRedis> {
        let redis = switchboard_testkit::RedisServer::start(&[])?;
        let prefix = unique(tag);
        let (pattern, subject) = (format!("{prefix}.>"), format!("{prefix}.n"));
        let mut args: Vec<String> = ["--from", nats, "--to", &redis.url(), "--on", &pattern]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let first = bridge(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let at_destination = listener(&redis.url(), &["--on", &pattern, "--count", "1"]);
        send(nats, &["--on", &subject, "a"], b"");
        assert_eq!(at_destination.lines(1), [format!("[{subject}] a")]);
        Some(ToOwnRedis {
            redis,
            args,
            pattern,
            subject,
            first,
        })
    }
}

/// Messages sent on `from` reach a listener on `to` as the same JSON lines
/// a listener on `from` prints; the bridge exits 0 after --count.
fn forwards(from: &str, to: &str) {
    let (Some(from_url), Some(to_url)) =
        (broker_url(from, "bridge_from"), broker_url(to, "bridge_to"))
    else {
        return;
    };
    let prefix = unique("bridge");
    let pattern = format!("{prefix}.>");
    let json = ["--on", pattern.as_str(), "--count", "3", "--format", "json"];
    let at_source = listener(&from_url, &json);
    let at_destination = listener(&to_url, &json);
    let running = bridge(&[
        "--from", &from_url, "--to", &to_url, "--on", &pattern, "--count", "3",
    ]);
    send(
        &from_url,
        &["--on", &format!("{prefix}.a"), "-H", "k=v", "héllo"],
        b"",
    );
    send(
        &from_url,
        &["--on", &format!("{prefix}.b.c"), "--file", "-"],
        &[0, 255, 10],
    );
    send(&from_url, &["--on", &format!("{prefix}.d"), "three"], b"");
    assert_eq!(
        at_destination.lines(3),
        at_source.lines(3),
        "{from} -> {to}"
    );
    let (status, _, stderr) = running.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("3 forwarded, 3 confirmed"), "{stderr}");
}

#[test]
fn forwards_nats_to_redis() {
    forwards("nats", "redis");
}

#[test]
fn forwards_redis_to_amqp() {
    forwards("redis", "amqp");
}

#[test]
fn forwards_amqp_to_nats() {
    forwards("amqp", "nats");
}

/// Two bridges read RabbitMQ in one queue group; one confirms nothing and is
/// killed (SIGKILL) after forwarding its share: what it had not confirmed
/// comes again through the other member — every message arrives, the
/// killed bridge's share twice. (A group queue is deleted with its last
/// member, so a bridge alone in its group is not protected this way; the
/// durable mode is.)
#[test]
fn a_killed_bridge_loses_nothing_its_group_still_has() {
    let (Some(amqp), Some(nats)) = (
        broker_url("amqp", "bridge_kill"),
        broker_url("nats", "bridge_kill"),
    ) else {
        return;
    };
    let prefix = unique("bridgekill");
    let pattern = format!("{prefix}.>");
    let group = format!("g{}", std::process::id());
    let total = 300usize;
    let at_destination = listener(&nats, &["--on", &pattern, "--format", "json"]);
    let common = [
        "--from",
        amqp.as_str(),
        "--to",
        nats.as_str(),
        "--on",
        pattern.as_str(),
        "--group",
        group.as_str(),
    ];
    let mut holding = common.to_vec();
    holding.extend_from_slice(&["--batch", "1000000", "--flush", "1h"]);
    let holder = bridge(&holding);
    let member = bridge(&common);
    let lines: String = (1..=total).map(|n| format!("{n}\n")).collect();
    send(&amqp, &["--on", &format!("{prefix}.n")], lines.as_bytes());

    let mut seen = BTreeSet::new();
    let mut duplicates = 0usize;
    let take = |line: String, seen: &mut BTreeSet<usize>, duplicates: &mut usize| {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let n: usize = value["payload"].as_str().unwrap().parse().unwrap();
        if !seen.insert(n) {
            *duplicates += 1;
        }
    };
    // Both members forward their share (the holder without confirming it).
    while seen.len() < total {
        let Some(line) = at_destination.line(PATIENCE) else {
            break;
        };
        take(line, &mut seen, &mut duplicates);
    }
    assert_eq!(
        seen.len(),
        total,
        "not everything was forwarded before the kill"
    );
    switchboard_testkit::process::signal(holder.pid(), "KILL");
    let _ = holder.wait(PATIENCE);
    // The holder's share is requeued to the member: it comes again.
    while let Some(line) = at_destination.line(std::time::Duration::from_secs(3)) {
        take(line, &mut seen, &mut duplicates);
    }
    println!(
        "{} distinct, {duplicates} duplicate(s) after the kill",
        seen.len()
    );
    assert!(
        duplicates > 0,
        "what the killed bridge had not confirmed did not come again"
    );
    drop(member);
}

/// With --durable on a JetStream source, what is published while the bridge
/// is down is forwarded when it comes back.
#[test]
fn a_durable_bridge_forwards_what_was_published_while_it_was_down() {
    let (Some(nats), Some(redis)) = (
        broker_url("nats", "bridge_durable"),
        broker_url("redis", "bridge_durable"),
    ) else {
        return;
    };
    let prefix = unique("bridgedur");
    let pattern = format!("{prefix}.>");
    let name = format!("bridge-{}", std::process::id());
    let args = [
        "--from",
        nats.as_str(),
        "--to",
        redis.as_str(),
        "--on",
        pattern.as_str(),
        "--durable",
        name.as_str(),
        "--retry-for",
        "2s",
    ];
    let first = bridge(&args);
    first.signal("TERM");
    let (status, _, stderr) = first.wait(PATIENCE);
    assert_eq!(status.code(), Some(143), "{stderr}");
    // Published while no bridge runs.
    let lines: String = (1..=5).map(|n| format!("{n}\n")).collect();
    send(&nats, &["--on", &format!("{prefix}.n")], lines.as_bytes());
    let at_destination = listener(&redis, &["--on", &pattern, "--count", "5"]);
    let mut again = args.to_vec();
    again.extend_from_slice(&["--count", "5"]);
    let second = bridge(&again);
    let got = at_destination.lines(5);
    assert_eq!(got.len(), 5, "{got:?}");
    let (status, _, stderr) = second.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    // The consumer (and the stream made for it) go with the test.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = switchboard::connect(&nats).await.unwrap();
        let durable = switchboard::Durable::new(&name).unwrap();
        let pattern = switchboard::Pattern::new(&pattern).unwrap();
        broker.remove_durable(&pattern, &durable).await.unwrap();
        broker.close().await.unwrap();
    });
}

/// A durable bridge whose destination dies gives back what it could not
/// forward: the next bridge gets it at once, not after the 30 s ack wait
/// (it waited out the ack wait before: the delivery was dropped unsettled).
/// The destination is a redis-server of the test's own, killed and started
/// again on its port.
#[test]
fn a_durable_bridge_gives_back_what_it_could_not_forward() {
    let Some(nats) = broker_url("nats", "bridge_gives_back") else {
        return;
    };
    let name = format!("back-{}", std::process::id());
    let extra = ["--durable", name.as_str(), "--retry-for", "2s"];
    let Some(ToOwnRedis {
        mut redis,
        args,
        pattern,
        subject,
        first,
    }) = ToOwnRedis::start(&nats, "bridgeback", &extra)
    else {
        return;
    };
    redis.process.kill();
    // The bridge fails on the first message it cannot forward (at once, or
    // at the flush that follows), tries again for 2 s, gives it back and
    // exits 1.
    send(&nats, &["--on", &subject, "b"], b"");
    let (status, _, stderr) = first.wait(PATIENCE);
    assert_eq!(status.code(), Some(1), "{stderr}");
    redis.process.start_again();
    let at_destination = listener(&redis.url(), &["--on", &pattern, "--count", "1"]);
    let mut again: Vec<&str> = args.iter().map(String::as_str).collect();
    again.extend_from_slice(&["--count", "1"]);
    let second = bridge(&again);
    // Within PATIENCE (20 s): before the 30 s ack wait is over.
    assert_eq!(at_destination.lines(1), [format!("[{subject}] b")]);
    let (status, _, stderr) = second.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    harness::remove_durable(&nats, &pattern, &name);
}

/// Runs `switchboard bridge --from FROM --to TO --on PATTERN`, which must
/// be refused before connecting: exit 1, one line naming both URLs.
fn refused_as_one_broker(from: &str, to: &str, pattern: &str) -> String {
    let output = run(
        "memory://",
        &["bridge", "--from", from, "--to", to, "--on", pattern],
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{from} -> {to}: {stderr}");
    assert_one_error_line(&stderr, &format!("would match '{pattern}' again and loop"));
    stderr
}

/// The memory broker on either side: refused in one line (a bridge in its
/// own process forwarded nothing, for ever, without a word).
#[test]
fn the_memory_broker_on_either_side_is_refused() {
    for (from, to) in [("memory", "nats"), ("nats", "memory://x")] {
        let output = run(
            "nats",
            &["bridge", "--from", from, "--to", to, "--on", "a.>"],
            b"",
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{from} -> {to}: {stderr}");
        assert_one_error_line(&stderr, "reaches only this process");
    }
}

/// The same broker on both sides would loop: refused in one line.
#[test]
fn the_same_broker_on_both_sides_is_refused() {
    let stderr = refused_as_one_broker("nats://127.0.0.1:4222", "nats://127.0.0.1:4222", "a.>");
    assert!(stderr.contains("give --to another broker"), "{stderr}");
}

/// One NATS server written two ways (`127.0.0.1` and `localhost`, a port
/// left out, a trailing `/`, a query, a user) is one broker: before, only
/// the same text was refused, and the bridge forwarded each message back to
/// the server it came from, endlessly. Against the real server, so that a
/// bridge that is not refused would connect and run (and the test time out).
#[test]
fn one_broker_written_two_ways_is_refused() {
    let Some(nats) = broker_url("nats", "bridge_same_broker") else {
        return;
    };
    if nats != "nats://127.0.0.1:4222" {
        println!("skipped: written for the NATS server on 127.0.0.1:4222, not {nats}");
        return;
    }
    let pattern = format!("{}.>", unique("hloop"));
    let stderr = refused_as_one_broker("nats://127.0.0.1:4222", "nats://localhost:4222", &pattern);
    assert!(
        stderr.contains("--from nats://127.0.0.1:4222 and --to nats://localhost:4222"),
        "{stderr}"
    );
    for (from, to) in [
        ("nats", "nats://127.0.0.1:4222/"),
        ("nats://127.0.0.1", "nats://127.0.0.1:4222?name=bridge"),
        ("nats://localhost", "nats://u:S3cretPw@127.0.0.1:4222"),
    ] {
        let stderr = refused_as_one_broker(from, to, &pattern);
        assert!(!stderr.contains("S3cretPw"), "{stderr}");
    }
}

/// A message the destination can never carry (a 70 KB header: valid on
/// NATS, over MQTT 5's 64 KiB per user property) is rejected on the source
/// with a warning, and the messages after it are forwarded: retried, it
/// held up everything behind it (and before the header check, the MQTT
/// server closed the bridge's connection over it).
#[test]
fn a_message_the_destination_cannot_carry_does_not_stop_the_bridge() {
    let (Some(nats), Some(mqtt)) = (
        broker_url("nats", "bridge_poison_from"),
        broker_url("mqtt", "bridge_poison_to"),
    ) else {
        return;
    };
    let prefix = unique("poison");
    let pattern = format!("{prefix}.>");
    let at_destination = listener(&mqtt, &["--on", &pattern]);
    let running = bridge(&["--from", &nats, "--to", &mqtt, "--on", &pattern]);
    let huge = format!("big={}", "v".repeat(70_000));
    send(
        &nats,
        &["--on", &format!("{prefix}.a"), "-H", &huge, "too big"],
        b"",
    );
    send(&nats, &["--on", &format!("{prefix}.b"), "fine"], b"");
    assert_eq!(at_destination.lines(1), [format!("[{prefix}.b] fine")]);
    running.signal("TERM");
    let (status, _, stderr) = running.wait(PATIENCE);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains(&format!("the message on '{prefix}.a' cannot be forwarded")),
        "{stderr}"
    );
}

/// A bridge from a source that keeps nothing (NATS core) that gives up says
/// how many messages it did not forward and that they are lost, counting
/// what its subscription had received while it was not reading: it said
/// "1 message(s) given back to --from" and dropped the rest uncounted.
#[test]
fn a_bridge_that_gives_up_counts_what_it_received_and_lost() {
    let Some(nats) = broker_url("nats", "bridge_gives_up") else {
        return;
    };
    let extra = ["--retry-for", "2s", "--flush", "20ms"];
    let Some(ToOwnRedis {
        mut redis,
        subject,
        first,
        ..
    }) = ToOwnRedis::start(&nats, "bridgelost", &extra)
    else {
        return;
    };
    // Settled by a flush tick before the destination goes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    redis.process.kill();
    let lines: String = (1..=50).map(|n| format!("{n}\n")).collect();
    send(&nats, &["--on", &subject], lines.as_bytes());
    let (status, _, stderr) = first.wait(PATIENCE);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        error.contains("50 message(s) not forwarded, lost"),
        "{stderr}"
    );
}
