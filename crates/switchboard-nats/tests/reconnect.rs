//! A dedicated nats-server is killed and restarted on the same port: every
//! subscription yields `Error::Disconnected`, then keeps receiving.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_core::{Broker, Error, Message, Publisher, Subscriber};
use switchboard_testkit::NatsServer;
use tokio::time::timeout;

#[tokio::test]
async fn subscriptions_survive_a_server_restart() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let broker = switchboard_nats::connect(&server.url()).await.unwrap();
    let mut plain = broker
        .subscribe(&"restart.>".parse().unwrap())
        .await
        .unwrap();
    let mut grouped = broker
        .subscribe_group(&"restart.>".parse().unwrap(), &"g".parse().unwrap())
        .await
        .unwrap();

    broker
        .publish(Message::new("restart.before", "1").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    for sub in [&mut plain, &mut grouped] {
        let d = timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.payload_str(), Some("1"));
    }

    server.process.restart();

    for sub in [&mut plain, &mut grouped] {
        match timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Err(Error::Disconnected { broker, reason }))) => {
                assert_eq!(broker, "nats");
                assert!(reason.contains("restart.>"), "{reason}");
            }
            other => panic!("expected a Disconnected item, got {other:?}"),
        }
    }

    // After the reconnect (and resubscribe) messages flow again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    for sub in [&mut plain, &mut grouped] {
        loop {
            assert!(Instant::now() < deadline, "no message after the restart");
            n += 1;
            let _ = broker
                .publish(Message::new("restart.after", format!("{n}")).unwrap())
                .await;
            let _ = broker.flush().await;
            match timeout(Duration::from_millis(500), sub.next()).await {
                Ok(Some(Ok(d))) => {
                    assert_eq!(d.subject().as_str(), "restart.after");
                    break;
                }
                Ok(Some(Err(e))) => eprintln!("further error item: {e}"),
                Ok(None) => panic!("stream ended"),
                Err(_) => {}
            }
        }
    }
    broker.close().await.unwrap();
}
