//! What a broker declares, closing, and input validation.

use switchboard_core::{ErrorKind, Headers, Message, Pattern, QueueGroup, Subject};
use tokio::time::timeout;

use super::payload::{assert_same, round_trip};
use super::{
    assert_each_once, assert_kind, close, expect_err, flush, msg, numbered, publish, subscribe,
    subscribe_group,
};
use crate::{
    expect_end, expect_silence, gather, recv, Context, FLUSH_TIMEOUT, RECEIVE_TIMEOUT, SILENCE,
};

/// `kind()` is the broker name the suite was declared with; capabilities are
/// the same on every call and connection; `max_payload`, if declared, is above
/// zero; `native_headers` implies `headers`; `redelivery` implies `ack`;
/// `durable_storage` implies `durable`; `delivery_count` and `nack_delay`
/// imply `durable` or `ack`.
pub async fn capabilities_are_sane(ctx: &Context) {
    let broker = ctx.broker();
    assert_eq!(
        broker.kind(),
        ctx.broker_name(),
        "Broker::kind() should be the broker name the suite was declared with"
    );
    let capabilities = broker.capabilities();
    eprintln!("{}: {capabilities:?}", ctx.broker_name());
    assert_eq!(
        broker.capabilities(),
        capabilities,
        "capabilities changed between two calls"
    );
    let other = ctx.connect().await;
    assert_eq!(
        other.kind(),
        broker.kind(),
        "two connections differ in kind()"
    );
    assert_eq!(
        other.capabilities(),
        capabilities,
        "two connections to one broker declare different capabilities"
    );
    if let Some(max) = capabilities.max_payload {
        assert!(max > 0, "max_payload is Some(0); use None for no limit");
    }
    assert!(
        !capabilities.native_headers || capabilities.headers,
        "native_headers is true but headers is false: native headers are headers"
    );
    assert!(
        !capabilities.redelivery || capabilities.ack,
        "redelivery is true but ack is false: redelivery follows nack or a missing ack"
    );
    assert!(
        !capabilities.durable_storage || capabilities.durable,
        "durable_storage is true but durable is false: only durable consumers keep messages"
    );
    assert!(
        !(capabilities.delivery_count || capabilities.nack_delay) || capabilities.durable || capabilities.ack,
        "delivery_count or nack_delay is true but neither durable nor ack: they describe acknowledged deliveries"
    );
}

/// A fresh connection's `status()` says connected; after `close()` it says
/// closed. After `close()`: closing again is `Ok`; `publish` fails with
/// [`ErrorKind::Closed`]; so do `subscribe` and `subscribe_group` (the latter
/// may say Unsupported instead where queue groups are); so does `flush` (it
/// was `Ok` on RabbitMQ, Closed on every other broker); none of them hang.
pub async fn close_rejects_publish_and_subscribe(ctx: &Context) {
    let connection = ctx.connect().await;
    let status = connection.status();
    assert!(
        status.connected && !status.closed && status.disconnects == 0,
        "a fresh connection should report connected, not closed, no disconnects: {status:?}"
    );
    close(&connection).await;
    let status = connection.status();
    assert!(
        status.closed && !status.connected,
        "after close, status() should say closed and not connected: {status:?}"
    );
    // Closing twice is fine.
    close(&connection).await;

    let message = msg(ctx.subject("closed"), "after close");
    let error = expect_err(
        timeout(RECEIVE_TIMEOUT, connection.publish(message))
            .await
            .expect("publish after close did not resolve"),
        "publish after close",
    );
    assert_kind(&error, ErrorKind::Closed, "publish after close");

    let error = expect_err(
        timeout(
            RECEIVE_TIMEOUT,
            connection.subscribe(&ctx.pattern("closed")),
        )
        .await
        .expect("subscribe after close did not resolve"),
        "subscribe after close",
    );
    assert_kind(&error, ErrorKind::Closed, "subscribe after close");

    let error = expect_err(
        timeout(
            RECEIVE_TIMEOUT,
            connection.subscribe_group(&ctx.pattern("closed"), &ctx.group("closed")),
        )
        .await
        .expect("subscribe_group after close did not resolve"),
        "subscribe_group after close",
    );
    if ctx.capabilities().queue_groups || error.kind() != ErrorKind::Unsupported {
        assert_kind(&error, ErrorKind::Closed, "subscribe_group after close");
    }

    let error = expect_err(
        timeout(FLUSH_TIMEOUT, connection.flush())
            .await
            .expect("flush after close did not resolve"),
        "flush after close",
    );
    assert_kind(&error, ErrorKind::Closed, "flush after close");
}

/// Closing a connection ends its subscriptions (plain, wildcard and, where
/// supported, group): each stream returns `None` within the timeout.
pub async fn close_ends_subscriptions(ctx: &Context) {
    let connection = ctx.connect().await;
    let mut subscriptions = vec![
        subscribe(&connection, &ctx.pattern("ending")).await,
        subscribe(&connection, &ctx.pattern("ending.>")).await,
    ];
    if ctx.capabilities().queue_groups {
        subscriptions
            .push(subscribe_group(&connection, &ctx.pattern("ending"), &ctx.group("ending")).await);
    }
    close(&connection).await;
    for subscription in &mut subscriptions {
        expect_end(subscription, RECEIVE_TIMEOUT).await;
    }
}

/// `close()` flushes first: 1000 messages published right before it all
/// reach a subscriber on another connection.
pub async fn close_flushes_pending_publishes(ctx: &Context) {
    const N: u32 = 1000;
    let connection = ctx.connect().await;
    let subject = ctx.subject("closing");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    for seq in 0..N {
        publish(&connection, numbered(&subject, 0, seq)).await;
    }
    close(&connection).await;
    let deliveries = gather(&mut subscription, N as usize, SILENCE).await;
    assert_each_once(&deliveries, N, "messages published just before close");
}

/// Closing one connection leaves the others working: their subscriptions
/// still receive, from them and from a third connection.
pub async fn close_leaves_other_connections_working(ctx: &Context) {
    let closing = ctx.connect().await;
    let third = ctx.connect().await;
    let pattern = ctx.pattern("survivor");
    let mut gone = subscribe(&closing, &pattern).await;
    let mut staying = subscribe(ctx.broker(), &pattern).await;
    close(&closing).await;
    expect_end(&mut gone, RECEIVE_TIMEOUT).await;
    let subject = ctx.subject("survivor");
    for (publisher, text) in [
        (ctx.broker(), "same connection"),
        (&third, "third connection"),
    ] {
        let message = msg(subject.clone(), text);
        publish(publisher, message.clone()).await;
        flush(publisher).await;
        assert_same(&recv(&mut staying).await, &message);
    }
    expect_silence(&mut staying, SILENCE).await;
}

/// Malformed subjects, patterns, queue group names and headers are rejected
/// with [`ErrorKind::InvalidInput`] before reaching any broker (the same on
/// every broker by construction), and the broker works normally afterwards.
pub async fn invalid_input_is_rejected(ctx: &Context) {
    let long = "a".repeat(switchboard_core::MAX_SUBJECT_LEN + 1);
    for bad in [
        "", ".a", "a.", "a..b", "a b", "a.*", "a.>", "a.b*", "*", ">", "a\tb", "a\nb", &long,
    ] {
        let what = format!("the subject {bad:?}");
        assert_kind(
            &expect_err(Message::new(bad, "x"), &what),
            ErrorKind::InvalidInput,
            &what,
        );
        assert_kind(
            &expect_err(Subject::new(bad), &what),
            ErrorKind::InvalidInput,
            &what,
        );
    }
    for bad in [
        "", ".", "a..b", ">.a", "a.>.b", "a.b*", "a.*b", "a.>>", "a.**", "a b", &long,
    ] {
        let what = format!("the pattern {bad:?}");
        assert_kind(
            &expect_err(Pattern::new(bad), &what),
            ErrorKind::InvalidInput,
            &what,
        );
    }
    let long_group = "g".repeat(QueueGroup::MAX_LEN + 1);
    for bad in ["", "two words", "a/b", "a*", "é", &long_group] {
        let what = format!("the queue group {bad:?}");
        assert_kind(
            &expect_err(QueueGroup::new(bad), &what),
            ErrorKind::InvalidInput,
            &what,
        );
    }
    let long_name = "n".repeat(switchboard_core::MAX_HEADER_NAME_LEN + 1);
    for (name, value) in [
        ("", "x"),
        ("a:b", "x"),
        ("a b", "x"),
        ("é", "x"),
        (long_name.as_str(), "x"),
        ("ok", "line\nbreak"),
        ("ok", "carriage\rreturn"),
        ("ok", "nul\0"),
        ("ok", " leading space"),
        ("ok", "trailing tab\t"),
    ] {
        let what = format!("the header {name:?}: {value:?}");
        let mut headers = Headers::new();
        assert_kind(
            &expect_err(headers.insert(name, value), &what),
            ErrorKind::InvalidInput,
            &what,
        );
    }
    let message = msg(ctx.subject("valid.after.invalid"), "still fine");
    round_trip(ctx, message).await;
}
