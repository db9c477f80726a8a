//! The routing link: how every publisher learns which subjects are kept for
//! durable consumers (see the crate docs, "Durable mode").
//!
//! Redis holds the registry (a hash, durable pattern -> stream key) and a
//! version that only grows. Every change to it is made by a function that
//! also PUBLISHes the new version and pattern list on the changes channel
//! and returns how many connections received it. Each broker handle keeps
//! one pub/sub connection on that channel (this module's task): it loads
//! the registry after subscribing, applies every change to the publisher's
//! routing, and then acknowledges the change on the acks channel. Whoever
//! made the change waits for as many acknowledgements as there were
//! receivers, so when `subscribe_durable` returns, every connected
//! publisher stores what matches the new pattern (an `XADD` to its stream,
//! or the durable function when several patterns match).
//!
//! A publisher whose link is down, or not yet loaded, routes every publish
//! through the function (which reads the registry itself), so it misses
//! nothing; with a keepalive, a link that went silent is given up after it,
//! which bounds how long a publisher whose link died unnoticed can go on
//! trusting a stale list.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Error, Pattern, Result};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::connection::Conn;
use crate::control::Control;
use crate::options::{RedisOptions, Target};
use crate::publisher;
use crate::resp::Frame;
use crate::KIND;

/// The function a durable publish calls.
pub(crate) const PUBLISH_FUNCTION: &[u8] = b"switchboard_v1_publish";

/// The durable mode's key names. On one server they are what they always
/// were (`switchboard:durable...`); on a Redis Cluster every one starts with
/// the hash tag `{switchboard}` ([`PREFIX`](crate::cluster::PREFIX)),
/// so all of them are in one slot, on one master, where the functions may
/// touch them together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    prefix: &'static str,
}

impl Keys {
    pub(crate) fn of(target: &Target) -> Keys {
        Keys {
            prefix: if target.is_cluster() {
                crate::cluster::PREFIX
            } else {
                "switchboard:durable"
            },
        }
    }

    /// The registry hash: durable pattern -> the key of its stream.
    pub(crate) fn registry(self) -> &'static str {
        self.prefix
    }

    /// The registry's version (a number that only grows).
    pub(crate) fn version(self) -> String {
        format!("{}:version", self.prefix)
    }

    /// The key of the stream that keeps the messages of durable pattern `pattern`.
    pub(crate) fn stream(self, pattern: &Pattern) -> String {
        format!("{}:stream:{pattern}", self.prefix)
    }
}

/// The channel on which registry changes are announced. Pub/sub channels
/// are shared by every database, the registry is not: the name carries the
/// database.
pub(crate) fn changes_channel(target: &Target) -> String {
    format!("switchboard:durable:changes:{}", target.db)
}

/// The channel on which publishers acknowledge registry changes.
pub(crate) fn acks_channel(target: &Target) -> String {
    format!("switchboard:durable:acks:{}", target.db)
}

/// A registry as the functions report it: its version and patterns.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) version: u64,
    pub(crate) patterns: Vec<Pattern>,
}

/// A number from an integer or bulk reply.
pub(crate) fn number(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Integer(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(other.bytes()?).ok()?.parse().ok(),
    }
}

/// Patterns from bulk replies; one that is not a pattern (written by hand
/// into the hash) is skipped with a warning, the function skips it too
/// (it matches nothing a subject can be).
fn patterns<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<Pattern> {
    items
        .filter_map(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            match Pattern::new(&text) {
                Ok(pattern) => Some(pattern),
                Err(error) => {
                    tracing::warn!(%error, "redis: the durable registry holds something that is not a pattern");
                    None
                }
            }
        })
        .collect()
}

/// Reads the registry through the control connection.
pub(crate) async fn load(control: &Control, keys: Keys) -> std::result::Result<Registry, String> {
    let reply = control
        .call(&[
            b"FCALL_RO",
            b"switchboard_v1_registry",
            b"2",
            keys.registry().as_bytes(),
            keys.version().as_bytes(),
        ])
        .await?;
    let Frame::Array(Some(items)) = reply else {
        return Err(format!("unexpected registry reply {}", reply.describe()));
    };
    let version = items.first().and_then(number).unwrap_or(0);
    Ok(Registry {
        version,
        patterns: patterns(
            items
                .iter()
                .skip(1)
                .filter_map(|f| f.bytes().map(|b| &b[..])),
        ),
    })
}

/// Parses a change announcement: the version, then one pattern a line.
fn parse_change(body: &[u8]) -> Option<Registry> {
    let mut lines = body.split(|&b| b == b'\n');
    let version = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
    Some(Registry {
        version,
        patterns: patterns(lines.filter(|line| !line.is_empty())),
    })
}

/// How long a closing handle's routing link waits for its UNSUBSCRIBE to
/// be confirmed, acknowledging the changes that come before it.
const LEAVE_PATIENCE: Duration = Duration::from_secs(2);

/// Waits until the broker handle is closed or dropped.
async fn ended(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closed| *closed).await;
}

/// Runs the routing link until the broker handle is closed or dropped.
/// `ready` is answered once the registry was first loaded (or loading it failed).
pub(crate) async fn run(
    target: Target,
    options: RedisOptions,
    control: Arc<Control>,
    publisher: Arc<publisher::Shared>,
    ready: oneshot::Sender<std::result::Result<(), String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ready = Some(ready);
    let mut backoff = options.reconnect_backoff.attempts();
    let channel = changes_channel(&target);
    let acks = acks_channel(&target);
    // Names this link in its acknowledgements, so that one sent twice (a
    // retried command) is counted once.
    let id: u64 = rand::random();
    loop {
        publisher.routing_unknown();
        let linked = tokio::select! {
            linked = link(&target, &options, &channel, &control, &publisher) => linked,
            _ = ended(&mut shutdown) => return,
        };
        let reason = match linked {
            Ok(mut conn) => {
                backoff.succeeded();
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                tokio::select! {
                    reason = pump(&mut conn, &control, &publisher, &acks, id, options.keepalive) => reason,
                    _ = ended(&mut shutdown) => {
                        // Closing: a change whose PUBLISH counted this link
                        // is acknowledged, so whoever made it does not wait
                        // out its deadline for this handle (a fixed 20 ms of
                        // reading missed one on a loaded machine, and a
                        // durable subscribe then took 16 s).
                        let leaving = leave(&mut conn, &channel, &control, &publisher, &acks, id);
                        let _ = tokio::time::timeout(LEAVE_PATIENCE, leaving).await;
                        return;
                    }
                }
            }
            Err(reason) => reason,
        };
        publisher.routing_unknown();
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(reason.clone()));
        }
        let delay = backoff.failed();
        tracing::debug!(%reason, ?delay, "redis: the durable routing link is down; publishing everything through the durable function until it is back");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ended(&mut shutdown) => return,
        }
    }
}

/// Subscribes to the changes channel, then loads the registry (in that
/// order, so no change falls between the two).
async fn link(
    target: &Target,
    options: &RedisOptions,
    channel: &str,
    control: &Control,
    publisher: &publisher::Shared,
) -> std::result::Result<Conn, String> {
    let name = format!("{}-routing", options.client_name());
    // On the master of the durable keys' slot, like every routing link:
    // PUBLISH on a cluster counts the receivers on its own node only.
    let mut conn = target
        .connect_durable(options.connect_timeout, &name)
        .await
        .map_err(|e| e.to_string())?;
    let args: [&[u8]; 2] = [b"SUBSCRIBE", channel.as_bytes()];
    match tokio::time::timeout(options.connect_timeout, conn.command(&args)).await {
        Ok(Ok(Frame::Array(Some(_)))) => {}
        Ok(Ok(other)) => return Err(format!("SUBSCRIBE answered {}", other.describe())),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("Redis did not confirm SUBSCRIBE in time".into()),
    }
    let registry = load(control, Keys::of(target)).await?;
    publisher.set_routing(registry.version, registry.patterns, true);
    Ok(conn)
}

/// Applies and acknowledges changes until the link breaks; returns why.
async fn pump(
    conn: &mut Conn,
    control: &Control,
    publisher: &publisher::Shared,
    acks: &str,
    id: u64,
    keepalive: Option<Duration>,
) -> String {
    let mut heard = Instant::now();
    let mut pinged = false;
    loop {
        let check = keepalive.map(|k| heard + if pinged { k } else { k / 3 });
        let frame = tokio::select! {
            frame = conn.read_frame() => frame,
            _ = publisher.function_missing.notified() => {
                match control.reload().await {
                    Ok(()) => tracing::warn!("redis: durable publishes met `Function not found` (FUNCTION FLUSH?); the library is loaded again, and flush reports the publishes that failed"),
                    Err(reason) => tracing::warn!(%reason, "redis: durable publishes met `Function not found`, and loading the library again failed"),
                }
                continue;
            }
            _ = publisher.owner_moved.notified() => {
                // The control connection moves too, loading the function
                // library on the new owner (which may not have it).
                if let Err(reason) = control.reload().await {
                    tracing::debug!(%reason, "redis: reconnecting the control connection to the durable keys' new owner failed");
                }
                return "the durable keys' slot moved to another node".into();
            }
            _ = sleep_until(check) => {
                let Some(keepalive) = keepalive else { continue };
                if pinged {
                    return format!("nothing from Redis for {keepalive:?} (keepalive)");
                }
                pinged = true;
                if let Err(e) = conn.send(&[b"PING"]).await {
                    return format!("sending PING failed: {e}");
                }
                continue;
            }
        };
        heard = Instant::now();
        pinged = false;
        let items = match frame {
            Ok(Frame::Array(Some(items))) => items,
            Ok(_) => continue,
            Err(e) => return e.to_string(),
        };
        let body = match items.as_slice() {
            [kind, _, body] if kind.bytes().is_some_and(|k| &k[..] == b"message") => body,
            _ => continue,
        };
        if let Err(reason) = apply(body, control, publisher, acks, id).await {
            return reason;
        }
    }
}

/// Applies one change (a message's body) to the publisher's routing and
/// acknowledges it on the acks channel.
async fn apply(
    body: &Frame,
    control: &Control,
    publisher: &publisher::Shared,
    acks: &str,
    id: u64,
) -> std::result::Result<(), String> {
    let Some(change) = body.bytes().and_then(|b| parse_change(b)) else {
        tracing::warn!("redis: an unreadable durable registry change; reloading the registry");
        return Err("an unreadable registry change".into());
    };
    let version = change.version;
    publisher.set_routing(version, change.patterns, false);
    let text = format!("{version} {id:016x}");
    control
        .call(&[b"PUBLISH", acks.as_bytes(), text.as_bytes()])
        .await
        .map(drop)
        .map_err(|reason| format!("acknowledging registry version {version} failed: {reason}"))
}

/// Unsubscribes the closing link, acknowledging every change that comes
/// before the confirmation: Redis delivers on one connection in order, so a
/// change whose PUBLISH counted this link arrives before it.
async fn leave(
    conn: &mut Conn,
    channel: &str,
    control: &Control,
    publisher: &publisher::Shared,
    acks: &str,
    id: u64,
) {
    if conn
        .send(&[b"UNSUBSCRIBE", channel.as_bytes()])
        .await
        .is_err()
    {
        return;
    }
    while let Ok(frame) = conn.read_frame().await {
        let Frame::Array(Some(items)) = frame else {
            continue;
        };
        match items.as_slice() {
            [kind, _, body] if kind.bytes().is_some_and(|k| &k[..] == b"message") => {
                let _ = apply(body, control, publisher, acks, id).await;
            }
            [kind, ..] if kind.bytes().is_some_and(|k| &k[..] == b"unsubscribe") => return,
            _ => {}
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

/// Changes the registry with `function` (`switchboard_v1_register` or
/// `switchboard_v1_unregister`) and, when it changed, waits until every
/// publisher that received the change acknowledged it (bounded: see
/// [`ack_deadline`]). This handle's publisher applies the change at once.
pub(crate) async fn change(
    target: &Target,
    options: &RedisOptions,
    control: &Control,
    publisher: &publisher::Shared,
    function: &[u8],
    pattern: &Pattern,
    group: &str,
) -> Result<()> {
    let failed = |reason: String| Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason,
        source: None,
    };
    // Listen for acknowledgements before the change, so none is missed.
    let acks = acks_channel(target);
    let mut listener = target
        .connect_durable(
            options.connect_timeout,
            &format!("{}-acks", options.client_name()),
        )
        .await?;
    match tokio::time::timeout(
        options.connect_timeout,
        listener.command(&[b"SUBSCRIBE", acks.as_bytes()]),
    )
    .await
    {
        Ok(Ok(Frame::Array(Some(_)))) => {}
        Ok(Ok(other)) => return Err(failed(format!("SUBSCRIBE answered {}", other.describe()))),
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed("Redis did not confirm SUBSCRIBE in time".into())),
    }
    let keys = Keys::of(target);
    let stream = keys.stream(pattern);
    let channel = changes_channel(target);
    let reply = control
        .call(&[
            b"FCALL",
            function,
            b"3",
            keys.registry().as_bytes(),
            keys.version().as_bytes(),
            stream.as_bytes(),
            pattern.as_str().as_bytes(),
            group.as_bytes(),
            channel.as_bytes(),
        ])
        .await
        .map_err(|reason| failed(format!("changing the durable registry: {reason}")))?;
    let Frame::Array(Some(items)) = reply else {
        return Err(failed(format!(
            "unexpected reply from the durable registry: {}",
            reply.describe()
        )));
    };
    let version = items.first().and_then(number).unwrap_or(0);
    let receivers = items.get(1).and_then(number).unwrap_or(0);
    if version == 0 {
        return Ok(());
    }
    publisher.set_routing(
        version,
        patterns(
            items
                .iter()
                .skip(2)
                .filter_map(|f| f.bytes().map(|b| &b[..])),
        ),
        false,
    );
    let deadline = ack_deadline(options);
    let started = Instant::now();
    // The links that acknowledged (by id: a retried acknowledgement counts once).
    let mut acked = std::collections::HashSet::new();
    let prefix = format!("{version} ");
    while (acked.len() as u64) < receivers {
        let frame = match tokio::time::timeout_at(started + deadline, listener.read_frame()).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis: the connection waiting for publishers to learn of a durable pattern broke");
                break;
            }
            Err(_) => {
                tracing::warn!(
                    pattern = %pattern,
                    missing = receivers - acked.len() as u64,
                    after = ?deadline,
                    "redis: publishers did not confirm a change of the durable registry; their routing link is dead or stuck, and they publish everything through the durable function once their keepalive gives it up"
                );
                break;
            }
        };
        if let Frame::Array(Some(items)) = frame {
            if let [kind, _, body] = items.as_slice() {
                if kind.bytes().is_some_and(|k| &k[..] == b"message") {
                    if let Some(link) = body.bytes().and_then(|b| b.strip_prefix(prefix.as_bytes()))
                    {
                        acked.insert(link.to_vec());
                    }
                }
            }
        }
    }
    tracing::debug!(pattern = %pattern, receivers, acked = acked.len(), waited = ?started.elapsed(), "redis: durable registry changed");
    Ok(())
}

/// How long a registry change waits for publishers' acknowledgements: a
/// little more than the keepalive, after which a publisher whose link died
/// unnoticed has given it up (and routes everything through the function);
/// without a keepalive, the flush timeout.
pub(crate) fn ack_deadline(options: &RedisOptions) -> Duration {
    match options.keepalive {
        Some(keepalive) => keepalive + Duration::from_secs(1),
        None => options.flush_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_parsed() {
        let change = parse_change(b"1796206391577732\na.>\nb.*.c").unwrap();
        assert_eq!(change.version, 1796206391577732);
        let patterns: Vec<&str> = change.patterns.iter().map(|p| p.as_str()).collect();
        assert_eq!(patterns, ["a.>", "b.*.c"]);
        let empty = parse_change(b"7\n").unwrap();
        assert_eq!(empty.version, 7);
        assert!(empty.patterns.is_empty());
        assert!(parse_change(b"x\na").is_none());
    }
}
