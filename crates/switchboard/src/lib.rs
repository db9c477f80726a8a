//! # switchboard
//!
//! Write event-driven programs once and run them on any message broker — NATS,
//! Redis PUBSUB, AMQP (RabbitMQ), MQTT 5 (Mosquitto) or the in-memory broker — choosing the broker
//! with a URL at run time, never with a code change.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> switchboard::Result<()> {
//! use futures::StreamExt;
//! use switchboard::{PublisherExt, SubscriberExt};
//!
//! // `BROKER_URL=redis://127.0.0.1:6379` or `amqp://…`, `mqtt://…`, `memory://`: same code.
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
//! Each adapter is a cargo feature (`nats`, `redis`, `amqp`, `mqtt`, all on by default);
//! the in-memory broker is always there. The reaction worker (`on(pattern,
//! handler)` with retries, dead letters and graceful shutdown, typed
//! `on_json::<T>` routes, schemas and an AsyncAPI document) is the `worker`
//! feature, re-exported as [`worker`]; its codecs `msgpack` and `cbor`,
//! `schemars` (schemas from types), `testing` (`switchboard::testing`,
//! unit tests for reactions without a server) and `otel` (handled messages
//! as OpenTelemetry spans, see `switchboard::worker::trace`) are features
//! too, off by default.
//! [`prelude`] brings the traits.
//!
//! # Drivers
//!
//! [`connect`] picks the adapter by the URL's scheme from a registry of
//! [`Driver`]s: this build's adapters are registered on first use, and a
//! third-party adapter crate's `DRIVER` joins them with [`register`]:
//!
//! ```ignore
//! switchboard::register(my_adapter::DRIVER)?;
//! let broker = switchboard::connect("mybroker://host:1234").await?;
//! ```
//!
//! [`drivers`] lists what this process knows, [`resolve_url`] turns a bare
//! kind into its default URL, and [`supported_schemes`] is what error
//! messages list.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::Arc;

pub use switchboard_core::*;

#[cfg(feature = "amqp")]
pub use switchboard_amqp as amqp;
#[cfg(feature = "mqtt")]
pub use switchboard_mqtt as mqtt;
#[cfg(feature = "nats")]
pub use switchboard_nats as nats;
#[cfg(feature = "redis")]
pub use switchboard_redis as redis;
#[cfg(feature = "worker")]
pub use switchboard_worker as worker;
#[cfg(feature = "testing")]
pub use switchboard_worker::testing;

pub mod prelude;
mod registry;

pub use registry::{drivers, register, resolve_url, supported_schemes};

/// A broker chosen at run time: usable as `dyn Publisher`, `dyn Subscriber` and `dyn Broker`.
pub type AnyBroker = Arc<dyn Broker>;

/// The environment variable [`from_env`] reads.
pub const BROKER_URL_ENV: &str = "BROKER_URL";

/// The URL used when [`BROKER_URL_ENV`] is not set: the local NATS server.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Connects to the broker named by `url` (or a bare kind such as `nats`), with
/// the driver its scheme selects (see [`register`]).
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
                    "expected a broker kind ({}) or a URL such as nats://127.0.0.1:4222; this build supports {}",
                    registry::kinds(),
                    supported_schemes()
                ),
            ))
        }
    };
    match registry::driver_for_scheme(&scheme) {
        Some(driver) => driver.connect(url).await,
        None => Err(registry::unknown_scheme(scheme, url)),
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
