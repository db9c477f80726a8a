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
//! - [`HandlerError`]: temporary (retried) or
//!   [permanent](HandlerError::is_permanent) — [`HandlerError::permanent`],
//!   or a switchboard error that is not temporary, such as a payload that
//!   does not decode — which is not retried;
//! - [`Layer`]s, middleware in the shape of tower's: each wraps a `Handler`
//!   in another, usable alone, reordered or replaced. One module each:
//!   [`Retry`] (exponential backoff with jitter, permanent errors not
//!   retried), [`Timeout`] (per attempt), [`CatchPanic`] and [`DeadLetter`]
//!   (to `dlq.<subject>` with [`ORIGINAL_SUBJECT_HEADER`],
//!   [`ATTEMPTS_HEADER`], [`ERROR_HEADER`] and [`PERMANENT_HEADER`]);
//!   [`layer_fn`] makes your own; [`HandlerExt`] chains them;
//! - [`Route`]: pattern, queue group, concurrency limit (a semaphore in the
//!   router; 1 keeps order, [`Route::ordered_per_subject`] keeps each
//!   subject's order above 1) and the default stack, outermost first:
//!   `DeadLetter(Retry(Timeout(CatchPanic(handler))))`; [`Route::custom`]
//!   takes a stack you built (and refuses the default stack's setters);
//! - [`Worker::layer`]: middleware on every route, outside each route's
//!   stack, the first added outermost ([where layers go](layer#where-layers-go));
//! - [`find_cycle`]: routes that would hand messages round in a loop (their
//!   publish targets, declared with [`Route::publishes_to`], and dead
//!   letters), which [`Worker::start`] refuses;
//! - [`Worker`]: subscribes the routes, acknowledges what succeeded or was
//!   dead-lettered, nacks what failed (rejects it, without redelivery, when
//!   the error is permanent), counts ([`Stats`]) and shuts down gracefully,
//!   returning a [`Summary`].
//!
//! # Typed reactions, a contract, a test kit
//!
//! - [`typed`]: [`Worker::on_json::<T>`](Worker::on_json) (and
//!   [`Worker::on_typed::<C, T>`](Worker::on_typed) for any [`Codec`]) hands
//!   the handler the payload decoded as a `T`; a payload that does not decode
//!   is dead-lettered at once, never retried ([`Stats::decode_failed`]);
//!   returning `Ok(Some(reply))` answers a request;
//! - [`codec`]: JSON always, `MessagePack` (feature `msgpack`) and
//!   `Cbor` (feature `cbor`), picked per message from its `content-type`;
//!   publish typed values with `PublisherExt::publish_json` /
//!   `publish_encoded`;
//! - [`schema`]: a route's JSON Schema ([`Route::schema`], or
//!   `Route::schema_of::<T>` from a type deriving
//!   `schemars::JsonSchema`, feature `schemars`) checks every payload;
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the routes;
//! - `testing` (feature `testing`): a recording in-memory broker that runs a
//!   worker until idle, to unit-test reactions without a server.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde::Deserialize;
//! use switchboard_core::{MemoryBroker, PublisherExt};
//! use switchboard_worker::{HandlerError, Worker};
//!
//! #[derive(Deserialize)]
//! struct Alert { robot: String }
//!
//! let broker = MemoryBroker::new();
//! let worker = Worker::new(broker.clone())
//!     .on_json::<Alert>("alerts.>", |alert, _ctx| async move {
//!         println!("{} sighted -> alerting Sarah Connor!", alert.robot);
//!         Ok::<_, HandlerError>(())
//!     })
//!     .max_messages(1);
//! let running = worker.start().await?;
//! broker.publish_json("alerts.robot", &serde_json::json!({ "robot": "T-800" })).await?;
//! assert_eq!(running.wait().await.stats.succeeded(), 1);
//! # Ok(()) }
//! ```
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
//! broker redelivers and logged as an error otherwise. The exception is a
//! permanent error on a route without a dead letter: redelivering would fail
//! the same way without end, so it is rejected and logged as an error.
//!
//! # Observability
//!
//! Each message is handled in a `switchboard.message` tracing span (level
//! INFO, target `switchboard_worker::route_loop`) with the `route`, `subject`
//! and `attempt` fields (`attempt` is recorded again on each retry); with a
//! text log subscriber at INFO the span is most of what the worker costs
//! per message, and the directive `switchboard_worker::route_loop=warn`
//! turns it off (with the route loop's own INFO events, such as a
//! subscription ending); [`Worker::stats`] and
//! [`Running::stats`] read the counters; [`Running::serve_metrics`] serves
//! them per route, with a handler-duration histogram, in-flight gauges and
//! the broker connection state, as Prometheus metrics, and `/healthz` and
//! `/readyz` for orchestrators (see [`metrics`]). A message with a W3C
//! `traceparent` header is handled in its trace: the span records the trace
//! and span ids, and what the handler publishes carries a child
//! `traceparent` (see [`trace`]); [`PublishSpan`] starts a trace for a
//! message published outside a handler. With the `otel` feature the spans
//! are OpenTelemetry spans too, with the ids the headers carry.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod asyncapi;
pub mod codec;
mod context;
mod contract;
mod cycle;
mod error;
mod handler;
pub mod layer;
pub mod metrics;
mod otel;
mod route;
mod route_loop;
mod running;
pub mod schema;
mod stats;
mod summary;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod typed;
mod worker;

pub use async_trait::async_trait;
#[cfg(feature = "cbor")]
pub use codec::Cbor;
#[cfg(feature = "msgpack")]
pub use codec::MessagePack;
pub use codec::UnknownContentType;
pub use context::Context;
pub use cycle::{find_cycle, CycleStep, RouteCycle, Via};
pub use error::{Error, HandlerError, Result};
pub use handler::{BoxHandler, Handler, HandlerExt};
pub use layer::{
    layer_fn, CatchPanic, CatchPanicLayer, DeadLetter, DeadLetterLayer, DeadLetterSubject, Layer,
    LayerFn, Retry, RetryLayer, RetryPolicy, Timeout, TimeoutLayer, ATTEMPTS_HEADER, ERROR_HEADER,
    MAX_ERROR_HEADER_LEN, ORIGINAL_SUBJECT_HEADER, PERMANENT_HEADER, ROUTE_HEADER,
};
pub use metrics::MetricsServer;
pub use route::{Route, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, MAX_CONCURRENCY};
pub use running::Running;
pub use schema::{Schema, SchemaError, SchemaViolation};
pub use stats::{Counters, Stats};
pub use summary::{StopReason, Summary, Unfinished};
/// Core's codec trait and JSON, so that typed routes need one import.
pub use switchboard_core::{Codec, Json};
pub use trace::{PublishSpan, TraceContext, TRACEPARENT_HEADER, TRACESTATE_HEADER};
pub use typed::{DecodeError, IntoReply, Typed, TypedFn};
pub use worker::{Worker, DEFAULT_GRACE_PERIOD};
