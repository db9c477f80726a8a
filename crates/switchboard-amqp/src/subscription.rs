//! Subscriptions: a queue bound to the exchange and a consumer, re-declared
//! after a lost connection.
//!
//! A fan-out subscription's consumer shares a channel with up to
//! [`CONSUMERS_PER_CHANNEL`] others (RabbitMQ allows 2,047 channels per
//! connection by default, so a channel each would end a connection's
//! subscriptions there). Sharing is safe for them: acks and nacks name their
//! own delivery tag, the prefetch is per consumer (`basic.qos` without
//! `global`), unsubscribing cancels the consumer rather than closing the
//! channel, and what could fail on the server — declaring and binding the
//! queue — is done on a channel of its own that is then closed, so a refused
//! declare ends no neighbour. Consuming a queue this connection just declared
//! exclusively cannot be refused. Queue group and durable subscriptions keep a
//! channel each: their queues are shared with other connections (a consume
//! can be refused, which closes the channel) and they are the ones whose
//! acks and requeues matter most.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, Channel, Consumer};
use std::time::Duration;
use switchboard_core::{
    async_trait, Acknowledge, Attempts, Bytes, Delivery, Durable, Error, Headers, Message, Pattern,
    QueueGroup, Result, Subject, Subscription, SubscriptionLink,
};
use tokio::sync::watch;

use crate::connection::{Session, Sessions, SharedChannel};
use crate::error::{amqp_error, declare_error};
use crate::request::AmqpReply;
use crate::{wire, KIND};

/// The prefix of a queue group's queue name: `switchboard.group.<group>@<exchange>`.
pub const GROUP_QUEUE_PREFIX: &str = "switchboard.group.";

/// The prefix of a durable consumer's queue name: `switchboard.durable.<consumer>@<exchange>`.
pub const DURABLE_QUEUE_PREFIX: &str = "switchboard.durable.";

/// What to declare, bind and consume, again after every reconnect.
struct Topology {
    pattern: Pattern,
    binding: ShortString,
    /// The shared queue of a group; `None` for a server-named exclusive queue.
    group_queue: Option<ShortString>,
    /// The quorum queue of a durable consumer, instead.
    durable: Option<DurableQueue>,
}

/// A durable consumer's queue: a quorum queue (it stores every message it
/// takes and counts deliveries), with the delivery limit.
struct DurableQueue {
    name: ShortString,
    arguments: FieldTable,
    ack_wait: Duration,
}

/// Whether AMQP topic binding key `binding` matches `routing_key`: `*` is
/// one word, `#` zero or more.
fn binding_matches(binding: &str, routing_key: &str) -> bool {
    fn words(binding: &[&str], key: &[&str]) -> bool {
        match (binding.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => {
                words(rest, key)
                    || key
                        .split_first()
                        .is_some_and(|(_, tail)| words(binding, tail))
            }
            (Some((&word, rest)), Some((&first, tail))) => {
                (word == "*" || word == first) && words(rest, tail)
            }
            _ => false,
        }
    }
    let binding: Vec<&str> = binding.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    words(&binding, &key)
}

/// The queue name of durable consumer `durable` on `exchange`.
pub(crate) fn durable_queue_name(durable: &Durable, exchange: &str) -> Result<ShortString> {
    ShortString::try_new(format!(
        "{DURABLE_QUEUE_PREFIX}{}@{exchange}",
        durable.consumer()
    ))
    .map_err(|_| Error::InvalidDurable {
        name: durable.consumer().to_string(),
        reason: "with the exchange name, the AMQP queue name would be longer than 255 bytes; use a shorter name".to_string(),
    })
}

/// Subscribes to durable consumer `durable` over `pattern`: its quorum
/// queue, declared (durable) and bound if missing.
pub(crate) async fn subscribe_durable(
    inner: Arc<Sessions>,
    pattern: Pattern,
    durable: &Durable,
) -> Result<Subscription> {
    if inner.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    let name = durable_queue_name(durable, inner.config.options.exchange.as_str())?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(max) = durable.max_deliver {
        // The count of returns after which the queue drops the message:
        // `max` deliveries are `max - 1` returns.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(max.saturating_sub(1))),
        );
    }
    let topology = Topology {
        pattern: pattern.clone(),
        binding: wire::binding_key(&pattern)?,
        group_queue: None,
        durable: Some(DurableQueue {
            name,
            arguments,
            ack_wait: durable.ack_wait,
        }),
    };
    consume(inner, topology, None).await
}

/// How many fan-out consumers share one channel.
pub(crate) const CONSUMERS_PER_CHANNEL: usize = 64;

/// The channel a subscription currently consumes on, for an explicit close.
type Current = Arc<Mutex<Option<Held>>>;

/// A subscription's hold on its channel.
enum Held {
    /// A channel of its own (queue groups, durable consumers): closing it
    /// cancels the consumer and requeues what is unacknowledged.
    Own(Channel),
    /// A place on a shared channel: unsubscribing cancels the consumer
    /// `tag`; the lease gives the place back when dropped.
    Shared {
        channel: Channel,
        tag: ShortString,
        _lease: Lease,
    },
}

/// One consumer's place on a shared channel, given back on drop.
struct Lease(Arc<AtomicUsize>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts a consumer of `queue` on `channel`, with manual acks and the tag
/// `tag` (from [`consumer_tag`]): the same whether the channel is the
/// subscription's own or shared with other fan-out subscriptions.
async fn start_consumer(
    channel: &Channel,
    queue: ShortString,
    tag: ShortString,
) -> lapin::Result<Consumer> {
    channel
        .basic_consume(
            queue,
            tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Consumer tags this process chose, unique on every channel.
static CONSUMER_TAGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh consumer tag: chosen here rather than by the server, so a
/// consumer whose `basic.consume` is given up can be cancelled by its tag
/// before its `consume-ok` arrived (see [`Opened`]).
fn consumer_tag() -> ShortString {
    let n = CONSUMER_TAGS.fetch_add(1, Ordering::Relaxed);
    ShortString::from(format!("switchboard-{}-{n}", std::process::id()))
}

/// What a declaring attempt has opened so far, to undo when the attempt is
/// given up (timed out). lapin keeps a consumer whose `basic.consume` is
/// answered after its caller stopped waiting: registered on its channel
/// (which it keeps open) and never read, it holds `prefetch` messages
/// unacknowledged for as long as the connection lives, and the queue
/// alternates deliveries between it and the consumer the retry makes. The
/// likely cause of what a 3-node RabbitMQ cluster drill showed
/// (`tests/cluster.rs`): 256 messages (the prefetch, every other sequence
/// number) never reached the durable consumer after a node was killed, when
/// a quorum queue's `basic.consume` can outlive the timeout (the timeout
/// itself was not logged in that run).
#[derive(Default)]
struct Opened {
    /// The attempt's own channel: closed, which cancels its consumer.
    own: Option<Channel>,
    /// A shared channel and the tag of the consumer started on it: cancelled.
    shared: Option<(Channel, ShortString)>,
}

impl Opened {
    /// Undoes what the given-up attempt opened, in the background (the
    /// server answers in order, after the `basic.consume` it may still be
    /// working on).
    fn undo(slot: &Mutex<Opened>) {
        let opened = match slot.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(channel) = opened.own {
            runtime.spawn(async move {
                if let Err(error) = channel.close(200, "declaring timed out".into()).await {
                    tracing::debug!(%error, "closing the channel of a timed-out AMQP declare");
                }
            });
        }
        if let Some((channel, tag)) = opened.shared {
            runtime.spawn(async move {
                if let Err(error) = channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await
                {
                    tracing::debug!(%error, "cancelling the consumer of a timed-out AMQP declare");
                }
            });
        }
    }
}

/// A place on one of the session's shared channels: the first live one
/// with room, else a new one (with the prefetch set per consumer).
async fn lease(session: &Session, prefetch: u16) -> lapin::Result<(Channel, Lease)> {
    let mut shared = session.shared.lock().await;
    shared.retain(|entry| entry.channel.status().connected());
    for entry in shared.iter() {
        let taken = entry.consumers.fetch_add(1, Ordering::AcqRel);
        if taken < CONSUMERS_PER_CHANNEL {
            return Ok((entry.channel.clone(), Lease(entry.consumers.clone())));
        }
        entry.consumers.fetch_sub(1, Ordering::AcqRel);
    }
    let channel = session.connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumers = Arc::new(AtomicUsize::new(1));
    shared.push(SharedChannel {
        channel: channel.clone(),
        consumers: consumers.clone(),
    });
    Ok((channel, Lease(consumers)))
}

fn set_current(current: &Current, channel: Option<Held>) {
    let mut guard = match current.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    *guard = channel;
}

pub(crate) async fn subscribe(
    inner: Arc<Sessions>,
    pattern: Pattern,
    group: Option<QueueGroup>,
) -> Result<Subscription> {
    if inner.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    let binding = wire::binding_key(&pattern)?;
    let group_queue = match &group {
        None => None,
        Some(group) => Some(
            ShortString::try_new(format!(
                "{GROUP_QUEUE_PREFIX}{group}@{}",
                inner.config.options.exchange
            ))
            .map_err(|_| Error::InvalidGroup {
                group: group.to_string(),
                reason: "with the exchange name, the AMQP queue name would be longer than 255 bytes; use a shorter group name".to_string(),
            })?,
        ),
    };
    let topology = Topology {
        pattern: pattern.clone(),
        binding,
        group_queue,
        durable: None,
    };
    consume(inner, topology, group).await
}

/// Declares `topology` and consumes from it.
async fn consume(
    inner: Arc<Sessions>,
    topology: Topology,
    group: Option<QueueGroup>,
) -> Result<Subscription> {
    let pattern = topology.pattern.clone();
    let current: Current = Arc::default();
    let consumer = declare(&inner, &topology, &current)
        .await
        .map_err(|error| match error {
            Error::Closed { .. } | Error::Subscribe { .. } => error,
            error => Error::Subscribe {
                broker: KIND,
                pattern: pattern.to_string(),
                reason: "not connected, and connecting failed".to_string(),
                source: Some(Box::new(error)),
            },
        })?;
    let backoff = inner.config.options.reconnect_backoff.attempts();
    let state = State {
        closed: inner.closed_signal(),
        link: SubscriptionLink::new(KIND, &pattern),
        inner,
        topology,
        consumer: Some(consumer),
        current: current.clone(),
        backoff,
        dropped_unsettled: Arc::default(),
        ended: false,
        foreign: AtomicBool::new(false),
    };
    let close_timeout = state.inner.config.options.flush_timeout;
    let stream = futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    });
    let closing = pattern.clone();
    Ok(
        Subscription::new(pattern, group, stream).with_close(move || {
            Box::pin(async move {
                let channel = {
                    let mut guard = match current.lock() {
                        Ok(g) => g,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    guard.take()
                };
                let closing_channel = match channel {
                    Some(Held::Own(channel)) if channel.status().connected() => {
                        // Closing the channel cancels the consumer; the server
                        // requeues what was delivered and not acknowledged.
                        async move { channel.close(200, "OK".into()).await }.boxed()
                    }
                    Some(Held::Shared {
                        channel,
                        tag,
                        _lease,
                    }) if channel.status().connected() => {
                        // Only this consumer goes; its exclusive queue is
                        // deleted with it (auto-delete), so what it had
                        // unacknowledged goes too, as with a closed channel.
                        async move {
                            let cancelled = channel
                                .basic_cancel(tag, BasicCancelOptions::default())
                                .await;
                            drop(_lease);
                            cancelled
                        }
                        .boxed()
                    }
                    _ => return Ok(()),
                };
                // A frozen link never confirms: the wait is bounded, as on every broker.
                match tokio::time::timeout(close_timeout, closing_channel).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "closing a subscription's AMQP channel");
                        Ok(())
                    }
                    Err(_) => Err(Error::Timeout {
                        broker: KIND,
                        operation: format!("unsubscribing from {:?}", closing.as_str()),
                        after: close_timeout,
                    }),
                }
            })
        }),
    )
}

/// Opens a channel, sets the prefetch, declares and binds the queue and starts
/// consuming; resolves once the server confirmed each step.
async fn declare(inner: &Sessions, topology: &Topology, current: &Current) -> Result<Consumer> {
    let timeout = inner.config.options.connect_timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let session = inner.session().await?;
        let opened = Mutex::new(Opened::default());
        let steps = async {
            let fanout = topology.durable.is_none() && topology.group_queue.is_none();
            let channel = session.connection.create_channel().await?;
            if let Ok(mut opened) = opened.lock() {
                opened.own = Some(channel.clone());
            }
            if !fanout {
                channel
                    .basic_qos(inner.config.options.prefetch, BasicQosOptions::default())
                    .await?;
            }
            let queue = match (&topology.durable, &topology.group_queue) {
                (Some(durable), _) => {
                    let options = QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    };
                    channel
                        .queue_declare(durable.name.clone(), options, durable.arguments.clone())
                        .await?;
                    durable.name.clone()
                }
                (None, None) => {
                    let options = QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    };
                    channel
                        .queue_declare("".into(), options, FieldTable::default())
                        .await?
                        .name()
                        .clone()
                }
                (None, Some(name)) => {
                    let options = QueueDeclareOptions {
                        auto_delete: true,
                        ..Default::default()
                    };
                    channel
                        .queue_declare(name.clone(), options, FieldTable::default())
                        .await?;
                    name.clone()
                }
            };
            channel
                .queue_bind(
                    queue.clone(),
                    inner.exchange.clone(),
                    topology.binding.clone(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            if !fanout {
                let consumer = start_consumer(&channel, queue, consumer_tag()).await?;
                return Ok::<_, lapin::Error>((Held::Own(channel), consumer));
            }
            // The declaring channel has done its part; closing it (in the
            // background: its queue is this connection's) costs no round trip.
            if let Ok(mut opened) = opened.lock() {
                opened.own = None;
            }
            drop(channel);
            let (shared, lease) = lease(&session, inner.config.options.prefetch).await?;
            let tag = consumer_tag();
            if let Ok(mut opened) = opened.lock() {
                opened.shared = Some((shared.clone(), tag.clone()));
            }
            let consumer = start_consumer(&shared, queue, tag).await?;
            let held = Held::Shared {
                channel: shared,
                tag: consumer.tag(),
                _lease: lease,
            };
            Ok((held, consumer))
        };
        let error = match tokio::time::timeout(timeout, steps).await {
            Ok(Ok((channel, consumer))) => {
                set_current(current, Some(channel));
                return Ok(consumer);
            }
            Ok(Err(error)) => error,
            Err(_) => {
                Opened::undo(&opened);
                return Err(Error::Timeout {
                    broker: KIND,
                    operation: format!(
                        "declaring and binding the queue for {:?}",
                        topology.pattern.as_str()
                    ),
                    after: timeout,
                });
            }
        };
        // A group's auto-delete queue can vanish between declare and consume
        // when its last other member leaves at that moment: declare again.
        let vanished = matches!(
            amqp_error(&error),
            Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
        );
        if vanished && attempt < 3 {
            continue;
        }
        return Err(declare_error(
            &inner.config,
            topology.pattern.as_str(),
            error,
        ));
    }
}

struct State {
    inner: Arc<Sessions>,
    topology: Topology,
    consumer: Option<Consumer>,
    current: Current,
    closed: watch::Receiver<bool>,
    backoff: Attempts,
    /// Set once a delivery of this subscription was dropped unsettled (warned once).
    dropped_unsettled: Arc<AtomicBool>,
    /// The subscription's outages, for the one "resubscribed" log line.
    link: SubscriptionLink,
    /// Set once the durable consumer's queue was found deleted: the stream
    /// ends, as it does on the other brokers when a consumer is removed.
    ended: bool,
    /// Set once a delivery came through another binding of its queue (warned once).
    foreign: AtomicBool,
}

impl State {
    async fn next_item(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.inner.is_closed() || self.ended {
                return None;
            }
            let Some(consumer) = self.consumer.as_mut() else {
                self.resubscribe().await?;
                continue;
            };
            let reason = match consumer.next().await {
                Some(Ok(delivery)) => {
                    if let Some(item) = self.convert(delivery) {
                        return Some(item);
                    }
                    continue;
                }
                Some(Err(error)) => error.to_string(),
                None => "the broker cancelled the consumer (was the queue deleted?)".to_string(),
            };
            self.consumer = None;
            set_current(&self.current, None);
            if self.inner.is_closed() {
                return None;
            }
            if let Some(queue) = self.removed_durable_queue().await {
                // Declared again, it would store every matching message
                // for a consumer its operator retired.
                self.ended = true;
                return Some(Err(Error::Subscribe {
                    broker: KIND,
                    pattern: self.topology.pattern.to_string(),
                    reason: format!(
                        "the durable consumer's queue {queue:?} was deleted (switchboard remove-durable, or by hand); the subscription ends"
                    ),
                    source: None,
                }));
            }
            self.link.lost(&reason);
            // A durable consumer's queue keeps what arrives meanwhile.
            let meanwhile = if self.topology.durable.is_some() {
                "what was not acknowledged is delivered again"
            } else {
                "messages published until it is back may be missed"
            };
            return Some(Err(Error::Disconnected {
                broker: KIND,
                reason: format!(
                    "the subscription to '{}' lost its channel ({reason}); resubscribing, {meanwhile}",
                    self.topology.pattern
                ),
            }));
        }
    }

    /// After the broker cancelled the consumer: the durable queue's name if
    /// that queue no longer exists (a passive declare answers 404), `None`
    /// otherwise or when it cannot tell (then the subscription resubscribes
    /// as after any lost channel).
    async fn removed_durable_queue(&self) -> Option<String> {
        let durable = self.topology.durable.as_ref()?;
        let session = self.inner.session().await.ok()?;
        let checking = async {
            let channel = session.connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    durable.name.clone(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            // A refused passive declare has closed the channel already.
            if declared.is_ok() {
                let _ = channel.close(200, "OK".into()).await;
            }
            Ok::<_, lapin::Error>(declared)
        };
        let timeout = self.inner.config.options.flush_timeout;
        match tokio::time::timeout(timeout, checking).await {
            Ok(Ok(Err(error)))
                if matches!(
                    amqp_error(&error),
                    Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
                ) =>
            {
                Some(durable.name.to_string())
            }
            _ => None,
        }
    }

    /// Declares the topology again, with backoff; `None` once the broker is closed.
    async fn resubscribe(&mut self) -> Option<()> {
        loop {
            let delay = match declare(&self.inner, &self.topology, &self.current).await {
                Ok(consumer) => {
                    self.link.resubscribed();
                    self.consumer = Some(consumer);
                    self.backoff.succeeded();
                    return Some(());
                }
                Err(Error::Closed { .. }) => return None,
                Err(error) => {
                    let delay = self.backoff.failed();
                    self.link.retry_failed(&error, delay, !error.is_temporary());
                    delay
                }
            };
            let sleep = tokio::time::sleep(delay);
            tokio::select! {
                _ = sleep => {}
                _ = self.closed.wait_for(|closed| *closed) => return None,
            }
        }
    }

    /// The item for a delivery: the delivery itself; an
    /// [`Error::InvalidSubject`] for a routing key that is not a valid subject
    /// (a plain client can publish with any key), the message being rejected
    /// so a dead-letter exchange can keep it; or `None` (acknowledged and
    /// skipped) for a valid subject the pattern does not match (a binding key
    /// is wider than a pattern: a literal `#` token is a wildcard to AMQP).
    fn convert(&self, delivery: lapin::message::Delivery) -> Option<Result<Delivery>> {
        let lapin::message::Delivery {
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let subject = match Subject::new(routing_key.as_str()) {
            Ok(subject) if self.topology.pattern.matches(subject.as_str()) => subject,
            Ok(_) => {
                tracing::trace!(
                    routing_key = routing_key.as_str(),
                    "skipping a delivery the pattern does not match"
                );
                // Not even this queue's own binding matches it: the queue is
                // bound twice, which is a durable name (or group) used with
                // two patterns; each of them drops the other's messages.
                let own = binding_matches(self.topology.binding.as_str(), routing_key.as_str());
                if !own
                    && self.topology.durable.is_some()
                    && !self.foreign.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        pattern = %self.topology.pattern,
                        routing_key = routing_key.as_str(),
                        "amqp: a message for another pattern reached this durable consumer's queue, and was dropped: on RabbitMQ a durable name is one queue whatever the pattern, so a name used with two patterns makes each drop the other's messages; give each pattern a durable name of its own (and remove-durable the shared one)"
                    );
                }
                let _ = acker.ack(BasicAckOptions::default()).now_or_never();
                return None;
            }
            Err(error) => {
                let reject = BasicNackOptions {
                    requeue: false,
                    multiple: false,
                };
                let _ = acker.nack(reject).now_or_never();
                let why = match error {
                    Error::InvalidSubject { reason, .. } => reason,
                    other => other.to_string(),
                };
                return Some(Err(Error::InvalidSubject {
                    subject: routing_key.as_str().to_string(),
                    reason: format!(
                        "a message received from amqp for subscription '{}' with routing key {:?} cannot be delivered ({why}); it was rejected",
                        self.topology.pattern,
                        routing_key.as_str()
                    ),
                }));
            }
        };
        let mut headers = wire::from_field_table(properties.headers().as_ref());
        let message = Message::from_parts(subject, Bytes::from(data), Headers::new());
        let acker = AmqpAcker {
            acker: Some(acker),
            subject: message.subject().clone(),
            dropped_unsettled: self.dropped_unsettled.clone(),
            prefetch: self.inner.config.options.prefetch,
            patience: self.inner.config.options.flush_timeout,
        };
        let Some(durable) = &self.topology.durable else {
            return Some(Ok(self.answering(
                Delivery::with_acker(message.with_headers(headers), Box::new(acker), redelivered),
                &properties,
            )));
        };
        // The quorum queue counts returns in `x-delivery-count` (absent on
        // the first delivery); it is the broker's, not the message's.
        let returns = headers
            .get(DELIVERY_COUNT_HEADER)
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or(0);
        headers.remove(DELIVERY_COUNT_HEADER);
        let message = message.with_headers(headers);
        let acker = DurableAcker::start(acker, durable.ack_wait);
        let delivery = Delivery::with_acker(message, Box::new(acker), redelivered)
            .with_delivery_count(returns.saturating_add(1));
        Some(Ok(self.answering(delivery, &properties)))
    }

    /// `delivery`, answerable when it is a request (it has a `reply_to`).
    fn answering(&self, delivery: Delivery, properties: &lapin::BasicProperties) -> Delivery {
        match properties.reply_to() {
            None => delivery,
            Some(reply_to) => delivery.with_replier(Box::new(AmqpReply {
                sessions: self.inner.clone(),
                reply_to: reply_to.clone(),
                correlation_id: properties.correlation_id().clone(),
            })),
        }
    }
}

/// The header in which a quorum queue counts a message's returns.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// Acknowledges one delivery of a durable consumer, and gives it back
/// (nack with requeue) once `ack_wait` is over unsettled: RabbitMQ has no
/// per-consumer ack deadline (only a server-wide consumer timeout that
/// closes the channel), so the adapter keeps it.
///
/// The timer holds the acker itself, so that a delivery dropped unsettled
/// (a `?` that bailed out) is given back after `ack_wait` as on every other
/// broker; it held a weak reference, and such a message stayed
/// unacknowledged, holding a prefetch slot, for as long as the subscription
/// lived. Settling the delivery stops the timer.
struct DurableAcker {
    slot: Arc<Mutex<Option<Box<AmqpAcker>>>>,
    subject: Subject,
    timer: tokio::task::AbortHandle,
}

impl DurableAcker {
    fn start(acker: AmqpAcker, ack_wait: Duration) -> Self {
        let subject = acker.subject.clone();
        let slot = Arc::new(Mutex::new(Some(Box::new(acker))));
        let waiting = Arc::clone(&slot);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(ack_wait).await;
            if let Some(acker) = take(&waiting) {
                let _ = acker.nack(true).await;
            }
        })
        .abort_handle();
        DurableAcker {
            slot,
            subject,
            timer,
        }
    }

    /// The acker, unless `ack_wait` was over; the timer stops either way.
    fn take(&self) -> Option<Box<AmqpAcker>> {
        let acker = take(&self.slot);
        if acker.is_some() {
            self.timer.abort();
        }
        acker
    }
}

fn take(slot: &Mutex<Option<Box<AmqpAcker>>>) -> Option<Box<AmqpAcker>> {
    match slot.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    }
}

impl fmt::Debug for DurableAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableAcker")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Acknowledge for DurableAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        match self.take() {
            Some(acker) => acker.ack().await,
            None => Err(Error::Ack {
                broker: KIND,
                action: "ack",
                subject: self.subject.to_string(),
                reason: "ack_wait was over, so the adapter gave the message back for redelivery; acknowledge within ack_wait, or raise it".to_string(),
            }),
        }
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<()> {
        match self.take() {
            Some(acker) => acker.nack(requeue).await,
            None => Ok(()),
        }
    }

    fn supports_delay(&self) -> bool {
        false
    }

    fn broker(&self) -> &'static str {
        KIND
    }

    async fn nack_with_delay(self: Box<Self>, _delay: Duration) -> Result<()> {
        Err(Error::unsupported(
            KIND,
            "delayed redelivery (nack with a delay)",
        ))
    }
}

/// Acknowledges one delivery on its channel. Dropped unused, it does nothing:
/// the message stays unacknowledged on the channel, and RabbitMQ requeues it
/// when the channel closes.
struct AmqpAcker {
    acker: Option<Acker>,
    subject: Subject,
    /// The subscription's "a delivery was dropped unsettled" flag, to warn once.
    dropped_unsettled: Arc<AtomicBool>,
    prefetch: u16,
    /// The most an ack or nack waits to be sent (the flush timeout).
    patience: Duration,
}

impl fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("subject", &self.subject)
            .field("pending", &self.acker.is_some())
            .finish()
    }
}

impl AmqpAcker {
    fn error(&self, action: &'static str, reason: String) -> Error {
        Error::Ack {
            broker: KIND,
            action,
            subject: self.subject.to_string(),
            reason,
        }
    }

    /// Awaits `settling` (lapin's ack or nack, done once its frame is
    /// written), at most [`patience`](Self::patience).
    ///
    /// Bounded because lapin 4.12 can leave it pending for ever when the
    /// connection fails. Seen in the single-node restart drill
    /// (`tests/restart.rs`, 2 runs in 30): the consumer, awaiting its ack,
    /// never read its subscription again, so the subscription never
    /// resubscribed and its queue kept its messages with no consumer. The
    /// likely path, read from lapin's code: an ack queued after lapin
    /// dropped the failing connection's queued frames, but before it marked
    /// the channel failed, is never written nor dropped.
    async fn settle(
        &self,
        action: &'static str,
        settling: impl std::future::Future<Output = lapin::Result<bool>>,
    ) -> Result<()> {
        match tokio::time::timeout(self.patience, settling).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(self.error(
                action,
                "the subscription's channel closed first; the broker redelivers the message"
                    .to_string(),
            )),
            Ok(Err(error)) => Err(self.error(action, error.to_string())),
            Err(_) => {
                tracing::debug!(
                    action,
                    subject = %self.subject,
                    patience = ?self.patience,
                    "amqp: an ack or nack was not sent in time"
                );
                let reason = format!(
                    "it was not sent within {:?} (the subscription's connection is likely gone); unless it was sent after all, the broker delivers the message again",
                    self.patience
                );
                Err(self.error(action, reason))
            }
        }
    }
}

#[async_trait]
impl Acknowledge for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        match self.acker.take() {
            Some(acker) => {
                self.settle("ack", acker.ack(BasicAckOptions::default()))
                    .await
            }
            None => Ok(()),
        }
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        match self.acker.take() {
            Some(acker) => {
                let options = BasicNackOptions {
                    requeue,
                    multiple: false,
                };
                self.settle("nack", acker.nack(options)).await
            }
            None => Ok(()),
        }
    }

    fn supports_delay(&self) -> bool {
        false
    }

    fn broker(&self) -> &'static str {
        KIND
    }

    async fn nack_with_delay(self: Box<Self>, _delay: std::time::Duration) -> Result<()> {
        Err(Error::unsupported(
            KIND,
            "delayed redelivery (nack with a delay)",
        ))
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        // Not acknowledged (the delivery contract): the broker delivers the
        // message again once this subscription's channel closes. Dropping
        // deliveries is usually a forgotten `ack`, which stalls the
        // subscription once `prefetch` of them are outstanding: say so once.
        if self.acker.is_some() && !self.dropped_unsettled.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                subject = %self.subject,
                prefetch = self.prefetch,
                "an AMQP delivery was dropped without ack or nack: it stays unacknowledged until the subscription's channel closes, then RabbitMQ requeues it (for the queue group's other members; a fan-out subscription's queue goes away with it); once `prefetch` deliveries are unacknowledged the subscription receives nothing more, so call ack() when a message is handled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::binding_matches;

    #[test]
    fn binding_keys_match_as_rabbitmq_matches_them() {
        assert!(binding_matches("a.b", "a.b"));
        assert!(!binding_matches("a.b", "a.c"));
        assert!(binding_matches("a.*", "a.b"));
        assert!(!binding_matches("a.*", "a.b.c"));
        assert!(binding_matches("a.#", "a"));
        assert!(binding_matches("a.#", "a.b.c"));
        assert!(binding_matches("#", "x.y"));
        assert!(binding_matches("a.#.z", "a.z"));
        assert!(binding_matches("a.#.z", "a.b.c.z"));
        assert!(!binding_matches("orders.>", "billing.x"));
    }
}
