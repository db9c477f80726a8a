//! OpenTelemetry export (feature `otel`): the worker's message spans and the
//! traces `send` starts go to an OTLP collector over HTTP/protobuf, set up
//! from the standard `OTEL_*` environment variables.
//!
//! Export is on when `OTEL_TRACES_EXPORTER` is `otlp`, or when it is unset
//! and `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! is set; off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
//! (The specification's default exporter is `otlp` to `localhost:4318`; a
//! command line tool that sent spans nobody asked for to a port nobody
//! listens on would only add failed requests, so an endpoint must be named.)
//! The rest is the SDK's and the exporter's: `OTEL_SERVICE_NAME` (default
//! here `switchboard`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`(`_ARG`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `OTEL_BSP_*`.

use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "otel")]
use std::time::Duration;

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// How long the spans still buffered at exit may take to reach the collector.
#[cfg(feature = "otel")]
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// Whether this process exports spans: `send` then starts a trace for each
/// message, as with `--trace`.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The installed exporter; [`Telemetry::shutdown`] sends what is buffered.
#[derive(Debug)]
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still buffered, within [`FLUSH_PATIENCE`] (a collector
    /// that does not answer delays the exit by that much at most). Spans a
    /// collector refuses are dropped quietly (the SDK's internal logs are
    /// not built in); only a shutdown that fails says so, in a warning that
    /// leaves the command's exit status alone.
    pub(crate) fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_PATIENCE) {
            eprintln!("warning: OpenTelemetry: the last spans were not exported: {error}");
        }
    }
}

/// Installs the OTLP exporter as the global tracer provider when the
/// environment asks for it (see the module doc); a setting it cannot honour
/// (another exporter, gRPC) is an error. Without the `otel` feature nothing
/// is installed, and `-v` says so if the environment asked for export.
pub(crate) fn init() -> anyhow::Result<Option<Telemetry>> {
    let wanted = wanted();
    // Without the feature, a setting this build could not honour anyway is
    // no reason to fail.
    #[cfg(not(feature = "otel"))]
    let wanted = wanted.or_else(|error| anyhow::Ok(Some(format!("{error:#}"))));
    let Some(reason) = wanted? else {
        return Ok(None);
    };
    #[cfg(feature = "otel")]
    {
        let _ = reason;
        let telemetry = install()?;
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Some(telemetry))
    }
    #[cfg(not(feature = "otel"))]
    {
        // Said with -v only: the same environment often serves other
        // programs, and the messages flow the same.
        tracing::info!("{reason} asks for OpenTelemetry export, which this switchboard was built without (cargo feature `otel` of switchboard-cli); no spans are exported");
        Ok(None)
    }
}

/// Why export is wanted (the variable that asks for it), or `None`.
fn wanted() -> anyhow::Result<Option<String>> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(exporters) = var("OTEL_TRACES_EXPORTER") {
        let names: Vec<&str> = exporters.split(',').map(str::trim).collect();
        if names.iter().all(|name| *name == "none") {
            return Ok(None);
        }
        if let Some(other) = names.iter().find(|name| !matches!(**name, "otlp" | "none")) {
            anyhow::bail!("OTEL_TRACES_EXPORTER={exporters}: switchboard exports traces with `otlp` only, not `{other}`");
        }
        return Ok(Some(format!("OTEL_TRACES_EXPORTER={exporters}")));
    }
    Ok([
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find(|name| var(name).is_some())
    .map(str::to_string))
}

#[cfg(feature = "otel")]
fn install() -> anyhow::Result<Telemetry> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    // The exporter reads the endpoint, headers, timeout and protocol from
    // the environment; a protocol this build lacks (grpc, http/json) is an
    // error from `build`, said in one line.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?.unwrap_or(Protocol::HttpBinary))
        .build()
        .map_err(|error| {
            anyhow::anyhow!("OpenTelemetry: cannot set up the OTLP exporter: {error}")
        })?;
    let mut resource = Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name("switchboard");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Telemetry { provider })
}

/// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, refusing what this build cannot
/// speak: it has the OTLP/HTTP protobuf transport only (no gRPC stack).
#[cfg(feature = "otel")]
fn protocol() -> anyhow::Result<Option<opentelemetry_otlp::Protocol>> {
    let Some((name, value)) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().map(|value| (name, value))) else {
        return Ok(None);
    };
    match value.trim() {
        "http/protobuf" => Ok(Some(opentelemetry_otlp::Protocol::HttpBinary)),
        other => anyhow::bail!(
            "{name}={other}: switchboard exports OTLP over http/protobuf only (set {name}=http/protobuf, port 4318 on most collectors)"
        ),
    }
}
