//! The broker-neutral behaviour suite, run against RabbitMQ.

switchboard_conformance::suite!(
    broker: "amqp",
    url_env: "SWITCHBOARD_AMQP_URL",
    default_url: "amqp://guest:guest@127.0.0.1:5672/%2f",
    connect: |url: String| async move { switchboard_amqp::connect(&url).await },
);
