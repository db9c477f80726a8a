//! Results: one [`Row`] per run, ratios against the raw client, the table on
//! stdout and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::runner::RunSpec;
use crate::target::Implementation;
use crate::{Error, Mode};

/// Latency percentiles of a run, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct Latency {
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in nanoseconds.
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> Latency {
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
        Latency {
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: histogram.max() as f64 / 1e3,
        }
    }
}

/// One run's result, as written to the JSON file (one object per run).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The broker kind (`nats`, `redis`, `amqp`, `memory`).
    pub(crate) broker: String,
    /// The URL, password redacted.
    pub(crate) url: String,
    /// `pub`, `pubsub`, `fanout`, `group` or `latency`.
    pub(crate) mode: String,
    /// Payload size in bytes.
    pub(crate) size: usize,
    /// `switchboard`, `raw` or `redis-benchmark`.
    pub(crate) implementation: String,
    /// `ok`, `unsupported`, `unavailable` (broker did not answer) or `error`.
    pub(crate) status: String,
    /// Why a row is not `ok`, or what to know about it.
    pub(crate) note: Option<String>,
    /// Measured messages published.
    pub(crate) messages: u64,
    /// Subscribers (0 for `pub`).
    pub(crate) subscribers: usize,
    /// Deliveries expected (messages × subscribers; messages for `group`).
    pub(crate) expected: u64,
    /// Deliveries received.
    pub(crate) received: u64,
    /// Throughput: published/s until flushed for `pub`; otherwise deliveries
    /// to all subscribers per second, from the first publish to the last
    /// receipt; the achieved send rate for `latency`.
    pub(crate) msgs_per_s: Option<f64>,
    /// `msgs_per_s` × payload size, in MB/s.
    pub(crate) mb_per_s: Option<f64>,
    /// Received/s from the first to the last receipt (subscriber runs).
    pub(crate) first_to_last_msgs_per_s: Option<f64>,
    /// Published/s from the first publish until the broker had them all (flush).
    pub(crate) publish_msgs_per_s: Option<f64>,
    /// `expected - received`.
    pub(crate) lost: u64,
    /// Messages received after one with a higher sequence number.
    pub(crate) reordered: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Errors the subscription stream reported.
    pub(crate) errors: u64,
    /// Client CPU seconds (user + system, whole process) during the measurement.
    pub(crate) cpu_s: Option<f64>,
    /// Seconds the throughput (or the send schedule) was measured over.
    pub(crate) elapsed_s: Option<f64>,
    /// switchboard ÷ raw on the same broker, mode and size: `msgs_per_s` for
    /// throughput rows, `p99_us` for latency rows (above 1 means slower there).
    pub(crate) ratio: Option<f64>,
    /// What `ratio` compares: `msgs_per_s` or `p99_us`.
    pub(crate) ratio_of: Option<&'static str>,
    /// Latency runs: the requested send rate (msg/s).
    pub(crate) rate: Option<u64>,
    /// Latency runs: the rate actually sent.
    pub(crate) achieved_rate: Option<f64>,
    /// Latency percentiles (latency runs only).
    #[serde(flatten)]
    pub(crate) latency: Option<Latency>,
    /// How many repetitions this row is the median of.
    pub(crate) repeats: usize,
    /// With `--repeat` above 1: what each repetition measured, in the order
    /// they ran (msgs/s, or p99 µs for latency rows); the row is the median.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) each: Vec<Option<f64>>,
    /// Switchboard rows with `--repeat` above 1: switchboard ÷ raw of each
    /// repetition, whose two runs went one right after the other (in
    /// alternating order). Their spread is how far one pair of runs can be
    /// trusted on this machine; `ratio` is the ratio of the medians.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pair_ratios: Vec<f64>,
}

impl Row {
    /// An empty `ok` row for `spec`, filled in by the run.
    pub(crate) fn new(spec: &RunSpec) -> Row {
        let mut row = Row::blank(
            &spec.target.kind,
            &spec.target.url,
            spec.mode,
            spec.size,
            spec.implementation.name(),
        );
        if spec.durable {
            // Its own mode name, so durable rows are never paired (or
            // plotted) with at-most-once ones.
            row.mode = format!("{}-durable", spec.mode.name());
        }
        row
    }

    /// An empty `ok` row.
    pub(crate) fn blank(
        broker: &str,
        url: &str,
        mode: Mode,
        size: usize,
        implementation: &str,
    ) -> Row {
        Row {
            broker: broker.to_string(),
            url: switchboard::redact_url(url),
            mode: mode.name().to_string(),
            size,
            implementation: implementation.to_string(),
            status: "ok".to_string(),
            note: None,
            messages: 0,
            subscribers: 0,
            expected: 0,
            received: 0,
            msgs_per_s: None,
            mb_per_s: None,
            first_to_last_msgs_per_s: None,
            publish_msgs_per_s: None,
            lost: 0,
            reordered: 0,
            duplicates: 0,
            errors: 0,
            cpu_s: None,
            elapsed_s: None,
            ratio: None,
            ratio_of: None,
            rate: None,
            achieved_rate: None,
            latency: None,
            repeats: 1,
            each: Vec::new(),
            pair_ratios: Vec::new(),
        }
    }

    /// Marks the row as not measured, saying why.
    pub(crate) fn fail(&mut self, status: &str, note: String) {
        self.status = status.to_string();
        self.note = Some(note);
        self.msgs_per_s = None;
        self.mb_per_s = None;
        self.latency = None;
    }

    /// Whether the run measured something.
    pub(crate) fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    fn is_latency(&self) -> bool {
        self.mode == Mode::Latency.name()
    }

    /// What the run measured: p99 µs for latency, msgs/s otherwise.
    fn measured(&self) -> Option<f64> {
        if self.is_latency() {
            self.latency.map(|l| l.p99_us)
        } else {
            self.msgs_per_s
        }
    }

    /// The number repetitions are ranked by: what they measured, a run
    /// that measured nothing last for latency and first otherwise.
    fn key(&self) -> f64 {
        self.measured()
            .unwrap_or(if self.is_latency() { f64::MAX } else { 0.0 })
    }
}

/// The median of repeated runs of one workload (by msgs/s, or by p99 for latency);
/// the first failure if any run failed.
pub(crate) fn median(mut rows: Vec<Row>) -> Option<Row> {
    if let Some(failed) = rows.iter().position(|r| !r.is_ok()) {
        return Some(rows.swap_remove(failed));
    }
    let repeats = rows.len();
    let each: Vec<Option<f64>> = rows.iter().map(Row::measured).collect();
    rows.sort_by(|a, b| a.key().total_cmp(&b.key()));
    let mut row = rows.into_iter().nth(repeats / 2)?;
    row.repeats = repeats;
    if repeats > 1 {
        row.each = each;
    }
    Some(row)
}

/// Sets `ratio` on every switchboard (or `--control`) row that has a raw row
/// to compare with.
pub(crate) fn add_ratios(rows: &mut [Row]) {
    let raws: Vec<Row> = rows
        .iter()
        .filter(|r| r.is_ok() && r.implementation == Implementation::Raw.name())
        .cloned()
        .collect();
    for row in rows.iter_mut().filter(|r| {
        r.is_ok()
            && (r.implementation == Implementation::Switchboard.name()
                || r.implementation == Implementation::Control.name())
    }) {
        let Some(raw) = raws
            .iter()
            .find(|r| r.broker == row.broker && r.mode == row.mode && r.size == row.size)
        else {
            continue;
        };
        let (raw_rate, raw_latency) = (raw.msgs_per_s, raw.latency);
        if row.each.len() > 1 && row.each.len() == raw.each.len() {
            row.pair_ratios = row
                .each
                .iter()
                .zip(&raw.each)
                .filter_map(|pair| match pair {
                    (Some(sb), Some(raw)) if *raw > 0.0 => Some(sb / raw),
                    _ => None,
                })
                .collect();
        }
        if row.is_latency() {
            if let (Some(sb), Some(raw)) = (row.latency, raw_latency) {
                row.ratio = (raw.p99_us > 0.0).then(|| sb.p99_us / raw.p99_us);
                row.ratio_of = Some("p99_us");
            }
        } else if let (Some(sb), Some(raw)) = (row.msgs_per_s, raw_rate) {
            row.ratio = (raw > 0.0).then(|| sb / raw);
            row.ratio_of = Some("msgs_per_s");
        }
    }
}

/// The `sb/raw` cell: the ratio of the medians, then, with `--repeat`, the
/// lowest and highest ratio of one pair of runs.
fn ratio_cell(row: &Row) -> String {
    let Some(ratio) = row.ratio else {
        return "-".to_string();
    };
    let mut cell = format!("{ratio:.2}");
    if row.ratio_of == Some("p99_us") {
        cell.push_str(" p99");
    }
    if row.pair_ratios.len() > 1 {
        let pairs = row.pair_ratios.iter().copied();
        let lo = pairs.clone().fold(f64::INFINITY, f64::min);
        let hi = pairs.fold(f64::NEG_INFINITY, f64::max);
        let _ = write!(cell, " ({lo:.2}–{hi:.2})");
    }
    cell
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), format)
}

fn micros(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1}ms", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// The results as a text table, with the notes of rows that have one below it.
pub(crate) fn table(rows: &[Row]) -> String {
    let header = [
        "broker",
        "mode",
        "size",
        "impl",
        "msgs",
        "msgs/s",
        "MB/s",
        "lost",
        "reord",
        "cpu s",
        // An A/A run (`--control`) compares the raw client with itself.
        if rows
            .iter()
            .any(|r| r.implementation == Implementation::Control.name())
        {
            "control/raw"
        } else {
            "sb/raw"
        },
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let mut notes = Vec::new();
    for row in rows {
        let mut line = vec![
            row.broker.clone(),
            row.mode.clone(),
            row.size.to_string(),
            row.implementation.clone(),
        ];
        if row.is_ok() {
            let lat = row.latency;
            line.extend([
                row.messages.to_string(),
                opt(row.msgs_per_s, thousands),
                opt(row.mb_per_s, |v| format!("{v:.1}")),
                row.lost.to_string(),
                row.reordered.to_string(),
                opt(row.cpu_s, |v| format!("{v:.2}")),
                ratio_cell(row),
                opt(lat.map(|l| l.p50_us), micros),
                opt(lat.map(|l| l.p90_us), micros),
                opt(lat.map(|l| l.p99_us), micros),
                opt(lat.map(|l| l.p999_us), micros),
                opt(lat.map(|l| l.max_us), micros),
            ]);
        } else {
            line.push("-".to_string());
            line.push(row.status.clone());
            line.extend(std::iter::repeat_n("-".to_string(), 10));
        }
        if let Some(note) = &row.note {
            notes.push(format!(
                "{} {} {}B {}: {note}",
                row.broker, row.mode, row.size, row.implementation
            ));
        }
        cells.push(line);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|line| line.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let width = widths.get(c).copied().unwrap_or(0);
            // Text columns left-aligned, numbers right-aligned.
            if c < 4 {
                let _ = write!(text, "{cell:<width$}  ");
            } else {
                let _ = write!(text, "{cell:>width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    notes.dedup();
    for note in notes {
        out.push_str("note: ");
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// The JSON document: what ran, where, and one object per run in `runs`.
#[derive(Debug, Serialize)]
struct Document<'a> {
    /// The switchboard version that measured.
    switchboard_version: &'static str,
    /// The command line.
    command: String,
    /// When the bench started (seconds since the Unix epoch).
    started_unix_s: u64,
    /// `uname -srm`-like machine description and CPU count.
    machine: String,
    /// One object per run.
    runs: &'a [Row],
}

/// Writes `rows` as the JSON document to `path`; `started` is when the bench
/// started (seconds since the Unix epoch).
pub(crate) fn write_json(rows: &[Row], path: &Path, started: u64) -> Result<(), Error> {
    let document = Document {
        switchboard_version: env!("CARGO_PKG_VERSION"),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_s: started,
        machine: machine(),
        runs: rows,
    };
    let json = serde_json::to_string_pretty(&document).map_err(Error::Json)?;
    std::fs::write(path, json + "\n").map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The OS, architecture, CPU count and model, and kernel of this machine.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn throughput(implementation: &str, msgs_per_s: f64) -> Row {
        let mut row = Row::blank("nats", "nats://u:pw@h:4222", Mode::Pub, 16, implementation);
        row.messages = 1000;
        row.msgs_per_s = Some(msgs_per_s);
        row
    }

    fn latency(implementation: &str, p99_us: f64) -> Row {
        let mut row = Row::blank("nats", "nats://h:4222", Mode::Latency, 16, implementation);
        row.latency = Some(Latency {
            p50_us: p99_us / 4.0,
            p90_us: p99_us / 2.0,
            p99_us,
            p999_us: p99_us * 2.0,
            max_us: p99_us * 3.0,
        });
        row
    }

    #[test]
    fn ratios_compare_switchboard_with_raw_on_the_same_workload() {
        let mut failed = throughput("raw", 0.0);
        failed.mode = Mode::Pubsub.name().to_string();
        failed.fail("error", "boom".to_string());
        let mut no_twin = throughput("switchboard", 50.0);
        no_twin.mode = Mode::Pubsub.name().to_string();
        let mut rows = vec![
            throughput("switchboard", 90.0),
            throughput("raw", 100.0),
            latency("switchboard", 440.0),
            latency("raw", 400.0),
            no_twin,
            failed,
        ];
        add_ratios(&mut rows);
        let ratios: Vec<(Option<f64>, Option<&str>)> =
            rows.iter().map(|r| (r.ratio, r.ratio_of)).collect();
        assert_eq!(
            ratios,
            [
                (Some(0.9), Some("msgs_per_s")),
                (None, None),
                (Some(1.1), Some("p99_us")),
                (None, None),
                (None, None),
                (None, None),
            ]
        );
        assert_eq!(rows[0].url, "nats://u:***@h:4222", "password redacted");
    }

    #[test]
    fn repeated_runs_report_the_ratio_of_each_pair_and_its_spread() {
        let runs = |implementation: &str, rates: [f64; 3]| {
            median(rates.map(|r| throughput(implementation, r)).to_vec()).unwrap()
        };
        let mut rows = vec![
            runs("switchboard", [80.0, 120.0, 90.0]),
            runs("raw", [100.0, 100.0, 120.0]),
        ];
        add_ratios(&mut rows);
        assert_eq!(rows[0].each, [Some(80.0), Some(120.0), Some(90.0)]);
        assert_eq!(rows[0].pair_ratios, [0.8, 1.2, 0.75]);
        // The ratio of the medians (90 / 100), then the lowest and highest pair.
        assert_eq!(rows[0].ratio, Some(0.9));
        assert!(
            table(&rows).contains(" 0.90 (0.75–1.20)  "),
            "{}",
            table(&rows)
        );
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["pair_ratios"], serde_json::json!([0.8, 1.2, 0.75]));
        // One run each: no spread to show, and none written.
        let mut single = vec![throughput("switchboard", 90.0), throughput("raw", 100.0)];
        add_ratios(&mut single);
        assert!(single[0].pair_ratios.is_empty());
        assert!(table(&single).contains(" 0.90  "), "{}", table(&single));
        let json = serde_json::to_value(&single[0]).unwrap();
        assert!(json.get("pair_ratios").is_none() && json.get("each").is_none());
    }

    #[test]
    fn median_is_the_middle_run_or_the_first_failure() {
        let row = median(vec![
            throughput("raw", 3.0),
            throughput("raw", 1.0),
            throughput("raw", 2.0),
        ])
        .unwrap();
        assert_eq!((row.msgs_per_s, row.repeats), (Some(2.0), 3));
        // Latency: ranked by p99, lower is better but the middle is the middle.
        let row = median(vec![
            latency("raw", 30.0),
            latency("raw", 10.0),
            latency("raw", 20.0),
        ])
        .unwrap();
        assert_eq!(row.latency.map(|l| l.p99_us), Some(20.0));
        let mut failed = throughput("raw", 0.0);
        failed.fail("error", "boom".to_string());
        let row = median(vec![throughput("raw", 1.0), failed]).unwrap();
        assert_eq!(row.status, "error");
        assert!(median(Vec::new()).is_none());
    }

    #[test]
    fn the_table_right_aligns_numbers_and_lists_notes_below() {
        let mut unavailable = throughput("raw", 0.0);
        unavailable.fail("unavailable", "no answer within 10s".to_string());
        let mut rows = vec![
            throughput("switchboard", 1_234_567.0),
            latency("switchboard", 12_345.0),
            unavailable,
        ];
        rows[0].lost = 3;
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[0].starts_with("broker  mode     size  impl"),
            "{table}"
        );
        assert!(lines[1].contains("1,234,567"), "{table}");
        assert!(lines[1].contains("  3  "), "lost: {table}");
        // Latencies of 10 ms and more in ms, the others in µs.
        assert!(lines[2].contains("3086  "), "{table}");
        assert!(lines[2].contains("12.3ms"), "{table}");
        assert!(lines[3].contains("unavailable"), "{table}");
        assert_eq!(
            lines[4], "note: nats pub 16B raw: no answer within 10s",
            "{table}"
        );
    }
}
