//! [`MqttBroker`]: the handle implementing switchboard's traits.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectionStatus, Durable, Error, Message, Pattern,
    Publisher, QueueGroup, Result, Subscriber, Subscription,
};
use tokio::task::JoinHandle;

use crate::connection::{self, lock, Alive, Shared, DISCONNECT_WAIT};
use crate::options::{parse_url, MqttOptions};
use crate::{publisher, subscription, KIND};

/// A connection to an MQTT 5 server. Cheap to clone: clones share the
/// connection, and closing one closes them all.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{PublisherExt, SubscriberExt};
/// let broker = switchboard_mqtt::connect("mqtt://127.0.0.1:1883").await?;
/// let mut alerts = broker.subscribe_to("alerts.>").await?; // topic filter alerts/#
/// broker.publish_to("alerts.cpu", "CPU at 98%").await?; // topic alerts/cpu
/// // An `Err` item says the connection broke (the adapter reconnects and
/// // resubscribes) or messages were dropped: report it and go on.
/// while let Some(item) = alerts.next().await {
///     match item {
///         Ok(delivery) => println!("{:?}", delivery.payload_str()),
///         Err(error) => eprintln!("warning: {error}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MqttBroker {
    inner: Arc<Inner>,
}

struct Inner {
    alive: Arc<Alive>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn shared(&self) -> &Arc<Shared> {
        &self.alive.0
    }
}

impl fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.inner.shared();
        f.debug_struct("MqttBroker")
            .field("url", &switchboard_core::redact_url(&shared.target.url))
            .field("client_id", &shared.client_id)
            .field("closed", &shared.is_closed())
            .finish()
    }
}

impl MqttBroker {
    /// Connects to an `mqtt://` or `mqtts://` URL with the default
    /// [`MqttOptions`] (overridden by the URL's query).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, MqttOptions::new()).await
    }

    /// Connects to `url` with `options` (the URL's query wins over them).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
    /// use std::time::Duration;
    /// use switchboard_mqtt::{MqttBroker, MqttOptions};
    /// let options = MqttOptions::new().name("billing").flush_timeout(Duration::from_secs(2));
    /// let broker = MqttBroker::connect_with("mqtt://127.0.0.1:1883", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, options: MqttOptions) -> Result<Self> {
        let target = parse_url(url, options)?;
        let (shared, task) = connection::connect(target).await?;
        Ok(MqttBroker {
            inner: Arc::new(Inner {
                alive: Arc::new(Alive(shared)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The options this broker was connected with (the URL's query applied).
    pub fn options(&self) -> &MqttOptions {
        &self.inner.shared().target.options
    }

    /// The MQTT client identifier of the connection (`name-<random hex>`).
    pub fn client_id(&self) -> &str {
        &self.inner.shared().client_id
    }
}

#[async_trait]
impl Publisher for MqttBroker {
    /// Queues a QoS 0 PUBLISH (at most once) and returns without waiting for
    /// the server; [`Publisher::flush`] waits. Fails with `PayloadTooLarge`
    /// over the server's maximum packet size, `Closed` after `close`, and
    /// `Publish` when the client's queue stays full for the flush timeout
    /// (the connection is down). Messages queued while the connection is
    /// down are dropped when it is renewed (QoS 0; `status().disconnects` grows).
    async fn publish(&self, message: Message) -> Result<()> {
        publisher::publish(self.inner.shared(), message).await
    }

    /// Waits until the server has processed every message published before
    /// the call on this connection, i.e. routed it to the subscriptions that
    /// existed then: a SUBSCRIBE to a filter of its own (that nothing
    /// publishes to) is queued behind them and the server's SUBACK comes
    /// after it handled them (an MQTT server handles one connection's packets
    /// in order). Fails with
    /// `Error::Flush` when the connection is lost first or nothing answers
    /// within the flush timeout.
    async fn flush(&self) -> Result<()> {
        publisher::flush(self.inner.shared()).await
    }
}

#[async_trait]
impl Subscriber for MqttBroker {
    /// SUBSCRIBE (QoS 0, no retained messages) and wait for the SUBACK.
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        subscription::subscribe(&self.inner.alive, pattern, None).await
    }

    /// An MQTT 5 shared subscription, `$share/GROUP/filter`: the server
    /// gives each message to one member of the group.
    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        subscription::subscribe(&self.inner.alive, pattern, Some(group)).await
    }

    /// Always [`Error::Unsupported`]: see the crate documentation (rumqttc
    /// keeps unacknowledged QoS 1 messages only in memory, and MQTT has no
    /// negative acknowledgement or redelivery on a live connection).
    async fn subscribe_durable(
        &self,
        _pattern: &Pattern,
        _durable: &Durable,
    ) -> Result<Subscription> {
        Err(Error::unsupported(
            KIND,
            "durable subscriptions (MQTT has no negative acknowledgement and redelivers only on a new connection of the same session; rumqttc cannot leave a message unacknowledged when a delivery is dropped)",
        ))
    }

    async fn remove_durable(&self, _pattern: &Pattern, _durable: &Durable) -> Result<()> {
        Err(Error::unsupported(
            KIND,
            "durable subscriptions (there is no durable consumer to remove on MQTT)",
        ))
    }
}

#[async_trait]
impl Broker for MqttBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let shared = self.inner.shared();
        let mut capabilities = Capabilities::NONE;
        capabilities.queue_groups = shared.shared_subscriptions.load(Ordering::Acquire);
        capabilities.native_headers = true;
        capabilities.headers = true;
        capabilities.native_wildcards = true;
        capabilities.ordered_per_publisher = true;
        capabilities.request_reply = true;
        capabilities.max_payload = Some(publisher::max_payload(shared.max_packet()));
        capabilities
    }

    /// Publishes `message` with an MQTT 5 response topic (this connection's
    /// inbox, `_INBOX/<client id>`, subscribed on first use) and correlation
    /// data, and waits for the reply carrying the same correlation data.
    /// MQTT cannot tell that nobody is subscribed: without a reply this
    /// fails with [`Error::Timeout`].
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        let subject = message.subject().clone();
        let reply = publisher::request(self.inner.shared(), message, timeout).await?;
        switchboard_core::reply_outcome(KIND, subject.as_str(), reply)
    }

    fn status(&self) -> ConnectionStatus {
        self.inner.shared().link.status()
    }

    /// Flushes (bounded by the flush timeout), sends DISCONNECT, ends every
    /// subscription of the connection and stops its task. Closing again is
    /// fine. Returns the flush's error if it failed.
    async fn close(&self) -> Result<()> {
        let shared = self.inner.shared();
        let task = lock(&self.inner.task).take();
        let Some(mut task) = task else {
            return Ok(());
        };
        shared.mark_closed();
        let flushed = if shared.is_up() {
            publisher::flush_open(shared).await
        } else {
            Ok(())
        };
        shared.link.close();
        let _ = shared.client.try_disconnect();
        if tokio::time::timeout(DISCONNECT_WAIT, &mut task)
            .await
            .is_err()
        {
            shared.shutdown();
            if tokio::time::timeout(DISCONNECT_WAIT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        flushed
    }
}
