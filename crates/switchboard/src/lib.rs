//! # switchboard
//!
//! Write event-driven programs once and run them on any message broker — NATS,
//! Redis PUBSUB, AMQP (RabbitMQ) or the in-memory broker — choosing the broker
//! with a URL at run time, never with a code change.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> switchboard::Result<()> {
//! use futures::StreamExt;
//! use switchboard::{PublisherExt, SubscriberExt};
//!
//! // `BROKER_URL=redis://127.0.0.1:6379` or `amqp://…` or `memory://`: same code.
//! let broker = switchboard::from_env().await?;
//! let mut alerts = broker.subscribe_to("alerts.>").await?;
//! broker.publish_to("alerts.cpu", "CPU at 98%").await?;
//! broker.flush().await?;
//! // An `Err` item says messages were lost or the connection broke: report it
//! // and go on, the subscription continues once the adapter has reconnected.
//! while let Some(item) = alerts.next().await {
//!     match item {
//!         Ok(delivery) => println!("{}", delivery.payload_str().unwrap_or("<binary>")),
//!         Err(error) => eprintln!("warning: {error}"),
//!     }
//! }
//! broker.close().await
//! # }
//! ```
//!
//! [`SubscriberExt`] and [`PublisherExt`] take patterns and subjects as text
//! on any broker; [`Message`] adds headers.
//!
//! Each adapter is a cargo feature (`nats`, `redis`, `amqp`, all on by default);
//! the in-memory broker is always there. The reaction worker (`on(pattern,
//! handler)` with retries, dead letters and graceful shutdown, typed
//! `on_json::<T>` routes, schemas and an AsyncAPI document) is the `worker`
//! feature, re-exported as [`worker`]; its codecs `msgpack` and `cbor`,
//! `schemars` (schemas from types) and `testing` (`switchboard::testing`,
//! unit tests for reactions without a server) are features too, off by default.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::Arc;

pub use switchboard_core::*;

#[cfg(feature = "amqp")]
pub use switchboard_amqp as amqp;
#[cfg(feature = "nats")]
pub use switchboard_nats as nats;
#[cfg(feature = "redis")]
pub use switchboard_redis as redis;
#[cfg(feature = "worker")]
pub use switchboard_worker as worker;
#[cfg(feature = "testing")]
pub use switchboard_worker::testing;

/// A broker chosen at run time: usable as `dyn Publisher`, `dyn Subscriber` and `dyn Broker`.
pub type AnyBroker = Arc<dyn Broker>;

/// The environment variable [`from_env`] reads.
pub const BROKER_URL_ENV: &str = "BROKER_URL";

/// The URL used when [`BROKER_URL_ENV`] is not set: the local NATS server.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// One broker kind this build knows: its name, URL schemes and default local URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The kind's name, accepted alone in place of a URL (`nats`, `redis`, ...).
    pub name: &'static str,
    /// The URL schemes it accepts.
    pub schemes: &'static [&'static str],
    /// The URL a bare kind name stands for.
    pub default_url: &'static str,
    /// Whether this build was compiled with it.
    pub enabled: bool,
}

/// Every broker kind switchboard knows, with whether this build has it.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "memory",
        schemes: &["memory"],
        default_url: "memory://",
        enabled: true,
    },
    Kind {
        name: "nats",
        schemes: &["nats", "tls"],
        default_url: "nats://127.0.0.1:4222",
        enabled: cfg!(feature = "nats"),
    },
    Kind {
        name: "redis",
        schemes: &["redis", "rediss"],
        default_url: "redis://127.0.0.1:6379",
        enabled: cfg!(feature = "redis"),
    },
    Kind {
        name: "amqp",
        schemes: &["amqp", "amqps"],
        default_url: "amqp://guest:guest@127.0.0.1:5672/%2f",
        enabled: cfg!(feature = "amqp"),
    },
];

/// The URL schemes this build can connect to, comma-separated, for error messages.
pub fn supported_schemes() -> String {
    let schemes: Vec<String> = KINDS
        .iter()
        .filter(|k| k.enabled)
        .flat_map(|k| k.schemes.iter().map(|s| format!("{s}://")))
        .collect();
    schemes.join(", ")
}

/// Turns a bare kind (`nats`, `redis`, `amqp`, `memory`) into its default local
/// URL; anything else is returned as it is.
///
/// ```
/// assert_eq!(switchboard::resolve_url("nats"), "nats://127.0.0.1:4222");
/// assert_eq!(switchboard::resolve_url("redis://h:1"), "redis://h:1");
/// ```
pub fn resolve_url(kind_or_url: &str) -> &str {
    let trimmed = kind_or_url.trim();
    KINDS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(trimmed))
        .map_or(trimmed, |k| k.default_url)
}

/// Connects to the broker named by `url` (or a bare kind such as `nats`), with
/// the adapter its scheme selects.
///
/// An unknown scheme, or one whose feature this build lacks, is an
/// [`Error::UnknownScheme`] listing what this build supports.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> switchboard::Result<()> {
/// let broker = switchboard::connect("memory://").await?;
/// assert_eq!(broker.kind(), "memory");
/// assert!(switchboard::connect("kafka://localhost").await.is_err());
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<AnyBroker> {
    let url = resolve_url(url);
    let scheme = match url.split_once("://") {
        Some((scheme, _)) if !scheme.is_empty() => scheme.to_ascii_lowercase(),
        _ => {
            return Err(Error::invalid_url(
                url,
                format!(
                    "expected a broker kind (memory, nats, redis, amqp) or a URL such as nats://127.0.0.1:4222; this build supports {}",
                    supported_schemes()
                ),
            ))
        }
    };
    let kind = KINDS.iter().find(|k| k.schemes.contains(&scheme.as_str()));
    match kind {
        Some(kind) if kind.enabled => {}
        Some(kind) => {
            return Err(Error::UnknownScheme {
                scheme,
                url: redact_url(url),
                supported: format!(
                    "{} (the `{}` cargo feature of switchboard is not enabled)",
                    supported_schemes(),
                    kind.name
                ),
            })
        }
        None => {
            return Err(Error::UnknownScheme {
                scheme,
                url: redact_url(url),
                supported: supported_schemes(),
            })
        }
    }
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryBroker::connect(url)?)),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(Arc::new(switchboard_nats::connect(url).await?)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(switchboard_redis::connect(url).await?)),
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => Ok(Arc::new(switchboard_amqp::connect(url).await?)),
        _ => Err(Error::UnknownScheme {
            scheme,
            url: redact_url(url),
            supported: supported_schemes(),
        }),
    }
}

/// The URL [`from_env`] would use: `BROKER_URL`, or [`DEFAULT_URL`] when unset or empty.
pub fn url_from_env() -> String {
    std::env::var(BROKER_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// Connects to the broker in the `BROKER_URL` environment variable (12-factor
/// style), or to the local NATS server when it is unset.
pub async fn from_env() -> Result<AnyBroker> {
    connect(&url_from_env()).await
}
