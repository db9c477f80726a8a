//! The traits every adapter implements: [`Publisher`], [`Subscriber`] and [`Broker`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Capabilities, ConnectionStatus, Durable, Message, Pattern, QueueGroup, Result, Subscription,
};

/// Publishes messages. Object-safe, so the broker can be chosen at run time.
#[async_trait]
pub trait Publisher: Send + Sync + Debug {
    /// Hands `message` to the client for sending. Resolving `Ok` means the client
    /// accepted it, not that the broker has it: it does not wait a round trip.
    /// Call [`Publisher::flush`] to know the broker has everything.
    ///
    /// Fails with [`Error::Closed`](crate::Error::Closed) after `close`, and with
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) over the broker's limit.
    async fn publish(&self, message: Message) -> Result<()>;

    /// Resolves once every message published before the call reached the broker
    /// (and, where the broker confirms, was confirmed), or fails saying which did not.
    async fn flush(&self) -> Result<()>;
}

/// Subscribes to patterns. Object-safe, so the broker can be chosen at run time.
#[async_trait]
pub trait Subscriber: Send + Sync + Debug {
    /// Subscribes to every message whose subject matches `pattern` (fan-out: every
    /// subscriber gets every matching message). Once this resolves the broker
    /// delivers to it: a message published afterwards is received.
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription>;

    /// Subscribes as a member of queue group `group`: each matching message goes
    /// to one member of the group, while every other group and fan-out subscriber
    /// still gets its own copy. Members of one group should use the same pattern.
    /// Returns [`Error::Unsupported`](crate::Error::Unsupported) where the broker has
    /// no queue groups ([`Capabilities::queue_groups`]).
    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription>;

    /// Subscribes to the durable consumer `durable` over `pattern`, creating it
    /// on first use and resuming it afterwards (see [`Durable`]): messages
    /// published while no member is subscribed are kept and delivered when one
    /// is back; a delivery is removed only once acknowledged, and delivered
    /// again after a `nack` or when not acknowledged within its `ack_wait`.
    /// Members of one durable consumer share its messages.
    ///
    /// Returns [`Error::Unsupported`](crate::Error::Unsupported) where the
    /// broker has no durable mode ([`Capabilities::durable`]).
    async fn subscribe_durable(&self, pattern: &Pattern, durable: &Durable)
        -> Result<Subscription>;

    /// Deletes the durable consumer `durable` over `pattern` and what the
    /// broker keeps for it (its messages not yet acknowledged are gone), for
    /// consumers that are retired and for tests that clean up. Removing a
    /// consumer that does not exist succeeds; members still subscribed stop
    /// receiving (or get an error item) as the broker decides.
    ///
    /// Returns [`Error::Unsupported`](crate::Error::Unsupported) where the
    /// broker has no durable mode ([`Capabilities::durable`]).
    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()>;
}

/// A connection to one broker: publish, subscribe, declare what it provides, close.
///
/// `switchboard::connect(url)` returns an `Arc<dyn Broker>`; it can be used
/// wherever a `dyn Publisher` or `dyn Subscriber` is wanted.
#[async_trait]
pub trait Broker: Publisher + Subscriber {
    /// The broker kind: `memory`, `nats`, `redis`, `amqp`, or an adapter's own.
    fn kind(&self) -> &'static str;

    /// What this broker provides.
    fn capabilities(&self) -> Capabilities;

    /// Publishes `message` as a request and waits up to `timeout` for the
    /// first reply, which a subscriber sends with
    /// [`Delivery::reply`](crate::Delivery::reply).
    ///
    /// Fails with [`Error::NoResponders`](crate::Error::NoResponders) where the
    /// broker can tell that nobody is subscribed, with
    /// [`Error::Timeout`](crate::Error::Timeout) when no reply came in time,
    /// with [`Error::Service`](crate::Error::Service) when the reply is an
    /// error reply ([`Delivery::reply_error`](crate::Delivery::reply_error),
    /// or a NATS micro service's; see [`reply_outcome`](crate::reply_outcome)),
    /// and with [`Error::Unsupported`](crate::Error::Unsupported) where the
    /// broker has no request/reply ([`Capabilities::request_reply`]).
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message>;

    /// The state of the connection now: up or not, and how often it was lost.
    /// A publisher that saw `disconnects` grow while it published cannot know
    /// whether the messages handed over around the loss reached the broker.
    fn status(&self) -> ConnectionStatus;

    /// Flushes what was published, ends every subscription of this handle and
    /// closes the connection. Publishing afterwards fails with
    /// [`Error::Closed`](crate::Error::Closed); closing twice is fine.
    async fn close(&self) -> Result<()>;
}

/// The boxed future an object-safe method of these traits returns.
type BoxedResult<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

macro_rules! forward_pointer {
    ($($ptr:ident),*) => {$(
        // Written out rather than left to `#[async_trait]`, which would box
        // a second future around the pointee's boxed one on every call.
        impl<T: Publisher + ?Sized> Publisher for $ptr<T> {
            fn publish<'life0, 'async_trait>(&'life0 self, message: Message) -> BoxedResult<'async_trait, ()>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                (**self).publish(message)
            }
            fn flush<'life0, 'async_trait>(&'life0 self) -> BoxedResult<'async_trait, ()>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                (**self).flush()
            }
        }

        #[async_trait]
        impl<T: Subscriber + ?Sized> Subscriber for $ptr<T> {
            async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
                (**self).subscribe(pattern).await
            }
            async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
                (**self).subscribe_group(pattern, group).await
            }
            async fn subscribe_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<Subscription> {
                (**self).subscribe_durable(pattern, durable).await
            }
            async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
                (**self).remove_durable(pattern, durable).await
            }
        }

        #[async_trait]
        impl<T: Broker + ?Sized> Broker for $ptr<T> {
            fn kind(&self) -> &'static str {
                (**self).kind()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn status(&self) -> ConnectionStatus {
                (**self).status()
            }
            async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
                (**self).request(message, timeout).await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
        }
    )*};
}

forward_pointer!(Arc, Box);
