//! A started worker: [`Running`] holds its route loops and the state they
//! share, and runs the shutdown — flush, unsubscribe, close — within the
//! grace period.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use switchboard_core::{Broker, Delivery, Subject, Subscription};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::metrics::{MetricsServer, RouteMetrics};
use crate::route::Prepared;
use crate::route_loop::{RouteTask, GIVE_BACK_PATIENCE};
use crate::stats::Counters;
use crate::{Error, Stats, StopReason, Summary, Unfinished};

/// What a [`Worker`](crate::Worker) hands on when it starts.
pub(crate) struct Launch {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
    pub(crate) max_messages: Option<u64>,
    pub(crate) close_broker: bool,
}

/// State shared by the route loops of one running worker.
pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) counters: Arc<Counters>,
    /// Cancelled on shutdown or when `max_messages` were taken: stop taking.
    pub(crate) stop: CancellationToken,
    /// Set once `stop` is cancelled, and what the route loops read before
    /// each take: an atomic load, where the token's `is_cancelled` locks a
    /// mutex every route shares (~40 instructions per message, and
    /// contended between routes on different threads). Set with the token
    /// by [`Shared::stop_taking`]; when the token is cancelled through the
    /// shutdown token, by the watcher [`Running`] keeps.
    stopping: AtomicBool,
    pub(crate) grace: Duration,
    pub(crate) max_messages: Option<u64>,
    pub(crate) taken: AtomicU64,
    pub(crate) redelivery: bool,
    pub(crate) unfinished: Mutex<Vec<Unfinished>>,
    /// Route loops still running; `ended` is cancelled when it reaches 0.
    pub(crate) active: AtomicUsize,
    pub(crate) ended: CancellationToken,
    /// When the shutdown must be over: set by the first route loop that
    /// stops on `stop` (or by `Running::wait` if none did), to that moment
    /// plus the grace period.
    pub(crate) deadline: OnceLock<tokio::time::Instant>,
    /// What each route measured, in the order the routes were added.
    pub(crate) routes: Vec<Arc<RouteMetrics>>,
}

impl Shared {
    /// Stops every route taking messages (`max_messages` were taken).
    pub(crate) fn stop_taking(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether the routes must stop taking messages.
    #[inline]
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The end of the grace period, counted from the first call.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        *self
            .deadline
            .get_or_init(|| tokio::time::Instant::now() + self.grace)
    }

    /// Nacks a delivery the worker will not finish (`None`: one without
    /// acknowledgement, nothing to nack), and records it as unfinished.
    pub(crate) async fn give_back(
        &self,
        route: &RouteMetrics,
        subject: &Subject,
        delivery: Option<&mut Delivery>,
        started: bool,
    ) {
        let counters = &route.counters;
        let route = &*route.route;
        // A durable delivery (it has a count) comes again on any broker.
        let requeued = delivery.as_ref().is_some_and(|d| {
            d.is_acknowledgeable() && (self.redelivery || d.delivery_count().is_some())
        });
        if let Some(delivery) = delivery {
            // The route's subscription closes next: see `hand_back`.
            if let Err(error) = delivery.hand_back().await {
                tracing::warn!(route, %subject, %error, "nack failed");
            }
        }
        if !requeued {
            tracing::warn!(route, %subject, "message left unhandled at shutdown; the broker cannot redeliver it");
        }
        counters.add_unfinished();
        let unfinished = Unfinished {
            route: route.to_string(),
            subject: subject.clone(),
            started,
            requeued,
        };
        match self.unfinished.lock() {
            Ok(mut list) => list.push(unfinished),
            Err(poisoned) => poisoned.into_inner().push(unfinished),
        }
    }
}

/// A started worker: its routes are subscribed and handling messages.
pub struct Running {
    /// Sets `Shared::stopping` when the shutdown token is cancelled.
    _watcher: AbortOnDropHandle<()>,
    routes: usize,
    loops: JoinSet<Subscription>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    close_broker: bool,
    started: Instant,
}

impl Running {
    /// Spawns one loop per subscribed route.
    pub(crate) fn spawn(launch: Launch, routes: Vec<(Prepared, Subscription)>) -> Running {
        // The route label is the pattern; a pattern taken by several routes
        // gets `#2`, `#3`... from its second route on, so series stay distinct.
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        let metrics: Vec<Arc<RouteMetrics>> = routes
            .iter()
            .map(|(route, _)| {
                let pattern = route.pattern.as_str();
                let count = seen.entry(pattern).or_default();
                *count += 1;
                let label = match *count {
                    1 => pattern.to_string(),
                    n => format!("{pattern}#{n}"),
                };
                Arc::new(RouteMetrics::new(
                    Arc::from(label.as_str()),
                    launch.counters.clone(),
                ))
            })
            .collect();
        let shared = Arc::new(Shared {
            redelivery: launch.broker.capabilities().redelivery,
            broker: launch.broker,
            counters: launch.counters,
            stop: launch.shutdown.child_token(),
            stopping: AtomicBool::new(false),
            grace: launch.grace,
            max_messages: launch.max_messages,
            taken: AtomicU64::new(0),
            unfinished: Mutex::new(Vec::new()),
            active: AtomicUsize::new(routes.len()),
            ended: CancellationToken::new(),
            deadline: OnceLock::new(),
            routes: metrics.clone(),
        });
        if shared.max_messages == Some(0) {
            // Done before the first: a route would otherwise take one
            // message only to give it back (lost where the broker cannot
            // redeliver it).
            shared.stop_taking();
        }
        let mut loops = JoinSet::new();
        for ((route, subscription), metrics) in routes.into_iter().zip(metrics) {
            let task = RouteTask::new(route, metrics, shared.clone());
            loops.spawn(task.run(subscription));
        }
        // A shutdown comes through the token (`Running::shutdown`, or its
        // holder cancelling it): mirrored into `stopping` for the loops.
        // Aborted with `Running`, so a worker dropped unstopped leaves no task.
        let watched = shared.clone();
        let watcher = AbortOnDropHandle::new(tokio::spawn(async move {
            watched.stop.cancelled().await;
            watched.stopping.store(true, Ordering::Release);
        }));
        Running {
            _watcher: watcher,
            routes: loops.len(),
            loops,
            shared,
            shutdown: launch.shutdown,
            close_broker: launch.close_broker,
            started: Instant::now(),
        }
    }

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

    /// Serves the worker's metrics (Prometheus / OpenMetrics text on
    /// `/metrics`) and health (`/healthz`, `/readyz`) over HTTP on `addr`
    /// (port 0 picks a free port: see [`MetricsServer::local_addr`]), until
    /// the returned server is stopped or dropped. The [`metrics`](crate::metrics)
    /// module lists the series and what `/readyz` checks.
    ///
    /// Fails with [`Error::Metrics`](crate::Error::Metrics) when `addr`
    /// cannot be listened on (the port is taken, or not this host's address).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use switchboard_core::MemoryBroker;
    /// use switchboard_worker::{Context, HandlerError, Worker};
    ///
    /// let running = Worker::new(MemoryBroker::new())
    ///     .on("jobs.>", |_ctx: Context| async { Ok::<_, HandlerError>(()) })
    ///     .start()
    ///     .await?;
    /// let server = running.serve_metrics("127.0.0.1:0".parse()?).await?;
    /// println!("scrape http://{}/metrics", server.local_addr());
    /// running.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<MetricsServer, Error> {
        crate::metrics::serve(self.shared.clone(), addr).await
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
    /// The whole shutdown fits in the [grace period](crate::Worker::grace_period),
    /// counted from when the worker stopped taking messages, whatever the
    /// broker or the link does: in-flight handlers get what it leaves, then
    /// flushing, closing the subscriptions and (with
    /// [`close_broker`](crate::Worker::close_broker)) the broker get what is left of
    /// it; a step that does not finish in time is abandoned and listed in
    /// [`Summary::errors`]. Handlers cancelled at the end of the grace period
    /// get at most one more second to give their message back, and closing
    /// the subscriptions, which gives back what they fetched ahead, gets at
    /// least a second too.
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
        // Handlers cancelled at the end of the grace period leave the steps
        // below no time: each is still tried once (what finishes at once,
        // finishes), and the error then says why it was not waited for.
        let spent = tokio::time::Instant::now() >= deadline;
        let late = |what: &str| {
            if spent {
                format!("{what} was not waited for: in-flight handlers used the whole grace period ({grace:?})")
            } else {
                format!("{what} did not finish within the grace period ({grace:?})")
            }
        };
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
        // Closing a subscription is what gives back what it fetched ahead
        // (and what handlers nacked, which a durable consumer may have
        // delivered to it again meanwhile): without it NATS keeps those
        // until the ack wait is over. So it gets a second even when the
        // handlers used the whole grace period, as they do to give back.
        let closing = deadline.max(tokio::time::Instant::now() + GIVE_BACK_PATIENCE);
        for subscription in subscriptions {
            let pattern = subscription.pattern().to_string();
            match tokio::time::timeout_at(closing, subscription.close()).await {
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
