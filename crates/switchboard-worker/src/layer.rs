//! The [`Layer`] trait: middleware that wraps a [`Handler`] in another, as
//! tower's `Layer` wraps a service. The built-in layers live one per module
//! below; [`layer_fn`] makes a layer from a function.
//!
//! # Where layers go
//!
//! A message goes through, outermost first:
//!
//! 1. the [`Worker::layer`](crate::Worker::layer)s, in the order they were
//!    added (the first added sees the message first and the result last),
//!    once per message, on every route;
//! 2. the route's stack: with [`Route::new`](crate::Route::new) the default
//!    `DeadLetter(Retry(Timeout(CatchPanic(handler))))`, with
//!    [`Route::custom`](crate::Route::custom) the handler as given;
//! 3. the handler, including whatever it was wrapped in with
//!    [`HandlerExt::with`] — inside the default
//!    stack, so once per attempt.
//!
//! A worker layer therefore sees each message once, after its retries and
//! dead letter: `Ok` when the handler succeeded or the message was
//! dead-lettered, `Err` when the router will nack it. To act on every attempt,
//! wrap the handler instead.

mod catch_panic;
mod dead_letter;
mod default_stack;
mod retry;
mod timeout;

use std::fmt;
use std::sync::Arc;

pub(crate) use catch_panic::panic_message;
pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub use dead_letter::{
    DeadLetter, DeadLetterLayer, DeadLetterSubject, ATTEMPTS_HEADER, ERROR_HEADER,
    MAX_ERROR_HEADER_LEN, ORIGINAL_SUBJECT_HEADER, PERMANENT_HEADER, ROUTE_HEADER,
};
pub(crate) use default_stack::DefaultStack;
pub use retry::{Retry, RetryLayer, RetryPolicy};
pub use timeout::{Timeout, TimeoutLayer};

use crate::{BoxHandler, Handler, HandlerExt};

/// Wraps a handler `H` in another handler: logging, metrics, deduplication,
/// decoding, or any of the built-in [`Retry`], [`Timeout`], [`CatchPanic`]
/// and [`DeadLetter`].
///
/// Give one to [`Worker::layer`](crate::Worker::layer) to run it on every
/// route (it then wraps a [`BoxHandler`]), or to
/// [`HandlerExt::with`] to wrap one handler. See
/// [the module docs](crate::layer) for the order layers run in.
///
/// ```
/// use switchboard_worker::{async_trait, Context, Handler, HandlerError, Layer};
///
/// /// Logs how each message ended.
/// struct Logged<H>(H);
///
/// #[async_trait]
/// impl<H: Handler> Handler for Logged<H> {
///     async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
///         let subject = ctx.subject().clone();
///         let result = self.0.call(ctx).await;
///         println!("{subject}: {}", if result.is_ok() { "done" } else { "failed" });
///         result
///     }
/// }
///
/// struct LogLayer;
///
/// impl<H: Handler> Layer<H> for LogLayer {
///     type Handler = Logged<H>;
///     fn layer(&self, inner: H) -> Logged<H> {
///         Logged(inner)
///     }
/// }
/// ```
pub trait Layer<H> {
    /// The handler `layer` returns.
    type Handler: Handler;

    /// Wraps `inner`.
    fn layer(&self, inner: H) -> Self::Handler;
}

/// A [`Layer`] from a function that wraps a handler, made by [`layer_fn`].
#[derive(Clone, Copy)]
pub struct LayerFn<F> {
    wrap: F,
}

/// A [`Layer`] that calls `wrap` on the handler: `layer_fn(|inner| Logged(inner))`.
pub fn layer_fn<F>(wrap: F) -> LayerFn<F> {
    LayerFn { wrap }
}

impl<F, H, Out> Layer<H> for LayerFn<F>
where
    F: Fn(H) -> Out,
    Out: Handler,
{
    type Handler = Out;

    fn layer(&self, inner: H) -> Out {
        (self.wrap)(inner)
    }
}

impl<F> fmt::Debug for LayerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerFn")
            .field("wrap", &std::any::type_name::<F>())
            .finish()
    }
}

/// A layer over type-erased handlers, as a [`Worker`](crate::Worker) keeps them.
#[derive(Clone)]
pub(crate) struct BoxLayer {
    name: &'static str,
    wrap: Arc<dyn Fn(BoxHandler) -> BoxHandler + Send + Sync>,
}

impl BoxLayer {
    pub(crate) fn new<L>(layer: L) -> Self
    where
        L: Layer<BoxHandler> + Send + Sync + 'static,
    {
        BoxLayer {
            name: std::any::type_name::<L>(),
            wrap: Arc::new(move |inner| layer.layer(inner).boxed()),
        }
    }

    /// `inner` wrapped in each of `layers`, the first outermost.
    pub(crate) fn wrap_all(layers: &[BoxLayer], inner: BoxHandler) -> BoxHandler {
        layers
            .iter()
            .rev()
            .fold(inner, |inner, layer| (layer.wrap)(inner))
    }
}

impl fmt::Debug for BoxLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
