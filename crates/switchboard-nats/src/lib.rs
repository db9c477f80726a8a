//! The NATS adapter of switchboard, on [async-nats](https://docs.rs/async-nats):
//! core NATS publish/subscribe behind switchboard's [`Broker`] traits.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> switchboard_core::Result<()> {
//! use futures::StreamExt;
//! use switchboard_core::{Broker, Message, Publisher, SubscriberExt};
//! let broker = switchboard_nats::connect("nats://127.0.0.1:4222").await?;
//! let mut alerts = broker.subscribe_to("alerts.>").await?;
//! broker.publish(Message::new("alerts.cpu", "CPU at 98%")?.with_header("host", "web-1")?).await?;
//! // An `Err` item says messages were lost or the link broke; the
//! // subscription goes on once async-nats has reconnected.
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
//! [`NatsOptions`] builder and URL parsing), `connection` (connecting, the
//! connection's events), `broker` ([`NatsBroker`]), `publisher`,
//! `subscription`, `wire` (the mapping to NATS messages), `error` (async-nats
//! errors as switchboard errors) and `tls`; [`DRIVER`] is its entry for
//! `switchboard::connect`.
//!
//! # URLs
//!
//! - `nats://host[:port]` (port 4222 by default), `tls://host[:port]` (TLS required);
//! - `nats://user:password@host`, `nats://TOKEN@host` (percent-encode `@`, `:`, `/`
//!   in credentials); passwords and tokens are redacted in every error;
//! - an NKey user: `nats://host?nkey=/etc/nats/user.nk` (the file holds the user's
//!   seed, `SU…`, as `nk -gen user` writes it; the server lists its public key);
//! - a credentials file, for servers in operator (JWT) mode:
//!   `nats://host?creds=/etc/nats/user.creds` (a user JWT and its seed, as
//!   `nsc generate creds` writes them); both files are read when connecting,
//!   an unreadable or malformed one is an error naming the file, and no
//!   error shows a seed;
//! - several servers: `nats://a:4222,nats://b:4222` (credentials from the first that has them;
//!   every server's password or token is redacted);
//! - options in the query, e.g. `nats://host?capacity=65536&connect_timeout=2s&name=api`,
//!   with the keys and units every switchboard adapter shares
//!   ([`switchboard_core::options`]); an unknown parameter, or a `%` that is not a
//!   percent-escape, is an error naming it.
//!
//! # TLS
//!
//! `tls://` requires TLS; the server is verified against the platform's trust
//! store unless the URL (or [`NatsOptions::tls`]) names CA files. The keys are
//! the same on every switchboard adapter (see [`TlsOptions`]):
//!
//! - `tls://host:4222?ca=/etc/nats/ca.pem`: a private CA (`ca=system` adds the platform's store);
//! - `tls://host:4222?ca=/etc/nats/ca.pem&cert=/etc/nats/client.pem&key=/etc/nats/client-key.pem`:
//!   mutual TLS (`verify: true` in the server's `tls {}` block);
//! - `tls://10.0.0.7:4222?ca=…&tls_server_name=nats.internal`: the certificate
//!   names `nats.internal`, not the address connected to (checked against that
//!   name; async-nats sends no SNI for an IP address).
//!
//! TLS keys in a `nats://` URL are refused (write `tls://`); settings made in
//! code with [`NatsOptions::tls`] apply whenever TLS is used. A failed handshake is one
//! [`Error::Connect`](switchboard_core::Error::Connect) line saying which: the
//! certificate is not trusted (naming the CA files or the system store), the
//! host name does not match (with the names the certificate holds), the server
//! requires a client certificate or refused the one given, the port does not
//! speak TLS; a file that cannot be read is named. The rustls configuration is
//! built by `switchboard-tls` with the ring provider and handed to async-nats,
//! so a program linking another rustls provider too does not panic.
//!
//! # Options ([`NatsOptions`])
//!
//! | option | URL | default | |
//! |---|---|---|---|
//! | [`connect_timeout`](NatsOptions::connect_timeout) | `connect_timeout=5s` | 5 s | TCP + TLS + handshake; then connecting fails saying why |
//! | [`capacity`](NatsOptions::capacity) | `capacity=N` | 2^20 ([`DEFAULT_CAPACITY`]) | messages each subscription buffers while its reader is behind |
//! | [`flush_timeout`](NatsOptions::flush_timeout) | `flush_timeout=10s` | 10 s | the most `flush`, `subscribe`, `close` and `Subscription::close` wait for the server, and a `publish` into a full client queue while the connection is down |
//! | [`name`](NatsOptions::name) | `name=api` | none | connection name shown by the server |
//! | [`keepalive`](NatsOptions::keepalive) | `keepalive=15s`, `keepalive=off` | 15 s ([`DEFAULT_KEEPALIVE`]) | a link that passes nothing this long is dropped and reconnected |
//! | [`nkey`](NatsOptions::nkey) | `nkey=PATH` | none | an NKey seed file to authenticate with |
//! | [`creds`](NatsOptions::creds) | `creds=PATH` | none | a credentials file (user JWT + seed) to authenticate with |
//! | [`replicas`](NatsOptions::replicas) | `replicas=3` | 1 | servers of a JetStream cluster keeping each stream provisioned for durable subscriptions |
//! | [`tls`](NatsOptions::tls) | `ca=`, `cert=`, `key=`, `tls_server_name=` (`tls://` only) | the platform's trust store | see [TLS](#tls) |
//! | [`reconnect_backoff`](NatsOptions::reconnect_backoff) | | 100 ms to 5 s ([`Backoff::DEFAULT`](switchboard_core::Backoff::DEFAULT)) | delay between reconnection attempts, the first at once |
//!
//! Options are set with builder methods named after them and read from
//! [`NatsOptions`]' public fields, as on every switchboard adapter.
//!
//! Connecting fails at once, with a reason, when nothing answers (`nothing answers
//! (connection refused); is nats-server running?`), on a timeout, or when the
//! server rejects the credentials (`authorization failed`): there is no silent
//! retry at start-up. The error's [`ConnectKind`](switchboard_core::ConnectKind)
//! says which (`Refused`, `Timeout`, `Auth`, `Tls`, `Protocol`, `Dns`), and
//! [`is_temporary`](switchboard_core::Error::is_temporary) is false for a
//! rejected password, a TLS failure or a peer that is not a NATS server. Once
//! connected, async-nats reconnects and resubscribes by itself, forever, on
//! the same schedule as every adapter: the first attempt at once, then 100 ms
//! doubling to 5 s ([`NatsOptions::reconnect_backoff`]).
//!
//! # Dead links
//!
//! A connection can stop passing bytes without closing (a frozen peer, a
//! dropped NAT entry). With `keepalive=D` (15 s by default) the client sends a
//! PING after `D/3` without hearing from the server and drops the connection
//! at the third unanswered one, so such a link is noticed after about `D`:
//! every subscription yields [`Error::Disconnected`](switchboard_core::Error::Disconnected),
//! [`Broker::status`] says disconnected, and
//! async-nats reconnects. `keepalive=off` leaves async-nats' own PING a
//! minute (about 3 minutes to notice).
//!
//! # Capabilities
//!
//! `queue_groups`, `native_headers`, `headers`, `native_wildcards`,
//! `ordered_per_publisher` and `request_reply` are true; `ack`, `redelivery` and `persistence` are
//! false for plain subscriptions (core NATS keeps nothing; deliveries carry no
//! acknowledgement, `ack` is a no-op); `durable`, `durable_storage`,
//! `delivery_count` and `nack_delay` are true (JetStream, see below);
//! `max_payload` is the server's, from its `INFO`.
//!
//! # Durable subscriptions (JetStream)
//!
//! [`subscribe_durable`](switchboard_core::Subscriber::subscribe_durable)
//! needs a server with JetStream (`nats-server -js`, with `-sd DIR` for
//! where it stores). It maps to:
//!
//! - **a stream** capturing the pattern: the server's stream whose subjects
//!   already cover it if there is one (if a stream covers only part of the
//!   pattern, subscribing fails saying so), else one provisioned for it,
//!   named `switchboard-<pattern>-<hash>` ([`STREAM_PREFIX`]), with file
//!   storage, keeping each message [`STREAM_MAX_AGE`] (7 days; an operator
//!   may change the stream's limits): a consumer away longer loses what is
//!   older. Acknowledged messages stay in the stream until then (limits
//!   retention; with interest retention nats-server 2.9.10 dropped the backlog of a
//!   consumer that was away across a restart). A stream captures plain
//!   publishes, so publishers and their URL do not change.
//! - **a durable pull consumer** named [`Durable::consumer`](switchboard_core::Durable::consumer)
//!   (the group when set), filtering the pattern, delivering messages
//!   published after it was first created (a start sequence, so that a
//!   server restart before its first delivery does not move it), with
//!   explicit acks, `ack_wait` and `max_deliver` from the [`Durable`](switchboard_core::Durable)
//!   (a later member's settings update the consumer). Members of one group
//!   pull from the same consumer, 64 messages a pull, so they share its
//!   messages. Fetched messages wait in the client until the member takes
//!   them; those a member received but never handed out when its
//!   subscription is dropped or closed are given back (`-NAK`, 200 ms
//!   later) to another member (or the next run); what was still on its way
//!   from the server waits for `ack_wait`, as after a crash. JetStream
//!   counts every fetch as a delivery, so such a message, or one that
//!   waited in the client past `ack_wait`, comes with a higher delivery
//!   count (and uses up one of `max_deliver`).
//! - pulling is this adapter's own, not async-nats' `messages()` stream:
//!   async-nats 0.51 counts a pull request only once its background task
//!   has sent it, reads the answer's messages first now and then, loses
//!   their count, and then waits for messages nobody owes it, stalling
//!   the consumer until its heartbeats are missed (10 s; one bench run in
//!   two or three under load). Here a request is counted before it is sent,
//!   and after a reconnect the consumer pulls again at once.
//! - deliveries: `ack` is `+ACK`, `nack` is `-NAK` (with a delay for
//!   `nack_with_delay`), `reject` is `+TERM`; the delivery count is JetStream's
//!   `delivered` count. A missed heartbeat (server or link down) is an
//!   [`Error::Disconnected`](switchboard_core::Error::Disconnected) item; the
//!   client pulls again and what was not acknowledged is delivered again. The
//!   stream ends when the consumer is deleted.
//!   [`remove_durable`](switchboard_core::Subscriber::remove_durable) deletes
//!   the consumer, and the stream too when the adapter provisioned it and no
//!   consumer is left.
//!
//! **`flush` means stored** for subjects a stream captures: each connection
//! lists the server's streams when it connects and learns the stream of each
//! durable subscription it makes; a message on a subject one of them captures
//! is published as a JetStream publish, and `flush` waits for the PubAcks
//! (failing with [`Error::Flush`](switchboard_core::Error::Flush) if JetStream
//! did not store one). Such a publish is handed to async-nats as `publish` is
//! called, as on the plain path; at most 4,096 PubAcks are outstanding, and a
//! publish past that awaits the oldest (a sliding window, as a JetStream
//! client's own loop keeps it). A PubAck a publish awaited that says the
//! message was not stored is kept for the next `flush`, which reports it with
//! its own. Other subjects take the plain path, which only checks one flag
//! while no stream is known, and one pointer comparison per message (the
//! decision cached per thread for the last subject) while some are. A stream created by another process
//! after this connection connected still captures its publishes, but `flush`
//! then confirms only that the server received them. A stream deleted after
//! this connection learned of it costs the next `flush` one JetStream
//! timeout (5 s): it then finds no stream, succeeds, and the connection
//! publishes those subjects plainly again.
//!
//! A JetStream publish is a request for the server's PubAck, so plain
//! subscribers of a captured subject see its reply subject: such a delivery
//! says [`is_request`](switchboard_core::Delivery::is_request), and a reply to
//! it reaches the publisher's PubAck inbox after the PubAck and is ignored.
//!
//! # Wire mapping
//!
//! - subject → NATS subject as is; patterns are NATS syntax (`*`, `>`) and are
//!   filtered by the server; a queue group subscribes with NATS `queue_subscribe`;
//! - payload → the NATS payload, byte for byte;
//! - headers → NATS native headers (`HPUB`), one value per name, case kept; a
//!   message without headers is a plain `PUB`, so a plain NATS client sees
//!   exactly the payload bytes and no headers; a header value with leading or
//!   trailing whitespace is rejected with
//!   [`Error::InvalidHeader`](switchboard_core::Error::InvalidHeader), since NATS
//!   receivers trim it (MIME-style headers) and it would arrive changed;
//! - received: a header a plain client sent several times keeps its last value;
//!   a header switchboard does not accept (e.g. a value with NUL) is left out with
//!   a warning; a message with a reply subject is a request
//!   ([`Delivery::is_request`](switchboard_core::Delivery::is_request)), from
//!   switchboard or any NATS client (`nats req`), and
//!   [`Delivery::reply`](switchboard_core::Delivery::reply) publishes to it; a message whose subject
//!   switchboard does not accept (e.g. over 255 bytes) yields an
//!   [`Error::InvalidSubject`](switchboard_core::Error::InvalidSubject) item
//!   instead of being skipped silently.
//!
//! `publish` hands the message to the client without waiting a round trip
//! (async-nats queues it and writes it out); when that queue is full it waits for
//! room, as async-nats does. A message without headers is handed over as
//! `publish` is called when the queue has room (the usual case): the future
//! returned is then already finished and allocates nothing, and dropping it
//! unpolled does not take the message back — publishing through switchboard
//! costs what async-nats' own `publish` costs (BENCHMARKS.md, "Instructions
//! per publish"). While the connection is down async-nats takes
//! nothing from the queue, so that wait is bounded: once the connection has
//! been down for the flush timeout, `publish` fails with
//! [`Error::Publish`](switchboard_core::Error::Publish) saying the message was not
//! sent (a frozen link counts as down once async-nats' pings notice it). A publisher that sees [`status`](switchboard_core::Broker::status)`().disconnects`
//! grow cannot know whether the messages it handed over before the loss arrived.
//! A payload (plus headers) over the server's `max_payload` fails with
//! [`Error::PayloadTooLarge`](switchboard_core::Error::PayloadTooLarge) before
//! anything is sent. `flush` and `subscribe` do wait a round trip: async-nats'
//! own flush only writes to the socket and it has no public `PING`, so the
//! adapter publishes an empty message to a fresh `_INBOX.*` subject and waits
//! for it to come back (the server processes one connection's commands in
//! order). Subscribers of `>` or `_INBOX.>` see these echoes, as they see any
//! request/reply traffic. A user the server does not let publish to
//! `_INBOX.>` (a least-privilege account) still works: the refused echo is
//! noticed at once, a warning says so, and from then on that connection's
//! `flush` and `subscribe` only write to the socket, as a plain NATS
//! client's flush does. A publish the server refuses (`Permissions
//! Violation for Publish to S`) makes the next `flush` fail naming `S`.
//!
//! # Request/reply
//!
//! [`request`](switchboard_core::Broker::request) is NATS request/reply as
//! every NATS client speaks it: the request carries a reply subject on the
//! client's `_INBOX` and the first message published there is the reply, so
//! a responder written with any NATS client (`nats reply`, nats-py's
//! `msg.respond`) answers switchboard, and switchboard answers theirs. With
//! nobody subscribed the server says so at once
//! ([`Error::NoResponders`](switchboard_core::Error::NoResponders)); otherwise
//! the wait is bounded by the timeout given
//! ([`Error::Timeout`](switchboard_core::Error::Timeout)).
//!
//! # Loss is reported, never silent
//!
//! async-nats gives each subscription a bounded buffer ([`capacity`](NatsOptions::capacity));
//! when a subscriber falls that far behind, async-nats drops messages and
//! emits only a `SlowConsumer` event, without a count, through a bounded queue
//! that itself overflows in a flood. The adapter maps that event to the
//! subscription it concerns and the stream yields an
//! [`Error::Lost`](switchboard_core::Error::Lost) item with `count` 0, shown as
//! "an unknown number of messages lost": how many is not known, and no guess
//! is shown as a count. Then the stream goes on.
//! When the connection breaks, every live subscription yields an
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item (messages
//! published meanwhile are lost on core NATS), and keeps receiving once
//! async-nats has reconnected and resubscribed; one line is logged per
//! subscription then (`nats: resubscribed to 'alerts.>' after 1.2s`). Either
//! `Err` item comes as soon as the adapter learns of it, possibly ahead of
//! messages buffered before.
//! Should async-nats' own event queue overflow (a flood of drops), a
//! `Disconnected` event could be lost with it; that is async-nats' limit.
//!
//! # Closing
//!
//! [`close`](switchboard_core::Broker::close) flushes, then drains the client:
//! every subscription stream ends after the messages already in flight, the
//! connection closes, and publishing fails with
//! [`Error::Closed`](switchboard_core::Error::Closed). Dropping a
//! [`Subscription`](switchboard_core::Subscription) unsubscribes;
//! `Subscription::close` also waits until the `UNSUB` is written.
//!
//! Nothing waits forever on a server that is gone or a frozen link: `flush`,
//! `subscribe`, `close` and `Subscription::close` each give up after the flush
//! timeout (`close` fails with [`Error::Flush`](switchboard_core::Error::Flush),
//! `Subscription::close` with [`Error::Timeout`](switchboard_core::Error::Timeout)).
//! While the connection is down `Subscription::close` returns at once: the
//! server forgot the subscription with the connection. async-nats' own
//! reconnect loop cannot be stopped while the server is unreachable; it ends
//! with the process.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod auth;
mod broker;
mod connection;
mod durable;
mod error;
mod options;
mod publisher;
mod pull;
mod subscription;
mod tls;
mod wire;

use std::sync::Arc;

pub use broker::NatsBroker;
pub use durable::{STREAM_MAX_AGE, STREAM_PREFIX};
pub use options::{
    NatsOptions, DEFAULT_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_KEEPALIVE, QUERY_KEYS,
};
pub use options::{CREDS, NKEY, REPLICAS};
/// TLS settings for [`tls`](NatsOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::{Broker, Driver, Result};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "nats";

/// The URL schemes this adapter connects to: `nats` and `tls` (TLS required).
pub const SCHEMES: &[&str] = &["nats", "tls"];

/// The URL the bare kind `nats` stands for: the local server on its usual port.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// This adapter's entry for the `switchboard` facade's registry (registered
/// there when its `nats` feature is on).
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url).await?) as Arc<dyn Broker>) })
})
.with_locate(locate);

/// Where a NATS URL leads: each server of its list, port 4222 where none is
/// written. `None` for a URL [`connect`] would refuse.
fn locate(url: &str) -> Option<switchboard_core::Location> {
    let target = options::parse_url(url, NatsOptions::new()).ok()?;
    Some(switchboard_core::Location::servers(
        target
            .servers
            .iter()
            .map(|server| (server.host(), server.port())),
    ))
}

/// Connects to the NATS server at `url` with the default options (overridden
/// by the URL's query). Same as [`NatsBroker::connect`].
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> switchboard_core::Result<()> {
/// let broker = switchboard_nats::connect("nats://127.0.0.1:4222?name=billing").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<NatsBroker> {
    NatsBroker::connect(url).await
}
