//! [`Timeout`]: fails an attempt that takes too long, cancelling it.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Context, Counters, Handler, HandlerError, Layer};

/// Fails an attempt that takes longer than a limit with
/// [`HandlerError::Timeout`], cancelling it (dropping its future, which for
/// example kills a child process spawned with `kill_on_drop`). A timeout is
/// temporary: [`Retry`](crate::Retry) tries again.
#[derive(Debug, Clone)]
pub struct Timeout<H> {
    inner: H,
    after: Duration,
}

impl<H> Timeout<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, after: Duration) -> Self {
        Timeout { inner, after }
    }
}

/// What [`Timeout`] does around one attempt, shared with the route's default
/// stack. The limit counts from the call; the timer is only set up when the
/// attempt does not finish on its first poll (most handlers that do not wait
/// on anything never need one).
pub(crate) async fn timed(
    after: Duration,
    counters: &Counters,
    attempt: impl Future<Output = Result<(), HandlerError>>,
) -> Result<(), HandlerError> {
    let deadline = tokio::time::Instant::now() + after;
    let mut attempt = pin!(attempt);
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await {
        return result;
    }
    finish_by(deadline, after, counters, attempt).await
}

/// The rest of [`timed`] once the attempt's first poll found it not
/// finished: waits for it until `deadline` (its start plus `after`).
pub(crate) async fn finish_by(
    deadline: tokio::time::Instant,
    after: Duration,
    counters: &Counters,
    attempt: impl Future<Output = Result<(), HandlerError>>,
) -> Result<(), HandlerError> {
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => {
            counters.add_timed_out();
            Err(HandlerError::Timeout { after })
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters = ctx.counters_handle().clone();
        timed(self.after, &counters, self.inner.call(ctx)).await
    }
}

/// The [`Layer`] of [`Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// Fails attempts that take longer than `after`.
    pub fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl<H: Handler> Layer<H> for TimeoutLayer {
    type Handler = Timeout<H>;

    fn layer(&self, inner: H) -> Timeout<H> {
        Timeout::new(inner, self.after)
    }
}
