//! `switchboard remove-durable`: delete a durable consumer and what the
//! broker keeps for it, so that one made by `listen --durable` or a worker's
//! durable route does not keep storing messages nobody will read.

use std::process::ExitCode;

use switchboard::{Durable, Pattern};

use crate::connection;

const EXAMPLES: &str = "\
Examples:
  switchboard remove-durable --on 'alerts.>' pagers
  switchboard --broker redis remove-durable --on 'jobs.*' resizers

Deletes the durable consumer NAME over PATTERN (the NAME and --on that `listen
--durable NAME` or a worker route's `durable = \"NAME\"` used; with --group, the
group's name) and the messages the broker keeps for it that were not
acknowledged: on NATS the JetStream consumer, on Redis the stream's consumer
group, on RabbitMQ the durable queue. A listener or worker still running as
NAME stops receiving. Removing a consumer that does not exist succeeds. Exits 1 with one
`error:` line on a broker without durable consumers (MQTT, Redis PUBSUB only).";

/// Arguments of `switchboard remove-durable`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct RemoveDurableArgs {
    /// The pattern the durable consumer was made for (as given to `listen --on`).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) on: String,

    /// The durable consumer's name (letters, digits, `-`, `_`).
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
}

/// Runs `switchboard remove-durable`.
pub(crate) async fn run(url: &str, args: RemoveDurableArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before connecting.
    let pattern = Pattern::new(&args.on)?;
    let durable = Durable::new(&args.name)?;
    let broker = connection::connect(url).await?;
    let removed = broker.remove_durable(&pattern, &durable).await;
    let _ = connection::close(&broker).await;
    removed.map_err(connection::one_line)?;
    // The brokers answer a removal of what does not exist as a success:
    // said so, so that a mistyped NAME or PATTERN is not taken for done.
    eprintln!(
        "durable consumer '{}' over '{pattern}' at {} removed, or there was none (check NAME and --on if you expected one)",
        args.name,
        connection::display_url(url)
    );
    Ok(ExitCode::SUCCESS)
}
