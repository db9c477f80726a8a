//! The broker-neutral conformance suite, against the MQTT server at
//! `SWITCHBOARD_MQTT_URL` (default `mqtt://127.0.0.1:1883`, Mosquitto in CI).

switchboard_conformance::suite!(
    broker: "mqtt",
    url_env: "SWITCHBOARD_MQTT_URL",
    default_url: "mqtt://127.0.0.1:1883",
    connect: |url: String| async move { switchboard_mqtt::connect(&url).await },
);
