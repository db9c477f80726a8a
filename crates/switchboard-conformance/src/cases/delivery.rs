//! Delivery guarantees: order, no silent loss, flush, acknowledgement, and
//! redelivery of what was dropped unacknowledged.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchboard_core::ErrorKind;
use tokio::time::{timeout, Instant};

use super::payload::assert_same;
use super::{
    assert_each_once, close, flush, msg, number_of, numbered, publish, subscribe, subscribe_group,
};
use crate::{expect_silence, recv, recv_n, recv_unacked, Context, RECEIVE_TIMEOUT, SILENCE};

/// Messages [`no_silent_loss_under_flood`] publishes.
pub const FLOOD_MESSAGES: u32 = 200_000;

/// With `capabilities.ordered_per_publisher`, 1000 messages from one publisher
/// on one subject arrive in publish order. Skipped otherwise.
pub async fn ordered_per_publisher(ctx: &Context) {
    if !ctx.capabilities().ordered_per_publisher {
        ctx.skip("capabilities.ordered_per_publisher is false");
        return;
    }
    const N: u32 = 1000;
    let publisher = ctx.connect().await;
    let subject = ctx.subject("ordered");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    for seq in 0..N {
        publish(&publisher, numbered(&subject, 0, seq)).await;
    }
    flush(&publisher).await;
    let deliveries = recv_n(&mut subscription, N as usize).await;
    let order: Vec<u32> = deliveries.iter().map(|d| number_of(d).1).collect();
    if let Some(at) = (0..order.len()).find(|&i| order[i] != i as u32) {
        panic!(
            "messages arrived out of order: position {at} holds message {} (around it: {:?})",
            order[at],
            &order[at.saturating_sub(3)..(at + 4).min(order.len())]
        );
    }
    expect_silence(&mut subscription, SILENCE).await;
}

/// Twenty concurrent publishers (tasks sharing two connections) send 500
/// messages each to one subscriber that keeps up: all 10,000 arrive exactly
/// once, checked by (publisher, sequence number).
pub async fn no_loss_with_concurrent_publishers(ctx: &Context) {
    const PUBLISHERS: u32 = 20;
    const EACH: u32 = 500;
    let total = (PUBLISHERS * EACH) as usize;
    let connections = [ctx.connect().await, ctx.connect().await];
    let subject = ctx.subject("concurrent");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    let receiver = tokio::spawn(async move {
        let deliveries = recv_n(&mut subscription, total).await;
        (subscription, deliveries)
    });
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let broker = Arc::clone(&connections[publisher as usize % connections.len()]);
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..EACH {
                publish(&broker, numbered(&subject, publisher, seq)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a publishing task failed");
    }
    for connection in &connections {
        flush(connection).await;
    }
    let (mut subscription, deliveries) = receiver.await.expect("the receiving task failed");
    let mut seen = HashSet::with_capacity(total);
    let mut doubled = Vec::new();
    for delivery in &deliveries {
        let number = number_of(delivery);
        assert!(
            number.0 < PUBLISHERS && number.1 < EACH,
            "unexpected message {number:?}"
        );
        if !seen.insert(number) {
            doubled.push(number);
        }
    }
    assert!(
        doubled.is_empty(),
        "{} messages arrived twice (so as many others were lost); first: {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    expect_silence(&mut subscription, SILENCE).await;
}

/// [`no_silent_loss_with`] with [`FLOOD_MESSAGES`] (200,000) messages.
pub async fn no_silent_loss_under_flood(ctx: &Context) {
    no_silent_loss_with(ctx, FLOOD_MESSAGES).await;
}

/// One publisher sends `count` small messages as fast as it can while the
/// subscriber only counts them. Every message must arrive exactly once — or,
/// if some are lost (for example a client-side buffer overflowed), the
/// subscription must say so with an `Err` item of kind [`ErrorKind::Lost`].
/// Loss is never silent: the case fails on messages missing without a `Lost`
/// report, on duplicates, and on other error items.
pub async fn no_silent_loss_with(ctx: &Context, count: u32) {
    // Quiet time after which the counter stops waiting for more: generous
    // while the publisher is still sending, shorter once it has flushed.
    const IDLE_WHILE_PUBLISHING: Duration = Duration::from_secs(30);
    const IDLE_AFTER_FLUSH: Duration = Duration::from_secs(5);
    let publisher = ctx.connect().await;
    let subject = ctx.subject("flood");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    let flushed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let counter = tokio::spawn({
        let flushed = Arc::clone(&flushed);
        async move {
            let mut seen = vec![false; count as usize];
            let mut report = FloodReport::default();
            let mut last_item = Instant::now();
            loop {
                match timeout(Duration::from_millis(250), subscription.next()).await {
                    Ok(Some(Ok(mut delivery))) => {
                        last_item = Instant::now();
                        let (_, seq) = number_of(&delivery);
                        match seen.get_mut(seq as usize) {
                            Some(slot) if *slot => report.doubled += 1,
                            Some(slot) => {
                                *slot = true;
                                report.received += 1;
                            }
                            None => report.foreign += 1,
                        }
                        delivery
                            .ack()
                            .await
                            .expect("acknowledging a flood delivery");
                        if report.received == count {
                            break;
                        }
                    }
                    Ok(Some(Err(error))) => {
                        last_item = Instant::now();
                        if error.kind() == ErrorKind::Lost {
                            report.lost_reports.push(error.to_string());
                        } else {
                            report.other_errors.push(error.to_string());
                        }
                    }
                    Ok(None) => {
                        report.ended = true;
                        break;
                    }
                    Err(_) => {
                        let idle = if flushed.load(Ordering::Acquire) {
                            IDLE_AFTER_FLUSH
                        } else {
                            IDLE_WHILE_PUBLISHING
                        };
                        if last_item.elapsed() >= idle {
                            break;
                        }
                    }
                }
            }
            report.elapsed = started.elapsed();
            report
        }
    });
    for seq in 0..count {
        publish(&publisher, numbered(&subject, 0, seq)).await;
    }
    flush(&publisher).await;
    flushed.store(true, Ordering::Release);
    let published_in = started.elapsed();
    let report = counter.await.expect("the counting task failed");
    let missing = count - report.received;
    eprintln!(
        "{} {}: published {count} in {published_in:?}, received {} in {:?}, {} Lost report(s)",
        ctx.broker_name(),
        ctx.case(),
        report.received,
        report.elapsed,
        report.lost_reports.len()
    );
    assert!(
        report.other_errors.is_empty(),
        "the subscription yielded errors other than ErrorKind::Lost: {:?}",
        &report.other_errors[..report.other_errors.len().min(5)]
    );
    assert_eq!(report.doubled, 0, "messages arrived more than once");
    assert_eq!(
        report.foreign, 0,
        "messages with unknown sequence numbers arrived"
    );
    if missing > 0 {
        assert!(
            !report.lost_reports.is_empty(),
            "SILENT LOSS: {missing} of {count} messages never arrived ({} received{}), and the \
             subscription reported no ErrorKind::Lost error; loss must be reported",
            report.received,
            if report.ended {
                ", then the stream ended"
            } else {
                ""
            }
        );
        eprintln!(
            "{} {}: {missing} messages lost and reported: {}",
            ctx.broker_name(),
            ctx.case(),
            report.lost_reports[0]
        );
    }
}

#[derive(Debug, Default)]
struct FloodReport {
    received: u32,
    doubled: u32,
    foreign: u32,
    lost_reports: Vec<String>,
    other_errors: Vec<String>,
    ended: bool,
    elapsed: Duration,
}

/// `flush` after 2000 publishes resolves `Ok`, after which all 2000 are
/// delivered; `flush` on an idle connection, and twice in a row, is `Ok` too.
pub async fn flush_then_all_deliverable(ctx: &Context) {
    const N: u32 = 2000;
    let publisher = ctx.connect().await;
    flush(&publisher).await;
    let subject = ctx.subject("flushed");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    for seq in 0..N {
        publish(&publisher, numbered(&subject, 0, seq)).await;
    }
    flush(&publisher).await;
    flush(&publisher).await;
    let deliveries = recv_n(&mut subscription, N as usize).await;
    assert_each_once(&deliveries, N, "messages published before a flush");
    expect_silence(&mut subscription, SILENCE).await;
}

/// Publishing where nobody subscribes succeeds (the message is simply not
/// delivered), and so does flushing afterwards.
pub async fn publish_without_subscribers_succeeds(ctx: &Context) {
    for seq in 0..10 {
        publish(ctx.broker(), numbered(&ctx.subject("nobody"), 0, seq)).await;
    }
    flush(ctx.broker()).await;
}

/// Without `capabilities.persistence`, a message published before a
/// subscription exists is not delivered to it (the broker keeps nothing, so it
/// must not claim to); the next one is. With persistence this is left to the
/// adapter's own tests (what is kept, and for whom, is broker-specific).
pub async fn no_delivery_before_subscribe(ctx: &Context) {
    if ctx.capabilities().persistence {
        ctx.skip("capabilities.persistence is true; what is kept is adapter-specific");
        return;
    }
    let publisher = ctx.connect().await;
    let subject = ctx.subject("early");
    let before = msg(subject.clone(), "published before subscribing");
    publish(&publisher, before).await;
    flush(&publisher).await;
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    let after = msg(subject, "published after subscribing");
    publish(&publisher, after.clone()).await;
    flush(&publisher).await;
    let delivery = recv(&mut subscription).await;
    assert_same(&delivery, &after);
    expect_silence(&mut subscription, SILENCE).await;
}

/// With `capabilities.ack` and `capabilities.redelivery`: an acked delivery is
/// not delivered again, a nacked one is (with `redelivered()` true), a
/// rejected one is not. Without them, `ack`/`nack`/`reject` are no-ops that
/// return `Ok` and nothing is redelivered. Always: a delivery is
/// acknowledgeable exactly when `capabilities.ack`, first deliveries are not
/// marked redelivered, and acknowledging twice is a harmless no-op.
pub async fn ack_and_nack(ctx: &Context) {
    let capabilities = ctx.capabilities();
    let publisher = ctx.connect().await;
    let subject = ctx.subject("ack");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    for payload in ["acked", "nacked", "rejected"] {
        publish(&publisher, msg(subject.clone(), payload)).await;
    }
    flush(&publisher).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(recv_unacked(&mut subscription).await);
    }
    for delivery in &deliveries {
        assert_eq!(
            delivery.is_acknowledgeable(),
            capabilities.ack,
            "Delivery::is_acknowledgeable should equal capabilities.ack"
        );
        assert!(
            !delivery.redelivered(),
            "a first delivery of {:?} is marked redelivered",
            delivery.payload_str()
        );
    }
    for delivery in &mut deliveries {
        let result = match delivery.payload_str() {
            Some("acked") => delivery.ack().await,
            Some("nacked") => delivery.nack().await,
            Some("rejected") => delivery.reject().await,
            other => panic!("unexpected payload {other:?}"),
        };
        result.unwrap_or_else(|e| {
            panic!(
                "acknowledging {:?} failed: {e}",
                delivery.payload_str().unwrap_or_default()
            )
        });
        delivery
            .ack()
            .await
            .expect("a second ack after ack/nack/reject should be a no-op");
    }
    if capabilities.ack && capabilities.redelivery {
        let mut again = recv_unacked(&mut subscription).await;
        assert_eq!(
            again.payload_str(),
            Some("nacked"),
            "only the nacked message should be delivered again"
        );
        assert!(
            again.redelivered(),
            "a redelivered message should say redelivered() == true"
        );
        again.ack().await.expect("acking the redelivery");
    } else {
        ctx.skip("capabilities.ack and .redelivery are not both true: checked ack/nack are Ok and nothing is redelivered");
    }
    expect_silence(&mut subscription, SILENCE).await;
    // The subscription still works after all that.
    let last = msg(subject, "after acknowledgements");
    publish(&publisher, last.clone()).await;
    flush(&publisher).await;
    assert_same(&recv(&mut subscription).await, &last);
}

/// The delivery contract: a [`Delivery`](switchboard_core::Delivery) dropped
/// without `ack`, `nack` or `reject` is **not** acknowledged, so the broker
/// delivers it again.
///
/// With `capabilities.redelivery` and `capabilities.queue_groups`, twice —
/// once closing the first member's subscription, once closing its whole
/// connection (as a crashed consumer would): a member of a queue group
/// receives a message and drops the delivery unsettled; a second member joins
/// the group, the first goes away, and the second receives the same message
/// with `redelivered() == true`, acknowledges it, and nothing else arrives.
/// An adapter that acknowledges on drop loses the message here.
///
/// Without redelivery: a dropped delivery is simply gone — the subscription
/// is not stalled by it (the next message arrives) and the dropped one does
/// not come back. Prints a `skipped:` line for the part not checked.
pub async fn dropped_delivery_is_redelivered(ctx: &Context) {
    let capabilities = ctx.capabilities();
    if !capabilities.redelivery {
        let subject = ctx.subject("dropped");
        let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
        publish(ctx.broker(), msg(subject.clone(), "dropped")).await;
        flush(ctx.broker()).await;
        drop(recv_unacked(&mut subscription).await);
        let next = msg(subject, "after the dropped one");
        publish(ctx.broker(), next.clone()).await;
        flush(ctx.broker()).await;
        assert_same(&recv(&mut subscription).await, &next);
        expect_silence(&mut subscription, SILENCE).await;
        ctx.skip("capabilities.redelivery is false: checked a dropped delivery neither stalls the subscription nor comes back");
        return;
    }
    if !capabilities.queue_groups {
        ctx.skip("capabilities.queue_groups is false: no other member to receive a dropped delivery again");
        return;
    }
    let publisher = ctx.connect().await;
    let stays = ctx.connect().await;
    for how in ["subscription", "connection"] {
        let pattern = ctx.pattern(&format!("dropped.{how}"));
        let group = ctx.group(&format!("dropped-{how}"));
        let subject = ctx.subject(&format!("dropped.{how}"));
        let leaves = if how == "connection" {
            ctx.connect().await
        } else {
            Arc::clone(ctx.broker())
        };
        let mut first = subscribe_group(&leaves, &pattern, &group).await;
        let message = msg(subject, format!("dropped, then the {how} closed"));
        publish(&publisher, message.clone()).await;
        flush(&publisher).await;
        let delivery = recv_unacked(&mut first).await;
        assert_same(&delivery, &message);
        assert!(
            !delivery.redelivered(),
            "a first delivery is marked redelivered"
        );
        drop(delivery);
        // Joins after the message was taken, so the message can reach it only
        // as a redelivery.
        let mut second = subscribe_group(&stays, &pattern, &group).await;
        if how == "connection" {
            close(&leaves).await;
            drop(first);
        } else {
            timeout(RECEIVE_TIMEOUT, first.close())
                .await
                .expect("Subscription::close did not resolve")
                .expect("Subscription::close failed");
        }
        let mut again = match timeout(RECEIVE_TIMEOUT, second.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(error))) => {
                panic!("the other group member yielded an error instead of the redelivery: {error}")
            }
            Ok(None) => panic!("the other group member's subscription ended"),
            Err(_) => panic!(
                "NOT REDELIVERED: a delivery dropped without ack or nack did not reach the \
                 group's other member within {RECEIVE_TIMEOUT:?} after the first member's {how} \
                 closed; a dropped delivery must stay unacknowledged (was it acknowledged on drop?)"
            ),
        };
        assert_same(&again, &message);
        assert!(
            again.redelivered(),
            "the message dropped without ack came again but says redelivered() == false"
        );
        again.ack().await.expect("acknowledging the redelivery");
        expect_silence(&mut second, SILENCE).await;
    }
}
