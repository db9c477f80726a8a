//! [`NatsBroker`]: switchboard's traits on an async-nats client, delegating
//! to the connection, publisher and subscription modules.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectionStatus, Durable, Error, Message, Pattern,
    Publisher, QueueGroup, Result, Subscriber, Subscription,
};

use crate::connection::{self, Registry};
use crate::error::ClientError;
use crate::options::NatsOptions;
use crate::publisher::PublishFuture;
use crate::{durable, publisher, subscription, KIND};

/// A connection to a NATS server: core NATS, and JetStream for durable
/// subscriptions.
///
/// Cheap to clone: clones share the connection, and closing one closes them
/// all. See the [crate documentation](crate) for URLs, options, capabilities,
/// the wire mapping and how loss is reported.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{PublisherExt, SubscriberExt};
/// let broker = switchboard_nats::connect("nats://127.0.0.1:4222").await?;
/// let mut alerts = broker.subscribe_to("alerts.>").await?;
/// broker.publish_to("alerts.cpu", "CPU at 98%").await?;
/// // An `Err` item reports a loss or a broken link; the stream goes on.
/// while let Some(item) = alerts.next().await {
///     match item {
///         Ok(delivery) => println!("{:?}", delivery.payload_str()),
///         Err(error) => eprintln!("warning: {error}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

/// What every clone of a [`NatsBroker`] shares.
pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) registry: Arc<Registry>,
    closed: AtomicBool,
    /// The URL, password redacted.
    url: String,
    pub(crate) options: NatsOptions,
    /// JetStream, for durable subscriptions and stored publishes.
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// The subjects JetStream streams capture, and PubAcks to await.
    pub(crate) captured: durable::Captured,
}

impl Drop for Shared {
    /// The registry's client (kept to name the server after a failover)
    /// would otherwise keep the connection open: async-nats closes it with
    /// its last client.
    fn drop(&mut self) {
        self.registry.detach();
    }
}

impl NatsBroker {
    /// Connects to `url` with the default [`NatsOptions`] (overridden by the
    /// URL's query). Fails fast, saying why, if nothing answers or the server
    /// rejects the credentials: there is no silent retry at start-up. Once
    /// connected, async-nats reconnects by itself.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, NatsOptions::new()).await
    }

    /// Connects to `url` with `options` (the URL's query overrides them).
    pub async fn connect_with(url: &str, options: NatsOptions) -> Result<Self> {
        let connection = connection::open(url, options).await?;
        let captured = durable::Captured::default();
        durable::load_captured(
            &connection.client,
            &captured,
            connection.options.flush_timeout,
        )
        .await;
        let jetstream = async_nats::jetstream::new(connection.client.clone());
        Ok(NatsBroker {
            shared: Arc::new(Shared {
                client: connection.client,
                registry: connection.registry,
                closed: AtomicBool::new(false),
                url: switchboard_core::redact_url(url),
                options: connection.options,
                jetstream,
                captured,
            }),
        })
    }

    /// The async-nats client underneath, for what switchboard does not cover
    /// (request/reply, JetStream). Subscriptions made on it directly are not
    /// watched for loss.
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }

    /// The options in effect (with the URL's query applied).
    pub fn options(&self) -> &NatsOptions {
        &self.shared.options
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(Error::Closed { broker: KIND })
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .field("state", &self.shared.client.connection_state())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl Publisher for NatsBroker {
    // Written out rather than left to `#[async_trait]`: see `publisher::publish`.
    fn publish<'life0, 'async_trait>(&'life0 self, message: Message) -> PublishFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if let Err(error) = self.check_open() {
            return Box::pin(std::future::ready(Err(error)));
        }
        publisher::publish(&self.shared, message)
    }

    async fn flush(&self) -> Result<()> {
        self.check_open()?;
        publisher::flush(&self.shared).await
    }
}

#[async_trait]
impl Subscriber for NatsBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        self.check_open()?;
        subscription::subscribe(&self.shared, pattern, None).await
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        self.check_open()?;
        subscription::subscribe(&self.shared, pattern, Some(group)).await
    }

    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        self.check_open()?;
        durable::subscribe(&self.shared, pattern, durable).await
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.check_open()?;
        durable::remove(&self.shared, pattern, durable).await
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        // `Capabilities` is non-exhaustive: start from NONE and declare.
        let mut capabilities = Capabilities::NONE;
        capabilities.queue_groups = true;
        capabilities.native_headers = true;
        capabilities.headers = true;
        capabilities.native_wildcards = true;
        capabilities.ordered_per_publisher = true;
        capabilities.request_reply = true;
        capabilities.durable = true;
        capabilities.durable_storage = true;
        capabilities.delivery_count = true;
        capabilities.nack_delay = true;
        capabilities.max_payload = Some(self.shared.client.max_payload());
        capabilities
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.check_open()?;
        let subject = message.subject().clone();
        let reply = publisher::request(&self.shared, message, timeout).await?;
        switchboard_core::reply_outcome(KIND, subject.as_str(), reply)
    }

    fn status(&self) -> ConnectionStatus {
        self.shared.registry.link.status()
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let was_connected = self.shared.registry.link.status().connected;
        self.shared.registry.link.close();
        self.shared.registry.detach();
        let timeout = self.shared.options.flush_timeout;
        // Everything below shares one deadline: while the connection is down
        // (or frozen) async-nats neither flushes nor reports the end of a drain.
        let deadline = switchboard_core::deadline(timeout);
        let client = &self.shared.client;
        // Write out what was published, then let async-nats unsubscribe
        // everything, deliver what is in flight and close the connection;
        // every subscription stream ends after its buffered messages.
        let flushed = tokio::time::timeout_at(deadline, client.flush()).await;
        let drained = tokio::time::timeout_at(deadline, client.drain()).await;
        let mut closed = false;
        if let Ok(Ok(())) = drained {
            // Bounded too in case the `Closed` event was dropped.
            closed = tokio::time::timeout_at(deadline, self.shared.registry.wait_closed())
                .await
                .is_ok();
        }
        match flushed {
            // The server's refusals come as events, in order, before
            // `Closed`: once it is seen, every refusal of a publish made
            // before closing is counted (a flush's round trip can finish
            // just before its event is handled, and `send` flushes once).
            Ok(Ok(())) if closed => {
                match crate::connection::refused_since_last_flush(&self.shared.registry).await {
                    None => Ok(()),
                    Some((count, reason)) => Err(Error::Refused {
                        broker: KIND,
                        count,
                        reason,
                    }),
                }
            }
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Flush {
                broker: KIND,
                reason: "writing out what was published failed while closing".to_string(),
                source: Some(ClientError::boxed(e)),
            }),
            Err(_) => Err(Error::Flush {
                broker: KIND,
                reason: format!(
                    "while closing: {} within {timeout:?}; messages published since may not have reached the server",
                    if was_connected {
                        "the server did not take what was published"
                    } else {
                        "the connection was down and did not come back"
                    }
                ),
                source: None,
            }),
        }
    }
}
