//! [`NatsBroker`]: switchboard's traits on an async-nats client.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use futures::StreamExt;
use switchboard_core::{
    async_trait, BoxError, Broker, Capabilities, ConnectKind, ConnectionStatus, Durable, Error,
    Link, Message, Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
};

use crate::error::{connect_error, ClientError};
use crate::options::{parse_url, Credentials, NatsOptions};
use crate::stream::{NatsStream, Registry};
use crate::{wire, KIND};

/// A connection to a NATS server (core NATS, no JetStream).
///
/// Cheap to clone: clones share the connection, and closing one closes them
/// all. See the [crate documentation](crate) for URLs, options, capabilities,
/// the wire mapping and how loss is reported.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{Message, Publisher, Subscriber};
/// let broker = switchboard_nats::connect("nats://127.0.0.1:4222").await?;
/// let mut alerts = broker.subscribe(&"alerts.>".parse()?).await?;
/// broker.publish(Message::new("alerts.cpu", "CPU at 98%")?).await?;
/// let delivery = alerts.next().await.expect("subscribed")?;
/// assert_eq!(delivery.payload_str(), Some("CPU at 98%"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    registry: Arc<Registry>,
    closed: AtomicBool,
    /// The URL, password redacted.
    url: String,
    options: NatsOptions,
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
        let target = parse_url(url, options)?;
        let options = target.options;
        let registry = Registry::new();
        let events = registry.clone();
        let mut connect = match target.credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserPassword(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user, password)
            }
            Credentials::Token(token) => async_nats::ConnectOptions::with_token(token),
        }
        .connection_timeout(options.get_connect_timeout())
        .subscription_capacity(options.get_capacity())
        // Subjects are validated by switchboard already.
        .skip_subject_validation(true)
        .event_callback(move |event| {
            events.on_event(event);
            std::future::ready(())
        });
        if let Some(name) = options.get_name() {
            connect = connect.name(name);
        }
        if let Some(keepalive) = options.get_keepalive() {
            // async-nats PINGs after a ping interval without hearing from the
            // server, and drops the connection at the third PING in a row
            // without an answer: a silent link is detected after 3 intervals.
            connect = connect.ping_interval((keepalive / 3).max(Duration::from_millis(1)));
        }
        let tls_required = target
            .servers
            .iter()
            .all(async_nats::ServerAddr::tls_required);
        connect = crate::tls::configure(url, connect, &options.tls, tls_required)?;
        let timeout = options.get_connect_timeout();
        let client = match tokio::time::timeout(timeout, connect.connect(target.servers)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(connect_error(url, &options, error)),
            Err(_) => {
                return Err(Error::connect(
                    KIND,
                    url,
                    ConnectKind::Timeout,
                    format!(
                    "timed out after {timeout:?}; is the host reachable and running nats-server?"
                ),
                    None,
                ))
            }
        };
        Ok(NatsBroker {
            shared: Arc::new(Shared {
                client,
                registry,
                closed: AtomicBool::new(false),
                url: switchboard_core::redact_url(url),
                options,
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

    /// One round trip through the server: subscribes to a fresh inbox,
    /// publishes an empty message to it and waits for it to come back. The
    /// server handles a connection's commands in order, so once it is back
    /// every command sent before (SUB, PUB, UNSUB) has been processed.
    ///
    /// async-nats' `Client::flush` only writes the buffer to the socket, and it
    /// has no public PING, hence the echo. The echo is visible to other
    /// subscribers of `_INBOX.>` (or `>`), like any request/reply inbox traffic.
    ///
    /// The whole round trip is bounded by the flush timeout: while the
    /// connection is down async-nats takes no commands and answers no flush.
    async fn round_trip(&self) -> std::result::Result<(), (String, Option<BoxError>)> {
        let client = &self.shared.client;
        let timeout = self.shared.options.get_flush_timeout();
        let inbox = client.new_inbox();
        let echoed = async {
            let mut echo = client.subscribe(inbox.clone()).await.map_err(|e| {
                (
                    "the client is gone".to_string(),
                    Some(ClientError::boxed(e)),
                )
            })?;
            client
                .publish(inbox.clone(), Bytes::new())
                .await
                .map_err(|e| {
                    (
                        "the client is gone".to_string(),
                        Some(ClientError::boxed(e)),
                    )
                })?;
            client.flush().await.map_err(|e| {
                (
                    "writing to the server failed".to_string(),
                    Some(ClientError::boxed(e)),
                )
            })?;
            match echo.next().await {
                Some(_) => Ok(()),
                None => Err(("the connection was closed".to_string(), None)),
            }
        };
        match tokio::time::timeout(timeout, echoed).await {
            Ok(result) => result,
            Err(_) if !self.shared.registry.link.status().connected => Err((
                format!(
                    "the connection to the server is down and did not come back within {timeout:?} (the client keeps reconnecting); messages published since it broke may not have reached the server"
                ),
                None,
            )),
            Err(_) => Err((
                format!(
                    "the server did not answer within {timeout:?} (is the link frozen, or may this client not publish and subscribe to {inbox:?}?)"
                ),
                None,
            )),
        }
    }

    async fn subscribe_to(
        &self,
        pattern: &Pattern,
        group: Option<&QueueGroup>,
    ) -> Result<Subscription> {
        self.check_open()?;
        let failed = |reason: String, source: Option<BoxError>| Error::Subscribe {
            broker: KIND,
            pattern: pattern.as_str().to_string(),
            reason,
            source,
        };
        let subject = async_nats::Subject::from(pattern.as_str());
        let subscriber = match group {
            None => self.shared.client.subscribe(subject).await,
            Some(group) => {
                self.shared
                    .client
                    .queue_subscribe(subject, group.as_str().to_string())
                    .await
            }
        }
        .map_err(|e| {
            failed(
                "the client did not take the subscription".to_string(),
                Some(ClientError::boxed(e)),
            )
        })?;
        let stream = NatsStream::new(
            subscriber,
            &self.shared.registry,
            pattern.clone(),
            self.shared.options.get_capacity(),
        );
        // Resolve only once the server has processed the SUB (dropping
        // `stream` on failure unsubscribes).
        self.round_trip()
            .await
            .map_err(|(reason, source)| failed(reason, source))?;
        let client = self.shared.client.clone();
        let registry = self.shared.registry.clone();
        let timeout = self.shared.options.get_flush_timeout();
        let unsubscribing = pattern.clone();
        Ok(
            Subscription::new(pattern.clone(), group.cloned(), stream).with_close(move || {
                Box::pin(async move {
                    // While the connection is down (or closed) there is nothing
                    // to end: the server forgot the subscription with the
                    // connection, and async-nats does not renew a dropped one.
                    if !registry.link.status().connected {
                        return Ok(());
                    }
                    // Dropping the stream queued the UNSUB; this writes it out.
                    match tokio::time::timeout(timeout, client.flush()).await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(Error::Timeout {
                            broker: KIND,
                            operation: format!("unsubscribing from {:?}", unsubscribing.as_str()),
                            after: timeout,
                        }),
                    }
                })
            }),
        )
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
    async fn publish(&self, message: Message) -> Result<()> {
        self.check_open()?;
        let (subject, payload, headers) = message.into_parts();
        let max = self.shared.client.max_payload();
        let headers = if headers.is_empty() {
            if payload.len() > max {
                return Err(too_large(&subject, payload.len(), max));
            }
            None
        } else {
            let (map, header_size) = wire::nats_headers(&headers)?;
            let size = header_size + payload.len();
            if size > max {
                return Err(too_large(&subject, size, max));
            }
            Some(map)
        };
        let nats_subject = wire::nats_subject(&subject)?;
        let client = &self.shared.client;
        // Built in place, and awaited here rather than in a helper taking it
        // by value: this future is boxed on every call, and a copy of the
        // client's future would make it larger (and slower to allocate).
        let mut handing = std::pin::pin!(match headers {
            None => Either::Left(client.publish(nats_subject, payload)),
            Some(map) => Either::Right(client.publish_with_headers(nats_subject, map, payload)),
        });
        // Polled with this task's context: if async-nats' queue is full, the
        // task is now registered to be woken when there is room.
        let handed = match futures::future::poll_immediate(handing.as_mut()).await {
            Some(handed) => Some(handed),
            None => {
                let timeout = self.shared.options.get_flush_timeout();
                Box::pin(wait_for_room(handing, &self.shared.registry.link, timeout)).await
            }
        };
        let failed = |reason: String, source: Option<BoxError>| Error::Publish {
            broker: KIND,
            subject: subject.to_string(),
            reason,
            source,
        };
        match handed {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(failed(
                "the client did not take the message".to_string(),
                Some(ClientError::boxed(e)),
            )),
            None => {
                let timeout = self.shared.options.get_flush_timeout();
                Err(failed(
                    format!(
                        "the connection to the server is down and the client's send queue stayed full for {timeout:?} while it reconnects; the message was not sent"
                    ),
                    None,
                ))
            }
        }
    }

    async fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.round_trip()
            .await
            .map_err(|(reason, source)| Error::Flush {
                broker: KIND,
                reason,
                source,
            })
    }
}

#[async_trait]
impl Subscriber for NatsBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        self.subscribe_to(pattern, None).await
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        self.subscribe_to(pattern, Some(group)).await
    }

    async fn subscribe_durable(
        &self,
        _pattern: &Pattern,
        _durable: &Durable,
    ) -> Result<Subscription> {
        Err(Error::unsupported(KIND, "durable subscriptions (not yet)"))
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
        capabilities.max_payload = Some(self.shared.client.max_payload());
        capabilities
    }

    async fn request(&self, message: Message, _timeout: Duration) -> Result<Message> {
        Err(Error::unsupported(
            KIND,
            format!(
                "request/reply (a request on {:?}; not yet)",
                message.subject().as_str()
            ),
        ))
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
        let timeout = self.shared.options.get_flush_timeout();
        // Everything below shares one deadline: while the connection is down
        // (or frozen) async-nats neither flushes nor reports the end of a drain.
        let deadline = tokio::time::Instant::now() + timeout;
        let client = &self.shared.client;
        // Write out what was published, then let async-nats unsubscribe
        // everything, deliver what is in flight and close the connection;
        // every subscription stream ends after its buffered messages.
        let flushed = tokio::time::timeout_at(deadline, client.flush()).await;
        let drained = tokio::time::timeout_at(deadline, client.drain()).await;
        if let Ok(Ok(())) = drained {
            // Bounded too in case the `Closed` event was dropped.
            let _ = tokio::time::timeout_at(deadline, self.shared.registry.wait_closed()).await;
        }
        match flushed {
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

/// Awaits `handing`, a publish that found async-nats' command queue full;
/// `None` if the connection was down for `timeout` meanwhile.
///
/// The queue is full whenever messages come faster than the connection
/// writes them: waiting for room is then normal and must stay about as cheap
/// as in async-nats itself, so no timer is made for it (and this runs out of
/// line, boxed, so that `publish`'s own future stays small). It is also full
/// while the connection is down (async-nats takes no commands while it
/// reconnects), and that wait could last forever: so the wait watches the
/// link, and only once the link is down does `timeout` run.
async fn wait_for_room<F: std::future::Future>(
    mut handing: std::pin::Pin<&mut F>,
    link: &Link,
    timeout: std::time::Duration,
) -> Option<F::Output> {
    use std::future::Future as _;
    use std::task::Poll;
    let mut link = link.watch();
    // `handing` was just polled: it need not be polled again until woken
    // (a second poll would take the queue's lock for nothing).
    let mut just_polled = true;
    loop {
        if !link.borrow_and_update().connected {
            return tokio::time::timeout(timeout, handing).await.ok();
        }
        let mut changed = std::pin::pin!(link.changed());
        let woken = std::future::poll_fn(|cx| {
            if !std::mem::take(&mut just_polled) {
                if let Poll::Ready(output) = handing.as_mut().poll(cx) {
                    return Poll::Ready(Some(output));
                }
            }
            match changed.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(None),
                // The link's sender lives as long as the registry: never.
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(output) = woken {
            return Some(output);
        }
    }
}

fn too_large(subject: &switchboard_core::Subject, size: usize, max: usize) -> Error {
    Error::PayloadTooLarge {
        broker: KIND,
        subject: subject.to_string(),
        size,
        max,
    }
}
