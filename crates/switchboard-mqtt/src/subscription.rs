//! Subscriptions: every subscription of a broker handle shares its one
//! connection. Each distinct topic filter is one MQTT subscription with its
//! own subscription identifier; the server names the identifiers a message
//! matched, and the message goes to that filter's subscriptions — every one
//! of them for a fan-out filter, one in turn for a queue group's
//! `$share/GROUP/filter` (the server shares between connections, the adapter
//! between the group members of one connection).
//!
//! Each subscription has a bounded buffer ([`capacity`](crate::MqttOptions::capacity)).
//! The event loop never waits for a reader (it would stall every other
//! subscription and make the server drop messages unseen): when a buffer is
//! full the message is dropped and counted, and the stream yields one
//! [`Error::Lost`] item with the count before its next message.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use rumqttc::v5::mqttbytes::v5::{Publish, SubscribeReasonCode};
use switchboard_core::{
    Delivery, Error, Message, Pattern, QueueGroup, Reply, Result, Subscription, SubscriptionLink,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{lock, Acked, Alive, Kind, Request, Shared};
use crate::publisher::Replier;
use crate::{wire, KIND};

/// One MQTT subscription (a topic filter) and the switchboard subscriptions on it.
struct Entry {
    filter: String,
    pattern: Pattern,
    group: bool,
    members: Vec<Member>,
    /// The member that gets the next message of a queue group.
    turn: usize,
}

/// One switchboard subscription, as the event loop sees it.
struct Member {
    id: u64,
    tx: mpsc::Sender<Result<Delivery>>,
    state: Arc<MemberState>,
}

/// What a subscription's stream and the event loop share.
struct MemberState {
    pattern: Pattern,
    lost: AtomicU64,
    errors: mpsc::UnboundedSender<Error>,
    link: Mutex<SubscriptionLink>,
}

/// Every subscription of the connection, by subscription identifier.
#[derive(Default)]
pub(crate) struct Registry {
    entries: HashMap<usize, Entry>,
    by_filter: HashMap<String, usize>,
    next_id: usize,
    next_member: u64,
}

impl Registry {
    /// Adds `member` to the entry of `filter` (made if new); returns the
    /// subscription identifier.
    fn add(&mut self, filter: &str, pattern: &Pattern, group: bool, member: Member) -> usize {
        let id = match self.by_filter.get(filter) {
            Some(id) => *id,
            None => {
                // Subscription identifiers run from 1 to 268,435,455.
                self.next_id = self.next_id % 268_435_455 + 1;
                let id = self.next_id;
                self.by_filter.insert(filter.to_string(), id);
                self.entries.insert(
                    id,
                    Entry {
                        filter: filter.to_string(),
                        pattern: pattern.clone(),
                        group,
                        members: Vec::new(),
                        turn: 0,
                    },
                );
                id
            }
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.members.push(member);
        }
        id
    }

    /// Adds the reply inbox (an entry without members); returns its identifier.
    fn add_inbox(&mut self, filter: &str, pattern: &Pattern) -> usize {
        self.next_id = self.next_id % 268_435_455 + 1;
        let id = self.next_id;
        self.by_filter.insert(filter.to_string(), id);
        self.entries.insert(
            id,
            Entry {
                filter: filter.to_string(),
                pattern: pattern.clone(),
                group: false,
                members: Vec::new(),
                turn: 0,
            },
        );
        id
    }

    /// Takes member `member` off entry `id`; returns the filter to
    /// unsubscribe from when it was the last.
    fn remove(&mut self, id: usize, member: u64) -> Option<String> {
        let entry = self.entries.get_mut(&id)?;
        let before = entry.members.len();
        entry.members.retain(|m| m.id != member);
        if entry.members.len() == before || !entry.members.is_empty() {
            return None;
        }
        let entry = self.entries.remove(&id)?;
        self.by_filter.remove(&entry.filter);
        Some(entry.filter)
    }

    /// The connection was lost: every subscription says so once.
    pub(crate) fn lost(&self, reason: &str) {
        for member in self.entries.values().flat_map(|e| &e.members) {
            if lock(&member.state.link).lost(reason) {
                let _ = member.state.errors.send(Error::Disconnected {
                    broker: KIND,
                    reason: format!(
                        "the subscription to '{}' lost its connection ({reason}); resubscribing. Messages published until it is back are lost (MQTT QoS 0 keeps nothing)",
                        member.state.pattern
                    ),
                });
            }
        }
    }

    /// The connection is closed: every stream ends.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.by_filter.clear();
    }
}

/// Hands a received message to the subscriptions it matched, or to the
/// request waiting for it when it is a reply.
pub(crate) fn dispatch(shared: &Arc<Shared>, publish: Publish) {
    let properties = publish.properties.unwrap_or_default();
    let inbox = shared.inbox.get().copied();
    let subject = wire::subject_for(&publish.topic);
    let mut message: Option<Message> = None;
    let replier: Option<Arc<dyn Reply>> = properties.response_topic.as_ref().map(|topic| {
        Arc::new(Replier::new(
            Arc::clone(shared),
            topic.clone(),
            properties.correlation_data.clone(),
        )) as Arc<dyn Reply>
    });
    let mut registry = lock(&shared.registry);
    let ids: Vec<usize> = if properties.subscription_identifiers.is_empty() {
        // A server that sends no identifiers: match the filters here.
        match &subject {
            Ok(subject) => registry
                .entries
                .iter()
                .filter(|(_, e)| e.pattern.matches(subject.as_str()))
                .map(|(id, _)| *id)
                .collect(),
            Err(_) => Vec::new(),
        }
    } else {
        properties.subscription_identifiers.clone()
    };
    for id in ids {
        if Some(id) == inbox {
            match (&properties.correlation_data, &subject) {
                (Some(correlation), Ok(subject)) => {
                    if let Some(waiter) = lock(&shared.requests).remove(correlation) {
                        let _ = waiter.send(Message::from_parts(
                            subject.clone(),
                            publish.payload.clone(),
                            wire::headers_from(&properties.user_properties),
                        ));
                    }
                }
                // The requester would time out asking whether anything is
                // subscribed, though something answered: say so.
                (None, _) => tracing::warn!(
                    broker = KIND,
                    "mqtt: a reply without correlation data was dropped: no request can be told \
                     apart from another without it (an MQTT 5 responder copies the request's \
                     Correlation Data into its reply)"
                ),
                (Some(_), Err(_)) => {}
            }
            continue;
        }
        let Some(entry) = registry.entries.get_mut(&id) else {
            continue;
        };
        if entry.members.is_empty() {
            continue;
        }
        let make = |message: &mut Option<Message>| -> Result<Delivery> {
            match &subject {
                Ok(subject) => {
                    let message = message
                        .get_or_insert_with(|| {
                            Message::from_parts(
                                subject.clone(),
                                publish.payload.clone(),
                                wire::headers_from(&properties.user_properties),
                            )
                        })
                        .clone();
                    let delivery = Delivery::new(message);
                    Ok(match &replier {
                        Some(replier) => delivery.with_replier(Box::new(SharedReplier(Arc::clone(replier)))),
                        None => delivery,
                    })
                }
                Err(reason) => Err(Error::InvalidSubject {
                    subject: String::from_utf8_lossy(&publish.topic).into_owned(),
                    reason: format!(
                        "a message received from mqtt for subscription '{}' on topic {:?} cannot be delivered ({reason}); it was skipped",
                        entry.pattern,
                        String::from_utf8_lossy(&publish.topic)
                    ),
                }),
            }
        };
        // MQTT's `#` also matches the parent level; the pattern does not.
        if let Ok(subject) = &subject {
            if !entry.pattern.matches(subject.as_str()) {
                continue;
            }
        }
        if entry.group {
            entry.turn = (entry.turn + 1) % entry.members.len();
            deliver(&entry.members[entry.turn], make(&mut message));
        } else {
            for member in &entry.members {
                deliver(member, make(&mut message));
            }
        }
    }
}

/// A replier shared by the copies of one request delivered to several subscriptions.
#[derive(Debug)]
struct SharedReplier(Arc<dyn Reply>);

#[switchboard_core::async_trait]
impl Reply for SharedReplier {
    async fn reply(&self, payload: bytes::Bytes, headers: switchboard_core::Headers) -> Result<()> {
        self.0.reply(payload, headers).await
    }
}

fn deliver(member: &Member, item: Result<Delivery>) {
    if let Err(mpsc::error::TrySendError::Full(_)) = member.tx.try_send(item) {
        member.state.lost.fetch_add(1, Ordering::AcqRel);
    }
}

/// Subscribes to `pattern` (in queue group `group`): resolves once the
/// server acknowledged the SUBSCRIBE.
pub(crate) async fn subscribe(
    alive: &Arc<Alive>,
    pattern: &Pattern,
    group: Option<&QueueGroup>,
) -> Result<Subscription> {
    let shared = &alive.0;
    if shared.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    let failed = |reason: String| Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason,
        source: None,
    };
    if group.is_some() && !shared.shared_subscriptions.load(Ordering::Acquire) {
        return Err(Error::unsupported(
            KIND,
            "queue groups (this server does not offer MQTT 5 shared subscriptions)",
        ));
    }
    let filter = wire::filter_for(pattern, group);
    let capacity = shared.target.options.capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let (errors, error_rx) = mpsc::unbounded_channel();
    let state = Arc::new(MemberState {
        pattern: pattern.clone(),
        lost: AtomicU64::new(0),
        errors,
        link: Mutex::new(SubscriptionLink::new(KIND, pattern)),
    });
    let member_id = {
        let mut registry = lock(&shared.registry);
        registry.next_member += 1;
        registry.next_member
    };
    let mut entry_id = None;
    let acked = shared
        .round_trip(Kind::Subscribe, || {
            let member = Member {
                id: member_id,
                tx,
                state: Arc::clone(&state),
            };
            let id = lock(&shared.registry).add(&filter, pattern, group.is_some(), member);
            entry_id = Some(id);
            Some(Request::Subscribe {
                filter: filter.clone(),
                id,
            })
        })
        .await;
    let outcome = match acked {
        Ok(Some(Acked::Subscribed(codes))) => match codes.first() {
            Some(SubscribeReasonCode::Success(_)) => Ok(()),
            Some(code) => Err(refused(code, &filter)),
            None => Err(failed("the server acknowledged no filter".into())),
        },
        Ok(_) => Err(failed("the server sent no acknowledgement".into())),
        Err(reason) if shared.is_closed() => {
            let _ = reason;
            Err(Error::Closed { broker: KIND })
        }
        Err(reason) => Err(failed(reason)),
    };
    if let Err(e) = outcome {
        if let Some(id) = entry_id {
            if let Some(filter) = lock(&shared.registry).remove(id, member_id) {
                let shared = Arc::clone(shared);
                tokio::spawn(async move { unsubscribe(&shared, filter).await });
            }
        }
        return Err(match e {
            Error::Subscribe { reason, .. } => failed(reason),
            other => other,
        });
    }
    let Some(entry_id) = entry_id else {
        return Err(failed("the subscription was not made".into()));
    };
    let unsubscribing = Arc::new(Mutex::new(None));
    let stream = Deliveries {
        rx,
        errors: error_rx,
        state,
        entry: entry_id,
        member: member_id,
        alive: Some(Arc::clone(alive)),
        unsubscribing: Arc::clone(&unsubscribing),
    };
    Ok(
        Subscription::new(pattern.clone(), group.cloned(), stream).with_close(move || {
            Box::pin(async move {
                // The stream is dropped by now: its Drop took the subscription
                // off the registry and, if it was the filter's last, started the
                // UNSUBSCRIBE (bounded by the flush timeout) this waits for.
                let started = lock(&unsubscribing).take();
                match started {
                    Some(task) => task.await.unwrap_or(Ok(())),
                    None => Ok(()),
                }
            })
        }),
    )
}

/// Why the server refused a SUBSCRIBE, in words.
fn refused(code: &SubscribeReasonCode, filter: &str) -> Error {
    match code {
        SubscribeReasonCode::SharedSubscriptionsNotSupported => Error::unsupported(
            KIND,
            "queue groups (this server does not offer MQTT 5 shared subscriptions)",
        ),
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => Error::unsupported(
            KIND,
            "wildcard patterns (this server does not offer wildcard subscriptions)",
        ),
        SubscribeReasonCode::NotAuthorized => Error::Subscribe {
            broker: KIND,
            pattern: filter.to_string(),
            reason: format!(
                "the server does not allow this user to subscribe to {filter:?} (check its ACL)"
            ),
            source: None,
        },
        other => Error::Subscribe {
            broker: KIND,
            pattern: filter.to_string(),
            reason: format!("the server refused the filter {filter:?} ({other:?})"),
            source: None,
        },
    }
}

/// Unsubscribes from `filter` unless a subscription to it was made since;
/// returns at once while the connection is down (the server forgot it).
async fn unsubscribe(shared: &Shared, filter: String) -> Result<()> {
    if !shared.is_up() {
        return Ok(());
    }
    let result = shared
        .round_trip(Kind::Unsubscribe, || {
            if lock(&shared.registry).by_filter.contains_key(&filter) {
                None
            } else {
                Some(Request::Unsubscribe {
                    filter: filter.clone(),
                })
            }
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(_) if !shared.is_up() || shared.is_closed() => Ok(()),
        Err(reason) => Err(Error::Timeout {
            broker: KIND,
            operation: format!("unsubscribing from {filter:?} ({reason})"),
            after: shared.target.options.flush_timeout,
        }),
    }
}

/// Subscribes the reply inbox of this connection, once.
pub(crate) async fn subscribe_inbox(shared: &Shared) -> Result<usize> {
    let topic = shared.inbox_topic();
    let pattern = wire::subject_for(topic.as_bytes())
        .map(Pattern::from)
        .map_err(|reason| Error::Subscribe {
            broker: KIND,
            pattern: topic.clone(),
            reason,
            source: None,
        })?;
    let mut entry_id = None;
    let acked = shared
        .round_trip(Kind::Subscribe, || {
            let id = lock(&shared.registry).add_inbox(&topic, &pattern);
            entry_id = Some(id);
            Some(Request::Subscribe {
                filter: topic.clone(),
                id,
            })
        })
        .await;
    match (acked, entry_id) {
        (Ok(Some(Acked::Subscribed(codes))), Some(id))
            if matches!(codes.first(), Some(SubscribeReasonCode::Success(_))) =>
        {
            Ok(id)
        }
        (result, id) => {
            if let Some(id) = id {
                let mut registry = lock(&shared.registry);
                registry.entries.remove(&id);
                registry.by_filter.remove(&topic);
            }
            Err(Error::Subscribe {
                broker: KIND,
                pattern: pattern.to_string(),
                reason: format!("the reply inbox {topic:?} could not be subscribed ({result:?})"),
                source: None,
            })
        }
    }
}

/// After a reconnection: subscribes every filter again, then tells each
/// subscription it is back. A failure waits for the next reconnection.
pub(crate) async fn resubscribe(shared: Arc<Shared>) {
    let filters: Vec<(String, usize)> = lock(&shared.registry)
        .entries
        .iter()
        .map(|(id, entry)| (entry.filter.clone(), *id))
        .collect();
    for (filter, id) in filters {
        let acked = shared
            .round_trip(Kind::Subscribe, || {
                // Unsubscribed meanwhile: nothing to renew.
                lock(&shared.registry)
                    .entries
                    .contains_key(&id)
                    .then(|| Request::Subscribe {
                        filter: filter.clone(),
                        id,
                    })
            })
            .await;
        match acked {
            Ok(Some(Acked::Subscribed(codes)))
                if matches!(codes.first(), Some(SubscribeReasonCode::Success(_))) => {}
            Ok(None) => {}
            other => {
                tracing::debug!(broker = KIND, "mqtt: resubscribing to {filter:?} failed ({other:?}); retrying after the next reconnection");
                return;
            }
        }
    }
    let registry = lock(&shared.registry);
    for member in registry.entries.values().flat_map(|e| &e.members) {
        lock(&member.state.link).resubscribed();
    }
}

/// A subscription's stream: errors first (a lost connection, a count of
/// dropped messages), then deliveries. Dropping it unsubscribes.
struct Deliveries {
    rx: mpsc::Receiver<Result<Delivery>>,
    errors: mpsc::UnboundedReceiver<Error>,
    state: Arc<MemberState>,
    entry: usize,
    member: u64,
    alive: Option<Arc<Alive>>,
    /// The UNSUBSCRIBE started on drop, for `Subscription::close` to wait for.
    unsubscribing: Arc<Mutex<Option<JoinHandle<Result<()>>>>>,
}

impl Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(Some(error)) = self.errors.poll_recv(cx) {
            return Poll::Ready(Some(Err(error)));
        }
        let lost = self.state.lost.swap(0, Ordering::AcqRel);
        if lost > 0 {
            return Poll::Ready(Some(Err(Error::Lost {
                broker: KIND,
                pattern: self.state.pattern.to_string(),
                count: lost,
                reason: format!(
                    "the subscription's buffer of {} messages was full (its reader fell behind); read faster or raise `capacity`",
                    self.rx.max_capacity()
                ),
            })));
        }
        self.rx.poll_recv(cx)
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        let Some(alive) = self.alive.take() else {
            return;
        };
        let removed = lock(&alive.0.registry).remove(self.entry, self.member);
        if let Some(filter) = removed {
            // Unsubscribe in the background (Subscription::close waits for it
            // instead); without a runtime the server forgets it with the connection.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let task = runtime.spawn(async move { unsubscribe(&alive.0, filter).await });
                *lock(&self.unsubscribing) = Some(task);
            }
        }
    }
}
