//! A route's loop: takes messages from its subscription within its
//! concurrency limit, runs each through the handler stack, acknowledges or
//! gives back, and at shutdown lets in-flight handlers finish.
//!
//! # Where the handlers run
//!
//! With concurrency 1 (the default) the loop runs the handler itself: it
//! would wait for the handler before taking the next message anyway, and a
//! task per message cost a spawn and a task switch per message (with a
//! handler that does nothing, the worker's main cost). With more, each
//! message gets a task of its own, so that handlers run in parallel on the
//! runtime's threads (a handler busy computing would otherwise hold up the
//! others).
//!
//! # Order per subject
//!
//! A route [ordered per subject](crate::Route::ordered_per_subject) keeps,
//! for each subject, the end of the latest handling taken ([`Turns`]); the
//! next message on that subject waits for it before its stack runs. Only
//! handlings in flight are waited on, so the table holds at most one entry
//! per slot once the finished ones are swept.
//!
//! # The clock
//!
//! Each message's handling is timed for the duration histogram: two clock
//! reads per message. They are the CPU's time-stamp counter through
//! `quanta` rather than `Instant::now()`, whose `clock_gettime` through the
//! vDSO cost 25 ns per read on the machines this was measured on, about 4 %
//! of the worker's process CPU per message with a handler that does nothing
//! (BENCHMARKS.md, "Round eleven"). `quanta` calibrates the counter against
//! the OS clock once per process (bounded at 200 ms; the worker does it on
//! a blocking thread while it subscribes), and falls back to the OS clock
//! where the counter is not invariant. Timeouts keep tokio's clock (which
//! tests may pause): it is read only for a handler not done on its first
//! poll.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use switchboard_core::{Delivery, Reply, Subject, Subscription};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::context::{failure_code, Kept, Spare};
use crate::layer::{panic_message, DefaultStack};
use crate::metrics::RouteMetrics;
use crate::otel::OtelSpan;
use crate::route::Prepared;
use crate::running::Shared;
use crate::trace::TraceContext;
use crate::{BoxHandler, Context, HandlerError};

/// Most buffered messages looked at (and nacked) per route at shutdown.
const MAX_DRAIN: usize = 10_000;

/// How many messages a route handling one at a time handles before it lets
/// the runtime's other tasks run (tokio's budget is 128 steps per turn).
const YIELD_EVERY: u32 = 64;

/// How long handlers cancelled at the end of the grace period may take to
/// give their message back (a nack on a dead link may never finish).
pub(crate) const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(1);

/// What every message of a route needs besides its delivery: shared by the
/// route's handlings (one reference count per message, not one per field).
pub(crate) struct RouteState {
    name: Arc<str>,
    /// The route's stack, run by a loop made for its type.
    stack: Arc<dyn Looped>,
    metrics: Arc<RouteMetrics>,
    max_deliver: Option<u32>,
    shared: Arc<Shared>,
    /// Cancelled when the grace period is over: handlers still running give
    /// their message back.
    abort: CancellationToken,
    /// Set from a failed ack until one goes through: an outage fails every
    /// unsettled delivery's ack at once (233 warnings for one RabbitMQ cut),
    /// so only the first is a warning.
    acks_failing: AtomicBool,
}

/// A running route loop, counted in [`Shared::active`] until dropped; the
/// last one out ends the worker.
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.cancel();
        }
    }
}

/// One route of a running worker.
pub(crate) struct RouteTask {
    state: Arc<RouteState>,
    concurrency: usize,
    ordered_per_subject: bool,
}

/// The loop's wait for the worker to stop taking messages, made once (each
/// wait made anew would register with the token again) and polled only
/// while the subscription has nothing ready.
pub(crate) type Stopped<'a> = Pin<&'a mut WaitForCancellationFutureOwned>;

impl RouteTask {
    pub(crate) fn new(route: Prepared, metrics: Arc<RouteMetrics>, shared: Arc<Shared>) -> Self {
        let task = RouteTask {
            state: Arc::new(RouteState {
                name: Arc::from(route.pattern.as_str()),
                stack: route.stack,
                metrics,
                max_deliver: route.durable.as_ref().and_then(|d| d.max_deliver),
                shared,
                abort: CancellationToken::new(),
                acks_failing: AtomicBool::new(false),
            }),
            concurrency: route.concurrency,
            ordered_per_subject: route.ordered_per_subject,
        };
        tracing::debug!(route = %task.state.name, concurrency = task.concurrency, "route subscribed");
        task
    }

    /// Takes messages until stopped, then lets in-flight ones finish within the
    /// grace period, nacks the rest, and hands the subscription back.
    pub(crate) async fn run(self, mut subscription: Subscription) -> Subscription {
        let state = &self.state;
        let shared = &state.shared;
        // Counted out however the loop ends, a panic included: readiness
        // must not go on reporting a route whose task is gone.
        let _active = Active(shared);
        let mut tasks = JoinSet::new();
        {
            let stopped = std::pin::pin!(shared.stop.clone().cancelled_owned());
            if self.concurrency <= 1 {
                state
                    .stack
                    .clone()
                    .one_at_a_time(&self, &mut subscription, stopped, &mut tasks)
                    .await;
            } else {
                self.concurrently(&mut subscription, stopped, &mut tasks)
                    .await;
            }
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
            match subscription.next_ready() {
                Some(Ok(delivery)) => self.give_back(delivery).await,
                Some(Err(_)) => continue,
                None => break,
            }
        }
        let finished = tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(route = %state.name, grace = ?shared.grace, "grace period over; cancelling unfinished handlers");
            state.abort.cancel();
            let given_back = tokio::time::timeout(GIVE_BACK_PATIENCE, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if given_back.is_err() {
                tracing::warn!(route = %state.name, "handlers still giving their message back after the grace period; abandoned");
                tasks.abort_all();
            }
        }
        subscription
    }

    /// Concurrency above 1: a task per message, at most `concurrency` at a time.
    async fn concurrently(
        &self,
        subscription: &mut Subscription,
        mut stopped: Stopped<'_>,
        tasks: &mut JoinSet<()>,
    ) {
        let limit = Arc::new(Semaphore::new(self.concurrency));
        let mut turns = self.ordered_per_subject.then(Turns::default);
        loop {
            // Reap finished tasks so the set stays small.
            if tasks.len() > self.concurrency {
                while tasks.try_join_next().is_some() {}
            }
            let permit = match limit.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::select! {
                    biased;
                    _ = stopped.as_mut() => break,
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                },
            };
            let Some(delivery) = self.take(subscription, &mut stopped).await else {
                break;
            };
            let Some(turns) = turns.as_mut() else {
                let handling = self
                    .state
                    .stack
                    .clone()
                    .handle(self.state.clone(), delivery);
                tasks.spawn(async move {
                    handling.await;
                    drop(permit);
                });
                continue;
            };
            let (previous, done) = turns.take(delivery.subject(), self.concurrency);
            let state = self.state.clone();
            tasks.spawn(async move {
                if let Some(previous) = previous {
                    let aborted = tokio::select! {
                        biased;
                        () = state.abort.cancelled() => true,
                        _ = previous => false,
                    };
                    if aborted {
                        // Never started: given back as the buffered ones are.
                        let mut delivery = delivery;
                        let subject = delivery.subject().clone();
                        state
                            .shared
                            .give_back(&state.metrics, &subject, Some(&mut delivery), false)
                            .await;
                        return;
                    }
                }
                state.stack.clone().handle(state, delivery).await;
                drop((done, permit));
            });
        }
    }

    /// The next message to handle, counted as received; `None` once the
    /// loop must stop taking (the worker stops, `max_messages` were taken, or
    /// the subscription ended).
    async fn take(
        &self,
        subscription: &mut Subscription,
        stopped: &mut Stopped<'_>,
    ) -> Option<Delivery> {
        let state = &self.state;
        let shared = &state.shared;
        loop {
            // Checked before each take: a subscription that always has a
            // message ready would never let the wait below see the stop.
            if shared.is_stopping() {
                return None;
            }
            // The subscription first, then the stop (as a biased select,
            // polling the stream directly).
            let item = std::future::poll_fn(|cx| {
                if let Poll::Ready(item) = subscription.poll_next_unpin(cx) {
                    return Poll::Ready(Some(item));
                }
                stopped.as_mut().poll(cx).map(|()| None)
            })
            .await?;
            let delivery = match item {
                None => {
                    tracing::info!(route = %state.name, "subscription ended");
                    return None;
                }
                Some(Err(error)) => {
                    state.metrics.subscription_error(&error);
                    tracing::warn!(route = %state.name, %error, "subscription error");
                    continue;
                }
                Some(Ok(delivery)) => delivery,
            };
            if let Some(max) = shared.max_messages {
                let taken = shared.taken.fetch_add(1, Ordering::AcqRel) + 1;
                if taken > max {
                    self.give_back(delivery).await;
                    shared.stop_taking();
                    return None;
                }
                if taken == max {
                    shared.stop_taking();
                }
            }
            state.metrics.counters.add_received();
            return Some(delivery);
        }
    }

    /// Nacks a delivery the worker will not handle, and records it.
    async fn give_back(&self, mut delivery: Delivery) {
        let state = &self.state;
        let subject = delivery.subject().clone();
        state
            .shared
            .give_back(&state.metrics, &subject, Some(&mut delivery), false)
            .await;
    }
}

/// Per subject, the end of the latest handling taken by a route ordered per
/// subject: the next message on that subject waits for it.
#[derive(Default)]
struct Turns {
    /// Resolves (sent or dropped) when that handling is over.
    last: HashMap<Subject, oneshot::Receiver<()>>,
}

impl Turns {
    /// A turn on `subject`: the end of the handling before it on that
    /// subject, if one was taken, and the sender to drop once this one is
    /// over. At most `concurrency` handlings are in flight, so entries past
    /// that many are finished ones, swept before the table grows.
    fn take(
        &mut self,
        subject: &Subject,
        concurrency: usize,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        if self.last.len() > concurrency.saturating_mul(2).saturating_add(64) {
            self.last.retain(|_, over| {
                matches!(over.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let (done, over) = oneshot::channel();
        (self.last.insert(subject.clone(), over), done)
    }
}

/// A route's stack as its loop runs it: the loop is made for the stack's
/// type, so that the stack's future (and, for a handler of a known type,
/// the handler's) lives in the loop's frame without a box per message.
pub(crate) trait Looped: Send + Sync + 'static {
    /// Concurrency 1: each message is handled in the loop, before the next
    /// is taken. A handler still running when the worker stops goes on in
    /// `tasks`, within the grace period, as with higher concurrency.
    fn one_at_a_time<'a>(
        self: Arc<Self>,
        task: &'a RouteTask,
        subscription: &'a mut Subscription,
        stopped: Stopped<'a>,
        tasks: &'a mut JoinSet<()>,
    ) -> BoxFuture<'a, ()>;

    /// The handling of one message, for a task of its own.
    fn handle(
        self: Arc<Self>,
        state: Arc<RouteState>,
        delivery: Delivery,
    ) -> BoxFuture<'static, ()>;
}

/// A stack the route loop can run.
pub(crate) trait Stack: Send + Sync + 'static {
    /// Handles `ctx`; `began` is when the call started, read once by the
    /// loop for the duration histogram and the timeout both.
    fn run_stack(
        &self,
        ctx: Context,
        began: quanta::Instant,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<H: crate::Handler> Stack for DefaultStack<H> {
    fn run_stack(
        &self,
        ctx: Context,
        began: quanta::Instant,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.run_from(ctx, began)
    }
}

/// A stack known only as a handler (a custom route's, or one under worker layers).
pub(crate) struct Erased(pub(crate) BoxHandler);

impl Stack for Erased {
    fn run_stack(
        &self,
        ctx: Context,
        _began: quanta::Instant,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.0.as_ref().call(ctx)
    }
}

impl<S: Stack> Looped for S {
    fn one_at_a_time<'a>(
        self: Arc<Self>,
        task: &'a RouteTask,
        subscription: &'a mut Subscription,
        mut stopped: Stopped<'a>,
        tasks: &'a mut JoinSet<()>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // One allocation for the loop, reused by each message's handling
            // (a box per message was a malloc and a free per message).
            let mut job = Box::pin(None);
            // The previous message's context, for the next one.
            let mut spare = None;
            // Messages handled since the loop last gave way to other tasks.
            let mut since_yield = 0u32;
            while let Some(delivery) = task.take(subscription, &mut stopped).await {
                job.set(Some(handle(
                    task.state.clone(),
                    self.clone(),
                    delivery,
                    Recycle::Yes(spare.take()),
                )));
                let Some(running) = job.as_mut().as_pin_mut() else {
                    continue;
                };
                let stop = tokio::select! {
                    biased;
                    left = running => {
                        spare = left;
                        false
                    }
                    _ = stopped.as_mut() => true,
                };
                if stop {
                    tasks.spawn(async move {
                        if let Some(running) = job.as_mut().as_pin_mut() {
                            running.await;
                        }
                    });
                    break;
                }
                // Handlers that finish at once never yield: give the runtime's
                // other tasks their turn now and then, as awaiting a task did.
                // Every `YIELD_EVERY` messages rather than by tokio's budget
                // (`consume_budget` was ~50 instructions per message): a
                // tokio channel under the subscription takes from the budget
                // too, so on NATS or memory the loop gave way every 64
                // messages, as it does now on every broker.
                since_yield += 1;
                if since_yield == YIELD_EVERY {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
        })
    }

    fn handle(
        self: Arc<Self>,
        state: Arc<RouteState>,
        delivery: Delivery,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            handle(state, self, delivery, Recycle::No).await;
        })
    }
}

/// Whether a handling reuses its route's previous context and hands its
/// own back for the next (a loop that handles one message at a time), and
/// the previous one's if it was left.
enum Recycle {
    Yes(Option<Spare>),
    No,
}

/// Runs the handler stack on `delivery`, then acknowledges it, or nacks it
/// when the stack failed (rejects it, without redelivery, when the error is
/// permanent); on abort, gives it back. With [`Recycle::Yes`], returns the
/// context's shared part for the next message once nothing else holds it
/// (a context allocated and dropped per message cost ~160 instructions more).
async fn handle<S: Stack>(
    state: Arc<RouteState>,
    stack: Arc<S>,
    delivery: Delivery,
    recycle: Recycle,
) -> Option<Spare> {
    let shared = &state.shared;
    // Read once: the handler's context, the OpenTelemetry span and the
    // tracing span all start from the message's `traceparent`.
    let parent = TraceContext::from_headers(delivery.headers());
    let (redelivered, delivery_count, replier) = (
        delivery.redelivered(),
        delivery.delivery_count(),
        delivery.replier(),
    );
    // Where there is nothing to acknowledge (NATS core, Redis PUBSUB,
    // memory) the delivery is not kept: its message moves into the context
    // instead of being copied (a copy of a payload made from a `Vec` costs
    // an allocation, and its drop a second free).
    let (message, mut delivery) = if delivery.is_acknowledgeable() {
        (delivery.message().clone(), Some(delivery))
    } else {
        (delivery.into_message(), None)
    };
    let subject = message.subject().clone();
    // Kept to tell a requester of a failure for good (`None` unless a request).
    let requester = replier.clone();
    let delivered = (redelivered, delivery_count, state.max_deliver);
    let recycling = matches!(recycle, Recycle::Yes(_));
    let mut ctx = match recycle {
        Recycle::Yes(Some(spare)) => spare.reuse(message, parent.as_ref(), delivered, replier),
        Recycle::Yes(None) | Recycle::No => Context::for_route(
            message,
            parent.as_ref(),
            delivered,
            state.name.clone(),
            shared.broker.clone(),
            state.metrics.counters.clone(),
            replier,
        ),
    };
    // With OpenTelemetry export, the handler's span is the exported one:
    // its ids go into what the handler publishes.
    let (exported, otel_trace) = OtelSpan::consumer(
        &state.name,
        subject.as_str(),
        &*shared.broker,
        parent.as_ref(),
    );
    if let Some(trace) = otel_trace {
        ctx = ctx.with_trace(trace);
    }
    let span = tracing::info_span!(
        "switchboard.message",
        route = %state.name,
        subject = %subject,
        attempt = 1u32,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(trace) = ctx.trace() {
        span.record("trace_id", trace.trace_id());
        span.record("span_id", trace.span_id());
        if let Some(parent) = &parent {
            span.record("parent_span_id", parent.span_id());
        }
    }
    // Held from here, once the context is complete (`with_trace` above
    // would copy a shared part someone else holds).
    let kept = recycling.then(|| ctx.keep());
    let _in_flight = state.metrics.in_flight();
    let began = quanta::Instant::now();
    // The default stack runs in this future, not in a box of its own;
    // pinned where it is made, so that the wrappers below move a pointer
    // rather than the whole stack's state (three copies of it were ~450
    // instructions per message).
    let call = std::pin::pin!(stack.run_stack(ctx, began));
    // The span moves in: the events below name it as their parent through
    // `call.span()` rather than by a clone (with INFO on, each clone and
    // each entry is a registry update).
    let mut call = std::pin::pin!(AssertUnwindSafe(call).catch_unwind().instrument(span));
    // The stack first, then the abort (a biased select), whose wait is made
    // only once the stack was not done on its first poll: most handlings
    // never need it (making and dropping it was ~60 instructions).
    let mut abort = std::pin::pin!(None);
    let outcome = std::future::poll_fn(|cx| {
        if let Poll::Ready(outcome) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(outcome));
        }
        if abort.is_none() {
            abort.set(Some(state.abort.cancelled()));
        }
        match abort.as_mut().as_pin_mut() {
            Some(aborted) => aborted.poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    })
    .await;
    let Some(outcome) = outcome else {
        shared
            .give_back(&state.metrics, &subject, delivery.as_mut(), true)
            .await;
        exported.end(Some("cancelled at shutdown; the message was given back"));
        return None;
    };
    // The stack is done: its copies of the context are gone, unless the
    // handler kept one.
    let spare = kept.and_then(Kept::into_spare);
    state.metrics.handled_in(began.elapsed());
    // What follows logs in the message's span without entering it: an
    // entered span held across the acknowledgement's `.await` would stay the
    // thread's current span while other tasks ran there, and their events
    // would be logged as this message's. The acknowledgement itself runs in
    // the span (what the adapter logs belongs to the message).
    let span = call.span();
    let (error, permanent) = match outcome {
        Ok(Ok(())) => {
            if let Some(delivery) = &mut delivery {
                match delivery.ack().instrument(span.clone()).await {
                    Ok(()) if state.acks_failing.load(Ordering::Relaxed) => {
                        state.acks_failing.store(false, Ordering::Relaxed);
                        tracing::info!(parent: span, "acks go through again");
                    }
                    Ok(()) => {}
                    Err(error) if state.acks_failing.swap(true, Ordering::Relaxed) => {
                        tracing::debug!(parent: span, %error, "ack failed");
                    }
                    Err(error) => {
                        tracing::warn!(parent: span, %error, "ack failed; the broker may deliver the message again (further failed acks are logged at debug level until one goes through)");
                    }
                }
            }
            state.metrics.counters.add_handled();
            tracing::debug!(parent: span, "handled");
            exported.end(None);
            return spare;
        }
        Ok(Err(error)) => (error.to_string(), error.is_permanent()),
        Err(payload) => (format!("panicked: {}", panic_message(&*payload)), false),
    };
    exported.end(Some(&error));
    state.metrics.counters.add_failed();
    if permanent {
        // Redelivered, it would fail the same way, again and again.
        if let Some(delivery) = &mut delivery {
            if let Err(reject_error) = delivery.reject().instrument(span.clone()).await {
                tracing::warn!(parent: span, error = %reject_error, "reject failed");
            }
        }
        tracing::error!(parent: span, %error, "handling failed with a permanent error: the message is rejected without redelivery (give the route a dead letter to keep such messages)");
        Box::pin(reply_failure(requester, true, &error, span)).await;
        return spare;
    }
    // Its last delivery (`max_deliver` reached): a nack brings nothing back,
    // whatever the broker could do otherwise. Here when its dead letter
    // could not be sent, or the route has none.
    let exhausted = matches!(
        (delivery_count, state.max_deliver),
        (Some(count), Some(max)) if count >= max
    );
    // Read before `nack`, which takes the acknowledgement handle.
    let requeued = !exhausted
        && (shared.redelivery || delivery_count.is_some())
        && delivery.as_ref().is_some_and(Delivery::is_acknowledgeable);
    if let Some(delivery) = &mut delivery {
        if let Err(nack_error) = delivery.nack().instrument(span.clone()).await {
            tracing::warn!(parent: span, error = %nack_error, "nack failed");
        }
    }
    if requeued {
        // Delivered again, the request may still be answered.
        tracing::warn!(parent: span, %error, "handling failed; nacked for redelivery");
    } else if exhausted {
        tracing::error!(parent: span, %error, "handling failed on the message's last delivery (max_deliver) and it was not dead-lettered: the broker will not deliver it again, so it is lost");
        Box::pin(reply_failure(requester, false, &error, span)).await;
    } else {
        tracing::error!(parent: span, %error, "handling failed and the broker cannot redeliver: the message is not handled");
        Box::pin(reply_failure(requester, false, &error, span)).await;
    }
    spare
}

/// Answers a request whose handling failed for good with an error reply
/// (400 when the error is permanent, 500 otherwise), so that its requester
/// fails at once rather than waiting out its timeout. Awaited in a box, so
/// that its state does not enlarge every message's future: in line, the
/// worker counted 33 instructions more per message than with it removed,
/// boxed 9 (`MODES=nats-worker benches/instructions.sh`; a build's code
/// layout alone moves that count by up to ~40, so both are within noise of
/// the code before error replies, which counted 6,585 against 6,547 now).
async fn reply_failure(
    requester: Option<Arc<dyn Reply>>,
    permanent: bool,
    error: &str,
    span: &tracing::Span,
) {
    let Some(requester) = requester else {
        return;
    };
    if let Err(error) = requester.reply_error(failure_code(permanent), error).await {
        tracing::warn!(parent: span, %error, "the error reply to the request could not be sent; the requester waits out its timeout");
    }
}
