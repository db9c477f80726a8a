//! Conveniences over [`Publisher`] and [`Subscriber`], in extension traits
//! with blanket impls (object_store's shape): the traits adapters implement
//! stay minimal, and every broker — a concrete one, `Box<dyn Broker>`,
//! `Arc<dyn Broker>` from `switchboard::connect` — gets these the same way,
//! so no wrapper can forget or change them.

use bytes::Bytes;
use futures::future::BoxFuture;

use serde::Serialize;

use crate::{
    Codec, Durable, Json, Message, Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
};

/// Subscribes with patterns and group names given as text, parsed (and
/// refused with [`Error::InvalidPattern`](crate::Error::InvalidPattern) or
/// [`Error::InvalidGroup`](crate::Error::InvalidGroup)) before anything
/// reaches the broker. Implemented for every [`Subscriber`].
///
/// Receive in a loop that reports an `Err` item and goes on: an error item
/// says messages were lost or the connection broke, and the subscription
/// continues once the adapter has recovered (`?` would end the loop there).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{MemoryBroker, PublisherExt, SubscriberExt};
///
/// let broker = MemoryBroker::new(); // or the `Arc<dyn Broker>` of `switchboard::connect`
/// let mut alerts = broker.subscribe_to("alerts.>").await?;
/// broker.publish_to("alerts.cpu", "CPU at 98%").await?;
/// while let Some(item) = alerts.next().await {
///     match item {
///         Ok(mut delivery) => {
///             println!("{}: {:?}", delivery.subject(), delivery.payload_str());
///             if let Err(error) = delivery.ack().await {
///                 eprintln!("warning: {error}");
///             }
///             # break;
///         }
///         Err(error) => eprintln!("warning: {error}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub trait SubscriberExt: Subscriber {
    /// [`Subscriber::subscribe`] to `pattern`, e.g. `"alerts.>"`.
    fn subscribe_to(&self, pattern: &str) -> BoxFuture<'_, Result<Subscription>> {
        let pattern = Pattern::new(pattern);
        Box::pin(async move { self.subscribe(&pattern?).await })
    }

    /// [`Subscriber::subscribe_group`] to `pattern` as a member of `group`.
    fn subscribe_group_to(
        &self,
        pattern: &str,
        group: &str,
    ) -> BoxFuture<'_, Result<Subscription>> {
        let parsed = Pattern::new(pattern).and_then(|p| Ok((p, QueueGroup::new(group)?)));
        Box::pin(async move {
            let (pattern, group) = parsed?;
            self.subscribe_group(&pattern, &group).await
        })
    }

    /// [`Subscriber::subscribe_durable`] to `pattern` as `durable`.
    fn subscribe_durable_to(
        &self,
        pattern: &str,
        durable: &Durable,
    ) -> BoxFuture<'_, Result<Subscription>> {
        let pattern = Pattern::new(pattern);
        let durable = durable.clone();
        Box::pin(async move { self.subscribe_durable(&pattern?, &durable).await })
    }
}

impl<T: Subscriber + ?Sized> SubscriberExt for T {}

/// Publishes a payload, or a value written by a [`Codec`], to a subject given
/// as text, checked (and refused with
/// [`Error::InvalidSubject`](crate::Error::InvalidSubject)) before anything
/// reaches the broker. Implemented for every [`Publisher`]; build a
/// [`Message`] to add headers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> switchboard_core::Result<()> {
/// use switchboard_core::{MemoryBroker, PublisherExt};
///
/// #[derive(serde::Serialize)]
/// struct Alert<'a> { robot: &'a str, severity: &'a str }
///
/// let broker = MemoryBroker::new(); // or the `Arc<dyn Broker>` of `switchboard::connect`
/// broker.publish_to("alerts.cpu", "CPU at 98%").await?;
/// // `{"robot":"T-800","severity":"high"}` with `content-type: application/json`
/// broker.publish_json("alerts.robot", &Alert { robot: "T-800", severity: "high" }).await?;
/// # Ok(()) }
/// ```
pub trait PublisherExt: Publisher {
    /// [`Publisher::publish`]es `payload` on `subject`, without headers.
    fn publish_to(&self, subject: &str, payload: impl Into<Bytes>) -> BoxFuture<'_, Result<()>> {
        let message = Message::new(subject, payload);
        Box::pin(async move { self.publish(message?).await })
    }

    /// [`Publisher::publish`]es `value` as JSON on `subject`, with
    /// `content-type: application/json` (see [`Message::json`]).
    fn publish_json<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> BoxFuture<'_, Result<()>> {
        self.publish_encoded(subject, value, Json)
    }

    /// [`Publisher::publish`]es `value` written by `codec` on `subject`, with
    /// `content-type` set to the codec's media type (see [`Message::encode`]),
    /// e.g. `broker.publish_encoded("alerts.robot", &alert, MessagePack)` with
    /// the worker's `msgpack` feature.
    fn publish_encoded<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
        codec: impl Codec,
    ) -> BoxFuture<'_, Result<()>> {
        // Encoded now, so the future does not borrow `value`.
        let message = Message::encode(subject, value, codec);
        Box::pin(async move { self.publish(message?).await })
    }
}

impl<T: Publisher + ?Sized> PublisherExt for T {}
