//! How the Redis adapter reports what happens to its links: a frozen link
//! (noticed by PING within the keepalive time), a restarted server (the
//! connection was lost and the subscription renewed, not "you are slow"),
//! messages it cannot represent, and connect errors by kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_conformance::{expect_disconnected, publish_until_received};
use switchboard_core::{Broker, ConnectKind, Error, Message, Publisher, Subscriber};
use switchboard_testkit::{assert_chain_does_not_repeat, free_port, unique, RedisServer, TcpProxy};
use tokio::time::timeout;

/// Sends raw RESP to `port`, as a plain client would.
fn raw_publish(port: u16, channel: &[u8], payload: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut command = Vec::new();
    command.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    for arg in [channel, payload] {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    stream.write_all(&command).unwrap();
    let mut reply = [0u8; 16];
    let n = stream.read(&mut reply).unwrap();
    assert!(reply[..n].starts_with(b":"), "{:?}", &reply[..n]);
}

#[tokio::test]
async fn a_frozen_link_is_noticed_within_the_keepalive_time() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let proxy = TcpProxy::to_port(server.port());
    let url = format!("redis://{}?keepalive=2s", proxy.address());
    let broker = switchboard_redis::connect(&url).await.unwrap();
    let direct = switchboard_redis::connect(&server.url()).await.unwrap();
    let subject = unique("frozen");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(5)).await;

    proxy.freeze();
    let (took, reason) = expect_disconnected(&mut sub, "redis", Duration::from_secs(15)).await;
    eprintln!("the frozen subscription was noticed after {took:?}: {reason}");
    assert!(reason.contains("keepalive"), "{reason}");
    assert!(!reason.contains("client-output-buffer"), "{reason}");
    // The idle publishing connection PINGs too, so its status follows.
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.status().connected {
        assert!(
            Instant::now() < deadline,
            "the publisher still says connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    proxy.thaw();
    publish_until_received(&direct, &mut sub, &subject, Duration::from_secs(30)).await;
    // And the publishing connection is back as well.
    publish_until_received(&broker, &mut sub, &subject, Duration::from_secs(30)).await;
    assert!(broker.status().connected);
    broker.close().await.unwrap();
    direct.close().await.unwrap();
}

/// Publishes waiting for replies on a link that froze fail after the
/// keepalive time, rather than whenever the kernel gives up.
#[tokio::test]
async fn a_frozen_link_fails_the_publishes_it_owes() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let proxy = TcpProxy::to_port(server.port());
    let url = format!("redis://{}?keepalive=2s&flush_timeout=60s", proxy.address());
    let broker = switchboard_redis::connect(&url).await.unwrap();
    broker
        .publish(Message::new("frozen.pub", "before").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    proxy.freeze();
    broker
        .publish(Message::new("frozen.pub", "owed").unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let error = timeout(Duration::from_secs(20), broker.flush())
        .await
        .expect("the flush ends with the link")
        .unwrap_err();
    eprintln!("flush failed after {:?}: {error}", started.elapsed());
    assert!(matches!(error, Error::Flush { .. }), "{error:?}");
    assert!(error.to_string().contains("keepalive"), "{error}");
    proxy.thaw();
    drop(broker);
}

#[tokio::test]
async fn a_restart_says_the_connection_was_lost_not_that_the_reader_was_slow() {
    let Some(mut server) = RedisServer::start(&[]) else {
        return;
    };
    let broker = switchboard_redis::connect(&server.url()).await.unwrap();
    let subject = unique("restart");
    let mut sub = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    publish_until_received(&broker, &mut sub, &subject, Duration::from_secs(5)).await;

    server.process.restart();
    let (_, reason) = expect_disconnected(&mut sub, "redis", Duration::from_secs(10)).await;
    assert!(reason.contains("lost its connection"), "{reason}");
    assert!(reason.contains("resubscribing"), "{reason}");
    assert!(!reason.contains("client-output-buffer"), "{reason}");
    assert!(!reason.contains("behind"), "{reason}");
    publish_until_received(&broker, &mut sub, &subject, Duration::from_secs(20)).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_channel_that_is_not_a_subject_is_an_error_item_and_the_stream_goes_on() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let broker = switchboard_redis::connect(&server.url()).await.unwrap();
    let mut sub = broker.subscribe(&"a.>".parse().unwrap()).await.unwrap();
    raw_publish(server.port(), b"a.bad subject", b"x");
    match timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Err(Error::InvalidSubject { subject, reason }))) => {
            assert_eq!(subject, "a.bad subject");
            assert!(reason.contains("redis"), "{reason}");
        }
        other => panic!("expected InvalidSubject, got {other:?}"),
    }
    raw_publish(server.port(), b"a.good", b"y");
    let delivery = timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.subject().as_str(), "a.good");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn connect_errors_have_kinds() {
    let refused = switchboard_redis::connect(&format!("redis://127.0.0.1:{}", free_port()))
        .await
        .unwrap_err();
    assert_eq!(
        refused.connect_kind(),
        Some(ConnectKind::Refused),
        "{refused}"
    );
    assert!(refused.is_temporary());
    assert_chain_does_not_repeat(&refused);

    let Some(server) = RedisServer::start(&["--requirepass", "s3cret"]) else {
        return;
    };
    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let error = switchboard_redis::connect(&wrong).await.unwrap_err();
    assert_eq!(error.connect_kind(), Some(ConnectKind::Auth), "{error}");
    assert!(!error.is_temporary(), "a wrong password stays wrong");
    assert_chain_does_not_repeat(&error);
    let missing = switchboard_redis::connect(&server.url()).await.unwrap_err();
    assert_eq!(missing.connect_kind(), Some(ConnectKind::Auth), "{missing}");
    assert!(!missing.is_temporary());
    let right = format!("redis://:s3cret@127.0.0.1:{}/999", server.port());
    let error = switchboard_redis::connect(&right).await.unwrap_err();
    assert_eq!(error.connect_kind(), Some(ConnectKind::Protocol), "{error}");
    assert!(!error.is_temporary());
}

#[tokio::test]
async fn unknown_query_keys_and_bad_escapes_are_refused() {
    for (url, needle) in [
        ("redis://127.0.0.1:6379?foo=1", "unknown parameter `foo`"),
        ("redis://:p%zz@127.0.0.1:6379", "a `%` at character 2"),
        ("redis://127.0.0.1:6379?keepalive=5", "`keepalive=5`"),
    ] {
        let error = switchboard_redis::connect(url).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(error.to_string().contains(needle), "{url}: {error}");
    }
}
