//! The in-memory broker: a real in-process broker with switchboard's semantics.
//!
//! Fan-out, queue groups, wildcards and headers behave as on NATS. Each
//! subscription has a bounded buffer; when it is full, `publish` waits for the
//! subscriber to catch up (backpressure) instead of dropping, so nothing is
//! lost while a subscriber keeps up — and a subscriber that stops reading
//! stops its publishers. Handles made from the same name share one hub, so
//! `memory://` connects one process's publishers to its subscribers.
//!
//! Durable consumers ([`Subscriber::subscribe_durable`]) live in the hub:
//! messages published on their pattern are kept while no member reads them,
//! each goes to one member, and is forgotten once acknowledged; a nack, a
//! nack with a delay or a missing ack within `ack_wait` delivers it again
//! with a higher delivery count, up to `max_deliver` deliveries. They live
//! as long as the hub (the process), never longer.

mod durable;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    Broker, Capabilities, ConnectionStatus, Delivery, Durable, Error, Headers, Message, Pattern,
    Publisher, QueueGroup, Reply, Result, Subscriber, Subscription,
};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "memory";

/// The URL scheme of the in-memory broker: `memory://[name][?capacity=N]`.
pub const SCHEMES: &[&str] = &["memory"];

/// The URL the bare kind `memory` stands for: the process's default hub.
pub const DEFAULT_URL: &str = "memory://";

/// Messages a subscription buffers before publishers wait, unless configured.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// The in-memory broker's entry for the `switchboard` facade's registry
/// (always registered there).
pub const DRIVER: crate::Driver = crate::Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(MemoryBroker::connect(url)?) as Arc<dyn Broker>) })
});

struct Route {
    id: u64,
    handle: u64,
    pattern: Pattern,
    group: Option<QueueGroup>,
    sender: mpsc::Sender<Envelope>,
}

/// What travels through the hub: a message, and for a request where to answer.
struct Envelope {
    message: Message,
    reply: Option<ReplySlot>,
}

/// Where the first reply to a request goes; later replies find it taken.
type ReplySlot = Arc<Mutex<Option<oneshot::Sender<Message>>>>;

/// Answers a memory request: the first reply wins.
#[derive(Debug)]
struct MemoryReply {
    slot: ReplySlot,
    subject: crate::Subject,
}

#[async_trait]
impl Reply for MemoryReply {
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()> {
        let sender = match self.slot.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            // The requester may have given up (timed out): nothing to tell.
            let _ = sender.send(Message::from_parts(self.subject.clone(), payload, headers));
        }
        Ok(())
    }
}

#[derive(Default)]
struct Hub {
    routes: RwLock<Vec<Arc<Route>>>,
    next_id: AtomicU64,
    /// Round-robin cursor per queue group.
    cursors: Mutex<HashMap<QueueGroup, usize>>,
    /// The durable consumers, which keep messages while nobody reads them.
    durables: durable::Consumers,
}

impl Hub {
    fn remove(&self, id: u64) {
        if let Ok(mut routes) = self.routes.write() {
            routes.retain(|r| r.id != id);
        }
    }

    fn remove_handle(&self, handle: u64) {
        if let Ok(mut routes) = self.routes.write() {
            routes.retain(|r| r.handle != handle);
        }
    }

    /// The senders `subject` goes to: every matching fan-out route, and one
    /// member per matching queue group (rotating), with the group's other
    /// members as fallbacks should that one have gone away meanwhile.
    fn targets(&self, subject: &str) -> Vec<Vec<mpsc::Sender<Envelope>>> {
        let Ok(routes) = self.routes.read() else {
            return Vec::new();
        };
        let mut targets = Vec::new();
        let mut groups: Vec<(&QueueGroup, Vec<mpsc::Sender<Envelope>>)> = Vec::new();
        for route in routes.iter().filter(|r| r.pattern.matches(subject)) {
            match &route.group {
                None => targets.push(vec![route.sender.clone()]),
                Some(group) => match groups.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, members)) => members.push(route.sender.clone()),
                    None => groups.push((group, vec![route.sender.clone()])),
                },
            }
        }
        if !groups.is_empty() {
            let mut cursors = match self.cursors.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (group, mut members) in groups {
                let cursor = cursors.entry(group.clone()).or_insert(0);
                let start = *cursor % members.len();
                *cursor = cursor.wrapping_add(1);
                members.rotate_left(start);
                targets.push(members);
            }
        }
        targets
    }
}

fn hubs() -> &'static Mutex<HashMap<String, Weak<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Weak<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
}

static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

/// A handle on an in-process broker. Cheap to clone; clones share the handle
/// (closing one closes them all), while separate handles on the same named hub
/// are like separate connections to one server.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::{MemoryBroker, Message, Publisher, Subscriber};
/// let broker = MemoryBroker::new();
/// let mut alerts = broker.subscribe(&"alerts.>".parse()?).await?;
/// broker.publish(Message::new("alerts.cpu", "CPU at 98%")?).await?;
/// let delivery = alerts.next().await.expect("one message")?;
/// assert_eq!(delivery.payload_str(), Some("CPU at 98%"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    name: Arc<str>,
    handle: u64,
    capacity: usize,
    closed: Arc<AtomicBool>,
    /// Set to true by `close`: ends this handle's durable subscriptions.
    shutdown: Arc<watch::Sender<bool>>,
}

impl MemoryBroker {
    /// A broker on a new private hub, not reachable by name.
    pub fn new() -> Self {
        Self::on_hub(Arc::new(Hub::default()), "")
    }

    /// A handle on the process-wide hub called `name` (created if needed; the
    /// empty name is the default hub `memory://` uses). The hub lives while a
    /// handle on it does.
    pub fn named(name: &str) -> Self {
        let mut hubs = match hubs().lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let hub = match hubs.get(name).and_then(Weak::upgrade) {
            Some(hub) => hub,
            None => {
                let hub = Arc::new(Hub::default());
                hubs.insert(name.to_string(), Arc::downgrade(&hub));
                hub
            }
        };
        Self::on_hub(hub, name)
    }

    /// Connects from a `memory://[name][?capacity=N]` URL.
    pub fn connect(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid_url(url, e))?;
        if parsed.scheme() != KIND {
            return Err(Error::invalid_url(url, "the scheme must be `memory`"));
        }
        let name = parsed.host_str().unwrap_or("");
        let query = crate::options::Query::parse(url, &parsed, &[crate::options::CAPACITY])?;
        let mut broker = Self::named(name);
        if let Some(capacity) = query.count(crate::options::CAPACITY)? {
            broker.capacity = capacity;
        }
        Ok(broker)
    }

    fn on_hub(hub: Arc<Hub>, name: &str) -> Self {
        MemoryBroker {
            hub,
            name: Arc::from(name),
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) as u64,
            capacity: DEFAULT_CAPACITY,
            closed: Arc::new(AtomicBool::new(false)),
            shutdown: Arc::new(watch::channel(false).0),
        }
    }

    /// Another handle on the same hub, like a second connection to one
    /// server: it shares the hub's subscriptions and messages, but has its
    /// own subscriptions, its own [`MemoryBroker::buffered`] count and its
    /// own `close`.
    pub fn new_handle(&self) -> Self {
        MemoryBroker {
            capacity: self.capacity,
            ..Self::on_hub(self.hub.clone(), &self.name)
        }
    }

    /// How many messages wait in the buffers of this handle's subscriptions,
    /// delivered but not yet taken by their readers. With the readers'
    /// own count of what they took and finished, this tells when every
    /// message published so far has been dealt with (what
    /// `switchboard::testing` waits for), without sleeping.
    pub fn buffered(&self) -> usize {
        let Ok(routes) = self.hub.routes.read() else {
            return 0;
        };
        routes
            .iter()
            .filter(|route| route.handle == self.handle)
            .map(|route| route.sender.max_capacity() - route.sender.capacity())
            .sum()
    }

    /// Sets how many messages each new subscription buffers before publishers wait.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed { broker: KIND })
        } else {
            Ok(())
        }
    }

    fn route(&self, pattern: &Pattern, group: Option<&QueueGroup>) -> Result<Subscription> {
        self.check_open()?;
        let (sender, receiver) = mpsc::channel(self.capacity);
        let id = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
        let route = Arc::new(Route {
            id,
            handle: self.handle,
            pattern: pattern.clone(),
            group: group.cloned(),
            sender,
        });
        self.hub
            .routes
            .write()
            .map_err(|_| Error::Closed { broker: KIND })?
            .push(route);
        let guard = Unroute {
            hub: Arc::downgrade(&self.hub),
            id,
        };
        Ok(Subscription::new(
            pattern.clone(),
            group.cloned(),
            deliveries(receiver, guard),
        ))
    }
}

/// Removes a route when its subscription's stream is dropped.
struct Unroute {
    hub: Weak<Hub>,
    id: u64,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
    }
}

fn deliveries(
    receiver: mpsc::Receiver<Envelope>,
    guard: Unroute,
) -> impl Stream<Item = Result<Delivery>> + Send {
    stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
        let Envelope { message, reply } = receiver.recv().await?;
        let delivery = match reply {
            None => Delivery::new(message),
            Some(slot) => {
                let subject = message.subject().clone();
                Delivery::new(message).with_replier(Box::new(MemoryReply { slot, subject }))
            }
        };
        Some((Ok(delivery), (receiver, guard)))
    })
    .fuse()
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl MemoryBroker {
    /// Sends `message` to every matching fan-out subscription and one member
    /// of each matching group; returns how many subscriptions it reached.
    async fn deliver(&self, message: Message, reply: Option<ReplySlot>) -> Result<usize> {
        self.check_open()?;
        if reply.is_none() {
            self.hub.durables.keep(&message);
        }
        let targets = self.hub.targets(message.subject().as_str());
        let last = targets.len().saturating_sub(1);
        let mut reached = 0;
        let mut message = Some(message);
        for (index, candidates) in targets.into_iter().enumerate() {
            for sender in candidates {
                // Moving the message into the last send saves one clone on the
                // common single-subscriber path.
                let copy = match (index == last, message.as_ref()) {
                    (true, _) => message.take(),
                    (false, Some(m)) => Some(m.clone()),
                    (false, None) => None,
                };
                let Some(copy) = copy else { break };
                let envelope = Envelope {
                    message: copy,
                    reply: reply.clone(),
                };
                match sender.send(envelope).await {
                    Ok(()) => {
                        reached += 1;
                        break;
                    }
                    // That member went away since the lookup: try the next of its group.
                    Err(mpsc::error::SendError(back)) => {
                        if index == last {
                            message = Some(back.message);
                        }
                    }
                }
            }
        }
        Ok(reached)
    }
}

#[async_trait]
impl Publisher for MemoryBroker {
    async fn publish(&self, message: Message) -> Result<()> {
        self.deliver(message, None).await.map(drop)
    }

    async fn flush(&self) -> Result<()> {
        // Messages are in their subscribers' buffers as soon as `publish` returns.
        self.check_open()
    }
}

#[async_trait]
impl Subscriber for MemoryBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        self.route(pattern, None)
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        self.route(pattern, Some(group))
    }

    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        self.check_open()?;
        let consumer = self.hub.durables.open(pattern, durable);
        let mut shutdown = self.shutdown.subscribe();
        let closed = async move {
            // A handle dropped without `close` leaves its subscriptions running.
            if shutdown.wait_for(|closed| *closed).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        Ok(Subscription::new(
            pattern.clone(),
            None,
            durable::deliveries(consumer).take_until(closed),
        ))
    }

    async fn remove_durable(&self, _pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.check_open()?;
        self.hub.durables.remove(durable.consumer());
        Ok(())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            queue_groups: true,
            native_headers: true,
            headers: true,
            native_wildcards: true,
            ordered_per_publisher: true,
            request_reply: true,
            durable: true,
            delivery_count: true,
            nack_delay: true,
            ..Capabilities::NONE
        }
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        let subject = message.subject().to_string();
        let (sender, receiver) = oneshot::channel();
        let slot: ReplySlot = Arc::new(Mutex::new(Some(sender)));
        if self.deliver(message, Some(slot)).await? == 0 {
            return Err(Error::NoResponders {
                broker: KIND,
                subject,
            });
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            // Every delivery of the request was dropped without a reply.
            Ok(Err(_)) | Err(_) => Err(Error::request_timeout(KIND, &subject, timeout)),
        }
    }

    fn status(&self) -> ConnectionStatus {
        let closed = self.closed.load(Ordering::Acquire);
        ConnectionStatus {
            connected: !closed,
            closed,
            ..ConnectionStatus::up()
        }
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.hub.remove_handle(self.handle);
            self.shutdown.send_replace(true);
        }
        Ok(())
    }
}
