//! The [`Handler`] trait, its implementation for async closures, and
//! [`HandlerExt`] to wrap handlers in layers.
//!
//! A handler takes a [`Context`] (the raw message); adapters that decode the
//! payload for a typed function are handlers too, built on the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::BoxError;

use crate::{CatchPanic, Context, DeadLetter, HandlerError, Layer, Retry, RetryPolicy, Timeout};

/// Handles one message. Returning `Ok` means done (the worker acknowledges it);
/// `Err` means this attempt failed (layers retry, dead-letter...).
///
/// Implemented for async closures `Fn(Context) -> impl Future<Output =
/// Result<(), E>>` with `E: Into<BoxError>` (`String`, `&str`, any error,
/// `HandlerError`), for `Arc<H>`, and by every layer ([`Retry`],
/// [`Timeout`], [`CatchPanic`], [`DeadLetter`]), so layers nest freely.
///
/// ```
/// use switchboard_worker::{async_trait, Context, Handler, HandlerError};
///
/// struct Pager;
///
/// #[async_trait]
/// impl Handler for Pager {
///     async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
///         println!("paging for {}", ctx.subject());
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one attempt at `ctx`'s message.
    async fn call(&self, ctx: Context) -> Result<(), HandlerError>;

    /// The same as [`call`](Handler::call), as a future of the handler's
    /// own type where it has one, so that the caller need not box it.
    ///
    /// The worker calls this on the handler of a route made with
    /// [`Route::new`](crate::Route::new) (or [`Worker::on`](crate::Worker::on))
    /// when no worker layer or schema check wraps it: for an async closure
    /// it is the closure's future, without the allocation `#[async_trait]`
    /// makes per call (with a handler that does nothing, about 290
    /// instructions per message, a quarter of what the worker added over a
    /// raw async-nats loop; BENCHMARKS.md, "Round six").
    ///
    /// Implementing [`call`](Handler::call) is enough: this default hands
    /// on its (boxed) future. A handler type of your own may override this
    /// to return its future unboxed, as the typed handlers do. A
    /// type-erased handler (`dyn Handler`) cannot be called this way.
    fn call_unboxed(&self, ctx: Context) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        Self: Sized,
    {
        self.call(ctx)
    }
}

#[async_trait]
impl<F, Fut, E> Handler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self(ctx).await.map_err(HandlerError::new)
    }

    // Not an `async fn`: `#[async_trait]` on this impl would box it.
    #[allow(clippy::manual_async_fn)]
    fn call_unboxed(&self, ctx: Context) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        Self: Sized,
    {
        // The closure is called on the first poll, as `call` does, so that a
        // panic before its future exists is caught as the attempt's.
        async move { self(ctx).await.map_err(HandlerError::new) }
    }
}

// Written out rather than with `#[async_trait]`: it hands on the inner
// handler's boxed future instead of boxing it again (a route's handler is
// an `Arc<dyn Handler>`, called once per message and attempt).
impl<H: Handler + ?Sized> Handler for Arc<H> {
    fn call<'life0, 'async_trait>(
        &'life0 self,
        ctx: Context,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).call(ctx)
    }
}

/// A type-erased handler, as routes store them.
pub type BoxHandler = Arc<dyn Handler>;

/// Wraps any handler in a layer, method-chain style:
/// `handler.catch_panic().timeout(d).retry(policy).dead_letter()` is the
/// default stack of a [`Route`](crate::Route), innermost first.
pub trait HandlerExt: Handler + Sized {
    /// Wraps this handler in `layer` (any [`Layer`]). Given to
    /// [`Route::new`](crate::Route::new), the result sits inside the default
    /// stack, so the layer runs on every attempt.
    fn with<L: Layer<Self>>(self, layer: L) -> L::Handler {
        layer.layer(self)
    }

    /// Fails an attempt that takes longer than `after` (see [`Timeout`]).
    fn timeout(self, after: Duration) -> Timeout<Self> {
        Timeout::new(self, after)
    }

    /// Turns a panic into a failed attempt (see [`CatchPanic`]).
    fn catch_panic(self) -> CatchPanic<Self> {
        CatchPanic::new(self)
    }

    /// Retries failed attempts (see [`Retry`]).
    fn retry(self, policy: RetryPolicy) -> Retry<Self> {
        Retry::new(self, policy)
    }

    /// Publishes messages that failed to `dlq.<subject>` (see [`DeadLetter`]).
    fn dead_letter(self) -> DeadLetter<Self> {
        DeadLetter::new(self)
    }

    /// Erases the type.
    fn boxed(self) -> BoxHandler {
        Arc::new(self)
    }
}

impl<H: Handler> HandlerExt for H {}
