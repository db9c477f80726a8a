//! The driver registry: built-in drivers first, third-party ones reachable by
//! scheme and bare kind once registered, scheme clashes refused. Each test
//! registers kinds and schemes of its own: the registry is the process's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use switchboard::{Broker, Driver, Error, MemoryBroker};

/// A driver for `kind` under `schemes`, on the in-memory broker (the URL's
/// scheme swapped for `memory`), whose brokers say they are `memory`.
macro_rules! memory_driver {
    ($kind:expr, $schemes:expr, $default:expr) => {
        Driver::new($kind, $schemes, $default, |url| {
            Box::pin(async move {
                let rest = url.split_once("://").map_or("", |(_, rest)| rest);
                let memory = MemoryBroker::connect(&format!("memory://{rest}"))?;
                Ok(Arc::new(memory) as Arc<dyn Broker>)
            })
        })
    };
}

#[test]
#[cfg(all(feature = "nats", feature = "redis", feature = "amqp"))]
fn the_built_in_drivers_come_first() {
    let kinds: Vec<&str> = switchboard::drivers().iter().map(|d| d.kind()).collect();
    assert_eq!(&kinds[..4], ["memory", "nats", "redis", "amqp"]);
    let nats = switchboard::drivers()[1];
    assert_eq!(nats.schemes(), ["nats", "tls"]);
    assert_eq!(nats.default_url(), "nats://127.0.0.1:4222");
    assert_eq!(switchboard::resolve_url("NATS"), "nats://127.0.0.1:4222");
    assert!(switchboard::supported_schemes()
        .starts_with(
            "memory://, nats://, tls://, redis://, rediss://, redis+unix://, unix://, redis+cluster://, rediss+cluster://, amqp://, amqps://"
        ));
}

#[tokio::test]
async fn a_registered_driver_is_reached_by_scheme_and_by_kind() {
    const HUB: Driver = memory_driver!("hub", &["hub", "hubs"], "hub://default-hub");
    assert!(switchboard::connect("hub://x").await.is_err(), "not yet");
    switchboard::register(HUB).unwrap();
    let broker = switchboard::connect("HUBS://x").await.unwrap();
    assert_eq!(broker.kind(), "memory");
    assert_eq!(switchboard::resolve_url("hub"), "hub://default-hub");
    switchboard::connect("hub").await.unwrap();
    assert!(switchboard::supported_schemes().contains("hub://, hubs://"));
    assert!(switchboard::drivers().iter().any(|d| d.kind() == "hub"));
}

#[test]
fn registering_a_kind_again_replaces_it() {
    const FIRST: Driver = memory_driver!("again", &["again"], "again://1");
    const SECOND: Driver = memory_driver!("again", &["again2"], "again2://2");
    switchboard::register(FIRST).unwrap();
    switchboard::register(FIRST).unwrap();
    let count = || {
        switchboard::drivers()
            .iter()
            .filter(|d| d.kind() == "again")
            .count()
    };
    assert_eq!(count(), 1, "idempotent");
    switchboard::register(SECOND).unwrap();
    assert_eq!(count(), 1);
    assert_eq!(switchboard::resolve_url("again"), "again2://2");
    assert!(!switchboard::supported_schemes().contains("again://"));
}

#[test]
fn a_scheme_of_another_kind_is_refused_naming_both() {
    const CLASH: Driver = memory_driver!("clash", &["clash", "memory"], "clash://");
    let error = switchboard::register(CLASH).unwrap_err();
    assert!(
        matches!(&error, Error::SchemeTaken { scheme, kind, taken_by }
            if scheme == "memory" && kind == "clash" && taken_by == "memory"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot register the clash driver: the URL scheme \"memory\" is taken by the memory driver; give the clash driver schemes of its own"
    );
    // Counted by kind: the other tests of this binary register drivers of
    // their own at the same time, so the total may grow meanwhile.
    let clash = switchboard::drivers()
        .iter()
        .filter(|d| d.kind() == "clash")
        .count();
    assert_eq!(clash, 0, "nothing registered");
    assert_eq!(switchboard::resolve_url("clash"), "clash");
}

#[tokio::test]
async fn unknown_schemes_and_bare_words_say_what_is_supported() {
    let error = switchboard::connect("kafka://u:pw@h").await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(
            "unsupported broker \"kafka\" in kafka://u:***@h: this build supports memory://"
        ),
        "{text}"
    );
    let error = switchboard::connect("nowhere")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("expected a broker kind (memory"), "{error}");
    #[cfg(all(feature = "nats", feature = "redis", feature = "amqp"))]
    assert!(
        error.contains("expected a broker kind (memory, nats, redis, amqp"),
        "{error}"
    );
}

/// `cargo test -p switchboard --no-default-features`: a built-in adapter's
/// scheme names the feature that brings it.
#[cfg(not(feature = "amqp"))]
#[tokio::test]
async fn a_compiled_out_adapter_names_its_feature() {
    let error = switchboard::connect("amqp://h")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("(the `amqp` cargo feature of switchboard is not enabled)"),
        "{error}"
    );
}

/// A driver no URL could reach is refused when registered, saying what to
/// change (each was accepted, and failed later at `connect` with an error
/// about something else).
#[test]
fn a_driver_no_url_could_reach_is_refused() {
    let cases = [
        (
            memory_driver!("", &["empty-kind"], "empty-kind://"),
            "its kind is empty",
        ),
        (
            memory_driver!("noschemes", &[], "noschemes://"),
            "names no URL scheme",
        ),
        (
            memory_driver!("spaced", &["sp aced"], "sp aced://"),
            "\"sp aced\" cannot be a URL scheme",
        ),
        (
            memory_driver!("upper", &["UPPER"], "UPPER://"),
            "\"UPPER\" cannot be a URL scheme",
        ),
        (
            memory_driver!("elsewhere", &["elsewhere"], "other://x"),
            "its default URL \"other://x\" is not of one of its schemes",
        ),
    ];
    for (driver, expected) in cases {
        let error = switchboard::register(driver).unwrap_err();
        assert!(matches!(error, Error::InvalidDriver { .. }), "{error:?}");
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(error.kind(), switchboard::ErrorKind::InvalidInput);
    }
    let kinds: Vec<&str> = switchboard::drivers().iter().map(|d| d.kind()).collect();
    for refused in ["", "noschemes", "spaced", "upper", "elsewhere"] {
        assert!(
            !kinds.contains(&refused),
            "{refused:?} was registered: {kinds:?}"
        );
    }
}
