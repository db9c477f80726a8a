//! Durable consumers of the in-memory broker: each keeps the messages
//! published on its pattern while no member reads them, hands each to one
//! member, and forgets it once acknowledged — or delivers it again after a
//! nack or when it was not acknowledged within `ack_wait`. Nothing survives
//! the process (`Capabilities::durable_storage` is false).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::KIND;
use crate::{Acknowledge, ConsumerName, Delivery, Durable, Message, Pattern, Result};

/// Every durable consumer of one hub, by consumer name.
#[derive(Default)]
pub(super) struct Consumers {
    by_name: Mutex<HashMap<ConsumerName, Arc<Consumer>>>,
}

impl Consumers {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConsumerName, Arc<Consumer>>> {
        match self.by_name.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The consumer `durable` names, created over `pattern` on first use; a
    /// later member's pattern, `ack_wait` and `max_deliver` replace the
    /// consumer's (as a JetStream consumer update does).
    pub(super) fn open(&self, pattern: &Pattern, durable: &Durable) -> Arc<Consumer> {
        let mut consumers = self.lock();
        let consumer = consumers
            .entry(durable.consumer().clone())
            .or_insert_with(|| Arc::new(Consumer::default()));
        {
            let mut state = consumer.state();
            state.pattern = Some(pattern.clone());
            state.ack_wait = durable.ack_wait;
            state.max_deliver = durable.max_deliver;
        }
        consumer.clone()
    }

    /// Deletes the consumer `name` and everything it keeps; members still
    /// reading see their streams end.
    pub(super) fn remove(&self, name: &ConsumerName) {
        if let Some(consumer) = self.lock().remove(name) {
            consumer.state().removed = true;
            consumer.changed.notify_waiters();
        }
    }

    /// Keeps a copy of `message` for every consumer whose pattern matches its subject.
    pub(super) fn keep(&self, message: &Message) {
        let consumers = self.lock();
        if consumers.is_empty() {
            return;
        }
        for consumer in consumers.values() {
            let mut state = consumer.state();
            if state
                .pattern
                .as_ref()
                .is_some_and(|p| p.matches(message.subject().as_str()))
            {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.ready.push_back(Entry {
                    seq,
                    message: message.clone(),
                    delivered: 0,
                });
                drop(state);
                consumer.changed.notify_waiters();
            }
        }
    }
}

/// A kept message and how often it was delivered.
struct Entry {
    seq: u64,
    message: Message,
    delivered: u32,
}

/// A message handed to a member and not yet settled, with when it is due again.
struct Pending {
    entry: Entry,
    due: Instant,
}

struct State {
    pattern: Option<Pattern>,
    ack_wait: Duration,
    max_deliver: Option<u32>,
    next_seq: u64,
    ready: VecDeque<Entry>,
    pending: HashMap<u64, Pending>,
    removed: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            pattern: None,
            ack_wait: crate::DEFAULT_ACK_WAIT,
            max_deliver: None,
            next_seq: 0,
            ready: VecDeque::new(),
            pending: HashMap::new(),
            removed: false,
        }
    }
}

impl State {
    /// Moves every pending message whose time is up back to the ready queue
    /// (in publish order), or drops it once it was delivered `max_deliver`
    /// times; returns when the next pending one is due.
    fn requeue_due(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(seq, _)| *seq)
            .collect();
        let mut back: Vec<Entry> = due
            .into_iter()
            .filter_map(|seq| self.pending.remove(&seq))
            .map(|p| p.entry)
            .filter(|entry| self.max_deliver.is_none_or(|max| entry.delivered < max))
            .collect();
        back.sort_by_key(|entry| std::cmp::Reverse(entry.seq));
        for entry in back {
            self.ready.push_front(entry);
        }
        self.pending.values().map(|p| p.due).min()
    }
}

/// One durable consumer: its pattern, its messages, and a signal for members
/// waiting for one.
#[derive(Default)]
pub(super) struct Consumer {
    state: Mutex<State>,
    changed: Notify,
}

impl Consumer {
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Settles the pending message `seq`: forgets it, or (`again` = `Some`)
    /// makes it due again after the delay.
    fn settle(&self, seq: u64, again: Option<Duration>) {
        let mut state = self.state();
        match again {
            None => {
                state.pending.remove(&seq);
            }
            Some(delay) => {
                if let Some(pending) = state.pending.get_mut(&seq) {
                    pending.due = crate::deadline(delay);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The next message for a member, waiting for one; `None` once the
    /// consumer was removed.
    async fn next(self: &Arc<Self>) -> Option<Delivery> {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let mut state = self.state();
                if state.removed {
                    return None;
                }
                let now = Instant::now();
                let next_due = state.requeue_due(now);
                if let Some(mut entry) = state.ready.pop_front() {
                    entry.delivered += 1;
                    let count = entry.delivered;
                    let seq = entry.seq;
                    let message = entry.message.clone();
                    let due = now + state.ack_wait;
                    state.pending.insert(seq, Pending { entry, due });
                    let acker = Box::new(MemoryAck {
                        consumer: Arc::downgrade(self),
                        seq,
                    });
                    return Some(
                        Delivery::with_acker(message, acker, count > 1).with_delivery_count(count),
                    );
                }
                next_due
            };
            match next_due {
                Some(due) => {
                    let _ = tokio::time::timeout_at(due, notified).await;
                }
                None => notified.await,
            }
        }
    }
}

/// The deliveries of `consumer` to one member. The stream holds the
/// consumer, not the hub: a removed consumer ends it.
pub(super) fn deliveries(consumer: Arc<Consumer>) -> impl Stream<Item = Result<Delivery>> + Send {
    stream::unfold(consumer, |consumer| async move {
        let delivery = consumer.next().await?;
        Some((Ok(delivery), consumer))
    })
    .fuse()
}

/// Acknowledges one delivery of a durable memory consumer.
#[derive(Debug)]
struct MemoryAck {
    consumer: Weak<Consumer>,
    seq: u64,
}

impl MemoryAck {
    fn settle(self, again: Option<Duration>) {
        // A removed consumer has nothing left to settle.
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.settle(self.seq, again);
        }
    }
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.settle(None);
        Ok(())
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<()> {
        self.settle(requeue.then_some(Duration::ZERO));
        Ok(())
    }

    fn supports_delay(&self) -> bool {
        true
    }

    async fn nack_with_delay(self: Box<Self>, delay: Duration) -> Result<()> {
        self.settle(Some(delay));
        Ok(())
    }
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("broker", &KIND)
            .field("count", &self.lock().len())
            .finish()
    }
}
