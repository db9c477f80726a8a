//! Pulling from a JetStream pull consumer without end: pull requests of
//! [`BATCH`] messages, the next asked for once half of what was asked for
//! has come, the server's idle heartbeats proving a waiting request alive.
//!
//! Written here rather than taken from async-nats 0.51
//! (`PullConsumer::stream().messages()`), which stalled durable consumers
//! for 10 s at a time. That stream counts a pull request as outstanding only
//! once its own background task reports the request handed to the client;
//! the messages answering it can be read before that report, their
//! decrements are lost to a `saturating_sub`, and from then on the client
//! counts messages as still coming that the server owes nobody. It asks for
//! no more, the server holds no request to send heartbeats for, and nothing
//! moves until the heartbeats are missed. Seen on the server as no waiting
//! pull request and nothing unacknowledged with the backlog untouched,
//! after exactly as many messages as the client had requested (6,625
//! requests of 64, 424,000 messages delivered and acknowledged). With
//! async-nats instrumented, `switchboard bench --broker nats --mode pubsub
//! --durable --size 16 --msgs 500000` (machine at load 6–7) stalled in 4 of
//! 6 runs, each stall after 64 or 128 messages read while the client counted
//! none pending; counting the request when it is asked for, 0 of 5. Here a
//! request is counted when it is made, before it is sent, so the count can
//! only be too low (which asks for more, harmlessly), never too high.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;

/// How long a pull request waits on the server before it expires.
pub(crate) const EXPIRES: Duration = Duration::from_secs(30);

/// How often the server proves a waiting pull request alive; two periods
/// without a word from the server make the stream pull again.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// Messages asked for in one pull request: each goes to this member until
/// acknowledged or until `ack_wait` is over, so smaller batches share work
/// more evenly in a group.
pub(crate) const BATCH: usize = 64;

/// Why pulling did not yield a message.
#[derive(Debug)]
pub(crate) enum PullError {
    /// Nothing came from the server for two heartbeats: it holds no pull
    /// request of this stream (it restarted, failed over, or the
    /// connection was cut). The stream has pulled again.
    MissingHeartbeat,
    /// The consumer was deleted; the stream ends.
    ConsumerDeleted,
    /// The server refuses every pull request of this consumer (a push
    /// consumer, or its limits on requests are below this stream's); the
    /// stream ends.
    Refused(String),
    /// One pull request failed; the stream pulls again after a heartbeat
    /// period.
    Failed(String),
}

/// A request being handed to the client.
type Sending = Pin<Box<dyn Future<Output = Result<(), async_nats::PublishError>> + Send>>;

/// A wait for the next reconnect, giving back the receiver it waits on
/// (`None` once the connection is gone for good).
type Reconnect = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send>>;

/// The messages of one JetStream pull consumer, pulled continuously.
pub(crate) struct Pull {
    context: jetstream::Context,
    client: Client,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    subject: Subject,
    inbox: Subject,
    subscriber: Subscriber,
    /// The pull request, encoded once.
    request: Bytes,
    /// Messages asked for and neither received nor released by the server:
    /// counted up when a request is made, so never more than the server owes.
    pending: usize,
    sending: Option<Sending>,
    /// Requests stop after a failed one until the next heartbeat period,
    /// so a server that cannot answer is not asked in a tight loop.
    paused: bool,
    /// Wakes the stream once a heartbeat period.
    period: Pin<Box<tokio::time::Sleep>>,
    /// Whether the server sent anything in the current period.
    heard: bool,
    /// Heartbeat periods in a row without a word from the server.
    quiet: u8,
    reconnect: Option<Reconnect>,
    ended: bool,
}

impl Pull {
    /// Starts pulling from `consumer` of `stream` through `context`: its
    /// inbox is subscribed here; the first request goes out on the first
    /// poll. `reconnects` changes on every reconnect of the connection: the
    /// server then holds no request of this stream any more.
    pub(crate) async fn start(
        context: jetstream::Context,
        stream: &str,
        consumer: &str,
        reconnects: watch::Receiver<u64>,
    ) -> Result<Self, async_nats::SubscribeError> {
        let client = context.client();
        let inbox = Subject::from(client.new_inbox());
        let subscriber = client.subscribe(inbox.clone()).await?;
        let request = format!(
            r#"{{"batch":{BATCH},"expires":{},"idle_heartbeat":{}}}"#,
            EXPIRES.as_nanos(),
            HEARTBEAT.as_nanos()
        );
        Ok(Self {
            context,
            client,
            subject: Subject::from(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")),
            inbox,
            subscriber,
            request: Bytes::from(request),
            pending: 0,
            sending: None,
            paused: false,
            period: Box::pin(tokio::time::sleep(HEARTBEAT)),
            heard: false,
            quiet: 0,
            reconnect: Some(next_reconnect(reconnects)),
            ended: false,
        })
    }

    /// The messages already received and not yet taken, without asking the
    /// server for more (for handing them back when the stream is dropped).
    pub(crate) fn take_received(&mut self) -> Vec<jetstream::Message> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut held = Vec::new();
        while let Poll::Ready(Some(message)) = self.subscriber.poll_next_unpin(&mut cx) {
            if status_of(&message).is_none() {
                held.push(jetstream::Message {
                    context: self.context.clone(),
                    message,
                });
            }
        }
        held
    }

    /// Makes a pull request when half of what was asked for has come, and
    /// hands it to the client.
    fn ask(&mut self, cx: &mut Context<'_>) -> Option<PullError> {
        if self.sending.is_none() && !self.paused && self.pending <= BATCH / 2 {
            // Counted before it is sent: its answer cannot be read first.
            self.pending += BATCH;
            let client = self.client.clone();
            let (subject, inbox, request) = (
                self.subject.clone(),
                self.inbox.clone(),
                self.request.clone(),
            );
            self.sending = Some(Box::pin(async move {
                client.publish_with_reply(subject, inbox, request).await
            }));
        }
        let sent = self.sending.as_mut()?.poll_unpin(cx);
        match sent {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => {
                self.sending = None;
                None
            }
            Poll::Ready(Err(error)) => {
                self.sending = None;
                self.pending = self.pending.saturating_sub(BATCH);
                self.paused = true;
                Some(PullError::Failed(format!(
                    "the pull request could not be sent: {error}"
                )))
            }
        }
    }

    /// Forgets every request made: the server holds none of them any more.
    fn start_over(&mut self) {
        self.pending = 0;
        self.paused = false;
        self.quiet = 0;
    }

    /// What a status message from the server means for this stream: `None`
    /// to go on reading.
    fn status(&mut self, message: &async_nats::Message, status: StatusCode) -> Option<PullError> {
        let description = message.description.as_deref().unwrap_or_default();
        if status == StatusCode::IDLE_HEARTBEAT {
            return None;
        }
        if status == StatusCode::TIMEOUT || status == StatusCode::REQUEST_TERMINATED {
            if description.eq_ignore_ascii_case("consumer deleted") {
                self.ended = true;
                return Some(PullError::ConsumerDeleted);
            }
            if description.eq_ignore_ascii_case("consumer is push based")
                || description.starts_with("Exceeded MaxRequest")
                || description.starts_with("Exceeded MaxAckPending")
            {
                self.ended = true;
                return Some(PullError::Refused(format!("{status} {description}")));
            }
            // A request expired, was ended early (leadership change, server
            // shutdown) or refused for now (too many waiting): what it still
            // owed will not come. Without the header the whole batch is
            // taken off, erring towards asking again.
            let released = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Pending-Messages"))
                .and_then(|value| value.as_str().parse().ok())
                .unwrap_or(BATCH);
            self.pending = self.pending.saturating_sub(released);
            // Other members hold the server's room for waiting requests:
            // asking again at once would be refused again.
            self.paused |= description.starts_with("Exceeded MaxWaiting");
            return None;
        }
        self.pending = self.pending.saturating_sub(BATCH);
        self.paused = true;
        Some(PullError::Failed(if status == StatusCode::NO_RESPONDERS {
            "JetStream did not answer the pull request (no responders: is JetStream enabled, or a cluster electing a leader?)".to_string()
        } else {
            format!("the server answered the pull request with {status} {description}")
        }))
    }
}

/// The status the server sent instead of a stored message; `None` for a
/// stored message.
fn status_of(message: &async_nats::Message) -> Option<StatusCode> {
    message.status.filter(|status| *status != StatusCode::OK)
}

fn next_reconnect(mut reconnects: watch::Receiver<u64>) -> Reconnect {
    Box::pin(async move { reconnects.changed().await.ok().map(|()| reconnects) })
}

impl Stream for Pull {
    type Item = Result<jetstream::Message, PullError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Some(error) = this.ask(cx) {
                return Poll::Ready(Some(Err(error)));
            }
            let message = match this.subscriber.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => message,
                Poll::Ready(None) => {
                    // The client is gone.
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    // Checked only when nothing is waiting: a reconnect
                    // matters to a stream that would otherwise go idle, and
                    // polling it per message would cost every message.
                    match this.reconnect.as_mut().map(|r| r.as_mut().poll(cx)) {
                        Some(Poll::Ready(next)) => {
                            this.reconnect = next.map(next_reconnect);
                            this.start_over();
                            continue;
                        }
                        _ => break,
                    }
                }
            };
            this.heard = true;
            match status_of(&message) {
                Some(status) => {
                    if let Some(error) = this.status(&message, status) {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                None => {
                    this.pending = this.pending.saturating_sub(1);
                    return Poll::Ready(Some(Ok(jetstream::Message {
                        context: this.context.clone(),
                        message,
                    })));
                }
            }
        }
        // One timer for the stream, moved on once a period rather than per
        // message (a timer reset per message costs a timer-wheel update).
        while this.period.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + HEARTBEAT;
            this.period.as_mut().reset(next);
            if std::mem::take(&mut this.paused) {
                // A period after a failed request: ask again.
                cx.waker().wake_by_ref();
            }
            if std::mem::take(&mut this.heard) {
                this.quiet = 0;
                continue;
            }
            this.quiet = this.quiet.saturating_add(1);
            if this.quiet >= 2 {
                this.start_over();
                // The poll after this error item makes the new request.
                return Poll::Ready(Some(Err(PullError::MissingHeartbeat)));
            }
        }
        Poll::Pending
    }
}
