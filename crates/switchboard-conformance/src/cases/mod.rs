//! The conformance cases: each is an `async fn(&Context)` that panics on a failure.
//!
//! [`suite!`](crate::suite) runs all of them (the list is [`ALL`]). Every case
//! works under its context's random prefix, subscribes before it publishes,
//! bounds every wait, and leaves closing the connections to
//! [`Context::finish`](crate::Context::finish).
//!
//! Cases that need a capability check the honest behaviour when it is absent
//! (for example [`ErrorKind::Unsupported`])
//! or print a `skipped:` line; each case's doc says which.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchboard_core::{
    Broker, Delivery, Error, ErrorKind, Message, Pattern, QueueGroup, Subscription,
};
use tokio::time::timeout;

use crate::receive::show_payload;
use crate::Context;
use crate::{FLUSH_TIMEOUT, RECEIVE_TIMEOUT};

mod delivery;
mod durable;
mod groups;
mod headers;
mod lifecycle;
mod link;
mod payload;
mod request;
mod routing;

pub use delivery::{
    ack_and_nack, dropped_delivery_is_redelivered, flush_then_all_deliverable,
    no_delivery_before_subscribe, no_loss_with_concurrent_publishers, no_silent_loss_under_flood,
    no_silent_loss_with, ordered_per_publisher, publish_without_subscribers_succeeds,
    FLOOD_MESSAGES,
};
pub use durable::{
    durable_ack_removes, durable_ack_wait_redelivers, durable_group_shares_work,
    durable_keeps_messages_while_away, durable_leaving_member_hands_back,
    durable_max_deliver_stops, durable_nack_redelivers_with_count, durable_nack_with_delay,
    durable_resume_continues, durable_wildcard_pattern,
};
pub use groups::{
    closed_group_member_gets_nothing, queue_group_shares_messages, queue_groups_are_independent,
};
pub use headers::{
    headers_edge_cases, headers_round_trip, no_headers_arrive_empty,
    oversized_header_is_carried_or_refused,
};
pub use lifecycle::{
    capabilities_are_sane, close_ends_subscriptions, close_flushes_pending_publishes,
    close_leaves_other_connections_working, close_rejects_publish_and_subscribe,
    invalid_input_is_rejected,
};
pub use link::{durable_resumes_after_cut, reconnects_after_cut};
pub use payload::{
    payload_binary, payload_empty, payload_limit_is_exact, payload_one_mebibyte, payload_utf8,
};
pub use request::{
    request_gets_the_error_reply, request_gets_the_reply, request_without_responders_fails,
};
pub use routing::{
    cross_connection_delivery, fan_out_to_every_subscriber, many_subscriptions_on_one_connection,
    resubscribe_after_close, subject_at_max_length, subjects_stay_separate,
    subscription_is_live_when_subscribe_returns, unsubscribe_leaves_other_subscriptions,
    unusual_tokens_are_literal, wildcards_match_reference,
};

/// Defines [`ALL`] and [`by_name`] from one list of the cases.
macro_rules! case_table {
    ($($case:ident)*) => {
        /// The names of every case [`suite!`](crate::suite) runs, in its order.
        pub const ALL: &[&str] = &[$(::std::stringify!($case)),*];

        /// The case named `name` (one of [`ALL`]), to run cases chosen at run
        /// time ([`Suite::run_all`](crate::Suite::run_all)); `None` for
        /// another name.
        pub fn by_name(name: &str) -> Option<Case> {
            match name {
                $(::std::stringify!($case) => Some(|ctx| Box::pin($case(ctx))),)*
                _ => None,
            }
        }
    };
}

/// A case as a function of its context, as [`by_name`] returns it.
pub type Case = for<'a> fn(&'a Context) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

case_table! {
    capabilities_are_sane
    payload_empty
    payload_binary
    payload_utf8
    payload_one_mebibyte
    payload_limit_is_exact
    headers_round_trip
    headers_edge_cases
    oversized_header_is_carried_or_refused
    no_headers_arrive_empty
    subjects_stay_separate
    wildcards_match_reference
    unusual_tokens_are_literal
    subject_at_max_length
    cross_connection_delivery
    subscription_is_live_when_subscribe_returns
    many_subscriptions_on_one_connection
    fan_out_to_every_subscriber
    queue_group_shares_messages
    queue_groups_are_independent
    closed_group_member_gets_nothing
    unsubscribe_leaves_other_subscriptions
    resubscribe_after_close
    ordered_per_publisher
    no_loss_with_concurrent_publishers
    no_silent_loss_under_flood
    flush_then_all_deliverable
    publish_without_subscribers_succeeds
    no_delivery_before_subscribe
    ack_and_nack
    dropped_delivery_is_redelivered
    durable_keeps_messages_while_away
    durable_ack_removes
    durable_nack_redelivers_with_count
    durable_nack_with_delay
    durable_ack_wait_redelivers
    durable_max_deliver_stops
    durable_group_shares_work
    durable_leaving_member_hands_back
    durable_resume_continues
    durable_wildcard_pattern
    reconnects_after_cut
    durable_resumes_after_cut
    close_rejects_publish_and_subscribe
    close_ends_subscriptions
    close_flushes_pending_publishes
    close_leaves_other_connections_working
    invalid_input_is_rejected
    request_gets_the_reply
    request_gets_the_error_reply
    request_without_responders_fails
}

/// Subscribes, failing the case (with the broker's error) if it fails or hangs.
async fn subscribe(broker: &Arc<dyn Broker>, pattern: &Pattern) -> Subscription {
    match timeout(RECEIVE_TIMEOUT, broker.subscribe(pattern)).await {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(error)) => panic!(
            "{}: subscribe to {pattern:?} failed: {error}",
            broker.kind()
        ),
        Err(_) => panic!(
            "{}: subscribe to {pattern:?} did not resolve within {RECEIVE_TIMEOUT:?}",
            broker.kind()
        ),
    }
}

/// Joins queue group `group`, failing the case if it fails or hangs.
async fn subscribe_group(
    broker: &Arc<dyn Broker>,
    pattern: &Pattern,
    group: &QueueGroup,
) -> Subscription {
    match timeout(RECEIVE_TIMEOUT, broker.subscribe_group(pattern, group)).await {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(error)) => panic!(
            "{}: subscribe_group to {pattern:?} as {group:?} failed: {error}",
            broker.kind()
        ),
        Err(_) => panic!(
            "{}: subscribe_group to {pattern:?} as {group:?} did not resolve within {RECEIVE_TIMEOUT:?}",
            broker.kind()
        ),
    }
}

/// Publishes, failing the case if it fails or hangs.
async fn publish(broker: &Arc<dyn Broker>, message: Message) {
    let subject = message.subject().clone();
    match timeout(RECEIVE_TIMEOUT, broker.publish(message)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("{}: publish to {subject:?} failed: {error}", broker.kind()),
        Err(_) => panic!(
            "{}: publish to {subject:?} did not resolve within {RECEIVE_TIMEOUT:?}",
            broker.kind()
        ),
    }
}

/// Flushes, failing the case if it fails or hangs.
async fn flush(broker: &Arc<dyn Broker>) {
    match timeout(FLUSH_TIMEOUT, broker.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("{}: flush failed: {error}", broker.kind()),
        Err(_) => panic!(
            "{}: flush did not resolve within {FLUSH_TIMEOUT:?}",
            broker.kind()
        ),
    }
}

/// Closes a connection, failing the case if it fails or hangs.
async fn close(broker: &Arc<dyn Broker>) {
    match timeout(FLUSH_TIMEOUT, broker.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("{}: close failed: {error}", broker.kind()),
        Err(_) => panic!(
            "{}: close did not resolve within {FLUSH_TIMEOUT:?}",
            broker.kind()
        ),
    }
}

/// The error of an operation expected to fail, failing the case if it succeeded.
fn expect_err<T>(result: switchboard_core::Result<T>, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what} succeeded, but should have failed"),
        Err(error) => error,
    }
}

/// Asserts `error` has kind `kind`.
fn assert_kind(error: &Error, kind: ErrorKind, what: &str) {
    assert_eq!(
        error.kind(),
        kind,
        "{what} should fail with ErrorKind::{kind:?}, but failed with {:?}: {error}",
        error.kind()
    );
}

/// A message whose 8-byte payload names publisher `publisher` and sequence number `seq`.
fn numbered(subject: &switchboard_core::Subject, publisher: u32, seq: u32) -> Message {
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&publisher.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    Message::from_parts(
        subject.clone(),
        payload.into(),
        switchboard_core::Headers::new(),
    )
}

/// The `(publisher, seq)` of a [`numbered`] message, failing the case on a foreign payload.
fn number_of(delivery: &Delivery) -> (u32, u32) {
    let payload = delivery.payload();
    assert!(
        payload.len() == 8,
        "a delivery on {:?} has payload {} where an 8-byte sequence number was expected",
        delivery.subject(),
        show_payload(payload)
    );
    let publisher = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let seq = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    (publisher, seq)
}

/// Checks that `deliveries` carry sequence numbers `0..n` of publisher 0 exactly
/// once each, in any order, naming what is missing or doubled.
fn assert_each_once(deliveries: &[Delivery], n: u32, what: &str) {
    let mut seen = vec![0u32; n as usize];
    let mut foreign = Vec::new();
    for delivery in deliveries {
        match number_of(delivery) {
            (0, seq) if seq < n => seen[seq as usize] += 1,
            other => foreign.push(other),
        }
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let doubled: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty() && foreign.is_empty(),
        "{what}: expected messages 0..{n} exactly once each; {} missing (first: {:?}), \
         {} delivered more than once (first: {:?}), {} unexpected (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        doubled.len(),
        &doubled[..doubled.len().min(10)],
        foreign.len(),
        &foreign[..foreign.len().min(10)],
    );
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A message without headers to an already valid subject.
///
/// (`Message::new` cannot take a `Subject`: its `TryInto<Subject, Error = Error>`
/// bound excludes the identity conversion, whose error type is `Infallible`.)
fn msg(subject: switchboard_core::Subject, payload: impl Into<switchboard_core::Bytes>) -> Message {
    Message::from_parts(subject, payload.into(), switchboard_core::Headers::new())
}
