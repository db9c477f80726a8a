//! The raw NATS baseline: async-nats as a careful user writes it — `publish` in
//! a loop, one `flush` at the end (plus one echo through the server, so the
//! time counts until the server has everything), a subscription buffer large
//! enough for a burst.

use futures::stream::StreamExt;
use switchboard::Bytes;

use crate::client::{Burst, Client, Receiver};
use crate::error::RunError;
use crate::payload::Stamp;

/// How long `flush` waits for the server's echo.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Messages a raw subscription buffers in the client before it reports a slow consumer.
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// One async-nats connection bound to a subject.
#[derive(Debug)]
pub(crate) struct RawNats {
    client: async_nats::Client,
    subject: async_nats::Subject,
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
        })
    }
}

#[switchboard::async_trait]
impl Client for RawNats {
    async fn publish_burst(&self, mut burst: Burst<'_>) -> Result<u64, RunError> {
        while let Some(payload) = burst.next_payload() {
            self.client
                .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
                .await?;
        }
        Ok(burst.sent())
    }

    async fn publish_one(&self, payload: &[u8]) -> Result<(), RunError> {
        self.client
            .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
            .await?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), RunError> {
        // `Client::flush` only writes the client's buffer to the socket. To
        // know the server has everything (as the adapter's flush does), echo
        // one message through the server after the burst: it processes a
        // connection's messages in order.
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

    async fn subscribe(&self, group: Option<&str>) -> Result<Receiver, RunError> {
        let subscriber = match group {
            Some(group) => {
                self.client
                    .queue_subscribe(self.subject.clone(), group.to_string())
                    .await?
            }
            None => self.client.subscribe(self.subject.clone()).await?,
        };
        // The SUB must reach the server before the publisher starts.
        self.client.flush().await?;
        Ok(subscriber.map(|m| Stamp::parse(&m.payload)).boxed())
    }

    fn queue_groups(&self) -> bool {
        true
    }

    async fn close(&self) {
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
    }
}
