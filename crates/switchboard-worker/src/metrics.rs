//! Metrics and health of a running worker, for Prometheus and orchestrators.
//!
//! Every route keeps its own [`Counters`] (added to the worker's as well), an
//! in-flight gauge, a handler-duration histogram and the errors its
//! subscription reported. [`Running::serve_metrics`](crate::Running::serve_metrics)
//! serves them over HTTP (axum on hyper), encoded by `prometheus-client`:
//!
//! - `GET /metrics`: OpenMetrics text (which Prometheus scrapes):
//!   - `switchboard_worker_messages_total{route, outcome}`: one series per
//!     [`Stats`] field — `received`, `handled`, `failed`,
//!     `retried`, `permanent`, `dead_lettered`, `decode_failed`,
//!     `timed_out`, `panicked`, `unfinished`;
//!   - `switchboard_worker_handler_duration_seconds{route}`: how long each
//!     message took in its handler stack, retries included;
//!   - `switchboard_worker_in_flight{route}`: messages being handled now;
//!   - `switchboard_worker_subscription_errors_total{route, kind}`: the `Err`
//!     items a subscription reported — `lost` (messages lost, e.g. a client
//!     buffer overflowed), `disconnected` (the connection broke) or `other`;
//!   - `switchboard_worker_lost_messages_total{route}`: how many messages
//!     those `lost` reports counted (a report that cannot know adds 0, but
//!     still counts in the errors above);
//!   - `switchboard_broker_connected{broker}` (1 or 0) and
//!     `switchboard_broker_disconnects_total{broker}`, from
//!     [`Broker::status`](switchboard_core::Broker::status);
//!   - `switchboard_worker_ready`: 1 while `/readyz` says 200.
//! - `GET /healthz`: 200 while the process serves it (liveness).
//! - `GET /readyz`: 200 while every route is subscribed, the worker is not
//!   shutting down and the broker connection is up; 503 with the reason
//!   otherwise (readiness: take the worker out of rotation, do not kill it).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::running::Shared;
use crate::{Counters, Error, Stats};

/// The content type of `/metrics` (what `prometheus-client` encodes).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one route of a running worker measured.
pub(crate) struct RouteMetrics {
    /// The route's pattern (the `route` label).
    pub(crate) route: Arc<str>,
    /// The route's counters, added to the worker's too.
    pub(crate) counters: Arc<Counters>,
    in_flight: Gauge,
    duration: Histogram,
    lost_reports: Counter,
    disconnections: Counter,
    other_errors: Counter,
    lost_messages: Counter,
}

impl RouteMetrics {
    pub(crate) fn new(route: Arc<str>, worker: Arc<Counters>) -> Self {
        RouteMetrics {
            route,
            counters: Arc::new(Counters::for_route(worker)),
            in_flight: Gauge::default(),
            // 1 ms to about 33 s.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lost_reports: Counter::default(),
            disconnections: Counter::default(),
            other_errors: Counter::default(),
            lost_messages: Counter::default(),
        }
    }

    /// Counts a message in flight until the returned guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records how long a message took in the handler stack.
    pub(crate) fn handled_in(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// Records an `Err` item of the route's subscription.
    pub(crate) fn subscription_error(&self, error: &switchboard_core::Error) {
        match error {
            switchboard_core::Error::Lost { count, .. } => {
                self.lost_reports.inc();
                self.lost_messages.inc_by(*count);
            }
            switchboard_core::Error::Disconnected { .. } => {
                self.disconnections.inc();
            }
            _ => {
                self.other_errors.inc();
            }
        }
    }
}

/// A message in flight: the gauge goes down when this is dropped, however
/// the handling ended (finished, given back or cancelled).
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why the worker is not ready, or `None` when it is.
pub(crate) fn not_ready(shared: &Shared) -> Option<String> {
    if shared.stop.is_cancelled() {
        return Some("the worker is shutting down".to_string());
    }
    let active = shared.active.load(Ordering::Acquire);
    if active < shared.routes.len() {
        return Some(format!(
            "{} of {} route subscriptions ended",
            shared.routes.len() - active,
            shared.routes.len()
        ));
    }
    let status = shared.broker.status();
    if !status.connected {
        let kind = shared.broker.kind();
        return Some(if status.closed {
            format!("{kind}: the broker connection is closed")
        } else {
            format!("{kind}: the broker connection is down; reconnecting")
        });
    }
    None
}

/// The labels of one route's series, and an outcome's.
fn route_labels(route: &str) -> [(&'static str, &str); 1] {
    [("route", route)]
}

/// The outcomes of `switchboard_worker_messages_total`, from a [`Stats`].
fn outcomes(stats: &Stats) -> [(&'static str, u64); 10] {
    [
        ("received", stats.received),
        ("handled", stats.handled),
        ("failed", stats.failed),
        ("retried", stats.retried),
        ("permanent", stats.permanent),
        ("dead_lettered", stats.dead_lettered),
        ("decode_failed", stats.decode_failed),
        ("timed_out", stats.timed_out),
        ("panicked", stats.panicked),
        ("unfinished", stats.unfinished),
    ]
}

/// Encodes one metric of every route, labelled with the route.
fn per_route<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    routes: &[Arc<RouteMetrics>],
    name: &str,
    help: &str,
    metric: impl Fn(&RouteMetrics) -> &M,
) -> Result<(), fmt::Error> {
    let Some(first) = routes.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric(first).metric_type())?;
    for route in routes {
        metric(route).encode(family.encode_family(&route_labels(&route.route))?)?;
    }
    Ok(())
}

/// Reads a running worker's state on each scrape.
struct Exposition {
    shared: Arc<Shared>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition")
            .field("broker", &self.shared.broker.kind())
            .field("routes", &self.shared.routes.len())
            .finish()
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let routes = &self.shared.routes;
        {
            let mut family = encoder.encode_descriptor(
                "switchboard_worker_messages",
                "Messages per route and outcome (the worker's Stats)",
                None,
                MetricType::Counter,
            )?;
            for route in routes {
                let stats = route.counters.snapshot();
                for (outcome, value) in outcomes(&stats) {
                    let labels = [("route", &*route.route), ("outcome", outcome)];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        per_route(
            &mut encoder,
            routes,
            "switchboard_worker_handler_duration_seconds",
            "How long each message took in its route's handler stack, retries included",
            |route| &route.duration,
        )?;
        per_route(
            &mut encoder,
            routes,
            "switchboard_worker_in_flight",
            "Messages being handled now",
            |route| &route.in_flight,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "switchboard_worker_subscription_errors",
                "Err items the route's subscription reported: lost messages, a broken connection, or other",
                None,
                MetricType::Counter,
            )?;
            for route in routes {
                for (kind, counter) in [
                    ("lost", &route.lost_reports),
                    ("disconnected", &route.disconnections),
                    ("other", &route.other_errors),
                ] {
                    let labels = [("route", &*route.route), ("kind", kind)];
                    counter.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        per_route(
            &mut encoder,
            routes,
            "switchboard_worker_lost_messages",
            "Messages the route's subscription reported lost (reports that cannot count add 0)",
            |route| &route.lost_messages,
        )?;
        let status = self.shared.broker.status();
        let broker = [("broker", self.shared.broker.kind())];
        {
            let mut family = encoder.encode_descriptor(
                "switchboard_broker_connected",
                "1 while the broker connection is up, 0 while it is down or closed",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(status.connected)).encode(family.encode_family(&broker)?)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "switchboard_broker_disconnects",
                "How many times the broker connection was lost",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(status.disconnects).encode(family.encode_family(&broker)?)?;
        }
        let ready = not_ready(&self.shared).is_none();
        ConstGauge::new(i64::from(ready)).encode(encoder.encode_descriptor(
            "switchboard_worker_ready",
            "1 while /readyz answers 200: subscribed, not shutting down, broker connected",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
struct Served {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` for the worker whose state
/// is `shared` on `addr`, until the returned server is stopped or dropped.
pub(crate) async fn serve(shared: Arc<Shared>, addr: SocketAddr) -> Result<MetricsServer, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Metrics { addr, source })?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        shared: shared.clone(),
    }));
    let served = Served {
        shared,
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(served);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
        if let Err(error) = serving.await {
            tracing::warn!(addr = %local, %error, "the metrics server stopped");
        }
    });
    tracing::info!(addr = %local, "serving metrics on http://{local}/metrics (health: /healthz, /readyz)");
    Ok(MetricsServer {
        addr: local,
        stop,
        task: Some(task),
    })
}

async fn metrics(State(served): State<Served>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &served.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(served): State<Served>) -> Response {
    match not_ready(&served.shared) {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// The HTTP server of a worker's metrics and health, from
/// [`Running::serve_metrics`](crate::Running::serve_metrics). It stops when
/// [`stop`](MetricsServer::stop)ped or dropped; it outlives the worker
/// otherwise (`/readyz` then says 503), so a last scrape can read the totals.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: requests in progress finish, no new connection is accepted.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
