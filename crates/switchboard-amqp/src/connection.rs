//! The connection: one live [`Session`] (an AMQP connection and its
//! confirm-mode publishing channel) at a time, opened within the connect
//! timeout, watched for loss, and opened again when it was lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use switchboard_core::{ConnectKind, Error, Link, Result};
use tokio::sync::watch;

use crate::error::{connect_error, exchange_error, ClientError};
use crate::options::{Config, DEFAULT_NAME};
use crate::KIND;

/// One live connection and its publishing channel.
pub(crate) struct Session {
    pub(crate) connection: Arc<Connection>,
    pub(crate) publisher: Channel,
    /// The channels fan-out subscriptions share on this connection (see
    /// [`crate::subscription`]), opened as they are needed.
    pub(crate) shared: tokio::sync::Mutex<Vec<SharedChannel>>,
}

/// A channel several fan-out consumers share, and how many consume on it.
pub(crate) struct SharedChannel {
    pub(crate) channel: Channel,
    pub(crate) consumers: Arc<std::sync::atomic::AtomicUsize>,
}

impl Session {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// A broker handle's connection, shared by its clones and subscriptions:
/// the live session, replaced after a loss by whoever needs it first.
pub(crate) struct Sessions {
    pub(crate) config: Config,
    pub(crate) exchange: ShortString,
    session: Mutex<Option<Arc<Session>>>,
    /// Held while (re)connecting, so one task reconnects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    /// The connection's state, for `Broker::status`; also told by each
    /// connection's event watcher when lapin gives the connection up.
    pub(crate) link: Arc<Link>,
}

impl Sessions {
    /// Opens the first session: fails, saying why, if the broker cannot be
    /// reached or refuses.
    pub(crate) async fn open(config: Config) -> Result<Sessions> {
        let exchange = ShortString::try_new(config.options.exchange.clone()).map_err(|_| {
            Error::invalid_url(
                &config.redacted,
                "the exchange name is longer than 255 bytes",
            )
        })?;
        let link = Arc::new(Link::new(KIND));
        let session = open_session(&config, &link).await?;
        Ok(Sessions {
            config,
            exchange,
            session: Mutex::new(Some(Arc::new(session))),
            connecting: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            closed_tx: watch::Sender::new(false),
            link,
        })
    }

    /// Whether the broker handle was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the handle closed; `false` if it was already.
    pub(crate) fn set_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Tells every subscription the handle is closed.
    pub(crate) fn announce_closed(&self) {
        self.closed_tx.send_replace(true);
    }

    /// Waits for a reconnect in progress to finish (it sees `closed`), then
    /// closes the live connection, waiting at most until `deadline` for the
    /// broker's answer (a frozen link never answers).
    pub(crate) async fn close(&self, deadline: tokio::time::Instant) {
        let _connecting = tokio::time::timeout_at(deadline, self.connecting.lock()).await;
        let Some(session) = self.take_session() else {
            return;
        };
        if !session.connection.status().connected() {
            return;
        }
        close_by(&session.connection, deadline).await;
    }

    /// Becomes `true` when the broker handle is closed, for subscriptions.
    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// The current session without checking it is alive (publish's fast path:
    /// `basic_publish` fails on a dead channel, and the retry checks).
    /// The live connection's negotiated `frame_max`; RabbitMQ's default
    /// (131,072) while there is none.
    pub(crate) fn frame_max(&self) -> u32 {
        self.current_unchecked().map_or(131_072, |session| {
            session.connection.configuration().frame_max()
        })
    }

    pub(crate) fn current_unchecked(&self) -> Option<Arc<Session>> {
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
            return Err(Error::Closed { broker: KIND });
        }
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.current() {
            return Ok(session);
        }
        if self.is_closed() {
            return Err(Error::Closed { broker: KIND });
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
        let reopened = match stale {
            Some(stale) if stale.connection.status().connected() => {
                reopen_publisher(&self.config, stale.connection.clone()).await?
            }
            _ => None,
        };
        let session = match reopened {
            Some(session) => session,
            None => open_session(&self.config, &self.link)
                .await
                .inspect_err(|error| self.link.attempt_failed(error, !error.is_temporary()))?,
        };
        let session = Arc::new(session);
        if self.is_closed() {
            close_within(&session.connection, self.config.options.connect_timeout).await;
            return Err(Error::Closed { broker: KIND });
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
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME.to_string());
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connect = crate::tls::connect(
        config.uri.clone(),
        config.hosts.clone(),
        config.tls.clone(),
        properties,
    );
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
            shared: tokio::sync::Mutex::default(),
        }),
        Err(error) => {
            close_within(&connection, timeout).await;
            Err(error)
        }
    }
}

/// A new publishing channel on a connection that still says it is up, as a
/// session; `Ok(None)` (the connection closed, at most `connect_timeout`
/// later) if the channel does not open within `connect_timeout`.
///
/// Bounded because this runs while every other caller of
/// [`Sessions::session`] waits for it (subscriptions resubscribing
/// included): lapin can report a connection up that no longer answers (a
/// node killed, a link gone quiet, before a heartbeat is missed).
async fn reopen_publisher(config: &Config, connection: Arc<Connection>) -> Result<Option<Session>> {
    let timeout = config.options.connect_timeout;
    match tokio::time::timeout(timeout, open_publisher(config, &connection)).await {
        Ok(publisher) => Ok(Some(Session {
            connection,
            publisher: publisher?,
            shared: tokio::sync::Mutex::default(),
        })),
        Err(_) => {
            tracing::debug!(
                "amqp: the connection did not open a channel within {timeout:?}; connecting again"
            );
            close_within(&connection, timeout).await;
            Ok(None)
        }
    }
}

/// Closes `connection`, waiting until `deadline` at most for the broker's
/// answer: a frozen link, or a killed node lapin has not noticed yet, never
/// answers, and an unbounded wait here held up closing and reconnecting.
async fn close_by(connection: &Connection, deadline: tokio::time::Instant) {
    match tokio::time::timeout_at(deadline, connection.close(200, "OK".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the AMQP connection"),
        Err(_) => tracing::debug!(
            "amqp: the broker did not confirm closing the connection in time; dropping it"
        ),
    }
}

/// [`close_by`] `within` from now.
async fn close_within(connection: &Connection, within: Duration) {
    close_by(connection, tokio::time::Instant::now() + within).await;
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
        .map_err(|error| exchange_error(config, exchange, error))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(channel_error)?;
    Ok(channel)
}
