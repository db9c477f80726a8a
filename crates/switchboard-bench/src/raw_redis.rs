//! The raw Redis baseline: redis-rs as a careful user writes it — one
//! multiplexed connection with up to [`WINDOW`] PUBLISH commands in flight
//! (a `FuturesUnordered` polled after every push, so each command is sent at
//! once), and the subscriber on its own pub/sub connection.
//!
//! Known: commands enter redis-rs's pipeline in the order their futures are
//! first polled to completion of the channel send, which `FuturesUnordered`
//! does not keep, so this baseline reorders a few percent of the messages; the
//! bench counts them in the `reordered` column.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::Mutex;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// PUBLISH commands in flight at most on the publishing connection.
pub(crate) const WINDOW: usize = 256;

type InFlight = FuturesUnordered<BoxFuture<'static, RedisResult<()>>>;

/// A redis-rs client bound to a channel: a multiplexed connection for
/// publishing, pub/sub connections made on `subscribe`.
pub(crate) struct RawRedis {
    client: redis::Client,
    conn: MultiplexedConnection,
    channel: String,
    /// Commands sent by `publish_one` whose replies have not been read yet.
    pending: Mutex<InFlight>,
}

impl std::fmt::Debug for RawRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRedis")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RawRedis {
    /// Connects the publishing connection to `url`.
    pub(crate) async fn connect(url: &str, channel: &str) -> Result<Self, RunError> {
        let client = redis::Client::open(url).map_err(|source| RunError::RedisUrl {
            url: switchboard::redact_url(url),
            source,
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // No per-command timer: with 256 commands in flight a timer each
            // costs more than the command (and 500 ms is short on a loaded machine).
            .set_response_timeout(None);
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| RunError::RedisConnect {
                url: switchboard::redact_url(url),
                source,
            })?;
        Ok(RawRedis {
            client,
            conn,
            channel: channel.to_string(),
            pending: Mutex::new(FuturesUnordered::new()),
        })
    }

    fn publish_future(&self, payload: &[u8]) -> BoxFuture<'static, RedisResult<()>> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(payload);
        // Unconstrained: with hundreds of sends per task poll, tokio's
        // cooperative budget would otherwise make later sends wait a turn,
        // slowing the pipeline and reordering more messages.
        tokio::task::unconstrained(async move { cmd.query_async::<()>(&mut conn).await }).boxed()
    }
}

/// Adds `future` to `in_flight` and polls the set once so the command is sent
/// now (a future in the set does nothing until polled), collecting finished
/// replies; waits while [`WINDOW`] commands are outstanding.
async fn push(
    in_flight: &mut InFlight,
    future: BoxFuture<'static, RedisResult<()>>,
) -> Result<(), RunError> {
    in_flight.push(future);
    while let Some(Some(reply)) = in_flight.next().now_or_never() {
        reply?;
    }
    while in_flight.len() >= WINDOW {
        if let Some(reply) = in_flight.next().await {
            reply?;
        }
    }
    Ok(())
}

async fn drain(in_flight: &mut InFlight) -> Result<(), RunError> {
    while let Some(reply) = in_flight.next().await {
        reply?;
    }
    Ok(())
}

#[switchboard::async_trait]
impl Client for RawRedis {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        let mut in_flight = InFlight::new();
        while let Some(payload) = burst.next_payload() {
            push(&mut in_flight, self.publish_future(payload)).await?;
        }
        drain(&mut in_flight).await?;
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        let future = self.publish_future(payload);
        push(&mut *self.pending.lock().await, future).await
    }

    async fn flush(&self) -> Result<(), RunError> {
        drain(&mut *self.pending.lock().await).await
    }

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        if group.is_some() {
            return Err(RunError::NoQueueGroups);
        }
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        Ok(pubsub
            .into_on_message()
            .map(|m| Stamp::parse(m.get_payload_bytes()))
            .boxed())
    }

    fn queue_groups(&self) -> bool {
        false
    }

    async fn close(&self) {}
}
