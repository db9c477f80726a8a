//! The subscription stream, and the registry that turns async-nats connection
//! events (`SlowConsumer(sid)`, `Disconnected`) into `Err` items on the
//! subscriptions they concern.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use futures::stream::Stream;
use futures::task::AtomicWaker;
use switchboard_core::{Delivery, Error, Link, Pattern, Result, Subject, SubscriptionLink};
use tokio::sync::watch;

use crate::wire;
use crate::KIND;

/// Bit set on registry keys that are not async-nats sids (see [`sid_of`]).
const SYNTHETIC: u64 = 1 << 63;

/// What the event callback tells one subscription. The counters only grow;
/// `epoch` grows after either does, so the stream's per-message check is a
/// single atomic load.
#[derive(Default)]
pub(crate) struct Notices {
    epoch: AtomicU64,
    lost: AtomicU64,
    disconnects: AtomicU64,
    waker: AtomicWaker,
}

impl Notices {
    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }
}

struct Entry {
    notices: Arc<Notices>,
    /// Whether the key is the async-nats sid, so `SlowConsumer(sid)` can be
    /// matched to exactly this subscription.
    exact: bool,
    /// The subscription's outages, for the "resubscribed" log line.
    link: SubscriptionLink,
}

/// Live subscriptions of one connection, shared with its event callback.
pub(crate) struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_synthetic: AtomicU64,
    /// Becomes `true` once async-nats reports the connection closed.
    closed: watch::Sender<bool>,
    /// The connection's state, for `Broker::status` and the outage log lines.
    pub(crate) link: Link,
}

impl Registry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Registry {
            entries: Mutex::new(HashMap::new()),
            next_synthetic: AtomicU64::new(0),
            closed: watch::channel(false).0,
            link: Link::new(KIND),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a subscription to `pattern`; `sid` is its async-nats sid when known.
    fn register(&self, sid: Option<u64>, pattern: &Pattern) -> (u64, Arc<Notices>) {
        let notices = Arc::new(Notices::default());
        let (key, exact) = match sid {
            Some(sid) => (sid, true),
            None => (
                SYNTHETIC | self.next_synthetic.fetch_add(1, Ordering::Relaxed),
                false,
            ),
        };
        self.entries().insert(
            key,
            Entry {
                notices: notices.clone(),
                exact,
                link: SubscriptionLink::new(KIND, pattern),
            },
        );
        (key, notices)
    }

    fn remove(&self, key: u64) {
        self.entries().remove(&key);
    }

    /// Handles one async-nats connection event. Runs on async-nats' event
    /// task, so it only does bookkeeping and never waits.
    pub(crate) fn on_event(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                let entries = self.entries();
                match entries.get(&sid) {
                    Some(entry) if entry.exact => entry.notices.bump(&entry.notices.lost),
                    _ => {
                        // The sid is not one we could map: tell every
                        // subscription whose sid is unknown, rather than nobody.
                        let mut told = false;
                        for entry in entries.values().filter(|e| !e.exact) {
                            entry.notices.bump(&entry.notices.lost);
                            told = true;
                        }
                        if !told {
                            tracing::debug!(
                                sid,
                                "nats: slow consumer on a subscription already gone"
                            );
                        }
                    }
                }
            }
            async_nats::Event::Disconnected => {
                self.link
                    .lost("messages published until it is back are lost on core NATS");
                for entry in self.entries().values_mut() {
                    entry.link.lost("the connection broke");
                    entry.notices.bump(&entry.notices.disconnects);
                }
            }
            async_nats::Event::Connected => {
                self.link.restored();
                // async-nats sends every SUB again right after this event.
                for entry in self.entries().values_mut() {
                    entry.link.resubscribed();
                }
            }
            async_nats::Event::Closed => {
                tracing::debug!("nats: connection closed");
                self.closed.send_replace(true);
            }
            async_nats::Event::ServerError(error) => {
                tracing::warn!(%error, "nats: the server reported an error");
            }
            async_nats::Event::ClientError(error) => {
                // While reconnecting, async-nats reports every failed attempt;
                // the outage itself was reported once already.
                if self.link.status().connected {
                    tracing::warn!(%error, "nats: client error");
                } else {
                    tracing::debug!(%error, "nats: reconnecting failed");
                }
            }
            other => tracing::info!(event = %other, "nats: connection event"),
        }
    }

    /// Waits until async-nats reports the connection closed.
    pub(crate) async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

/// The sid async-nats gave `subscriber`.
///
/// async-nats 0.51 does not expose it, but `SlowConsumer` events name only the
/// sid; its derived `Debug` prints it first (`Subscriber { sid: 7, .. }`), so it
/// is read from there. Should a later version print something else this
/// returns `None` and loss on any unmapped sid is reported on every such
/// subscription (the integration tests check the exact mapping).
pub(crate) fn sid_of(subscriber: &async_nats::Subscriber) -> Option<u64> {
    /// Keeps the first bytes of the `Debug` output, then stops the formatter.
    struct Prefix(String);
    impl fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = 48usize.saturating_sub(self.0.len());
            let take = s.char_indices().nth(room).map_or(s.len(), |(i, _)| i);
            self.0.push_str(&s[..take]);
            if self.0.len() >= 48 {
                Err(fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut prefix = Prefix(String::with_capacity(48));
    let _ = write!(prefix, "{subscriber:?}");
    let rest = prefix.0.strip_prefix("Subscriber { sid: ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..digits].parse().ok()
}

/// A subscription's stream: async-nats' messages converted to deliveries,
/// with `Err` items for what the event callback reported.
pub(crate) struct NatsStream {
    inner: async_nats::Subscriber,
    notices: Arc<Notices>,
    seen_epoch: u64,
    seen_lost: u64,
    seen_disconnects: u64,
    key: u64,
    registry: Weak<Registry>,
    pattern: Pattern,
    capacity: usize,
    last_subject: Option<Subject>,
}

impl NatsStream {
    pub(crate) fn new(
        inner: async_nats::Subscriber,
        registry: &Arc<Registry>,
        pattern: Pattern,
        capacity: usize,
    ) -> Self {
        let (key, notices) = registry.register(sid_of(&inner), &pattern);
        NatsStream {
            inner,
            notices,
            seen_epoch: 0,
            seen_lost: 0,
            seen_disconnects: 0,
            key,
            registry: Arc::downgrade(registry),
            pattern,
            capacity,
            last_subject: None,
        }
    }

    /// The next `Err` item to yield for notices seen since the last call, if any.
    fn take_notice(&mut self) -> Option<Error> {
        let epoch = self.notices.epoch.load(Ordering::Acquire);
        if epoch == self.seen_epoch {
            return None;
        }
        let disconnects = self.notices.disconnects.load(Ordering::Relaxed);
        if disconnects != self.seen_disconnects {
            self.seen_disconnects = disconnects;
            return Some(Error::Disconnected {
                broker: KIND,
                reason: format!(
                    "the connection to the NATS server broke while subscribed to {:?}; the client reconnects and resubscribes by itself, but messages published meanwhile are lost (core NATS keeps nothing)",
                    self.pattern.as_str()
                ),
            });
        }
        let lost = self.notices.lost.load(Ordering::Relaxed);
        if lost != self.seen_lost {
            self.seen_lost = lost;
            // async-nats drops without counting, and its drop reports travel
            // through a bounded queue that overflows in the very floods that
            // cause drops: any number shown would be a guess.
            return Some(Error::Lost {
                broker: KIND,
                pattern: self.pattern.as_str().to_string(),
                count: 0,
                reason: format!(
                    "the client buffer of {} messages for this subscription was full because it was not read fast enough, so async-nats dropped messages without counting them; read faster or raise `capacity` (NatsOptions::capacity or ?capacity= in the URL)",
                    self.capacity
                ),
            });
        }
        self.seen_epoch = epoch;
        None
    }
}

impl Stream for NatsStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(error) = this.take_notice() {
                return Poll::Ready(Some(Err(error)));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(message)) => {
                    return Poll::Ready(Some(wire::delivery(
                        message,
                        &this.pattern,
                        &mut this.last_subject,
                    )));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    this.notices.waker.register(cx.waker());
                    // A notice that arrived before the waker was registered.
                    if this.notices.epoch.load(Ordering::Acquire) == this.seen_epoch {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl Drop for NatsStream {
    fn drop(&mut self) {
        // Dropping `inner` afterwards sends async-nats' UNSUB.
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(self.key);
        }
    }
}
