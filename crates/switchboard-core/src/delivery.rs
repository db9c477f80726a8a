//! A received message plus the means to acknowledge it.

use std::fmt;
use std::ops::Deref;

use async_trait::async_trait;

use crate::{Message, Result};

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
}

impl Delivery {
    /// A delivery from a broker without acknowledgement.
    pub fn new(message: Message) -> Self {
        Delivery {
            message,
            acker: None,
            redelivered: false,
        }
    }

    /// A delivery whose `ack`/`nack` go to `acker`; `redelivered` says whether the
    /// broker delivered it before.
    pub fn with_acker(message: Message, acker: Box<dyn Acknowledge>, redelivered: bool) -> Self {
        Delivery {
            message,
            acker: Some(acker),
            redelivered,
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether the broker says it delivered this message before.
    pub fn redelivered(&self) -> bool {
        self.redelivered
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

    /// Rejects the message without redelivery.
    pub async fn reject(&mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.nack(false).await,
            None => Ok(()),
        }
    }

    /// The message, dropping the acknowledgement handle: the message is then
    /// neither acknowledged nor rejected (see [the delivery contract](Delivery#the-delivery-contract)).
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
            .finish()
    }
}
