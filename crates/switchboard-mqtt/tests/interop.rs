//! Plain MQTT clients and switchboard see the same messages: `mosquitto_pub`
//! into a switchboard subscription, a switchboard publish into
//! `mosquitto_sub`, byte for byte, headers as MQTT 5 user properties; and a
//! request answered by switchboard to a plain client's response topic.
//! Against the MQTT server at `SWITCHBOARD_MQTT_URL` (mosquitto on 1883).
// Test helpers: a failed expectation must panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_conformance::{broker_url, recv, skip_or_fail};
use switchboard_core::{Broker, Message, Publisher, Subscriber};
use switchboard_mqtt::MqttBroker;
use tokio::process::Command;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn connect() -> Option<(MqttBroker, String, u16)> {
    let url = broker_url("SWITCHBOARD_MQTT_URL", "mqtt://127.0.0.1:1883");
    let parsed = url::Url::parse(&url).unwrap();
    let host = parsed.host_str().unwrap().to_string();
    let port = parsed.port().unwrap_or(1883);
    match switchboard_mqtt::connect(&url).await {
        Ok(broker) => Some((broker, host, port)),
        Err(e) => {
            skip_or_fail(format_args!("mqtt at {url} does not answer: {e}"));
            None
        }
    }
}

fn tools_installed() -> bool {
    let found = ["mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|tool| switchboard_testkit::process::find_program(tool).is_some());
    if !found {
        skip_or_fail(
            "mosquitto_pub/mosquitto_sub are not installed (apt-get install mosquitto-clients)",
        );
    }
    found
}

fn binary_payload() -> Vec<u8> {
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(b"\r\n\0\xff headers? no: bytes\n");
    payload
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn mosquitto_pub_reaches_a_switchboard_subscription() {
    let Some((broker, host, port)) = connect().await else {
        return;
    };
    if !tools_installed() {
        return;
    }
    let prefix = switchboard_testkit::unique("mqttin");
    let subject = format!("{prefix}.cpu");
    let topic = subject.replace('.', "/");
    let mut subscription = broker
        .subscribe(&format!("{prefix}.>").parse().unwrap())
        .await
        .unwrap();
    let payload = binary_payload();
    let file = std::env::temp_dir().join(format!("{prefix}.bin"));
    std::fs::write(&file, &payload).unwrap();
    let status = timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args([
                "-V",
                "5",
                "-h",
                &host,
                "-p",
                &port.to_string(),
                "-t",
                &topic,
            ])
            .arg("-f")
            .arg(&file)
            .args(["-D", "publish", "user-property", "severity", "high"])
            .args(["-D", "publish", "user-property", "host", "web-1"])
            .status(),
    )
    .await
    .expect("mosquitto_pub did not finish")
    .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(status.success(), "mosquitto_pub: {status}");
    let delivery = recv(&mut subscription).await;
    assert_eq!(delivery.subject().as_str(), subject);
    assert_eq!(&delivery.payload()[..], &payload[..], "byte for byte");
    assert_eq!(delivery.headers().get("severity"), Some("high"));
    assert_eq!(delivery.headers().get("host"), Some("web-1"));
    assert_eq!(delivery.headers().len(), 2);
    assert!(!delivery.is_request());

    // A plain message without properties arrives without headers.
    let status = Command::new("mosquitto_pub")
        .args([
            "-V",
            "5",
            "-h",
            &host,
            "-p",
            &port.to_string(),
            "-t",
            &topic,
            "-m",
            "plain",
        ])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let delivery = recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("plain"));
    assert!(delivery.headers().is_empty());
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_switchboard_publish_reaches_mosquitto_sub() {
    let Some((broker, host, port)) = connect().await else {
        return;
    };
    if !tools_installed() {
        return;
    }
    let prefix = switchboard_testkit::unique("mqttout");
    let subject = format!("{prefix}.disk");
    let payload = binary_payload();
    // `%t|%P|%x`: topic, user properties (`k:v k:v`), payload in hex.
    let sub = Command::new("mosquitto_sub")
        .args(["-V", "5", "-h", &host, "-p", &port.to_string()])
        .args(["-t", &format!("{}/#", prefix.replace('.', "/")), "-C", "1"])
        .args(["-F", "%t|%P|%x"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::spawn(sub.wait_with_output());
    // mosquitto_sub says nothing once subscribed: publish until it has one
    // (every copy is the same message; it prints the first and exits).
    let deadline = Instant::now() + WAIT;
    let message = Message::new(subject.as_str(), payload.clone())
        .unwrap()
        .with_header("severity", "high")
        .unwrap();
    while !output.is_finished() {
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub got nothing within {WAIT:?}"
        );
        broker.publish(message.clone()).await.unwrap();
        broker.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = output.await.unwrap().unwrap();
    let line = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        line.trim_end(),
        format!(
            "{}|severity:high|{}",
            subject.replace('.', "/"),
            hex(&payload)
        )
    );
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_plain_client_request_gets_a_switchboard_reply() {
    let Some((broker, host, port)) = connect().await else {
        return;
    };
    if !tools_installed() {
        return;
    }
    let prefix = switchboard_testkit::unique("mqttrr");
    let topic = format!("{}/ask", prefix.replace('.', "/"));
    let reply_topic = format!("{}/answer", prefix.replace('.', "/"));
    let mut requests = broker
        .subscribe(&format!("{prefix}.ask").parse().unwrap())
        .await
        .unwrap();
    let responder = tokio::spawn(async move {
        let mut answered = 0;
        while let Ok(Some(item)) = timeout(WAIT, requests.next()).await {
            let request = item.unwrap();
            assert!(request.is_request(), "a response topic makes a request");
            request
                .reply(format!("pong to {}", request.payload_str().unwrap()))
                .await
                .unwrap();
            answered += 1;
        }
        answered
    });
    let sub = Command::new("mosquitto_sub")
        .args([
            "-V",
            "5",
            "-h",
            &host,
            "-p",
            &port.to_string(),
            "-t",
            &reply_topic,
            "-C",
            "1",
        ])
        .args(["-F", "%t|%p"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::spawn(sub.wait_with_output());
    let deadline = Instant::now() + WAIT;
    while !output.is_finished() {
        assert!(
            Instant::now() < deadline,
            "no reply reached mosquitto_sub within {WAIT:?}"
        );
        let status = Command::new("mosquitto_pub")
            .args([
                "-V",
                "5",
                "-h",
                &host,
                "-p",
                &port.to_string(),
                "-t",
                &topic,
                "-m",
                "ping",
            ])
            .args(["-D", "publish", "response-topic", &reply_topic])
            .args(["-D", "publish", "correlation-data", "c0ffee"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = output.await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim_end(),
        format!("{reply_topic}|pong to ping")
    );
    broker.close().await.unwrap();
    assert!(responder.await.unwrap() >= 1);
}
