//! [`CatchPanic`]: a panicking handler fails its attempt instead of its task.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;

use crate::{Context, Handler, HandlerError, Layer};

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

#[async_trait]
impl<H: Handler> Handler for CatchPanic<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters_ctx = ctx.clone();
        match AssertUnwindSafe(self.inner.call(ctx)).catch_unwind().await {
            Ok(result) => result,
            Err(payload) => {
                counters_ctx.counters().add_panicked();
                Err(HandlerError::Panicked {
                    message: panic_message(&*payload),
                })
            }
        }
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
