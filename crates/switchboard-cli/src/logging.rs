//! Log output on stderr: what `-v`, `-vv` and `-vvv` show, and the client
//! libraries' traces that are never shown because they carry credentials.

use tracing::Metadata;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The client libraries whose traces dump protocol frames and commands with
/// credentials in them. (async-nats redacts its CONNECT in traces itself.)
const CLIENT_LIBRARIES: &[&str] = &["lapin", "amq_protocol"];

/// Fields in which those libraries trace whole frames or commands: lapin's
/// frames (`next_msg`, `frame`, `frames`: connection.start-ok holds the
/// password as bytes) and its internal commands (`command`: a secret update
/// holds the new secret).
const CREDENTIAL_FIELDS: &[&str] = &["next_msg", "frame", "frames", "command"];

/// Sets up logging to stderr (stdout stays the command's data).
///
/// `-v` shows info, `-vv` debug, `-vvv` trace, with lapin at most at debug
/// (its traces are frame dumps). `RUST_LOG` overrides the levels, but the
/// events that carry credentials ([`CREDENTIAL_FIELDS`]) are left out
/// whatever the level.
pub(crate) fn init(verbose: u8) {
    // Client libraries log connection failures that switchboard already reports
    // as one `error:` line, so they stay quiet unless asked for with -vv or RUST_LOG.
    let default = match verbose {
        0 => "warn,lapin=off,async_nats=off",
        1 => "info,lapin=warn,async_nats=warn",
        2 => "debug",
        _ => "trace,lapin=debug,amq_protocol=debug",
    };
    let levels = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // The credentials filter is global, beside the levels, rather than the
    // output layer's own: it decides per call site once, where a per-layer
    // filter keeps per-span state on every enter, exit and close (with INFO
    // on, the worker's span per message made that ~3 % of a busy worker's
    // time; BENCHMARKS.md, "Round nine"). The output is the only layer, so
    // what it shows is the same.
    let _ = tracing_subscriber::registry()
        .with(levels)
        .with(filter_fn(carries_no_credentials))
        .with(output)
        .try_init();
}

/// False for a client library's event that traces a frame or a command.
fn carries_no_credentials(metadata: &Metadata<'_>) -> bool {
    let from_client = CLIENT_LIBRARIES
        .iter()
        .any(|library| metadata.target().starts_with(library));
    !from_client
        || !metadata
            .fields()
            .iter()
            .any(|field| CREDENTIAL_FIELDS.contains(&field.name()))
}
