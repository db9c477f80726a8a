//! The raw MQTT baseline: rumqttc's MQTT 5 client as a careful user writes
//! it — QoS 0 `publish` in a loop; `flush` publishes one QoS 1 marker and
//! waits for its PUBACK (the server handles a connection's packets in order,
//! so everything before it was processed); each subscription waits for its
//! SUBACK and reads from the event loop through an unbounded channel.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use switchboard::Bytes;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// How long `flush` and `subscribe` wait for the server's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests rumqttc queues before `publish` waits (the adapter's size).
const REQUEST_QUEUE: usize = 16 * 1024;

/// One rumqttc connection bound to a topic, with its event-loop task.
pub(crate) struct RawMqtt {
    client: AsyncClient,
    topic: String,
    /// PUBACKs and SUBACKs, in order, from the event loop.
    acks: Mutex<mpsc::UnboundedReceiver<()>>,
    /// Where the event loop sends received payloads, once subscribed.
    deliveries: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<Bytes>>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RawMqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMqtt")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl RawMqtt {
    /// Connects to `url` (`mqtt://[user:password@]host[:port]`) and waits for CONNACK.
    pub(crate) async fn connect(url: &str, subject: &str) -> Result<Self, RunError> {
        let redacted = switchboard::redact_url(url);
        let failed = |reason: String| RunError::MqttConnect {
            url: redacted.clone(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| failed(e.to_string()))?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
        let port = parsed.port().unwrap_or(1883);
        let id = format!("bench-raw-{:016x}", rand_id());
        let mut options = MqttOptions::new(id, host, port);
        options.set_max_packet_size(Some(268_435_455));
        if !parsed.username().is_empty() {
            options.set_credentials(
                parsed.username().to_string(),
                parsed.password().unwrap_or_default().to_string(),
            );
        }
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        match tokio::time::timeout(ACK_TIMEOUT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
            Ok(Ok(other)) => return Err(failed(format!("expected CONNACK, got {other:?}"))),
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed(format!("no CONNACK within {ACK_TIMEOUT:?}"))),
        }
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let deliveries: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<Bytes>>>> =
            Arc::default();
        let sink = Arc::clone(&deliveries);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(sink) = sink.as_ref() {
                            let _ = sink.send(publish.payload);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::SubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(RawMqtt {
            client,
            topic: subject.replace('.', "/"),
            acks: Mutex::new(acks),
            deliveries,
            task,
        })
    }

    async fn wait_ack(&self) -> Result<(), RunError> {
        let mut acks = self.acks.lock().await;
        match tokio::time::timeout(ACK_TIMEOUT, acks.recv()).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(RunError::MqttClosed),
            Err(_) => Err(RunError::MqttAckTimeout(ACK_TIMEOUT)),
        }
    }
}

/// A random number for the client identifier (two runs must not share one).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[switchboard::async_trait]
impl Client for RawMqtt {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        while let Some(payload) = burst.next_payload() {
            self.client
                .publish(
                    self.topic.as_str(),
                    QoS::AtMostOnce,
                    false,
                    Bytes::copy_from_slice(payload),
                )
                .await?;
        }
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        self.client
            .publish(
                self.topic.as_str(),
                QoS::AtMostOnce,
                false,
                Bytes::copy_from_slice(payload),
            )
            .await?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), RunError> {
        // A QoS 1 marker on a topic nobody reads; its PUBACK comes once the
        // server has processed everything published before it.
        self.client
            .publish(
                format!("{}-flush", self.topic),
                QoS::AtLeastOnce,
                false,
                Bytes::new(),
            )
            .await?;
        self.wait_ack().await
    }

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.deliveries.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let filter = match group {
            Some(group) => format!("$share/{group}/{}", self.topic),
            None => self.topic.clone(),
        };
        self.client.subscribe(filter, QoS::AtMostOnce).await?;
        self.wait_ack().await?;
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|payload| (payload, rx))
        })
        .map(|payload| Stamp::parse(&payload))
        .boxed())
    }

    fn queue_groups(&self) -> bool {
        true
    }

    async fn close(&self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !self.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        self.task.abort();
    }
}
