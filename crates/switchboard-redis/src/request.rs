//! Request/reply over PUBSUB: the requester subscribes to a channel of its
//! own (an inbox, `_INBOX.<random>`), publishes the request with the inbox in
//! the [`REPLY_TO`] header of the envelope, and waits for the first message on
//! the inbox. PUBLISH answers with the number of subscribers that received
//! the request, so a request nobody is subscribed to fails at once with
//! [`Error::NoResponders`], as on NATS.
//!
//! The request's PUBLISH goes through a connection of its own (the pipelined
//! publishing connection does not hand back PUBLISH's answer), opened on the
//! first request and kept. Each request subscribes its inbox on the handle's
//! shared pub/sub connection and unsubscribes it afterwards: a request costs
//! three round trips (SUBSCRIBE, PUBLISH, the reply).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use switchboard_core::{
    async_trait, Bytes, Error, Headers, Message, Pattern, Reply, Result, Subject,
};
use tokio::sync::Mutex;

use crate::connection::Conn;
use crate::options::{RedisOptions, Target};
use crate::resp::Frame;
use crate::{publisher, subscription, wire, KIND};

/// The envelope header that carries a request's inbox. The adapter takes it
/// out of the delivered message's headers, so a handler sees the same
/// headers on every broker; a plain Redis client makes a request by setting
/// it in the envelope (see [`wire`](crate::wire)) and subscribing to the
/// channel it names. Reserved: publishing a message with a header of this
/// name fails with [`Error::InvalidHeader`](switchboard_core::Error::InvalidHeader).
pub const REPLY_TO: &str = "switchboard-reply-to";

/// What a broker keeps for its requests: the connection their PUBLISH goes
/// through, `None` until the first request or after one failed.
#[derive(Default)]
pub(crate) struct Requests {
    commands: Mutex<Option<Conn>>,
}

/// Sends `message` as a request and waits up to `timeout` for the reply.
pub(crate) async fn request(
    requests: &Requests,
    subscriptions: &subscription::Hub,
    target: &Target,
    options: &RedisOptions,
    message: Message,
    timeout: Duration,
) -> Result<Message> {
    let deadline = switchboard_core::deadline(timeout);
    let subject = message.subject().clone();
    let timed_out = || Error::request_timeout(KIND, subject.as_str(), timeout);
    let inbox = Subject::new(&format!(
        "_INBOX.{}",
        Alphanumeric.sample_string(&mut rand::rng(), 22)
    ))?;
    let inbox_pattern = Pattern::from(inbox.clone());
    let subscribing = subscriptions.subscribe(&inbox_pattern);
    let mut inbox_subscription = tokio::time::timeout_at(deadline, subscribing)
        .await
        .map_err(|_| timed_out())??;

    let (subject, payload, mut headers) = message.into_parts();
    headers.insert(REPLY_TO, inbox.as_str())?;
    let body = wire::encode(&headers, &payload);
    let publishing = publish_counted(requests, target, options, &subject, &body);
    let receivers = tokio::time::timeout_at(deadline, publishing)
        .await
        .map_err(|_| timed_out())??;
    if receivers == 0 {
        return Err(Error::NoResponders {
            broker: KIND,
            subject: subject.to_string(),
        });
    }
    loop {
        match tokio::time::timeout_at(deadline, inbox_subscription.next()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => return Err(Error::Closed { broker: KIND }),
            // A lost inbox connection may have lost the reply; the wait goes on.
            Ok(Some(Err(_))) => continue,
            Ok(Some(Ok(reply))) => {
                let (_, payload, headers) = reply.into_message().into_parts();
                return Ok(Message::from_parts(subject, payload, headers));
            }
        }
    }
}

/// PUBLISHes `body` on `subject` through the requests' connection and
/// returns how many subscribers received it.
async fn publish_counted(
    requests: &Requests,
    target: &Target,
    options: &RedisOptions,
    subject: &Subject,
    body: &[u8],
) -> Result<i64> {
    let mut slot = requests.commands.lock().await;
    // Taken out while in use: a request given up half-way (its timeout)
    // leaves no connection with an unread answer behind.
    let mut conn = match slot.take() {
        Some(conn) => conn,
        None => {
            let name = format!("{}-req", options.client_name());
            target.connect(options.connect_timeout, &name).await?
        }
    };
    let failed = |reason: String| Error::Publish {
        broker: KIND,
        subject: subject.to_string(),
        reason,
        source: None,
    };
    match conn
        .command(&[b"PUBLISH", subject.as_str().as_bytes(), body])
        .await
    {
        Ok(Frame::Integer(receivers)) => {
            *slot = Some(conn);
            Ok(receivers)
        }
        Ok(Frame::Error(e)) => Err(failed(format!(
            "Redis refused the request: {}",
            String::from_utf8_lossy(&e)
        ))),
        Ok(other) => Err(failed(format!(
            "Redis answered the request's PUBLISH with {}",
            other.describe()
        ))),
        Err(e) => Err(failed(format!("the connection broke: {e}"))),
    }
}

/// Answers a request: publishes to its inbox through the broker's
/// publishing connection.
#[derive(Debug)]
pub(crate) struct RedisReply {
    pub(crate) publisher: Arc<publisher::Shared>,
    pub(crate) inbox: Subject,
}

#[async_trait]
impl Reply for RedisReply {
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()> {
        // The publishing connection writes it out at once; a flush here would
        // also wait for (and report) every other publish of the broker.
        let reply = Message::from_parts(self.inbox.clone(), payload, headers);
        self.publisher.publish(&reply).await
    }
}
