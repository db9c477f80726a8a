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
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
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
})
.with_locate(locate);

/// Where a `memory://` URL leads: its hub, named by the URL's host (the
/// query only configures this handle).
fn locate(url: &str) -> Option<crate::Location> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    (parsed.scheme() == KIND).then(|| {
        crate::Location::place(format!(
            "memory://{}",
            parsed.host_str().unwrap_or_default()
        ))
    })
}

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

/// Subjects whose targets a hub remembers; past this many (a publisher of
/// ever-new subjects) the memory starts over rather than grow.
const MAX_CACHED_SUBJECTS: usize = 4_096;

#[derive(Default)]
struct Hub {
    table: RwLock<Table>,
    next_id: AtomicU64,
    /// Round-robin cursor per queue group.
    cursors: Mutex<HashMap<QueueGroup, Arc<AtomicUsize>>>,
    /// Set once a durable consumer was opened on this hub: until then a
    /// publish need not look at the (empty) durable consumers.
    has_durables: AtomicBool,
    /// The durable consumers, which keep messages while nobody reads them.
    durables: durable::Consumers,
}

/// The hub's subscriptions, and where each subject published so far goes.
///
/// Working out the targets of a subject matches it against every route and
/// allocated a list per publish (about 1,000 instructions per message with
/// one subscription); a subject's targets are now worked out once and kept
/// until the routes change. Both live under one lock, so a cached entry can
/// never outlive the routes it was made from.
#[derive(Default)]
struct Table {
    routes: Vec<Arc<Route>>,
    targets: HashMap<crate::Subject, Arc<Targets>, BuildHasherDefault<SubjectHasher>>,
}

/// The hash of the hub's cache: FxHash's mixing, a word at a time. The
/// subjects are the program's own and at most [`MAX_CACHED_SUBJECTS`] are
/// kept, so SipHash's protection against chosen collisions buys little; it
/// cost ~230 instructions per publish, this ~20.
#[derive(Default, Clone, Copy)]
struct SubjectHasher(u64);

impl SubjectHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for SubjectHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }
}

impl Table {
    /// Changes the routes: every cached target list is forgotten (dropping
    /// its senders, so that the streams of removed routes end).
    fn change(&mut self, change: impl FnOnce(&mut Vec<Arc<Route>>)) {
        change(&mut self.routes);
        self.targets.clear();
    }
}

/// Where one subject's messages go.
#[derive(Default)]
struct Targets {
    /// Every matching fan-out subscription.
    fanout: Vec<mpsc::Sender<Envelope>>,
    /// Every matching queue group: its members, and the group's cursor,
    /// which picks the member that gets the next message (rotating); the
    /// other members are fallbacks should that one have gone away meanwhile.
    groups: Vec<(Vec<mpsc::Sender<Envelope>>, Arc<AtomicUsize>)>,
}

impl Targets {
    /// How many subscriptions a message reaches: one per fan-out route and
    /// one per group.
    fn len(&self) -> usize {
        self.fanout.len() + self.groups.len()
    }
}

impl Hub {
    fn remove(&self, id: u64) {
        if let Ok(mut table) = self.table.write() {
            table.change(|routes| routes.retain(|r| r.id != id));
        }
    }

    fn remove_handle(&self, handle: u64) {
        if let Ok(mut table) = self.table.write() {
            table.change(|routes| routes.retain(|r| r.handle != handle));
        }
    }

    /// Where `subject` goes: from the cache, or worked out (and cached).
    fn targets(&self, subject: &crate::Subject) -> Arc<Targets> {
        if let Ok(table) = self.table.read() {
            if let Some(targets) = table.targets.get(subject) {
                return targets.clone();
            }
        }
        let Ok(mut table) = self.table.write() else {
            return Arc::default();
        };
        if let Some(targets) = table.targets.get(subject) {
            return targets.clone();
        }
        let targets = Arc::new(self.work_out(&table.routes, subject.as_str()));
        if table.targets.len() >= MAX_CACHED_SUBJECTS {
            table.targets.clear();
        }
        table.targets.insert(subject.clone(), targets.clone());
        targets
    }

    /// The senders `subject` goes to: every matching fan-out route, and the
    /// members of every matching queue group.
    fn work_out(&self, routes: &[Arc<Route>], subject: &str) -> Targets {
        let mut targets = Targets::default();
        let mut groups: Vec<(&QueueGroup, Vec<mpsc::Sender<Envelope>>)> = Vec::new();
        for route in routes.iter().filter(|r| r.pattern.matches(subject)) {
            match &route.group {
                None => targets.fanout.push(route.sender.clone()),
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
            for (group, members) in groups {
                let cursor = cursors.entry(group.clone()).or_default().clone();
                targets.groups.push((members, cursor));
            }
        }
        targets
    }
}

/// The named hubs, kept for the whole process as a server is kept up between
/// its clients' connections: a consumer that connects after the producer has
/// closed its handle finds what its durable consumer kept (with weak
/// references here, the hub went with the producer's last handle, and so did
/// the kept messages, without an error).
fn hubs() -> &'static Mutex<HashMap<String, Arc<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
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
    /// empty name is the default hub `memory://` uses). A named hub lives as
    /// long as the process, with its durable consumers and what they keep,
    /// whether or not a handle on it is open.
    pub fn named(name: &str) -> Self {
        let mut hubs = match hubs().lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        let hub = hubs.entry(name.to_string()).or_default().clone();
        drop(hubs);
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
        if let Some(capacity) = query.capacity()? {
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
        let Ok(table) = self.hub.table.read() else {
            return 0;
        };
        table
            .routes
            .iter()
            .filter(|route| route.handle == self.handle)
            .map(|route| route.sender.max_capacity() - route.sender.capacity())
            .sum()
    }

    /// Sets how many messages each new subscription buffers before publishers wait.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, crate::options::MAX_CAPACITY);
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
            .table
            .write()
            .map_err(|_| Error::Closed { broker: KIND })?
            .change(|routes| routes.push(route));
        let guard = Unroute {
            hub: Arc::clone(&self.hub),
            id,
        };
        Ok(Subscription::new(
            pattern.clone(),
            group.cloned(),
            deliveries(receiver, guard),
        ))
    }
}

/// Removes a route when its subscription's stream is dropped. It holds the
/// hub, as a subscription on a real broker outlives the handle it was made
/// with (`connect(url).await?.subscribe(..)` drops the handle at once; the
/// subscription ended then, on a private hub).
struct Unroute {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

fn deliveries(receiver: mpsc::Receiver<Envelope>, guard: Unroute) -> Deliveries {
    Deliveries {
        open: Some((receiver, guard)),
    }
}

/// A memory subscription's stream, polling its channel directly (an
/// `unfold` made a future per message and moved its state in and out).
struct Deliveries {
    /// The channel and the route's guard; `None` once the channel ended
    /// (both dropped then, as the stream stays ended).
    open: Option<(mpsc::Receiver<Envelope>, Unroute)>,
}

impl Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some((receiver, _)) = self.open.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let Some(Envelope { message, reply }) = std::task::ready!(receiver.poll_recv(cx)) else {
            self.open = None;
            return std::task::Poll::Ready(None);
        };
        let delivery = match reply {
            None => Delivery::new(message),
            Some(slot) => {
                let subject = message.subject().clone();
                Delivery::new(message).with_replier(Box::new(MemoryReply { slot, subject }))
            }
        };
        std::task::Poll::Ready(Some(Ok(delivery)))
    }
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
        if reply.is_none() && self.hub.has_durables.load(Ordering::Acquire) {
            self.hub.durables.keep(&message);
        }
        let targets = self.hub.targets(message.subject());
        let last = targets.len().saturating_sub(1);
        let mut reached = 0;
        let mut message = Some(message);
        let fanout = targets
            .fanout
            .iter()
            .map(|sender| (sender, &[][..], &[][..]));
        let groups = targets.groups.iter().map(|(members, cursor)| {
            // Rotating: each message starts at the next member.
            let start = cursor.fetch_add(1, Ordering::Relaxed) % members.len().max(1);
            let (before, from) = members.split_at(start);
            (&from[0], &from[1..], before)
        });
        for (index, (first, after, before)) in fanout.chain(groups).enumerate() {
            let candidates = std::iter::once(first).chain(after).chain(before);
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
        // Set first: a publish that sees the consumer must also keep for it.
        self.hub.has_durables.store(true, Ordering::Release);
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
            Ok(Ok(reply)) => crate::reply_outcome(KIND, &subject, reply),
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

#[cfg(test)]
mod tests {
    //! The hub keeps each subject's targets: these check that a change of
    //! subscriptions after a subject was published on is seen by the next
    //! publish (every wait bounded).
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    async fn next_payload(subscription: &mut Subscription) -> Option<Bytes> {
        match tokio::time::timeout(PATIENCE, subscription.next()).await {
            Ok(Some(Ok(delivery))) => Some(delivery.payload().clone()),
            _ => None,
        }
    }

    fn message(payload: &'static str) -> Message {
        Message::from_parts(
            crate::Subject::new("cache.a").unwrap_or_else(|e| panic!("{e}")),
            Bytes::from_static(payload.as_bytes()),
            Headers::new(),
        )
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::new(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As on a real broker: the subscription outlives the handle it was
    /// made with (it ended at once, the hub gone with the handle).
    #[tokio::test]
    async fn a_subscription_outlives_the_handle_it_was_made_with() -> Result<()> {
        let mut alone = MemoryBroker::new().subscribe(&pattern("cache.a")).await?;
        let name = format!("outlives-{}", std::process::id());
        let mut named = MemoryBroker::named(&name)
            .subscribe(&pattern("cache.a"))
            .await?;
        let publisher = MemoryBroker::named(&name);
        publisher.publish(message("1")).await?;
        assert_eq!(next_payload(&mut named).await.as_deref(), Some(&b"1"[..]));
        // Nobody can publish to the private hub any more: it ends only when dropped.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), alone.next())
                .await
                .is_err(),
            "the subscription ended with its handle"
        );
        Ok(())
    }

    /// A named hub is kept for the process, as a server between its
    /// clients' connections: what a durable consumer kept is there for the
    /// consumer that connects after the producer has closed (it was lost,
    /// with no error, when the hub went with the producer's last handle).
    #[tokio::test]
    async fn a_durable_consumer_keeps_messages_after_every_handle_has_closed() -> Result<()> {
        let name = format!("kept-{}", std::process::id());
        let durable = Durable::new("orders")?;
        {
            let producer = MemoryBroker::named(&name);
            drop(
                producer
                    .subscribe_durable(&pattern("cache.>"), &durable)
                    .await?,
            );
            producer.publish(message("kept")).await?;
            producer.flush().await?;
            producer.close().await?;
        }
        let consumer = MemoryBroker::named(&name);
        let mut kept = consumer
            .subscribe_durable(&pattern("cache.>"), &durable)
            .await?;
        assert_eq!(next_payload(&mut kept).await.as_deref(), Some(&b"kept"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn a_subscription_made_after_publishing_gets_the_next_messages() -> Result<()> {
        let broker = MemoryBroker::new();
        let mut first = broker.subscribe(&pattern("cache.a")).await?;
        broker.publish(message("1")).await?;
        let mut second = broker.subscribe(&pattern("cache.*")).await?;
        broker.publish(message("2")).await?;
        assert_eq!(next_payload(&mut first).await.as_deref(), Some(&b"1"[..]));
        assert_eq!(next_payload(&mut first).await.as_deref(), Some(&b"2"[..]));
        assert_eq!(next_payload(&mut second).await.as_deref(), Some(&b"2"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn a_dropped_group_member_gets_nothing_more_and_the_other_gets_all() -> Result<()> {
        let broker = MemoryBroker::new();
        let group = QueueGroup::new("workers")?;
        let mut kept = broker.subscribe_group(&pattern("cache.a"), &group).await?;
        let dropped = broker.subscribe_group(&pattern("cache.a"), &group).await?;
        broker.publish(message("0")).await?;
        broker.publish(message("1")).await?;
        drop(dropped);
        for payload in ["2", "3", "4", "5"] {
            broker.publish(message(payload)).await?;
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            match next_payload(&mut kept).await {
                Some(payload) => got.push(payload),
                None => break,
            }
        }
        // One of the first two went to the dropped member; the last four all here.
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            &got[1..],
            [&b"2"[..], b"3", b"4", b"5"]
                .map(Bytes::from_static)
                .as_slice()
        );
        assert_eq!(broker.publish(message("6")).await.ok(), Some(()));
        Ok(())
    }

    #[tokio::test]
    async fn closing_a_handle_ends_its_subscriptions_after_publishing() -> Result<()> {
        let publisher = MemoryBroker::new();
        let subscriber = publisher.new_handle();
        let mut subscription = subscriber.subscribe(&pattern("cache.a")).await?;
        publisher.publish(message("1")).await?;
        assert_eq!(
            next_payload(&mut subscription).await.as_deref(),
            Some(&b"1"[..])
        );
        subscriber.close().await?;
        let end = tokio::time::timeout(PATIENCE, subscription.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "the stream must end once its handle is closed"
        );
        publisher.publish(message("2")).await?;
        Ok(())
    }
}
