//! The publish path: publisher confirms in a bounded window, and `flush`
//! awaiting them.
//!
//! `publish` polls lapin's `basic_publish` once, which queues the frames (with
//! their delivery tag) on the channel in publish order, and keeps the rest of
//! it (the I/O thread writing the frames) in the window with the confirm.
//! Awaiting the write in `publish`, as lapin's API invites, costs two thread
//! hand-offs per message and was the confirmed-publish ceiling (issue 13).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use switchboard_core::{BoxError, Error, Message, Result, Subject};
use tokio::time::Instant;

use crate::connection::Sessions;
use crate::error::ClientError;
use crate::{wire, KIND};

/// lapin's `basic_publish` after its first poll: the frames are queued on
/// the channel (in publish order, with their delivery tag), and it resolves
/// once the I/O thread has written them.
type Writing = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

/// Where a published message is: still being written by lapin's I/O thread,
/// or written and awaiting its broker confirm.
enum Stage {
    Writing(Writing),
    Written(PublisherConfirm),
}

impl Stage {
    /// The broker's confirm, after the write if it is still going on.
    /// Cancel-safe: a write or confirm not finished stays in `self`.
    async fn outcome(&mut self) -> lapin::Result<Confirmation> {
        loop {
            match self {
                Stage::Writing(write) => {
                    let confirm = write.as_mut().await?;
                    *self = Stage::Written(confirm);
                }
                Stage::Written(confirm) => return confirm.await,
            }
        }
    }
}

/// A published message whose confirm has not been seen yet.
struct Pending {
    confirm: Stage,
    subject: Subject,
}

/// The confirms not seen yet, oldest first.
#[derive(Default)]
struct Window {
    pending: VecDeque<Pending>,
    /// Failures seen while making room in the window, reported by the next flush.
    failures: Vec<Unconfirmed>,
}

/// A broker handle's confirm window, shared by its clones.
#[derive(Default)]
pub(crate) struct Confirms {
    window: tokio::sync::Mutex<Window>,
}

impl Confirms {
    /// Hands `message` to lapin and adds its confirm to the window, waiting
    /// for the oldest confirm while the window is full.
    pub(crate) async fn publish(&self, sessions: &Sessions, message: Message) -> Result<()> {
        let max = sessions.config.options.max_payload;
        if message.payload().len() > max {
            return Err(Error::PayloadTooLarge {
                broker: KIND,
                subject: message.subject().to_string(),
                size: message.payload().len(),
                max,
            });
        }
        let confirm = match publish_once(sessions, &message, false).await {
            Ok(confirm) => confirm,
            Err(Error::Closed { broker }) => return Err(Error::Closed { broker }),
            Err(first) => {
                // The connection or channel was lost before the message was
                // handed over: reconnect (once) and try again.
                tracing::debug!(%first, "AMQP publish failed, reconnecting once");
                publish_once(sessions, &message, true).await?
            }
        };
        let mut window = self.window.lock().await;
        window.pending.push_back(Pending {
            confirm,
            subject: message.subject().clone(),
        });
        while window.pending.len() > sessions.config.options.confirm_window.max(1) {
            if let Some(oldest) = window.pending.pop_front() {
                if let Some(failure) = settle(oldest).await {
                    window.failures.push(failure);
                }
            }
        }
        Ok(())
    }

    /// Awaits every confirm in the window; failures as one error.
    ///
    /// Bounded by the flush timeout: what is not confirmed by then goes back
    /// to the window (ahead of later publishes), with the failures seen so
    /// far, for the next flush.
    pub(crate) async fn drain(&self, after: Duration, deadline: Instant) -> Result<()> {
        let (mut pending, mut failures) = {
            let mut window = self.window.lock().await;
            (
                std::mem::take(&mut window.pending),
                std::mem::take(&mut window.failures),
            )
        };
        while let Some(mut next) = pending.pop_front() {
            match tokio::time::timeout_at(deadline, next.confirm.outcome()).await {
                Ok(outcome) => failures.extend(failure(&next.subject, outcome)),
                Err(_) => {
                    pending.push_front(next);
                    let mut window = self.window.lock().await;
                    while let Some(unconfirmed) = pending.pop_back() {
                        window.pending.push_front(unconfirmed);
                    }
                    failures.append(&mut window.failures);
                    window.failures = failures;
                    return Err(Error::Timeout {
                        broker: KIND,
                        operation: "flush".to_string(),
                        after,
                    });
                }
            }
        }
        match failures.len() {
            0 => Ok(()),
            n if failures.iter().all(|f| f.refused) => Err(Error::Refused {
                broker: KIND,
                count: n as u64,
                reason: format!(
                    "first: {}; this user may not publish there",
                    failures[0].text
                ),
            }),
            n => Err(Error::Flush {
                broker: KIND,
                reason: format!(
                    "{n} message(s) not confirmed by the broker; first: {}",
                    failures[0].text
                ),
                source: None,
            }),
        }
    }
}

/// Hands `message` to lapin on the live session (reconnecting first when
/// `retry`); the confirm is awaited later.
async fn publish_once(sessions: &Sessions, message: &Message, retry: bool) -> Result<Stage> {
    let publish_error = |reason: String, source: Option<BoxError>| Error::Publish {
        broker: KIND,
        subject: message.subject().to_string(),
        reason,
        source,
    };
    let session = match sessions.current_unchecked().filter(|_| !retry) {
        Some(session) => Ok(session),
        None => sessions.session().await,
    };
    let session = match session {
        Ok(session) => session,
        Err(Error::Closed { broker }) => return Err(Error::Closed { broker }),
        Err(error) => {
            return Err(publish_error(
                "not connected, and reconnecting failed".to_string(),
                Some(Box::new(error)),
            ))
        }
    };
    // Subjects are at most 255 bytes (core validates), so this cannot fail.
    let routing_key = ShortString::try_new(message.subject().as_str())
        .map_err(|_| publish_error("the subject is longer than 255 bytes".to_string(), None))?;
    let mut properties = BasicProperties::default();
    if !message.headers().is_empty() {
        let frame_max = session.connection.configuration().frame_max();
        if let Some(headers) = wire::to_field_table(message.headers(), frame_max)? {
            properties = properties.with_headers(headers);
        }
    }
    let payload = message.payload().clone();
    let exchange = sessions.exchange.clone();
    let mut write: Writing = Box::pin(async move {
        session
            .publisher
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                &payload,
                properties,
            )
            .await
    });
    match futures::poll!(write.as_mut()) {
        Poll::Pending => Ok(Stage::Writing(write)),
        Poll::Ready(Ok(confirm)) => Ok(Stage::Written(confirm)),
        Poll::Ready(Err(error)) => Err(publish_error(
            format!("the connection to {} failed", sessions.config.redacted),
            Some(ClientError::boxed(error)),
        )),
    }
}

/// A message the broker did not confirm, and why.
struct Unconfirmed {
    text: String,
    /// The broker refused it (`ACCESS_REFUSED`): this user may not publish
    /// there, so it was not delivered.
    refused: bool,
}

/// The outcome of one confirm: `None` when acked, else what went wrong.
async fn settle(mut pending: Pending) -> Option<Unconfirmed> {
    let outcome = pending.confirm.outcome().await;
    failure(&pending.subject, outcome)
}

/// What went wrong with the message to `subject`, given its confirm; `None` when acked.
fn failure(subject: &Subject, outcome: lapin::Result<Confirmation>) -> Option<Unconfirmed> {
    let text = match outcome {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => return None,
        Ok(Confirmation::Ack(Some(returned))) => format!(
            "message to {:?} was returned: {}",
            subject.as_str(),
            returned.reply_text
        ),
        Ok(Confirmation::Nack(_)) => format!(
            "message to {:?} was nacked (the broker could not take it)",
            subject.as_str()
        ),
        Err(error) if is_access_refused(&error) => {
            return Some(Unconfirmed {
                text: format!("message to {:?}: {error}", subject.as_str()),
                refused: true,
            })
        }
        Err(error) => format!(
            "message to {:?}: the connection or channel failed before the broker confirmed it ({error}); it may or may not have been delivered",
            subject.as_str()
        ),
    };
    Some(Unconfirmed {
        text,
        refused: false,
    })
}

/// Whether the broker closed the channel with `ACCESS_REFUSED`: a publish to
/// an exchange this user may not write to.
fn is_access_refused(error: &lapin::Error) -> bool {
    matches!(
        crate::error::amqp_error(error),
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED))
    )
}
