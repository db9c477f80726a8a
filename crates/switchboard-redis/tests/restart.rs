//! Durable subscriptions on Redis Streams survive Redis being killed: a
//! private redis-server with `appendonly yes` (`appendfsync always`) is
//! killed (`SIGKILL`) and started again with the same directory twice while
//! 10,000 numbered messages are published at a steady rate (the
//! [`RestartDrill`]); a consumer reading throughout and one that was away
//! until the end each receive every one at least once, and the duplicates
//! are counted and printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_conformance::Connector;
use switchboard_testkit::{unique, RedisServer, RestartDrill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_survive_redis_restarts() {
    let dir = std::env::temp_dir().join(unique("redis-drill"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let Some(mut server) = RedisServer::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]) else {
        return;
    };
    let connector =
        Connector::new(|url: String| async move { switchboard_redis::connect(&url).await });
    let drill = RestartDrill::default();
    let report = drill
        .run(
            &connector,
            &format!("{}?keepalive=5s", server.url()),
            |outage| {
                server.process.kill();
                std::thread::sleep(outage);
                server.process.start_again();
            },
        )
        .await;
    println!(
        "durable over 2 redis-server kills (appendonly, appendfsync always): {} messages, all \
         received by both consumers; {report:?}",
        drill.messages
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
