//! A durable listener SIGKILLed in the middle of a stream loses nothing: what
//! it had received but not acknowledged reaches the next listener of the
//! same durable name, with the rest of the stream. Run on every broker whose
//! capabilities say `durable`; duplicates (at-least-once) are counted and
//! printed, never hidden.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::{broker_url, capabilities, remove_durable, unique, Listener, PATIENCE};

/// Messages in the stream.
const MESSAGES: u32 = 3000;

/// Lines the first listener prints before it is killed.
const BEFORE_KILL: usize = 500;

/// One message per this interval, so that the kill lands mid-stream.
const INTERVAL: Duration = Duration::from_micros(500);

/// Publishes `MESSAGES` numbered messages at a steady rate on another
/// thread, flushing at the end; the handle returns how many were published.
fn publish_steadily(url: String, subject: String) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let broker = switchboard::connect(&url).await.unwrap();
            let mut tick = tokio::time::interval(INTERVAL);
            for seq in 0..MESSAGES {
                tick.tick().await;
                let message =
                    switchboard::Message::new(subject.as_str(), format!("n-{seq}")).unwrap();
                broker.publish(message).await.unwrap();
            }
            broker.flush().await.unwrap();
            broker.close().await.unwrap();
            MESSAGES
        })
    })
}

/// The sequence number in a `[subject] n-SEQ` line.
fn seq_of(line: &str) -> u32 {
    let (_, payload) = line
        .rsplit_once(" n-")
        .unwrap_or_else(|| panic!("{line:?}"));
    payload.parse().unwrap_or_else(|_| panic!("{line:?}"))
}

fn sigkilled_listener_loses_nothing(kind: &str) {
    let Some(url) = broker_url(kind, "durable_kill") else {
        return;
    };
    if !capabilities(&url).durable {
        eprintln!("skipped: {kind} has no durable mode (capabilities.durable is false)");
        return;
    }
    let prefix = unique("kill");
    let pattern = format!("{prefix}.>");
    let subject = format!("{prefix}.alert");
    let name = prefix.replace('.', "-");
    let args = ["--on", &pattern, "--durable", &name, "--ack-wait", "1s"];
    let start = || {
        Listener::start(&url, &args).unwrap_or_else(|(status, stderr)| {
            panic!("listen exited with {status} before getting ready: {stderr}")
        })
    };
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();

    let first = start();
    let publisher = publish_steadily(url.clone(), subject.clone());
    for line in first.lines(BEFORE_KILL) {
        *seen.entry(seq_of(&line)).or_default() += 1;
    }
    first.signal("KILL");
    // Lines it wrote before dying are still in the pipe: they were
    // acknowledged, so they count. The pipe ends when the process is gone.
    while let Some(line) = first.line(PATIENCE) {
        *seen.entry(seq_of(&line)).or_default() += 1;
    }
    let (status, stderr) = first.wait(PATIENCE);
    assert!(!status.success(), "the first listener was killed: {stderr}");
    let killed_at = seen.len();

    let second = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < MESSAGES as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match second.line(left) {
            Some(line) => *seen.entry(seq_of(&line)).or_default() += 1,
            None => {
                let missing: Vec<u32> = (0..MESSAGES).filter(|s| !seen.contains_key(s)).collect();
                panic!(
                    "{kind}: {} of {MESSAGES} messages never arrived after the first listener \
                     was killed at {killed_at} (first missing: {:?}); stderr: {}",
                    missing.len(),
                    &missing[..missing.len().min(10)],
                    second.stderr()
                );
            }
        }
    }
    assert_eq!(publisher.join().unwrap(), MESSAGES);
    second.signal("TERM");
    let (status, stderr) = second.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{kind}: all {MESSAGES} messages handled; first listener killed after {killed_at} \
         distinct lines; {duplicates} delivered twice (at-least-once)"
    );
    remove_durable(&url, &pattern, &name);
}

#[test]
fn sigkilled_listener_loses_nothing_on_nats() {
    sigkilled_listener_loses_nothing("nats");
}

#[test]
fn sigkilled_listener_loses_nothing_on_redis() {
    sigkilled_listener_loses_nothing("redis");
}

#[test]
fn sigkilled_listener_loses_nothing_on_amqp() {
    sigkilled_listener_loses_nothing("amqp");
}
