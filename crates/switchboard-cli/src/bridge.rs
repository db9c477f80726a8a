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
bridge that dies loses nothing. When --to fails (a publish or a flush refused),
the bridge gives back to --from what --to may not have (nack: a durable or
group source delivers it again at once, to the next bridge, not after its ack
wait) and exits 1. Counts go to stderr every --report and at the end.
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
    /// Flushes `to`, then acknowledges the deliveries on the source; how many.
    /// If the flush fails they are given back to the source instead.
    async fn settle(&mut self, to: &AnyBroker) -> anyhow::Result<u64> {
        if self.deliveries.is_empty() {
            return Ok(0);
        }
        if let Err(error) = to.flush().await {
            give_back(self.deliveries.drain(..)).await;
            return Err(connection::one_line(error));
        }
        let settled = self.deliveries.len() as u64;
        for mut delivery in self.deliveries.drain(..) {
            if let Err(error) = delivery.ack().await {
                eprintln!("warning: {}", connection::one_line(error));
            }
        }
        Ok(settled)
    }
}

/// How long giving deliveries back to the source may take once --to failed.
const GIVE_BACK: Duration = Duration::from_secs(5);

/// Gives `deliveries` back to the source (`nack`): whether --to has them is
/// unknown, and a durable or group source then delivers them again at once,
/// to the next bridge, instead of after its ack wait (a no-op on a source
/// that does not redeliver). Bounded by [`GIVE_BACK`]: the source may be
/// failing too.
async fn give_back(deliveries: impl IntoIterator<Item = Delivery>) {
    let giving = async {
        for mut delivery in deliveries {
            if let Err(error) = delivery.nack().await {
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
    let mut flush_tick = tokio::time::interval(args.flush);
    let mut report_tick = tokio::time::interval(args.report);
    report_tick.reset();
    let outcome: anyhow::Result<Option<Signal>> = loop {
        if args.count.is_some_and(|count| forwarded >= count) {
            break Ok(None);
        }
        tokio::select! {
            next = subscription.next() => match next {
                Some(Ok(delivery)) => {
                    let message = delivery.message().clone();
                    if let Err(error) = to.publish(message).await {
                        let error = connection::one_line(error).context(format!(
                            "cannot forward a message on '{}' to {to_shown}",
                            delivery.subject()
                        ));
                        // A source that redelivers keeps it (and those not
                        // settled yet, given back below).
                        give_back([delivery]).await;
                        break Err(error);
                    }
                    forwarded += 1;
                    pending.deliveries.push(delivery);
                    if pending.deliveries.len() as u64 >= args.batch {
                        match pending.settle(&to).await {
                            Ok(n) => settled += n,
                            Err(error) => break Err(error),
                        }
                    }
                }
                Some(Err(error)) => {
                    warnings += 1;
                    eprintln!("warning: {}", connection::one_line(error));
                }
                None => break Err(anyhow::anyhow!("{from_shown} ended the subscription to '{pattern}'")),
            },
            _ = flush_tick.tick() => match pending.settle(&to).await {
                Ok(n) => settled += n,
                Err(error) => break Err(error),
            },
            _ = report_tick.tick() => {
                eprintln!("bridge: {forwarded} forwarded, {settled} confirmed by {to_shown}, {warnings} warning(s)");
            }
            signal = signals.recv() => break Ok(Some(signal)),
        }
    };
    let last = pending.settle(&to).await;
    if let Ok(n) = &last {
        settled += n;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), subscription.close()).await;
    let _ = connection::close(&from).await;
    let closed = connection::flush_and_close(&to).await;
    eprintln!(
        "bridge: {forwarded} forwarded, {settled} confirmed by {to_shown}, {warnings} warning(s)"
    );
    let stopped_by = outcome?;
    last?;
    closed?;
    Ok(stopped_by.map_or(ExitCode::SUCCESS, Signal::exit_code))
}
