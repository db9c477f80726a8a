//! What a handler receives: the message, the attempt number and a way to publish.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use switchboard_core::{Broker, Bytes, Headers, Message, Reply};

use crate::stats::Counters;
use crate::trace::TraceContext;

/// One message to handle, as a [`Handler`](crate::Handler) receives it.
///
/// Cheap to clone (the message is shared). Dereferences to its [`Message`],
/// so `ctx.subject()`, `ctx.payload()` and `ctx.headers()` work directly.
/// [`Context::publish`] publishes on the worker's broker: the worker flushes
/// it on shutdown.
#[derive(Clone)]
pub struct Context {
    /// What every attempt at the message shares: copying a context (once per
    /// attempt) takes one reference count, not one per field.
    shared: Arc<Shared>,
    attempt: u32,
}

/// The message and what the worker knows about it, the same for every attempt.
#[derive(Clone)]
struct Shared {
    message: Message,
    redelivered: bool,
    /// The broker's delivery count and the route's `max_deliver` (durable routes).
    delivery_count: Option<u32>,
    max_deliver: Option<u32>,
    route: Arc<str>,
    broker: Arc<dyn Broker>,
    counters: Arc<Counters>,
    replier: Option<Arc<dyn Reply>>,
    /// The handler's span in the message's trace (see [`crate::trace`]).
    trace: Option<TraceContext>,
}

impl Context {
    /// A context for `message` on `broker` (attempt 1), e.g. to call a handler
    /// or a layer directly in a test.
    pub fn new(message: Message, broker: Arc<dyn Broker>) -> Self {
        Context {
            shared: Arc::new(Shared {
                route: Arc::from(message.subject().as_str()),
                trace: handler_span(&message),
                message,
                redelivered: false,
                delivery_count: None,
                max_deliver: None,
                broker,
                counters: Arc::default(),
                replier: None,
            }),
            attempt: 1,
        }
    }

    /// The worker's context for a delivered `message`; `parent` is its
    /// `traceparent` (read by the caller, which needs it too). `delivered`
    /// is whether the broker says it delivered the message before, its
    /// delivery count and the route's `max_deliver`, as
    /// [`Context::with_delivery`] would set the last two (set here, the new
    /// context is not copied on write).
    pub(crate) fn for_route(
        message: Message,
        parent: Option<&TraceContext>,
        (redelivered, delivery_count, max_deliver): (bool, Option<u32>, Option<u32>),
        route: Arc<str>,
        broker: Arc<dyn Broker>,
        counters: Arc<Counters>,
        replier: Option<Arc<dyn Reply>>,
    ) -> Self {
        Context {
            shared: Arc::new(Shared {
                trace: parent.map(TraceContext::child),
                message,
                redelivered: redelivered || delivery_count.is_some_and(|count| count > 1),
                delivery_count,
                max_deliver,
                route,
                broker,
                counters,
                replier,
            }),
            attempt: 1,
        }
    }

    /// A hold on this context's shared part, to take it back once every
    /// copy of the context is gone (see [`Kept::into_spare`]).
    pub(crate) fn keep(&self) -> Kept {
        Kept(self.shared.clone())
    }

    /// The shared part, to change before the context is copied (a copy
    /// made meanwhile keeps what it had).
    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.shared)
    }

    /// The same message as a request that `replier` answers (the worker sets
    /// it from the delivery; e.g. to call a handler directly in a test).
    pub fn with_replier(mut self, replier: Arc<dyn Reply>) -> Self {
        self.shared_mut().replier = Some(replier);
        self
    }

    /// The same message as the `delivery_count`th delivery by the broker of
    /// a durable route allowing `max_deliver` deliveries (the worker sets
    /// both; e.g. to test a handler on its last delivery).
    pub fn with_delivery(mut self, delivery_count: Option<u32>, max_deliver: Option<u32>) -> Self {
        let shared = self.shared_mut();
        shared.delivery_count = delivery_count;
        shared.redelivered |= delivery_count.is_some_and(|count| count > 1);
        shared.max_deliver = max_deliver;
        self
    }

    /// How many times the broker delivered this message, this time included,
    /// where it counts (durable routes).
    pub fn delivery_count(&self) -> Option<u32> {
        self.shared.delivery_count
    }

    /// Whether the broker will not deliver this message again if handling
    /// fails now: false only on a durable route with `max_deliver` whose
    /// delivery count is below it. [`DeadLetter`](crate::DeadLetter)
    /// dead-letters only on the last delivery, and lets earlier failures go
    /// back to the broker for redelivery.
    pub fn is_last_delivery(&self) -> bool {
        match (self.shared.delivery_count, self.shared.max_deliver) {
            (Some(count), Some(max)) => count >= max,
            _ => true,
        }
    }

    /// The same message handled in the span `trace` (the OpenTelemetry span's
    /// ids, when one was started for it: see [`crate::otel`]).
    pub(crate) fn with_trace(mut self, trace: TraceContext) -> Self {
        self.shared_mut().trace = Some(trace);
        self
    }

    /// The same message with another attempt number (what [`Retry`](crate::Retry) passes on).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.shared.message
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the broker says it delivered this message before.
    pub fn redelivered(&self) -> bool {
        self.shared.redelivered
    }

    /// The pattern of the route that received the message.
    pub fn route(&self) -> &str {
        &self.shared.route
    }

    /// The worker's broker, to publish or inspect capabilities.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// Publishes `message` on the worker's broker. When the message being
    /// handled carries a W3C `traceparent`, `message` gets a child one (the
    /// same trace, the handler's span as parent) and the `tracestate`,
    /// replacing any it had (see [`crate::trace`]).
    pub async fn publish(&self, mut message: Message) -> switchboard_core::Result<()> {
        if let Some(trace) = &self.shared.trace {
            trace.inject(message.headers_mut())?;
        }
        self.shared.broker.publish(message).await
    }

    /// The handler's span in the message's trace: the message's trace id, a
    /// span id of its own (whose parent is the message's `traceparent`);
    /// `None` when the message carries no valid `traceparent`. Pass
    /// [`TraceContext::traceparent`] on to what the handler calls.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.shared.trace.as_ref()
    }

    /// Whether the message is a request that expects a reply
    /// ([`Broker::request`](switchboard_core::Broker::request)).
    pub fn is_request(&self) -> bool {
        self.shared.replier.is_some()
    }

    /// Answers the request with `payload` (see [`Context::reply_with`]).
    pub async fn reply(&self, payload: impl Into<Bytes>) -> switchboard_core::Result<()> {
        self.reply_with(payload, Headers::new()).await
    }

    /// Answers the request with `payload` and `headers`. Fails with
    /// [`Error::Unsupported`](switchboard_core::Error::Unsupported) when the
    /// message is not a request; may be called more than once (the requester
    /// takes the first reply). A typed handler replies by returning
    /// `Ok(Some(reply))` (see [`IntoReply`](crate::IntoReply)).
    pub async fn reply_with(
        &self,
        payload: impl Into<Bytes>,
        headers: Headers,
    ) -> switchboard_core::Result<()> {
        match &self.shared.replier {
            Some(replier) => replier.reply(payload.into(), headers).await,
            None => Err(switchboard_core::Error::Unsupported {
                broker: self.shared.broker.kind(),
                feature: format!(
                    "replying to a message on {:?} that is not a request (no one waits for an answer)",
                    self.shared.message.subject().as_str()
                ),
            }),
        }
    }

    /// Answers the request with an error reply: the requester's `request`
    /// fails at once with [`Error::Service`](switchboard_core::Error::Service)
    /// carrying `code` and `description` (see
    /// [`Delivery::reply_error`](switchboard_core::Delivery::reply_error)).
    /// The worker sends one itself when a request's handling fails for good
    /// (400 for a permanent error, 500 otherwise); a handler calls this to
    /// refuse with a code of its own. Fails like [`Context::reply_with`] when
    /// the message is not a request.
    pub async fn reply_error(&self, code: u16, description: &str) -> switchboard_core::Result<()> {
        self.reply_with(
            Bytes::new(),
            switchboard_core::error_reply_headers(code, description)?,
        )
        .await
    }

    /// The worker's counters (layers add to them).
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The counters' shared handle, for a layer that keeps them past the
    /// call it hands the context to.
    pub(crate) fn counters_handle(&self) -> &Arc<Counters> {
        &self.shared.counters
    }
}

/// The code of the error reply the worker sends for a request whose
/// handling failed for good: 400 when the error is permanent (the request
/// would fail the same way again), 500 otherwise.
pub(crate) fn failure_code(permanent: bool) -> u16 {
    if permanent {
        400
    } else {
        500
    }
}

/// A context's shared part held by the route loop while the handler stack
/// runs (see [`Context::keep`]).
pub(crate) struct Kept(Arc<Shared>);

impl Kept {
    /// The shared part for the route's next message, when no copy of the
    /// context is left (a handler may keep one, e.g. in a task it spawned).
    /// The message stays in it until then; its reply handle and trace do
    /// not (a requester may be waiting for the reply handle to go).
    pub(crate) fn into_spare(mut self) -> Option<Spare> {
        let shared = Arc::get_mut(&mut self.0)?;
        shared.replier = None;
        shared.trace = None;
        Some(Spare(self.0))
    }
}

/// The shared part of a route's finished context, reused for its next
/// message: one allocation per route instead of one per message, and the
/// route's name, broker and counters are not copied again.
pub(crate) struct Spare(Arc<Shared>);

impl Spare {
    /// The worker's context for a delivered `message` on the route this
    /// came from, as [`Context::for_route`] makes it.
    pub(crate) fn reuse(
        mut self,
        message: Message,
        parent: Option<&TraceContext>,
        (redelivered, delivery_count, max_deliver): (bool, Option<u32>, Option<u32>),
        replier: Option<Arc<dyn Reply>>,
    ) -> Context {
        let delivered = (redelivered, delivery_count, max_deliver);
        let Some(shared) = Arc::get_mut(&mut self.0) else {
            // Not reached: a spare is made only from a part nothing else holds.
            let Shared {
                route,
                broker,
                counters,
                ..
            } = &*self.0;
            return Context::for_route(
                message,
                parent,
                delivered,
                route.clone(),
                broker.clone(),
                counters.clone(),
                replier,
            );
        };
        shared.trace = parent.map(TraceContext::child);
        shared.message = message;
        shared.redelivered = redelivered || delivery_count.is_some_and(|count| count > 1);
        shared.delivery_count = delivery_count;
        shared.max_deliver = max_deliver;
        shared.replier = replier;
        Context {
            shared: self.0,
            attempt: 1,
        }
    }
}

/// The handler's span for `message`: a child of its `traceparent`, if valid.
fn handler_span(message: &Message) -> Option<TraceContext> {
    TraceContext::from_headers(message.headers()).map(|parent| parent.child())
}

impl Deref for Context {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.shared.message
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("Context")
            .field("route", &shared.route)
            .field("subject", shared.message.subject())
            .field("attempt", &self.attempt)
            .field("redelivered", &shared.redelivered)
            .field("delivery_count", &shared.delivery_count)
            .field("request", &shared.replier.is_some())
            .field("trace", &shared.trace)
            .field("broker", &shared.broker.kind())
            .finish_non_exhaustive()
    }
}
