//! The worker: subscribes its routes, runs their handlers, shuts down gracefully.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use switchboard_core::{Broker, Delivery, Subject, Subscription};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::layers::panic_message;
use crate::route::Prepared;
use crate::stats::Counters;
use crate::{find_cycle, Context, Error, Handler, Route, Stats};

/// How long in-flight handlers may take to finish after a shutdown signal, unless set.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Most buffered messages looked at (and nacked) per route at shutdown.
const MAX_DRAIN: usize = 10_000;

/// How long handlers cancelled at the end of the grace period may take to
/// give their message back (a nack on a dead link may never finish).
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(1);

/// Reacts to messages: routes patterns to handlers on one broker.
///
/// Build it with [`Worker::new`] and [`Worker::on`] / [`Worker::route`], then
/// [`Worker::run`] it (until [`Worker::shutdown_token`] is cancelled) or
/// [`Worker::run_until`] a future resolves (e.g. Ctrl-C). Shutdown is
/// graceful: no new message is taken, in-flight handlers get
/// [`grace_period`](Worker::grace_period) to finish, what they published is
/// flushed, the subscriptions are closed, and what was left unfinished is
/// nacked (where the broker supports it) and listed in the [`Summary`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use switchboard_core::{MemoryBroker, Message, Publisher};
/// use switchboard_worker::{Context, HandlerError, Route, Worker};
///
/// let broker = MemoryBroker::new();
/// let worker = Worker::new(broker.clone())
///     .on("some_event", |ctx: Context| async move {
///         println!("reacting to {:?}", ctx.payload_str());
///         Ok::<_, HandlerError>(())
///     })
///     .route(
///         Route::new("alerts.>", |_ctx: Context| async { Err("pager unreachable") })
///             .group("pagers")
///             .attempts(2)
///             .backoff(Duration::from_millis(1)),
///     )
///     .max_messages(2); // stop after two messages (or use run_until / shutdown_token)
/// let running = worker.start().await?; // subscribed: safe to publish
/// broker.publish(Message::new("some_event", "Terminator just dropped in")?).await?;
/// broker.publish(Message::new("alerts.cpu", "CPU at 98%")?).await?;
/// let summary = running.wait().await;
/// assert_eq!(summary.stats.handled, 2);
/// assert_eq!(summary.stats.dead_lettered, 1); // published to `dlq.alerts.cpu`
/// assert_eq!(summary.stats.retried, 1);
/// # Ok(()) }
/// ```
pub struct Worker {
    broker: Arc<dyn Broker>,
    routes: Vec<Route>,
    grace: Duration,
    max_messages: Option<u64>,
    close_broker: bool,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
}

impl Worker {
    /// A worker on `broker`: any [`Broker`], such as a `MemoryBroker` or the
    /// `Arc<dyn Broker>` from `switchboard::connect`.
    pub fn new<B: Broker + 'static>(broker: B) -> Self {
        Worker {
            broker: Arc::new(broker),
            routes: Vec::new(),
            grace: DEFAULT_GRACE_PERIOD,
            max_messages: None,
            close_broker: false,
            counters: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Routes messages matching `pattern` to `handler` with the default
    /// settings and layers (see [`Route`]).
    pub fn on(self, pattern: impl Into<String>, handler: impl Handler) -> Self {
        self.route(Route::new(pattern, handler))
    }

    /// Adds a configured route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// How long the shutdown may take once asked: in-flight handlers finish
    /// within it, and flushing and closing get what they leave of it (see
    /// [`Running::wait`]).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Stops (gracefully) once `count` messages were taken and finished.
    pub fn max_messages(mut self, count: u64) -> Self {
        self.max_messages = Some(count);
        self
    }

    /// Whether to close the broker handle at the end of shutdown (default: no,
    /// the caller owns it; subscriptions are always closed).
    pub fn close_broker(mut self, close: bool) -> Self {
        self.close_broker = close;
        self
    }

    /// The routes, in the order added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Cancel this token to shut the worker down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The live counters, readable from anywhere while the worker runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Checks every route — its settings ([`Error::InvalidRoute`]) and that
    /// no routes hand messages round in a loop ([`Error::Cycle`], see
    /// [`find_cycle`](crate::find_cycle)) — without subscribing.
    pub fn check(&self) -> Result<(), Error> {
        self.prepare().map(drop)
    }

    fn prepare(&self) -> Result<Vec<Prepared>, Error> {
        if self.routes.is_empty() {
            return Err(Error::NoRoutes);
        }
        let prepared = self
            .routes
            .iter()
            .map(Route::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        match find_cycle(&self.routes) {
            Some(cycle) => Err(Error::Cycle(cycle)),
            None => Ok(prepared),
        }
    }

    /// Checks every route (as [`Worker::check`]), subscribes them all, and
    /// starts handling messages. Once this returns, every route receives what
    /// is published.
    pub async fn start(self) -> Result<Running, Error> {
        let prepared = self.prepare()?;
        let mut subscriptions = Vec::with_capacity(prepared.len());
        for route in &prepared {
            let subscribed = match &route.group {
                Some(group) => self.broker.subscribe_group(&route.pattern, group).await,
                None => self.broker.subscribe(&route.pattern).await,
            };
            let subscription = subscribed.map_err(|source| Error::Subscribe {
                pattern: route.pattern.to_string(),
                source,
            })?;
            subscriptions.push(subscription);
        }
        let shared = Arc::new(Shared {
            broker: self.broker.clone(),
            counters: self.counters.clone(),
            stop: self.shutdown.child_token(),
            grace: self.grace,
            max_messages: self.max_messages,
            taken: AtomicU64::new(0),
            redelivery: self.broker.capabilities().redelivery,
            unfinished: Mutex::new(Vec::new()),
            active: AtomicUsize::new(prepared.len()),
            ended: CancellationToken::new(),
            deadline: OnceLock::new(),
        });
        let mut loops = JoinSet::new();
        for (route, subscription) in prepared.into_iter().zip(subscriptions) {
            let route = RouteTask {
                name: Arc::from(route.pattern.as_str()),
                handler: route.handler,
                concurrency: route.concurrency,
                shared: shared.clone(),
            };
            tracing::debug!(route = %route.name, concurrency = route.concurrency, "route subscribed");
            loops.spawn(route.run(subscription));
        }
        Ok(Running {
            routes: loops.len(),
            loops,
            shared,
            shutdown: self.shutdown,
            close_broker: self.close_broker,
            started: Instant::now(),
        })
    }

    /// Starts and runs until [`Worker::shutdown_token`] is cancelled, the
    /// [`max_messages`](Worker::max_messages) are done or every subscription
    /// ended; then shuts down gracefully.
    pub async fn run(self) -> Result<Summary, Error> {
        Ok(self.start().await?.wait().await)
    }

    /// Like [`Worker::run`], also shutting down when `signal` resolves.
    pub async fn run_until<F>(self, signal: F) -> Result<Summary, Error>
    where
        F: Future<Output = ()> + Send,
    {
        Ok(self.start().await?.run_until(signal).await)
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("broker", &self.broker.kind())
            .field("routes", &self.routes)
            .field("grace", &self.grace)
            .field("max_messages", &self.max_messages)
            .finish_non_exhaustive()
    }
}

/// State shared by the route loops of one running worker.
struct Shared {
    broker: Arc<dyn Broker>,
    counters: Arc<Counters>,
    /// Cancelled on shutdown or when `max_messages` were taken: stop taking.
    stop: CancellationToken,
    grace: Duration,
    max_messages: Option<u64>,
    taken: AtomicU64,
    redelivery: bool,
    unfinished: Mutex<Vec<Unfinished>>,
    /// Route loops still running; `ended` is cancelled when it reaches 0.
    active: AtomicUsize,
    ended: CancellationToken,
    /// When the shutdown must be over: set by the first route loop that
    /// stops on `stop` (or by `Running::wait` if none did), to that moment
    /// plus the grace period.
    deadline: OnceLock<tokio::time::Instant>,
}

impl Shared {
    /// The end of the grace period, counted from the first call.
    fn deadline(&self) -> tokio::time::Instant {
        *self
            .deadline
            .get_or_init(|| tokio::time::Instant::now() + self.grace)
    }

    fn record_unfinished(&self, unfinished: Unfinished) {
        self.counters.add_unfinished();
        match self.unfinished.lock() {
            Ok(mut list) => list.push(unfinished),
            Err(poisoned) => poisoned.into_inner().push(unfinished),
        }
    }
}

/// A started worker: its routes are subscribed and handling messages.
pub struct Running {
    routes: usize,
    loops: JoinSet<Subscription>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    close_broker: bool,
    started: Instant,
}

impl Running {
    /// How many routes are subscribed.
    pub fn routes(&self) -> usize {
        self.routes
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Cancel this token to shut the worker down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down now, gracefully, and returns the summary.
    pub async fn shutdown(self) -> Summary {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Runs until `signal` resolves (or the worker stops by itself), then
    /// shuts down gracefully.
    pub async fn run_until<F>(self, signal: F) -> Summary
    where
        F: Future<Output = ()> + Send,
    {
        let shutdown = self.shutdown.clone();
        let stop = self.shared.stop.clone();
        tokio::select! {
            _ = signal => shutdown.cancel(),
            _ = stop.cancelled() => {}
            _ = self.shared.ended.cancelled() => {}
        }
        self.wait().await
    }

    /// Waits until the worker stops — [`shutdown_token`](Running::shutdown_token)
    /// cancelled, `max_messages` done, or every subscription ended — and
    /// finishes the shutdown.
    ///
    /// The whole shutdown fits in the [grace period](Worker::grace_period),
    /// counted from when the worker stopped taking messages, whatever the
    /// broker or the link does: in-flight handlers get what it leaves, then
    /// flushing, closing the subscriptions and (with
    /// [`close_broker`](Worker::close_broker)) the broker get what is left of
    /// it; a step that does not finish in time is abandoned and listed in
    /// [`Summary::errors`]. Handlers cancelled at the end of the grace period
    /// get at most one more second to give their message back.
    pub async fn wait(mut self) -> Summary {
        let mut subscriptions = Vec::with_capacity(self.routes);
        let mut errors = Vec::new();
        while let Some(joined) = self.loops.join_next().await {
            match joined {
                Ok(subscription) => subscriptions.push(subscription),
                Err(error) => errors.push(format!("a route task failed: {error}")),
            }
        }
        let deadline = self.shared.deadline();
        let grace = self.shared.grace;
        let late =
            |what: &str| format!("{what} did not finish within the grace period ({grace:?})");
        let broker = &self.shared.broker;
        // Handlers publish only for messages they took: with none taken there
        // is nothing to flush (and a broker that is down need not be waited for).
        if self.shared.counters.snapshot().received > 0 {
            match tokio::time::timeout_at(deadline, broker.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    errors.push(format!("flushing what handlers published failed: {error}"))
                }
                Err(_) => errors.push(late("flushing what handlers published")),
            }
        }
        for subscription in subscriptions {
            let pattern = subscription.pattern().to_string();
            match tokio::time::timeout_at(deadline, subscription.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => errors.push(format!(
                    "closing the subscription to {pattern:?} failed: {error}"
                )),
                Err(_) => errors.push(late(&format!("closing the subscription to {pattern:?}"))),
            }
        }
        if self.close_broker {
            match tokio::time::timeout_at(deadline, broker.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => errors.push(format!("closing the broker failed: {error}")),
                Err(_) => errors.push(late("closing the broker")),
            }
        }
        let reason = if self.shutdown.is_cancelled() {
            StopReason::Shutdown
        } else if self.shared.stop.is_cancelled() {
            StopReason::MaxMessages
        } else {
            StopReason::SubscriptionsEnded
        };
        let unfinished = match self.shared.unfinished.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for error in &errors {
            tracing::warn!("{error}");
        }
        Summary {
            stats: self.shared.counters.snapshot(),
            unfinished,
            reason,
            errors,
            elapsed: self.started.elapsed(),
        }
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("routes", &self.routes)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Shutdown was asked (signal, token, [`Running::shutdown`]).
    Shutdown,
    /// The `max_messages` were done.
    MaxMessages,
    /// Every subscription ended (e.g. the broker handle was closed).
    SubscriptionsEnded,
}

/// A message the worker did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unfinished {
    /// The route's pattern.
    pub route: String,
    /// The message's subject.
    pub subject: Subject,
    /// Whether its handler had started (otherwise it was still buffered).
    pub started: bool,
    /// Whether it was nacked for redelivery (false where the broker cannot redeliver).
    pub requeued: bool,
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Summary {
    /// The counters at the end.
    pub stats: Stats,
    /// Messages left unfinished (grace period over, or buffered at shutdown).
    pub unfinished: Vec<Unfinished>,
    /// Why it stopped.
    pub reason: StopReason,
    /// What went wrong while shutting down (flush, unsubscribe, close).
    pub errors: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker stopped after {:.1?}: {}",
            self.elapsed, self.stats
        )?;
        if !self.unfinished.is_empty() {
            let requeued = self.unfinished.iter().filter(|u| u.requeued).count();
            write!(
                f,
                "; unfinished: {} ({} requeued, {} not redeliverable)",
                self.unfinished
                    .iter()
                    .map(|u| u.subject.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                requeued,
                self.unfinished.len() - requeued
            )?;
        }
        Ok(())
    }
}

struct RouteTask {
    name: Arc<str>,
    handler: Arc<dyn Handler>,
    concurrency: usize,
    shared: Arc<Shared>,
}

impl RouteTask {
    /// Takes messages until stopped, then lets in-flight ones finish within the
    /// grace period, nacks the rest, and hands the subscription back.
    async fn run(self, mut subscription: Subscription) -> Subscription {
        let shared = &self.shared;
        let limit = Arc::new(Semaphore::new(self.concurrency));
        let abort = CancellationToken::new();
        let mut tasks = JoinSet::new();
        loop {
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let item = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                item = subscription.next() => item,
            };
            let delivery = match item {
                None => {
                    tracing::info!(route = %self.name, "subscription ended");
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(route = %self.name, %error, "subscription error");
                    continue;
                }
                Some(Ok(delivery)) => delivery,
            };
            if let Some(max) = shared.max_messages {
                let taken = shared.taken.fetch_add(1, Ordering::AcqRel) + 1;
                if taken > max {
                    self.give_back(delivery, false).await;
                    shared.stop.cancel();
                    break;
                }
                if taken == max {
                    shared.stop.cancel();
                }
            }
            shared.counters.add_received();
            let job = Job {
                route: self.name.clone(),
                handler: self.handler.clone(),
                shared: shared.clone(),
                abort: abort.clone(),
            };
            tasks.spawn(async move {
                job.handle(delivery).await;
                drop(permit);
            });
        }
        // Stopped taking. On shutdown the grace period started when the
        // first route stopped and is the same for all; a route whose own
        // subscription ended gives its handlers a grace period of their own.
        let deadline = if shared.stop.is_cancelled() {
            shared.deadline()
        } else {
            tokio::time::Instant::now() + shared.grace
        };
        // What the subscription already buffered is given back.
        for _ in 0..MAX_DRAIN {
            match subscription.next().now_or_never() {
                Some(Some(Ok(delivery))) => self.give_back(delivery, false).await,
                Some(Some(Err(_))) => continue,
                Some(None) | None => break,
            }
        }
        let finished = tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(route = %self.name, grace = ?shared.grace, "grace period over; cancelling unfinished handlers");
            abort.cancel();
            let given_back = tokio::time::timeout(GIVE_BACK_PATIENCE, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if given_back.is_err() {
                tracing::warn!(route = %self.name, "handlers still giving their message back after the grace period; abandoned");
                tasks.abort_all();
            }
        }
        if shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.ended.cancel();
        }
        subscription
    }

    /// Nacks a delivery the worker will not handle, and records it.
    async fn give_back(&self, mut delivery: Delivery, started: bool) {
        give_back(&self.shared, &self.name, &mut delivery, started).await;
    }
}

async fn give_back(shared: &Shared, route: &str, delivery: &mut Delivery, started: bool) {
    let requeued = shared.redelivery && delivery.is_acknowledgeable();
    if let Err(error) = delivery.nack().await {
        tracing::warn!(route, subject = %delivery.subject(), %error, "nack failed");
    }
    if !requeued {
        tracing::warn!(route, subject = %delivery.subject(), "message left unhandled at shutdown; the broker cannot redeliver it");
    }
    shared.record_unfinished(Unfinished {
        route: route.to_string(),
        subject: delivery.subject().clone(),
        started,
        requeued,
    });
}

struct Job {
    route: Arc<str>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    abort: CancellationToken,
}

impl Job {
    async fn handle(self, mut delivery: Delivery) {
        let shared = &self.shared;
        let span = tracing::info_span!(
            "switchboard.message",
            route = %self.route,
            subject = %delivery.subject(),
            attempt = 1u32,
        );
        let ctx = Context::for_route(
            delivery.message().clone(),
            delivery.redelivered(),
            self.route.clone(),
            shared.broker.clone(),
            shared.counters.clone(),
        );
        let call = AssertUnwindSafe(self.handler.call(ctx))
            .catch_unwind()
            .instrument(span.clone());
        let outcome = tokio::select! {
            biased;
            outcome = call => outcome,
            _ = self.abort.cancelled() => {
                give_back(shared, &self.route, &mut delivery, true).await;
                return;
            }
        };
        let _entered = span.enter();
        let error = match outcome {
            Ok(Ok(())) => {
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "ack failed; the broker may deliver the message again");
                }
                shared.counters.add_handled();
                tracing::debug!("handled");
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(payload) => format!("panicked: {}", panic_message(&*payload)),
        };
        shared.counters.add_failed();
        // Read before `nack`, which takes the acknowledgement handle.
        let requeued = shared.redelivery && delivery.is_acknowledgeable();
        if let Err(nack_error) = delivery.nack().await {
            tracing::warn!(error = %nack_error, "nack failed");
        }
        if requeued {
            tracing::warn!(%error, "handling failed; nacked for redelivery");
        } else {
            tracing::error!(%error, "handling failed and the broker cannot redeliver: the message is not handled");
        }
    }
}
