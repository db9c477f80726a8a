//! A dedicated nats-server is killed and stays down: every operation that
//! waits for it (publish once async-nats' queue is full, flush, unsubscribe,
//! close) gives up within the flush timeout instead of hanging. The bounds
//! below are generous "does not hang" limits.

use std::time::{Duration, Instant};

use switchboard_core::{Broker, Error, Message, Publisher, Subscriber};
use switchboard_testkit::NatsServer;
use tokio::time::timeout;

/// Far above the 1 s flush timeout the tests set: past it, the call hangs.
const HANG: Duration = Duration::from_secs(20);

async fn wait_disconnected(broker: &switchboard_nats::NatsBroker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.status().connected {
        assert!(
            Instant::now() < deadline,
            "the client never saw the server go"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn publish_gives_up_once_the_client_queue_is_full_and_the_server_is_gone() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = format!("{}?flush_timeout=1s", server.url());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    server.process.kill();
    wait_disconnected(&broker).await;
    let started = Instant::now();
    let failed = timeout(HANG, async {
        // async-nats queues a few thousand commands while it reconnects; the
        // publish after that used to wait forever.
        for n in 0..1_000_000u64 {
            let message = Message::new("dead.server", format!("{n}")).unwrap();
            if let Err(error) = broker.publish(message).await {
                return (n, error);
            }
        }
        panic!("a million messages were taken with the server gone");
    })
    .await
    .expect("publish hung with the server gone");
    let (accepted, error) = failed;
    assert!(accepted > 0, "the first messages are queued: {error}");
    match &error {
        Error::Publish { broker, reason, .. } => {
            assert_eq!(*broker, "nats");
            assert!(reason.contains("connection"), "{reason}");
            assert!(reason.contains("not sent"), "{reason}");
        }
        other => panic!("expected a Publish error, got {other:?}"),
    }
    assert!(error.is_temporary());
    assert!(started.elapsed() < HANG);
}

#[tokio::test]
async fn flush_unsubscribe_and_close_give_up_when_the_server_is_gone() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = format!("{}?flush_timeout=1s", server.url());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let subscription = broker.subscribe(&"dead.>".parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new("dead.one", "1").unwrap())
        .await
        .unwrap();
    server.process.kill();
    wait_disconnected(&broker).await;

    // The server forgot the subscription with the connection: nothing to wait for.
    timeout(HANG, subscription.close())
        .await
        .expect("unsubscribing hung with the server gone")
        .unwrap();

    broker
        .publish(Message::new("dead.two", "2").unwrap())
        .await
        .unwrap();
    let flushed = timeout(HANG, broker.flush())
        .await
        .expect("flush hung with the server gone");
    match flushed {
        Err(Error::Flush { reason, .. }) => {
            assert!(reason.contains("connection"), "{reason}")
        }
        other => panic!("expected a Flush error, got {other:?}"),
    }

    let closed = timeout(HANG, broker.close())
        .await
        .expect("close hung with the server gone");
    assert!(closed.is_err(), "what was published could not be flushed");
    assert!(broker.status().closed);
}
