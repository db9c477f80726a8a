//! Durable subscriptions on RabbitMQ (quorum queues) survive the broker
//! crashing: a private RabbitMQ node is killed (`SIGKILL`) and started again
//! with the same data twice while 10,000 numbered messages are published at
//! a steady rate (the [`RestartDrill`]); a consumer reading throughout and one
//! that was away until the end each receive every one at least once, and the
//! duplicates are counted and printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_conformance::Connector;
use switchboard_testkit::{RabbitNode, RestartDrill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_survive_broker_crashes() {
    let Some(mut node) = RabbitNode::start() else {
        return;
    };
    let connector =
        Connector::new(|url: String| async move { switchboard_amqp::connect(&url).await });
    let drill = RestartDrill::default();
    let report = drill
        .run(&connector, &node.url(), |outage| {
            node.kill();
            std::thread::sleep(outage);
            node.start_again();
        })
        .await;
    println!(
        "durable over 2 RabbitMQ crashes: {} messages, all received by both consumers; {report:?}",
        drill.messages
    );
}
