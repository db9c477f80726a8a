//! A received message plus the means to acknowledge it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, Headers, Message, Result};

/// How long a message [handed back](Delivery::hand_back) waits before the
/// broker delivers it again, where it can wait: long enough for the closing
/// subscriber's unsubscribe to reach the server first.
pub const HAND_BACK_DELAY: Duration = Duration::from_millis(200);

/// How an adapter acknowledges or rejects one delivery at its broker.
///
/// Adapters for brokers with acknowledgement implement this; on brokers without
/// it a [`Delivery`] carries none and `ack`/`nack` do nothing (as
/// [`Capabilities::ack`](crate::Capabilities::ack) says).
///
/// Dropped without `ack` or `nack`, an implementation must leave the message
/// unacknowledged at the broker, so that it is redelivered (see
/// [the delivery contract](Delivery#the-delivery-contract)); it must not
/// acknowledge on drop.
#[async_trait]
pub trait Acknowledge: Send + Sync + fmt::Debug {
    /// Tells the broker the message was handled.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Tells the broker the message was not handled; `requeue` asks for redelivery.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;

    /// Whether [`Acknowledge::nack_with_delay`] is supported: checked before
    /// the handle is given up, so an unsupported delay leaves the message unsettled.
    fn supports_delay(&self) -> bool;

    /// Asks for redelivery after `delay`. Only called where
    /// [`Acknowledge::supports_delay`] is true.
    async fn nack_with_delay(self: Box<Self>, delay: Duration) -> Result<()>;

    /// The broker kind the errors of [`Delivery`] name for this handle (the
    /// one an unsupported delay fails with); "this broker" unless the
    /// adapter says.
    fn broker(&self) -> &'static str {
        "this broker"
    }
}

/// How an adapter answers a request: sends a reply to whoever asked.
///
/// A [`Delivery`] of a message sent with [`Broker::request`](crate::Broker::request)
/// carries one; [`Delivery::reply`] uses it.
#[async_trait]
pub trait Reply: Send + Sync + fmt::Debug {
    /// Sends `payload` with `headers` back to the requester.
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()>;

    /// Sends an error reply (see [`Delivery::reply_error`]).
    async fn reply_error(&self, code: u16, description: &str) -> Result<()> {
        self.reply(Bytes::new(), crate::error_reply_headers(code, description)?)
            .await
    }
}

/// A message received on a [`Subscription`](crate::Subscription), with `ack`/`nack`.
///
/// Dereferences to its [`Message`].
///
/// # The delivery contract
///
/// On brokers with acknowledgement ([`Capabilities::ack`](crate::Capabilities::ack)):
///
/// - [`ack`](Delivery::ack) says the message was handled: the broker forgets it;
/// - [`nack`](Delivery::nack) asks for it again: it is redelivered, with
///   [`redelivered`](Delivery::redelivered) true;
/// - [`reject`](Delivery::reject) drops it (or dead-letters it, where the
///   broker is configured to);
/// - **a delivery dropped without any of them is not acknowledged** (as in
///   lapin, JetStream or Watermill): the broker keeps it as unacknowledged and
///   delivers it again by its own rule — on AMQP when the subscription's
///   channel closes (subscription closed or dropped, connection lost, process
///   gone), to a member of the same queue group; a fan-out subscription's
///   private queue goes away with it, and so do its unacknowledged messages.
///
/// So acknowledge after the work is done, not before: a crash in between
/// means a redelivery, not a loss. Unacknowledged deliveries count against
/// the broker's limit of deliveries in flight (AMQP's prefetch): a subscriber
/// that never acknowledges receives that many and then nothing more.
///
/// On brokers without acknowledgement (NATS core, Redis PUBSUB, the memory
/// broker) a delivery carries no handle: `ack`/`nack`/`reject` are no-ops
/// returning `Ok`, nothing is redelivered, and dropping a delivery is fine.
/// The conformance case `dropped_delivery_is_redelivered` checks both.
pub struct Delivery {
    message: Message,
    acker: Option<Box<dyn Acknowledge>>,
    redelivered: bool,
    delivery_count: Option<u32>,
    replier: Option<Arc<dyn Reply>>,
}

impl Delivery {
    /// A delivery from a broker without acknowledgement.
    pub fn new(message: Message) -> Self {
        Delivery {
            message,
            acker: None,
            redelivered: false,
            delivery_count: None,
            replier: None,
        }
    }

    /// A delivery whose `ack`/`nack` go to `acker`; `redelivered` says whether the
    /// broker delivered it before.
    pub fn with_acker(message: Message, acker: Box<dyn Acknowledge>, redelivered: bool) -> Self {
        Delivery {
            message,
            acker: Some(acker),
            redelivered,
            delivery_count: None,
            replier: None,
        }
    }

    /// Sets how many times the broker delivered this message, this time
    /// included (1 on the first delivery); a count above 1 also marks it
    /// [`redelivered`](Delivery::redelivered).
    pub fn with_delivery_count(mut self, count: u32) -> Self {
        self.delivery_count = Some(count);
        self.redelivered |= count > 1;
        self
    }

    /// Makes this delivery a request that [`Delivery::reply`] answers through `replier`.
    pub fn with_replier(mut self, replier: Box<dyn Reply>) -> Self {
        self.replier = Some(Arc::from(replier));
        self
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether the broker says it delivered this message before.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// How many times the broker delivered this message, this time included,
    /// where it counts ([`Capabilities::delivery_count`](crate::Capabilities::delivery_count)).
    pub fn delivery_count(&self) -> Option<u32> {
        self.delivery_count
    }

    /// Whether the message is a request that expects a [`reply`](Delivery::reply).
    pub fn is_request(&self) -> bool {
        self.replier.is_some()
    }

    /// The handle that answers this request, for code that answers after the
    /// delivery is gone (the worker hands it to handlers in their context);
    /// `None` when the message is not a request.
    pub fn replier(&self) -> Option<Arc<dyn Reply>> {
        self.replier.clone()
    }

    /// Answers a request (see [`Broker::request`](crate::Broker::request)) with
    /// `payload`. Fails with [`Error::Unsupported`] when the message is not a
    /// request; may be called more than once (the requester takes the first).
    pub async fn reply(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.reply_with(payload, Headers::new()).await
    }

    /// Answers a request with `payload` and `headers`.
    pub async fn reply_with(&self, payload: impl Into<Bytes>, headers: Headers) -> Result<()> {
        match &self.replier {
            Some(replier) => replier.reply(payload.into(), headers).await,
            None => Err(Error::Unsupported {
                broker: "switchboard",
                feature: format!(
                    "replying to a message on {:?} that is not a request (no one waits for an answer)",
                    self.message.subject().as_str()
                ),
            }),
        }
    }

    /// Answers a request with an error reply (see [`error_reply_headers`](crate::error_reply_headers)):
    /// the requester's [`Broker::request`](crate::Broker::request) fails at
    /// once with [`Error::Service`] carrying `code` and `description`,
    /// instead of waiting out its timeout. By convention 400 is a request
    /// that would fail the same way again, 500 a failure that may pass.
    pub async fn reply_error(&self, code: u16, description: &str) -> Result<()> {
        self.reply_with(Bytes::new(), crate::error_reply_headers(code, description)?)
            .await
    }

    /// Whether `ack`/`nack` reach a broker (false on brokers without acknowledgement).
    pub fn is_acknowledgeable(&self) -> bool {
        self.acker.is_some()
    }

    /// Acknowledges the message: it was handled. A no-op on brokers without acknowledgement.
    pub async fn ack(&mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    /// Rejects the message and asks the broker to deliver it again. A no-op on
    /// brokers without acknowledgement (the message is not redelivered there).
    pub async fn nack(&mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.nack(true).await,
            None => Ok(()),
        }
    }

    /// Rejects the message and asks the broker to deliver it again after
    /// `delay` ([`Capabilities::nack_delay`](crate::Capabilities::nack_delay)).
    /// Where the broker cannot delay a redelivery this fails with
    /// [`Error::Unsupported`] and leaves the message unsettled, so the caller
    /// can still [`nack`](Delivery::nack) it. A no-op on brokers without acknowledgement.
    pub async fn nack_with_delay(&mut self, delay: Duration) -> Result<()> {
        match self.acker.take() {
            Some(acker) if acker.supports_delay() => acker.nack_with_delay(delay).await,
            Some(acker) => {
                let broker = acker.broker();
                self.acker = Some(acker);
                Err(Error::Unsupported {
                    broker,
                    feature: "delayed redelivery (nack with a delay); nack without one".into(),
                })
            }
            None => Ok(()),
        }
    }

    /// Gives the message back to the broker from a subscriber about to close
    /// its subscription (a stopping worker or bridge): a
    /// [`nack`](Delivery::nack) whose redelivery waits [`HAND_BACK_DELAY`]
    /// where the broker can delay one, plain elsewhere.
    ///
    /// Why the wait: on JetStream a message nacked while this subscription's
    /// pull request is still open on the server can be redelivered to that
    /// very request before the unsubscribe reaches the server, and is then
    /// lost to everyone until its ack wait is over (30 s by default). A
    /// no-op on brokers without acknowledgement.
    pub async fn hand_back(&mut self) -> Result<()> {
        match self.nack_with_delay(HAND_BACK_DELAY).await {
            Err(Error::Unsupported { .. }) => self.nack().await,
            handed => handed,
        }
    }

    /// Rejects the message without redelivery.
    pub async fn reject(&mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.nack(false).await,
            None => Ok(()),
        }
    }

    /// The message, dropping the acknowledgement handle: the message is then
    /// neither acknowledged nor rejected (see [the delivery contract](Delivery#the-delivery-contract)).
    #[inline]
    pub fn into_message(self) -> Message {
        self.message
    }
}

impl Deref for Delivery {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("acknowledgeable", &self.acker.is_some())
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("request", &self.replier.is_some())
            .finish()
    }
}
