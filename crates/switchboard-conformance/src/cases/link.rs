//! A cut link: every connection to the broker is reset under the adapter (by
//! a [`TcpProxy`](crate::TcpProxy) between them, as a broker crash or a
//! network fault would), and the adapter must reconnect and resume on its own.
//!
//! These cases need a URL naming one `host:port` (see
//! [`Context::connect_through_proxy`]); an in-process broker, a unix socket
//! or a list of servers prints a skip line instead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchboard_core::Broker;
use tokio::time::{timeout, Instant};

use super::{flush, number_of, numbered, publish, subscribe};
use crate::{publish_until_received, recv, Context, TcpProxy, RECEIVE_TIMEOUT};

/// How long an adapter may take to notice a cut link, reconnect and resume.
/// Reconnection back-offs of the adapters start below a second; this leaves
/// room for a slow CI machine.
const RECOVERY: Duration = Duration::from_secs(30);

/// How many messages the durable case publishes while the link is down.
const WHILE_CUT: u32 = 20;

/// The proxied connection, or a skip line (and `None`) when the URL cannot be proxied.
async fn proxied(ctx: &Context) -> Option<(Arc<TcpProxy>, Arc<dyn Broker>)> {
    let connected = ctx.connect_through_proxy().await;
    if connected.is_none() {
        ctx.skip(format!(
            "{} names no single host:port to put a proxy in front of",
            ctx.url()
        ));
    }
    connected
}

/// After every connection is reset, a subscription made before the cut
/// receives again, and publishing through the same connection reaches a
/// subscriber again, without the case doing anything but wait: the adapter
/// reconnects (through the proxy: it accepts a second connection) and
/// resubscribes. Messages published while the link is down may be lost at
/// most once, so the case publishes until one arrives, within 30 s.
pub async fn reconnects_after_cut(ctx: &Context) {
    let Some((proxy, cut_off)) = proxied(ctx).await else {
        return;
    };
    let direct = ctx.broker();
    let inbound = ctx.subject("link.inbound");
    let outbound = ctx.subject("link.outbound");

    let mut subscription = subscribe(&cut_off, &ctx.pattern("link.inbound")).await;
    let mut direct_subscription = subscribe(direct, &ctx.pattern("link.outbound")).await;
    publish_until_received(
        &**direct,
        &mut subscription,
        inbound.as_str(),
        RECEIVE_TIMEOUT,
    )
    .await;
    let before = proxy.accepted();

    proxy.cut();

    publish_until_received(&**direct, &mut subscription, inbound.as_str(), RECOVERY).await;
    publish_until_received(
        &*cut_off,
        &mut direct_subscription,
        outbound.as_str(),
        RECOVERY,
    )
    .await;
    assert!(
        proxy.accepted() > before,
        "{}: receiving and publishing work after the cut, but no new connection went \
         through the proxy ({} accepted before the cut, {} after)",
        ctx.case(),
        before,
        proxy.accepted()
    );
}

/// A durable subscription whose link is cut gets, once its adapter has
/// reconnected, every message published (and flushed, so stored) while it
/// was down: the durable consumer kept them. Needs `capabilities.durable`.
pub async fn durable_resumes_after_cut(ctx: &Context) {
    if !ctx.capabilities().durable {
        ctx.skip("capabilities.durable is false");
        return;
    }
    let Some((proxy, cut_off)) = proxied(ctx).await else {
        return;
    };
    let direct = ctx.broker();
    let subject = ctx.subject("link.durable");
    let pattern = ctx.pattern("link.durable");
    let durable = ctx.durable("cut").ack_wait(Duration::from_secs(2));

    let mut subscription = ctx.subscribe_durable(&cut_off, &pattern, &durable).await;
    publish(direct, numbered(&subject, 1, 0)).await;
    flush(direct).await;
    let first = recv(&mut subscription).await;
    assert_eq!(
        number_of(&first),
        (1, 0),
        "{}: the first durable delivery",
        ctx.case()
    );

    proxy.cut();
    for seq in 0..WHILE_CUT {
        publish(direct, numbered(&subject, 0, seq)).await;
    }
    flush(direct).await;

    let mut missing: BTreeSet<u32> = (0..WHILE_CUT).collect();
    let mut deliveries = 0u32;
    let deadline = Instant::now() + RECOVERY;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, subscription.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                deliveries += 1;
                let (publisher, seq) = number_of(&delivery);
                if publisher == 0 {
                    missing.remove(&seq);
                }
                if let Err(error) = delivery.ack().await {
                    eprintln!("acknowledging while recovering: {error}");
                }
            }
            Ok(Some(Err(error))) => eprintln!("error item while recovering: {error}"),
            Ok(None) => panic!(
                "{}: the durable subscription ended after the cut instead of resuming",
                ctx.case()
            ),
            Err(_) => panic!(
                "{}: {} of the {WHILE_CUT} messages published while the link was cut did not \
                 arrive within {RECOVERY:?} (missing: {:?}; {deliveries} deliveries; the proxy \
                 accepted {} connections)",
                ctx.case(),
                missing.len(),
                missing,
                proxy.accepted()
            ),
        }
    }
}
