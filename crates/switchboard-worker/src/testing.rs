//! Unit tests for your reactions, in milliseconds and without a server
//! (feature `testing`, `switchboard::testing` in the facade): a
//! [`TestBroker`] is an in-memory broker that records every message
//! published through it, runs a [`Worker`] until it is
//! [idle](TestWorker::idle), and answers questions such as "was something
//! published on `audit.>` with header X" ([`TestBroker::published_on`]).
//! It plays the part of FastStream's `TestBroker`: your real handlers, routes
//! and layers run as they would on NATS, Redis or RabbitMQ — retries, dead
//! letters, typed payloads, schemas and replies included.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde::Deserialize;
//! use switchboard_core::{Message, PublisherExt};
//! use switchboard_worker::testing::TestBroker;
//! use switchboard_worker::{HandlerError, Worker, PERMANENT_HEADER};
//!
//! #[derive(Deserialize)]
//! struct Alert { robot: String }
//!
//! let broker = TestBroker::new();
//! let worker = Worker::new(broker.clone()).on_json::<Alert>("alerts.>", |alert, ctx| async move {
//!     ctx.publish(Message::new(format!("audit.{}", ctx.subject()), alert.robot)?).await?;
//!     Ok::<_, HandlerError>(())
//! });
//! let worker = broker.start(worker).await?;
//! broker.publish_json("alerts.robot", &serde_json::json!({ "robot": "T-800" })).await?;
//! broker.publish_to("alerts.robot", "not JSON").await?;
//! worker.idle().await; // both messages are done with: no sleeping, no guessing
//!
//! assert_eq!(broker.published_on("audit.>").one().payload_str(), Some("T-800"));
//! broker.published_on("dlq.alerts.robot").with_header(PERMANENT_HEADER, "true").one();
//! assert_eq!(worker.stats().decode_failed, 1);
//! worker.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Idle
//!
//! [`TestWorker::idle`] returns once every message the worker's
//! subscriptions received has been taken and done with (handled,
//! dead-lettered, failed or given back) and none waits in their buffers —
//! including the messages its handlers published to its own routes on the
//! way. It waits on notifications, never on a timer: a handler that sleeps
//! (or a retry backoff) holds it for that long, so give such routes short
//! backoffs, or pause tokio's clock (`#[tokio::test(start_paused = true)]`)
//! to skip the waits. A handler that never returns keeps the worker busy: put
//! the wait in a `tokio::time::timeout` if that can happen.
//!
//! The assertions panic with what was published instead, as `assert!`
//! does: they are for tests.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use switchboard_core::{
    Broker, Capabilities, ConnectionStatus, Delivery, Durable, MemoryBroker, Message, Pattern,
    Publisher, QueueGroup, Result, Subscriber, Subscription,
};
use tokio::sync::Notify;

use crate::stats::Counters;
use crate::{Error, Running, Stats, Summary, Worker};

/// An in-memory broker that records every message published through it (by
/// the test or by a worker's handlers and layers) and runs workers until
/// they are idle. Cheap to clone; clones share the record.
///
/// It is a [`Broker`]: publish to it (`publish_json`, `publish_to`, …),
/// send it requests to test typed replies, or subscribe to it. See
/// [the module docs](self).
#[derive(Clone)]
pub struct TestBroker {
    memory: MemoryBroker,
    record: Arc<Mutex<Vec<Message>>>,
    /// For a worker's handle: what its subscriptions took.
    takes: Option<Arc<Takes>>,
}

/// What a worker's subscriptions took from their buffers.
#[derive(Debug, Default)]
struct Takes {
    /// Subscriptions in the middle of taking (a message may be out of its
    /// buffer and not yet counted).
    polling: AtomicUsize,
    taken: AtomicU64,
    /// Notified after each message taken.
    notify: Notify,
}

impl TestBroker {
    /// A broker on a hub of its own.
    pub fn new() -> Self {
        TestBroker {
            memory: MemoryBroker::new(),
            record: Arc::default(),
            takes: None,
        }
    }

    /// Starts `worker` on this broker, whatever broker it was built with
    /// (so a function that builds your production worker can be tested as
    /// it is), and returns it once every route is subscribed.
    pub async fn start(&self, worker: Worker) -> std::result::Result<TestWorker, Error> {
        let takes = Arc::new(Takes::default());
        let handle = TestBroker {
            memory: self.memory.new_handle(),
            record: self.record.clone(),
            takes: Some(takes.clone()),
        };
        let memory = handle.memory.clone();
        let running = worker.on_broker(Arc::new(handle)).start().await?;
        Ok(TestWorker {
            counters: running.counters(),
            running,
            memory,
            takes,
        })
    }

    /// Every message published so far, in order.
    pub fn published(&self) -> Vec<Message> {
        self.record().clone()
    }

    /// The messages published so far whose subject matches `pattern`
    /// (e.g. `audit.>`), to assert on.
    ///
    /// # Panics
    ///
    /// If `pattern` is not a valid pattern.
    #[track_caller]
    pub fn published_on(&self, pattern: &str) -> Published {
        let parsed = match Pattern::new(pattern) {
            Ok(parsed) => parsed,
            Err(error) => panic!("published_on: {error}"),
        };
        let all = self.published();
        Published {
            what: format!("published on `{pattern}`"),
            messages: all
                .iter()
                .filter(|message| parsed.matches(message.subject().as_str()))
                .cloned()
                .collect(),
            all,
        }
    }

    /// Forgets what was published so far.
    pub fn clear(&self) {
        self.record().clear();
    }

    fn record(&self) -> MutexGuard<'_, Vec<Message>> {
        match self.record.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A subscription of this handle, counted when it is a worker's.
    fn counted(&self, subscription: Subscription) -> Subscription {
        match &self.takes {
            None => subscription,
            Some(takes) => Subscription::new(
                subscription.pattern().clone(),
                subscription.group().cloned(),
                Counted {
                    inner: subscription,
                    takes: takes.clone(),
                },
            ),
        }
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        TestBroker::new()
    }
}

impl fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBroker")
            .field("published", &self.record().len())
            .field("worker_side", &self.takes.is_some())
            .finish_non_exhaustive()
    }
}

/// A worker's subscription, counting what it takes.
struct Counted {
    inner: Subscription,
    takes: Arc<Takes>,
}

impl Stream for Counted {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        // `polling` covers the moment the message is out of the buffer but
        // not yet counted, so that `TestWorker::idle` never sees neither.
        self.takes.polling.fetch_add(1, Ordering::SeqCst);
        let polled = self.inner.poll_next_unpin(cx);
        let took = matches!(polled, Poll::Ready(Some(Ok(_))));
        if took {
            self.takes.taken.fetch_add(1, Ordering::SeqCst);
        }
        let last_poller = self.takes.polling.fetch_sub(1, Ordering::SeqCst) == 1;
        // A poll that took nothing still wakes `idle` when it was the last
        // one in flight: `idle` may have looked while it was polling, seen
        // `polling > 0`, and be waiting for the count to fall.
        if took || last_poller {
            self.takes.notify.notify_waiters();
        }
        polled
    }
}

#[async_trait]
impl Publisher for TestBroker {
    async fn publish(&self, message: Message) -> Result<()> {
        self.memory.publish(message.clone()).await?;
        self.record().push(message);
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.memory.flush().await
    }
}

#[async_trait]
impl Subscriber for TestBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        Ok(self.counted(self.memory.subscribe(pattern).await?))
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        Ok(self.counted(self.memory.subscribe_group(pattern, group).await?))
    }

    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        Ok(self.counted(self.memory.subscribe_durable(pattern, durable).await?))
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.memory.remove_durable(pattern, durable).await
    }
}

#[async_trait]
impl Broker for TestBroker {
    fn kind(&self) -> &'static str {
        self.memory.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.memory.capabilities()
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.record().push(message.clone());
        self.memory.request(message, timeout).await
    }

    fn status(&self) -> ConnectionStatus {
        self.memory.status()
    }

    async fn close(&self) -> Result<()> {
        self.memory.close().await
    }
}

/// A worker running on a [`TestBroker`].
pub struct TestWorker {
    running: Running,
    counters: Arc<Counters>,
    /// The worker's own handle on the hub.
    memory: MemoryBroker,
    takes: Arc<Takes>,
}

impl TestWorker {
    /// Waits until the worker is idle: everything its subscriptions received
    /// has been taken and done with, and nothing waits in their buffers (see
    /// [the module docs](self#idle)).
    pub async fn idle(&self) {
        let settled = self.counters.watch();
        loop {
            let done = settled.notified();
            let took = self.takes.notify.notified();
            tokio::pin!(done, took);
            // Registered before looking, so nothing that happens after the
            // look goes unnoticed.
            done.as_mut().enable();
            took.as_mut().enable();
            if self.is_idle() {
                return;
            }
            tokio::select! {
                _ = done => {}
                _ = took => {}
            }
        }
    }

    /// Whether the worker is idle now. The reads go in this order: a message
    /// finishing after the first read was taken before it, so `taken`
    /// (read last) is then above `settled`; one taken after the buffer was
    /// read is seen in `polling` or `taken`.
    fn is_idle(&self) -> bool {
        let settled = self.counters.settled();
        let buffered = self.memory.buffered();
        let polling = self.takes.polling.load(Ordering::SeqCst);
        let taken = self.takes.taken.load(Ordering::SeqCst);
        buffered == 0 && polling == 0 && settled >= taken
    }

    /// The worker's counters now.
    pub fn stats(&self) -> Stats {
        self.running.stats()
    }

    /// The running worker.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Shuts the worker down gracefully and returns its summary.
    pub async fn stop(self) -> Summary {
        self.running.shutdown().await
    }
}

impl fmt::Debug for TestWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestWorker")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// Messages published on a pattern (see [`TestBroker::published_on`]),
/// narrowed down with [`Published::with_header`] and asserted on with
/// [`Published::one`], [`Published::count`] or [`Published::none`].
#[derive(Debug, Clone)]
pub struct Published {
    /// What was asked, for the panic messages.
    what: String,
    messages: Vec<Message>,
    /// Everything published, for the panic messages.
    all: Vec<Message>,
}

impl Published {
    /// Those whose header `name` is `value`.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.what.push_str(&format!(" with {name}: {value}"));
        self.messages
            .retain(|message| message.headers().get(name) == Some(value));
        self
    }

    /// Those that carry header `name`, whatever its value.
    pub fn with_header_set(mut self, name: &str) -> Self {
        self.what.push_str(&format!(" with header {name}"));
        self.messages
            .retain(|message| message.headers().contains(name));
        self
    }

    /// Those whose payload is `payload`.
    pub fn with_payload(mut self, payload: impl AsRef<[u8]>) -> Self {
        let payload = payload.as_ref();
        self.what.push_str(&format!(
            " with payload {:?}",
            String::from_utf8_lossy(payload)
        ));
        self.messages
            .retain(|message| message.payload().as_ref() == payload);
        self
    }

    /// The messages, in the order they were published.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The one message.
    ///
    /// # Panics
    ///
    /// Unless there is exactly one, listing what was published.
    #[track_caller]
    pub fn one(mut self) -> Message {
        match self.messages.len() {
            1 => self.messages.remove(0),
            _ => panic!("{}", self.unexpected("exactly one message")),
        }
    }

    /// Asserts there are `expected` of them; returns them.
    ///
    /// # Panics
    ///
    /// Otherwise, listing what was published.
    #[track_caller]
    pub fn count(self, expected: usize) -> Self {
        if self.messages.len() != expected {
            panic!("{}", self.unexpected(&format!("{expected} message(s)")));
        }
        self
    }

    /// Asserts there are none.
    ///
    /// # Panics
    ///
    /// Otherwise, listing what was published.
    #[track_caller]
    pub fn none(&self) {
        if !self.messages.is_empty() {
            panic!("{}", self.unexpected("no message"));
        }
    }

    fn unexpected(&self, expected: &str) -> String {
        let listed: Vec<String> = self.all.iter().map(describe).collect();
        format!(
            "expected {expected} {}, found {}; everything published: [{}]",
            self.what,
            self.messages.len(),
            listed.join(", ")
        )
    }
}

/// A message as one line: subject, payload (as text, or its size) and headers.
fn describe(message: &Message) -> String {
    let payload = match message.payload_str() {
        Some(text) if text.len() <= 80 => format!("{text:?}"),
        Some(text) => format!("{:?}…", text.chars().take(80).collect::<String>()),
        None => format!("<{} bytes>", message.payload().len()),
    };
    let headers: Vec<String> = message
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    if headers.is_empty() {
        format!("{} {payload}", message.subject())
    } else {
        format!("{} {payload} {{{}}}", message.subject(), headers.join(", "))
    }
}
