//! The broker-neutral behaviour suite every switchboard adapter passes.
//!
//! An adapter (in this workspace or a third party's) runs the whole suite from
//! one integration test file:
//!
//! ```ignore
//! // tests/conformance.rs of an adapter crate
//! switchboard_conformance::suite!(
//!     broker: "nats",
//!     url_env: "SWITCHBOARD_NATS_URL",
//!     default_url: "nats://127.0.0.1:4222",
//!     connect: |url: String| async move { switchboard_nats::connect(&url).await },
//! );
//! ```
//!
//! That expands to one `#[test]` per case in [`cases`] (each on its own
//! multi-thread tokio runtime with two workers, like
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`), so
//! `cargo test` lists and reports each case separately. The test crate only
//! needs `switchboard-conformance` (and whatever its `connect` uses).
//!
//! # What a run does
//!
//! - Each case connects to the URL in `url_env` (or `default_url`) within
//!   [`CONNECT_TIMEOUT`]. If the broker does not answer, the case prints
//!   `skipped: <broker> at <url> does not answer: <error>` and passes, unless
//!   [`REQUIRE_BROKERS_ENV`] (`SWITCHBOARD_REQUIRE_BROKERS`) is `1`, in which case it fails.
//! - Cases are selected by the broker's [`Capabilities`](switchboard_core::Capabilities),
//!   never per broker. Where a capability is absent a case checks the honest
//!   behaviour instead (for example `subscribe_group` returning
//!   [`ErrorKind::Unsupported`](switchboard_core::ErrorKind::Unsupported)) or prints
//!   a `skipped:` line saying why.
//! - Every case works under its own random subject prefix (`cf.<hex>`), so
//!   cases running in parallel, and other test binaries on the same broker,
//!   never see each other's messages.
//! - Every receive is bounded ([`RECEIVE_TIMEOUT`]); "nothing else arrives"
//!   checks listen for [`SILENCE`] after a flush. A broken adapter fails, it
//!   does not hang.
//!
//! # Writing more tests
//!
//! The building blocks are public: [`Context`] (connections, prefixed subjects,
//! patterns and groups) and the receive helpers ([`recv`], [`recv_n`],
//! [`expect_silence`], [`expect_end`], ...). The cases in [`cases`] are plain
//! `async fn(&Context)`, so an adapter can also call one directly. Tests that
//! connect on their own apply the same skipping rule with [`broker_url`],
//! [`brokers_required`] and [`skip_or_fail`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// This is a test library: a failed expectation must panic, with a message
// saying what was expected, so `unwrap`/`expect` are the right tools here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cases;
mod context;
mod proxy;
mod receive;

pub use context::{
    broker_url, brokers_required, skip_or_fail, Connector, Context, Suite, CONNECT_TIMEOUT,
    REQUIRE_BROKERS_ENV,
};
pub use proxy::TcpProxy;
pub use receive::{
    collect_for, expect_disconnected, expect_end, expect_silence, gather, publish_until_received,
    recv, recv_n, recv_unacked, FLUSH_TIMEOUT, RECEIVE_TIMEOUT, SILENCE,
};

/// Re-exported so the [`suite!`] expansion and extra tests name the same versions.
pub use switchboard_core;

/// Longest a whole case may run before it fails (a backstop; every wait inside is bounded too).
pub const CASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Items the [`suite!`] expansion uses. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// Runs one case on a fresh multi-thread runtime with two workers (what
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` builds),
    /// failing if it runs longer than [`CASE_TIMEOUT`](crate::CASE_TIMEOUT).
    pub fn block_on<F: std::future::Future<Output = ()>>(case: &str, future: F) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building the tokio runtime for a conformance case");
        runtime.block_on(async {
            if tokio::time::timeout(crate::CASE_TIMEOUT, future)
                .await
                .is_err()
            {
                panic!(
                    "conformance case {case} did not finish within {:?}",
                    crate::CASE_TIMEOUT
                );
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    }
}

/// Expands to one `#[test]` per conformance case, run against the broker that
/// `connect` returns.
///
/// ```no_run
/// switchboard_conformance::suite!(
///     broker: "memory",
///     url_env: "SWITCHBOARD_MEMORY_URL",
///     default_url: "memory://",
///     connect: |url: String| async move { switchboard_core::MemoryBroker::connect(&url) },
/// );
/// ```
///
/// - `broker`: the broker kind; [`cases::capabilities_are_sane`] checks that
///   `Broker::kind()` returns it.
/// - `url_env`: the environment variable holding the broker URL; `default_url`
///   is used when it is unset or empty.
/// - `connect`: a closure taking the URL (`String`) and returning a future of
///   `switchboard_core::Result<B>` where `B: Broker + 'static`. It is called
///   once per connection a case needs.
///
/// The generated test functions are named after the cases (see [`cases`]), at
/// the place the macro is invoked.
#[macro_export]
macro_rules! suite {
    (
        broker: $broker:expr,
        url_env: $url_env:expr,
        default_url: $default_url:expr,
        connect: $connect:expr $(,)?
    ) => {
        $crate::__suite_cases! {
            [$broker, $url_env, $default_url, $connect]
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
    };
}

/// Implementation detail of [`suite!`]: one test per listed case.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_cases {
    ([$broker:expr, $url_env:expr, $default_url:expr, $connect:expr] $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                $crate::__private::block_on(::std::stringify!($case), async {
                    let suite = $crate::Suite::new(
                        $broker,
                        $url_env,
                        $default_url,
                        $crate::Connector::new($connect),
                    );
                    if let ::std::option::Option::Some(ctx) =
                        suite.context(::std::stringify!($case)).await
                    {
                        $crate::cases::$case(&ctx).await;
                        ctx.finish().await;
                    }
                });
            }
        )*
    };
}
