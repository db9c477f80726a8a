//! The arguments of `switchboard bench`, as clap parses them: the CLI embeds
//! [`BenchArgs`] as its `bench` subcommand, so the flags, their defaults and
//! their help live once, next to the code that reads them.

use std::path::PathBuf;
use std::time::Duration;

/// The idle timeout of a run without `--durable` when `--idle-timeout` is not given.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The idle timeout of a `--durable` run when `--idle-timeout` is not given:
/// a durable pull (JetStream's batch of 64, a Redis `XREADGROUP`) can stall
/// for seconds while the broker writes to disk, and with 3 s whole batches
/// were reported lost although they arrived later (BENCHMARKS.md, "NATS
/// durable publishing").
pub(crate) const DURABLE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The idle timeout a run uses: the one given with `--idle-timeout`, else
/// [`DURABLE_IDLE_TIMEOUT`] for durable runs and [`DEFAULT_IDLE_TIMEOUT`]
/// for the others.
pub(crate) fn idle_timeout(given: Option<Duration>, durable: bool) -> Duration {
    match given {
        Some(idle) => idle,
        None if durable => DURABLE_IDLE_TIMEOUT,
        None => DEFAULT_IDLE_TIMEOUT,
    }
}

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
    /// One publisher, one reaction worker (switchboard's `Worker`, default
    /// layers) or the raw client's subscriber loop, with a handler that takes
    /// `--handler-time`, `--concurrency` at a time.
    Worker,
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
            Mode::Worker => "worker",
        }
    }
}

/// The flags of `switchboard bench`. The brokers are not among them: they are
/// the CLI's global `--broker` (a comma-separated list of kinds or URLs,
/// default nats,redis,amqp,mqtt,memory), which [`run`](crate::run) takes beside these.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Brokers: the global --broker takes a comma-separated list of kinds or URLs \
(default: nats,redis,amqp,mqtt,memory), run one after another. Results: a table on stdout; \
progress on stderr."
)]
pub struct BenchArgs {
    /// Workloads, comma-separated: pub, pubsub, fanout, group, latency, worker
    /// (not run unless asked for).
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

    /// `worker` runs: messages handled at a time (the route's concurrency limit;
    /// for the raw client, `for_each_concurrent`'s).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub concurrency: usize,

    /// `worker` runs: how long the handler takes (a timer; 0 returns at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub handler_time: Duration,

    /// Subscribers stop waiting once nothing arrived for this long after the publisher finished
    /// [default: 3s; 30s with --durable, where a JetStream pull of 64 messages can stall for
    /// seconds and a shorter wait counts the whole batch as lost].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Give up a run whose publishing takes longer than this.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Run each workload K times (switchboard and raw alternating) and report the median.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub repeat: usize,

    /// Durable workloads (modes `pub` and `pubsub` only): a durable consumer
    /// stores every message (JetStream, Redis Streams, a quorum queue), `flush`
    /// waits until they are stored and the subscriber acks each delivery; the
    /// raw clients do the same (JetStream publish with PubAcks, XADD and
    /// XREADGROUP/XACK, persistent publishes with confirms and manual acks).
    #[arg(long)]
    pub durable: bool,

    /// Skip the raw-client baselines.
    #[arg(long)]
    pub no_raw: bool,

    /// An A/A run: the raw client on both sides, the side switchboard would
    /// take labelled `control`, so that the ratio column shows how far two
    /// identical clients differ on this machine — the noise floor under every
    /// sb/raw ratio of the same workload. Needs brokers with a raw client
    /// (not memory).
    #[arg(long, conflicts_with_all = ["no_raw", "plot"])]
    pub control: bool,

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn idle_of(argv: &[&str]) -> Duration {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .expect("the arguments parse");
        idle_timeout(cli.bench.idle_timeout, cli.bench.durable)
    }

    /// Durable runs wait 30 s for a stalled pull unless told otherwise;
    /// at-most-once runs keep 3 s; an explicit `--idle-timeout` always wins.
    #[test]
    fn durable_runs_wait_longer_unless_told_otherwise() {
        assert_eq!(idle_of(&[]), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(idle_of(&["--durable"]), DURABLE_IDLE_TIMEOUT);
        assert_eq!(
            idle_of(&["--durable", "--idle-timeout", "3s"]),
            Duration::from_secs(3)
        );
        assert_eq!(idle_of(&["--idle-timeout", "10s"]), Duration::from_secs(10));
        assert!(DURABLE_IDLE_TIMEOUT > DEFAULT_IDLE_TIMEOUT);
    }
}
