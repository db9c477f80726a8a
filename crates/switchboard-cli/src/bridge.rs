//! `switchboard bridge`: forward everything matching a pattern from one broker
//! to another, subjects and headers intact — a live workload moved between
//! brokers with no code change.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt as _;
use switchboard::{AnyBroker, Delivery, Durable, Pattern, QueueGroup};

use crate::connection;
use crate::membership::Membership;
use crate::signals::{Signal, Signals};

mod endpoint;

use endpoint::Endpoint;

const EXAMPLES: &str = "\
Examples:
  switchboard bridge --from nats://127.0.0.1:4222 --to redis://127.0.0.1:6379 --on 'alerts.>'
  switchboard bridge --from redis --to amqp --on 'orders.*' --group bridges --count 1000
  switchboard bridge --from nats --to amqp --on 'alerts.>' --durable to-rabbit   # nothing lost while it is down

Each message is published to --to with its subject, headers and payload, and
acknowledged on --from only once --to has it (after a flush, done every
--batch messages and every --flush): on a source that acknowledges (RabbitMQ), a
bridge that dies loses nothing. When --to fails (a publish or a flush refused,
a broker restarting), the bridge stops reading --from and forwards what it
holds again on the adapters' reconnection schedule (100ms doubling to 5s) for
up to --retry-for (30s): an outage shorter than that loses nothing, though
what was held may arrive twice. A source that keeps nothing for its readers
(NATS core, Redis PUBSUB) buffers what comes meanwhile up to its capacity (an
overflow is counted as a warning). Past --retry-for the bridge gives back to
--from what --to may not have, and what --from had delivered that it had not
read yet (nack: a durable or group source delivers it again at once, to the
next bridge, not after its ack wait; a source that keeps nothing for it loses
them, and the error says how many) and exits 1.
A message --to refuses for what it is (too large for it, a header it cannot
carry) is rejected on --from with a warning, and the bridge goes on.
Counts go to stderr every --report and at the end.
Ctrl-C/SIGTERM flushes what was forwarded and exits 130/143.

--from and --to must be different brokers: subjects are forwarded unchanged,
so a broker bridged to itself would get each message back, match --on again
and forward it forever. They are one broker when they are of one kind and
reach a common server (host names resolved, default ports filled in: 127.0.0.1
and localhost are one; the user, the query and a Redis database number do not
tell them apart, since PUBSUB spans every database) and, on AMQP, name the
same vhost and exchange. Such a pair is refused before connecting.";

/// Arguments of `switchboard bridge`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct BridgeArgs {
    /// The broker to read from (kind or URL).
    #[arg(long, value_name = "KIND|URL")]
    pub(crate) from: String,

    /// The broker to publish to (kind or URL); not the broker of --from
    /// (see below).
    #[arg(long, value_name = "KIND|URL")]
    pub(crate) to: String,

    /// Subject pattern to forward (`*` and `>` wildcards).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) on: String,

    /// Read in queue group NAME, so several bridges share the work.
    #[arg(long, value_name = "NAME", conflicts_with = "durable")]
    pub(crate) group: Option<String>,

    /// Read as durable consumer NAME where --from has durable subscriptions
    /// (NATS JetStream, RabbitMQ): what is published while the bridge is
    /// down is kept and forwarded when it comes back, and bridges with the
    /// same NAME share the work.
    #[arg(long, value_name = "NAME")]
    pub(crate) durable: Option<String>,

    /// How long to keep trying when --to fails (a publish or flush refused,
    /// a broker restarting) before giving back what is held and exiting 1;
    /// 0s gives up at once.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration_arg::zero_or_more)]
    pub(crate) retry_for: Duration,

    /// Exit after forwarding N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Flush --to (then acknowledge on --from) after this many messages at most.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch: u64,

    /// Flush --to (then acknowledge on --from) at least this often (above zero).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = crate::duration_arg::above_zero)]
    pub(crate) flush: Duration,

    /// How often the counts are printed on stderr (above zero).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration_arg::above_zero)]
    pub(crate) report: Duration,
}

/// Deliveries forwarded but not yet flushed on the destination.
struct Pending {
    deliveries: Vec<Delivery>,
}

impl Pending {
    /// Flushes `to`, then acknowledges the deliveries on the source; how
    /// many. If the flush fails they stay pending: the caller forwards them
    /// again or gives them back.
    async fn settle(&mut self, to: &AnyBroker) -> switchboard::Result<u64> {
        if self.deliveries.is_empty() {
            return Ok(0);
        }
        to.flush().await?;
        let settled = self.deliveries.len() as u64;
        for mut delivery in self.deliveries.drain(..) {
            if let Err(error) = delivery.ack().await {
                eprintln!("warning: {}", connection::one_line(error));
            }
        }
        Ok(settled)
    }

    /// Publishes every pending message to `to` again and settles them:
    /// after --to failed, which of them it has is unknown, so some may
    /// arrive twice (at least once, never lost).
    async fn forward_again(&mut self, to: &AnyBroker) -> switchboard::Result<u64> {
        for delivery in &self.deliveries {
            to.publish(delivery.message().clone()).await?;
        }
        self.settle(to).await
    }
}

/// Whether --to refused a message for what it is (too large, a header it
/// cannot carry, a feature it lacks) rather than for the state of the link:
/// such a message is never carried, however often it is tried again.
fn never_carried(error: &switchboard::Error) -> bool {
    matches!(
        error.kind(),
        switchboard::ErrorKind::InvalidInput | switchboard::ErrorKind::Unsupported
    )
}

/// How an outage of --to ended.
enum Outage {
    /// --to took the held messages: this many were settled.
    Over(u64),
    /// A signal came first.
    Signal(Signal),
    /// --to still failed when `--retry-for` was over.
    GaveUp(anyhow::Error),
}

/// Waits out a failure of --to (`error`, from a publish or a flush): the
/// bridge stops reading --from and forwards what it holds again on the
/// adapters' reconnection schedule, until --to takes it, a signal comes, or
/// `retry_for` is over. Most outages are a restart or a failover that the
/// adapter's own reconnection rides out; exiting at once made every such
/// restart a bridge restart, and lost what a source that keeps nothing
/// (NATS core, Redis PUBSUB) sent meanwhile.
async fn ride_out(
    to: &AnyBroker,
    to_shown: &str,
    pending: &mut Pending,
    signals: &mut Signals,
    retry_for: Duration,
    error: switchboard::Error,
) -> Outage {
    let held = pending.deliveries.len();
    let give_up = |error: switchboard::Error| {
        Outage::GaveUp(connection::one_line(error).context(format!(
            "cannot forward to {to_shown} (kept trying for {})",
            humantime::format_duration(retry_for)
        )))
    };
    if retry_for.is_zero() {
        return give_up(error);
    }
    eprintln!(
        "warning: cannot forward to {to_shown}: {}; retrying for up to {} with {held} message(s) held, not reading --from meanwhile",
        connection::one_line(error),
        humantime::format_duration(retry_for)
    );
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut attempts = switchboard::Backoff::DEFAULT.attempts();
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return give_up(last.unwrap_or_else(|| switchboard::Error::Timeout {
                broker: to.kind(),
                operation: "forwarding the held messages".into(),
                after: retry_for,
            }));
        }
        tokio::select! {
            () = tokio::time::sleep(attempts.failed().min(left)) => {}
            signal = signals.recv() => return Outage::Signal(signal),
        }
        // An attempt may hang on a link that is half there: bounded by
        // what is left, at least a second.
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        tokio::select! {
            attempt = tokio::time::timeout(left, pending.forward_again(to)) => match attempt {
                Ok(Ok(settled)) => {
                    eprintln!("bridge: {to_shown} takes messages again; the {held} held were forwarded");
                    return Outage::Over(settled);
                }
                Ok(Err(error)) => last = Some(error),
                Err(_) => {}
            },
            signal = signals.recv() => return Outage::Signal(signal),
        }
    }
}

/// How long giving deliveries back to the source may take once --to failed.
const GIVE_BACK: Duration = Duration::from_secs(5);

/// Most messages [`take_unread`] takes: a subscription's buffer is bounded
/// by its capacity, which can be large.
const MAX_UNREAD: usize = 1 << 20;

/// What the subscription has already received and the bridge not read.
fn take_unread(subscription: &mut switchboard::Subscription) -> Vec<Delivery> {
    let mut unread = Vec::new();
    while unread.len() < MAX_UNREAD {
        match subscription.next_ready() {
            Some(Ok(delivery)) => unread.push(delivery),
            Some(Err(_)) => continue,
            None => break,
        }
    }
    unread
}

/// Gives `deliveries` back to the source ([`Delivery::hand_back`]: the
/// bridge closes its subscription right after): whether --to has them is
/// unknown, and a durable or group source then delivers them again at once
/// to the next bridge, instead of after its ack wait (a no-op on a source
/// that does not redeliver). Bounded by [`GIVE_BACK`]: the source may be
/// failing too.
async fn give_back(deliveries: impl IntoIterator<Item = Delivery>) {
    let giving = async {
        for mut delivery in deliveries {
            if let Err(error) = delivery.hand_back().await {
                eprintln!("warning: {}", connection::one_line(error));
            }
        }
    };
    let _ = tokio::time::timeout(GIVE_BACK, giving).await;
}

/// Fails when --from and --to are one broker (see [`Endpoint`]): the bridge
/// forwards subjects unchanged, so every forwarded message would match --on
/// again on the source and be forwarded again, endlessly. URLs that cannot
/// be read are left to the connection, which says what is wrong with them,
/// unless they are the same text.
async fn refuse_one_broker(args: &BridgeArgs, pattern: &Pattern) -> anyhow::Result<()> {
    let (from_url, to_url) = (
        switchboard::resolve_url(&args.from),
        switchboard::resolve_url(&args.to),
    );
    let shared = match (Endpoint::parse(from_url), Endpoint::parse(to_url)) {
        (Some(from), Some(to)) => from.shared_with(&to).await,
        _ => (from_url == to_url).then(|| switchboard::redact_url(from_url)),
    };
    let Some(shared) = shared else {
        return Ok(());
    };
    anyhow::bail!(
        "--from {} and --to {} are the same broker (both reach {shared}): every forwarded message would match '{pattern}' again and loop; give --to another broker (or, on AMQP, another vhost or exchange=)",
        connection::display_url(&args.from),
        connection::display_url(&args.to),
    )
}

/// Runs `switchboard bridge`.
pub(crate) async fn run(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    let pattern = Pattern::new(&args.on)?;
    let membership = match (args.durable.as_deref(), args.group.as_deref()) {
        (Some(name), _) => Membership::Durable(Durable::new(name)?),
        (None, Some(group)) => Membership::Group(QueueGroup::new(group)?),
        (None, None) => Membership::Plain,
    };
    let (from_shown, to_shown) = (
        connection::display_url(&args.from),
        connection::display_url(&args.to),
    );
    for (option, url) in [("--from", &args.from), ("--to", &args.to)] {
        // Nothing else runs in the bridge's process: it would forward
        // nothing, or to nobody, and say nothing of it.
        if switchboard::resolve_url(url).starts_with("memory:") {
            anyhow::bail!(
                "{option} {url}: the memory broker reaches only this process, so a bridge can do nothing with it; bridge brokers that other programs reach (nats, redis, amqp, mqtt)"
            );
        }
    }
    refuse_one_broker(&args, &pattern).await?;
    let mut signals = Signals::install()?;
    let connecting = async {
        let from = connection::connect(&args.from).await?;
        let to = connection::connect(&args.to).await?;
        let subscription = match membership.subscribe(&from, &pattern).await {
            Ok(subscription) => subscription,
            Err(error) => {
                let _ = connection::close(&from).await;
                let _ = connection::close(&to).await;
                return Err(connection::one_line(error));
            }
        };
        anyhow::Ok((from, to, subscription))
    };
    let (from, to, mut subscription) = tokio::select! {
        connected = connecting => connected?,
        signal = signals.recv() => {
            eprintln!("caught {signal} before the bridge was ready: stopped");
            return Ok(signal.exit_code());
        }
    };
    eprintln!("bridging '{pattern}' from {from_shown} to {to_shown} (Ctrl-C to stop)");

    let mut pending = Pending {
        deliveries: Vec::new(),
    };
    let (mut forwarded, mut settled, mut warnings) = (0u64, 0u64, 0u64);
    // Set once --to failed for good: what is held is given back, not flushed.
    let mut to_failed = false;
    let mut flush_tick = tokio::time::interval(args.flush);
    let mut report_tick = tokio::time::interval(args.report);
    // Ticks that fell due while a step took long (an outage) fire once, not
    // in a burst of report lines.
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report_tick.reset();
    let outcome: anyhow::Result<Option<Signal>> = loop {
        if args.count.is_some_and(|count| forwarded >= count) {
            break Ok(None);
        }
        let failed = tokio::select! {
            next = subscription.next() => match next {
                Some(Ok(mut delivery)) => {
                    let published = to.publish(delivery.message().clone()).await;
                    let refused = match &published {
                        Err(error) if never_carried(error) => Some(error.to_string()),
                        _ => None,
                    };
                    if let Some(error) = refused {
                        // Retried, it would fail the same way and hold up
                        // everything behind it.
                        warnings += 1;
                        eprintln!(
                            "warning: the message on '{}' cannot be forwarded to {to_shown}: {error}; rejected on --from (a dead-letter exchange there keeps it), the bridge goes on",
                            delivery.subject(),
                        );
                        if let Err(error) = delivery.reject().await {
                            eprintln!("warning: {}", connection::one_line(error));
                        }
                        continue;
                    }
                    forwarded += 1;
                    if published.is_err() {
                        // What was published before may be confirmed all the
                        // same (answered before the link broke): settled
                        // first, so that only what --to may lack is held.
                        if let Ok(n) = pending.settle(&to).await {
                            settled += n;
                        }
                    }
                    pending.deliveries.push(delivery);
                    match published {
                        Err(error) => Some(error),
                        Ok(()) if pending.deliveries.len() as u64 >= args.batch => {
                            match pending.settle(&to).await {
                                Ok(n) => {
                                    settled += n;
                                    None
                                }
                                Err(error) => Some(error),
                            }
                        }
                        Ok(()) => None,
                    }
                }
                Some(Err(error)) => {
                    warnings += 1;
                    eprintln!("warning: {}", connection::one_line(error));
                    None
                }
                None => break Err(anyhow::anyhow!("{from_shown} ended the subscription to '{pattern}'")),
            },
            _ = flush_tick.tick() => match pending.settle(&to).await {
                Ok(n) => {
                    settled += n;
                    None
                }
                Err(error) => Some(error),
            },
            _ = report_tick.tick() => {
                eprintln!("bridge: {forwarded} forwarded, {settled} confirmed by {to_shown}, {warnings} warning(s)");
                None
            }
            signal = signals.recv() => break Ok(Some(signal)),
        };
        let Some(error) = failed else {
            continue;
        };
        match ride_out(
            &to,
            &to_shown,
            &mut pending,
            &mut signals,
            args.retry_for,
            error,
        )
        .await
        {
            Outage::Over(n) => {
                settled += n;
                flush_tick.reset();
            }
            Outage::Signal(signal) => {
                to_failed = true;
                break Ok(Some(signal));
            }
            Outage::GaveUp(error) => {
                to_failed = true;
                // What --from delivered while the bridge was not reading goes
                // with what it held: it was dropped at exit, uncounted.
                let unread = take_unread(&mut subscription);
                let held = pending.deliveries.len() + unread.len();
                pending.deliveries.extend(unread);
                let fate = match &membership {
                    Membership::Durable(_) => "given back to --from",
                    Membership::Group(_) if from.capabilities().redelivery => {
                        "given back to --from, which keeps them for the group's other members, if there are any"
                    }
                    _ => "lost: --from keeps nothing for this bridge (--durable would have kept them)",
                };
                break Err(error.context(format!("{held} message(s) not forwarded, {fate}")));
            }
        }
    };
    let last = if to_failed {
        give_back(pending.deliveries.drain(..)).await;
        Ok(0)
    } else {
        match pending.settle(&to).await {
            Ok(n) => Ok(n),
            Err(error) => {
                give_back(pending.deliveries.drain(..)).await;
                Err(connection::one_line(error))
            }
        }
    };
    if let Ok(n) = &last {
        settled += n;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), subscription.close()).await;
    let _ = connection::close(&from).await;
    // --to failing for good has nothing left to flush (and may not answer).
    let closed = if to_failed {
        connection::close(&to).await
    } else {
        connection::flush_and_close(&to).await
    };
    eprintln!(
        "bridge: {forwarded} forwarded, {settled} confirmed by {to_shown}, {warnings} warning(s)"
    );
    let stopped_by = outcome?;
    last?;
    if !to_failed {
        closed?;
    }
    Ok(stopped_by.map_or(ExitCode::SUCCESS, Signal::exit_code))
}
