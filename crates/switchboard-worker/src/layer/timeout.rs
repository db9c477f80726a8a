//! [`Timeout`]: fails an attempt that takes too long, cancelling it.

use std::time::Duration;

use async_trait::async_trait;

use crate::{Context, Handler, HandlerError, Layer};

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

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters_ctx = ctx.clone();
        match tokio::time::timeout(self.after, self.inner.call(ctx)).await {
            Ok(result) => result,
            Err(_) => {
                counters_ctx.counters().add_timed_out();
                Err(HandlerError::Timeout { after: self.after })
            }
        }
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
