//! Connecting to the broker named on the command line, with a deadline.

use std::time::Duration;

use switchboard::AnyBroker;

/// How long a command waits for a broker to accept the connection. Adapters
/// have their own connect timeout; this bounds an adapter that has none.
pub(crate) const CONNECT_DEADLINE: Duration = Duration::from_secs(15);

/// How long a command waits for a flush or close before giving up.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The URL `kind_or_url` stands for, password redacted: for messages to the user.
pub(crate) fn display_url(kind_or_url: &str) -> String {
    switchboard::redact_url(switchboard::resolve_url(kind_or_url))
}

/// Connects to `kind_or_url`, failing with one readable line after
/// [`CONNECT_DEADLINE`] at most.
pub(crate) async fn connect(kind_or_url: &str) -> anyhow::Result<AnyBroker> {
    match tokio::time::timeout(CONNECT_DEADLINE, switchboard::connect(kind_or_url)).await {
        Ok(result) => result.map_err(one_line),
        Err(_) => anyhow::bail!(
            "cannot connect to {}: no answer within {}s",
            display_url(kind_or_url),
            CONNECT_DEADLINE.as_secs()
        ),
    }
}

/// Warns that `memory://` does not reach other processes, for `send` and `listen`.
pub(crate) fn warn_if_in_process(broker: &AnyBroker) {
    if broker.kind() == switchboard::memory::KIND {
        eprintln!(
            "note: the memory broker only connects this process; use --broker nats, redis, amqp or mqtt to reach other programs"
        );
    }
}

/// Warns, for `listen --durable` and a worker with durable routes, that what
/// `broker` keeps for durable consumers does not survive a restart of the
/// server (its capabilities say `durable_storage: false`: Redis without
/// `appendonly yes`, say). The memory broker's own note says more.
pub(crate) fn warn_if_durable_is_not_stored(broker: &AnyBroker, url: &str) {
    let capabilities = broker.capabilities();
    if capabilities.durable
        && !capabilities.durable_storage
        && broker.kind() != switchboard::memory::KIND
    {
        eprintln!(
            "warning: {} at {} keeps what it stores for durable consumers in memory only (for Redis: it runs without `appendonly yes`), so a restart of the server loses it",
            broker.kind(),
            display_url(url)
        );
    }
}

/// Flushes what `broker` was given, then closes it, both within
/// [`SHUTDOWN_DEADLINE`] (a broker that is down or a frozen link never answers).
pub(crate) async fn flush_and_close(broker: &AnyBroker) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    let flushed = within(broker.kind(), "flush", deadline, broker.flush()).await;
    let refused = match &flushed {
        Ok(()) => None,
        Err(error) => match error.downcast_ref::<switchboard::Error>() {
            Some(switchboard::Error::Refused {
                broker,
                count,
                reason,
            }) => Some((*broker, *count, reason.clone())),
            // A broken link: closing would only wait longer.
            _ => return flushed,
        },
    };
    let closed = within(broker.kind(), "close", deadline, broker.close()).await;
    let Some((kind, count, reason)) = refused else {
        return closed;
    };
    // A refusal the flush had not seen yet is counted by the close: NATS
    // reports refusals as events, which can trail the flush's round trip.
    let more = match closed
        .as_ref()
        .map_err(|e| e.downcast_ref::<switchboard::Error>())
    {
        Err(Some(switchboard::Error::Refused { count, .. })) => *count,
        _ => 0,
    };
    Err(one_line(switchboard::Error::Refused {
        broker: kind,
        count: count + more,
        reason,
    }))
}

/// Closes `broker` within [`SHUTDOWN_DEADLINE`].
pub(crate) async fn close(broker: &AnyBroker) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    within(broker.kind(), "close", deadline, broker.close()).await
}

async fn within(
    kind: &str,
    operation: &str,
    deadline: tokio::time::Instant,
    future: impl std::future::Future<Output = switchboard::Result<()>>,
) -> anyhow::Result<()> {
    match tokio::time::timeout_at(deadline, future).await {
        Ok(result) => result.map_err(one_line),
        Err(_) => anyhow::bail!(
            "{kind}: {operation} did not finish within {}s",
            SHUTDOWN_DEADLINE.as_secs()
        ),
    }
}

/// `error` for reporting: shown with `{:#}` it reads as one line, the error
/// then each of its sources (`error: source: source's source`). Adapters keep
/// their reasons free of their sources' text, so each part says something new.
pub(crate) fn one_line(error: switchboard::Error) -> anyhow::Error {
    anyhow::Error::new(error)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn the_sources_follow_the_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused (os error 111)",
        );
        let error = switchboard::Error::connect(
            "nats",
            "nats://u:pw@127.0.0.1:1",
            switchboard::ConnectKind::Refused,
            "nothing answers; is nats-server running?",
            Some(Box::new(io)),
        );
        assert_eq!(
            format!("{:#}", one_line(error)),
            "nats: cannot connect to nats://u:***@127.0.0.1:1: nothing answers; is nats-server running?: refused (os error 111)"
        );
    }
}
