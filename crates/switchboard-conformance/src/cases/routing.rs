//! Messages go where their subject says, and only there.

use std::collections::BTreeMap;

use futures::future::join_all;
use switchboard_core::{ErrorKind, Pattern, Subject, Subscription, MAX_SUBJECT_LEN};

use super::payload::assert_same;
use super::{assert_each_once, assert_kind, expect_err, flush, msg, numbered, publish, subscribe};
use crate::{expect_silence, gather, recv, recv_n, Context, SILENCE};

/// What each subscription received, compared with what [`Pattern::matches`]
/// says it should have: one line per subscription that differs.
fn routing_mismatches(
    subscriptions: &[(Pattern, Subscription)],
    received: &[Vec<switchboard_core::Delivery>],
    subjects: &[Subject],
) -> Vec<String> {
    let mut lines = Vec::new();
    for ((pattern, _), deliveries) in subscriptions.iter().zip(received) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for delivery in deliveries {
            *counts.entry(delivery.subject().as_str()).or_default() += 1;
        }
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        for subject in subjects {
            let count = counts.remove(subject.as_str()).unwrap_or(0);
            match (pattern.matches(subject.as_str()), count) {
                (true, 1) | (false, 0) => {}
                (true, 0) => missing.push(subject.as_str().to_string()),
                (_, n) => wrong.push(format!("{subject:?} x{n}")),
            }
        }
        wrong.extend(counts.into_iter().map(|(s, n)| format!("{s:?} x{n}")));
        if !missing.is_empty() || !wrong.is_empty() {
            lines.push(format!(
                "  pattern {pattern:?}: missing {missing:?}, unexpected {wrong:?}"
            ));
        }
    }
    lines
}

/// Subscribes `patterns` on the case's first connection, publishes one message
/// to each of `subjects` from a second one, and asserts every subscription got
/// exactly the subjects its pattern matches (by [`Pattern::matches`]), once each.
async fn assert_routing(ctx: &Context, patterns: &[Pattern], subjects: &[Subject], what: &str) {
    let publisher = ctx.connect().await;
    let mut subscriptions = Vec::new();
    for pattern in patterns {
        let subscription = subscribe(ctx.broker(), pattern).await;
        subscriptions.push((pattern.clone(), subscription));
    }
    for subject in subjects {
        let message = msg(subject.clone(), subject.as_str().to_string());
        publish(&publisher, message).await;
    }
    flush(&publisher).await;
    let received = join_all(subscriptions.iter_mut().map(|(pattern, subscription)| {
        let expected = subjects
            .iter()
            .filter(|s| pattern.matches(s.as_str()))
            .count();
        gather(subscription, expected, SILENCE)
    }))
    .await;
    for deliveries in &received {
        for delivery in deliveries {
            assert_eq!(
                delivery.payload_str(),
                Some(delivery.subject().as_str()),
                "a delivery's payload does not match its subject (it carries the subject it was published to)"
            );
        }
    }
    let mismatches = routing_mismatches(&subscriptions, &received, subjects);
    assert!(
        mismatches.is_empty(),
        "{what}: subscriptions did not receive exactly what Pattern::matches says:\n{}",
        mismatches.join("\n")
    );
}

/// A subscriber on `a.b` receives nothing published to `a.c`, `a`, `a.b.c`,
/// `a.bc` or `ab`, and does receive `a.b`.
pub async fn subjects_stay_separate(ctx: &Context) {
    let publisher = ctx.connect().await;
    let mut subscription = subscribe(ctx.broker(), &ctx.pattern("a.b")).await;
    for other in ["a.c", "a", "a.b.c", "a.bc", "ab", "b.b"] {
        let message = msg(ctx.subject(other), other);
        publish(&publisher, message).await;
    }
    let marker = msg(ctx.subject("a.b"), "marker");
    publish(&publisher, marker.clone()).await;
    flush(&publisher).await;
    let delivery = recv(&mut subscription).await;
    assert_same(&delivery, &marker);
    expect_silence(&mut subscription, SILENCE).await;
}

/// `*` and `>` deliver exactly what [`Pattern::matches`] says, non-matches
/// included: a table of patterns (literal, `*`, `>`, several wildcards) is
/// subscribed, every subject of a table is published, and each subscription
/// must receive exactly its matching subjects once. Covers `>` not matching
/// the bare prefix, `*` not spanning dots, and a subject matched by several
/// subscriptions of one connection reaching each of them.
pub async fn wildcards_match_reference(ctx: &Context) {
    let subjects: Vec<Subject> = [
        "", "a", "b", "ab", "a.b", "a.c", "a.bc", "b.b", "a.b.c", "x.b.c", "a.x.c", "a.b.c.d",
    ]
    .iter()
    .map(|s| ctx.subject(s))
    .collect();
    let patterns: Vec<Pattern> = [
        "", "a", "a.b", "*", "a.*", "*.b", "*.*", ">", "a.>", "b.>", "ab.>", "*.b.>", "*.*.c",
        "a.*.c", "a.*.>", "*.*.*", "*.*.*.*",
    ]
    .iter()
    .map(|p| ctx.pattern(p))
    .collect();
    // The table must exercise the edge cases it claims to.
    assert!(!ctx.pattern("a.>").matches(ctx.subject("a").as_str()));
    assert!(!ctx.pattern("*").matches(ctx.subject("a.b").as_str()));
    assert!(ctx.pattern("*.b.>").matches(ctx.subject("x.b.c").as_str()));
    assert_routing(ctx, &patterns, &subjects, "wildcard table").await;
}

/// Tokens that are wildcards or special characters on some broker (`#` in
/// AMQP, `?` `[ab]` `\` in Redis globs, `+` in MQTT, regex characters),
/// Unicode, and letter case are literal: a subscription to `prefix.#`
/// receives only `prefix.#`, `Case` and `case` are different subjects, and
/// `prefix.*` receives them all.
pub async fn unusual_tokens_are_literal(ctx: &Context) {
    let tokens = [
        "#",
        "?",
        "[ab]",
        "a",
        "b",
        "\\",
        "%",
        "+",
        "(x)",
        "x|y",
        "^$",
        "{a,b}",
        "a=b",
        "@",
        "&",
        "~",
        "$dollar",
        "héllo",
        "日本",
        "Case",
        "case",
        "CASE",
        "dash-1",
        "under_score",
        "0",
    ];
    let subjects: Vec<Subject> = tokens.iter().map(|t| ctx.subject(t)).collect();
    let mut patterns: Vec<Pattern> = tokens.iter().map(|t| ctx.pattern(t)).collect();
    patterns.push(ctx.pattern("*"));
    assert_routing(ctx, &patterns, &subjects, "unusual tokens").await;
}

/// A subject of exactly [`MAX_SUBJECT_LEN`] bytes is delivered, to a literal
/// and to a `>` subscription; one byte more is rejected as invalid input.
pub async fn subject_at_max_length(ctx: &Context) {
    let needed = MAX_SUBJECT_LEN - ctx.prefix().len() - 1;
    let mut name = String::with_capacity(needed);
    while name.len() < needed {
        if name.len() % 32 == 31 && name.len() + 1 < needed {
            name.push('.');
        } else {
            name.push('m');
        }
    }
    let subject = ctx.subject(&name);
    assert_eq!(subject.as_str().len(), MAX_SUBJECT_LEN);
    let too_long = format!("{}m", subject.as_str());
    let error = expect_err(Subject::new(&too_long), "a 256-byte subject");
    assert_kind(&error, ErrorKind::InvalidInput, "a 256-byte subject");

    let publisher = ctx.connect().await;
    let mut literal = subscribe(ctx.broker(), &subject.clone().into()).await;
    let mut rest = subscribe(ctx.broker(), &ctx.pattern(">")).await;
    let message = msg(subject, "longest subject");
    publish(&publisher, message.clone()).await;
    flush(&publisher).await;
    assert_same(&recv(&mut literal).await, &message);
    assert_same(&recv(&mut rest).await, &message);
    expect_silence(&mut literal, SILENCE).await;
}

/// Messages cross connections both ways, and a connection also receives its
/// own messages: subscribers on two connections each get what both published.
pub async fn cross_connection_delivery(ctx: &Context) {
    let other = ctx.connect().await;
    let pattern = ctx.pattern("cross");
    let mut here = subscribe(ctx.broker(), &pattern).await;
    let mut there = subscribe(&other, &pattern).await;
    let subject = ctx.subject("cross");
    let from_here = msg(subject.clone(), "from the first connection");
    let from_there = msg(subject, "from the second connection");
    publish(ctx.broker(), from_here.clone()).await;
    publish(&other, from_there.clone()).await;
    flush(ctx.broker()).await;
    flush(&other).await;
    for subscription in [&mut here, &mut there] {
        let mut payloads: Vec<Vec<u8>> = recv_n(subscription, 2)
            .await
            .iter()
            .map(|d| d.payload().to_vec())
            .collect();
        payloads.sort();
        let mut expected = vec![from_here.payload().to_vec(), from_there.payload().to_vec()];
        expected.sort();
        assert_eq!(
            payloads,
            expected,
            "subscription {:?} did not get one message from each connection",
            subscription.pattern()
        );
        expect_silence(subscription, SILENCE).await;
    }
}

/// Once `subscribe` resolves the subscription is live: a message published
/// right away from another connection (no sleep) is received, 20 times over
/// with fresh subscriptions.
pub async fn subscription_is_live_when_subscribe_returns(ctx: &Context) {
    let publisher = ctx.connect().await;
    for round in 0..20 {
        let name = format!("live.{round}");
        let mut subscription = subscribe(ctx.broker(), &ctx.pattern(&name)).await;
        let message = msg(ctx.subject(&name), format!("round {round}"));
        publish(&publisher, message.clone()).await;
        flush(&publisher).await;
        assert_same(&recv(&mut subscription).await, &message);
    }
}

/// Fifty subscriptions on one connection, each on its own subject, each get
/// exactly their own message (no cross-talk between multiplexed subscriptions).
pub async fn many_subscriptions_on_one_connection(ctx: &Context) {
    let subjects: Vec<Subject> = (0..50).map(|i| ctx.subject(&format!("many.{i}"))).collect();
    let patterns: Vec<Pattern> = subjects.iter().map(|s| s.clone().into()).collect();
    assert_routing(ctx, &patterns, &subjects, "fifty subscriptions").await;
}

/// Three subscribers on one pattern (two on one connection, one on another)
/// each receive every one of 100 messages exactly once.
pub async fn fan_out_to_every_subscriber(ctx: &Context) {
    let other = ctx.connect().await;
    let publisher = ctx.connect().await;
    let pattern = ctx.pattern("fan.*");
    let mut subscriptions = [
        subscribe(ctx.broker(), &pattern).await,
        subscribe(ctx.broker(), &pattern).await,
        subscribe(&other, &pattern).await,
    ];
    let subject = ctx.subject("fan.out");
    const N: u32 = 100;
    for seq in 0..N {
        publish(&publisher, super::numbered(&subject, 0, seq)).await;
    }
    flush(&publisher).await;
    for (index, subscription) in subscriptions.iter_mut().enumerate() {
        let deliveries = gather(subscription, N as usize, SILENCE).await;
        assert_each_once(&deliveries, N, &format!("fan-out subscriber {index}"));
    }
}

/// Closing (with [`Subscription::close`]) or dropping one subscription leaves
/// the others on the same pattern and connection receiving: adapters that
/// share one broker subscription between several must not unsubscribe it
/// while one is left.
pub async fn unsubscribe_leaves_other_subscriptions(ctx: &Context) {
    let pattern = ctx.pattern("unsub");
    let closed = subscribe(ctx.broker(), &pattern).await;
    let dropped = subscribe(ctx.broker(), &pattern).await;
    let mut witness = subscribe(ctx.broker(), &pattern).await;
    tokio::time::timeout(crate::RECEIVE_TIMEOUT, closed.close())
        .await
        .expect("Subscription::close did not resolve")
        .expect("Subscription::close failed");
    drop(dropped);
    // Dropping unsubscribes in the background; give it a moment, then flush.
    tokio::time::sleep(SILENCE).await;
    flush(ctx.broker()).await;
    let subject = ctx.subject("unsub");
    const N: u32 = 20;
    for seq in 0..N {
        publish(ctx.broker(), numbered(&subject, 0, seq)).await;
    }
    flush(ctx.broker()).await;
    let deliveries = gather(&mut witness, N as usize, SILENCE).await;
    assert_each_once(&deliveries, N, "the subscription left open");
}

/// Subscribing again right after closing or dropping a subscription to the
/// same pattern works at once: the new one receives what is published next
/// (and only that), five rounds alternating close and drop.
pub async fn resubscribe_after_close(ctx: &Context) {
    let publisher = ctx.connect().await;
    let pattern = ctx.pattern("again");
    let subject = ctx.subject("again");
    for round in 0..6u32 {
        let mut subscription = subscribe(ctx.broker(), &pattern).await;
        let message = numbered(&subject, 0, round);
        publish(&publisher, message.clone()).await;
        flush(&publisher).await;
        assert_same(&recv(&mut subscription).await, &message);
        if round % 2 == 0 {
            tokio::time::timeout(crate::RECEIVE_TIMEOUT, subscription.close())
                .await
                .expect("Subscription::close did not resolve")
                .expect("Subscription::close failed");
        } else {
            drop(subscription);
        }
    }
}
