//! The raw Redis baseline: redis-rs as a careful user writes it — one
//! multiplexed connection with up to [`WINDOW`] PUBLISH commands in flight
//! (a `FuturesUnordered` polled after every push, so each command is sent at
//! once), and the subscriber on its own pub/sub connection.
//!
//! Durable runs: the same window of pipelined `XADD key MAXLEN ~ N * s
//! SUBJECT b PAYLOAD` (the adapter's fields and cap, without its server-side
//! function), a consumer group created at `$`, and a subscriber reading
//! `XREADGROUP COUNT 64 BLOCK 100` (the adapter's prefetch and poll) on a
//! connection of its own, with one `XACK` per entry on another, awaited
//! before the next (the adapter acks each delivery with a round trip too).
//!
//! Known: commands enter redis-rs's pipeline in the order their futures are
//! first polled to completion of the channel send, which `FuturesUnordered`
//! does not keep, so this baseline reorders a few percent of the messages; the
//! bench counts them in the `reordered` column.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::sink::SinkExt;
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use tokio::sync::Mutex;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// PUBLISH commands in flight at most on the publishing connection.
pub(crate) const WINDOW: usize = 256;

/// `XADD ... MAXLEN ~` of durable runs (the adapter's default `stream_maxlen`).
const STREAM_MAXLEN: usize = 1_000_000;

/// Entries one `XREADGROUP` reads at most (the adapter's prefetch).
const READ_COUNT: usize = 64;

/// How long one `XREADGROUP` blocks, in ms (the adapter's poll).
const READ_BLOCK_MS: u64 = 100;

type InFlight = FuturesUnordered<BoxFuture<'static, RedisResult<()>>>;

/// A redis-rs client bound to a channel: a multiplexed connection for
/// publishing, pub/sub connections made on `subscribe`.
pub(crate) struct RawRedis {
    client: redis::Client,
    conn: MultiplexedConnection,
    channel: String,
    /// Durable runs: the stream key publishes go to, once the group exists.
    stream: OnceLock<String>,
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
            stream: OnceLock::new(),
            pending: Mutex::new(FuturesUnordered::new()),
        })
    }

    fn publish_future(&self, payload: &[u8]) -> BoxFuture<'static, RedisResult<()>> {
        let mut conn = self.conn.clone();
        let cmd = match self.stream.get() {
            Some(stream) => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAXLEN)
                    .arg("*")
                    .arg("s")
                    .arg(&self.channel)
                    .arg("b")
                    .arg(payload);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&self.channel).arg(payload);
                cmd
            }
        };
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

    async fn create_durable(&self, name: &str) -> Result<(), RunError> {
        let stream = stream_key(&self.channel);
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(name)
            .arg("$")
            .arg("MKSTREAM")
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        let _ = self.stream.set(stream);
        Ok(())
    }

    async fn subscribe_durable(&self, name: &str) -> Result<Receiver, RunError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let mut read = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let ack = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (stream, group) = (
            Arc::<str>::from(stream_key(&self.channel)),
            Arc::<str>::from(name),
        );
        // Read ahead at most one read's worth, as the adapter's member does;
        // the reading loop ends when the receiver is dropped (the run is over).
        let (mut sender, entries_read) = futures::channel::mpsc::channel(READ_COUNT);
        let (read_stream, read_group) = (Arc::clone(&stream), Arc::clone(&group));
        tokio::spawn(async move {
            let mut read_cmd = redis::cmd("XREADGROUP");
            read_cmd
                .arg("GROUP")
                .arg(&*read_group)
                .arg("bench")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(&*read_stream)
                .arg(">");
            while !sender.is_closed() {
                match read_cmd.query_async::<Value>(&mut read).await {
                    Ok(reply) => {
                        for entry in entries(reply) {
                            if sender.send(Ok(entry)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        // One XACK per entry, awaited before the entry counts.
        Ok(entries_read
            .then(move |entry: RedisResult<(Vec<u8>, Vec<u8>)>| {
                let (stream, group, mut ack) =
                    (Arc::clone(&stream), Arc::clone(&group), ack.clone());
                async move {
                    let (id, body) = entry?;
                    redis::cmd("XACK")
                        .arg(&*stream)
                        .arg(&*group)
                        .arg(&id)
                        .query_async::<()>(&mut ack)
                        .await?;
                    Stamp::parse(&body)
                }
            })
            .boxed())
    }

    async fn remove_durable(&self, _name: &str) -> Result<(), RunError> {
        redis::cmd("DEL")
            .arg(stream_key(&self.channel))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    fn queue_groups(&self) -> bool {
        false
    }

    async fn close(&self) {}
}

/// The stream of a durable run on `channel`.
fn stream_key(channel: &str) -> String {
    format!("bench:durable:{channel}")
}

/// The entries of an `XREADGROUP` reply (one stream): id and the `b` field.
/// RESP2 shape: `[[key, [[id, [field, value, ...]], ...]]]`, or nil when the
/// read timed out; anything else yields no entries.
fn entries(reply: Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let streams = match reply {
        Value::Array(streams) => streams,
        _ => return out,
    };
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        let Some(Value::Array(items)) = parts.pop() else {
            continue;
        };
        for item in items {
            let Value::Array(mut entry) = item else {
                continue;
            };
            let fields = entry.pop();
            let id = entry.pop();
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (id, fields) else {
                continue;
            };
            let mut body = Vec::new();
            let mut fields = fields.into_iter();
            while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                if let (Value::BulkString(field), Value::BulkString(value)) = (field, value) {
                    if field == b"b" {
                        body = value;
                    }
                }
            }
            out.push((id, body));
        }
    }
    out
}
