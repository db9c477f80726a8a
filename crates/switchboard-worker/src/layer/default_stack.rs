//! The default stack of a [`Route::new`](crate::Route::new):
//! `DeadLetter(Retry(Timeout(CatchPanic(handler))))` as one handler.
//!
//! Nested as four layers, each `#[async_trait]` call boxes a future that
//! holds the next one's box, and each layer clones the context: about a
//! quarter of the worker's cost per message with a handler that does
//! nothing (BENCHMARKS.md, "Worker throughput"). Here the same four steps —
//! the very functions the layers run — make one future, boxed once; the
//! behaviour is the layers', step for step.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;

use super::catch_panic::{catching, panicked};
use super::dead_letter::dead_lettering;
use super::retry::{record_attempt, retrying_after};
use super::timeout::{finish_by, timed};
use crate::{BoxHandler, Context, DeadLetterSubject, Handler, HandlerError, RetryPolicy};

/// `DeadLetter(Retry(Timeout(CatchPanic(handler))))`, the timeout and the
/// dead letter optional.
///
/// Made for the handler's type where the route knows it (`H` is then the
/// handler itself, and its future lives in this stack's, unboxed: see
/// [`Handler::call_unboxed`]), or for a [`BoxHandler`] where it does not.
pub(crate) struct DefaultStack<H = BoxHandler> {
    pub(crate) handler: Arc<H>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dead_letter: Option<DeadLetterSubject>,
}

impl<H: Handler> DefaultStack<H> {
    /// Handles `ctx` as [`Handler::call`] does, as a future the caller may
    /// keep unboxed (the route loop does: a box less per message); `began`
    /// is when the call started, which the timeout counts from (the route
    /// loop passes the time it read for its duration histogram).
    pub(crate) async fn run_from(
        &self,
        ctx: Context,
        began: quanta::Instant,
    ) -> Result<(), HandlerError> {
        let counters = ctx.counters();
        // The first attempt's Timeout(CatchPanic(handler)) written out here,
        // its first poll made in this future: most handlers are done on it,
        // and then the retry's, the timeout's and the dead letter's futures
        // are never made (about 420 instructions per message).
        let number = ctx.attempt().max(1);
        record_attempt(number);
        let mut call = std::pin::pin!(self
            .handler
            .as_ref()
            .call_unboxed(ctx.clone().with_attempt(number)));
        let first_poll =
            poll_fn(|cx| Poll::Ready(catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)))))
                .await;
        let first = match first_poll {
            Ok(Poll::Ready(Ok(()))) => return Ok(()),
            Ok(Poll::Ready(Err(error))) => Err(error),
            Err(payload) => Err(panicked(counters, payload)),
            Ok(Poll::Pending) => {
                let call = catching(counters, call);
                match self.timeout {
                    Some(after) => {
                        // The limit counts from the call, on tokio's clock
                        // (which tests may pause), read only here: most
                        // handlers never get this far.
                        let now = tokio::time::Instant::now();
                        let called = now.checked_sub(began.elapsed()).unwrap_or(now);
                        finish_by(called + after, after, counters, call).await
                    }
                    None => call.await,
                }
            }
        };
        // Further attempts: Timeout(CatchPanic(handler)).
        let attempt = |ctx: Context| async move {
            let call = catching(counters, self.handler.as_ref().call_unboxed(ctx));
            match self.timeout {
                Some(after) => timed(after, counters, call).await,
                None => call.await,
            }
        };
        let retried = retrying_after(&self.retry, &ctx, first, attempt);
        match &self.dead_letter {
            Some(subject) => dead_lettering(subject, &ctx, retried).await,
            None => retried.await,
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for DefaultStack<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self.run_from(ctx, quanta::Instant::now()).await
    }
}
