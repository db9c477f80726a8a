//! The AMQP 0-9-1 (RabbitMQ) adapter for switchboard, on [lapin].
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> switchboard_core::Result<()> {
//! use futures::StreamExt;
//! use switchboard_core::{Publisher, PublisherExt, SubscriberExt};
//! let broker = switchboard_amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let mut alerts = broker.subscribe_to("alerts.>").await?;
//! broker.publish_to("alerts.cpu", "CPU at 98%").await?;
//! broker.flush().await?; // the broker confirmed it
//! // An `Err` item says the subscription lost its channel (it resubscribes)
//! // or a routing key was not a subject: report it and go on.
//! while let Some(item) = alerts.next().await {
//!     match item {
//!         Ok(mut delivery) => {
//!             println!("{:?}", delivery.payload_str());
//!             if let Err(error) = delivery.ack().await {
//!                 eprintln!("warning: {error}");
//!             }
//!         }
//!         Err(error) => eprintln!("warning: {error}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The crate has the layout of every switchboard adapter: `options` (the
//! [`AmqpOptions`] builder and URL parsing), `connection` (the connection and
//! its publishing channel, opened again after a loss), `broker`
//! ([`AmqpBroker`]), `publisher` (the confirm window), `subscription`
//! (queues, consumers and acknowledgements), `wire` (subjects, patterns and
//! headers in AMQP terms), `error` (lapin errors as switchboard errors) and
//! `tls`; [`DRIVER`] is its entry for `switchboard::connect`.
//!
//! # URLs
//!
//! `amqp://user:password@host:port/vhost?param=value&...`, or `amqps://` for
//! TLS (port 5671 by default, 5672 for `amqp://`). The user and password
//! default to `guest`; percent-encode special characters. The vhost is the one
//! path segment, percent-encoded: `/%2f` is the vhost `/`, and so are an
//! empty path and `/` alone (a vhost named `""` cannot be reached).
//!
//! Several hosts (the nodes of a cluster) are a comma-separated list where
//! the host goes, the credentials, vhost and query written once around it:
//! `amqp://user:password@rabbit1:5672,rabbit2:5672,rabbit3/vhost`. Each
//! connect and reconnect tries them in that order and takes the first that
//! accepts the TCP connection (with several hosts, each gets an equal share
//! of the connect timeout); a host that accepts and then fails TLS or the
//! AMQP handshake is an error, not skipped. When none can be reached the
//! error is one line naming each host and why (`a:5672 (connection refused),
//! b:5672 (no answer in time)`), password redacted.
//!
//! The keys every switchboard adapter shares ([`switchboard_core::options`]),
//! with the same units, and AMQP's own:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `connect_timeout` | time allowed for connecting, reconnecting, declaring a subscription (`5s`, `500ms`) | 5 s |
//! | `flush_timeout` | how long `flush` waits for the broker's confirms; also bounds `close`, `Subscription::close`, and a delivery's `ack` or `nack` (lapin can leave one pending for ever on a connection that is failing) | 10 s |
//! | `name` | the name RabbitMQ shows for the connection | `switchboard` |
//! | `keepalive` | a connection silent this long is declared dead: the AMQP heartbeat, at half of it in whole seconds; `off` takes the broker's (RabbitMQ: 60 s, so about 2 minutes) | 15 s |
//! | `exchange` | the topic exchange published to and bound to; another name is declared (durable, topic) if missing; other `amq.*` names are refused | `amq.topic` |
//! | `prefetch` | unacknowledged deliveries one subscription holds (`basic.qos`); 0 = unlimited | 256 |
//! | `confirm_window` | publishes that may be in flight (being written or awaiting their confirm) before `publish` waits | 256 |
//! | `max_payload` | the largest payload `publish` accepts (the server's `max_message_size`) | 134217728 |
//! | `heartbeat`, `frame_max`, `channel_max`, `auth_mechanism` | passed to the AMQP handshake (lapin); `heartbeat` (seconds) instead of `keepalive` | server's |
//! | `ca` | `amqps://`: a PEM file of CAs to trust instead of the platform's store (repeatable; `ca=system` adds the store) | the platform's store |
//! | `cert`, `key` | `amqps://`: a client certificate and its key (PEM), for mutual TLS | none |
//! | `tls_server_name` | `amqps://`: the name the server's certificate is checked against (and sent as SNI), when not the host | the host |
//!
//! The older spellings `connection_timeout` (in milliseconds) and
//! `connection_name` still work. Any other parameter, or a `%` that is not a
//! percent-escape (in the user, password, vhost or query), is an error naming
//! it. [`AmqpOptions`] with [`AmqpBroker::connect_with`] sets the same from
//! code (builder methods named after the options, public fields to read them,
//! as on every switchboard adapter), plus
//! [`reconnect_backoff`](AmqpOptions::reconnect_backoff); the URL wins.
//!
//! # TLS
//!
//! `amqps://host:5671/%2f?ca=/etc/rabbitmq/ca.pem&cert=/etc/rabbitmq/client.pem&key=/etc/rabbitmq/client-key.pem`
//! verifies RabbitMQ against a private CA and presents a client certificate.
//! The keys are the same on every switchboard adapter ([`TlsOptions`], also
//! [`AmqpOptions::tls`]); in the URL they are refused on `amqp://` (settings
//! made in code apply to `amqps://` URLs only). The connection is
//! opened with `switchboard-tls`' rustls configuration (ring provider) through
//! lapin's connector, not lapin's default TLS setup, so verification and
//! errors are the same as on NATS and Redis: a failed handshake is one line
//! saying whether the certificate is not trusted (naming the CA files or the
//! system store), the host name does not match, the server requires a client
//! certificate or refused the one given, or the port does not speak TLS.
//!
//! Connecting fails within the connect timeout with one
//! [`Error::Connect`](switchboard_core::Error::Connect) line naming the URL
//! (password redacted) and what to fix: a refused or silent port, a wrong user
//! or password, an unknown vhost or one the user may not use, an exchange that
//! does not exist or is not a topic exchange. Its
//! [`ConnectKind`](switchboard_core::ConnectKind) says which; a wrong password
//! (`Auth`), an unknown vhost or exchange (`Protocol`) or a failed TLS
//! handshake (`Tls`) are not [temporary](switchboard_core::Error::is_temporary).
//!
//! # Wire mapping
//!
//! - A subject is the routing key, unchanged; the payload is the body,
//!   byte-for-byte.
//! - Headers are the AMQP message headers (`basic.properties.headers`), each
//!   value a long string, so any AMQP client sees them as such; a message
//!   without headers carries no header table. Received headers that are not
//!   strings are converted: integers, floats, decimals, timestamps and
//!   booleans become their text (`42`, `0.05`, `true`); arrays, tables, byte
//!   arrays, void and non-UTF-8 strings are skipped, as are names or values
//!   switchboard's [`Headers`](switchboard_core::Headers) cannot hold.
//!   Other AMQP properties (content type, message id, ...) are not used.
//! - A pattern is the binding key: literal tokens and `*` as they are, a
//!   trailing `>` as `*.#` (one or more tokens; `#` alone would also match the
//!   bare prefix). Every delivery is checked against
//!   [`Pattern::matches`](switchboard_core::Pattern::matches) as well (a
//!   literal `#` token would be a wildcard to AMQP); one that does not match
//!   is acknowledged and skipped. A delivery whose routing key is not a valid
//!   subject (a plain client can publish with any key, e.g. `a.bad key`) is
//!   rejected (so a dead-letter exchange can keep it) and yields an
//!   [`Error::InvalidSubject`](switchboard_core::Error::InvalidSubject) item
//!   naming the key; the stream goes on.
//!
//! # Subscriptions and queue groups
//!
//! A fan-out subscription consumes its own exclusive, auto-delete,
//! server-named queue. Up to 64 fan-out consumers share a channel (a channel
//! each would stop a connection at RabbitMQ's `channel_max`, 2,047 by
//! default): acks, nacks and the prefetch stay per subscription, closing one
//! cancels its consumer only, and its queue is declared and bound on a
//! channel of its own, so a refused declare ends no other subscription. A
//! queue group's member and a durable consumer keep a channel each. A queue group's members consume one
//! shared queue, `switchboard.group.<group>@<exchange>`, declared non-durable,
//! non-exclusive and auto-delete: it exists while the group has members and
//! the server spreads its messages over them (round-robin, bounded by the
//! prefetch). Members of a group should use the same pattern: the shared
//! queue gets every member's binding. `subscribe` resolves once the server
//! confirmed the declare, bind and consume, so a message published afterwards
//! is received.
//!
//! There is no persistence for these: a message published while no queue is
//! bound is dropped by the exchange (it is not an error: publishes are not
//! `mandatory`), and queues go away with their subscribers.
//!
//! # Durable subscriptions
//!
//! [`subscribe_durable`](switchboard_core::Subscriber::subscribe_durable)
//! consumes a **quorum queue** named
//! `switchboard.durable.<consumer>@<exchange>` ([`DURABLE_QUEUE_PREFIX`]),
//! declared durable if missing and bound to the exchange with the pattern:
//! it takes every matching message published from then on, by any plain
//! publisher (publishers do not change), and keeps it on disk (quorum queues
//! store every message, whatever its delivery mode) until acknowledged;
//! there is no age limit. Members of one durable consumer consume the same
//! queue (round-robin). With `max_deliver`, the queue gets
//! `x-delivery-limit = max_deliver - 1` (returns allowed), after which
//! RabbitMQ drops the message (or dead-letters it, if an operator set a
//! dead-letter exchange by policy). The delivery count is the queue's
//! `x-delivery-count` + 1 (that header is not shown among the message's
//! headers). `nack` returns the message at once; RabbitMQ has no per-consumer
//! ack deadline, so the adapter nacks a delivery left unsettled for
//! `ack_wait` itself, and a later `ack` of it fails saying so; a closed
//! subscription's unsettled deliveries return at once. `nack_with_delay` is
//! unsupported. Publisher confirms of messages routed to a quorum queue come
//! once a quorum stored them, so `flush` means stored.
//! [`remove_durable`](switchboard_core::Subscriber::remove_durable) deletes
//! the queue. Changing `max_deliver` of an existing consumer fails (RabbitMQ
//! refuses to redeclare a queue with other arguments): remove it first.
//!
//! # Acknowledgement
//!
//! Deliveries are consumed with manual acknowledgement and a prefetch limit.
//! [`Delivery::ack`](switchboard_core::Delivery::ack) is `basic.ack`,
//! `nack` is `basic.nack` with requeue (the message comes again, with
//! `redelivered()` true), `reject` is `basic.nack` without requeue (dropped,
//! or dead-lettered if the queue is so configured).
//!
//! **A delivery dropped without `ack`, `nack` or `reject` is not
//! acknowledged** (as in lapin, and as at-least-once consumers expect): the
//! message stays unacknowledged on the subscription's channel — RabbitMQ
//! neither redelivers it nor counts it as handled while that channel is open.
//! When the channel closes (the subscription is closed or dropped, the broker
//! handle is closed, the connection is lost, the process dies) RabbitMQ puts
//! every unacknowledged message back in its queue, at its place, marked
//! `redelivered`:
//!
//! - in a queue group, the group's queue outlives one member, so another
//!   member (or the same one after resubscribing) receives it again with
//!   `redelivered() == true`;
//! - a fan-out subscription's queue is its own and is deleted with it, so a
//!   message it dropped is gone when it closes (there is no persistence).
//!
//! Unacknowledged deliveries count against the prefetch limit: a subscriber
//! that keeps dropping deliveries receives `prefetch` (256 by default) of them
//! and then nothing more until it closes. The adapter logs one warning per
//! subscription the first time a delivery is dropped unsettled.
//! [`Delivery::into_message`](switchboard_core::Delivery::into_message) drops
//! the acknowledgement handle the same way. A delivery whose routing key the
//! pattern does not match (see the wire mapping) is acknowledged and skipped.

//! # Publishing and confirms
//!
//! Publisher confirms are on. `publish` queues the message's frames on the
//! publishing channel for lapin's I/O thread and waits neither for them to be
//! written nor for the confirm (waiting for each write was a round trip to the
//! I/O thread per message, and capped confirmed publishing at about 35-40k
//! messages/s); the frames are written in publish order, so order per subject
//! is kept. Up to `confirm_window` messages are in flight (being written or
//! awaiting their confirm), and when the window is full `publish` waits for
//! the oldest. A `publish` that finds the channel or connection already gone
//! reconnects once and publishes there; one whose connection fails after its
//! frames were queued returns `Ok` and is reported by the next `flush`, like
//! an unconfirmed message.
//! [`flush`](switchboard_core::Publisher::flush) returns once every earlier
//! publish is confirmed, and fails naming the messages the broker nacked or
//! that a lost connection left unconfirmed (they may or may not have arrived).
//! It waits at most `flush_timeout`, then fails with
//! [`Error::Timeout`](switchboard_core::Error::Timeout); the confirms not seen
//! yet stay counted for the next flush.
//!
//! # Lost connections
//!
//! Each subscription whose channel or connection is lost yields one
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item, then
//! reconnects with backoff (100 ms doubling to 5 s,
//! [`AmqpOptions::reconnect_backoff`]) and declares its queue,
//! binding and consumer again, logging one line when it is back
//! (`amqp: resubscribed to 'alerts.>' after 1.2s`; failed attempts only at
//! debug level); the stream goes on. Messages published while it was away are
//! missed (its queue was deleted with the connection). A `publish` that finds
//! the connection lost reconnects (once, within the connect timeout) before
//! failing with [`Error::Publish`](switchboard_core::Error::Publish).
//!
//! A connection that stops passing bytes without closing (a frozen peer, a
//! dropped NAT entry) is noticed by the AMQP heartbeat: with `keepalive=D`
//! (15 s by default) the heartbeat is `D/2`, and lapin gives the connection up
//! after two heartbeats without a frame, so after about `D`;
//! [`Broker::status`] says so at once, and
//! every subscription reports and resubscribes as above.
//!
//! `close` flushes, then closes the connection (which cancels every consumer
//! and requeues what was not acknowledged); every subscription's stream ends.
//! Publishing afterwards fails with `Error::Closed`; closing twice is fine.
//! Nothing waits forever on a frozen link: `close` as a whole, and
//! `Subscription::close` (which closes the subscription's channel), give up
//! after `flush_timeout` (the latter with
//! [`Error::Timeout`](switchboard_core::Error::Timeout)).
//!
//! # Request/reply
//!
//! [`request`](switchboard_core::Broker::request) uses RabbitMQ's direct
//! reply-to: on a channel of its own it consumes `amq.rabbitmq.reply-to` and
//! publishes the request (`mandatory`, confirmed) with `reply_to` and a fresh
//! `correlation_id`; the first reply with that id is returned. No queue is
//! declared per request. When no queue is bound to the subject RabbitMQ
//! returns the request and it fails at once with
//! [`Error::NoResponders`](switchboard_core::Error::NoResponders); otherwise
//! the wait is bounded by the timeout given. A delivery with a `reply_to`
//! property — from switchboard or any AMQP client doing RPC (pika's
//! tutorial 6) — is a request, and
//! [`Delivery::reply`](switchboard_core::Delivery::reply) publishes the reply
//! to the default exchange with that routing key and the request's
//! `correlation_id`, confirmed.
//!
//! # Capabilities
//!
//! Queue groups, native headers, native wildcards (binding keys, plus the
//! pattern check), ack and redelivery, order per publisher, request/reply:
//! yes. Persistence: no. Durable subscriptions, durable storage and delivery
//! counts: yes; nack with a delay: no. Largest payload: 128 MiB, RabbitMQ's default `max_message_size`
//! (`max_payload` if the server is configured otherwise).
//!
//! [lapin]: https://docs.rs/lapin
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod broker;
mod connection;
mod error;
mod options;
mod publisher;
mod request;
mod subscription;
mod tls;
mod wire;

use std::sync::Arc;

pub use broker::AmqpBroker;
pub use options::{
    AmqpOptions, DEFAULT_CONFIRM_WINDOW, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EXCHANGE,
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_PAYLOAD, DEFAULT_NAME, DEFAULT_PREFETCH,
    QUERY_KEYS,
};
pub use subscription::{DURABLE_QUEUE_PREFIX, GROUP_QUEUE_PREFIX};
/// TLS settings for [`tls`](AmqpOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::{Broker, Driver, Result};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "amqp";

/// The URL schemes this adapter connects to: `amqp` and `amqps` (TLS).
pub const SCHEMES: &[&str] = &["amqp", "amqps"];

/// The URL the bare kind `amqp` stands for: the local RabbitMQ as `guest`, vhost `/`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// This adapter's entry for the `switchboard` facade's registry (registered
/// there when its `amqp` feature is on).
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url).await?) as Arc<dyn Broker>) })
})
.with_locate(locate);

/// Where an AMQP URL leads: each host of its list (port 5672, or 5671 for
/// `amqps://`, where none is written), within its vhost and exchange: a
/// message published to one exchange reaches no queue bound to another.
/// `None` for a URL [`connect`] would refuse.
fn locate(url: &str) -> Option<switchboard_core::Location> {
    let config = options::Config::parse(url, AmqpOptions::default()).ok()?;
    let scope = format!(
        "vhost {}, exchange {}",
        config.uri.vhost, config.options.exchange
    );
    Some(switchboard_core::Location::servers(config.hosts).within(scope))
}

/// Connects to the AMQP broker at `url` with the default [`AmqpOptions`]
/// (the URL's query parameters applied). See the [crate docs](crate).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> switchboard_core::Result<()> {
/// let broker = switchboard_amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f?exchange=events").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<AmqpBroker> {
    AmqpBroker::connect_with(url, AmqpOptions::new()).await
}
