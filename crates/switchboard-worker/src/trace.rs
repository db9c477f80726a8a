//! W3C Trace Context across brokers: the `traceparent` and `tracestate`
//! headers (<https://www.w3.org/TR/trace-context/>), the same on every broker
//! because they travel as ordinary message headers.
//!
//! When a message carries a valid `traceparent`, the worker continues its
//! trace:
//!
//! - the handler runs in the `switchboard.message` tracing span with the
//!   fields `trace_id`, `span_id` (the handler's own id, new) and
//!   `parent_span_id` (the message's parent id), so logs of one trace can be
//!   joined across services and brokers;
//! - what the handler publishes with [`Context::publish`](crate::Context::publish)
//!   (the CLI's `publish` action too) carries a child `traceparent`: the same
//!   trace id and flags, the handler's span id as parent id; `tracestate` is
//!   passed on unchanged;
//! - [`Context::trace`](crate::Context::trace) hands the context to the
//!   handler (the CLI's `exec` action sets `TRACEPARENT` and `TRACESTATE` in
//!   the command's environment, the convention for child processes).
//!
//! A message without a `traceparent` (or with one that does not parse) is
//! handled as before: no trace headers are added — unless OpenTelemetry
//! export is on (below), which starts a new trace for it.
//!
//! # Starting a trace
//!
//! A message published outside a handler (an alert sent by a script, the
//! CLI's `send --trace`) starts a trace with [`PublishSpan::start`]: a new
//! trace id and span id in its `traceparent` (or, when the message already
//! carries one, a child of it), which the worker then continues.
//!
//! # OpenTelemetry (feature `otel`)
//!
//! With the `otel` feature, each message the worker handles is also an
//! OpenTelemetry span (kind `Consumer`, named `process <route>`) of the global
//! tracer provider (`opentelemetry::global`), whose parent is the message's
//! `traceparent`, and a [`PublishSpan`] a span of kind `Producer`. The span
//! ids the SDK gives those spans are the ones the worker puts in the
//! `traceparent` of what the handler publishes (and in `TRACEPARENT` for
//! `exec`), so the exported spans and the propagated headers agree. A message
//! without a `traceparent` then starts a new trace, as OpenTelemetry
//! consumers do. The worker only uses the OpenTelemetry API: the application
//! installs the SDK and an exporter, before [`Worker::start`](crate::Worker::start)
//! (the `switchboard` CLI built with its `otel` feature does so from the
//! `OTEL_*` environment variables). Without an installed provider (the
//! API's no-op one) nothing changes.

use std::fmt;

use rand::Rng;
use switchboard_core::{Headers, Message};

use crate::otel::OtelSpan;

/// The header naming the trace and the parent span of a message.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The header with vendor-specific trace data, passed on unchanged.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// One position in a distributed trace: trace id, span id, flags and the
/// vendors' `tracestate`.
///
/// ```
/// use switchboard_worker::TraceContext;
/// let parent = TraceContext::parse(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     Some("congo=t61rcWkgMzE"),
/// )
/// .unwrap();
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// assert!(child.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// assert_eq!(child.tracestate(), Some("congo=t61rcWkgMzE"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<String>,
}

impl TraceContext {
    /// Reads a `traceparent` value (and its `tracestate`), or `None` when it
    /// is not valid: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`,
    /// lowercase, ids not all zero. A later version is read by its first four
    /// fields, as the specification asks; version `ff` is refused.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let value = traceparent.trim();
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let span = fields.next()?;
        let flags = fields.next()?;
        let version = hex::<1>(version)?[0];
        if version == 0xff || (version == 0 && fields.next().is_some()) {
            return None;
        }
        let trace_id = hex::<16>(trace)?;
        let span_id = hex::<8>(span)?;
        let flags = hex::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let state = tracestate
            .map(str::trim)
            .filter(|state| !state.is_empty())
            .map(str::to_string);
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The trace context of a message's headers, if it has a valid one.
    pub fn from_headers(headers: &Headers) -> Option<TraceContext> {
        TraceContext::parse(
            headers.get(TRACEPARENT_HEADER)?,
            headers.get(TRACESTATE_HEADER),
        )
    }

    /// The first span of a new trace: random trace and span ids, sampled, no
    /// `tracestate` (what [`PublishSpan::start`] gives a message without a
    /// `traceparent` when OpenTelemetry does not name the ids).
    pub fn root() -> TraceContext {
        let mut rng = rand::rng();
        let trace_id = loop {
            let id: [u8; 16] = rng.random();
            if id != [0; 16] {
                break id;
            }
        };
        TraceContext {
            trace_id,
            span_id: random_nonzero(),
            flags: 1,
            state: None,
        }
    }

    /// A context from its parts; `None` when an id is all zeros (invalid).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn from_parts(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        flags: u8,
        state: Option<String>,
    ) -> Option<TraceContext> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The trace id as bytes.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id as bytes.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The flags byte (`01`: sampled).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn flags(&self) -> u8 {
        self.flags
    }

    /// The context of a new span in the same trace: same trace id, flags and
    /// `tracestate`, a new random span id (whose parent is this one).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: random_nonzero(),
            ..self.clone()
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        to_hex(&self.span_id)
    }

    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` value naming this span as the parent (version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }

    /// The `tracestate` value, if the trace has one.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// Sets `traceparent` (this span as parent) and `tracestate` in
    /// `headers`, replacing what was there.
    pub fn inject(&self, headers: &mut Headers) -> switchboard_core::Result<()> {
        headers.insert(TRACEPARENT_HEADER, self.traceparent())?;
        match &self.state {
            Some(state) => headers.insert(TRACESTATE_HEADER, state.clone())?,
            None => {
                headers.remove(TRACESTATE_HEADER);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("tracestate", &self.state)
            .finish()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// Publishing a message outside a handler as a span of a trace: the message
/// gets a `traceparent` naming this span — a new trace, or a child of the
/// `traceparent` it already had — and, with the `otel` feature and an
/// installed OpenTelemetry SDK, the span is exported (kind `Producer`, named
/// `send <subject>`) with the same ids.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use switchboard_core::{MemoryBroker, Message, Publisher};
/// use switchboard_worker::PublishSpan;
///
/// let broker = MemoryBroker::new();
/// let mut alert = Message::new("alerts.disk", "95% full")?;
/// let span = PublishSpan::start(&mut alert)?;
/// assert!(alert.headers().get("traceparent").is_some());
/// let sent = broker.publish(alert).await;
/// span.end(&sent);
/// sent?;
/// # Ok(()) }
/// ```
pub struct PublishSpan {
    context: TraceContext,
    span: OtelSpan,
}

impl PublishSpan {
    /// Starts the span and sets `traceparent` (and `tracestate`) in
    /// `message`'s headers. Fails only if the headers refuse them.
    pub fn start(message: &mut Message) -> switchboard_core::Result<PublishSpan> {
        let parent = TraceContext::from_headers(message.headers());
        let (span, exported) = OtelSpan::producer(message.subject().as_str(), parent.as_ref());
        let context = exported.unwrap_or_else(|| match &parent {
            Some(parent) => parent.child(),
            None => TraceContext::root(),
        });
        context.inject(message.headers_mut())?;
        Ok(PublishSpan { context, span })
    }

    /// The span's context: what the message's `traceparent` names.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// Ends the span with the publish's outcome (an error marks it failed).
    pub fn end<E: fmt::Display>(self, outcome: &Result<(), E>) {
        let error = outcome.as_ref().err().map(ToString::to_string);
        self.span.end(error.as_deref());
    }
}

impl fmt::Debug for PublishSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishSpan")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(bytes)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A random span id that is not all zeros (which would be invalid).
fn random_nonzero() -> [u8; 8] {
    let mut rng = rand::rng();
    loop {
        let id: [u8; 8] = rng.random();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_round_trip() {
        let context = TraceContext::parse(VALID, None).unwrap();
        assert_eq!(context.traceparent(), VALID);
        assert!(context.sampled());
        assert_eq!(context.tracestate(), None);
        // A later version is read by its first four fields.
        let later = TraceContext::parse(&format!("cc{}-what-ever", &VALID[2..]), None).unwrap();
        assert_eq!(later.traceparent(), VALID);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_a_new_span() {
        let parent = TraceContext::parse(VALID, Some("a=1")).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert_eq!(child.tracestate(), Some("a=1"));
        let mut headers = Headers::new();
        headers.insert(TRACESTATE_HEADER, "old=1").unwrap();
        child.inject(&mut headers).unwrap();
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap(),
            child,
            "{headers:?}"
        );
    }

    #[test]
    fn publish_spans_start_a_trace_or_continue_one() {
        let mut fresh = Message::new("alerts.a", "x").unwrap();
        let span = PublishSpan::start(&mut fresh).unwrap();
        let root = TraceContext::from_headers(fresh.headers()).unwrap();
        assert_eq!(&root, span.context());
        assert!(root.sampled());
        span.end(&Ok::<(), String>(()));
        // Two new traces do not share a trace id.
        let mut other = Message::new("alerts.a", "x").unwrap();
        PublishSpan::start(&mut other).unwrap().end(&Err("down"));
        let second = TraceContext::from_headers(other.headers()).unwrap();
        assert_ne!(second.trace_id(), root.trace_id());

        let mut traced = Message::new("alerts.b", "x")
            .unwrap()
            .with_header(TRACEPARENT_HEADER, VALID)
            .unwrap();
        let span = PublishSpan::start(&mut traced).unwrap();
        let child = TraceContext::from_headers(traced.headers()).unwrap();
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.span_id(), "00f067aa0ba902b7");
        assert_eq!(&child, span.context());
    }
}
