//! Redis Cluster (`redis+cluster://h1:p1,h2:p2,…`) on clusters of the
//! test's own (3 masters, some with a replica each): a subscriber on one
//! node receives what is published through another, the conformance suite
//! runs unchanged against the cluster (its durable cases included), and a
//! subscription whose node is killed moves to another node. Over TLS
//! (`rediss+cluster://`, a cluster whose nodes serve TLS only, bus and
//! replication included), the same crossing and a durable round trip work
//! with the test's CA, and fail clearly without it. The durable mode
//! follows the master of its slot: `flush` waits for its replica (`WAIT`),
//! the restart drill survives two failovers of that master, and a slot
//! migrated by hand to another master is followed (`ASK` during the
//! migration, `MOVED` after).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use switchboard_conformance::{publish_until_received, Connector, Suite};
use switchboard_core::ConnectKind;
use switchboard_core::{Broker, Durable, Message, Publisher, Subscriber, SubscriberExt};
use switchboard_testkit::{unique, Pki, RedisCluster, RestartDrill};

/// `redis+cluster://` over the nodes of `cluster`, starting with node `first`.
fn url_from(cluster: &RedisCluster, first: usize) -> String {
    let n = cluster.nodes.len();
    let hosts: Vec<String> = (0..n)
        .map(|i| format!("127.0.0.1:{}", cluster.nodes[(first + i) % n].port()))
        .collect();
    format!("redis+cluster://{}", hosts.join(","))
}

/// The node the subscriber's pub/sub connection (named `sbtest-sub-sub`:
/// the handle is named `sbtest-sub`) is on, from each node's `CLIENT LIST`.
/// The handle's other connections are on the master of the durable keys'
/// slot.
fn node_of_subscriber(cluster: &RedisCluster) -> usize {
    for (index, node) in cluster.nodes.iter().enumerate() {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &node.port().to_string(), "client", "list"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&output.stdout).contains("name=sbtest-sub-sub ") {
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

    // The durable mode over TLS: the connections to the master of the
    // durable keys' slot are checked against its certificate too.
    let pattern = format!("{subject}.>").parse().unwrap();
    let consumer = Durable::new(&subject.replace('.', "-")).unwrap();
    let mut durable = subscriber
        .subscribe_durable(&pattern, &consumer)
        .await
        .unwrap();
    publisher
        .publish(Message::new(format!("{subject}.kept"), "kept").unwrap())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let mut kept = tokio::time::timeout(Duration::from_secs(10), durable.next())
        .await
        .expect("the durable message in time")
        .expect("the subscription goes on")
        .unwrap();
    assert_eq!(kept.payload_str(), Some("kept"));
    kept.ack().await.unwrap();
    drop(durable);
    subscriber
        .remove_durable(&pattern, &consumer)
        .await
        .unwrap();
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

/// `flush` of durable publishes waits for a replica of the durable keys'
/// master (`WAIT`), and fails saying so while none confirms (its replica
/// is stopped with SIGSTOP for the while).
async fn flush_waits_for_a_replica(cluster: &mut RedisCluster, owner: usize, url: &str) {
    let owner_port = cluster.nodes[owner].port().to_string();
    let replica = (0..cluster.nodes.len())
        .find(|&i| {
            let role = cluster.cli(i, &["role"]);
            role.starts_with("slave") && role.lines().any(|l| l == owner_port)
        })
        .expect("the durable slot's master has a replica");
    let waits = |cluster: &RedisCluster| {
        let stats = cluster.cli(owner, &["info", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let broker = switchboard_redis::connect(url).await.unwrap();
    let subject = unique("cluster.wait");
    let pattern = format!("{subject}.>").parse().unwrap();
    let consumer = Durable::new(&subject.replace('.', "-")).unwrap();
    let subscription = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    let publish = |text: &'static str| {
        let broker = broker.clone();
        let subject = format!("{subject}.x");
        async move {
            broker
                .publish(Message::new(subject, text).unwrap())
                .await
                .unwrap();
            broker.flush().await
        }
    };
    let before = waits(cluster);
    publish("replicated").await.unwrap();
    assert_eq!(waits(cluster), before + 1, "one WAIT for the flush");
    cluster.nodes[replica].process.pause();
    let error = publish("unconfirmed").await.unwrap_err();
    cluster.nodes[replica].process.resume();
    assert!(
        error.to_string().contains("no replica confirmed"),
        "{error}"
    );
    publish("replicated again").await.unwrap();
    drop(subscription);
    broker.remove_durable(&pattern, &consumer).await.unwrap();
    broker.close().await.unwrap();
    eprintln!("flush waited for a replica (WAIT), and failed while none confirmed: {error}");
}

/// The durable mode survives failovers of the master that owns its slot:
/// the [`RestartDrill`] (numbered messages published at a steady rate
/// through a URL whose first node is not that master, a consumer reading
/// throughout and one away until the end) while, after a third, the master
/// is killed and its replica takes over, and after two thirds the old
/// master comes back (as a replica), syncs, and the new master is killed
/// in turn. Every message must reach both consumers; duplicates are
/// counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_survives_failovers_of_the_master_owning_its_slot() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let slot = cluster.key_slot("{switchboard}:durable");
    let owner = cluster
        .master_of(slot, 0)
        .expect("a master serves the durable slot");
    // The URL starts at another master.
    let first = (0..3).find(|&i| i != owner).unwrap();
    let url = url_from(&cluster, first);
    flush_waits_for_a_replica(&mut cluster, owner, &url).await;
    let connector =
        Connector::new(|url: String| async move { switchboard_redis::connect(&url).await });
    let drill = RestartDrill {
        messages: 6_000,
        ..RestartDrill::default()
    };
    let mut master = owner;
    let mut failovers = Vec::new();
    let report = drill
        .run(&connector, &url, |_| {
            let killed = master;
            if killed != owner {
                // The first master is back, as a replica of the second.
                cluster.nodes[owner].process.start_again();
                cluster.wait_replica_synced(owner);
            }
            cluster.nodes[killed].process.kill();
            let (promoted, took) = cluster.wait_failover(slot, killed);
            eprintln!("failover: node {killed} killed, node {promoted} took slot {slot} over after {took:?}");
            failovers.push(took);
            master = promoted;
        })
        .await;
    assert_eq!(failovers.len(), 2);
    println!(
        "durable over 2 Redis Cluster failovers of the durable slot's master ({failovers:?}): \
         {} messages, all received by both consumers; {report:?}",
        drill.messages
    );
}

/// Publishes the numbers of `range` on `<subject>.x`, again until a flush
/// succeeds; returns how many flushes failed.
async fn publish_numbered(
    broker: &switchboard_redis::RedisBroker,
    subject: &str,
    range: std::ops::Range<u32>,
) -> u32 {
    let mut failed = 0;
    loop {
        for i in range.clone() {
            let _ = broker
                .publish(Message::new(format!("{subject}.x"), i.to_string()).unwrap())
                .await;
        }
        match broker.flush().await {
            Ok(()) => return failed,
            Err(error) => {
                eprintln!("reshard: flush failed, publishing again: {error}");
                failed += 1;
                assert!(failed < 50, "publishing never succeeded: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Receives until every number of `range` came, acknowledging each but the
/// first delivery of `keep`, which is returned; and how many duplicates came.
async fn receive_numbered(
    subscription: &mut switchboard_core::Subscription,
    range: std::ops::Range<u32>,
    keep: Option<u32>,
) -> (u32, Option<switchboard_core::Delivery>) {
    let mut seen = std::collections::BTreeMap::new();
    let mut kept = None;
    while !range.clone().all(|i| seen.contains_key(&i)) {
        let item = match tokio::time::timeout(Duration::from_secs(30), subscription.next()).await {
            Ok(item) => item.expect("the subscription goes on"),
            Err(_) => panic!(
                "LOST: {:?} never came",
                range
                    .clone()
                    .filter(|i| !seen.contains_key(i))
                    .collect::<Vec<_>>()
            ),
        };
        let mut delivery = match item {
            Ok(delivery) => delivery,
            Err(error) => {
                eprintln!("reshard: error item: {error}");
                continue;
            }
        };
        let n: u32 = delivery.payload_str().unwrap().parse().unwrap();
        *seen.entry(n).or_insert(0u32) += 1;
        if Some(n) == keep && kept.is_none() {
            kept = Some(delivery);
        } else {
            delivery.ack().await.unwrap();
        }
    }
    (seen.values().map(|c| c - 1).sum(), kept)
}

/// The id of node `index` (`CLUSTER MYID`).
fn node_id(cluster: &RedisCluster, index: usize) -> String {
    cluster.cli(index, &["cluster", "myid"]).trim().to_string()
}

/// Moves the keys `keys` of `slot` from node `from` to node `to` (`MIGRATE`).
fn migrate(cluster: &RedisCluster, slot: u16, from: usize, to: usize, keys: &[&str]) {
    let port = cluster.nodes[to].port().to_string();
    let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    args.extend(keys);
    let answer = cluster.cli(from, &args);
    assert_eq!(
        answer.trim(),
        "OK",
        "MIGRATE of {keys:?} (slot {slot}) answered {answer}"
    );
}

/// Resharding the durable keys' slot to another master: during the
/// migration an ack whose stream already moved is answered `ASK` and sent,
/// after `ASKING`, to the new node; once the slot is moved, the publisher,
/// the durable member and the control connection meet `MOVED` and follow
/// it. Nothing published (and flushed) is lost, the ack made through `ASK`
/// holds, and the new master got the function library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_follows_its_slot_when_it_is_resharded() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let slot = cluster.key_slot("{switchboard}:durable");
    let from = cluster.master_of(slot, 0).unwrap();
    let to = (0..3).find(|&i| i != from).unwrap();
    let broker = switchboard_redis::connect(&format!("{}?name=sbtest-reshard", cluster.url()))
        .await
        .unwrap();
    let subject = unique("cluster.reshard");
    let pattern: switchboard_core::Pattern = format!("{subject}.>").parse().unwrap();
    let consumer = Durable::new(&subject.replace('.', "-"))
        .unwrap()
        .ack_wait(Duration::from_secs(60));
    let mut subscription = broker.subscribe_durable(&pattern, &consumer).await.unwrap();
    let stream = format!("{{switchboard}}:durable:stream:{pattern}");
    publish_numbered(&broker, &subject, 0..10).await;
    let (_, held) = receive_numbered(&mut subscription, 0..10, Some(9)).await;
    let mut held = held.unwrap();

    // The migration starts; the stream moves first.
    let (from_id, to_id) = (node_id(&cluster, from), node_id(&cluster, to));
    let slot_text = slot.to_string();
    assert_eq!(
        cluster
            .cli(
                to,
                &["cluster", "setslot", &slot_text, "importing", &from_id]
            )
            .trim(),
        "OK"
    );
    assert_eq!(
        cluster
            .cli(
                from,
                &["cluster", "setslot", &slot_text, "migrating", &to_id]
            )
            .trim(),
        "OK"
    );
    migrate(&cluster, slot, from, to, &[&stream]);
    // The old master no longer has the stream: ASK, then ASKING on the new one.
    held.ack().await.unwrap();
    // The rest moves, and every master learns the slot's new owner.
    let keys = cluster.cli(from, &["cluster", "getkeysinslot", &slot_text, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    if !keys.is_empty() {
        migrate(&cluster, slot, from, to, &keys);
    }
    for node in 0..3 {
        assert_eq!(
            cluster
                .cli(node, &["cluster", "setslot", &slot_text, "node", &to_id])
                .trim(),
            "OK"
        );
    }
    assert_eq!(cluster.master_of(slot, from), Some(to));

    let republished = publish_numbered(&broker, &subject, 10..20).await;
    let (mut duplicates, _) = receive_numbered(&mut subscription, 10..20, None).await;
    // Deliveries made again after the move (the member reads its own
    // pending entries first after each reconnection) are duplicates.
    while let Ok(Some(item)) =
        tokio::time::timeout(Duration::from_secs(1), subscription.next()).await
    {
        if let Ok(mut delivery) = item {
            duplicates += 1;
            delivery.ack().await.unwrap();
        }
    }
    // Every entry was acknowledged, the one acked through ASK included.
    let pending = cluster.cli(to, &["xpending", &stream, consumer.consumer().as_str()]);
    assert!(
        pending.starts_with("0\n"),
        "nothing pending on the new master: {pending}"
    );
    let clients = cluster.cli(to, &["client", "list"]);
    assert!(
        clients.contains("name=sbtest-reshard-durable "),
        "the member moved: {clients}"
    );
    drop(subscription);
    broker.remove_durable(&pattern, &consumer).await.unwrap();
    broker.close().await.unwrap();
    eprintln!("reshard: slot {slot} moved from node {from} to node {to}; {republished} flush(es) failed on MOVED and were published again; {duplicates} duplicate(s)");
}

/// Durable publishing throughput on a cluster against one server, same
/// code, same run (a measurement, run by hand in release mode):
/// 16-byte publishes on a subject one durable pattern matches, flushed every
/// 1,000 (on the cluster with replicas each flush also waits for one,
/// `WAIT`). `SB_BENCH_N` sets the count per round (default 200,000).
///
/// `cargo test --release -p switchboard-redis --test cluster -- --ignored --nocapture durable_publish_rate`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand in release mode"]
async fn durable_publish_rate_on_a_cluster_and_on_one_server() {
    let n: u32 = std::env::var("SB_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let Some(single) = switchboard_testkit::RedisServer::start(&[]) else {
        return;
    };
    let Some(plain) = RedisCluster::start(3, 0) else {
        return;
    };
    let Some(replicated) = RedisCluster::start(3, 1) else {
        return;
    };
    let targets = [
        ("one server", single.url()),
        ("cluster, no replicas", plain.url()),
        ("cluster, 1 replica each (WAIT per flush)", replicated.url()),
    ];
    for round in 0..3 {
        let mut rates = Vec::new();
        for (label, url) in &targets {
            let broker = switchboard_redis::connect(url).await.unwrap();
            let pattern: switchboard_core::Pattern = "sbbench.durable.>".parse().unwrap();
            let consumer = Durable::new("sbbench-cluster").unwrap();
            broker
                .subscribe_durable(&pattern, &consumer)
                .await
                .unwrap()
                .close()
                .await
                .unwrap();
            let subject: switchboard_core::Subject = "sbbench.durable.x".parse().unwrap();
            let payload = bytes::Bytes::from_static(&[b'x'; 16]);
            let started = std::time::Instant::now();
            for i in 0..n {
                broker
                    .publish(Message::from_parts(
                        subject.clone(),
                        payload.clone(),
                        Default::default(),
                    ))
                    .await
                    .unwrap();
                if i % 1000 == 999 {
                    broker.flush().await.unwrap();
                }
            }
            broker.flush().await.unwrap();
            let rate = f64::from(n) / started.elapsed().as_secs_f64();
            rates.push(rate);
            broker.remove_durable(&pattern, &consumer).await.unwrap();
            broker.close().await.unwrap();
            println!("round {round}: {label}: {rate:.0} msg/s");
        }
        println!(
            "round {round}: cluster/one server {:.2}x, cluster with WAIT/one server {:.2}x",
            rates[1] / rates[0],
            rates[2] / rates[0]
        );
    }
}
