//! Broker-neutral messaging for switchboard: the types and traits every adapter
//! implements, and the in-memory broker.
//!
//! - [`Message`] (a [`Subject`], a payload and [`Headers`]) is what travels;
//!   a [`Codec`] ([`Json`] built in) writes and reads `serde` values as
//!   payloads, naming its media type in the `content-type` header;
//! - [`Publisher`], [`Subscriber`] and [`Broker`] are the object-safe traits
//!   adapters implement, so the broker can be chosen at run time;
//!   [`SubscriberExt`] and [`PublisherExt`] add conveniences for every broker
//!   (`broker.subscribe_to("alerts.>")`, `broker.publish_to("alerts.cpu", "…")`);
//! - a [`Subscription`] is a `Stream` of [`Delivery`]s, filtered by a [`Pattern`]
//!   with one wildcard syntax on every broker;
//! - [`Capabilities`] says what a broker really provides, and [`Error`] says
//!   what went wrong, naming the broker, subject or URL (a connect error's
//!   [`ConnectKind`] says whether trying again can help);
//! - [`options`] reads the URL query keys every adapter shares
//!   (`connect_timeout`, `flush_timeout`, `capacity`, `name`, `keepalive`), and
//!   [`Link`] / [`SubscriptionLink`] keep and log the state of connections and
//!   subscriptions the same way on every broker, and [`Backoff`] spaces their
//!   reconnection attempts the same way;
//! - a [`Driver`] (every adapter's `DRIVER`) is what `switchboard::register`
//!   needs to reach an adapter by its URL scheme.
//!
//! Most programs depend on the `switchboard` facade, which re-exports this
//! crate and picks an adapter from a URL.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
mod broker;
mod capabilities;
pub mod codec;
mod deadline;
mod delivery;
mod driver;
mod durable;
mod error;
mod error_reply;
mod ext;
mod headers;
mod link;
mod location;
pub mod memory;
mod message;
pub mod options;
mod redact;
mod subject;
mod subscription;

pub use backoff::{Attempts, Backoff};
pub use broker::{Broker, Publisher, Subscriber};
pub use capabilities::Capabilities;
pub use codec::{Codec, Json, CONTENT_TYPE_HEADER};
pub use deadline::deadline;
pub use delivery::{Acknowledge, Delivery, Reply, HAND_BACK_DELAY};
pub use driver::{Connect, Driver, Locate};
pub use durable::{ConsumerName, Durable, DEFAULT_ACK_WAIT};
pub use error::{BoxError, ConnectKind, Error, ErrorKind, Result};
pub use error_reply::{
    error_reply_headers, reply_outcome, MAX_SERVICE_ERROR_LEN, SERVICE_ERROR_CODE_HEADER,
    SERVICE_ERROR_HEADER,
};
pub use ext::{PublisherExt, SubscriberExt};
pub use headers::{Headers, Iter as HeaderIter, MAX_HEADER_NAME_LEN};
pub use link::{ConnectionStatus, Link, SubscriptionLink};
pub use location::Location;
pub use memory::MemoryBroker;
pub use message::Message;
pub use redact::{redact_text, redact_url};
pub use subject::{Pattern, QueueGroup, Subject, Token, MAX_SUBJECT_LEN};
pub use subscription::{CloseFuture, Subscription};

/// Re-exported so adapters and users name the same version.
pub use async_trait::async_trait;
pub use bytes::Bytes;
