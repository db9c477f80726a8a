//! Redis PUBSUB for switchboard: publish and subscribe through Redis with the
//! same code as on NATS, AMQP or the in-memory broker.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
//! use switchboard_core::{Message, Publisher};
//! let broker = switchboard_redis::connect("redis://:secret@127.0.0.1:6379/0").await?;
//! broker.publish(Message::new("alerts.cpu", "CPU at 98%")?).await?;
//! broker.flush().await?;
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! Read by redis-rs, as any redis-rs program reads them:
//!
//! - `redis://host[:port][/database]` — plain TCP, port 6379 by default;
//! - `redis://[user]:password@host[:port][/database]` — `AUTH` (with a user for ACLs);
//! - `rediss://...` — TLS, checked against the platform's trust store;
//!   `rediss://...#insecure` skips certificate verification (the handshake's
//!   signatures are still checked).
//!
//! # TLS
//!
//! The TLS query keys are the same on every switchboard adapter (see
//! [`TlsOptions`], also settable with [`RedisOptions::tls`]):
//!
//! - `rediss://host:6380?ca=/etc/redis/ca.pem`: a private CA instead of the
//!   platform's store (`ca=system` adds the store back);
//! - `rediss://host:6380?ca=/etc/redis/ca.pem&cert=/etc/redis/client.pem&key=/etc/redis/client-key.pem`:
//!   mutual TLS (`tls-auth-clients yes`, Redis's default);
//! - `rediss://10.0.0.7:6380?ca=…&tls_server_name=redis.internal`: verify (and
//!   send as SNI) a name the certificate holds instead of the address.
//!
//! TLS keys in a `redis://` URL are refused (write `rediss://`); settings made
//! in code apply to `rediss://` URLs only. A failed handshake is
//! one [`Error::Connect`](switchboard_core::Error::Connect) line saying which:
//! the certificate is not trusted (naming the CA files or the system store), the
//! host name does not match, the server requires a client certificate or
//! refused the one given; a file that cannot be read is named. The rustls
//! configuration (ring provider) is built once per broker by `switchboard-tls`
//! and reused on every reconnection.
//!
//! Connecting is bounded by a timeout (5 s, see [`RedisOptions`]); failures are
//! [`Error::Connect`](switchboard_core::Error::Connect) with the password
//! redacted and a hint (`is redis-server running?`, check the password, ...).
//!
//! Apart from the TLS keys the URL carries no adapter options (redis-rs reads
//! it); the rest is set on [`RedisOptions`]:
//!
//! | option | default | |
//! |---|---|---|
//! | [`connect_timeout`](RedisOptions::connect_timeout) | 5 s | TCP, TLS, `AUTH`, `SELECT` |
//! | [`tls`](RedisOptions::tls) | the platform's trust store | CA files, client certificate, server name (also the URL keys above) |
//! | [`flush_timeout`](RedisOptions::flush_timeout) | 10 s | how long `flush` (and `close`) wait for Redis's replies |
//! | [`client_name`](RedisOptions::client_name) | `switchboard` | the name in `CLIENT LIST` |
//! | [`subscription_capacity`](RedisOptions::subscription_capacity) | 2^20 | deliveries buffered per subscription |
//! | [`reconnect_backoff`](RedisOptions::reconnect_backoff) | 100 ms to 5 s | delay between reconnection attempts |
//!
//! # Capabilities
//!
//! | | |
//! |---|---|
//! | queue groups | no: [`subscribe_group`](switchboard_core::Subscriber::subscribe_group) returns `Unsupported` (PUBSUB delivers every message to every subscriber) |
//! | headers | yes, in an envelope (see [`wire`]); not native |
//! | wildcards | `*` and `>` become a PSUBSCRIBE glob; the adapter checks every message against the pattern, so `*` never spans a dot |
//! | order | per publisher, as Redis keeps it |
//! | ack, redelivery, persistence | no: a message published while nobody subscribes is gone |
//! | max payload | the server's `proto-max-bulk-len` (512 MiB by default), envelope included |
//!
//! # Connections
//!
//! One connection publishes. `publish` appends the encoded PUBLISH to a buffer
//! and returns without waiting for Redis; one writer task sends everything that
//! accumulated in one write, so publishes pipeline, and a reader task counts
//! the replies. `flush` waits until every PUBLISH made before it is answered,
//! and reports those that failed.
//!
//! Each subscription has its own pub/sub connection, so a slow subscription
//! affects nobody else and is reconnected on its own. Subscribing resolves once
//! Redis confirmed the SUBSCRIBE (literal patterns) or PSUBSCRIBE. The
//! connections speak RESP directly (redis-rs reads the URL): redis-rs's pub/sub
//! buffers without bound, which would hide a subscriber falling behind.
//!
//! # Slow subscribers and reconnecting
//!
//! A subscription buffers a bounded number of deliveries
//! ([`RedisOptions::subscription_capacity`]). When the application does not
//! keep up, the adapter stops reading the connection; if that lasts, Redis
//! disconnects the subscriber (`client-output-buffer-limit pubsub`). Whenever a
//! subscription's connection breaks (that, `CLIENT KILL`, a restart, the
//! network), its stream yields an
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item, then the
//! adapter reconnects and resubscribes with a backoff (100 ms doubling to 5 s)
//! and the stream goes on. Messages published meanwhile are lost: PUBSUB keeps
//! nothing. Nothing is ever dropped silently on the client side.
//!
//! The publishing connection reconnects too: publishes in flight when it broke
//! are reported by the next `flush`; while reconnecting fails, `publish`
//! returns [`Error::Publish`](switchboard_core::Error::Publish).
//!
//! ## Connections that die silently
//!
//! A connection can die without Redis or the kernel saying so: the host
//! vanishes, a NAT or firewall forgets the connection. Every connection the
//! adapter opens therefore has TCP keepalive on (first probe after 15 s of
//! silence, then every 5 s; after 3 unanswered probes the kernel fails the
//! connection), so such a connection breaks after about 30 s and is handled
//! as above: an idle subscription reports
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) and
//! resubscribes. Subscriptions do not send PING: a subscribed connection has
//! nothing outstanding, which is exactly when keepalive probes run, and a
//! server that is up but not answering (paused, overloaded) would not be
//! helped by resubscribing to it.
//!
//! `flush` waits at most [`RedisOptions::flush_timeout`] (10 s by default),
//! then fails with [`Error::Timeout`](switchboard_core::Error::Timeout); the
//! publishes it waited for stay counted, so a later `flush` waits for them
//! again and reports those that failed (e.g. when keepalive has meanwhile
//! broken the connection). Keepalive only probes a connection with nothing
//! unacknowledged in flight: a publishing connection that dies while sending
//! is noticed by the kernel's retransmission timeout (minutes), during which
//! `publish` keeps buffering up to 4 MiB and then waits.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod broker;
mod conn;
mod options;
mod publisher;
mod resp;
mod subscriber;
mod tls;
pub mod wire;

pub use broker::RedisBroker;
pub use options::{
    RedisOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY,
};
/// TLS settings for [`tls`](RedisOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::Result;

/// The broker kind, as [`Broker::kind`](switchboard_core::Broker::kind) reports it.
pub const BROKER: &str = "redis";

/// The URL schemes this adapter accepts: `redis` and `rediss` (TLS).
pub const SCHEMES: &[&str] = &["redis", "rediss"];

/// Connects to a `redis://` or `rediss://` URL with the default [`RedisOptions`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// let broker = switchboard_redis::connect("redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<RedisBroker> {
    RedisOptions::new().connect(url).await
}
