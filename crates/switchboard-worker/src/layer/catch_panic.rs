//! [`CatchPanic`]: a panicking handler fails its attempt instead of its task.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;

use crate::{Context, Counters, Handler, HandlerError, Layer};

/// Turns a panic in the inner handler into [`HandlerError::Panicked`]: the
/// attempt fails (temporarily: [`Retry`](crate::Retry) tries again) and the
/// worker keeps running.
#[derive(Debug, Clone)]
pub struct CatchPanic<H> {
    inner: H,
}

impl<H> CatchPanic<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        CatchPanic { inner }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_string()
    }
}

/// What [`CatchPanic`] does around one attempt, shared with the route's
/// default stack (which runs it without a box of its own).
pub(crate) async fn catching(
    counters: &Counters,
    attempt: impl Future<Output = Result<(), HandlerError>>,
) -> Result<(), HandlerError> {
    match AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(panicked(counters, payload)),
    }
}

/// The error of an attempt that panicked with `payload`, counted.
pub(crate) fn panicked(counters: &Counters, payload: Box<dyn Any + Send>) -> HandlerError {
    counters.add_panicked();
    HandlerError::Panicked {
        message: panic_message(&*payload),
    }
}

#[async_trait]
impl<H: Handler> Handler for CatchPanic<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters = ctx.counters_handle().clone();
        catching(&counters, self.inner.call(ctx)).await
    }
}

/// The [`Layer`] of [`CatchPanic`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchPanicLayer;

impl<H: Handler> Layer<H> for CatchPanicLayer {
    type Handler = CatchPanic<H>;

    fn layer(&self, inner: H) -> CatchPanic<H> {
        CatchPanic::new(inner)
    }
}
