//! `use switchboard::prelude::*;` brings the traits a program calls methods
//! of: [`Broker`], [`Publisher`], [`Subscriber`] and their conveniences
//! [`PublisherExt`] (`publish_to`) and [`SubscriberExt`] (`subscribe_to`,
//! `subscribe_group_to`, `subscribe_durable_to`), plus, with the `worker`
//! feature, the worker's `HandlerExt` (`handler.with(layer)`).
//!
//! ```no_run
//! use switchboard::prelude::*;
//! # #[tokio::main] async fn main() -> switchboard::Result<()> {
//! let broker = switchboard::connect("memory://").await?;
//! let _alerts = broker.subscribe_to("alerts.>").await?;
//! broker.publish_to("alerts.cpu", "CPU at 98%").await?;
//! broker.close().await
//! # }
//! ```

pub use switchboard_core::{Broker, Publisher, PublisherExt, Subscriber, SubscriberExt};

#[cfg(feature = "worker")]
pub use switchboard_worker::HandlerExt;
