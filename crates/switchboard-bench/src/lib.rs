//! The machinery of `switchboard bench`: throughput and latency of every broker
//! through switchboard, each next to the same workload written directly against
//! the broker's own client (the raw baseline), in one invocation.
//!
//! The `switchboard` binary's `bench` subcommand is [`BenchArgs`], parsed by
//! clap, handed to [`run`]; the CLI itself links no broker client and no
//! plotting library. The method, the fields of the results and how to read them
//! are in `BENCHMARKS.md` at the repository root.
//!
//! Every message carries a header (publisher id, sequence number, intended send
//! time) so loss, duplicates and reordering are counted, never hidden. Latency
//! runs send on a fixed schedule from a dedicated thread and measure from the
//! *intended* send time (no coordinated omission).
//!
//! One module, one job:
//!
//! | module | job |
//! |---|---|
//! | `args`, `target` | the command line; the brokers and which code talks to each |
//! | `runner` | one run: connect the roles, warm up, measure, count what arrived |
//! | `client` | one interface over switchboard and the raw clients, so every workload is one piece of code |
//! | `raw_nats`, `raw_redis`, `raw_amqp`, `raw_mqtt` | the raw baselines: async-nats, redis-rs, lapin, rumqttc as a careful user writes them |
//! | `redis_benchmark` | the optional `redis-benchmark` reference row |
//! | `payload`, `cpu` | the 16-byte message header; client CPU time |
//! | `report`, `plot` | rows, medians and ratios, the table and the JSON; the SVG |
//! | `error` | why the bench stopped, or why one run failed |
//!
//! # Example
//!
//! A command of its own with a `--broker` list and the bench's flags:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     /// Comma-separated broker kinds or URLs.
//!     #[arg(long)]
//!     broker: Option<String>,
//!     #[command(flatten)]
//!     bench: switchboard_bench::BenchArgs,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), switchboard_bench::Error> {
//!     let cli = Cli::parse();
//!     switchboard_bench::run(cli.broker.as_deref(), cli.bench).await
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

mod args;
mod client;
mod cpu;
mod error;
mod payload;
mod plot;
mod raw_amqp;
mod raw_mqtt;
mod raw_nats;
mod raw_redis;
mod redis_benchmark;
mod report;
mod runner;
mod target;

pub use args::{BenchArgs, Mode};
pub use error::Error;

use error::RunError;
use report::Row;
use runner::RunSpec;
use target::{Implementation, Target};

/// How long a broker may take to accept the probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `switchboard bench` on `brokers` (a comma-separated list of kinds or
/// URLs; `None` for nats,redis,amqp,mqtt,memory): every workload of `args` on every
/// broker, switchboard next to the raw client, one after another.
///
/// Prints the table on stdout (progress and warnings on stderr) and writes the
/// JSON and SVG files `args` asks for. A broker that does not answer gets one
/// warning and `unavailable` rows, and the others still run. Fails on bad
/// arguments, on a file it cannot write, when no run measured anything, and
/// with `--strict` when any run failed or lost a message — the latter two
/// after the results are out.
pub async fn run(brokers: Option<&str>, args: BenchArgs) -> Result<(), Error> {
    if let Some(small) = args.size.iter().find(|s| **s < payload::HEADER_LEN) {
        return Err(Error::SizeTooSmall {
            size: *small,
            header: payload::HEADER_LEN,
        });
    }
    // Checked once, here: the runs take these as given (a concurrency of 0
    // would be `for_each_concurrent`'s "no limit", a rate of 0 a division by 0).
    let zero = [
        ("--rate", args.rate == 0),
        ("--msgs", args.msgs == Some(0)),
        ("--time", args.time.is_some_and(|t| t.is_zero())),
        ("--duration", args.duration.is_zero()),
        ("--repeat", args.repeat == 0),
        ("--subscribers", args.subscribers == 0),
        ("--concurrency", args.concurrency == 0),
        ("--timeout", args.timeout.is_zero()),
    ];
    if let Some((option, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
        return Err(Error::Zero { option });
    }
    let targets = Target::list(brokers);
    if targets.is_empty() {
        return Err(Error::NoBroker);
    }
    if args.control {
        if let Some(target) = targets.iter().find(|t| !t.has_raw_client()) {
            return Err(Error::NoControl {
                broker: target.kind.clone(),
            });
        }
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let progress = Progress::new(planned_runs(&targets, &args));
    let mut rows: Vec<Row> = Vec::new();
    for target in &targets {
        rows.extend(measure(target, &args, &progress).await);
    }
    progress.finish();

    report::add_ratios(&mut rows);
    write_table(&report::table(&rows))?;
    if let Some(path) = &args.json {
        report::write_json(&rows, path, started)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(&rows, path).map_err(|source| Error::Plot {
            path: path.clone(),
            source: Box::new(source),
        })?;
    }
    verdict(&rows, args.strict)
}

/// The progress bars on stderr: runs done overall, messages of the current run.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    current: ProgressBar,
}

impl Progress {
    fn new(total_runs: u64) -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(total_runs));
        overall.set_style(style(
            "{prefix:>8} [{bar:30}] {pos}/{len} runs {elapsed_precise} {msg}",
        ));
        overall.set_prefix("bench");
        let current = multi.add(ProgressBar::new(0));
        current.set_style(style(
            "{prefix:>8} [{bar:30}] {pos}/{len} msgs {per_sec} {msg}",
        ));
        Progress {
            multi,
            overall,
            current,
        }
    }

    /// Prints a line above the bars.
    fn warn(&self, line: &str) {
        // `suspend` clears the bars, and prints even when they are hidden
        // (stderr not a terminal), unlike `MultiProgress::println`.
        self.multi.suspend(|| eprintln!("{line}"));
    }

    fn finish(&self) {
        self.current.finish_and_clear();
        self.overall.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Every workload of `args` on one broker: one row per mode, size and
/// implementation (the median of `--repeat` runs), then the `redis-benchmark` rows.
async fn measure(target: &Target, args: &BenchArgs, progress: &Progress) -> Vec<Row> {
    let first = if args.control {
        Implementation::Control
    } else {
        Implementation::Switchboard
    };
    let mut implementations = vec![first];
    if !args.no_raw && target.has_raw_client() {
        implementations.push(Implementation::Raw);
    }
    // One probe per implementation: a broker that does not answer gets one
    // warning line and `unavailable` rows.
    let mut problems = Vec::new();
    for implementation in &implementations {
        if let Err(error) = probe(*implementation, target).await {
            problems.push((*implementation, error.note()));
        }
    }
    if !problems.is_empty() {
        let what: Vec<String> = problems
            .iter()
            .map(|(i, e)| format!("{}: {e}", i.name()))
            .collect();
        progress.warn(&format!(
            "warning: {} ({}) not measured: {}",
            target.kind,
            switchboard::redact_url(&target.url),
            what.join("; ")
        ));
    }
    let msgs = args.msgs.unwrap_or_else(|| target.default_msgs());
    let warmup = args.warmup.unwrap_or((msgs / 10).min(20_000));
    let (overall, current) = (&progress.overall, &progress.current);
    let mut rows = Vec::new();
    for mode in &args.mode {
        for size in &args.size {
            let mut per_impl: Vec<(Implementation, Vec<Row>)> =
                implementations.iter().map(|i| (*i, Vec::new())).collect();
            for repetition in 0..args.repeat {
                // Alternate who goes first, so neither always gets the warmer broker.
                let order: Vec<usize> = if repetition % 2 == 0 {
                    (0..per_impl.len()).collect()
                } else {
                    (0..per_impl.len()).rev().collect()
                };
                for index in order {
                    let Some((implementation, results)) = per_impl.get_mut(index) else {
                        continue;
                    };
                    let spec = RunSpec {
                        target: target.clone(),
                        implementation: *implementation,
                        mode: *mode,
                        size: *size,
                        msgs,
                        time: args.time,
                        warmup,
                        subscribers: args.subscribers,
                        idle: args.idle_timeout,
                        timeout: args.timeout,
                        rate: args.rate,
                        duration: args.duration,
                        latency_warmup: (args.duration / 5).min(Duration::from_secs(1)),
                        concurrency: args.concurrency,
                        handler_time: args.handler_time,
                        durable: args.durable,
                    };
                    let label = format!(
                        "{} {} {}B {}",
                        target.kind,
                        mode.name(),
                        size,
                        implementation.name()
                    );
                    overall.set_message(label.clone());
                    current.set_prefix(implementation.name());
                    current.set_message(label);
                    let row = if let Some((_, problem)) =
                        problems.iter().find(|(i, _)| i == implementation)
                    {
                        let mut row = Row::new(&spec);
                        row.fail("unavailable", problem.clone());
                        row
                    } else {
                        runner::run(&spec, current).await
                    };
                    results.push(row);
                    overall.inc(1);
                }
            }
            rows.extend(per_impl.into_iter().filter_map(|(_, r)| report::median(r)));
        }
    }
    if args.redis_benchmark && target.kind == "redis" {
        for size in &args.size {
            current.set_message(format!("redis-benchmark {size}B"));
            rows.push(redis_benchmark::run(target, *size, msgs).await);
        }
    }
    rows
}

fn planned_runs(targets: &[Target], args: &BenchArgs) -> u64 {
    let per_impl = (args.mode.len() * args.size.len() * args.repeat) as u64;
    targets
        .iter()
        .map(|t| {
            per_impl
                * if !args.no_raw && t.has_raw_client() {
                    2
                } else {
                    1
                }
        })
        .sum()
}

/// Connects once to see whether the broker answers.
async fn probe(implementation: Implementation, target: &Target) -> Result<(), RunError> {
    let connected = tokio::time::timeout(
        PROBE_TIMEOUT,
        client::connect(implementation, target, "bench.probe"),
    )
    .await
    .map_err(|_| RunError::ProbeTimeout(PROBE_TIMEOUT))??;
    connected.close().await;
    Ok(())
}

/// Whether the results make the bench a failure: nothing measured, or (with
/// `--strict`) any failed run, silent broker or lost message.
fn verdict(rows: &[Row], strict: bool) -> Result<(), Error> {
    if !rows.iter().any(Row::is_ok) {
        return Err(Error::NothingMeasured);
    }
    let failed = rows
        .iter()
        .any(|r| matches!(r.status.as_str(), "error" | "unavailable") || r.lost > 0);
    if strict && failed {
        return Err(Error::Strict);
    }
    Ok(())
}

/// Prints the results table. A reader that went away (`| head`) is not an
/// error: the JSON and the plot are still written. `print!` would panic.
fn write_table(table: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(table.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Stdout(error)),
        _ => Ok(()),
    }
}
