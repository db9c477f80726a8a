//! The broker handle: one connection, a confirm-mode publishing channel, reconnection.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use lapin::{ExchangeKind, PublisherConfirm};
use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectKind, ConnectionStatus, Durable, Error, Link,
    Message, Pattern, Publisher, QueueGroup, Result, Subject, Subscriber, Subscription,
};
use tokio::sync::watch;

use crate::config::{AmqpOptions, Config};
use crate::error::{amqp_error, connect_error, ClientError};
use crate::{subscription, wire, BROKER};

/// A connection to RabbitMQ (or another AMQP 0-9-1 broker) through one topic
/// exchange. Cheap to clone; clones share the connection, and closing one
/// closes them all. See the [crate docs](crate) for the mapping and semantics.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.inner.config.redacted)
            .field("exchange", &self.inner.config.options.exchange)
            .field("closed", &self.inner.is_closed())
            .finish()
    }
}

/// One live connection and its publishing channel.
pub(crate) struct Session {
    pub(crate) connection: Arc<Connection>,
    publisher: Channel,
}

impl Session {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// A published message whose confirm has not been seen yet.
struct Pending {
    confirm: PublisherConfirm,
    subject: Subject,
}

#[derive(Default)]
struct Window {
    pending: VecDeque<Pending>,
    /// Failures seen while making room in the window, reported by the next flush.
    failures: Vec<String>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) exchange: ShortString,
    session: Mutex<Option<Arc<Session>>>,
    /// Held while (re)connecting, so one task reconnects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    window: tokio::sync::Mutex<Window>,
    /// The connection's state, for `Broker::status`; also told by each
    /// connection's event watcher when lapin gives the connection up.
    link: Arc<Link>,
}

impl Inner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// The current session without checking it is alive (publish's fast path:
    /// `basic_publish` fails on a dead channel, and the retry checks).
    fn current_unchecked(&self) -> Option<Arc<Session>> {
        let guard = match self.session.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone()
    }

    fn current(&self) -> Option<Arc<Session>> {
        let guard = match self.session.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.as_ref().filter(|s| s.alive()).cloned()
    }

    /// The live session, connecting again if the last one was lost.
    pub(crate) async fn session(&self) -> Result<Arc<Session>> {
        if self.is_closed() {
            return Err(Error::Closed { broker: BROKER });
        }
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.current() {
            return Ok(session);
        }
        if self.is_closed() {
            return Err(Error::Closed { broker: BROKER });
        }
        let stale = {
            let mut guard = match self.session.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.take()
        };
        if stale.is_some() {
            self.link
                .lost("the AMQP connection or its publishing channel closed");
        }
        // The connection may be alive with only the publishing channel gone.
        let session = match stale {
            Some(stale) if stale.connection.status().connected() => {
                let connection = stale.connection.clone();
                let publisher = open_publisher(&self.config, &connection).await?;
                Session {
                    connection,
                    publisher,
                }
            }
            _ => open_session(&self.config, &self.link).await?,
        };
        let session = Arc::new(session);
        if self.is_closed() {
            let _ = session.connection.close(200, "OK".into()).await;
            return Err(Error::Closed { broker: BROKER });
        }
        let mut guard = match self.session.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(session.clone());
        drop(guard);
        self.link.restored();
        Ok(session)
    }

    fn take_session(&self) -> Option<Arc<Session>> {
        let mut guard = match self.session.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.take()
    }
}

/// Connects with a bounded time, opens the publishing channel and checks the
/// exchange. `link` hears when lapin gives the connection up (a missed
/// heartbeat, a reset), at once rather than at the next publish.
async fn open_session(config: &Config, link: &Arc<Link>) -> Result<Session> {
    let timeout = config.options.connect_timeout;
    let name = config
        .options
        .connection_name
        .clone()
        .unwrap_or_else(|| "switchboard".to_string());
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connect = crate::tls::connect(config.uri.clone(), config.tls.clone(), properties);
    let connection = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return Err(connect_error(config, error)),
        Err(_) => {
            return Err(config.connect_error(
                ConnectKind::Timeout,
                format!(
                    "no AMQP answer from {} within {timeout:?}; check the host and port, that RabbitMQ is running and reachable, and for amqps:// that the port speaks TLS",
                    config.address()
                ),
                None,
            ))
        }
    };
    watch_connection(&connection, link);
    let publisher = match tokio::time::timeout(timeout, open_publisher(config, &connection)).await {
        Ok(result) => result,
        Err(_) => Err(config.connect_error(
            ConnectKind::Timeout,
            format!("the broker did not open a channel within {timeout:?}"),
            None,
        )),
    };
    match publisher {
        Ok(publisher) => Ok(Session {
            connection: Arc::new(connection),
            publisher,
        }),
        Err(error) => {
            let _ = connection.close(200, "OK".into()).await;
            Err(error)
        }
    }
}

/// Tells `link` when lapin reports the connection failed. The task ends with
/// the connection (its event stream ends when lapin drops it).
fn watch_connection(connection: &Connection, link: &Arc<Link>) {
    let mut events = connection.events_listener();
    let status = connection.status().clone();
    let link = Arc::downgrade(link);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let lapin::Event::Error(error) = event else {
                continue;
            };
            // A channel's error (a subscription's queue deleted, say) is not
            // the connection's.
            if status.connected() {
                continue;
            }
            match link.upgrade() {
                Some(link) => {
                    link.lost(error);
                }
                None => return,
            }
        }
    });
}

/// Opens a channel in confirm mode and makes sure the exchange exists.
async fn open_publisher(config: &Config, connection: &Connection) -> Result<Channel> {
    let channel_error = |error: lapin::Error| {
        config.connect_error(
            ConnectKind::Other,
            "cannot open a channel",
            Some(ClientError::boxed(error)),
        )
    };
    let channel = connection.create_channel().await.map_err(channel_error)?;
    let exchange = config.options.exchange.as_str();
    let reserved = exchange.starts_with("amq.");
    let options = ExchangeDeclareOptions {
        // `amq.*` exchanges exist already and cannot be declared: only check them.
        passive: reserved,
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|error| {
            let (kind, reason) = match amqp_error(&error) {
                Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) => (ConnectKind::Protocol, format!(
                    "exchange `{exchange}` does not exist; names starting with amq. are reserved, use amq.topic or another name switchboard can declare"
                )),
                Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) => (ConnectKind::Protocol, format!(
                    "exchange `{exchange}` exists but is not a durable topic exchange; switchboard needs a topic exchange, use another ?exchange="
                )),
                Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => (ConnectKind::Auth, format!(
                    "user `{}` may not declare exchange `{exchange}`; grant configure permission or use amq.topic",
                    config.uri.authority.userinfo.username
                )),
                _ => (ConnectKind::Other, format!("cannot declare exchange `{exchange}`")),
            };
            config.connect_error(kind, reason, Some(ClientError::boxed(error)))
        })?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(channel_error)?;
    Ok(channel)
}

impl AmqpBroker {
    /// Connects to `url` (see the [crate docs](crate) for its forms and query
    /// parameters), with `options` as defaults for what the URL does not set.
    pub async fn connect_with(url: &str, options: AmqpOptions) -> Result<AmqpBroker> {
        let config = Config::parse(url, options)?;
        let exchange = ShortString::try_new(config.options.exchange.clone())
            .map_err(|_| Error::invalid_url(url, "the exchange name is longer than 255 bytes"))?;
        let link = Arc::new(Link::new(BROKER));
        let session = open_session(&config, &link).await?;
        let (closed_tx, _) = watch::channel(false);
        Ok(AmqpBroker {
            inner: Arc::new(Inner {
                config,
                exchange,
                session: Mutex::new(Some(Arc::new(session))),
                connecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                closed_tx,
                window: tokio::sync::Mutex::new(Window::default()),
                link,
            }),
        })
    }

    /// The options in effect (the URL's query parameters applied).
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.config.options
    }

    /// Awaits every confirm in the window; failures as one error.
    ///
    /// Bounded by the flush timeout: what is not confirmed by then goes back
    /// to the window (ahead of later publishes), with the failures seen so
    /// far, for the next flush.
    async fn drain(&self) -> Result<()> {
        let after = self.inner.config.options.flush_timeout;
        let deadline = tokio::time::Instant::now() + after;
        let (mut pending, mut failures) = {
            let mut window = self.inner.window.lock().await;
            (
                std::mem::take(&mut window.pending),
                std::mem::take(&mut window.failures),
            )
        };
        while let Some(mut next) = pending.pop_front() {
            match tokio::time::timeout_at(deadline, &mut next.confirm).await {
                Ok(outcome) => failures.extend(failure(&next.subject, outcome)),
                Err(_) => {
                    pending.push_front(next);
                    let mut window = self.inner.window.lock().await;
                    while let Some(unconfirmed) = pending.pop_back() {
                        window.pending.push_front(unconfirmed);
                    }
                    failures.append(&mut window.failures);
                    window.failures = failures;
                    return Err(Error::Timeout {
                        broker: BROKER,
                        operation: "flush".to_string(),
                        after,
                    });
                }
            }
        }
        match failures.len() {
            0 => Ok(()),
            n => Err(Error::Flush {
                broker: BROKER,
                reason: format!(
                    "{n} message(s) not confirmed by the broker; first: {}",
                    failures[0]
                ),
                source: None,
            }),
        }
    }

    async fn publish_once(&self, message: &Message, retry: bool) -> Result<PublisherConfirm> {
        let publish_error =
            |reason: String, source: Option<switchboard_core::BoxError>| Error::Publish {
                broker: BROKER,
                subject: message.subject().to_string(),
                reason,
                source,
            };
        let session = match self.inner.current_unchecked().filter(|_| !retry) {
            Some(session) => Ok(session),
            None => self.inner.session().await,
        };
        let session = match session {
            Ok(session) => session,
            Err(Error::Closed { broker }) => return Err(Error::Closed { broker }),
            Err(error) => {
                return Err(publish_error(
                    "not connected, and reconnecting failed".to_string(),
                    Some(Box::new(error)),
                ))
            }
        };
        // Subjects are at most 255 bytes (core validates), so this cannot fail.
        let routing_key = ShortString::try_new(message.subject().as_str())
            .map_err(|_| publish_error("the subject is longer than 255 bytes".to_string(), None))?;
        let mut properties = BasicProperties::default();
        if let Some(headers) = wire::to_field_table(message.headers()) {
            properties = properties.with_headers(headers);
        }
        session
            .publisher
            .basic_publish(
                self.inner.exchange.clone(),
                routing_key,
                BasicPublishOptions::default(),
                message.payload(),
                properties,
            )
            .await
            .map_err(|error| {
                publish_error(
                    format!("the connection to {} failed", self.inner.config.redacted),
                    Some(ClientError::boxed(error)),
                )
            })
    }
}

/// The outcome of one confirm: `None` when acked, else what went wrong.
async fn settle(pending: Pending) -> Option<String> {
    failure(&pending.subject, pending.confirm.await)
}

/// What went wrong with the message to `subject`, given its confirm; `None` when acked.
fn failure(subject: &Subject, outcome: lapin::Result<Confirmation>) -> Option<String> {
    match outcome {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => None,
        Ok(Confirmation::Ack(Some(returned))) => Some(format!(
            "message to {:?} was returned: {}",
            subject.as_str(),
            returned.reply_text
        )),
        Ok(Confirmation::Nack(_)) => Some(format!(
            "message to {:?} was nacked (the broker could not take it)",
            subject.as_str()
        )),
        Err(error) => Some(format!(
            "message to {:?}: the connection or channel failed before the broker confirmed it ({error}); it may or may not have been delivered",
            subject.as_str()
        )),
    }
}

#[async_trait]
impl Publisher for AmqpBroker {
    async fn publish(&self, message: Message) -> Result<()> {
        if self.inner.is_closed() {
            return Err(Error::Closed { broker: BROKER });
        }
        let max = self.inner.config.options.max_payload;
        if message.payload().len() > max {
            return Err(Error::PayloadTooLarge {
                broker: BROKER,
                subject: message.subject().to_string(),
                size: message.payload().len(),
                max,
            });
        }
        let confirm = match self.publish_once(&message, false).await {
            Ok(confirm) => confirm,
            Err(Error::Closed { broker }) => return Err(Error::Closed { broker }),
            Err(first) => {
                // The connection or channel was lost before the message was
                // handed over: reconnect (once) and try again.
                tracing::debug!(%first, "AMQP publish failed, reconnecting once");
                self.publish_once(&message, true).await?
            }
        };
        let mut window = self.inner.window.lock().await;
        window.pending.push_back(Pending {
            confirm,
            subject: message.subject().clone(),
        });
        while window.pending.len() > self.inner.config.options.confirm_window {
            if let Some(oldest) = window.pending.pop_front() {
                if let Some(failure) = settle(oldest).await {
                    window.failures.push(failure);
                }
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.drain().await
    }
}

#[async_trait]
impl Subscriber for AmqpBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        subscription::subscribe(self.inner.clone(), pattern.clone(), None).await
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        subscription::subscribe(self.inner.clone(), pattern.clone(), Some(group.clone())).await
    }

    async fn subscribe_durable(
        &self,
        _pattern: &Pattern,
        _durable: &Durable,
    ) -> Result<Subscription> {
        Err(Error::unsupported(
            BROKER,
            "durable subscriptions (not yet)",
        ))
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn kind(&self) -> &'static str {
        BROKER
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
        capabilities.max_payload = Some(self.inner.config.options.max_payload);
        capabilities
    }

    async fn request(&self, message: Message, _timeout: Duration) -> Result<Message> {
        Err(Error::unsupported(
            BROKER,
            format!(
                "request/reply (a request on {:?}; not yet)",
                message.subject().as_str()
            ),
        ))
    }

    fn status(&self) -> ConnectionStatus {
        self.inner.link.status()
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.link.close();
        let flushed = self.drain().await;
        self.inner.closed_tx.send_replace(true);
        // Wait for a reconnect in progress to finish (it sees `closed`).
        let _connecting = self.inner.connecting.lock().await;
        if let Some(session) = self.inner.take_session() {
            if session.connection.status().connected() {
                if let Err(error) = session.connection.close(200, "OK".into()).await {
                    tracing::debug!(%error, "closing the AMQP connection");
                }
            }
        }
        flushed
    }
}
