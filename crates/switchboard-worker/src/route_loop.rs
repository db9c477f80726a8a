//! A route's loop: takes messages from its subscription within its
//! concurrency limit, runs each through the handler stack, acknowledges or
//! gives back, and at shutdown lets in-flight handlers finish.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use switchboard_core::{Delivery, Subscription};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::layer::panic_message;
use crate::metrics::RouteMetrics;
use crate::otel::OtelSpan;
use crate::route::Prepared;
use crate::running::Shared;
use crate::trace::TraceContext;
use crate::{Context, Handler};

/// Most buffered messages looked at (and nacked) per route at shutdown.
const MAX_DRAIN: usize = 10_000;

/// How long handlers cancelled at the end of the grace period may take to
/// give their message back (a nack on a dead link may never finish).
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(1);

/// One route of a running worker.
pub(crate) struct RouteTask {
    name: Arc<str>,
    handler: Arc<dyn Handler>,
    concurrency: usize,
    metrics: Arc<RouteMetrics>,
    max_deliver: Option<u32>,
    shared: Arc<Shared>,
}

impl RouteTask {
    pub(crate) fn new(route: Prepared, metrics: Arc<RouteMetrics>, shared: Arc<Shared>) -> Self {
        let task = RouteTask {
            name: Arc::from(route.pattern.as_str()),
            handler: route.handler,
            concurrency: route.concurrency,
            metrics,
            max_deliver: route.durable.as_ref().and_then(|d| d.max_deliver),
            shared,
        };
        tracing::debug!(route = %task.name, concurrency = task.concurrency, "route subscribed");
        task
    }

    /// Takes messages until stopped, then lets in-flight ones finish within the
    /// grace period, nacks the rest, and hands the subscription back.
    pub(crate) async fn run(self, mut subscription: Subscription) -> Subscription {
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
                    self.metrics.subscription_error(&error);
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
            self.metrics.counters.add_received();
            let job = Job {
                route: self.name.clone(),
                metrics: self.metrics.clone(),
                handler: self.handler.clone(),
                max_deliver: self.max_deliver,
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
        self.shared
            .give_back(&self.metrics, &mut delivery, started)
            .await;
    }
}

/// One message being handled.
struct Job {
    route: Arc<str>,
    metrics: Arc<RouteMetrics>,
    handler: Arc<dyn Handler>,
    max_deliver: Option<u32>,
    shared: Arc<Shared>,
    abort: CancellationToken,
}

impl Job {
    /// Runs the handler stack on `delivery`, then acknowledges it, or nacks
    /// it when the stack failed (rejects it, without redelivery, when the
    /// error is permanent); on abort, gives it back.
    async fn handle(self, mut delivery: Delivery) {
        let shared = &self.shared;
        let mut ctx = Context::for_route(
            delivery.message().clone(),
            delivery.redelivered(),
            self.route.clone(),
            shared.broker.clone(),
            self.metrics.counters.clone(),
            delivery.replier(),
        )
        .with_delivery(delivery.delivery_count(), self.max_deliver);
        // With OpenTelemetry export, the handler's span is the exported one:
        // its ids go into what the handler publishes.
        let (exported, otel_trace) = OtelSpan::consumer(
            &self.route,
            delivery.subject().as_str(),
            shared.broker.kind(),
            TraceContext::from_headers(ctx.headers()).as_ref(),
        );
        if let Some(trace) = otel_trace {
            ctx = ctx.with_trace(trace);
        }
        let span = tracing::info_span!(
            "switchboard.message",
            route = %self.route,
            subject = %delivery.subject(),
            attempt = 1u32,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        if let Some(trace) = ctx.trace() {
            span.record("trace_id", trace.trace_id());
            span.record("span_id", trace.span_id());
            if let Some(parent) = TraceContext::from_headers(ctx.headers()) {
                span.record("parent_span_id", parent.span_id());
            }
        }
        let _in_flight = self.metrics.in_flight();
        let began = Instant::now();
        let call = AssertUnwindSafe(self.handler.call(ctx))
            .catch_unwind()
            .instrument(span.clone());
        let outcome = tokio::select! {
            biased;
            outcome = call => outcome,
            _ = self.abort.cancelled() => {
                shared.give_back(&self.metrics, &mut delivery, true).await;
                exported.end(Some("cancelled at shutdown; the message was given back"));
                return;
            }
        };
        self.metrics.handled_in(began.elapsed());
        let _entered = span.enter();
        let (error, permanent) = match outcome {
            Ok(Ok(())) => {
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "ack failed; the broker may deliver the message again");
                }
                self.metrics.counters.add_handled();
                tracing::debug!("handled");
                exported.end(None);
                return;
            }
            Ok(Err(error)) => (error.to_string(), error.is_permanent()),
            Err(payload) => (format!("panicked: {}", panic_message(&*payload)), false),
        };
        exported.end(Some(&error));
        self.metrics.counters.add_failed();
        if permanent {
            // Redelivered, it would fail the same way, again and again.
            if let Err(reject_error) = delivery.reject().await {
                tracing::warn!(error = %reject_error, "reject failed");
            }
            tracing::error!(%error, "handling failed with a permanent error: the message is rejected without redelivery (give the route a dead letter to keep such messages)");
            return;
        }
        // Read before `nack`, which takes the acknowledgement handle.
        let requeued = (shared.redelivery || delivery.delivery_count().is_some())
            && delivery.is_acknowledgeable();
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
