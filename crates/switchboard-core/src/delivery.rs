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
#[async_trait]
pub trait Acknowledge: Send + Sync + fmt::Debug {
    /// Tells the broker the message was handled.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Tells the broker the message was not handled; `requeue` asks for redelivery.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
}

/// A message received on a [`Subscription`](crate::Subscription), with `ack`/`nack`.
///
/// Dereferences to its [`Message`]. A delivery dropped without `ack` or `nack`
/// is left to the broker: on brokers with acknowledgement it is redelivered
/// when the subscription closes.
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

    /// The message, dropping the acknowledgement handle.
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
