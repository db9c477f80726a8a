//! The publish path: a message handed to async-nats' queue without waiting a
//! round trip, a bounded wait for room while the connection is down, and
//! `flush` as one round trip through the server.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::future::Either;
use switchboard_core::{Error, Link, Message, Result, Subject};

use crate::broker::Shared;
use crate::connection::{refused_since_last_flush, round_trip};
use crate::error::ClientError;
use crate::{wire, KIND};

/// The future [`Publisher::publish`](switchboard_core::Publisher::publish) returns.
pub(crate) type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A publish (or an acknowledgement) that is already done: a zero-sized
/// future, so boxing it allocates nothing.
struct Published;

impl Future for Published {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `result` as an already finished boxed future; `Ok` allocates nothing.
pub(crate) fn finished<'a>(result: Result<()>) -> PublishFuture<'a> {
    match result {
        Ok(()) => Box::pin(Published),
        Err(error) => Box::pin(std::future::ready(Err(error))),
    }
}

/// Hands `message` to the client (see the [crate docs](crate) on publishing).
///
/// Not an `async fn`: a message without headers, on a subject no JetStream
/// stream captures, is handed to async-nats' queue right here when the queue
/// has room (the usual case), and the future returned is an already finished,
/// zero-sized one. `#[async_trait]` would instead allocate a future of several
/// hundred bytes per message and copy it three times; that was most of what
/// publishing through switchboard cost over async-nats itself (see
/// BENCHMARKS.md, "Instructions per publish"). How the attempt is kept in
/// case the queue is full depends on the payload ([`publish_owned`],
/// [`publish_shared`]). A subject a JetStream stream captures is published
/// the same way as a JetStream publish ([`publish_captured`]); headers take
/// [`publish_queued`], boxed.
pub(crate) fn publish(shared: &Shared, message: Message) -> PublishFuture<'_> {
    let (subject, payload, headers) = message.into_parts();
    if !headers.is_empty() {
        return Box::pin(publish_queued(shared, subject, payload, headers));
    }
    // Empty: dropping it is a comparison (core keeps no map for no headers).
    drop(headers);
    let max = shared.client.max_payload();
    if payload.len() > max {
        return finished(Err(too_large(&subject, payload.len(), max)));
    }
    let nats_subject = match wire::nats_subject(&subject) {
        Ok(nats_subject) => nats_subject,
        Err(error) => return finished(Err(error)),
    };
    if shared.captured.captures(&subject) {
        return publish_captured(shared, subject, nats_subject, payload);
    }
    if payload.is_unique() {
        publish_owned(shared, subject, nats_subject, payload)
    } else {
        publish_shared(shared, subject, nats_subject, payload)
    }
}

/// The plain path for a payload nothing else holds (a `Vec`-backed `Bytes`
/// made for this message, the usual case). The attempt is boxed, and if
/// async-nats' queue is full the box itself is awaited. Cloning such a
/// payload to publish it again instead would allocate (its first clone
/// makes it shared) and leave both reference counts to the connection's
/// task on the other thread: in a multi-thread runtime that cost more than
/// the box (BENCHMARKS.md, "NATS publish: the copies kept for a retry").
fn publish_owned(
    shared: &Shared,
    subject: Subject,
    nats_subject: async_nats::Subject,
    payload: bytes::Bytes,
) -> PublishFuture<'_> {
    let mut attempt = Box::pin(shared.client.publish(nats_subject, payload));
    match poll_once(attempt.as_mut()) {
        Poll::Ready(Ok(())) => Box::pin(Published),
        Poll::Ready(Err(e)) => finished(Err(not_taken(&subject, e))),
        Poll::Pending => Box::pin(async move {
            let handed = await_room(shared, attempt.as_mut()).await;
            handed_result(&subject, handed, shared.options.flush_timeout)
        }),
    }
}

/// The plain path for a payload that is static or shared already: cloning
/// it is a reference count at most, so the attempt stays on the stack and a
/// clone is kept in case it stays `Pending` (it is then dropped, which
/// unregisters it, and the message takes [`hand_over`]).
fn publish_shared(
    shared: &Shared,
    subject: Subject,
    nats_subject: async_nats::Subject,
    payload: bytes::Bytes,
) -> PublishFuture<'_> {
    let retry = payload.clone();
    let polled = poll_once(std::pin::pin!(shared.client.publish(nats_subject, payload)));
    match polled {
        Poll::Ready(Ok(())) => Box::pin(Published),
        Poll::Ready(Err(e)) => finished(Err(not_taken(&subject, e))),
        Poll::Pending => match wire::nats_subject(&subject) {
            Ok(nats_subject) => Box::pin(hand_over(shared, subject, nats_subject, retry, None)),
            Err(error) => finished(Err(error)),
        },
    }
}

/// Polls a publish once with a waker that does nothing: a queue with room
/// takes the message now; a full one (or a task out of its scheduling
/// budget) leaves it `Pending`.
pub(crate) fn poll_once<F: Future + ?Sized>(attempt: Pin<&mut F>) -> Poll<F::Output> {
    attempt.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// A message without headers on a subject a JetStream stream captures: like
/// the plain path, handed to async-nats right here when it takes it at once,
/// and the future returned is then an already finished one, unless the
/// PubAck window is full: the future then awaits the oldest PubAcks (as the
/// raw client's sliding window does). Otherwise [`publish_stored`], boxed.
fn publish_captured(
    shared: &Shared,
    subject: Subject,
    nats_subject: async_nats::Subject,
    payload: bytes::Bytes,
) -> PublishFuture<'_> {
    // async-nats makes a timer for the publish: that needs a runtime, which
    // a future merely created outside one (and awaited in one) lacks.
    if tokio::runtime::Handle::try_current().is_ok() {
        match crate::durable::try_publish(shared, &nats_subject, &payload) {
            Some(Ok(false)) => return Box::pin(Published),
            Some(Ok(true)) => {
                return Box::pin(async move {
                    crate::durable::slide(shared).await;
                    Ok(())
                })
            }
            Some(Err(error)) => return finished(Err(not_stored(&subject, error))),
            None => {}
        }
    }
    Box::pin(async move { publish_stored(shared, &subject, nats_subject, payload, None).await })
}

/// The publish path for a message with headers, or on a subject a JetStream
/// stream captures.
async fn publish_queued(
    shared: &Shared,
    subject: Subject,
    payload: bytes::Bytes,
    headers: switchboard_core::Headers,
) -> Result<()> {
    let max = shared.client.max_payload();
    let headers = if headers.is_empty() {
        if payload.len() > max {
            return Err(too_large(&subject, payload.len(), max));
        }
        None
    } else {
        let (map, header_size) = wire::nats_headers(&headers)?;
        let size = header_size + payload.len();
        if size > max {
            return Err(too_large(&subject, size, max));
        }
        Some(map)
    };
    let nats_subject = wire::nats_subject(&subject)?;
    if shared.captured.captures(&subject) {
        return Box::pin(publish_stored(
            shared,
            &subject,
            nats_subject,
            payload,
            headers,
        ))
        .await;
    }
    hand_over(shared, subject, nats_subject, payload, headers).await
}

/// Hands a message to async-nats' queue, waiting for room if it is full
/// (bounded while the connection is down, see [`wait_for_room`]).
async fn hand_over(
    shared: &Shared,
    subject: Subject,
    nats_subject: async_nats::Subject,
    payload: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
) -> Result<()> {
    let client = &shared.client;
    let handing = std::pin::pin!(match headers {
        None => Either::Left(client.publish(nats_subject, payload)),
        Some(map) => Either::Right(client.publish_with_headers(nats_subject, map, payload)),
    });
    let handed = await_room(shared, handing).await;
    handed_result(&subject, handed, shared.options.flush_timeout)
}

/// Awaits a publish handed to async-nats' queue: at once if there is room,
/// else until there is (bounded while the connection is down, see
/// [`wait_for_room`]). `None` if the connection stayed down too long.
async fn await_room<F>(shared: &Shared, mut handing: Pin<&mut F>) -> Option<F::Output>
where
    F: Future<Output = std::result::Result<(), async_nats::PublishError>>,
{
    // Polled with this task's context: if async-nats' queue is full, the
    // task is now registered to be woken when there is room.
    match futures::future::poll_immediate(handing.as_mut()).await {
        Some(handed) => Some(handed),
        None => {
            let timeout = shared.options.flush_timeout;
            Box::pin(wait_for_room(handing, &shared.registry.link, timeout)).await
        }
    }
}

/// What [`await_room`] found, as the publish's result.
fn handed_result(
    subject: &Subject,
    handed: Option<std::result::Result<(), async_nats::PublishError>>,
    timeout: Duration,
) -> Result<()> {
    match handed {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(not_taken(subject, e)),
        None => Err(Error::Publish {
            broker: KIND,
            subject: subject.to_string(),
            reason: format!(
                "the connection to the server is down and the client's send queue stayed full for {timeout:?} while it reconnects; the message was not sent"
            ),
            source: None,
        }),
    }
}

/// async-nats refused the message.
fn not_taken(subject: &Subject, error: async_nats::PublishError) -> Error {
    Error::Publish {
        broker: KIND,
        subject: subject.to_string(),
        reason: "the client did not take the message".to_string(),
        source: Some(ClientError::boxed(error)),
    }
}

/// Sends `message` as a NATS request (a reply subject on the client's inbox)
/// and waits up to `timeout` for the first reply. The server says at once
/// when nothing is subscribed (no responders); the wait is bounded by
/// `timeout` in every other case, a connection down included.
pub(crate) async fn request(
    shared: &Shared,
    message: Message,
    timeout: Duration,
) -> Result<Message> {
    let (subject, payload, headers) = message.into_parts();
    let max = shared.client.max_payload();
    let mut request = async_nats::Request::new().timeout(Some(timeout));
    let mut size = payload.len();
    if !headers.is_empty() {
        let (map, header_size) = wire::nats_headers(&headers)?;
        size += header_size;
        request = request.headers(map);
    }
    if size > max {
        return Err(too_large(&subject, size, max));
    }
    let request = request.payload(payload);
    let nats_subject = wire::nats_subject(&subject)?;
    // async-nats' own timeout starts once the request is queued; this one
    // also covers a queue that stays full while the connection is down.
    let sent = tokio::time::timeout(timeout, shared.client.send_request(nats_subject, request));
    match sent.await {
        // The reply arrives on an inbox; it is reported on the request's subject.
        Ok(Ok(reply)) => Ok(wire::reply_message(reply, subject)),
        Ok(Err(e)) => Err(match e.kind() {
            async_nats::RequestErrorKind::NoResponders => Error::NoResponders {
                broker: KIND,
                subject: subject.to_string(),
            },
            async_nats::RequestErrorKind::TimedOut => {
                Error::request_timeout(KIND, subject.as_str(), timeout)
            }
            _ => Error::Publish {
                broker: KIND,
                subject: subject.to_string(),
                reason: "the client did not send the request".to_string(),
                source: Some(ClientError::boxed(e)),
            },
        }),
        Err(_) => Err(Error::request_timeout(KIND, subject.as_str(), timeout)),
    }
}

/// Publishes on a subject a JetStream stream captures: as a JetStream
/// publish, whose PubAck the next `flush` awaits (out of line, so that the
/// plain path's future stays small).
async fn publish_stored(
    shared: &Shared,
    subject: &Subject,
    nats_subject: async_nats::Subject,
    payload: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
) -> Result<()> {
    crate::durable::publish(shared, nats_subject, payload, headers)
        .await
        .map_err(|e| not_stored(subject, e))
}

/// JetStream refused a message (it was not sent).
fn not_stored(subject: &Subject, error: async_nats::jetstream::context::PublishError) -> Error {
    Error::Publish {
        broker: KIND,
        subject: subject.to_string(),
        reason: "JetStream did not take the message".to_string(),
        source: Some(Box::new(error)),
    }
}

/// Waits until the server has processed everything published before, and
/// JetStream has stored what was published on subjects its streams capture.
pub(crate) async fn flush(shared: &Shared) -> Result<()> {
    crate::durable::confirm_pending(shared).await?;
    round_trip(
        &shared.client,
        &shared.registry,
        shared.options.flush_timeout,
    )
    .await
    .map_err(|(reason, source)| Error::Flush {
        broker: KIND,
        reason,
        source,
    })?;
    // Without this a refusal was a log line, and the caller was told its
    // message may have arrived.
    match refused_since_last_flush(&shared.registry).await {
        None => Ok(()),
        Some((count, reason)) => Err(Error::Refused {
            broker: KIND,
            count,
            reason,
        }),
    }
}

/// Awaits `handing`, a publish that found async-nats' command queue full;
/// `None` if the connection was down for `timeout` meanwhile.
///
/// The queue is full whenever messages come faster than the connection
/// writes them: waiting for room is then normal and must stay about as cheap
/// as in async-nats itself, so no timer is made for it (and this runs out of
/// line, boxed, so that `publish`'s own future stays small). It is also full
/// while the connection is down (async-nats takes no commands while it
/// reconnects), and that wait could last forever: so the wait watches the
/// link, and only once the link is down does `timeout` run.
async fn wait_for_room<F: Future>(
    mut handing: Pin<&mut F>,
    link: &Link,
    timeout: Duration,
) -> Option<F::Output> {
    let mut link = link.watch();
    // `handing` was just polled: it need not be polled again until woken
    // (a second poll would take the queue's lock for nothing).
    let mut just_polled = true;
    loop {
        if !link.borrow_and_update().connected {
            return tokio::time::timeout(timeout, handing).await.ok();
        }
        let mut changed = std::pin::pin!(link.changed());
        let woken = std::future::poll_fn(|cx| {
            if !std::mem::take(&mut just_polled) {
                if let Poll::Ready(output) = handing.as_mut().poll(cx) {
                    return Poll::Ready(Some(output));
                }
            }
            match changed.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(None),
                // The link's sender lives as long as the registry: never.
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(output) = woken {
            return Some(output);
        }
    }
}

fn too_large(subject: &Subject, size: usize, max: usize) -> Error {
    Error::PayloadTooLarge {
        broker: KIND,
        subject: subject.to_string(),
        size,
        max,
    }
}
