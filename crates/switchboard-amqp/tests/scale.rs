//! Subscription scale (issue 13) for this adapter alone, as an ignored
//! test: the measurement of `benches/subscriptions.rs` (N subscriptions on
//! N distinct subjects on one handle; time to subscribe them all; RSS per
//! idle subscription from `/proc/self/statm`; one message to each reaches
//! exactly its subscriber) without building the whole workspace. Numbers
//! from a debug build are for comparing, not for the speed table:
//!
//! ```text
//! SCALE_N=10000 cargo test -p switchboard-amqp --test scale -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_core::Broker;

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn subscription_scale() {
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let broker = switchboard_amqp::connect(url).await.unwrap();
    let publisher = switchboard_amqp::connect(url).await.unwrap();
    switchboard_testkit::subscription_scale(
        &broker,
        &publisher,
        switchboard_testkit::scale_count(),
    )
    .await;
    publisher.close().await.unwrap();
    broker.close().await.unwrap();
}
