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
//! The crate has the layout of every switchboard adapter: `options` (the
//! [`RedisOptions`] builder and URL parsing), `connection` (connecting and the
//! handshake), `broker` ([`RedisBroker`]), `publisher` (the pipelined
//! publishing connection), `subscription` (one connection per
//! subscription), [`wire`] (the header envelope), `error` (how connecting
//! fails) and `tls`, plus `resp`, the part of the Redis protocol it speaks;
//! [`DRIVER`] is its entry for `switchboard::connect`.
//!
//! # URLs
//!
//! - `redis://host[:port][/database]` — plain TCP, port 6379 by default;
//! - `redis://[user]:password@host[:port][/database]` — `AUTH` (with a user for ACLs);
//!   percent-encode `@`, `:` and `/` in the password;
//! - ACL users: `redis://alice:PASSWORD@host` sends `AUTH alice PASSWORD`;
//!   Redis answers a wrong password and an unknown (or disabled) user with the
//!   same `WRONGPASS` reply, so the error cannot say which of the two it was;
//!   it names the user, never the password;
//! - `redis+unix:///run/redis/redis.sock` or `unix:///run/redis/redis.sock` —
//!   a unix socket (`unixsocket` in redis.conf), credentials before the path
//!   (`redis+unix://alice:PASSWORD@/run/redis/redis.sock`), the database in the
//!   query (`?db=2`, since the path is the socket's); no TLS there;
//! - `rediss://...` — TLS, checked against the platform's trust store;
//!   `rediss://...#insecure` skips certificate verification (the handshake's
//!   signatures are still checked);
//! - options in the query, with the keys and units every switchboard adapter
//!   shares ([`switchboard_core::options`]), e.g.
//!   `redis://host?connect_timeout=2s&capacity=65536&name=billing`, and on
//!   `rediss://` the TLS keys below.
//!
//! # TLS
//!
//! The TLS query keys are the same on every switchboard adapter (see
//! [`TlsOptions`], also settable with [`RedisOptions::tls`]):
//!
//! - `rediss://host:6380?ca=/etc/redis/ca.pem`: a private CA instead of the
//!   platform's store (`ca=system` adds the store back; `ca` may be repeated);
//! - `rediss://host:6380?ca=/etc/redis/ca.pem&cert=/etc/redis/client.pem&key=/etc/redis/client-key.pem`:
//!   mutual TLS (`tls-auth-clients yes`, Redis's default);
//! - `rediss://10.0.0.7:6380?ca=…&tls_server_name=redis.internal`: verify (and
//!   send as SNI) a name the certificate holds instead of the address.
//!
//! TLS keys in a `redis://` URL are refused (write `rediss://`); settings made
//! in code apply to `rediss://` URLs only. A failed handshake is
//! one [`Error::Connect`](switchboard_core::Error::Connect) line of kind
//! [`Tls`](switchboard_core::ConnectKind::Tls) saying which:
//! the certificate is not trusted (naming the CA files or the system store), the
//! host name does not match, the server requires a client certificate or
//! refused the one given; a file that cannot be read is named. The rustls
//! configuration (ring provider) is built once per broker by `switchboard-tls`
//! and reused on every reconnection.
//!
//! An unknown query key, a fragment other than `#insecure` on `rediss://`, or
//! a `%` that is not a percent-escape is an
//! [`Error::InvalidUrl`](switchboard_core::Error::InvalidUrl) naming it.
//! Connecting is bounded by a timeout (5 s); failures are
//! [`Error::Connect`](switchboard_core::Error::Connect) with the password
//! redacted, a hint (`is redis-server running?`, check the password, ...) and
//! a [`ConnectKind`](switchboard_core::ConnectKind): a wrong or missing
//! password (`Auth`), a failed TLS handshake (`Tls`) or a database the server
//! does not have (`Protocol`) are not
//! [temporary](switchboard_core::Error::is_temporary).
//!
//! | option | URL | default | |
//! |---|---|---|---|
//! | [`connect_timeout`](RedisOptions::connect_timeout) | `connect_timeout=5s` | 5 s | TCP, TLS, `AUTH`, `SELECT` |
//! | [`tls`](RedisOptions::tls) | `ca=`, `cert=`, `key=`, `tls_server_name=` (`rediss://` only) | the platform's trust store | CA files, client certificate, server name (see [TLS](#tls)) |
//! | [`flush_timeout`](RedisOptions::flush_timeout) | `flush_timeout=10s` | 10 s | how long `flush` (and `close`) wait for Redis's replies |
//! | [`name`](RedisOptions::name) | `name=billing` | `switchboard` | the name in `CLIENT LIST` |
//! | [`capacity`](RedisOptions::capacity) | `capacity=N` | 2^20 | deliveries buffered per subscription |
//! | [`keepalive`](RedisOptions::keepalive) | `keepalive=15s`, `keepalive=off` | 15 s | a connection silent this long (PING unanswered) is dropped and renewed |
//! | [`reconnect_backoff`](RedisOptions::reconnect_backoff) | | 100 ms to 5 s ([`Backoff::DEFAULT`](switchboard_core::Backoff::DEFAULT)) | delay between reconnection attempts |
//!
//! Options are set with builder methods named after them and read from
//! [`RedisOptions`]' public fields, as on every switchboard adapter.
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
//! | request/reply | yes (see [Request/reply](#requestreply)) |
//! | durable subscriptions | not yet: [`subscribe_durable`](switchboard_core::Subscriber::subscribe_durable) and `remove_durable` return `Unsupported` (Redis Streams are the planned mapping); use NATS with JetStream or RabbitMQ for alerts that must not be lost |
//! | max payload | the server's `proto-max-bulk-len` (512 MiB by default), envelope included |
//!
//! # Request/reply
//!
//! [`request`](switchboard_core::Broker::request) subscribes to an inbox
//! channel of its own (`_INBOX.<random>`), publishes the request with the
//! inbox in the envelope's [`REPLY_TO`] header, and returns the first message
//! on the inbox. PUBLISH answers with how many subscribers got the request,
//! so a request nobody listens to fails at once with
//! [`Error::NoResponders`](switchboard_core::Error::NoResponders); otherwise
//! the wait is bounded by the timeout given. A delivery carrying the header
//! is a request ([`Delivery::is_request`](switchboard_core::Delivery::is_request));
//! the adapter takes the header out of its headers, so handlers see the same
//! headers on every broker, and [`Delivery::reply`](switchboard_core::Delivery::reply)
//! publishes the reply to the inbox. A plain Redis client answers a
//! switchboard request by publishing to the channel named in that header,
//! and asks one by setting it in the envelope. Each request opens one
//! connection for its inbox (its PUBLISH goes through a connection the
//! broker keeps for requests): fine for commands and queries, not meant for a
//! stream of thousands of requests a second.
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
//! connections speak RESP directly rather than through redis-rs, whose
//! pub/sub buffers without bound, which would hide a subscriber falling behind.
//!
//! # Slow subscribers and reconnecting
//!
//! A subscription buffers a bounded number of deliveries
//! ([`RedisOptions::capacity`]). When the application does not
//! keep up, the adapter stops reading the connection; if that lasts, Redis
//! disconnects the subscriber (`client-output-buffer-limit pubsub`). Whenever a
//! subscription's connection breaks (that, `CLIENT KILL`, a restart, the
//! network, a dead link), its stream yields one
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item saying
//! the connection was lost and is being renewed (and, only if the subscriber
//! was behind just before, that Redis disconnects subscribers that fall
//! behind), then the adapter reconnects and resubscribes with a backoff
//! (100 ms doubling to 5 s), logging one line when it is back
//! (`redis: resubscribed to 'alerts.>' after 1.2s`; failed attempts only at
//! debug level), and the stream goes on. Messages published meanwhile are
//! lost: PUBSUB keeps nothing. Nothing is ever dropped silently on the client
//! side: a message on a channel that is not a valid subject (a plain client
//! can `PUBLISH 'a.bad subject' x`) is an
//! [`Error::InvalidSubject`](switchboard_core::Error::InvalidSubject) item
//! naming the channel, and the stream goes on.
//!
//! The publishing connection reconnects too: publishes in flight when it broke
//! are reported by the next `flush`; while reconnecting fails, `publish`
//! returns [`Error::Publish`](switchboard_core::Error::Publish).
//!
//! ## Connections that die silently
//!
//! A connection can stop passing bytes without Redis or the kernel saying so:
//! the host vanishes, a NAT or firewall forgets the connection, a proxy hangs.
//! With `keepalive=D` (15 s by default), a subscription's connection sends
//! `PING` after `D/3` without a frame and is given up when nothing came for
//! `D`; the publishing connection PINGs when idle the same way, and gives up
//! when replies are owed and nothing came for `D`. Either is then handled as
//! above: the subscription reports `Disconnected` and resubscribes, the
//! publishes awaiting replies are reported by `flush`, and
//! [`Broker::status`] says disconnected
//! until the publishing connection is back. A subscriber that is behind is
//! not read, so its silence is not held against the link. With
//! `keepalive=off`, only TCP keepalive is left (on every connection: first
//! probe after 15 s of silence, then every 5 s, 3 unanswered probes), which
//! notices a vanished host after about 30 s but never a peer that is up and
//! silent.
//!
//! `flush` waits at most [`RedisOptions::flush_timeout`] (10 s by default),
//! then fails with [`Error::Timeout`](switchboard_core::Error::Timeout); the
//! publishes it waited for stay counted, so a later `flush` waits for them
//! again and reports those that failed (e.g. when the keepalive has meanwhile
//! given the connection up).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod broker;
mod connection;
mod control;
mod durable;
mod error;
mod options;
mod publisher;
mod request;
mod resp;
mod routing;
mod subscription;
mod tls;
pub mod wire;

use std::sync::Arc;

pub use broker::RedisBroker;
pub use options::DB;
pub use options::{
    RedisOptions, DEFAULT_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_NAME, DEFAULT_STREAM_MAXLEN, QUERY_KEYS, STREAM_MAXLEN,
};
pub use request::REPLY_TO;
/// TLS settings for [`tls`](RedisOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::{Broker, Driver, Result};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "redis";

/// The URL schemes this adapter accepts: `redis`, `rediss` (TLS), and
/// `redis+unix` and `unix` (a unix socket).
pub const SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "unix"];

/// The URL the bare kind `redis` stands for: the local server on its usual port.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// This adapter's entry for the `switchboard` facade's registry (registered
/// there when its `redis` feature is on).
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url).await?) as Arc<dyn Broker>) })
});

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
