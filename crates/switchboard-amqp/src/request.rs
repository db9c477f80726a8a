//! Request/reply with RabbitMQ's direct reply-to: the requester consumes the
//! pseudo-queue `amq.rabbitmq.reply-to` on a channel of its own and publishes
//! the request on that channel with `reply_to` set to it and a fresh
//! `correlation_id`; a responder (switchboard or any AMQP client) publishes
//! its reply to the default exchange with the `reply_to` value as routing key.
//! No queue is declared per request, and nothing is left behind.
//!
//! The request is published `mandatory` with publisher confirms: when no
//! queue is bound to its subject RabbitMQ returns it, and the request fails
//! at once with [`Error::NoResponders`], as on NATS.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use rand::distr::{Alphanumeric, SampleString};
use switchboard_core::{async_trait, Bytes, Error, Headers, Message, Reply, Result, Subject};

use crate::connection::Sessions;
use crate::error::ClientError;
use crate::{wire, KIND};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Sends `message` as a request and waits up to `timeout` for the reply.
pub(crate) async fn request(
    sessions: &Sessions,
    message: Message,
    timeout: Duration,
) -> Result<Message> {
    let deadline = switchboard_core::deadline(timeout);
    let subject = message.subject().clone();
    let timed_out = || Error::request_timeout(KIND, subject.as_str(), timeout);
    let asking = async {
        let session = sessions.session().await?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| failed(&subject, "no channel for the request", e))?;
        let answer = ask(sessions, &channel, message).await;
        // The channel goes with the request; its reply consumer with it.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            channel.close(200, ShortString::from("request done")),
        )
        .await;
        answer
    };
    tokio::time::timeout_at(deadline, asking)
        .await
        .map_err(|_| timed_out())?
}

/// Publishes the request on `channel` and returns the reply.
async fn ask(sessions: &Sessions, channel: &Channel, message: Message) -> Result<Message> {
    let (subject, payload, headers) = message.into_parts();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| failed(&subject, "the request channel refused confirms", e))?;
    let mut replies = channel
        .basic_consume(
            ShortString::from(DIRECT_REPLY_TO),
            ShortString::from(""),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| failed(&subject, "RabbitMQ refused the direct reply-to consumer", e))?;
    let correlation = Alphanumeric.sample_string(&mut rand::rng(), 22);
    let mut properties = BasicProperties::default()
        .with_reply_to(ShortString::from(DIRECT_REPLY_TO))
        .with_correlation_id(ShortString::from(correlation.as_str()));
    if let Some(table) = wire::to_field_table(&headers, sessions.frame_max())? {
        properties = properties.with_headers(table);
    }
    let routing_key = ShortString::from(subject.as_str());
    let confirm = channel
        .basic_publish(
            sessions.exchange.clone(),
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &payload,
            properties,
        )
        .await
        .map_err(|e| failed(&subject, "the request was not sent", e))?
        .await
        .map_err(|e| failed(&subject, "the request was not confirmed", e))?;
    match confirm {
        Confirmation::Ack(Some(_returned)) => {
            return Err(Error::NoResponders {
                broker: KIND,
                subject: subject.to_string(),
            })
        }
        Confirmation::Nack(_) => {
            return Err(Error::Publish {
                broker: KIND,
                subject: subject.to_string(),
                reason: "RabbitMQ nacked the request (it could not take it)".to_string(),
                source: None,
            })
        }
        Confirmation::Ack(None) | Confirmation::NotRequested => {}
    }
    while let Some(reply) = replies.next().await {
        let reply = reply.map_err(|e| failed(&subject, "the reply consumer failed", e))?;
        let properties = &reply.properties;
        // A reply to an earlier request on this channel cannot come (the
        // channel is this request's), but a responder may echo no id at all.
        let matches = properties
            .correlation_id()
            .as_ref()
            .is_none_or(|id| id.as_str() == correlation);
        if matches {
            let headers = wire::from_field_table(properties.headers().as_ref());
            return Ok(Message::from_parts(
                subject,
                Bytes::from(reply.data),
                headers,
            ));
        }
    }
    Err(Error::Disconnected {
        broker: KIND,
        reason: format!(
            "the channel of a request on {:?} closed before the reply came",
            subject.as_str()
        ),
    })
}

fn failed(subject: &Subject, reason: &str, error: lapin::Error) -> Error {
    Error::Publish {
        broker: KIND,
        subject: subject.to_string(),
        reason: reason.to_string(),
        source: Some(ClientError::boxed(error)),
    }
}

/// Answers a request: publishes to the default exchange with the request's
/// `reply_to` as routing key and its `correlation_id`, and waits for
/// RabbitMQ's confirm (bounded by the flush timeout).
pub(crate) struct AmqpReply {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) reply_to: ShortString,
    pub(crate) correlation_id: Option<ShortString>,
}

impl fmt::Debug for AmqpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpReply")
            .field("reply_to", &self.reply_to)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Reply for AmqpReply {
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()> {
        let failed = |reason: String, source: Option<lapin::Error>| Error::Publish {
            broker: KIND,
            subject: self.reply_to.to_string(),
            reason,
            source: source.map(ClientError::boxed),
        };
        let session = self.sessions.session().await?;
        let mut properties = BasicProperties::default();
        if let Some(id) = &self.correlation_id {
            properties = properties.with_correlation_id(id.clone());
        }
        let frame_max = session.connection.configuration().frame_max();
        if let Some(table) = wire::to_field_table(&headers, frame_max)? {
            properties = properties.with_headers(table);
        }
        let publishing = async {
            session
                .publisher
                .basic_publish(
                    ShortString::from(""),
                    self.reply_to.clone(),
                    BasicPublishOptions::default(),
                    &payload,
                    properties,
                )
                .await?
                .await
        };
        let timeout = self.sessions.config.options.flush_timeout;
        match tokio::time::timeout(timeout, publishing).await {
            Ok(Ok(Confirmation::Nack(_))) => {
                Err(failed("RabbitMQ nacked the reply".to_string(), None))
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failed("the reply was not sent".to_string(), Some(e))),
            Err(_) => Err(Error::Timeout {
                broker: KIND,
                operation: format!("a reply to {:?}", self.reply_to.as_str()),
                after: timeout,
            }),
        }
    }
}
