//! The MQTT 5 adapter of switchboard, on [rumqttc](https://docs.rs/rumqttc)'s
//! MQTT 5 client: publish/subscribe, queue groups (shared subscriptions),
//! headers (user properties) and request/reply (response topic and
//! correlation data) behind switchboard's [`Broker`] traits.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> switchboard_core::Result<()> {
//! use futures::StreamExt;
//! use switchboard_core::{Broker, Message, Publisher, SubscriberExt};
//! let broker = switchboard_mqtt::connect("mqtt://127.0.0.1:1883").await?;
//! let mut alerts = broker.subscribe_to("alerts.>").await?; // topic filter alerts/#
//! broker.publish(Message::new("alerts.cpu", "CPU at 98%")?.with_header("host", "web-1")?).await?;
//! while let Some(item) = alerts.next().await {
//!     match item {
//!         Ok(delivery) => println!("{:?} from {:?}", delivery.payload_str(), delivery.headers().get("host")),
//!         Err(error) => eprintln!("warning: {error}"),
//!     }
//! }
//! broker.close().await?;
//! # Ok(()) }
//! ```
//!
//! The crate has the layout of every switchboard adapter: `options` (the
//! [`MqttOptions`] builder and URL parsing), `connection` (connecting, the
//! event-loop task, reconnecting), `broker` ([`MqttBroker`]), `publisher`,
//! `subscription`, [`wire`] (the mapping to MQTT topics and properties),
//! `error` (connect failures in words) and `tls`; [`DRIVER`] is its entry
//! for `switchboard::connect`.
//!
//! # URLs
//!
//! - `mqtt://host[:port]` (port 1883 by default), `mqtts://host[:port]` (TLS, port 8883);
//! - `mqtt://user:password@host` (percent-encode `@`, `:`, `/` in credentials);
//!   the password is redacted in every error;
//! - options in the query, e.g. `mqtt://host?capacity=65536&connect_timeout=2s&name=api`,
//!   with the keys and units every switchboard adapter shares
//!   ([`switchboard_core::options`]); an unknown parameter is an error naming it.
//!
//! # TLS
//!
//! `mqtts://` verifies the server against the platform's trust store unless
//! the URL (or [`MqttOptions::tls`]) names CA files, with the keys every
//! adapter takes (see [`TlsOptions`]): `ca=PATH` (repeatable, `ca=system`
//! adds the platform's store), `cert=PATH&key=PATH` (mutual TLS),
//! `tls_server_name=NAME` (the name the certificate is checked against when
//! it differs from the host). TLS keys in an `mqtt://` URL are refused. The
//! rustls configuration is built by `switchboard-tls` with the ring provider
//! and handed to rumqttc, which is built without a provider of its own.
//!
//! # Options ([`MqttOptions`])
//!
//! | option | URL | default | |
//! |---|---|---|---|
//! | [`connect_timeout`](MqttOptions::connect_timeout) | `connect_timeout=5s` | 5 s | TCP + TLS + CONNECT/CONNACK; then connecting fails saying why |
//! | [`capacity`](MqttOptions::capacity) | `capacity=N` | 2^20 ([`DEFAULT_CAPACITY`]) | messages each subscription buffers while its reader is behind |
//! | [`flush_timeout`](MqttOptions::flush_timeout) | `flush_timeout=10s` | 10 s | the most `flush`, `subscribe`, `Subscription::close` and `close` wait for the server, and a `publish` into a full client queue |
//! | [`name`](MqttOptions::name) | `name=api` | `switchboard` | the client identifier is `NAME-<16 hex digits>` |
//! | [`keepalive`](MqttOptions::keepalive) | `keepalive=15s`, `keepalive=off` | 15 s ([`DEFAULT_KEEPALIVE`]) | a link that answers no PINGREQ this long is dropped and reconnected |
//! | [`tls`](MqttOptions::tls) | `ca=`, `cert=`, `key=`, `tls_server_name=` (`mqtts://` only) | the platform's trust store | see [TLS](#tls) |
//! | [`reconnect_backoff`](MqttOptions::reconnect_backoff) | | 100 ms to 5 s ([`Backoff::DEFAULT`](switchboard_core::Backoff::DEFAULT)) | delay between reconnection attempts, the first at once |
//!
//! Connecting fails at once, with a reason and a
//! [`ConnectKind`](switchboard_core::ConnectKind), when nothing answers
//! (`Refused`: `is mosquitto … running?`), on a timeout (`Timeout`), when the
//! server rejects the user name or password (`Auth`), on a TLS failure
//! (`Tls`), or when the peer is not an MQTT 5 server (`Protocol`). Once
//! connected, the adapter reconnects by itself, forever, on the shared
//! schedule (the first attempt at once, then 100 ms doubling to 5 s).
//!
//! # Capabilities
//!
//! `queue_groups` (unless the server's CONNACK says it has no shared
//! subscriptions), `native_headers`, `headers`, `native_wildcards`,
//! `ordered_per_publisher` and `request_reply` are true; `ack`,
//! `redelivery`, `persistence` and `durable` are false. `max_payload` is the
//! largest payload that fits the server's maximum packet size (from CONNACK;
//! MQTT's 268,435,455 bytes when it names none) on any subject, i.e. that
//! size less 773 bytes for the packet's header and the longest topic.
//!
//! # Wire mapping
//!
//! See [`wire`]: subjects are topics with `.` ↔ `/` (`alerts.cpu` is
//! `alerts/cpu`), `%`, `/`, `+` and `#` in tokens (and a leading `$`)
//! percent-escaped so the mapping is a bijection; `*` → `+`, `>` → `#`
//! (filtered with [`Pattern::matches`](switchboard_core::Pattern::matches),
//! since `#` also matches the parent); headers are MQTT 5 user properties,
//! a message without headers carries none; queue groups are shared
//! subscriptions `$share/GROUP/filter`. Messages are published at QoS 0 and
//! subscribed at QoS 0, without retain; subscriptions do not receive
//! retained messages (retain handling "never"), so a subscription gets what
//! is published after it, as on every switchboard broker.
//!
//! # Delivery guarantees
//!
//! - `publish` queues a QoS 0 PUBLISH (at most once) and returns;
//! - `flush` waits until the server has processed every earlier publish of
//!   the connection: it queues a SUBSCRIBE to a filter of the connection's
//!   own (`_switchboard.flush/<client id>`, which no subject maps to and
//!   nothing publishes to) behind them and waits for the SUBACK (an MQTT
//!   server handles one connection's packets in order), so a subscriber that existed then has
//!   been handed them. It is no PUBACK-style receipt per message: a message
//!   the server itself drops (a subscriber's queue over mosquitto's
//!   `max_queued_messages`) is not reported to the publisher;
//! - `subscribe` returns once the server acknowledged the SUBSCRIBE: a
//!   message published afterwards is delivered;
//! - every subscription of a handle shares the handle's one connection; each
//!   has its own buffer ([`capacity`](MqttOptions::capacity)): when it is full
//!   messages are dropped and the stream yields an
//!   [`Error::Lost`](switchboard_core::Error::Lost) item with the exact
//!   count. The connection is never stalled for a slow reader;
//! - what the server drops itself is not visible to any MQTT client at QoS 0:
//!   mosquitto drops QoS 0 messages for a client once 1000 packets
//!   (`max_queued_messages`) wait for its socket. The adapter reads the
//!   socket as fast as it can and asks for an 8 MiB socket receive buffer
//!   (capped by `net.core.rmem_max`), so a reader descheduled for a moment
//!   does not make the server drop; the conformance flood (200,000 messages
//!   as fast as one publisher can) arrives whole on a loaded 2-core machine.
//!   A subscriber slower than its publishers for long will still lose
//!   messages at the server, unreported: raise `max_queued_messages` there.
//!
//! # Durable subscriptions: not supported
//!
//! `subscribe_durable` fails with
//! [`Error::Unsupported`](switchboard_core::Error::Unsupported). MQTT's
//! persistent sessions (`clean_start=false`, session expiry, QoS 1) keep
//! messages for an absent client, but the switchboard contract needs more:
//! a `nack` that redelivers at once (MQTT has no negative acknowledgement
//! and redelivers unacknowledged messages only when the client connects
//! again), and a dropped delivery left unacknowledged without stalling the
//! session (rumqttc's manual acks must be sent in order, and the server
//! stops sending once its receive maximum of unacknowledged messages is
//! reached). Faking it would lose the guarantees it promises.
//!
//! # Request/reply
//!
//! [`Broker::request`] publishes with an MQTT 5 response topic (the
//! connection's inbox `_INBOX/<client id>`, subscribed on first use) and
//! correlation data; a delivery that carries a response topic is a request,
//! and [`Delivery::reply`](switchboard_core::Delivery::reply) publishes to that
//! topic with the same correlation data, so plain MQTT 5 clients can ask and
//! answer too. MQTT cannot tell that nobody listens: a request without
//! responders fails with [`Error::Timeout`](switchboard_core::Error::Timeout).
//!
//! # Reconnecting and loss
//!
//! When the connection breaks (or a PINGREQ goes unanswered, see
//! [`keepalive`](MqttOptions::keepalive)), every subscription yields one
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item,
//! [`Broker::status`] says disconnected, and the adapter reconnects with a
//! clean session, then subscribes every filter again and logs one line per
//! subscription when it is back (`mqtt: resubscribed to 'alerts.>' after 1.2s`).
//! Messages published meanwhile are lost (QoS 0); publishes queued in the
//! client while it was down are dropped with the old session. `flush`,
//! `subscribe` and `Subscription::close` wait for the connection to be back,
//! within the flush timeout.
//!
//! # Closing
//!
//! [`close`](switchboard_core::Broker::close) flushes (within the flush
//! timeout), sends DISCONNECT, ends every subscription stream and stops the
//! connection's task; publishing and subscribing then fail with
//! [`Error::Closed`](switchboard_core::Error::Closed). Dropping a
//! [`Subscription`](switchboard_core::Subscription) unsubscribes (when it was
//! the last of its filter on the connection); `Subscription::close` also waits
//! for the UNSUBACK. Dropping every handle and subscription of a connection
//! closes it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod broker;
mod connection;
mod error;
mod options;
mod publisher;
mod subscription;
mod tls;
pub mod wire;

use std::sync::Arc;

pub use broker::MqttBroker;
pub use options::{
    MqttOptions, DEFAULT_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_KEEPALIVE, QUERY_KEYS,
};
/// TLS settings for [`tls`](MqttOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::{Broker, Driver, Result};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "mqtt";

/// The URL schemes this adapter accepts: `mqtt` and `mqtts` (TLS).
pub const SCHEMES: &[&str] = &["mqtt", "mqtts"];

/// The URL the bare kind `mqtt` stands for: the local server on its usual port.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";

/// This adapter's entry for the `switchboard` facade's registry (registered
/// there when its `mqtt` feature is on).
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url).await?) as Arc<dyn Broker>) })
})
.with_locate(locate);

/// Where an MQTT URL leads: its server, port 1883 (8883 for `mqtts://`)
/// where none is written. `None` for a URL [`connect`] would refuse.
fn locate(url: &str) -> Option<switchboard_core::Location> {
    let target = options::parse_url(url, MqttOptions::default()).ok()?;
    Some(switchboard_core::Location::servers([(
        target.host,
        target.port,
    )]))
}

/// Connects to an `mqtt://` or `mqtts://` URL with the default
/// [`MqttOptions`]. Same as [`MqttBroker::connect`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// let broker = switchboard_mqtt::connect("mqtt://127.0.0.1:1883?name=billing").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<MqttBroker> {
    MqttBroker::connect(url).await
}
