//! The raw NATS baseline: async-nats as a careful user writes it — `publish` in
//! a loop, one `flush` at the end (plus one echo through the server, so the
//! time counts until the server has everything), a subscription buffer large
//! enough for a burst.
//!
//! Durable runs: a JetStream stream over the run's subject (file storage, as
//! the adapter provisions), JetStream publishes with up to [`ACK_WINDOW`]
//! PubAcks outstanding in a sliding window (the adapter's `MAX_PENDING_ACKS`
//! and its window), and a durable pull consumer fetching [`PULL_BATCH`] at a
//! time with the adapter's expiry and heartbeat, pulling again after missed
//! heartbeats as the adapter does, acked one by one.

use std::collections::VecDeque;
use std::sync::OnceLock;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use futures::stream::StreamExt;
use switchboard::Bytes;
use tokio::sync::Mutex;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// How long `flush` waits for the server's echo.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Messages a raw subscription buffers in the client before it reports a slow consumer.
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// PubAcks outstanding at most in durable runs (the adapter's).
pub(crate) const ACK_WINDOW: usize = 4096;

/// Messages one pull asks for in durable runs (the adapter's).
pub(crate) const PULL_BATCH: usize = 64;

/// How long a pull request waits on the server in durable runs (the adapter's).
const PULL_EXPIRES: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the server proves an idle pull is alive in durable runs (the adapter's).
const PULL_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a stream created for a durable run keeps a message (the adapter's).
const STREAM_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// One async-nats connection bound to a subject.
#[derive(Debug)]
pub(crate) struct RawNats {
    client: async_nats::Client,
    subject: async_nats::Subject,
    /// Durable runs: the JetStream context publishes go through, once the
    /// stream exists.
    jetstream: OnceLock<jetstream::Context>,
    /// PubAcks not yet awaited.
    acks: Mutex<VecDeque<PublishAckFuture>>,
}

/// A JetStream failure of `what` on `subject`.
fn js<'a, E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
    subject: &'a str,
) -> impl FnOnce(E) -> RunError + 'a {
    move |source| RunError::JetStream {
        what,
        subject: subject.to_string(),
        source: Box::new(source),
    }
}

impl RawNats {
    async fn publish_stored(
        &self,
        jetstream: &jetstream::Context,
        acks: &mut VecDeque<PublishAckFuture>,
        payload: &[u8],
    ) -> Result<(), RunError> {
        let ack = jetstream
            .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
            .await
            .map_err(js("publishing", &self.subject))?;
        acks.push_back(ack);
        while acks.len() >= ACK_WINDOW {
            if let Some(oldest) = acks.pop_front() {
                oldest
                    .await
                    .map_err(js("awaiting a PubAck", &self.subject))?;
            }
        }
        Ok(())
    }
}

/// Pulls from `consumer` as the adapter does: [`PULL_BATCH`] a pull,
/// [`PULL_EXPIRES`], heartbeats every [`PULL_HEARTBEAT`].
async fn pull(
    consumer: &consumer::PullConsumer,
) -> Result<consumer::pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
}

impl RawNats {
    /// Connects to `url` with the same subscription buffer as the adapter.
    pub(crate) async fn connect(url: &str, subject: &str) -> Result<Self, RunError> {
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .connect(url)
            .await
            .map_err(|source| RunError::NatsConnect {
                url: switchboard::redact_url(url),
                source,
            })?;
        Ok(RawNats {
            client,
            subject: async_nats::Subject::from(subject),
            jetstream: OnceLock::new(),
            acks: Mutex::new(VecDeque::new()),
        })
    }

    /// Resolves once the server has processed everything this connection
    /// sent before. `Client::flush` only writes the client's buffer to the
    /// socket, and async-nats has no public PING: one message is echoed
    /// through the server instead, which processes a connection's
    /// operations in order (as the adapter's flush does).
    async fn round_trip(&self) -> Result<(), RunError> {
        let inbox = self.client.new_inbox();
        let mut echo = self.client.subscribe(inbox.clone()).await?;
        self.client.publish(inbox, Bytes::new()).await?;
        self.client.flush().await?;
        match tokio::time::timeout(FLUSH_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(RunError::NatsClosed),
            Err(_) => Err(RunError::NatsFlushTimeout(FLUSH_TIMEOUT)),
        }
    }
}

#[switchboard::async_trait]
impl Client for RawNats {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        if let Some(jetstream) = self.jetstream.get() {
            let mut acks = self.acks.lock().await;
            while let Some(payload) = burst.next_payload() {
                self.publish_stored(jetstream, &mut acks, payload).await?;
            }
            return Ok(burst.sent());
        }
        while let Some(payload) = burst.next_payload() {
            self.client
                .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
                .await?;
        }
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        if let Some(jetstream) = self.jetstream.get() {
            let mut acks = self.acks.lock().await;
            return self.publish_stored(jetstream, &mut acks, payload).await;
        }
        self.client
            .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
            .await?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), RunError> {
        if self.jetstream.get().is_some() {
            // Stored means every PubAck is in.
            let mut acks = self.acks.lock().await;
            while let Some(ack) = acks.pop_front() {
                ack.await.map_err(js("awaiting a PubAck", &self.subject))?;
            }
            return Ok(());
        }
        self.round_trip().await
    }

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        let subscriber = match group {
            Some(group) => {
                self.client
                    .queue_subscribe(self.subject.clone(), group.to_string())
                    .await?
            }
            None => self.client.subscribe(self.subject.clone()).await?,
        };
        // The server must have the SUB before the publisher starts (on a
        // connection of its own): `Client::flush` would only write it to the
        // socket, and the first messages published could pass it.
        self.round_trip().await?;
        Ok(subscriber.map(|m| Stamp::parse(&m.payload)).boxed())
    }

    async fn create_durable(&self, name: &str) -> Result<(), RunError> {
        let jetstream = jetstream::new(self.client.clone());
        jetstream
            .get_or_create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![self.subject.to_string()],
                storage: stream::StorageType::File,
                max_age: STREAM_MAX_AGE,
                ..stream::Config::default()
            })
            .await
            .map_err(js("creating the stream", &self.subject))?;
        jetstream
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some(name.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..consumer::pull::Config::default()
                },
                name,
            )
            .await
            .map_err(js("creating the consumer", &self.subject))?;
        let _ = self.jetstream.set(jetstream);
        Ok(())
    }

    async fn subscribe_durable(&self, name: &str) -> Result<Receiver, RunError> {
        let jetstream = jetstream::new(self.client.clone());
        let consumer: consumer::PullConsumer = jetstream
            .get_consumer_from_stream(name, name)
            .await
            .map_err(js("looking up the consumer", &self.subject))?;
        let messages = pull(&consumer)
            .await
            .map_err(js("pulling", &self.subject))?;
        let subject = std::sync::Arc::<str>::from(self.subject.as_str());
        // After missed heartbeats the pull starts over, as the adapter's
        // does: async-nats 0.51 does not pull again until its pull request
        // expires (30 s by default), and a consumer stalled that long is
        // cut off by the bench's idle check (3 s), everything not yet
        // received counted as lost. The defaults (no re-pull, a 15 s
        // heartbeat) are the likely cause of the 170,304 of 500,000 the raw
        // side once reported lost (not reproduced since).
        let deliveries = futures::stream::unfold(
            (consumer, messages),
            |(consumer, mut messages)| async move {
                let item = messages.next().await?;
                if let Err(error) = &item {
                    if matches!(
                        error.kind(),
                        consumer::pull::MessagesErrorKind::MissingHeartbeat
                    ) {
                        if let Ok(fresh) = pull(&consumer).await {
                            messages = fresh;
                        }
                    }
                }
                Some((item, (consumer, messages)))
            },
        );
        Ok(deliveries
            .then(move |message| {
                let subject = std::sync::Arc::clone(&subject);
                async move {
                    let message = message.map_err(js("pulling", &subject))?;
                    message.ack().await.map_err(|source| RunError::JetStream {
                        what: "acking",
                        subject: subject.to_string(),
                        source,
                    })?;
                    Stamp::parse(&message.payload)
                }
            })
            .boxed())
    }

    async fn remove_durable(&self, name: &str) -> Result<(), RunError> {
        jetstream::new(self.client.clone())
            .delete_stream(name)
            .await
            .map_err(js("deleting the stream", &self.subject))?;
        Ok(())
    }

    fn queue_groups(&self) -> bool {
        true
    }

    async fn close(&self) {
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
    }
}
