//! Reactions for switchboard: route subject patterns to async handlers, with
//! retries, dead letters, timeouts, panic isolation, per-route concurrency
//! limits and graceful shutdown — on any broker.
//!
//! The article's `@On('some_event')` worker becomes:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_core::{MemoryBroker, Message, Publisher};
//! use switchboard_worker::{Context, HandlerError, Worker};
//!
//! let broker = MemoryBroker::new(); // or `switchboard::connect(url).await?`
//! let worker = Worker::new(broker.clone())
//!     .on("some_event", |ctx: Context| async move {
//!         println!("reacting to {}", ctx.payload_str().unwrap_or("<binary>"));
//!         Ok::<_, HandlerError>(())
//!     });
//! let token = worker.shutdown_token(); // cancel it (e.g. on Ctrl-C) to stop gracefully
//! let running = worker.start().await?;
//! broker.publish(Message::new("some_event", "Terminator just dropped in our space-time")?).await?;
//! while running.stats().handled < 1 {
//!     tokio::task::yield_now().await;
//! }
//! token.cancel();
//! let summary = running.wait().await;
//! assert_eq!(summary.stats.handled, 1);
//! # Ok(()) }
//! ```
//!
//! # Pieces
//!
//! - [`Handler`]: `async fn call(&self, ctx: Context) -> Result<(), HandlerError>`,
//!   implemented by async closures and your own types;
//! - layers, each a `Handler` wrapping another, usable alone, reordered or
//!   replaced: [`Retry`] (exponential backoff with jitter), [`Timeout`]
//!   (per attempt), [`CatchPanic`] and [`DeadLetter`] (to `dlq.<subject>` with
//!   [`ORIGINAL_SUBJECT_HEADER`], [`ATTEMPTS_HEADER`] and [`ERROR_HEADER`]);
//!   [`HandlerExt`] chains them;
//! - [`Route`]: pattern, queue group, concurrency limit (a semaphore in the
//!   router; 1 keeps order) and the default stack, outermost first:
//!   `DeadLetter(Retry(Timeout(CatchPanic(handler))))`;
//! - [`find_cycle`]: routes that would hand messages round in a loop (their
//!   publish targets, declared with [`Route::publishes_to`], and dead
//!   letters), which [`Worker::start`] refuses;
//! - [`Worker`]: subscribes the routes, acknowledges what succeeded or was
//!   dead-lettered, nacks what failed, counts ([`Stats`]) and shuts down
//!   gracefully, returning a [`Summary`].
//!
//! A message is acknowledged only once its handler stack returned: after the
//! handler succeeded, or after its dead letter was published and flushed. A
//! worker that dies before that has not acknowledged it, and a broker with
//! redelivery delivers it again to the next worker of the queue group (the
//! [delivery contract](switchboard_core::Delivery#the-delivery-contract)):
//! at least once, so handlers should tolerate a repeat
//! ([`Context::redelivered`] says when the broker knows it is one).
//!
//! Retries happen in the worker on every broker, so behaviour is the same
//! whether or not the broker redelivers; nothing is dropped silently: a
//! message that cannot be handled nor dead-lettered is nacked where the
//! broker redelivers and logged as an error otherwise.
//!
//! # Observability
//!
//! Each message is handled in a `switchboard.message` tracing span with the
//! `route`, `subject` and `attempt` fields; [`Worker::stats`] and
//! [`Running::stats`] read the counters.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod context;
mod cycle;
mod error;
mod handler;
mod layers;
mod route;
mod stats;
mod worker;

pub use async_trait::async_trait;
pub use context::Context;
pub use cycle::{find_cycle, CycleStep, RouteCycle, Via};
pub use error::{Error, HandlerError, Result};
pub use handler::{BoxHandler, Handler, HandlerExt};
pub use layers::{
    CatchPanic, DeadLetter, DeadLetterSubject, Retry, RetryPolicy, Timeout, ATTEMPTS_HEADER,
    ERROR_HEADER, MAX_ERROR_HEADER_LEN, ORIGINAL_SUBJECT_HEADER, ROUTE_HEADER,
};
pub use route::{Route, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT};
pub use stats::{Counters, Stats};
pub use worker::{Running, StopReason, Summary, Unfinished, Worker, DEFAULT_GRACE_PERIOD};
