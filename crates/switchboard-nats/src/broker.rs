//! [`NatsBroker`]: switchboard's traits on an async-nats client.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use switchboard_core::{
    async_trait, BoxError, Broker, Capabilities, ConnectKind, ConnectionStatus, Durable, Error,
    Message, Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
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
    async fn round_trip(&self) -> std::result::Result<(), (String, Option<BoxError>)> {
        let client = &self.shared.client;
        let inbox = client.new_inbox();
        let mut echo = client.subscribe(inbox.clone()).await.map_err(|e| {
            (
                "the client is gone".to_string(),
                Some(ClientError::boxed(e)),
            )
        })?;
        client.publish(inbox, Bytes::new()).await.map_err(|e| {
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
        let timeout = self.shared.options.get_flush_timeout();
        match tokio::time::timeout(timeout, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(("the connection was closed".to_string(), None)),
            Err(_) => Err((
                format!(
                    "the server did not answer within {timeout:?} (is the connection down, or may this client not publish and subscribe to {:?}?)",
                    client.new_inbox()
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
        Ok(
            Subscription::new(pattern.clone(), group.cloned(), stream).with_close(move || {
                Box::pin(async move {
                    // Dropping the stream queued the UNSUB; this writes it out.
                    // A closed client has no subscriptions left to end.
                    let _ = client.flush().await;
                    Ok(())
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
        let result = if headers.is_empty() {
            if payload.len() > max {
                return Err(too_large(&subject, payload.len(), max));
            }
            let nats_subject = wire::nats_subject(&subject)?;
            self.shared.client.publish(nats_subject, payload).await
        } else {
            let (map, header_size) = wire::nats_headers(&headers)?;
            let size = header_size + payload.len();
            if size > max {
                return Err(too_large(&subject, size, max));
            }
            let nats_subject = wire::nats_subject(&subject)?;
            self.shared
                .client
                .publish_with_headers(nats_subject, map, payload)
                .await
        };
        result.map_err(|e| Error::Publish {
            broker: KIND,
            subject: subject.to_string(),
            reason: "the client did not take the message".to_string(),
            source: Some(ClientError::boxed(e)),
        })
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
        self.shared.registry.link.close();
        let timeout = self.shared.options.get_flush_timeout();
        let client = &self.shared.client;
        // Write out what was published, then let async-nats unsubscribe
        // everything, deliver what is in flight and close the connection;
        // every subscription stream ends after its buffered messages.
        let flushed = client.flush().await;
        let drained = client.drain().await;
        if drained.is_ok() {
            // The wait is bounded in case the `Closed` event was dropped.
            let _ = tokio::time::timeout(timeout, self.shared.registry.wait_closed()).await;
        }
        flushed.map_err(|e| Error::Flush {
            broker: KIND,
            reason: "writing out what was published failed while closing".to_string(),
            source: Some(ClientError::boxed(e)),
        })
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
