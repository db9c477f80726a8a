//! The conformance suite run against the in-memory broker.

switchboard_conformance::suite!(
    broker: "memory",
    url_env: "SWITCHBOARD_MEMORY_URL",
    default_url: "memory://",
    connect: |url: String| async move { switchboard_core::MemoryBroker::connect(&url) },
);
