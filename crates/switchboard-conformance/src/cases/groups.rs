//! Queue groups: each message to one member of each group.

use std::sync::Arc;

use futures::stream::{select_all, StreamExt};
use switchboard_core::{Broker, Delivery, ErrorKind, Subscription};
use tokio::time::{timeout, Instant};

use super::{
    assert_each_once, assert_kind, expect_err, flush, numbered, publish, subscribe, subscribe_group,
};
use crate::{gather, Context, RECEIVE_TIMEOUT, SILENCE};

/// Messages published to the groups in these cases.
const N: u32 = 300;

/// Without `capabilities.queue_groups`, checks that `subscribe_group` fails
/// with [`ErrorKind::Unsupported`], prints a skip line and returns `true`.
async fn unsupported(ctx: &Context) -> bool {
    if ctx.capabilities().queue_groups {
        return false;
    }
    let error = expect_err(
        ctx.broker()
            .subscribe_group(&ctx.pattern("group"), &ctx.group("group"))
            .await,
        "subscribe_group where capabilities.queue_groups is false",
    );
    assert_kind(
        &error,
        ErrorKind::Unsupported,
        "subscribe_group where capabilities.queue_groups is false",
    );
    ctx.skip("capabilities.queue_groups is false: checked that subscribe_group is Unsupported");
    true
}

/// Receives from all `members` together until `expected` deliveries arrived in
/// total (allowing [`RECEIVE_TIMEOUT`] between them), then listens [`SILENCE`]
/// for extras. Returns each member's deliveries.
async fn gather_members(members: &mut [Subscription], expected: usize) -> Vec<Vec<Delivery>> {
    let mut received: Vec<Vec<Delivery>> = members.iter().map(|_| Vec::new()).collect();
    let mut merged = select_all(
        members
            .iter_mut()
            .enumerate()
            .map(|(index, member)| member.map(move |item| (index, item))),
    );
    let mut total = 0;
    let mut deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut settling = false;
    loop {
        match tokio::time::timeout_at(deadline, merged.next()).await {
            Ok(Some((index, Ok(mut delivery)))) => {
                delivery
                    .ack()
                    .await
                    .expect("acknowledging a group delivery");
                received[index].push(delivery);
                total += 1;
                if !settling {
                    deadline = Instant::now() + RECEIVE_TIMEOUT;
                }
            }
            Ok(Some((index, Err(error)))) => {
                panic!("group member {index} yielded an error: {error}")
            }
            Ok(None) | Err(_) => break,
        }
        if total >= expected && !settling {
            settling = true;
            deadline = Instant::now() + SILENCE;
        }
    }
    received
}

/// Publishes messages `0..N` to `subject` from `publisher` and flushes.
async fn publish_numbered(publisher: &Arc<dyn Broker>, subject: &switchboard_core::Subject) {
    for seq in 0..N {
        publish(publisher, numbered(subject, 0, seq)).await;
    }
    flush(publisher).await;
}

/// Three members of one queue group (two on one connection, one on another)
/// share 300 messages: each message is delivered to exactly one member, and
/// more than one member gets some. Without `capabilities.queue_groups`,
/// `subscribe_group` must fail with [`ErrorKind::Unsupported`].
pub async fn queue_group_shares_messages(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let other = ctx.connect().await;
    let publisher = ctx.connect().await;
    let pattern = ctx.pattern("work.*");
    let group = ctx.group("workers");
    let mut members = vec![
        subscribe_group(ctx.broker(), &pattern, &group).await,
        subscribe_group(ctx.broker(), &pattern, &group).await,
        subscribe_group(&other, &pattern, &group).await,
    ];
    publish_numbered(&publisher, &ctx.subject("work.item")).await;
    let received = gather_members(&mut members, N as usize).await;
    let shares: Vec<usize> = received.iter().map(Vec::len).collect();
    let all: Vec<Delivery> = received.into_iter().flatten().collect();
    assert_each_once(&all, N, &format!("queue group (shares {shares:?})"));
    assert!(
        shares.iter().filter(|&&n| n > 0).count() > 1,
        "one member of the queue group got all {N} messages (shares {shares:?}); the group does not share work"
    );
}

/// Two queue groups on one pattern each receive every message once (shared
/// among their members), and a plain subscriber on the same pattern receives
/// every message too. Without `capabilities.queue_groups`, checks Unsupported.
pub async fn queue_groups_are_independent(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let other = ctx.connect().await;
    let publisher = ctx.connect().await;
    let pattern = ctx.pattern("jobs.>");
    let first = ctx.group("first");
    let second = ctx.group("second");
    let mut first_members = vec![
        subscribe_group(ctx.broker(), &pattern, &first).await,
        subscribe_group(&other, &pattern, &first).await,
    ];
    let mut second_members = vec![
        subscribe_group(ctx.broker(), &pattern, &second).await,
        subscribe_group(&other, &pattern, &second).await,
    ];
    let mut plain = subscribe(&other, &pattern).await;
    publish_numbered(&publisher, &ctx.subject("jobs.a.b")).await;
    let (first_received, second_received, plain_received) = tokio::join!(
        gather_members(&mut first_members, N as usize),
        gather_members(&mut second_members, N as usize),
        gather(&mut plain, N as usize, SILENCE),
    );
    let first_all: Vec<Delivery> = first_received.into_iter().flatten().collect();
    let second_all: Vec<Delivery> = second_received.into_iter().flatten().collect();
    assert_each_once(&first_all, N, "the first queue group");
    assert_each_once(&second_all, N, "the second queue group");
    assert_each_once(&plain_received, N, "the plain subscriber beside two groups");
}

/// A group member that was closed, or dropped, receives nothing more and
/// takes no share: the remaining member gets every message published
/// afterwards (a member the broker still counted would swallow some).
/// Without `capabilities.queue_groups`, checks Unsupported.
pub async fn closed_group_member_gets_nothing(ctx: &Context) {
    if unsupported(ctx).await {
        return;
    }
    let other = ctx.connect().await;
    let pattern = ctx.pattern("shift");
    let subject = ctx.subject("shift");
    for how in ["closed", "dropped"] {
        let group = ctx.group(how);
        let leaving = subscribe_group(ctx.broker(), &pattern, &group).await;
        let mut staying = vec![subscribe_group(&other, &pattern, &group).await];
        if how == "closed" {
            timeout(RECEIVE_TIMEOUT, leaving.close())
                .await
                .expect("Subscription::close did not resolve")
                .expect("Subscription::close failed");
        } else {
            drop(leaving);
            // Dropping unsubscribes in the background; give it a moment.
            tokio::time::sleep(SILENCE).await;
        }
        flush(ctx.broker()).await;
        // Published on the leaving member's connection, after its unsubscribe.
        publish_numbered(ctx.broker(), &subject).await;
        let received = gather_members(&mut staying, N as usize).await;
        let all: Vec<Delivery> = received.into_iter().flatten().collect();
        assert_each_once(
            &all,
            N,
            &format!("the member left after the other was {how}"),
        );
    }
}
