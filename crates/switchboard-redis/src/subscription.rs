//! Subscriptions: each has its own pub/sub connection and task, which
//! (re)connects, sends SUBSCRIBE or PSUBSCRIBE, filters every message with
//! [`Pattern::matches`] and forwards it through a bounded channel.
//!
//! When the channel is full the task stops reading the socket (backpressure),
//! so a subscriber that falls behind makes Redis disconnect it
//! (`client-output-buffer-limit pubsub`) rather than messages being dropped
//! silently; the disconnection is reported as an `Err` item, then the task
//! reconnects and resubscribes.
//!
//! While it reads, the task also watches the link: after a third of the
//! keepalive time without a frame it sends `PING` (allowed on a subscribed
//! connection), and a whole keepalive time without a frame means the link is
//! dead.

use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use switchboard_core::{
    Delivery, Error, Message, Pattern, Result, Subject, Subscription, SubscriptionLink, Token,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::connection::Conn;
use crate::options::{RedisOptions, Target};
use crate::request::{RedisReply, REPLY_TO};
use crate::resp::Frame;
use crate::{publisher, wire, KIND};

/// The Redis channel or glob a pattern subscribes to, and whether it is a glob.
///
/// A literal pattern subscribes to its channel with SUBSCRIBE. Otherwise `*`
/// and `>` become the glob `*` (which also matches across dots; every message
/// is checked against the pattern anyway) and glob metacharacters in literal
/// tokens are escaped with a backslash.
pub(crate) fn channel_for(pattern: &Pattern) -> (String, bool) {
    if pattern.is_literal() {
        return (pattern.as_str().to_string(), false);
    }
    let mut glob = String::with_capacity(pattern.as_str().len() + 4);
    for (index, token) in pattern.tokens().iter().enumerate() {
        if index > 0 {
            glob.push('.');
        }
        match token {
            Token::Any | Token::Rest => glob.push('*'),
            Token::Literal(text) => {
                for c in text.chars() {
                    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                        glob.push('\\');
                    }
                    glob.push(c);
                }
            }
        }
    }
    (glob, true)
}

/// Waits until the broker handle is closed (forever if it is dropped unclosed:
/// subscriptions then live until they are dropped themselves).
async fn closed(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|closed| *closed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(crate) async fn subscribe(
    target: Target,
    options: RedisOptions,
    pattern: &Pattern,
    shutdown: watch::Receiver<bool>,
    replies: Arc<publisher::Shared>,
) -> Result<Subscription> {
    if *shutdown.borrow() {
        return Err(Error::Closed { broker: KIND });
    }
    let (tx, mut rx) = mpsc::channel(options.capacity.max(1));
    let (ready_tx, ready_rx) = oneshot::channel();
    let wait = options.connect_timeout * 2;
    let task = tokio::spawn(run(
        target,
        options,
        pattern.clone(),
        tx,
        ready_tx,
        shutdown,
        replies,
    ));
    let subscribe_error = |reason: String| Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason,
        source: None,
    };
    match tokio::time::timeout(wait, ready_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(_)) => return Err(Error::Closed { broker: KIND }),
        Err(_) => {
            task.abort();
            return Err(subscribe_error(format!(
                "Redis did not confirm the subscription within {wait:?}"
            )));
        }
    }
    let deliveries = stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(
        Subscription::new(pattern.clone(), None, deliveries).with_close(move || {
            Box::pin(async move {
                // The stream is dropped by now, so the task ends and its
                // connection closes (which unsubscribes).
                let _ = task.await;
                Ok(())
            })
        }),
    )
}

/// Connects and subscribes, returning the connection once Redis confirmed.
async fn open(target: &Target, options: &RedisOptions, pattern: &Pattern) -> Result<Conn> {
    let (channel, glob) = channel_for(pattern);
    let command: &[u8] = if glob { b"PSUBSCRIBE" } else { b"SUBSCRIBE" };
    let name = format!("{}-sub", options.client_name());
    let mut conn = target.connect(options.connect_timeout, &name).await?;
    let failed = |reason: String| Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason,
        source: None,
    };
    let confirm = async {
        conn.command(&[command, channel.as_bytes()])
            .await
            .map_err(|e| failed(e.to_string()))
    };
    let reply = tokio::time::timeout(options.connect_timeout, confirm)
        .await
        .map_err(|_| failed("Redis did not confirm in time".into()))??;
    match reply {
        Frame::Array(Some(items))
            if items.first().and_then(Frame::bytes).is_some_and(|kind| {
                kind.eq_ignore_ascii_case(b"subscribe") || kind.eq_ignore_ascii_case(b"psubscribe")
            }) =>
        {
            Ok(conn)
        }
        other => Err(failed(format!("Redis answered {}", other.describe()))),
    }
}

async fn run(
    target: Target,
    options: RedisOptions,
    pattern: Pattern,
    tx: mpsc::Sender<Result<Delivery>>,
    ready: oneshot::Sender<Result<()>>,
    mut shutdown: watch::Receiver<bool>,
    replies: Arc<publisher::Shared>,
) {
    let mut ready = Some(ready);
    let mut link = SubscriptionLink::new(KIND, &pattern);
    let mut backoff = options.reconnect_backoff.attempts();
    loop {
        let opened = tokio::select! {
            opened = open(&target, &options, &pattern) => opened,
            _ = tx.closed() => return,
            _ = closed(&mut shutdown) => return,
        };
        match opened {
            Ok(conn) => {
                if let Some(ready) = ready.take() {
                    if ready.send(Ok(())).is_err() {
                        return;
                    }
                }
                link.resubscribed();
                backoff.succeeded();
                let Some(ended) = pump(
                    conn,
                    &pattern,
                    &tx,
                    &mut shutdown,
                    options.keepalive,
                    &replies,
                )
                .await
                else {
                    return;
                };
                link.lost(&ended.reason);
                let report = Err(Error::Disconnected {
                    broker: KIND,
                    reason: ended.describe(&pattern, options.capacity.max(1)),
                });
                tokio::select! {
                    sent = tx.send(report) => if sent.is_err() { return },
                    _ = closed(&mut shutdown) => return,
                }
            }
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                let delay = backoff.failed();
                link.retry_failed(&e, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                    _ = closed(&mut shutdown) => return,
                }
                continue;
            }
        }
        // Reconnect after a short pause, so a server that keeps closing us is not hammered.
        tokio::select! {
            _ = tokio::time::sleep(options.reconnect_backoff.min()) => {}
            _ = tx.closed() => return,
            _ = closed(&mut shutdown) => return,
        }
    }
}

/// How long after having to wait for room in the buffer a lost connection is
/// put down to the subscriber falling behind: Redis's soft output-buffer limit
/// for pub/sub allows 60 s over it.
const BEHIND_WINDOW: Duration = Duration::from_secs(90);

/// Why a subscription's connection ended.
struct Ended {
    reason: String,
    /// Whether the subscriber was behind (its buffer full) shortly before.
    behind: bool,
}

impl Ended {
    /// The reason of the `Disconnected` item: what happened, that the
    /// subscription is being renewed, and the slow-subscriber hint only where
    /// the subscriber really was behind.
    fn describe(&self, pattern: &Pattern, capacity: usize) -> String {
        let what = format!(
            "the subscription to '{pattern}' lost its connection ({}); resubscribing. Messages published until it is back are lost (PUBSUB keeps nothing)",
            self.reason
        );
        if self.behind {
            format!(
                "{what}. It was behind (its buffer of {capacity} messages was full), and Redis disconnects subscribers that fall behind (client-output-buffer-limit pubsub): read faster, raise `capacity` or that limit"
            )
        } else {
            what
        }
    }
}

/// Forwards messages until the connection breaks (returns why) or the
/// subscription or broker is closed (returns `None`). With a `keepalive`,
/// sends PING after a third of it without a frame, and gives the connection
/// up after all of it.
async fn pump(
    mut conn: Conn,
    pattern: &Pattern,
    tx: &mpsc::Sender<Result<Delivery>>,
    shutdown: &mut watch::Receiver<bool>,
    keepalive: Option<Duration>,
    replies: &Arc<publisher::Shared>,
) -> Option<Ended> {
    let mut last_full: Option<Instant> = None;
    let ended = |reason: String, last_full: Option<Instant>| {
        Some(Ended {
            reason,
            behind: last_full.is_some_and(|at| at.elapsed() < BEHIND_WINDOW),
        })
    };
    // When a frame last came (or reading resumed), and whether a PING is out since.
    let mut heard = Instant::now();
    let mut pinged = false;
    loop {
        let check =
            keepalive.map(|keepalive| heard + if pinged { keepalive } else { keepalive / 3 });
        let frame = tokio::select! {
            frame = conn.read_frame() => frame,
            _ = sleep_until(check) => {
                let Some(keepalive) = keepalive else { continue };
                if pinged {
                    return ended(
                        format!("nothing from Redis for {keepalive:?}, not even an answer to PING (keepalive)"),
                        last_full,
                    );
                }
                pinged = true;
                match tokio::time::timeout(keepalive, conn.send(&[b"PING"])).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => return ended(format!("sending PING failed: {e}"), last_full),
                    Err(_) => {
                        return ended(
                            format!("a PING could not be sent within {keepalive:?} (keepalive)"),
                            last_full,
                        )
                    }
                }
            }
            _ = tx.closed() => return None,
            _ = closed(shutdown) => return None,
        };
        heard = Instant::now();
        pinged = false;
        let items = match frame {
            Ok(Frame::Array(Some(items))) => items,
            Ok(Frame::Error(e)) => {
                return ended(
                    format!("Redis answered {}", String::from_utf8_lossy(&e)),
                    last_full,
                )
            }
            Ok(_) => continue,
            Err(e) => return ended(e.to_string(), last_full),
        };
        let (channel, body) = match items.as_slice() {
            [kind, channel, body] if kind.bytes().is_some_and(|k| &k[..] == b"message") => {
                (channel, body)
            }
            [kind, _, channel, body] if kind.bytes().is_some_and(|k| &k[..] == b"pmessage") => {
                (channel, body)
            }
            // Subscription confirmations, PING answers and the like.
            _ => continue,
        };
        let (Some(channel), Some(body)) = (channel.bytes(), body.bytes()) else {
            continue;
        };
        let Some(item) = item(channel, body, pattern, Some(replies)) else {
            continue;
        };
        let sent = match tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            // Full: wait without reading the socket (backpressure).
            Err(mpsc::error::TrySendError::Full(item)) => {
                last_full = Some(Instant::now());
                let sent = tokio::select! {
                    sent = tx.send(item) => sent.is_ok(),
                    _ = closed(shutdown) => false,
                };
                // The silence while not reading was ours, not the link's.
                heard = Instant::now();
                sent
            }
        };
        if !sent {
            return None;
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The item for a message on `channel`: a delivery; an
/// [`Error::InvalidSubject`] for a channel Redis delivered to this
/// subscription that is not a valid subject (a plain client can publish to
/// any channel); or `None` for a valid subject the pattern does not match (a
/// glob is wider than a pattern). A message carrying a [`REPLY_TO`] inbox
/// is a request, answered through `replies` (the broker's publisher).
fn item(
    channel: &[u8],
    body: &bytes::Bytes,
    pattern: &Pattern,
    replies: Option<&Arc<publisher::Shared>>,
) -> Option<Result<Delivery>> {
    let invalid = |why: String| {
        Some(Err(Error::InvalidSubject {
            subject: String::from_utf8_lossy(channel).into_owned(),
            reason: format!(
                "a message received from redis for subscription '{pattern}' on channel {:?} cannot be delivered ({why}); it was skipped",
                String::from_utf8_lossy(channel)
            ),
        }))
    };
    let Ok(text) = std::str::from_utf8(channel) else {
        return invalid("the channel is not UTF-8".to_string());
    };
    match Subject::new(text) {
        Ok(subject) if pattern.matches(subject.as_str()) => {
            let (mut headers, payload) = wire::decode(body.clone());
            let inbox = if headers.is_empty() {
                None
            } else {
                headers.remove(REPLY_TO)
            };
            let delivery = Delivery::new(Message::from_parts(subject, payload, headers));
            Some(Ok(
                match (inbox.map(|inbox| Subject::new(&inbox)), replies) {
                    (None, _) | (_, None) => delivery,
                    (Some(Ok(inbox)), Some(replies)) => {
                        delivery.with_replier(Box::new(RedisReply {
                            publisher: replies.clone(),
                            inbox,
                        }))
                    }
                    (Some(Err(error)), _) => {
                        tracing::warn!(subject = %delivery.subject(), %error, "redis: a request's reply channel is not a subject; it cannot be answered");
                        delivery
                    }
                },
            ))
        }
        Ok(_) => None,
        Err(Error::InvalidSubject { reason, .. }) => invalid(reason),
        Err(other) => invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_that_are_not_subjects_are_reported() {
        let pattern = Pattern::new("a.>").unwrap();
        let body = bytes::Bytes::from_static(b"x");
        let delivery = item(b"a.b", &body, &pattern, None).unwrap().unwrap();
        assert_eq!(delivery.subject().as_str(), "a.b");
        assert!(
            item(b"b.c", &body, &pattern, None).is_none(),
            "not this pattern's"
        );
        for channel in [&b"a.bad subject"[..], b"a..b", b"a.\xff"] {
            match item(channel, &body, &pattern, None) {
                Some(Err(Error::InvalidSubject { subject, reason })) => {
                    assert_eq!(subject, String::from_utf8_lossy(channel));
                    assert!(reason.contains("redis"), "{reason}");
                    assert!(reason.contains("a.>"), "{reason}");
                }
                other => panic!("{channel:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn patterns_become_escaped_globs() {
        let cases = [
            ("a.b", "a.b", false),
            ("a?.b[1]", "a?.b[1]", false),
            ("a.*", "a.*", true),
            ("a.>", "a.*", true),
            (">", "*", true),
            ("*.b?.>", "*.b\\?.*", true),
            ("x[1].*", "x\\[1\\].*", true),
            ("back\\slash.*", "back\\\\slash.*", true),
        ];
        for (pattern, glob, is_glob) in cases {
            let p = Pattern::new(pattern).unwrap();
            assert_eq!(channel_for(&p), (glob.to_string(), is_glob), "{pattern}");
        }
    }
}
