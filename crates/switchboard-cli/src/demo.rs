//! `switchboard demo`: the alert/reaction scenario of the seed article in one
//! process. An alert side fires a few alerts (with headers); a reaction side,
//! subscribed to `alerts.>` and `some_event`, alerts Sarah Connor when a robot
//! is reported. Both sides have their own connection, as two programs would.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt as _;
use switchboard::{AnyBroker, Message, Pattern, Subscription};

use crate::connection;
use crate::format;

/// How long the reaction may take to see every alert once all were sent.
const REACTION_DEADLINE: Duration = Duration::from_secs(10);

/// The patterns the reaction subscribes to.
const PATTERNS: [&str; 2] = ["alerts.>", "some_event"];

/// One alert the alert side fires.
struct Alert {
    subject: &'static str,
    text: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

/// The alerts fired, in order.
const ALERTS: [Alert; 3] = [
    Alert {
        subject: "alerts.robot",
        text: "bad robot detected",
        headers: &[("severity", "high"), ("camera", "lobby-3")],
    },
    Alert {
        subject: "alerts.cpu",
        text: "CPU at 98%",
        headers: &[("severity", "low"), ("host", "web-1")],
    },
    Alert {
        subject: "some_event",
        text: "Terminator just dropped in our space-time",
        headers: &[("severity", "critical")],
    },
];

/// Arguments of `switchboard demo`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs on the in-memory broker unless --broker says otherwise, e.g.\n  switchboard --broker nats demo"
)]
pub struct DemoArgs {
    /// Pause before each alert (e.g. `0s`, `250ms`, `1s`).
    #[arg(long, value_name = "DURATION", default_value = "400ms", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
}

/// What the reaction did.
#[derive(Debug, Default)]
struct Reactions {
    received: usize,
    sarah_alerted: usize,
}

/// Runs `switchboard demo`.
pub(crate) async fn run(url: &str, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let shown_url = connection::display_url(url);
    say(
        "demo",
        &format!("alerts and their reaction on {shown_url}, each side with its own connection"),
    );

    let reaction_broker = connection::connect(url).await?;
    let mut subscriptions = Vec::new();
    for pattern in PATTERNS {
        let pattern: Pattern = pattern.parse()?;
        match reaction_broker.subscribe(&pattern).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(error) => {
                let _ = connection::close(&reaction_broker).await;
                return Err(connection::one_line(error));
            }
        }
    }
    say(
        "reaction",
        &format!(
            "subscribed to '{}', waiting for alerts",
            PATTERNS.join("' and '")
        ),
    );
    let reaction = tokio::spawn(react(subscriptions, ALERTS.len()));

    let sent = fire_alerts(url, args.interval).await;
    let reactions = match sent {
        Ok(()) => tokio::time::timeout(REACTION_DEADLINE, reaction).await,
        Err(error) => {
            reaction.abort();
            let _ = connection::close(&reaction_broker).await;
            return Err(error);
        }
    };
    let closed = connection::close(&reaction_broker).await;
    let reactions = match reactions {
        Ok(Ok(reactions)) => reactions?,
        Ok(Err(join)) => anyhow::bail!("the reaction task failed: {join}"),
        Err(_) => anyhow::bail!(
            "the reaction did not receive all {} alerts within {}s",
            ALERTS.len(),
            REACTION_DEADLINE.as_secs()
        ),
    };
    closed?;
    say(
        "demo",
        &format!(
            "done: {} alerts sent, {} received, Sarah Connor alerted {} times; connections closed",
            ALERTS.len(),
            reactions.received,
            reactions.sarah_alerted
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// The alert side: connects, fires [`ALERTS`], flushes and closes.
async fn fire_alerts(url: &str, interval: Duration) -> anyhow::Result<()> {
    let broker = connection::connect(url).await?;
    let fired = fire_on(&broker, interval).await;
    let shut = connection::flush_and_close(&broker).await;
    fired?;
    shut?;
    say(
        "alert",
        &format!("flushed {} alerts and disconnected", ALERTS.len()),
    );
    Ok(())
}

async fn fire_on(broker: &AnyBroker, interval: Duration) -> anyhow::Result<()> {
    for Alert {
        subject,
        text,
        headers,
    } in ALERTS
    {
        tokio::time::sleep(interval).await;
        let mut message = Message::new(subject, text)?;
        for (name, value) in headers {
            message.headers_mut().insert(*name, *value)?;
        }
        say(
            "alert",
            &format!(
                "send on {subject}: {text:?} {}",
                format::headers_text(message.headers())
            ),
        );
        broker
            .publish(message)
            .await
            .map_err(connection::one_line)?;
    }
    Ok(())
}

/// The reaction side: handles `expected` alerts from `subscriptions`, then unsubscribes.
async fn react(mut subscriptions: Vec<Subscription>, expected: usize) -> anyhow::Result<Reactions> {
    let mut reactions = Reactions::default();
    {
        let mut deliveries = futures::stream::select_all(subscriptions.iter_mut());
        while reactions.received < expected {
            let Some(delivery) = deliveries.next().await else {
                anyhow::bail!("the subscription ended before all alerts arrived");
            };
            let mut delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    say("reaction", &format!("warning: {error}"));
                    continue;
                }
            };
            reactions.received += 1;
            say("reaction", &format!("got {}", format::text_line(&delivery)));
            let text = delivery.payload_str().unwrap_or_default().to_lowercase();
            if text.contains("robot") || text.contains("terminator") {
                reactions.sarah_alerted += 1;
                let severity = delivery.headers().get("severity").unwrap_or("unknown");
                say(
                    "reaction",
                    &format!("  -> alerting Sarah Connor! (severity {severity})"),
                );
            } else {
                say("reaction", "  -> no robot involved, logged only");
            }
            if let Err(error) = delivery.ack().await {
                say("reaction", &format!("warning: {error}"));
            }
        }
    }
    for subscription in subscriptions {
        subscription.close().await.map_err(connection::one_line)?;
    }
    say("reaction", "handled every alert, unsubscribed");
    Ok(reactions)
}

/// Prints one line of the story; a closed stdout is ignored rather than fatal.
fn say(who: &str, what: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{who:>8} | {what}");
    let _ = stdout.flush();
}
