//! `mqtts://` through a TLS-terminating proxy of the test's own (the testkit's
//! `TlsProxy`, optionally requiring client certificates) in front of the
//! shared mosquitto (`SWITCHBOARD_MQTT_URL`, default `mqtt://127.0.0.1:1883`),
//! with certificates made by the test: the shared TLS checks
//! (`switchboard_testkit::tls_checks`) and what is MQTT's own. Without
//! mosquitto they print `skipped: ...` and pass, unless
//! `SWITCHBOARD_REQUIRE_BROKERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_conformance::Connector;
use switchboard_core::{Broker, Message, Publisher};
use switchboard_mqtt::{MqttBroker, MqttOptions, TlsOptions};
use switchboard_testkit::{Pki, TlsChecks, TlsEndpoint, TlsProxy};

/// The shared mosquitto's port, if it answers.
fn mosquitto_port() -> Option<u16> {
    let url = switchboard_conformance::broker_url("SWITCHBOARD_MQTT_URL", "mqtt://127.0.0.1:1883");
    let port = url::Url::parse(&url).ok()?.port().unwrap_or(1883);
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        Some(port)
    } else {
        switchboard_conformance::skip_or_fail(format_args!("mosquitto not available at {url}"));
        None
    }
}

fn checks() -> TlsChecks {
    TlsChecks::new(
        |pki, mutual| {
            let port = mosquitto_port()?;
            let proxy = if mutual {
                TlsProxy::mutual(pki, port)
            } else {
                TlsProxy::start(pki, port)
            };
            Some(TlsEndpoint::new(
                format!("mqtts://{}", proxy.address()),
                proxy,
            ))
        },
        Connector::new(|url: String| async move { switchboard_mqtt::connect(&url).await }),
    )
}

switchboard_testkit::tls_checks!(checks());

#[tokio::test]
async fn mutual_tls_from_the_options_builder_publishes() {
    let Some(port) = mosquitto_port() else { return };
    let pki = Pki::new();
    let proxy = TlsProxy::mutual(&pki, port);
    let options = MqttOptions::new().tls(
        TlsOptions::new()
            .ca(pki.ca())
            .client_cert(pki.client_cert(), pki.client_key()),
    );
    let broker = MqttBroker::connect_with(&format!("mqtts://{}", proxy.address()), options)
        .await
        .unwrap();
    broker
        .publish(Message::new("tls.ok", "over TLS").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
}
