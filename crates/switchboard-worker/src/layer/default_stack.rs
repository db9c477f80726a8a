//! The default stack of a [`Route::new`](crate::Route::new):
//! `DeadLetter(Retry(Timeout(CatchPanic(handler))))` as one handler.
//!
//! Nested as four layers, each `#[async_trait]` call boxes a future that
//! holds the next one's box, and each layer clones the context: about a
//! quarter of the worker's cost per message with a handler that does
//! nothing (BENCHMARKS.md, "Worker throughput"). Here the same four steps —
//! the very functions the layers run — make one future, boxed once; the
//! behaviour is the layers', step for step.

use std::time::Duration;

use async_trait::async_trait;

use super::catch_panic::catching;
use super::dead_letter::dead_lettering;
use super::retry::retrying;
use super::timeout::timed;
use crate::{BoxHandler, Context, DeadLetterSubject, Handler, HandlerError, RetryPolicy};

/// `DeadLetter(Retry(Timeout(CatchPanic(handler))))`, the timeout and the
/// dead letter optional.
pub(crate) struct DefaultStack {
    pub(crate) handler: BoxHandler,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dead_letter: Option<DeadLetterSubject>,
}

impl DefaultStack {
    /// Handles `ctx` as [`Handler::call`] does, as a future the caller may
    /// keep unboxed (the route loop does: a box less per message).
    pub(crate) async fn run(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters = ctx.counters();
        // One attempt: Timeout(CatchPanic(handler)).
        let attempt = |ctx: Context| async move {
            let call = catching(counters, self.handler.as_ref().call(ctx));
            match self.timeout {
                Some(after) => timed(after, counters, call).await,
                None => call.await,
            }
        };
        let retried = retrying(&self.retry, &ctx, attempt);
        match &self.dead_letter {
            Some(subject) => dead_lettering(subject, &ctx, retried).await,
            None => retried.await,
        }
    }
}

#[async_trait]
impl Handler for DefaultStack {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self.run(ctx).await
    }
}
