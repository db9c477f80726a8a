//! The shared conformance suite, against the Redis at `SWITCHBOARD_REDIS_URL`
//! (default `redis://127.0.0.1:6379`).

switchboard_conformance::suite!(
    broker: "redis",
    url_env: "SWITCHBOARD_REDIS_URL",
    default_url: "redis://127.0.0.1:6379",
    connect: |url: String| async move { switchboard_redis::connect(&url).await },
);
