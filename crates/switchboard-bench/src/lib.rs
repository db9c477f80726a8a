//! `switchboard bench`: throughput and latency of every broker through
//! switchboard, each next to the same workload written directly against the
//! broker's own client (the raw baseline), in one invocation.
//!
//! Every message carries a header (publisher id, sequence number, intended send
//! time; see `payload`) so loss, duplicates and reordering are counted, never
//! hidden. Latency runs send on a fixed schedule from a dedicated thread and
//! measure from the *intended* send time (no coordinated omission).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

mod client;
mod cpu;
mod payload;
mod plot;
mod raw_amqp;
mod raw_nats;
mod raw_redis;
mod redis_benchmark;
mod report;
mod runner;

use report::Row;
use runner::RunSpec;

/// The brokers measured when `--broker` is not given.
const DEFAULT_BROKERS: &str = "nats,redis,amqp,memory";

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// Publish only, no subscriber: until the broker has everything (flush/confirms).
    Pub,
    /// One publisher, one subscriber.
    Pubsub,
    /// One publisher, `--subscribers` subscribers each receiving every message.
    Fanout,
    /// One publisher, a queue group of `--subscribers` sharing the messages.
    Group,
    /// One publisher at a fixed `--rate`, one subscriber; one-way latency.
    Latency,
}

impl Mode {
    /// The mode's name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pub => "pub",
            Mode::Pubsub => "pubsub",
            Mode::Fanout => "fanout",
            Mode::Group => "group",
            Mode::Latency => "latency",
        }
    }
}

/// Which code talks to the broker in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Implementation {
    /// Through `switchboard::connect` and `dyn Broker`.
    Switchboard,
    /// Directly with async-nats, redis-rs or lapin.
    Raw,
}

impl Implementation {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Implementation::Switchboard => "switchboard",
            Implementation::Raw => "raw",
        }
    }
}

/// One broker to measure.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The kind (`nats`, `redis`, `amqp`, `memory`), or the scheme if unknown.
    pub(crate) kind: String,
    /// The URL connected to.
    pub(crate) url: String,
}

impl Target {
    fn parse(item: &str) -> Target {
        let item = item.trim();
        let url = if item.eq_ignore_ascii_case("memory") {
            // A private hub, so nothing else in the process shares it.
            format!("memory://bench-{}", std::process::id())
        } else {
            switchboard::resolve_url(item).to_string()
        };
        let scheme = url
            .split_once("://")
            .map_or("", |(s, _)| s)
            .to_ascii_lowercase();
        let kind = switchboard::KINDS
            .iter()
            .find(|k| k.schemes.contains(&scheme.as_str()))
            .map_or(scheme, |k| k.name.to_string());
        Target { kind, url }
    }

    fn has_raw_client(&self) -> bool {
        matches!(self.kind.as_str(), "nats" | "redis" | "amqp")
    }

    /// Messages per throughput run when `--msgs` is not given: RabbitMQ with
    /// confirms is ~20x slower than the others.
    fn default_msgs(&self) -> u64 {
        match self.kind.as_str() {
            "amqp" => 30_000,
            _ => 200_000,
        }
    }
}

/// Arguments of `switchboard bench`. The brokers are the global `--broker`,
/// here a comma-separated list of kinds or URLs (default: nats,redis,amqp,memory).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Brokers: the global --broker takes a comma-separated list of kinds or URLs \
(default: nats,redis,amqp,memory), run one after another. Results: a table on stdout; \
progress on stderr."
)]
pub struct BenchArgs {
    /// Workloads, comma-separated: pub, pubsub, fanout, group, latency.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pub,pubsub,fanout,group,latency"
    )]
    pub mode: Vec<Mode>,

    /// Payload sizes in bytes, comma-separated (at least 16: the bench header).
    #[arg(long, value_delimiter = ',', default_value = "16,128,1024")]
    pub size: Vec<usize>,

    /// Measured messages per throughput run [default: 200000; 30000 on amqp].
    #[arg(long, value_name = "N")]
    pub msgs: Option<u64>,

    /// Throughput runs publish for this long instead of a message count (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub time: Option<Duration>,

    /// Warm-up messages before each throughput run [default: a tenth of --msgs, at most 20000].
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,

    /// Subscribers of `fanout` and members of `group`.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub subscribers: usize,

    /// Latency runs: messages per second, sent on a fixed schedule.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub rate: u64,

    /// Latency runs: how long to send (after a warm-up of a fifth of it, at most 1s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Subscribers stop waiting once nothing arrived for this long after the publisher finished.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Give up a run whose publishing takes longer than this.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Run each workload K times (switchboard and raw alternating) and report the median.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub repeat: usize,

    /// Skip the raw-client baselines.
    #[arg(long)]
    pub no_raw: bool,

    /// Also run `redis-benchmark -c 1 -P 256 PUBLISH` (one connection, pipelined)
    /// against each Redis broker, as an extra row per size.
    #[arg(long)]
    pub redis_benchmark: bool,

    /// Write the results as JSON (one object per run under `runs`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw throughput and latency per broker, switchboard next to raw, as SVG.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Exit non-zero if any run failed, any broker did not answer, or any message was lost.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `switchboard bench`.
pub async fn run(brokers: Option<&str>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(small) = args.size.iter().find(|s| **s < payload::HEADER_LEN) {
        anyhow::bail!(
            "--size {small} is too small: every message carries a {}-byte header (sequence number and send time)",
            payload::HEADER_LEN
        );
    }
    if args.rate == 0 {
        anyhow::bail!("--rate must be above 0");
    }
    let targets: Vec<Target> = brokers
        .unwrap_or(DEFAULT_BROKERS)
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Target::parse)
        .collect();
    if targets.is_empty() {
        anyhow::bail!("--broker names no broker; give e.g. --broker nats,redis,amqp,memory");
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let multi = MultiProgress::new();
    let total_runs = planned_runs(&targets, &args);
    let overall = multi.add(ProgressBar::new(total_runs));
    overall.set_style(style(
        "{prefix:>8} [{bar:30}] {pos}/{len} runs {elapsed_precise} {msg}",
    ));
    overall.set_prefix("bench");
    let current = multi.add(ProgressBar::new(0));
    current.set_style(style(
        "{prefix:>8} [{bar:30}] {pos}/{len} msgs {per_sec} {msg}",
    ));

    let mut rows: Vec<Row> = Vec::new();
    for target in &targets {
        let raw = !args.no_raw && target.has_raw_client();
        let mut implementations = vec![Implementation::Switchboard];
        if raw {
            implementations.push(Implementation::Raw);
        }
        // One probe per implementation: a broker that does not answer gets one
        // warning line and `unavailable` rows, and the others still run.
        let mut available = Vec::new();
        let mut problems = Vec::new();
        for implementation in &implementations {
            match probe(*implementation, target).await {
                Ok(()) => available.push(*implementation),
                Err(error) => problems.push((*implementation, format!("{error:#}"))),
            }
        }
        if !problems.is_empty() {
            let what: Vec<String> = problems
                .iter()
                .map(|(i, e)| format!("{}: {e}", i.name()))
                .collect();
            // `suspend` clears the bars, and prints even when they are hidden
            // (stderr not a terminal), unlike `MultiProgress::println`.
            multi.suspend(|| {
                eprintln!(
                    "warning: {} ({}) not measured: {}",
                    target.kind,
                    switchboard::redact_url(&target.url),
                    what.join("; ")
                )
            });
        }
        let msgs = args.msgs.unwrap_or_else(|| target.default_msgs());
        let warmup = args.warmup.unwrap_or((msgs / 10).min(20_000));
        for mode in &args.mode {
            for size in &args.size {
                let mut per_impl: Vec<(Implementation, Vec<Row>)> =
                    implementations.iter().map(|i| (*i, Vec::new())).collect();
                for repetition in 0..args.repeat.max(1) {
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
                            runner::run(&spec, &current).await
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
    }
    current.finish_and_clear();
    overall.finish_and_clear();

    report::add_ratios(&mut rows);
    print!("{}", report::table(&rows));

    if let Some(path) = &args.json {
        let document = report::Document {
            switchboard_version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_unix_s: started,
            machine: machine(),
            runs: &rows,
        };
        let json = serde_json::to_string_pretty(&document)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::draw(&rows, path).with_context(|| format!("cannot draw {}", path.display()))?;
    }

    let measured = rows.iter().any(Row::is_ok);
    let failed = rows
        .iter()
        .any(|r| matches!(r.status.as_str(), "error" | "unavailable") || r.lost > 0);
    if !measured {
        eprintln!("error: no run succeeded");
        return Ok(ExitCode::FAILURE);
    }
    if args.strict && failed {
        eprintln!(
            "error: --strict: some runs failed, a broker did not answer, or messages were lost"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn planned_runs(targets: &[Target], args: &BenchArgs) -> u64 {
    let per_impl = (args.mode.len() * args.size.len() * args.repeat.max(1)) as u64;
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
async fn probe(implementation: Implementation, target: &Target) -> anyhow::Result<()> {
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        client::connect(implementation, target, "bench.probe"),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10s"))??;
    connected.close().await;
    Ok(())
}

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{} {}, {cpus} CPUs ({cpu}), Linux {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        kernel.trim()
    )
}
