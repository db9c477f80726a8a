//! One run: connect the roles, warm up, measure, count what arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::{oneshot, watch};

use crate::client::{self, Burst, Client, Receiver, Work, PROGRESS_STEP};
use crate::cpu::CpuClock;
use crate::error::RunError;
use crate::payload::{self, Stamp, MEASURED_PUBLISHER, WARMUP_PUBLISHER};
use crate::report::{Latency, Row};
use crate::target::{Implementation, Target};
use crate::Mode;

/// Everything one run needs to know.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub(crate) target: Target,
    pub(crate) implementation: Implementation,
    pub(crate) mode: Mode,
    pub(crate) size: usize,
    /// Measured messages of a throughput run (an upper bound with `time`).
    pub(crate) msgs: u64,
    /// Throughput runs stop publishing after this long, if set.
    pub(crate) time: Option<Duration>,
    pub(crate) warmup: u64,
    pub(crate) subscribers: usize,
    /// `--idle-timeout` if given; [`RunSpec::idle`] picks the default.
    pub(crate) idle: Option<Duration>,
    pub(crate) timeout: Duration,
    /// Latency runs: messages per second and how long.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) latency_warmup: Duration,
    /// `worker` runs: the handler's concurrency and duration.
    pub(crate) concurrency: usize,
    pub(crate) handler_time: Duration,
    /// Durable workload: a durable consumer stores the messages, the subscriber acks each.
    pub(crate) durable: bool,
}

impl RunSpec {
    /// How long subscribers wait for progress once the publisher finished:
    /// `--idle-timeout`, else longer for durable runs than for the others
    /// ([`crate::args::idle_timeout`]).
    pub(crate) fn idle(&self) -> Duration {
        crate::args::idle_timeout(self.idle, self.durable)
    }
}

/// Runs one measurement and describes it as a row (an `error` row if it failed).
pub(crate) async fn run(spec: &RunSpec, progress: &ProgressBar) -> Row {
    let mut row = Row::new(spec);
    let outcome = match spec.mode {
        Mode::Fanout | Mode::Group | Mode::Latency | Mode::Worker if spec.durable => {
            Err(RunError::DurableMode)
        }
        Mode::Latency => latency(spec, progress, &mut row).await,
        _ => throughput(spec, progress, &mut row).await,
    };
    if let Err(error) = outcome {
        row.fail(error.status(), error.note());
    }
    row
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A subject no other run (or process) uses.
fn fresh_subject(spec: &RunSpec) -> (String, String) {
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = format!("{pid}-{nanos}-{n}");
    (
        format!("bench.{tag}.{}", spec.mode.name()),
        format!("bench-{tag}"),
    )
}

/// The connections of a run's roles: the publisher and the subscribers.
struct Setup {
    publisher: Arc<dyn Client>,
    subscribers: Vec<Box<dyn Client>>,
    /// The durable consumer of a durable run, removed by `close`.
    durable: Option<String>,
}

/// Connects the publisher and `subscribers` subscribers (in one queue group
/// if `group`) to a fresh subject; returns them and the subscriptions.
async fn setup(
    spec: &RunSpec,
    subscribers: usize,
    group: bool,
    work: Option<&Work>,
) -> Result<(Setup, Vec<Receiver>), RunError> {
    let (subject, group_name) = fresh_subject(spec);
    let publisher: Arc<dyn Client> =
        Arc::from(client::connect(spec.implementation, &spec.target, &subject).await?);
    if group && !publisher.queue_groups() {
        return Err(RunError::NoQueueGroups);
    }
    // Durable runs: the consumer exists (on the publisher's connection, so it
    // knows the subject is stored) before the subscriber resumes it and
    // before anything is published.
    let durable = if spec.durable {
        publisher.create_durable(&group_name).await?;
        Some(group_name.clone())
    } else {
        None
    };
    let subscribed = subscribe_all(
        spec,
        subscribers,
        group,
        work,
        &subject,
        &group_name,
        &durable,
    )
    .await;
    let (clients, receivers) = match subscribed {
        Ok(subscribed) => subscribed,
        Err(error) => {
            // Leave nothing behind on the broker.
            if let Some(name) = &durable {
                let _ = publisher.remove_durable(name).await;
            }
            publisher.close().await;
            return Err(error);
        }
    };
    let setup = Setup {
        publisher,
        subscribers: clients,
        durable,
    };
    Ok((setup, receivers))
}

/// Connects and subscribes the subscribers of a run.
async fn subscribe_all(
    spec: &RunSpec,
    subscribers: usize,
    group: bool,
    work: Option<&Work>,
    subject: &str,
    group_name: &str,
    durable: &Option<String>,
) -> Result<(Vec<Box<dyn Client>>, Vec<Receiver>), RunError> {
    let mut clients = Vec::with_capacity(subscribers);
    let mut receivers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let client = client::connect(spec.implementation, &spec.target, subject).await?;
        let receiver = match (work, durable) {
            (_, Some(name)) => client.subscribe_durable(name).await?,
            (Some(work), None) => client.serve(work.clone()).await?,
            (None, None) => client.subscribe(group.then_some(group_name)).await?,
        };
        clients.push(client);
        receivers.push(receiver);
    }
    Ok((clients, receivers))
}

impl Setup {
    async fn close(self) {
        for subscriber in self.subscribers {
            subscriber.close().await;
        }
        if let Some(name) = &self.durable {
            if let Err(error) = self.publisher.remove_durable(name).await {
                tracing::warn!(
                    "removing the bench's durable consumer {name}: {}",
                    error.note()
                );
            }
        }
        self.publisher.close().await;
    }
}

/// What subscribers of one pool (one subscriber, or one queue group) share.
struct Pool {
    received: AtomicU64,
    done: watch::Sender<bool>,
}

/// What one subscriber saw, or — [`Seen::add`]ed up — every subscriber of a run.
#[derive(Default)]
struct Seen {
    received: u64,
    reordered: u64,
    duplicates: u64,
    errors: u64,
    first_error: Option<RunError>,
    first: Option<Instant>,
    last: Option<Instant>,
    histogram: Option<Histogram<u64>>,
}

/// Which sequence numbers arrived, to tell duplicates from late messages.
struct SeenSet {
    bits: Vec<u64>,
}

impl SeenSet {
    /// Largest sequence number tracked (beyond it duplicates are not detected).
    const MAX: u64 = 1 << 31;

    /// Marks `seq`; false if it was already marked.
    fn insert(&mut self, seq: u64) -> bool {
        if seq >= Self::MAX {
            return true;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let Some(slot) = self.bits.get_mut(word) else {
            return true;
        };
        let fresh = *slot & (1 << bit) == 0;
        *slot |= 1 << bit;
        fresh
    }
}

fn new_histogram() -> Option<Histogram<u64>> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).ok()
}

/// Receives until the pool has `target` measured messages (once the publisher
/// says how many it sent), or nothing arrived for `idle` after that.
///
/// "Nothing arrived" counts every delivery, warm-up ones included, and the
/// idle clock starts when the publisher finished: a subscriber that is still
/// working through a backlog (a durable one acking each warm-up message
/// while the publisher had the broker to itself) is not cut off while it
/// makes progress. Counting only measured messages, from the consumer's
/// start, cut such a run off at the first check after the publisher
/// finished and reported everything not yet received as lost.
async fn consume(
    mut receiver: Receiver,
    pool: Arc<Pool>,
    mut target: watch::Receiver<Option<u64>>,
    idle: Duration,
    base: Instant,
    latency: bool,
    expected: u64,
) -> Seen {
    let mut seen = Seen {
        histogram: if latency { new_histogram() } else { None },
        ..Seen::default()
    };
    let mut set = SeenSet {
        bits: vec![0; (expected.min(SeenSet::MAX) / 64 + 1) as usize],
    };
    let mut max_seq: Option<u64> = None;
    let mut done = pool.done.subscribe();
    // One timer checked now and then, not one per message.
    let tick = tokio::time::sleep(idle);
    tokio::pin!(tick);
    // Deliveries of any kind this consumer saw, plus the pool's measured ones
    // (group members hear of each other's progress).
    let mut arrived: u64 = 0;
    let progress = |arrived: u64| arrived + pool.received.load(Ordering::Relaxed);
    let mut progress_at_tick = progress(arrived);
    loop {
        let goal = *target.borrow();
        if goal.is_some_and(|goal| pool.received.load(Ordering::Acquire) >= goal) {
            let _ = pool.done.send(true);
            break;
        }
        tokio::select! {
            biased;
            item = receiver.next() => {
                let Some(item) = item else { break };
                arrived += 1;
                match item {
                    Ok(stamp) => {
                        if stamp.publisher != MEASURED_PUBLISHER {
                            continue;
                        }
                        record(&mut seen, &mut set, &mut max_seq, stamp, base);
                        pool.received.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(error) => {
                        seen.errors += 1;
                        seen.first_error.get_or_insert(error);
                    }
                }
            }
            changed = target.changed(), if goal.is_none() => {
                if changed.is_err() {
                    break;
                }
                // The publisher finished: the idle clock starts now.
                progress_at_tick = progress(arrived);
                tick.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = done.changed() => break,
            () = &mut tick => {
                let now = progress(arrived);
                if goal.is_some() && now == progress_at_tick {
                    break;
                }
                progress_at_tick = now;
                tick.as_mut().reset(tokio::time::Instant::now() + idle);
            }
        }
    }
    seen
}

fn record(
    seen: &mut Seen,
    set: &mut SeenSet,
    max_seq: &mut Option<u64>,
    stamp: Stamp,
    base: Instant,
) {
    let now = Instant::now();
    if !set.insert(stamp.seq) {
        seen.duplicates += 1;
        return;
    }
    seen.first.get_or_insert(now);
    seen.last = Some(now);
    seen.received += 1;
    match *max_seq {
        Some(max) if stamp.seq < max => seen.reordered += 1,
        _ => *max_seq = Some(stamp.seq),
    }
    if let Some(histogram) = seen.histogram.as_mut() {
        let now_ns = u64::try_from(now.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        histogram.saturating_record(now_ns.saturating_sub(stamp.intended_ns).max(1));
    }
}

/// The subscriber side of a run: one consumer task per subscription, told
/// how many measured messages to wait for once the publisher is done.
struct Consumers {
    goal: watch::Sender<Option<u64>>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Consumers {
    /// Starts one consumer task per receiver; group members share one pool.
    fn start(
        receivers: Vec<Receiver>,
        group: bool,
        spec: &RunSpec,
        base: Instant,
        latency: bool,
        expected_each: u64,
    ) -> Consumers {
        let (goal, target) = watch::channel(None);
        let new_pool = || {
            Arc::new(Pool {
                received: AtomicU64::new(0),
                done: watch::channel(false).0,
            })
        };
        let shared = new_pool();
        // A worker's deliveries come out of its handler: one that takes
        // `handler_time` is no sign of a stall for that long.
        let idle = match spec.mode {
            Mode::Worker => spec.idle() + spec.handler_time,
            _ => spec.idle(),
        };
        let tasks = receivers
            .into_iter()
            .map(|receiver| {
                let pool = if group {
                    Arc::clone(&shared)
                } else {
                    new_pool()
                };
                tokio::spawn(consume(
                    receiver,
                    pool,
                    target.clone(),
                    idle,
                    base,
                    latency,
                    expected_each,
                ))
            })
            .collect();
        Consumers { goal, tasks }
    }

    /// The publisher sent `sent` measured messages: waits until they arrived
    /// (or nothing did for the idle timeout) and adds up what each consumer saw.
    async fn finish(self, sent: u64) -> Result<Seen, RunError> {
        let _ = self.goal.send(Some(sent));
        let mut totals = Seen::default();
        for task in self.tasks {
            totals.add(task.await?);
        }
        Ok(totals)
    }

    /// The publisher failed: the consumers stop without waiting.
    fn abort(self) {
        let _ = self.goal.send(Some(0));
    }
}

impl Seen {
    /// Adds what another subscriber saw: counts summed, the earliest first
    /// receipt, the latest last one, histograms merged, the first error kept.
    fn add(&mut self, other: Seen) {
        self.received += other.received;
        self.reordered += other.reordered;
        self.duplicates += other.duplicates;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(other.last);
        if let Some(h) = other.histogram {
            match self.histogram.as_mut() {
                Some(total) => {
                    let _ = total.add(&h);
                }
                None => self.histogram = Some(h),
            }
        }
    }
}

fn subscribers_for(spec: &RunSpec) -> usize {
    match spec.mode {
        Mode::Pub => 0,
        Mode::Pubsub | Mode::Latency | Mode::Worker => 1,
        Mode::Fanout | Mode::Group => spec.subscribers,
    }
}

async fn throughput(spec: &RunSpec, progress: &ProgressBar, row: &mut Row) -> Result<(), RunError> {
    let group = spec.mode == Mode::Group;
    let subscribers = subscribers_for(spec);
    let work = (spec.mode == Mode::Worker).then(|| Work::new(spec.concurrency, spec.handler_time));
    let (setup, receivers) = setup(spec, subscribers, group, work.as_ref()).await?;
    let base = Instant::now();
    let consumers = Consumers::start(receivers, group, spec, base, false, spec.msgs);
    let publisher = Arc::clone(&setup.publisher);

    // Warm-up: same connection, same subject, skipped by receivers.
    let hidden = ProgressBar::hidden();
    publisher
        .publish_burst(Burst::new(
            WARMUP_PUBLISHER,
            spec.size,
            spec.warmup,
            None,
            &hidden,
        ))
        .await?;
    publisher.flush().await?;

    progress.set_length(spec.msgs);
    progress.set_position(0);
    let cpu = CpuClock::start();
    let start = Instant::now();
    let deadline = spec.time.map(|t| start + t);
    let published = tokio::time::timeout(spec.timeout, async {
        let n = publisher
            .publish_burst(Burst::new(
                MEASURED_PUBLISHER,
                spec.size,
                spec.msgs,
                deadline,
                progress,
            ))
            .await?;
        publisher.flush().await?;
        Ok::<_, RunError>(n)
    })
    .await;
    let flushed = Instant::now();
    let published = published.unwrap_or(Err(RunError::PublishTimeout(spec.timeout)));
    let published = match published {
        Ok(n) => n,
        Err(error) => {
            consumers.abort();
            setup.close().await;
            return Err(error);
        }
    };
    progress.set_position(published);
    let totals = consumers.finish(published).await?;
    let cpu_s = cpu.elapsed_s();
    setup.close().await;

    let publish_s = flushed.duration_since(start).as_secs_f64();
    row.messages = published;
    row.subscribers = subscribers;
    row.publish_msgs_per_s = rate(published, publish_s);
    row.cpu_s = cpu_s;
    if subscribers == 0 {
        row.expected = 0;
        row.msgs_per_s = row.publish_msgs_per_s;
        row.elapsed_s = Some(publish_s);
    } else {
        let expected = if group {
            published
        } else {
            published * subscribers as u64
        };
        row.expected = expected;
        row.received = totals.received;
        row.lost = expected.saturating_sub(totals.received);
        row.reordered = totals.reordered;
        row.duplicates = totals.duplicates;
        row.errors = totals.errors;
        if let Some(error) = totals.first_error {
            row.note = Some(format!("subscriber error: {error}"));
        }
        if let (Some(first), Some(last)) = (totals.first, totals.last) {
            // From the first publish to the last receipt: first-to-last alone
            // would reward a subscriber that starts late and then drains a
            // client-side buffer at memory speed.
            let secs = last.duration_since(start).as_secs_f64();
            row.elapsed_s = Some(secs);
            row.msgs_per_s = rate(totals.received, secs);
            row.first_to_last_msgs_per_s = rate(
                totals.received.saturating_sub(1),
                last.duration_since(first).as_secs_f64(),
            );
        }
    }
    row.mb_per_s = row.msgs_per_s.map(|r| r * spec.size as f64 / 1e6);
    if let Some(work) = &work {
        let mut note = format!("concurrency {}", work.concurrency);
        if let Some(mean) = work.mean() {
            // The ideal: every slot always busy, at the handler's real speed.
            let ideal = work.concurrency as f64 / mean.as_secs_f64();
            note.push_str(&format!(
                ", handler {:?} (mean {:.2} ms): ideal {:.0} msg/s",
                spec.handler_time,
                mean.as_secs_f64() * 1e3,
                ideal
            ));
        }
        row.note = Some(match row.note.take() {
            Some(other) => format!("{note}; {other}"),
            None => note,
        });
    }
    Ok(())
}

fn rate(messages: u64, secs: f64) -> Option<f64> {
    (secs > 0.0 && messages > 0).then(|| messages as f64 / secs)
}

/// What the pacing thread reports.
struct Paced {
    sent: u64,
    /// How far the last message went out after its intended time.
    last_behind: Duration,
    elapsed: Duration,
}

/// Publishes on a fixed schedule from a dedicated thread: sleeps until shortly
/// before each intended send time, then spins (tokio's timer is ~1 ms coarse),
/// and stamps each message with its intended time, not the actual one.
///
/// At rates whose interval is under four spin windows (above 25,000 msg/s
/// with a precise timer) it does not spin: spinning there would take this
/// thread's whole core, which on a small machine is a core taken from the
/// broker and both ends of the client being measured. It sleeps until each
/// send time instead and sends whatever has come due on waking, a few
/// messages at a time; as every message is stamped with its intended time,
/// the wake-up's lateness is counted in the latency of both clients alike.
#[allow(clippy::too_many_arguments)]
fn pace(
    runtime: tokio::runtime::Handle,
    publisher: Arc<dyn Client>,
    base: Instant,
    rate: u64,
    warmup: u64,
    count: u64,
    size: usize,
    progress: ProgressBar,
) -> Result<Paced, RunError> {
    // Thread sleeps overshoot by the kernel's timer slack (50 µs by default);
    // on Linux this thread lowers its own to 1 µs so it can sleep until just
    // before each send instead of spinning a core away from the brokers.
    let precise = std::fs::write("/proc/thread-self/timerslack_ns", "1000").is_ok();
    // Sleep only this far ahead of the send time, then spin.
    let spin = if precise {
        Duration::from_micros(10)
    } else {
        Duration::from_micros(60)
    };
    let interval_ns = 1e9 / rate as f64;
    let spins = interval_ns >= 4.0 * spin.as_nanos() as f64;
    let mut buf = payload::buffer(size);
    let start = Instant::now() + Duration::from_millis(1);
    let mut last_behind = Duration::ZERO;
    for i in 0..warmup + count {
        let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let now = Instant::now();
        if intended > now {
            let wait = intended - now;
            if !spins {
                std::thread::sleep(wait);
            } else {
                if wait > spin {
                    std::thread::sleep(wait - spin);
                }
                while Instant::now() < intended {
                    std::hint::spin_loop();
                }
            }
        } else {
            last_behind = now - intended;
        }
        let intended_ns =
            u64::try_from(intended.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        let (publisher_id, seq) = if i < warmup {
            (WARMUP_PUBLISHER, i)
        } else {
            (MEASURED_PUBLISHER, i - warmup)
        };
        payload::write_header(&mut buf, publisher_id, seq, intended_ns);
        runtime.block_on(publisher.publish_one(&buf))?;
        if i >= warmup && (i - warmup) % PROGRESS_STEP == PROGRESS_STEP - 1 {
            progress.inc(PROGRESS_STEP);
        }
    }
    let elapsed = start.elapsed();
    runtime.block_on(publisher.flush())?;
    Ok(Paced {
        sent: count,
        last_behind,
        elapsed,
    })
}

async fn latency(spec: &RunSpec, progress: &ProgressBar, row: &mut Row) -> Result<(), RunError> {
    let (setup, receivers) = setup(spec, 1, false, None).await?;
    let base = Instant::now();
    let count = (spec.rate as f64 * spec.duration.as_secs_f64()).round() as u64;
    let warmup = (spec.rate as f64 * spec.latency_warmup.as_secs_f64()).round() as u64;
    let consumers = Consumers::start(receivers, false, spec, base, true, count);
    progress.set_length(count);
    progress.set_position(0);
    let cpu = CpuClock::start();
    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let publisher = Arc::clone(&setup.publisher);
    let (per_second, size, bar) = (spec.rate, spec.size, progress.clone());
    let thread = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let _ = done_tx.send(pace(
                runtime, publisher, base, per_second, warmup, count, size, bar,
            ));
        });
    if let Err(error) = thread {
        consumers.abort();
        setup.close().await;
        return Err(RunError::PacerStart(error));
    }
    let paced = done_rx.await.unwrap_or(Err(RunError::PacerStopped));
    let paced = match paced {
        Ok(paced) => paced,
        Err(error) => {
            consumers.abort();
            setup.close().await;
            return Err(error);
        }
    };
    progress.set_position(paced.sent);
    let totals = consumers.finish(paced.sent).await?;
    row.cpu_s = cpu.elapsed_s();
    setup.close().await;

    row.messages = paced.sent;
    row.subscribers = 1;
    row.expected = paced.sent;
    row.received = totals.received;
    row.lost = paced.sent.saturating_sub(totals.received);
    row.reordered = totals.reordered;
    row.duplicates = totals.duplicates;
    row.errors = totals.errors;
    row.rate = Some(spec.rate);
    let elapsed = paced.elapsed.as_secs_f64();
    row.elapsed_s = Some(elapsed);
    row.achieved_rate = rate(paced.sent + warmup, elapsed);
    row.msgs_per_s = row.achieved_rate;
    row.mb_per_s = row.msgs_per_s.map(|r| r * spec.size as f64 / 1e6);
    if let Some(histogram) = totals.histogram.filter(|h| !h.is_empty()) {
        row.latency = Some(Latency::from_histogram(&histogram));
    }
    let mut notes = Vec::new();
    if let Some(error) = totals.first_error {
        notes.push(format!("subscriber error: {error}"));
    }
    if paced.last_behind > Duration::from_millis(10) {
        notes.push(format!(
            "the publisher fell {:?} behind schedule: {} msg/s was not sustained",
            paced.last_behind, spec.rate
        ));
    }
    if !notes.is_empty() {
        row.note = Some(notes.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber still working through warm-up messages when the
    /// publisher finished (a durable one, acking each, behind a publisher
    /// that had the broker to itself) is not cut off while deliveries keep
    /// arriving: the idle timeout counts every delivery, from the moment the
    /// publisher finished. Before, this consumer stopped at its first check
    /// with 0 of 5 measured messages (the Redis `pubsub-durable` 16 B row
    /// that received nothing of 200,000).
    #[tokio::test]
    async fn a_subscriber_behind_on_warm_up_is_waited_for() {
        let idle = Duration::from_millis(500);
        let (warmup, measured) = (60u64, 5u64);
        let stamps = (0..warmup)
            .map(|seq| (WARMUP_PUBLISHER, seq))
            .chain((0..measured).map(|seq| (MEASURED_PUBLISHER, seq)));
        // One delivery every 20 ms: the warm-up alone lasts 1.2 s, past `idle`.
        let receiver: Receiver = futures::stream::iter(stamps)
            .then(|(publisher, seq)| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut buf = payload::buffer(payload::HEADER_LEN);
                payload::write_header(&mut buf, publisher, seq, 0);
                Stamp::parse(&buf)
            })
            .chain(futures::stream::pending())
            .boxed();
        let pool = Arc::new(Pool {
            received: AtomicU64::new(0),
            done: watch::channel(false).0,
        });
        // The publisher finished before the subscriber got anything measured.
        let (goal, target) = watch::channel(None);
        let consumer = tokio::spawn(consume(
            receiver,
            pool,
            target,
            idle,
            Instant::now(),
            false,
            measured,
        ));
        let _ = goal.send(Some(measured));
        let seen = tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .expect("the consumer ends once it has every measured message")
            .expect("the consumer task does not panic");
        assert_eq!(seen.received, measured);
    }
}
