//! Subscriptions: each has its own pub/sub connection and task, which
//! (re)connects, sends SUBSCRIBE or PSUBSCRIBE, filters every message with
//! [`Pattern::matches`] and forwards it through a bounded channel.
//!
//! When the channel is full the task stops reading the socket (backpressure),
//! so a subscriber that falls behind makes Redis disconnect it
//! (`client-output-buffer-limit pubsub`) rather than messages being dropped
//! silently; the disconnection is reported as an `Err` item, then the task
//! reconnects and resubscribes.

use futures::stream;
use switchboard_core::{Delivery, Error, Message, Pattern, Result, Subject, Subscription, Token};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn::{Conn, Target};
use crate::options::RedisOptions;
use crate::resp::Frame;
use crate::{wire, BROKER};

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
) -> Result<Subscription> {
    if *shutdown.borrow() {
        return Err(Error::Closed { broker: BROKER });
    }
    let (tx, mut rx) = mpsc::channel(options.subscription_capacity);
    let (ready_tx, ready_rx) = oneshot::channel();
    let wait = options.connect_timeout * 2;
    let task = tokio::spawn(run(
        target,
        options,
        pattern.clone(),
        tx,
        ready_tx,
        shutdown,
    ));
    let subscribe_error = |reason: String| Error::Subscribe {
        broker: BROKER,
        pattern: pattern.to_string(),
        reason,
        source: None,
    };
    match tokio::time::timeout(wait, ready_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(_)) => return Err(Error::Closed { broker: BROKER }),
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
    let name = format!("{}-sub", options.client_name);
    let mut conn = target.connect(options.connect_timeout, &name).await?;
    let failed = |reason: String| Error::Subscribe {
        broker: BROKER,
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
) {
    let mut ready = Some(ready);
    let mut backoff = options.reconnect_min;
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
                } else {
                    tracing::info!(%pattern, "redis: resubscribed");
                }
                backoff = options.reconnect_min;
                let Some(reason) = pump(conn, &pattern, &tx, &mut shutdown).await else {
                    return;
                };
                tracing::warn!(%pattern, %reason, "redis: subscription connection lost; resubscribing");
                let report = Err(Error::Disconnected {
                    broker: BROKER,
                    reason: format!(
                        "the subscription to {pattern:?} lost its connection ({reason}); messages published until it is resubscribed are lost. Redis disconnects subscribers that fall behind (client-output-buffer-limit pubsub): read faster or raise that limit"
                    ),
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
                tracing::warn!(%pattern, error = %e, "redis: resubscribing failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                    _ = closed(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(options.reconnect_max);
                continue;
            }
        }
        // Reconnect after a short pause, so a server that keeps closing us is not hammered.
        tokio::select! {
            _ = tokio::time::sleep(options.reconnect_min) => {}
            _ = tx.closed() => return,
            _ = closed(&mut shutdown) => return,
        }
    }
}

/// Forwards messages until the connection breaks (returns why) or the
/// subscription or broker is closed (returns `None`).
async fn pump(
    mut conn: Conn,
    pattern: &Pattern,
    tx: &mpsc::Sender<Result<Delivery>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    loop {
        let frame = tokio::select! {
            frame = conn.read_frame() => frame,
            _ = tx.closed() => return None,
            _ = closed(shutdown) => return None,
        };
        let items = match frame {
            Ok(Frame::Array(Some(items))) => items,
            Ok(Frame::Error(e)) => {
                return Some(format!("Redis answered {}", String::from_utf8_lossy(&e)))
            }
            Ok(_) => continue,
            Err(e) => return Some(e.to_string()),
        };
        let (channel, body) = match items.as_slice() {
            [kind, channel, body] if kind.bytes().is_some_and(|k| &k[..] == b"message") => {
                (channel, body)
            }
            [kind, _, channel, body] if kind.bytes().is_some_and(|k| &k[..] == b"pmessage") => {
                (channel, body)
            }
            // Subscription confirmations and the like.
            _ => continue,
        };
        let (Some(channel), Some(body)) = (channel.bytes(), body.bytes()) else {
            continue;
        };
        let Some(subject) = std::str::from_utf8(channel)
            .ok()
            .filter(|c| pattern.matches(c))
            .and_then(|c| Subject::new(c).ok())
        else {
            continue;
        };
        let (headers, payload) = wire::decode(body.clone());
        let delivery = Delivery::new(Message::from_parts(subject, payload, headers));
        let sent = match tx.try_send(Ok(delivery)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            // Full: wait without reading the socket (backpressure).
            Err(mpsc::error::TrySendError::Full(item)) => tokio::select! {
                sent = tx.send(item) => sent.is_ok(),
                _ = closed(shutdown) => false,
            },
        };
        if !sent {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
