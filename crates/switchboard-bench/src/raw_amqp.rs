//! The raw RabbitMQ baseline: lapin as a careful user writes it — publisher
//! confirms with up to [`WINDOW`] outstanding, and a consumer with manual acks
//! (one per message) on a server-named queue bound to `amq.topic`.
//!
//! Durable runs: a durable quorum queue named after the durable consumer,
//! bound to the subject (the adapter's topology), persistent publishes
//! (`delivery_mode` 2) with the same confirm window, and a consumer on that
//! queue with the same prefetch and one manual ack per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use tokio::sync::Mutex;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// Publisher confirms outstanding at most.
pub(crate) const WINDOW: usize = 256;

/// Unacknowledged deliveries the broker sends a consumer ahead.
pub(crate) const PREFETCH: u16 = 256;

/// The exchange messages are published to, with the subject as routing key.
pub(crate) const EXCHANGE: &str = "amq.topic";

/// A lapin connection with a confirming channel, bound to a routing key.
pub(crate) struct RawAmqp {
    connection: Arc<Connection>,
    channel: Channel,
    routing_key: String,
    pending: Mutex<VecDeque<PublisherConfirm>>,
    /// Durable runs: messages are published persistent.
    persistent: AtomicBool,
}

impl std::fmt::Debug for RawAmqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAmqp")
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

impl RawAmqp {
    /// Connects to `url` and opens a channel with publisher confirms.
    pub(crate) async fn connect(url: &str, routing_key: &str) -> Result<Self, RunError> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|source| RunError::AmqpConnect {
                url: switchboard::redact_url(url),
                source,
            })?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(RawAmqp {
            connection: Arc::new(connection),
            channel,
            routing_key: routing_key.to_string(),
            pending: Mutex::new(VecDeque::new()),
            persistent: AtomicBool::new(false),
        })
    }

    async fn publish(
        &self,
        pending: &mut VecDeque<PublisherConfirm>,
        payload: &[u8],
    ) -> Result<(), RunError> {
        let confirm = self
            .channel
            .basic_publish(
                EXCHANGE.into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                payload,
                if self.persistent.load(Ordering::Relaxed) {
                    BasicProperties::default().with_delivery_mode(2)
                } else {
                    BasicProperties::default()
                },
            )
            .await?;
        pending.push_back(confirm);
        while pending.len() >= WINDOW {
            if let Some(oldest) = pending.pop_front() {
                check(oldest.await?)?;
            }
        }
        Ok(())
    }
}

fn check(confirmation: lapin::Confirmation) -> Result<(), RunError> {
    if confirmation.is_nack() {
        return Err(RunError::AmqpNack);
    }
    Ok(())
}

#[switchboard::async_trait]
impl Client for RawAmqp {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        let mut pending = self.pending.lock().await;
        while let Some(payload) = burst.next_payload() {
            self.publish(&mut pending, payload).await?;
        }
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        let mut pending = self.pending.lock().await;
        self.publish(&mut pending, payload).await
    }

    async fn flush(&self) -> Result<(), RunError> {
        let mut pending = self.pending.lock().await;
        while let Some(confirm) = pending.pop_front() {
            check(confirm.await?)?;
        }
        Ok(())
    }

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let (name, options) = match group {
            // Queue group: every member consumes from one shared queue.
            Some(group) => (
                format!("{}.{group}", self.routing_key),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            ),
            // Fan-out: a server-named queue per subscriber.
            None => (
                String::new(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            ),
        };
        let queue = channel
            .queue_declare(name.as_str().into(), options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                EXCHANGE.into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consume(channel, queue.name().as_str(), &self.connection).await
    }

    async fn create_durable(&self, name: &str) -> Result<(), RunError> {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        self.channel
            .queue_bind(
                name.into(),
                EXCHANGE.into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.persistent.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn subscribe_durable(&self, name: &str) -> Result<Receiver, RunError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        consume(channel, name, &self.connection).await
    }

    async fn remove_durable(&self, name: &str) -> Result<(), RunError> {
        self.channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }

    fn queue_groups(&self) -> bool {
        true
    }

    async fn close(&self) {
        let _ = self.channel.close(200, "bench done".into()).await;
        let _ = self.connection.close(200, "bench done".into()).await;
    }
}

/// Consumes `queue` on `channel` with one manual ack per message.
async fn consume(
    channel: Channel,
    queue: &str,
    connection: &Arc<Connection>,
) -> Result<Receiver, RunError> {
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // The stream keeps its channel and connection open.
    let keep = Arc::new((channel, Arc::clone(connection)));
    Ok(consumer
        .then(move |delivery| {
            let _keep = Arc::clone(&keep);
            async move {
                let delivery = delivery?;
                delivery.acker.ack(BasicAckOptions::default()).await?;
                Stamp::parse(&delivery.data)
            }
        })
        .boxed())
}
