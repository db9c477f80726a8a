//! Durable subscriptions: kept while away, removed when acknowledged,
//! redelivered after a nack or a missed ack deadline with a rising delivery
//! count, capped by `max_deliver`, shared by a group (a member that leaves
//! hands back what it fetched ahead), resumed where they stopped.
//!
//! Every case here needs `capabilities.durable`; without it each checks that
//! `subscribe_durable` fails with [`ErrorKind::Unsupported`] and prints a
//! skip line. Consumers use a one-second `ack_wait` so that redeliveries come
//! quickly, and are removed from the broker by [`Context::finish`].

use std::time::Duration;

use futures::StreamExt;
use switchboard_core::{Delivery, Durable, ErrorKind, Subscription};
use tokio::time::{timeout, Instant};

use super::payload::assert_same;
use super::{assert_each_once, assert_kind, expect_err, flush, msg, number_of, numbered, publish};
use crate::{expect_silence, recv, recv_n, recv_unacked, Context, RECEIVE_TIMEOUT, SILENCE};

/// The `ack_wait` of the consumers in these cases.
const ACK_WAIT: Duration = Duration::from_secs(1);

/// How long "nothing is delivered again" checks listen: longer than
/// [`ACK_WAIT`], so that a delivery whose ack was lost would come back.
const NO_REDELIVERY: Duration = Duration::from_millis(2500);

/// Without `capabilities.durable`, checks that `subscribe_durable` fails
/// with [`ErrorKind::Unsupported`], prints a skip line and returns `true`.
async fn unsupported(ctx: &Context) -> bool {
    if ctx.capabilities().durable {
        return false;
    }
    let what = "subscribe_durable where capabilities.durable is false";
    let error = expect_err(
        ctx.broker()
            .subscribe_durable(&ctx.pattern("durable"), &ctx.durable("durable"))
            .await,
        what,
    );
    assert_kind(&error, ErrorKind::Unsupported, what);
    ctx.skip("capabilities.durable is false: checked that subscribe_durable is Unsupported");
    true
}

/// A consumer of this case named `name`, with [`ACK_WAIT`].
fn consumer(ctx: &Context, name: &str) -> Durable {
    ctx.durable(name).ack_wait(ACK_WAIT)
}

/// Member `name` of the durable group named after `group`: a consumer
/// name of its own, the group's name as its group, and `ack_wait`.
fn group_member(group: &Durable, name: &str, ack_wait: Duration) -> Durable {
    Durable::new(&format!("{}-{name}", group.name))
        .and_then(|d| d.group(group.name.as_str()))
        .map(|d| d.ack_wait(ack_wait))
        .expect("a valid member name")
}

/// Closes a subscription, failing the case if that fails or hangs.
async fn close_subscription(subscription: Subscription) {
    match timeout(RECEIVE_TIMEOUT, subscription.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("closing a durable subscription failed: {error}"),
        Err(_) => {
            panic!("closing a durable subscription did not finish within {RECEIVE_TIMEOUT:?}")
        }
    }
}

/// Where the broker counts deliveries, asserts `delivery` is the `count`th.
fn assert_count(ctx: &Context, delivery: &Delivery, count: u32, what: &str) {
    if !ctx.capabilities().delivery_count {
        return;
    }
    assert_eq!(
        delivery.delivery_count(),
        Some(count),
        "{what}: expected delivery count {count}, got {:?}",
        delivery.delivery_count()
    );
    assert_eq!(
        delivery.redelivered(),
        count > 1,
        "{what}: redelivered() disagrees with delivery count {count}"
    );
}

/// Messages published while no member of a durable consumer is subscribed
/// (by a connection opened before the consumer existed, publishing as it
/// always does) are delivered when a member comes back, each once.
pub async fn durable_keeps_messages_while_away(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    // Connected before the consumer exists: the publisher does not change.
    let publisher = ctx.connect().await;
    let pattern = ctx.pattern("away.>");
    let durable = consumer(ctx, "away");
    let first = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    close_subscription(first).await;
    const N: u32 = 5;
    let subject = ctx.subject("away.alert");
    for seq in 0..N {
        publish(&publisher, numbered(&subject, 0, seq)).await;
    }
    flush(&publisher).await;
    let mut back = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let deliveries = recv_n(&mut back, N as usize).await;
    assert_each_once(
        &deliveries,
        N,
        "messages published while the consumer was away",
    );
    for delivery in &deliveries {
        assert_count(ctx, delivery, 1, "a message kept while away");
    }
    expect_silence(&mut back, NO_REDELIVERY).await;
}

/// An acknowledged message is gone: a member that comes back gets only
/// what was not acknowledged, and nothing is delivered again after the ack
/// deadline.
pub async fn durable_ack_removes(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("acked");
    let durable = consumer(ctx, "acked");
    let subject = ctx.subject("acked");
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    const N: u32 = 4;
    for seq in 0..N {
        publish(ctx.broker(), numbered(&subject, 0, seq)).await;
    }
    flush(ctx.broker()).await;
    let deliveries = recv_n(&mut subscription, N as usize).await;
    assert_each_once(&deliveries, N, "the first deliveries");
    expect_silence(&mut subscription, NO_REDELIVERY).await;
    close_subscription(subscription).await;
    let mut back = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let after = msg(subject, "published after the acks");
    publish(ctx.broker(), after.clone()).await;
    flush(ctx.broker()).await;
    let next = recv(&mut back).await;
    assert_same(&next, &after);
    expect_silence(&mut back, NO_REDELIVERY).await;
}

/// A nacked message comes again at once, its delivery count rising with
/// each delivery (where the broker counts), until it is acknowledged.
pub async fn durable_nack_redelivers_with_count(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("nacked");
    let durable = consumer(ctx, "nacked");
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let message = msg(ctx.subject("nacked"), "nack me twice");
    publish(ctx.broker(), message.clone()).await;
    flush(ctx.broker()).await;
    for count in 1..=3u32 {
        let mut delivery = recv_unacked(&mut subscription).await;
        assert_same(&delivery, &message);
        assert_count(ctx, &delivery, count, "a nacked message delivered again");
        if count < 3 {
            delivery.nack().await.expect("nack of a durable delivery");
        } else {
            delivery.ack().await.expect("ack of a durable delivery");
        }
    }
    expect_silence(&mut subscription, NO_REDELIVERY).await;
}

/// With `capabilities.nack_delay`, a message nacked with a delay of one
/// second comes again no sooner than about that. Without it,
/// `nack_with_delay` fails with [`ErrorKind::Unsupported`] and leaves the
/// delivery unsettled, so a plain `nack` still delivers it again.
pub async fn durable_nack_with_delay(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    const DELAY: Duration = Duration::from_secs(1);
    let pattern = ctx.pattern("delayed");
    let durable = consumer(ctx, "delayed").ack_wait(Duration::from_secs(30));
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let message = msg(ctx.subject("delayed"), "later, please");
    publish(ctx.broker(), message.clone()).await;
    flush(ctx.broker()).await;
    let mut delivery = recv_unacked(&mut subscription).await;
    if !ctx.capabilities().nack_delay {
        let error = expect_err(
            delivery.nack_with_delay(DELAY).await,
            "nack_with_delay where capabilities.nack_delay is false",
        );
        assert_kind(
            &error,
            ErrorKind::Unsupported,
            "nack_with_delay unsupported",
        );
        let kind = ctx.broker().kind();
        assert!(
            error.to_string().starts_with(kind),
            "an unsupported delay should name the broker ({kind}): {error}"
        );
        delivery
            .nack()
            .await
            .expect("nack after an unsupported delay");
        let mut again = recv_unacked(&mut subscription).await;
        assert_same(&again, &message);
        again.ack().await.expect("ack");
        ctx.skip("capabilities.nack_delay is false: checked Unsupported and that the delivery stayed unsettled");
        return;
    }
    let nacked = Instant::now();
    delivery
        .nack_with_delay(DELAY)
        .await
        .expect("nack_with_delay of a durable delivery");
    expect_silence(&mut subscription, DELAY.mul_f32(0.7)).await;
    let mut again = recv_unacked(&mut subscription).await;
    let waited = nacked.elapsed();
    assert_same(&again, &message);
    assert_count(ctx, &again, 2, "a message nacked with a delay");
    assert!(
        waited >= DELAY.mul_f32(0.8),
        "a message nacked with a delay of {DELAY:?} came again after {waited:?}"
    );
    again.ack().await.expect("ack");
    expect_silence(&mut subscription, NO_REDELIVERY).await;
}

/// A delivery neither acknowledged nor nacked comes again once `ack_wait`
/// (one second) is over — not before — with a higher delivery count: one
/// held by the handler, and one dropped unsettled (a `?` that bailed out;
/// RabbitMQ kept that one unacknowledged for as long as the subscription
/// lived).
pub async fn durable_ack_wait_redelivers(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("unacked");
    let durable = consumer(ctx, "unacked");
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let message = msg(ctx.subject("unacked"), "never acknowledged");
    let dropped = msg(ctx.subject("unacked"), "dropped unsettled");
    publish(ctx.broker(), message.clone()).await;
    publish(ctx.broker(), dropped.clone()).await;
    flush(ctx.broker()).await;
    let held = recv_unacked(&mut subscription).await;
    assert_same(&held, &message);
    drop(recv_unacked(&mut subscription).await);
    let delivered = Instant::now();
    assert_count(ctx, &held, 1, "the first delivery");
    let mut again = recv_unacked(&mut subscription).await;
    let waited = delivered.elapsed();
    let mut dropped_again = recv_unacked(&mut subscription).await;
    if again.payload() != message.payload() {
        std::mem::swap(&mut again, &mut dropped_again);
    }
    assert_same(&again, &message);
    assert_same(&dropped_again, &dropped);
    assert_count(ctx, &again, 2, "a delivery redelivered after ack_wait");
    assert_count(
        ctx,
        &dropped_again,
        2,
        "a dropped delivery redelivered after ack_wait",
    );
    assert!(
        waited >= ACK_WAIT.mul_f32(0.8),
        "an unacknowledged delivery came again after {waited:?}, before ack_wait ({ACK_WAIT:?})"
    );
    again.ack().await.expect("ack");
    dropped_again.ack().await.expect("ack");
    drop(held);
    expect_silence(&mut subscription, NO_REDELIVERY).await;
}

/// With `max_deliver = 2`, a message nacked on both deliveries is not
/// delivered a third time (neither at once nor after `ack_wait`), and the
/// consumer goes on with the next message.
pub async fn durable_max_deliver_stops(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("poison.*");
    let durable = consumer(ctx, "poison").max_deliver(2);
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let poison = msg(ctx.subject("poison.bad"), "fails every time");
    publish(ctx.broker(), poison.clone()).await;
    flush(ctx.broker()).await;
    for count in 1..=2u32 {
        let mut delivery = recv_unacked(&mut subscription).await;
        assert_same(&delivery, &poison);
        assert_count(ctx, &delivery, count, "a failing message");
        delivery.nack().await.expect("nack");
    }
    expect_silence(&mut subscription, NO_REDELIVERY).await;
    let good = msg(ctx.subject("poison.good"), "fine");
    publish(ctx.broker(), good.clone()).await;
    flush(ctx.broker()).await;
    let next = recv(&mut subscription).await;
    assert_same(&next, &good);
    assert_count(ctx, &next, 1, "the message after a poison one");
    expect_silence(&mut subscription, NO_REDELIVERY).await;
}

/// Two members of one durable group (on two connections) share its
/// messages: each message reaches one of them. A member that leaves with a
/// delivery unacknowledged does not lose it: the other member gets it.
pub async fn durable_group_shares_work(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let other = ctx.connect().await;
    let pattern = ctx.pattern("shared.>");
    let group = ctx.durable("shared");
    let member = |name: &str| group_member(&group, name, ACK_WAIT);
    let mut a = ctx
        .subscribe_durable(ctx.broker(), &pattern, &member("a"))
        .await;
    let mut b = ctx.subscribe_durable(&other, &pattern, &member("b")).await;
    const N: u32 = 20;
    let subject = ctx.subject("shared.job");
    for seq in 0..N {
        publish(ctx.broker(), numbered(&subject, 0, seq)).await;
    }
    flush(ctx.broker()).await;
    // A takes one message and leaves without settling it.
    let taken = recv_unacked(&mut a).await;
    let taken_number = number_of(&taken);
    drop(taken);
    close_subscription(a).await;
    // B gets the rest, and what A left once its ack deadline is over.
    let mut deliveries = Vec::new();
    let deadline = Instant::now() + RECEIVE_TIMEOUT + ACK_WAIT;
    while deliveries.len() < N as usize {
        match tokio::time::timeout_at(deadline, b.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                delivery
                    .ack()
                    .await
                    .expect("ack by the group's other member");
                deliveries.push(delivery);
            }
            Ok(Some(Err(error))) => panic!("the group's other member yielded an error: {error}"),
            Ok(None) => panic!("the group's other member's subscription ended"),
            Err(_) => break,
        }
    }
    assert_each_once(
        &deliveries,
        N,
        "what the remaining member of a durable group received (one message left unacked by the member that left)",
    );
    let again = deliveries
        .iter()
        .find(|d| number_of(d) == taken_number)
        .expect("the message the leaving member took");
    assert_count(ctx, again, 2, "the message the leaving member left unacked");
    expect_silence(&mut b, NO_REDELIVERY).await;
}

/// A member of a durable group that leaves (closed) hands back what it had
/// fetched ahead and not yet given out: the group's other member gets it at
/// once, not after the ack deadline (60 s here, far beyond the wait). Only
/// what a member's handler held unsettled waits for the deadline (see
/// [`durable_group_shares_work`]).
pub async fn durable_leaving_member_hands_back(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    const LONG_ACK_WAIT: Duration = Duration::from_secs(60);
    let other = ctx.connect().await;
    let pattern = ctx.pattern("handback.>");
    let group = ctx.durable("handback");
    let member = |name: &str| group_member(&group, name, LONG_ACK_WAIT);
    let mut a = ctx
        .subscribe_durable(ctx.broker(), &pattern, &member("a"))
        .await;
    const N: u32 = 10;
    let subject = ctx.subject("handback.job");
    for seq in 0..N {
        publish(ctx.broker(), numbered(&subject, 0, seq)).await;
    }
    flush(ctx.broker()).await;
    // A is alone: whatever it fetches ahead, it takes one, settles it, leaves.
    let first = recv(&mut a).await;
    let mut b = ctx.subscribe_durable(&other, &pattern, &member("b")).await;
    close_subscription(a).await;
    let rest = recv_n(&mut b, N as usize - 1).await;
    let mut all = vec![first];
    all.extend(rest);
    assert_each_once(
        &all,
        N,
        "what a leaving member took, and what the group's other member got after it left (well before the 60 s ack deadline)",
    );
    expect_silence(&mut b, NO_REDELIVERY).await;
}

/// A member that acknowledged part of the backlog, closed, and came back
/// gets exactly the rest.
pub async fn durable_resume_continues(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("resume");
    let durable = consumer(ctx, "resume");
    let subject = ctx.subject("resume");
    let mut subscription = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    const N: u32 = 10;
    const FIRST: usize = 4;
    for seq in 0..N {
        publish(ctx.broker(), numbered(&subject, 0, seq)).await;
    }
    flush(ctx.broker()).await;
    let mut first = Vec::new();
    while first.len() < FIRST {
        first.push(recv(&mut subscription).await);
    }
    // Whatever else reached this member unacknowledged comes again later.
    close_subscription(subscription).await;
    let mut back = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let rest = recv_n(&mut back, N as usize - FIRST).await;
    let mut all = first;
    all.extend(rest);
    assert_each_once(&all, N, "before closing and after resuming");
    expect_silence(&mut back, NO_REDELIVERY).await;
}

/// A durable consumer over a pattern with `*` and `>` keeps, while away,
/// exactly the messages whose subjects match it.
pub async fn durable_wildcard_pattern(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let pattern = ctx.pattern("wild.*.alert.>");
    let durable = consumer(ctx, "wild");
    let first = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    close_subscription(first).await;
    let matching = ["wild.eu.alert.cpu", "wild.us.alert.disk.full"];
    let other = [
        "wild.eu.alert",
        "wild.alert.cpu",
        "wild.eu.info.cpu",
        "wildly.eu.alert.x",
    ];
    for name in other.iter().chain(matching.iter()) {
        publish(ctx.broker(), msg(ctx.subject(name), *name)).await;
    }
    flush(ctx.broker()).await;
    let mut back = ctx
        .subscribe_durable(ctx.broker(), &pattern, &durable)
        .await;
    let mut got: Vec<String> = recv_n(&mut back, matching.len())
        .await
        .iter()
        .map(|d| d.payload_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    assert_eq!(
        got, matching,
        "the messages a durable wildcard pattern kept"
    );
    expect_silence(&mut back, SILENCE).await;
}
