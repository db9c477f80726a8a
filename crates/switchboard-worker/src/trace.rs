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
//! handled as before: no trace headers are added. The spans are `tracing`
//! spans; exporting them to an OpenTelemetry collector is not built in.

use std::fmt;

use rand::Rng;
use switchboard_core::Headers;

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
}
