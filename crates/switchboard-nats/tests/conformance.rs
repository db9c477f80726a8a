//! The broker-neutral conformance suite, against the NATS server at
//! `SWITCHBOARD_NATS_URL` (default `nats://127.0.0.1:4222`).

switchboard_conformance::suite!(
    broker: "nats",
    url_env: "SWITCHBOARD_NATS_URL",
    default_url: "nats://127.0.0.1:4222",
    connect: |url: String| async move { switchboard_nats::connect(&url).await },
);
