//! Connect errors against real ports, one line each: a refused port, bad
//! (and missing) credentials on a private mosquitto with a password file,
//! a silent peer, an unknown URL key; and good credentials.

use std::time::{Duration, Instant};

use switchboard_core::{Broker, ConnectKind, ErrorKind, Message, Publisher};
use switchboard_mqtt::{MqttBroker, MqttOptions};
use switchboard_testkit::{assert_chain_does_not_repeat, MosquittoServer};

#[tokio::test]
async fn refused_port_says_nothing_answers() {
    let port = switchboard_testkit::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let started = Instant::now();
    let err = switchboard_mqtt::connect(&url).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("mqtt: cannot connect to {url}: nothing answers (connection refused); is mosquitto (or another MQTT server) running?")
    );
    assert!(started.elapsed() < Duration::from_secs(3), "failed fast");
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.connect_kind(), Some(ConnectKind::Refused));
    assert!(err.is_temporary(), "a refused port may answer later");
    assert_chain_does_not_repeat(&err);
}

#[tokio::test]
async fn bad_credentials_are_refused_and_redacted() {
    let Some(server) = MosquittoServer::start_with_password("alice", "s3cret") else {
        return;
    };
    let port = server.port();
    let url = format!("mqtt://alice:wrong-pw@127.0.0.1:{port}");
    let err = switchboard_mqtt::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!("mqtt: cannot connect to mqtt://alice:***@127.0.0.1:{port}: the server rejected the user name or password; check them in the URL (mqtt://USER:PASSWORD@host)")
    );
    assert!(!text.contains("wrong-pw"));
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth));
    assert!(!err.is_temporary(), "a wrong password stays wrong");
    assert_chain_does_not_repeat(&err);

    // No credentials at all: mosquitto says "not authorized".
    let err = switchboard_mqtt::connect(&server.url()).await.unwrap_err();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth), "{err}");
    assert!(
        err.to_string().contains("mqtt://USER:PASSWORD@host"),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'), "one line: {err}");

    // The right ones work.
    let broker = switchboard_mqtt::connect(&format!("mqtt://alice:s3cret@127.0.0.1:{port}"))
        .await
        .unwrap();
    broker
        .publish(Message::new("auth.ok", "in").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    assert!(broker.status().connected);
    broker.close().await.unwrap();
}

#[tokio::test]
async fn silent_peer_times_out() {
    // Accepts TCP but never answers CONNECT.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = MqttBroker::connect_with(
        &format!("mqtt://127.0.0.1:{port}"),
        MqttOptions::new().connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.connect_kind(), Some(ConnectKind::Timeout), "{err}");
    assert!(err.to_string().contains("no CONNACK within 300ms"), "{err}");
    assert!(err.is_temporary());
    keep.abort();
}

#[tokio::test]
async fn unknown_url_key_is_named() {
    let err = switchboard_mqtt::connect("mqtt://u:pw@127.0.0.1:1883?qos=1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(text.contains("unknown parameter `qos`"), "{text}");
    assert!(!text.contains(":pw@"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
}
