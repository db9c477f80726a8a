//! The [`Worker`] builder: routes and layers, checked and subscribed by
//! [`Worker::start`], which hands them to a [`Running`] worker.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Broker;
use tokio_util::sync::CancellationToken;

use crate::layer::BoxLayer;
use crate::route::Prepared;
use crate::running::Launch;
use crate::stats::Counters;
use crate::{find_cycle, BoxHandler, Error, Handler, Layer, Route, Running, Stats, Summary};

/// How long in-flight handlers may take to finish after a shutdown signal, unless set.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Reacts to messages: routes patterns to handlers on one broker.
///
/// Build it with [`Worker::new`] and [`Worker::on`] / [`Worker::route`]
/// (middleware for every route with [`Worker::layer`]), then
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
    layers: Vec<BoxLayer>,
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
            layers: Vec::new(),
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

    /// Wraps every route — those added before and after this call — in
    /// `layer`, once per message, outside the route's own stack (retries and
    /// dead letter included). The first layer added is the outermost: it
    /// sees the message first and the result last, as with tower's
    /// `ServiceBuilder` (see [where layers go](crate::layer#where-layers-go)).
    /// To run a layer on every attempt instead, wrap the handler with
    /// [`HandlerExt::with`](crate::HandlerExt::with).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Instant;
    /// use switchboard_core::{MemoryBroker, Message, Publisher};
    /// use switchboard_worker::{
    ///     async_trait, layer_fn, BoxHandler, Context, Handler, HandlerError, Worker,
    /// };
    ///
    /// /// Logs how long each message took, retries included.
    /// struct Timed(BoxHandler);
    ///
    /// #[async_trait]
    /// impl Handler for Timed {
    ///     async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
    ///         let (start, subject) = (Instant::now(), ctx.subject().clone());
    ///         let result = self.0.call(ctx).await;
    ///         println!("{subject} took {:?}", start.elapsed());
    ///         result
    ///     }
    /// }
    ///
    /// let broker = MemoryBroker::new();
    /// let worker = Worker::new(broker.clone())
    ///     .layer(layer_fn(Timed))
    ///     .on("some_event", |_ctx: Context| async { Ok::<_, HandlerError>(()) })
    ///     .max_messages(1);
    /// let running = worker.start().await?;
    /// broker.publish(Message::new("some_event", "hello")?).await?;
    /// assert_eq!(running.wait().await.stats.handled, 1);
    /// # Ok(()) }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxHandler> + Send + Sync + 'static,
    {
        self.layers.push(BoxLayer::new(layer));
        self
    }

    /// How long the shutdown may take once asked: in-flight handlers finish
    /// within it, and flushing and closing get what they leave of it (see
    /// [`Running::wait`]).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Stops (gracefully) once `count` messages were taken and finished;
    /// with 0, before taking any.
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

    /// The same worker on `broker` (what `testing::TestBroker::start` runs it on).
    #[cfg(feature = "testing")]
    pub(crate) fn on_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = broker;
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
            .map(|route| route.prepare(&self.layers))
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
        // The handler-duration clock calibrates itself once per process
        // (up to 200 ms of spinning): on a blocking thread, while the routes
        // subscribe, rather than in the first message's handling.
        let calibrating = tokio::task::spawn_blocking(quanta::Instant::now);
        let mut subscriptions = Vec::with_capacity(prepared.len());
        for route in &prepared {
            let subscribed = match (&route.durable, &route.group) {
                (Some(durable), _) => self.broker.subscribe_durable(&route.pattern, durable).await,
                (None, Some(group)) => self.broker.subscribe_group(&route.pattern, group).await,
                (None, None) => self.broker.subscribe(&route.pattern).await,
            };
            let subscription = subscribed.map_err(|source| Error::Subscribe {
                pattern: route.pattern.to_string(),
                source,
            })?;
            subscriptions.push(subscription);
        }
        // A failure here (a panic in the calibration) is only a slower first message.
        let _ = calibrating.await;
        let launch = Launch {
            broker: self.broker,
            counters: self.counters,
            shutdown: self.shutdown,
            grace: self.grace,
            max_messages: self.max_messages,
            close_broker: self.close_broker,
        };
        Ok(Running::spawn(
            launch,
            prepared.into_iter().zip(subscriptions).collect(),
        ))
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
            .field("layers", &self.layers)
            .field("grace", &self.grace)
            .field("max_messages", &self.max_messages)
            .finish_non_exhaustive()
    }
}
