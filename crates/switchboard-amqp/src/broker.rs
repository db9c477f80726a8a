//! [`AmqpBroker`]: switchboard's traits on one AMQP connection, delegating
//! to the connection, publisher and subscription modules.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectionStatus, Durable, Error, Message, Pattern,
    Publisher, QueueGroup, Result, Subscriber, Subscription,
};

use crate::connection::Sessions;
use crate::options::{AmqpOptions, Config};
use crate::publisher::Confirms;
use crate::{request, subscription, KIND};

/// A connection to RabbitMQ (or another AMQP 0-9-1 broker) through one topic
/// exchange. Cheap to clone; clones share the connection, and closing one
/// closes them all. See the [crate docs](crate) for the mapping and semantics.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

/// What every clone of an [`AmqpBroker`] shares.
struct Inner {
    sessions: Arc<Sessions>,
    confirms: Confirms,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sessions = &self.inner.sessions;
        f.debug_struct("AmqpBroker")
            .field("url", &sessions.config.redacted)
            .field("exchange", &sessions.config.options.exchange)
            .field("closed", &sessions.is_closed())
            .finish()
    }
}

impl AmqpBroker {
    /// Connects to `url` (see the [crate docs](crate) for its forms and query
    /// parameters), with `options` as defaults for what the URL does not set.
    pub async fn connect_with(url: &str, options: AmqpOptions) -> Result<AmqpBroker> {
        let config = Config::parse(url, options)?;
        Ok(AmqpBroker {
            inner: Arc::new(Inner {
                sessions: Arc::new(Sessions::open(config).await?),
                confirms: Confirms::default(),
            }),
        })
    }

    /// The options in effect (the URL's query parameters applied).
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.sessions.config.options
    }

    /// Awaits every confirm in the window, for at most the flush timeout.
    async fn drain(&self) -> Result<()> {
        let after = self.options().flush_timeout;
        let deadline = switchboard_core::deadline(after);
        self.inner.confirms.drain(after, deadline).await
    }
}

#[async_trait]
impl Publisher for AmqpBroker {
    async fn publish(&self, message: Message) -> Result<()> {
        if self.inner.sessions.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        self.inner
            .confirms
            .publish(&self.inner.sessions, message)
            .await
    }

    async fn flush(&self) -> Result<()> {
        // As on every broker: a closed handle has nothing to flush, and says so.
        if self.inner.sessions.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        self.drain().await
    }
}

#[async_trait]
impl Subscriber for AmqpBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        subscription::subscribe(self.inner.sessions.clone(), pattern.clone(), None).await
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        subscription::subscribe(
            self.inner.sessions.clone(),
            pattern.clone(),
            Some(group.clone()),
        )
        .await
    }

    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        subscription::subscribe_durable(self.inner.sessions.clone(), pattern.clone(), durable).await
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        if self.inner.sessions.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        let sessions = &self.inner.sessions;
        let name =
            subscription::durable_queue_name(durable, sessions.config.options.exchange.as_str())?;
        let failed = |reason: String| Error::Subscribe {
            broker: KIND,
            pattern: pattern.to_string(),
            reason,
            source: None,
        };
        let session = sessions.session().await?;
        let deleting = async {
            let channel = session.connection.create_channel().await?;
            channel
                .queue_delete(name.clone(), lapin::options::QueueDeleteOptions::default())
                .await?;
            let _ = channel.close(200, "OK".into()).await;
            Ok::<_, lapin::Error>(())
        };
        let timeout = self.options().flush_timeout;
        match tokio::time::timeout(timeout, deleting).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(failed(format!(
                "deleting queue {:?} failed: {error}",
                name.as_str()
            ))),
            Err(_) => Err(failed(format!(
                "deleting queue {:?} took longer than {timeout:?}",
                name.as_str()
            ))),
        }
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::NONE;
        capabilities.queue_groups = true;
        capabilities.native_headers = true;
        capabilities.headers = true;
        capabilities.native_wildcards = true;
        capabilities.ack = true;
        capabilities.redelivery = true;
        capabilities.persistence = false;
        capabilities.ordered_per_publisher = true;
        capabilities.request_reply = true;
        capabilities.durable = true;
        capabilities.durable_storage = true;
        capabilities.delivery_count = true;
        capabilities.max_payload = Some(self.options().max_payload);
        capabilities
    }

    /// Sends `message` as a request with RabbitMQ's direct reply-to and
    /// waits up to `timeout` for the reply (see the
    /// [crate docs](crate#requestreply)); fails at once with
    /// [`Error::NoResponders`] when no queue is bound to its subject.
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        if self.inner.sessions.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        let subject = message.subject().clone();
        let reply = request::request(&self.inner.sessions, message, timeout).await?;
        switchboard_core::reply_outcome(KIND, subject.as_str(), reply)
    }

    fn status(&self) -> ConnectionStatus {
        self.inner.sessions.link.status()
    }

    /// Flushes, then closes the connection, which cancels every consumer and
    /// requeues what was not acknowledged; every subscription's stream ends.
    /// The whole close shares one deadline, the flush timeout: a broker that
    /// does not answer (a frozen link) costs no more than that.
    async fn close(&self) -> Result<()> {
        let sessions = &self.inner.sessions;
        if !sessions.set_closed() {
            return Ok(());
        }
        sessions.link.close();
        let after = self.options().flush_timeout;
        let deadline = switchboard_core::deadline(after);
        let flushed = self.inner.confirms.drain(after, deadline).await;
        sessions.announce_closed();
        sessions.close(deadline).await;
        flushed
    }
}
