//! Durable subscriptions on a 3-node JetStream cluster of the test's own,
//! with streams kept on all three servers (`replicas=3`): the
//! [`RestartDrill`] (10,000 numbered messages at a steady rate) kills one
//! node and starts it again, then another, and a consumer reading throughout
//! and one away until the end each receive every message at least once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchboard_conformance::Connector;
use switchboard_core::{Broker, Durable, Pattern, Subscriber};
use switchboard_testkit::{unique, NatsCluster, RestartDrill};

/// Waits until the cluster has elected its JetStream leader and can create a
/// replicated stream (a few seconds after the nodes start), and checks that
/// the stream the adapter provisioned is kept on three servers.
async fn wait_for_jetstream(url: &str, first_node: &str) {
    let broker = switchboard_nats::connect(url).await.unwrap();
    let pattern: Pattern = format!("{}.>", unique("js-ready")).parse().unwrap();
    let durable = Durable::new("ready").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match broker.subscribe_durable(&pattern, &durable).await {
            Ok(subscription) => {
                drop(subscription);
                let client = async_nats::connect(first_node).await.unwrap();
                let jetstream = async_nats::jetstream::new(client);
                let name = jetstream.stream_by_subject(pattern.as_str()).await.unwrap();
                let info = jetstream
                    .get_stream(&name)
                    .await
                    .unwrap()
                    .info()
                    .await
                    .unwrap()
                    .clone();
                assert_eq!(info.config.num_replicas, 3, "{name}: {:?}", info.config);
                let replicas = info.cluster.map(|c| c.replicas.len()).unwrap_or(0);
                assert_eq!(
                    replicas, 2,
                    "{name}: a leader and two more replicas expected"
                );
                broker.remove_durable(&pattern, &durable).await.unwrap();
                break;
            }
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the JetStream cluster was not ready within 60 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    broker.close().await.unwrap();
}

// Once ignored: in a CI dry run the reading consumer stalled after the
// second node kill (async-nats pulled again only when its 30 s pull request
// expired) and resuming the away consumer hit a consumer that could not be
// read during the election, so it was created again from the stream's end.
// Both are fixed (src/pull.rs pulls again after missed heartbeats and after
// a reconnect; src/durable.rs retries reading the consumer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durable_survives_losing_a_node_twice() {
    let Some(mut cluster) = NatsCluster::start_jetstream(3) else {
        return;
    };
    let url = format!("{}?replicas=3", cluster.url());
    wait_for_jetstream(&url, &cluster.nodes[0].url()).await;
    let connector =
        Connector::new(|url: String| async move { switchboard_nats::connect(&url).await });
    let drill = RestartDrill::default();
    let mut next = 0;
    let report = drill
        .run(&connector, &url, |outage| {
            let node = &mut cluster.nodes[next % 3].process;
            next += 1;
            node.kill();
            std::thread::sleep(outage);
            node.start_again();
        })
        .await;
    println!(
        "durable on a 3-node JetStream cluster (replicas=3), one node killed and restarted twice: \
         {} messages, all received by both consumers; {report:?}",
        drill.messages
    );
}
