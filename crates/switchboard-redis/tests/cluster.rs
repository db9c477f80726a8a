//! Redis Cluster (`redis+cluster://h1:p1,h2:p2,…`) on a cluster of the
//! test's own (3 masters, each with a replica): a subscriber on one node
//! receives what is published through another, the conformance suite runs
//! unchanged against the cluster (its durable cases check `Unsupported`),
//! and a subscription whose node is killed moves to another node. Over TLS
//! (`rediss+cluster://`, a cluster whose nodes serve TLS only, bus and
//! replication included), the same crossing works with the test's CA, and
//! fails clearly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_conformance::{publish_until_received, Connector, Suite};
use switchboard_core::ConnectKind;
use switchboard_core::{Broker, ErrorKind, Subscriber, SubscriberExt};
use switchboard_testkit::{unique, Pki, RedisCluster};

/// `redis+cluster://` over the nodes of `cluster`, starting with node `first`.
fn url_from(cluster: &RedisCluster, first: usize) -> String {
    let n = cluster.nodes.len();
    let hosts: Vec<String> = (0..n)
        .map(|i| format!("127.0.0.1:{}", cluster.nodes[(first + i) % n].port()))
        .collect();
    format!("redis+cluster://{}", hosts.join(","))
}

/// The node the subscriber (connections named `sbtest-sub`) is on, from
/// each node's `CLIENT LIST`.
fn node_of_subscriber(cluster: &RedisCluster) -> usize {
    for (index, node) in cluster.nodes.iter().enumerate() {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &node.port().to_string(), "client", "list"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&output.stdout).contains("name=sbtest-sub") {
            return index;
        }
    }
    panic!("the subscriber is on no node of the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_crosses_nodes_and_survives_losing_one() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let subscriber =
        switchboard_redis::connect(&format!("{}?name=sbtest-sub", url_from(&cluster, 1)))
            .await
            .unwrap();
    let publisher = switchboard_redis::connect(&url_from(&cluster, 0))
        .await
        .unwrap();
    let subject = unique("cluster");
    let mut subscription = subscriber.subscribe_to(&subject).await.unwrap();
    let on = node_of_subscriber(&cluster);
    assert_eq!(on, 1, "the subscriber is on the first node of its URL");
    // Published through node 0, received on node 1.
    let first = publish_until_received(
        &publisher,
        &mut subscription,
        &subject,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(first.subject().as_str(), subject);

    // The durable mode is not offered on a cluster, and says so.
    assert!(!subscriber.capabilities().durable);
    let error = subscriber
        .subscribe_durable(
            &format!("{subject}.>").parse().unwrap(),
            &switchboard_core::Durable::new("cluster").unwrap(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.to_string().contains("Redis Cluster"), "{error}");

    // The subscriber's node dies: it moves to another node and receives again.
    cluster.nodes[on].process.kill();
    publish_until_received(
        &publisher,
        &mut subscription,
        &subject,
        Duration::from_secs(30),
    )
    .await;
    let now = node_of_subscriber(&cluster);
    assert_ne!(now, on, "the subscription moved to another node");
    eprintln!(
        "redis cluster: subscriber moved from node {on} to node {now} after its node was killed"
    );
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_runs_against_the_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let suite = Suite::at(
        "redis",
        cluster.url(),
        Connector::new(|url: String| async move { switchboard_redis::connect(&url).await }),
    );
    suite.run_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_crosses_nodes_over_tls() {
    let pki = Pki::new();
    let Some(cluster) = RedisCluster::start_tls(3, 0, &pki) else {
        return;
    };
    let ca = pki.ca().display().to_string();
    let tls_url = |first: usize| {
        url_from(&cluster, first).replacen("redis+cluster://", "rediss+cluster://", 1)
    };
    let subscriber = switchboard_redis::connect(&format!("{}?ca={ca}", tls_url(1)))
        .await
        .unwrap();
    let publisher = switchboard_redis::connect(&format!("{}?ca={ca}", tls_url(0)))
        .await
        .unwrap();
    let subject = unique("cluster-tls");
    let mut subscription = subscriber.subscribe_to(&subject).await.unwrap();
    let received = publish_until_received(
        &publisher,
        &mut subscription,
        &subject,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(received.subject().as_str(), subject);
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();

    // Without the CA the platform's store does not know the test's CA.
    let error = switchboard_redis::connect(&cluster.tls_url())
        .await
        .unwrap_err();
    assert_eq!(error.connect_kind(), Some(ConnectKind::Tls), "{error}");
    let text = error.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}
