//! The OpenTelemetry side of the worker's spans (feature `otel`): each handled
//! message, and each trace a [`PublishSpan`](crate::trace::PublishSpan)
//! starts, as a span of the global tracer provider, whose ids become the
//! worker's [`TraceContext`] so that the exported spans and the propagated
//! `traceparent` headers agree. Without the feature, the same calls do
//! nothing and return no context.

use crate::trace::TraceContext;

pub(crate) use imp::OtelSpan;

/// The instrumentation scope of the spans: this crate.
#[cfg(feature = "otel")]
const SCOPE: &str = "switchboard-worker";

#[cfg(feature = "otel")]
mod imp {
    use std::str::FromStr as _;

    use opentelemetry::global::{self, BoxedSpan};
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceId, TraceState, Tracer as _,
    };
    use opentelemetry::{InstrumentationScope, KeyValue};

    use switchboard_core::Broker;

    use super::{TraceContext, SCOPE};

    /// A started OpenTelemetry span, ended with [`OtelSpan::end`].
    pub(crate) struct OtelSpan(BoxedSpan);

    impl OtelSpan {
        /// The span of handling a message from `subject` on `route` of a
        /// `broker`, a child of the message's `traceparent` (`parent`) or a
        /// new trace.
        pub(crate) fn consumer(
            route: &str,
            subject: &str,
            broker: &dyn Broker,
            parent: Option<&TraceContext>,
        ) -> (OtelSpan, Option<TraceContext>) {
            start(
                format!("process {route}"),
                SpanKind::Consumer,
                parent,
                vec![
                    KeyValue::new("messaging.system", broker.kind().to_string()),
                    KeyValue::new("messaging.operation.type", "process"),
                    KeyValue::new("messaging.destination.name", subject.to_string()),
                    KeyValue::new("switchboard.route", route.to_string()),
                ],
            )
        }

        /// The span of publishing a message on `subject` outside a handler.
        pub(crate) fn producer(
            subject: &str,
            parent: Option<&TraceContext>,
        ) -> (OtelSpan, Option<TraceContext>) {
            start(
                format!("send {subject}"),
                SpanKind::Producer,
                parent,
                vec![
                    KeyValue::new("messaging.operation.type", "send"),
                    KeyValue::new("messaging.destination.name", subject.to_string()),
                ],
            )
        }

        /// Ends the span, failed with `error` if there is one.
        pub(crate) fn end(mut self, error: Option<&str>) {
            if let Some(error) = error {
                self.0.set_status(Status::error(error.to_string()));
            }
            self.0.end();
        }
    }

    /// Starts a span; returns with it its context as a [`TraceContext`]
    /// (the message's `tracestate` kept) when the provider made a new span.
    /// The API's no-op provider hands back the parent's context, or an
    /// invalid one without a parent: then `None`, and the worker goes on
    /// with ids of its own.
    fn start(
        name: String,
        kind: SpanKind,
        parent: Option<&TraceContext>,
        attributes: Vec<KeyValue>,
    ) -> (OtelSpan, Option<TraceContext>) {
        let tracer = global::tracer_with_scope(
            InstrumentationScope::builder(SCOPE)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let parent_context = match parent {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(parent.trace_id_bytes()),
                    SpanId::from_bytes(parent.span_id_bytes()),
                    TraceFlags::new(parent.flags()),
                    true,
                    parent
                        .tracestate()
                        .and_then(|state| TraceState::from_str(state).ok())
                        .unwrap_or_default(),
                ))
            }
            None => opentelemetry::Context::new(),
        };
        let span = tracer.build_with_context(
            tracer
                .span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes),
            &parent_context,
        );
        let made = span.span_context();
        let new_span = made.is_valid()
            && parent.is_none_or(|parent| made.span_id().to_bytes() != parent.span_id_bytes());
        let context = new_span
            .then(|| {
                TraceContext::from_parts(
                    made.trace_id().to_bytes(),
                    made.span_id().to_bytes(),
                    made.trace_flags().to_u8(),
                    parent.and_then(|parent| parent.tracestate().map(str::to_string)),
                )
            })
            .flatten();
        (OtelSpan(span), context)
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    use switchboard_core::Broker;

    use super::TraceContext;

    /// Nothing: OpenTelemetry is not compiled in.
    pub(crate) struct OtelSpan;

    impl OtelSpan {
        // The broker, not its kind: asking a `dyn Broker` its kind is a
        // call per message, which only the exported span needs.
        pub(crate) fn consumer(
            _route: &str,
            _subject: &str,
            _broker: &dyn Broker,
            _parent: Option<&TraceContext>,
        ) -> (OtelSpan, Option<TraceContext>) {
            (OtelSpan, None)
        }

        pub(crate) fn producer(
            _subject: &str,
            _parent: Option<&TraceContext>,
        ) -> (OtelSpan, Option<TraceContext>) {
            (OtelSpan, None)
        }

        pub(crate) fn end(self, _error: Option<&str>) {}
    }
}
