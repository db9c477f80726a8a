//! [`RedisBroker`]: the handle implementing switchboard's traits.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectKind, ConnectionStatus, Durable, Error, Message,
    Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::Control;
use crate::options::{RedisOptions, Target};
use crate::resp::Frame;
use crate::{durable, publisher, request, routing, subscription, KIND};

/// Redis's default `proto-max-bulk-len`, used when the server does not say.
const DEFAULT_MAX_PAYLOAD: usize = 512 * 1024 * 1024;

/// Room kept, under the PUBSUB output buffer limit, for the frame a message
/// is pushed to a subscriber in: `pmessage`, the pattern and the channel
/// (each at most 255 bytes here, more once escaped) and the lengths.
const PUBSUB_FRAME_RESERVE: usize = 4096;

/// The value of `CONFIG GET name`: `None` when the server does not tell
/// (CONFIG disabled or not permitted, no answer within `timeout`); `Err` when
/// the connection broke.
async fn config_get(
    conn: &mut crate::connection::Conn,
    name: &str,
    timeout: std::time::Duration,
) -> std::io::Result<Option<String>> {
    match tokio::time::timeout(timeout, conn.command(&[b"CONFIG", b"GET", name.as_bytes()])).await {
        Ok(Ok(Frame::Array(Some(items)))) => Ok(items
            .get(1)
            .and_then(Frame::bytes)
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(str::to_string)),
        Ok(Err(error)) => Err(error),
        _ => Ok(None),
    }
}

/// The hard limit of the `pubsub` class in a `client-output-buffer-limit`
/// value (`normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432
/// 8388608 60`); `None` when there is none (0: unlimited) or it cannot be read.
fn pubsub_hard_limit(config: &str) -> Option<usize> {
    let mut words = config.split_whitespace();
    words.find(|word| word.eq_ignore_ascii_case("pubsub"))?;
    let hard: usize = words.next()?.parse().ok()?;
    (hard > 0).then_some(hard)
}

/// A connection to Redis PUBSUB. Cheap to clone: clones share the publishing
/// connection, and closing one closes them all.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{PublisherExt, SubscriberExt};
/// let broker = switchboard_redis::connect("redis://127.0.0.1:6379").await?;
/// let mut alerts = broker.subscribe_to("alerts.>").await?;
/// broker.publish_to("alerts.cpu", "CPU at 98%").await?;
/// // An `Err` item says the subscription's connection broke (and is being
/// // renewed) or a channel was not a subject: report it and go on.
/// while let Some(item) = alerts.next().await {
///     match item {
///         Ok(delivery) => println!("{:?}", delivery.payload_str()),
///         Err(error) => eprintln!("warning: {error}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    options: RedisOptions,
    publisher: Arc<publisher::Shared>,
    requests: request::Requests,
    /// The shared pub/sub connection of every PUBSUB subscription (and
    /// request inbox) made from this handle, opened by the first one.
    subscriptions: subscription::Hub,
    writer: Mutex<Option<JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
    /// The control connection (durable mode), or why the durable mode is
    /// unavailable on this server.
    control: std::result::Result<Arc<Control>, String>,
    /// Whether the server persists writes with its append-only file, so
    /// durable streams survive a restart.
    appendonly: bool,
    /// The routing link's task, awaited by `close` (so a change it already
    /// received is acknowledged before `close` returns).
    routing: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every handle is gone: let the writer send what is buffered, then stop.
        self.publisher.shutdown();
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &switchboard_core::redact_url(&self.inner.target.url))
            .field("name", &self.inner.options.client_name())
            .field("closed", &self.inner.publisher.is_closed())
            .finish()
    }
}

impl RedisBroker {
    pub(crate) async fn connect_with(url: &str, mut options: RedisOptions) -> Result<Self> {
        let target = Target::parse(url, &mut options)?;
        // On a cluster, the publishing connection is on the master of the
        // durable keys' slot (a PUBLISH reaches every node from any node).
        let mut conn = target
            .connect_durable(options.connect_timeout, &options.client_name())
            .await?;
        // What the server says of itself, where it tells (CONFIG may be
        // disabled or not permitted); a connection that broke meanwhile fails.
        let timeout = options.connect_timeout;
        let broke = |e: std::io::Error| {
            target.error(
                ConnectKind::Other,
                "the connection broke right after the handshake",
                Some(Box::new(e)),
            )
        };
        let max_payload = config_get(&mut conn, "proto-max-bulk-len", timeout)
            .await
            .map_err(broke)?
            .and_then(|value| value.parse().ok())
            .unwrap_or(DEFAULT_MAX_PAYLOAD);
        // A PUBSUB message larger than the subscribers' output buffer hard
        // limit (32 MiB by default) disconnects every subscriber it is sent
        // to and is lost, although `PUBLISH` succeeded. Redis counts that
        // buffer by its allocations, which can be a quarter larger than the
        // bytes (jemalloc's size classes; a 1 MiB limit dropped a subscriber
        // over a 1,044,480-byte message): three quarters of it are declared.
        let pubsub_limit = config_get(&mut conn, "client-output-buffer-limit", timeout)
            .await
            .map_err(broke)?
            .and_then(|value| pubsub_hard_limit(&value));
        let max_payload = match pubsub_limit {
            Some(limit) => max_payload.min((limit / 4 * 3).saturating_sub(PUBSUB_FRAME_RESERVE)),
            None => max_payload,
        };
        let appendonly = config_get(&mut conn, "appendonly", timeout)
            .await
            .map_err(broke)?
            .is_some_and(|value| value == "yes");
        let (publisher, writer) =
            publisher::start(conn, target.clone(), options.clone(), max_payload);
        let shutdown = watch::Sender::new(false);
        let durable = start_durable(&target, &options, &publisher, &shutdown).await;
        let (control, routing) = match durable {
            Ok((control, routing)) => (Ok(control), Some(routing)),
            Err(reason) => (Err(reason), None),
        };
        let subscriptions = subscription::Hub::new(
            target.clone(),
            options.clone(),
            shutdown.subscribe(),
            publisher.clone(),
        );
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                target,
                options,
                publisher,
                requests: request::Requests::default(),
                subscriptions,
                writer: Mutex::new(Some(writer)),
                shutdown,
                control,
                appendonly,
                routing: Mutex::new(routing),
            }),
        })
    }

    /// The control connection, or `Unsupported` saying why the durable mode
    /// is unavailable.
    fn control(&self) -> Result<&Arc<Control>> {
        if self.inner.publisher.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        self.inner.control.as_ref().map_err(|reason| {
            Error::unsupported(
                KIND,
                format!("durable subscriptions on this server: {reason}"),
            )
        })
    }

    /// The options this broker was connected with (the URL's query applied).
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }
}

#[async_trait]
impl Publisher for RedisBroker {
    /// Queues a PUBLISH on the shared connection and returns without waiting
    /// for Redis's reply; [`Publisher::flush`] waits for the replies. Fails
    /// with `PayloadTooLarge` over the server's `proto-max-bulk-len`, `Closed`
    /// after `close`, and `Publish` while the connection is down and
    /// reconnecting fails.
    async fn publish(&self, message: Message) -> Result<()> {
        self.inner.publisher.publish(&message).await
    }

    /// Waits until Redis answered every PUBLISH made before the call; fails
    /// saying how many failed (error replies, or a connection that broke
    /// before Redis answered) and why, or with [`Error::Timeout`] after
    /// [`RedisOptions::flush_timeout`] (10 s by default). After a timeout the
    /// replies are still counted: a later flush waits for them again.
    async fn flush(&self) -> Result<()> {
        self.inner.publisher.flush(false).await
    }
}

#[async_trait]
impl Subscriber for RedisBroker {
    /// Subscribes on the handle's shared pub/sub connection (opened by the
    /// first subscription) and resolves once Redis confirmed the SUBSCRIBE
    /// (literal pattern) or PSUBSCRIBE (wildcards).
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        if self.inner.publisher.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        self.inner.subscriptions.subscribe(pattern).await
    }

    /// Always [`Error::Unsupported`]: Redis PUBSUB delivers every message to every subscriber.
    async fn subscribe_group(
        &self,
        _pattern: &Pattern,
        _group: &QueueGroup,
    ) -> Result<Subscription> {
        Err(Error::unsupported(
            KIND,
            "queue groups (Redis PUBSUB delivers every message to every subscriber); the members of a durable consumer share its messages (subscribe_durable with Durable::group; listen --durable NAME --group G)",
        ))
    }

    /// Creates (or resumes) the durable consumer: its stream and consumer
    /// group, and the registry entry that makes every publisher store
    /// matching messages; resolves once every connected publisher confirmed
    /// it knows (see the [crate docs](crate#durable-mode)), then reads as
    /// the member `durable.name` of the group `durable.consumer()`.
    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        let control = self.control()?;
        let register = routing::change(
            &self.inner.target,
            &self.inner.options,
            control,
            &self.inner.publisher,
            b"switchboard_v1_register",
            pattern,
            durable.consumer().as_str(),
        );
        durable::subscribe(
            self.inner.target.clone(),
            self.inner.options.clone(),
            control.clone(),
            pattern,
            durable,
            self.inner.shutdown.subscribe(),
            register,
        )
        .await
    }

    /// Destroys the consumer group; once its stream has no group left,
    /// deletes the stream and the registry entry (publishers then PUBLISH
    /// matching subjects plainly again).
    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        let control = self.control()?;
        routing::change(
            &self.inner.target,
            &self.inner.options,
            control,
            &self.inner.publisher,
            b"switchboard_v1_unregister",
            pattern,
            durable.consumer().as_str(),
        )
        .await
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        // `Capabilities` is non-exhaustive: start from NONE and set what Redis provides.
        let mut capabilities = Capabilities::NONE;
        capabilities.headers = true;
        capabilities.ordered_per_publisher = true;
        capabilities.request_reply = true;
        if self.inner.control.is_ok() {
            capabilities.durable = true;
            capabilities.durable_storage = self.inner.appendonly;
            capabilities.delivery_count = true;
            capabilities.nack_delay = true;
        }
        capabilities.max_payload = Some(self.inner.publisher.max_payload());
        capabilities
    }

    /// Flushes, ends every subscription made from this handle (their streams
    /// end) and closes the connections. Closing again is fine. The flush is
    /// bounded by [`RedisOptions::flush_timeout`]; if it times out, close
    /// returns that [`Error::Timeout`] and drops the publishing connection
    /// (publishes still unanswered may or may not have been delivered).
    /// Sends `message` as a request and waits up to `timeout` for the first
    /// reply (see the [crate docs](crate#requestreply)): fails at once with
    /// [`Error::NoResponders`] when nothing is subscribed to its subject.
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        if self.inner.publisher.is_closed() {
            return Err(Error::Closed { broker: KIND });
        }
        let subject = message.subject().clone();
        let reply = request::request(
            &self.inner.requests,
            &self.inner.subscriptions,
            &self.inner.target,
            &self.inner.options,
            message,
            timeout,
        )
        .await?;
        switchboard_core::reply_outcome(KIND, subject.as_str(), reply)
    }

    fn status(&self) -> ConnectionStatus {
        self.inner.publisher.link.status()
    }

    async fn close(&self) -> Result<()> {
        self.inner.publisher.link.close();
        let writer = match self.inner.writer.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut writer) = writer else {
            return Ok(());
        };
        self.inner.publisher.close();
        self.inner.shutdown.send_replace(true);
        let routing = match self.inner.routing.lock() {
            Ok(mut r) => r.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut routing) = routing {
            // It ends at once, after acknowledging what it already received.
            if tokio::time::timeout(Duration::from_secs(1), &mut routing)
                .await
                .is_err()
            {
                routing.abort();
            }
        }
        let flushed = self.inner.publisher.flush(true).await;
        self.inner.publisher.shutdown();
        // The writer ends once its buffer is written; if Redis does not answer
        // (the flush timed out, or it does not read), the connection is dropped.
        let timeout = self.inner.options.flush_timeout;
        let waited = match flushed {
            Err(Error::Timeout { .. }) => Err(()),
            _ => tokio::time::timeout(timeout, &mut writer)
                .await
                .map_err(|_| ()),
        };
        if waited.is_err() {
            writer.abort();
            let _ = writer.await;
        }
        flushed
    }
}

/// Opens the control connection, loads the durable mode's functions and
/// starts the routing link, waiting (bounded) until it has loaded the
/// registry. Returns why the durable mode is unavailable if the functions
/// cannot be loaded (the publisher then always PUBLISHes plainly).
async fn start_durable(
    target: &Target,
    options: &RedisOptions,
    publisher: &Arc<publisher::Shared>,
    shutdown: &watch::Sender<bool>,
) -> std::result::Result<(Arc<Control>, JoinHandle<()>), String> {
    let conn = target
        .connect_durable(
            options.connect_timeout,
            &format!("{}-control", options.client_name()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let control = Arc::new(Control::new(target.clone(), options.clone()));
    if let Err(reason) = control.start(conn).await {
        tracing::debug!(%reason, "redis: durable mode unavailable");
        return Err(reason);
    }
    // An ACL user allowed FUNCTION but not switchboard's keys would have
    // every durable publish refused, and until its routing link is up every
    // publish is a durable one: a user limited to its own channels could not
    // publish at all. For it the durable mode is off, as for a user without
    // FUNCTION, and its publishes are plain PUBLISHes.
    let keys = routing::Keys::of(target);
    if let Err(reason) = routing::load(&control, keys).await {
        if reason.contains("NOPERM") {
            let reason = format!(
                "this user may not read switchboard's durable registry ({reason}); an ACL user needs the keys `~{}*` and the channels `&switchboard:durable:*` for durable subscriptions, and without them publishes plainly",
                keys.registry()
            );
            tracing::debug!(%reason, "redis: durable mode unavailable");
            return Err(reason);
        }
    }
    publisher.enable_durable();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let routing = tokio::spawn(routing::run(
        target.clone(),
        options.clone(),
        control.clone(),
        publisher.clone(),
        ready_tx,
        shutdown.subscribe(),
    ));
    match tokio::time::timeout(options.connect_timeout * 2, ready_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(reason))) if reason.contains("NOPERM") => tracing::warn!(
            "redis: this user may not subscribe to switchboard's channel {:?} ({reason}), so every publish goes through the durable function, which costs Redis more; grant it `&switchboard:durable:*`",
            routing::changes_channel(target)
        ),
        Ok(Ok(Err(reason))) => {
            tracing::warn!(%reason, "redis: the durable routing link is not up; publishing everything through the durable function until it is")
        }
        _ => tracing::warn!(
            "redis: the durable routing link did not come up in time; publishing everything through the durable function until it does"
        ),
    }
    Ok((control, routing))
}

#[cfg(test)]
mod tests {
    use super::pubsub_hard_limit;

    #[test]
    fn the_pubsub_hard_limit_is_read_from_the_config() {
        let default = "normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(pubsub_hard_limit(default), Some(33_554_432));
        assert_eq!(pubsub_hard_limit("normal 0 0 0 pubsub 0 0 0"), None);
        assert_eq!(pubsub_hard_limit("normal 0 0 0"), None);
        assert_eq!(pubsub_hard_limit("pubsub lots"), None);
    }
}
