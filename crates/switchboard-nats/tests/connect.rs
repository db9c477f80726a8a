//! Connection errors against real ports: refused, bad credentials, a silent
//! peer (timeout); and good credentials.

mod server;

use std::time::{Duration, Instant};

use switchboard_core::{Broker, ConnectKind, ErrorKind, Message, Publisher};
use switchboard_nats::NatsOptions;
use switchboard_testkit::assert_chain_does_not_repeat;
use switchboard_testkit::NatsServer;

#[tokio::test]
async fn refused_port_says_nothing_answers() {
    let port = switchboard_testkit::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let err = switchboard_nats::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        text,
        format!("nats: cannot connect to {url}: nothing answers (connection refused); is nats-server running?")
    );
    assert!(started.elapsed() < Duration::from_secs(3), "failed fast");
    assert_eq!(err.connect_kind(), Some(ConnectKind::Refused));
    assert!(err.is_temporary(), "a refused port may answer later");
    assert_chain_does_not_repeat(&err);
}

#[tokio::test]
async fn silent_peer_times_out() {
    // Accepts TCP but never sends INFO.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = switchboard_nats::NatsBroker::connect_with(
        &format!("nats://127.0.0.1:{port}"),
        NatsOptions::new().connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(err.connect_kind(), Some(ConnectKind::Timeout));
    assert!(err.is_temporary());
    keep.abort();
}

#[tokio::test]
async fn bad_credentials_say_authorization_failed_and_are_redacted() {
    let Some(server) = NatsServer::start(&["--user", "alice", "--pass", "s3cret"]) else {
        return;
    };
    let url = format!("nats://alice:wrong-pass@127.0.0.1:{}", server.port());
    let err = switchboard_nats::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(text.contains("authorization failed"), "{text}");
    assert!(!text.contains("wrong-pass"), "{text}");
    assert!(text.contains("alice:***@"), "{text}");
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth));
    assert!(!err.is_temporary(), "a wrong password stays wrong");
    assert_chain_does_not_repeat(&err);

    // No credentials at all: also an authorization failure.
    let err = switchboard_nats::connect(&server.url()).await.unwrap_err();
    assert!(err.to_string().contains("authorization failed"), "{err}");

    // The right ones work.
    let url = format!("nats://alice:s3cret@127.0.0.1:{}", server.port());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    broker
        .publish(Message::new("a.b", "x").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn token_in_the_url() {
    let Some(server) = NatsServer::start(&["--auth", "T0KEN"]) else {
        return;
    };
    let good = format!("nats://T0KEN@127.0.0.1:{}", server.port());
    let broker = switchboard_nats::connect(&good).await.unwrap();
    broker.flush().await.unwrap();
    broker.close().await.unwrap();

    let bad = format!("nats://nope@127.0.0.1:{}", server.port());
    let err = switchboard_nats::connect(&bad).await.unwrap_err();
    assert!(err.to_string().contains("authorization failed"), "{err}");
    assert!(!err.to_string().contains("nope"), "{err}");
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth));
    assert!(!err.is_temporary());
}

/// Something that is not a NATS server answers: a protocol error, not worth retrying.
#[tokio::test]
async fn a_peer_speaking_another_protocol_is_a_protocol_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let err = switchboard_nats::connect(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Protocol), "{err}");
    assert!(!err.is_temporary());
    assert_chain_does_not_repeat(&err);
    serve.abort();
}

#[tokio::test]
async fn unknown_parameter_is_named() {
    let err = switchboard_nats::connect("nats://127.0.0.1:4222?capacty=5")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("unknown parameter `capacty`"),
        "{err}"
    );
}

#[tokio::test]
async fn url_query_sets_options() {
    let Some(url) = server::url() else { return };
    let sep = if url.contains('?') { '&' } else { '?' };
    let broker = switchboard_nats::connect(&format!("{url}{sep}capacity=1234&name=sb-test"))
        .await
        .unwrap();
    assert_eq!(broker.options().capacity, 1234);
    assert_eq!(broker.options().name.as_deref(), Some("sb-test"));
    assert_eq!(broker.kind(), "nats");
    broker.close().await.unwrap();
}
