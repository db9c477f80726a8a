//! One benchmark client interface over switchboard and the raw clients, so every
//! workload is the same code for both; only publishing and receiving differ.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use indicatif::ProgressBar;
use switchboard::worker::{Context, HandlerError, Route, Running, Worker};
use switchboard::{
    AnyBroker, Bytes, Durable, Headers, Message, Pattern, QueueGroup, Subject, Subscription,
};

use crate::error::RunError;
use crate::payload::{self, Stamp};
use crate::target::{Implementation, Target};
use crate::{raw_amqp, raw_mqtt, raw_nats, raw_redis};

/// What a subscription yields: the header of each message, or an error to count.
pub(crate) type Receiver = BoxStream<'static, Result<Stamp, RunError>>;

/// Messages between two progress bar updates.
pub(crate) const PROGRESS_STEP: u64 = 1024;

/// Counts progress every [`PROGRESS_STEP`] messages and says whether `deadline`
/// has passed (checked as often, so the clock costs nothing per message).
fn step(seq: u64, deadline: Option<Instant>, progress: &ProgressBar) -> bool {
    if seq % PROGRESS_STEP != PROGRESS_STEP - 1 {
        return false;
    }
    progress.inc(PROGRESS_STEP);
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// The messages of one [`Client::publish_burst`], as every client sends them:
/// message `seq` (from 0) of `publisher` is its header written into one reused
/// buffer of `size` bytes; the burst ends after `count` messages or, checked every
/// [`PROGRESS_STEP`] messages, once `deadline` has passed.
///
/// The runner makes the burst; each client's `publish_burst` is the loop
///
/// ```text
/// while let Some(payload) = burst.next_payload() {
///     publish(payload).await?; // an error ends the burst
/// }
/// Ok(burst.sent())
/// ```
///
/// A plain loop the caller writes around its own publish call, so nothing is
/// boxed or called indirectly per message.
#[derive(Debug)]
pub(crate) struct Burst<'a> {
    buf: Vec<u8>,
    publisher: u16,
    count: u64,
    deadline: Option<Instant>,
    progress: &'a ProgressBar,
    /// Messages published so far.
    sent: u64,
    /// The message last handed out, published once `next_payload` is called again.
    handed: Option<u64>,
}

impl<'a> Burst<'a> {
    /// A burst of `count` messages of `size` bytes from `publisher`, counted on `progress`.
    pub(crate) fn new(
        publisher: u16,
        size: usize,
        count: u64,
        deadline: Option<Instant>,
        progress: &'a ProgressBar,
    ) -> Self {
        Burst {
            buf: payload::buffer(size),
            publisher,
            count,
            deadline,
            progress,
            sent: 0,
            handed: None,
        }
    }

    /// The payload of the next message, or `None` when the burst is over.
    /// Calling it again counts the payload it returned last as published.
    #[inline]
    pub(crate) fn next_payload(&mut self) -> Option<&[u8]> {
        if let Some(seq) = self.handed.take() {
            self.sent = seq + 1;
            if step(seq, self.deadline, self.progress) {
                self.count = self.sent;
                return None;
            }
        }
        if self.sent >= self.count {
            return None;
        }
        let seq = self.sent;
        payload::write_header(&mut self.buf, self.publisher, seq, 0);
        self.handed = Some(seq);
        Some(&self.buf)
    }

    /// How many messages were published (once [`Burst::next_payload`] returned `None`).
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }
}

/// The handler of a `worker` run, the same on both sides: it waits
/// `handler_time` (if any) and passes the message's header on.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    /// Handler calls at a time.
    pub(crate) concurrency: usize,
    /// How long each call takes (0: it returns at once).
    pub(crate) handler_time: Duration,
    /// Time spent in handler calls, summed (ns), and their number: the
    /// ideal throughput is `concurrency` ÷ the mean, whatever the timer's
    /// resolution makes of `handler_time`.
    pub(crate) spent: Arc<(AtomicU64, AtomicU64)>,
}

impl Work {
    pub(crate) fn new(concurrency: usize, handler_time: Duration) -> Self {
        Work {
            concurrency,
            handler_time,
            spent: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
        }
    }

    /// One handler call.
    pub(crate) async fn handle<T>(&self, item: T) -> T {
        if !self.handler_time.is_zero() {
            let began = Instant::now();
            tokio::time::sleep(self.handler_time).await;
            let ns = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.spent.0.fetch_add(ns, Ordering::Relaxed);
            self.spent.1.fetch_add(1, Ordering::Relaxed);
        }
        item
    }

    /// The mean duration of a handler call, if calls took time.
    pub(crate) fn mean(&self) -> Option<Duration> {
        let calls = self.spent.1.load(Ordering::Relaxed);
        (calls > 0).then(|| Duration::from_nanos(self.spent.0.load(Ordering::Relaxed) / calls))
    }
}

/// A connection used by one role (the publisher, or one subscriber) of one run,
/// bound to the run's subject.
#[switchboard::async_trait]
pub(crate) trait Client: Send + Sync + fmt::Debug {
    /// Publishes the messages of `burst` as fast as the client allows;
    /// returns how many it published. Does not flush.
    async fn publish_burst(&self, burst: Burst<'_>) -> Result<u64, RunError>;

    /// Publishes one payload (latency runs), without waiting a round trip.
    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError>;

    /// Resolves once the broker has everything published before (confirms included).
    async fn flush(&self) -> Result<(), RunError>;

    /// Subscribes to the run's subject, in queue group `group` if given; once
    /// this resolves, messages published afterwards are received.
    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError>;

    /// Runs a handler on every message of the run's subject, as a program
    /// reacting to messages does, and yields what each handler call saw.
    ///
    /// The raw clients' loop, written as their users write one: the
    /// subscription, `for_each_concurrent(concurrency, handler)`, in a task
    /// of its own. Switchboard's side runs a `Worker` instead.
    async fn serve(&self, work: Work) -> Result<Receiver, RunError> {
        let messages = self.subscribe(None).await?;
        let (handled, receiver) = futures::channel::mpsc::unbounded();
        let concurrency = work.concurrency;
        tokio::spawn(messages.for_each_concurrent(concurrency, move |item| {
            let (work, handled) = (work.clone(), handled.clone());
            async move {
                let _ = handled.unbounded_send(work.handle(item).await);
            }
        }));
        Ok(receiver.boxed())
    }

    /// Durable runs, on the publisher before anything is published: creates
    /// the durable consumer `name` over the run's subject, so that what is
    /// published from now on is stored for it and `flush` waits until it is.
    async fn create_durable(&self, _name: &str) -> Result<(), RunError> {
        Err(RunError::NoDurable)
    }

    /// Durable runs: subscribes as the durable consumer `name` (created by
    /// [`Client::create_durable`]), acknowledging each delivery.
    async fn subscribe_durable(&self, _name: &str) -> Result<Receiver, RunError> {
        Err(RunError::NoDurable)
    }

    /// Durable runs, at the end: deletes the durable consumer `name` and what
    /// the broker stores for it.
    async fn remove_durable(&self, _name: &str) -> Result<(), RunError> {
        Err(RunError::NoDurable)
    }

    /// Whether queue groups are available (otherwise `group` runs are unsupported).
    fn queue_groups(&self) -> bool;

    /// Closes the connection.
    async fn close(&self);
}

/// Connects one role of a run.
pub(crate) async fn connect(
    implementation: Implementation,
    target: &Target,
    subject: &str,
) -> Result<Box<dyn Client>, RunError> {
    match implementation {
        Implementation::Switchboard => {
            Ok(Box::new(SwitchboardClient::connect(target, subject).await?))
        }
        Implementation::Raw | Implementation::Control => match target.kind.as_str() {
            "nats" => Ok(Box::new(
                raw_nats::RawNats::connect(&target.url, subject).await?,
            )),
            "redis" => Ok(Box::new(
                raw_redis::RawRedis::connect(&target.url, subject).await?,
            )),
            "amqp" => Ok(Box::new(
                raw_amqp::RawAmqp::connect(&target.url, subject).await?,
            )),
            "mqtt" => Ok(Box::new(
                raw_mqtt::RawMqtt::connect(&target.url, subject).await?,
            )),
            other => Err(RunError::NoRawClient(other.to_string())),
        },
    }
}

/// The switchboard side: everything through `Arc<dyn Broker>`, as a program would.
#[derive(Debug)]
pub(crate) struct SwitchboardClient {
    broker: AnyBroker,
    subject: Subject,
    pattern: Pattern,
    /// The worker of a `worker` run, shut down by `close`.
    worker: Mutex<Option<Running>>,
}

impl SwitchboardClient {
    async fn connect(target: &Target, subject: &str) -> Result<Self, RunError> {
        let broker = switchboard::connect(&target.url).await?;
        let subject = Subject::new(subject)?;
        let pattern = Pattern::from(subject.clone());
        Ok(SwitchboardClient {
            broker,
            subject,
            pattern,
            worker: Mutex::new(None),
        })
    }

    async fn durable_subscription(&self, name: &str) -> Result<Subscription, RunError> {
        self.broker
            .subscribe_durable(&self.pattern, &Durable::new(name)?)
            .await
            .map_err(|source| RunError::Subscribe {
                pattern: self.pattern.to_string(),
                source,
            })
    }

    fn message(&self, payload: &[u8]) -> Message {
        Message::from_parts(
            self.subject.clone(),
            Bytes::copy_from_slice(payload),
            Headers::new(),
        )
    }
}

/// The stamps of a subscription's deliveries, each acknowledged (where the
/// delivery can be) before it counts, as a program handling each delivery
/// would: AMQP subscriptions, and durable ones on every broker.
fn acking(subscription: Subscription) -> Receiver {
    subscription
        .then(|delivery| async move {
            let mut delivery = delivery?;
            if delivery.is_acknowledgeable() {
                delivery.ack().await?;
            }
            Stamp::parse(delivery.payload())
        })
        .boxed()
}

#[switchboard::async_trait]
impl Client for SwitchboardClient {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        while let Some(payload) = burst.next_payload() {
            self.broker.publish(self.message(payload)).await?;
        }
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        Ok(self.broker.publish(self.message(payload)).await?)
    }

    async fn flush(&self) -> Result<(), RunError> {
        Ok(self.broker.flush().await?)
    }

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        let subscription = match group {
            Some(group) => {
                let group = QueueGroup::new(group)?;
                self.broker.subscribe_group(&self.pattern, &group).await
            }
            None => self.broker.subscribe(&self.pattern).await,
        }
        .map_err(|source| RunError::Subscribe {
            pattern: self.pattern.to_string(),
            source,
        })?;
        if !self.broker.capabilities().ack {
            // Nothing to acknowledge: as lean as the raw clients' `map`.
            return Ok(subscription
                .map(|delivery| Stamp::parse(delivery?.payload()))
                .boxed());
        }
        Ok(acking(subscription))
    }

    async fn create_durable(&self, name: &str) -> Result<(), RunError> {
        // Creating the consumer is subscribing once; the subscription is
        // closed at once, the consumer stays, and this connection now knows
        // the subject is stored (its `flush` waits for the broker's acks).
        // Closed, not dropped: a dropped subscription unsubscribes in the
        // background (AMQP cancels its consumer asynchronously, a Redis
        // member finishes the read it is blocked in), so it could still take
        // the first messages published, under the very name the measured
        // subscriber resumes, and hold them until their ack deadline.
        let subscription = self.durable_subscription(name).await?;
        subscription
            .close()
            .await
            .map_err(|source| RunError::Subscribe {
                pattern: self.pattern.to_string(),
                source,
            })
    }

    async fn subscribe_durable(&self, name: &str) -> Result<Receiver, RunError> {
        Ok(acking(self.durable_subscription(name).await?))
    }

    async fn remove_durable(&self, name: &str) -> Result<(), RunError> {
        Ok(self
            .broker
            .remove_durable(&self.pattern, &Durable::new(name)?)
            .await?)
    }

    /// A `Worker` with one route on the run's subject: the default layers
    /// (dead letter, retry, timeout, catch panic), the handler `work`.
    async fn serve(&self, work: Work) -> Result<Receiver, RunError> {
        let (handled, receiver) = futures::channel::mpsc::unbounded();
        let concurrency = work.concurrency;
        let handler = move |ctx: Context| {
            let (work, handled) = (work.clone(), handled.clone());
            async move {
                let stamp = work.handle(Stamp::parse(ctx.payload())).await;
                let _ = handled.unbounded_send(stamp);
                Ok::<_, HandlerError>(())
            }
        };
        let running = Worker::new(self.broker.clone())
            .route(Route::new(self.pattern.as_str(), handler).concurrency(concurrency))
            .start()
            .await
            .map_err(RunError::WorkerStart)?;
        if let Ok(mut slot) = self.worker.lock() {
            *slot = Some(running);
        }
        Ok(receiver.boxed())
    }

    fn queue_groups(&self) -> bool {
        self.broker.capabilities().queue_groups
    }

    async fn close(&self) {
        let worker = self.worker.lock().ok().and_then(|mut slot| slot.take());
        if let Some(worker) = worker {
            worker.shutdown().await;
        }
        if let Err(error) = self.broker.close().await {
            tracing::debug!("closing {}: {error}", self.broker.kind());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_numbers_its_messages_and_stops_at_count() {
        let progress = ProgressBar::hidden();
        let mut burst = Burst::new(7, 32, 3, None, &progress);
        let mut seqs = Vec::new();
        while let Some(payload) = burst.next_payload() {
            let stamp = Stamp::parse(payload).unwrap();
            assert_eq!((stamp.publisher, stamp.len, stamp.intended_ns), (7, 32, 0));
            seqs.push(stamp.seq);
        }
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(burst.sent(), 3);
        assert!(burst.next_payload().is_none());
    }

    #[test]
    fn burst_checks_the_deadline_every_progress_step() {
        let progress = ProgressBar::hidden();
        let mut burst = Burst::new(1, 16, 10 * PROGRESS_STEP, Some(Instant::now()), &progress);
        let mut handed = 0;
        while burst.next_payload().is_some() {
            handed += 1;
        }
        assert_eq!(handed, PROGRESS_STEP);
        assert_eq!(burst.sent(), PROGRESS_STEP);
        assert_eq!(progress.position(), PROGRESS_STEP);
        assert!(burst.next_payload().is_none());
        assert_eq!(progress.position(), PROGRESS_STEP);
    }
}
