//! Durable subscriptions over Redis Streams (see the crate docs, "Durable
//! mode"): each member has its own connection and task, which reads its own
//! pending entries first (a member back under its name, or reconnected),
//! then loops: claim entries idle past the ack deadline (or nacked), else
//! read new ones with a short `XREADGROUP ... BLOCK`. Acks and nacks go
//! through the broker's control connection.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use switchboard_core::{
    async_trait, Acknowledge, Delivery, Durable, Error, Message, Pattern, Result, Subject,
    Subscription, SubscriptionLink,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::connection::Conn;
use crate::control::Control;
use crate::options::{RedisOptions, Target};
use crate::resp::Frame;
use crate::routing::{number, Keys};
use crate::{wire, KIND};

/// At most this many entries are read at once, and delivered but not yet
/// taken from the subscription: what one member holds of a group's work.
pub(crate) const PREFETCH: usize = 64;

/// How long one `XREADGROUP ... BLOCK` waits for new entries before the
/// member looks for claimable ones again: how soon a nacked entry (or one
/// whose ack deadline passed) comes back at most after it became claimable.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// What a member reads from: the stream, the group, its own name.
#[derive(Debug, Clone)]
struct Member {
    stream: Arc<str>,
    group: Arc<str>,
    name: Arc<str>,
    pattern: Pattern,
    ack_wait: Duration,
    max_deliver: u32,
    /// How long a command on the member's connection may go unanswered
    /// before the connection is given up: the keepalive (or a minute
    /// without one) beyond the `BLOCK` time.
    answer_within: Duration,
    /// On a Redis Cluster, where the stream can move to another node.
    cluster: bool,
}

/// Waits until the broker handle is closed or dropped.
async fn ended(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closed| *closed).await;
}

/// Connects a member, then runs `register` (which creates the group and
/// the registry entry, and waits for publishers to know), then starts the
/// member's task on that connection. Connecting first makes `register` the
/// last step, so `subscribe_durable` returns right after publishers confirmed.
pub(crate) async fn subscribe(
    target: Target,
    options: RedisOptions,
    control: Arc<Control>,
    pattern: &Pattern,
    durable: &Durable,
    shutdown: watch::Receiver<bool>,
    register: impl std::future::Future<Output = Result<()>>,
) -> Result<Subscription> {
    if *shutdown.borrow() {
        return Err(Error::Closed { broker: KIND });
    }
    let name = format!("{}-durable", options.client_name());
    let conn = target
        .connect_durable(options.connect_timeout, &name)
        .await?;
    register.await?;
    let member = Member {
        stream: Arc::from(Keys::of(&target).stream(pattern)),
        group: Arc::from(durable.consumer().as_str()),
        name: Arc::from(durable.name.as_str()),
        pattern: pattern.clone(),
        ack_wait: durable.ack_wait,
        max_deliver: durable.max_deliver.unwrap_or(0),
        answer_within: POLL + options.keepalive.unwrap_or(Duration::from_secs(60)),
        cluster: target.is_cluster(),
    };
    let capacity = options.capacity.clamp(1, PREFETCH);
    let (tx, rx) = mpsc::channel(capacity);
    let releasing = Arc::new(std::sync::Mutex::new(None));
    let inbox = Inbox {
        rx: Some(rx),
        control: control.clone(),
        member: member.clone(),
        releasing: releasing.clone(),
    };
    // The member's first reads run before `subscribe_durable` returns, so a
    // user whose ACL refuses them (or an `ack_wait` Redis does not take)
    // gets one error from it instead of a subscription that reconnects for
    // ever.
    let (ready_tx, ready_rx) = oneshot::channel();
    let pattern_text = member.pattern.to_string();
    let task = tokio::spawn(run(
        target, options, control, member, tx, conn, shutdown, ready_tx,
    ));
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            return Err(Error::Subscribe {
                broker: KIND,
                pattern: pattern_text,
                reason,
                source: None,
            })
        }
        // The task ended without a word: only the handle's close does that.
        Err(_) => return Err(Error::Closed { broker: KIND }),
    }
    Ok(
        Subscription::new(pattern.clone(), None, inbox).with_close(move || {
            Box::pin(async move {
                // The stream is gone, so the task ends and closes its
                // connection; then what it had read ahead is handed back.
                let _ = task.await;
                let release = releasing.lock().ok().and_then(|mut slot| slot.take());
                if let Some(release) = release {
                    let _ = release.await;
                }
                Ok(())
            })
        }),
    )
}

/// One entry read ahead for the subscription: its delivery, and what
/// handing it back to the group takes if nobody takes it from the channel.
struct ReadAhead {
    delivery: Delivery,
    id: String,
    count: u32,
}

/// What the member's task sends: an entry read ahead, or an error item.
type Item = Result<ReadAhead>;

/// The subscription's side of the member's channel. When dropped (the
/// subscription is dropped or closed), the entries read ahead that nobody
/// took are handed back to the group at once (see [`release`]) instead of
/// waiting out their ack deadline on a member that left.
struct Inbox {
    rx: Option<mpsc::Receiver<Item>>,
    control: Arc<Control>,
    member: Member,
    /// The hand-back task, awaited by `Subscription::close`.
    releasing: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Stream for Inbox {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        rx.poll_recv(cx)
            .map(|item| item.map(|item| item.map(|held| held.delivery)))
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // No more sends; what is buffered, or sent on permits the task
        // already holds, is still received below.
        rx.close();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime nothing can be sent: the entries come back
            // after their ack deadline, as from a member that crashed.
            return;
        };
        let (control, member) = (self.control.clone(), self.member.clone());
        let task = runtime.spawn(async move {
            let mut held = Vec::new();
            while let Ok(item) = rx.try_recv() {
                held.extend(item.ok().map(|h| (h.id, h.count)));
            }
            release(&control, &member, held).await;
            // The task may still send what it had read; it ends at its
            // next send or read.
            while let Some(item) = rx.recv().await {
                if let Ok(h) = item {
                    release(&control, &member, vec![(h.id, h.count)]).await;
                }
            }
        });
        if let Ok(mut slot) = self.releasing.lock() {
            *slot = Some(task);
        }
    }
}

/// `XCLAIM <stream> <group> <this member> 0 <ids> IDLE <idle_ms> [RETRYCOUNT
/// <retry>] JUSTID`: keeps `ids` pending on this member but sets their idle
/// time, so that members (which claim entries idle for `ack_wait`) take them
/// after `ack_wait - idle`. Without `retry` the delivery count is left as it
/// is (`JUSTID` does not raise it); with it, it is set.
async fn reidle(
    control: &Control,
    member: &Member,
    ids: &[&str],
    idle_ms: u128,
    retry: Option<u32>,
) -> std::result::Result<Frame, crate::control::Failure> {
    let idle = idle_ms.to_string();
    let retry = retry.map(|count| count.to_string());
    let mut args: Vec<&[u8]> = vec![
        b"XCLAIM",
        member.stream.as_bytes(),
        member.group.as_bytes(),
        member.name.as_bytes(),
        b"0",
    ];
    args.extend(ids.iter().map(|id| id.as_bytes()));
    args.extend([b"IDLE".as_slice(), idle.as_bytes()]);
    if let Some(retry) = &retry {
        args.extend([b"RETRYCOUNT".as_slice(), retry.as_bytes()]);
    }
    args.push(b"JUSTID");
    control.call(&args).await
}

/// Hands entries read ahead but never taken back to the group, so another
/// member claims them within about [`POLL`] instead of after `ack_wait`:
/// `XCLAIM ... IDLE <ack_wait> RETRYCOUNT <count - 1> JUSTID` makes each one
/// claimable at once, with the delivery count it had before this member read
/// it (no handler saw it). One command per distinct count; a failure (Redis
/// gone, the handle closed) leaves them to the ack deadline.
async fn release(control: &Control, member: &Member, held: Vec<(String, u32)>) {
    let mut counts: Vec<u32> = held.iter().map(|(_, count)| *count).collect();
    counts.sort_unstable();
    counts.dedup();
    for count in counts {
        let ids = held
            .iter()
            .filter(|(_, c)| *c == count)
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>();
        let result = reidle(
            control,
            member,
            &ids,
            member.ack_wait.as_millis().max(1),
            Some(count.saturating_sub(1)),
        )
        .await;
        if let Err(reason) = result {
            tracing::debug!(stream = %member.stream, group = %member.group, %reason, "redis: could not hand back entries read ahead; they come back after ack_wait");
        }
    }
}

/// What the member's task learns while it reads, for its reconnect loop.
struct Progress {
    /// Told once the first reads succeeded (or why they cannot), so
    /// `subscribe` returns only then.
    ready: Option<oneshot::Sender<std::result::Result<(), String>>>,
    /// Whether Redis answered a read on the current connection: only then
    /// is the member back, and the next loss a new outage.
    read: bool,
}

impl Progress {
    /// Redis answered a read: the member is (back) up.
    fn answered(&mut self, link: &mut SubscriptionLink) {
        if !self.read {
            self.read = true;
            link.resubscribed();
        }
    }

    /// The first reads went through: `subscribe` may return.
    fn ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }
}

// The task's inputs, each needed for as long as it runs.
#[allow(clippy::too_many_arguments)]
async fn run(
    target: Target,
    options: RedisOptions,
    control: Arc<Control>,
    member: Member,
    tx: mpsc::Sender<Item>,
    first: Conn,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<std::result::Result<(), String>>,
) {
    let mut first = Some(first);
    let mut link = SubscriptionLink::new(KIND, &member.pattern);
    let mut backoff = options.reconnect_backoff.attempts();
    let mut progress = Progress {
        ready: Some(ready),
        read: false,
    };
    let name = format!("{}-durable", options.client_name());
    loop {
        let opened = match first.take() {
            Some(conn) => Ok(conn),
            None => tokio::select! {
                opened = target.connect_durable(options.connect_timeout, &name) => opened,
                _ = tx.closed() => return,
                _ = ended(&mut shutdown) => return,
            },
        };
        match opened {
            Ok(conn) => {
                progress.read = false;
                let reason = tokio::select! {
                    end = pump(conn, &member, &control, &tx, &mut progress, &mut link) => match end {
                        End::Lost(reason) => reason,
                        End::Dropped => return,
                        End::Removed(reason) | End::Refused(reason) => {
                            // Permanent: the same reads on a new connection
                            // get the same answer, so the subscription ends
                            // (or never starts) with one error.
                            match progress.ready.take() {
                                Some(ready) => {
                                    let _ = ready.send(Err(reason));
                                }
                                None => {
                                    let _ = tx.send(Err(Error::Subscribe {
                                        broker: KIND,
                                        pattern: member.pattern.to_string(),
                                        reason,
                                        source: None,
                                    })).await;
                                }
                            }
                            return;
                        }
                    },
                    _ = ended(&mut shutdown) => return,
                };
                // A connection lost during the first reads still makes a
                // subscription: it reports the loss and reconnects.
                progress.ready();
                // One error item per outage: a connection that broke again
                // before Redis answered a read belongs to the same outage.
                if link.lost(&reason) {
                    let report = Err(Error::Disconnected {
                        broker: KIND,
                        reason: format!(
                            "the durable subscription to '{}' lost its connection ({reason}); reconnecting. Nothing is lost: its messages wait in the stream",
                            member.pattern
                        ),
                    });
                    tokio::select! {
                        sent = tx.send(report) => if sent.is_err() { return },
                        _ = ended(&mut shutdown) => return,
                    }
                }
                // Only a connection Redis answered reads on resets the
                // backoff: one that fails right after each reconnect (an
                // error reply that is not a refusal) waits longer each time
                // instead of every 100 ms.
                if progress.read {
                    backoff.succeeded();
                }
                let delay = backoff.failed();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                    _ = ended(&mut shutdown) => return,
                }
            }
            Err(e) => {
                let delay = backoff.failed();
                link.retry_failed(&e, delay, !e.is_temporary());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                    _ = ended(&mut shutdown) => return,
                }
            }
        }
    }
}

/// One entry read from the stream: its id, fields and delivery count.
struct Entry {
    id: String,
    fields: Vec<Frame>,
    count: u32,
}

/// Why a member's connection stopped being read.
enum End {
    /// The subscription was dropped or closed.
    Dropped,
    /// The connection broke, or Redis answered an error: why.
    Lost(String),
    /// The consumer group or stream is gone (`remove_durable`): why.
    Removed(String),
    /// Redis refuses the reads themselves (the user's ACL, an argument it
    /// does not take): why. Not a lost connection.
    Refused(String),
}

/// Delivers entries until the connection breaks or the subscription is dropped.
async fn pump(
    conn: Conn,
    member: &Member,
    control: &Arc<Control>,
    tx: &mpsc::Sender<Item>,
    progress: &mut Progress,
    link: &mut SubscriptionLink,
) -> End {
    match deliver_all(conn, member, control, tx, progress, link).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

async fn deliver_all(
    mut conn: Conn,
    member: &Member,
    control: &Arc<Control>,
    tx: &mpsc::Sender<Item>,
    progress: &mut Progress,
    link: &mut SubscriptionLink,
) -> std::result::Result<std::convert::Infallible, End> {
    let ack_wait_ms = member.ack_wait.as_millis().max(1).to_string();
    let max_deliver = member.max_deliver.to_string();
    let poll_ms = POLL.as_millis().to_string();
    // First this member's own pending entries, then claims and new entries.
    let mut own = Some("0-0".to_string());
    let mut cursor = "0-0".to_string();
    // When the last claim scan started: entries become claimable only after
    // their ack deadline (or a nack), so scanning once per `POLL` finds them
    // as soon as every read did, for a round trip per `POLL` instead of one
    // per read.
    let mut claimed_at: Option<tokio::time::Instant> = None;
    // Reads wait for room for half the read-ahead: with a consumer slower
    // than Redis (one that acks each delivery), waiting for one free slot
    // made every read fetch one entry, a round trip (and a claim) per message.
    let room = (tx.max_capacity() / 2).max(1);
    loop {
        let mut permits = tx.reserve_many(room).await.map_err(|_| End::Dropped)?;
        let batch = (tx.capacity() + room).min(PREFETCH).to_string();
        let mut entries = Vec::new();
        if let Some(from) = own.take() {
            let (next, read) = claim(
                &mut conn,
                member,
                &[&ack_wait_ms, &batch, &max_deliver, &from, "1"],
            )
            .await?;
            progress.answered(link);
            if !read.is_empty() {
                own = Some(next);
            }
            entries = read;
        } else {
            let scanning = cursor != "0-0";
            if scanning || claimed_at.is_none_or(|at| at.elapsed() >= POLL) {
                if !scanning {
                    claimed_at = Some(tokio::time::Instant::now());
                }
                let (next, claimed) = claim(
                    &mut conn,
                    member,
                    &[&ack_wait_ms, &batch, &max_deliver, &cursor, "0"],
                )
                .await?;
                progress.answered(link);
                cursor = next;
                entries.extend(claimed);
            }
            if entries.is_empty() {
                // The claims went through; a read that blocks for `POLL`
                // is no reason to keep `subscribe` waiting.
                progress.ready();
                let args: [&[u8]; 11] = [
                    b"XREADGROUP",
                    b"GROUP",
                    member.group.as_bytes(),
                    member.name.as_bytes(),
                    b"COUNT",
                    batch.as_bytes(),
                    b"BLOCK",
                    poll_ms.as_bytes(),
                    b"STREAMS",
                    member.stream.as_bytes(),
                    b">",
                ];
                let reply = answered(&mut conn, member, &args).await;
                if matches!(reply, Ok(Frame::Array(_))) {
                    progress.answered(link);
                }
                match reply {
                    Ok(Frame::Array(Some(streams))) => {
                        for stream in streams {
                            let Frame::Array(Some(parts)) = stream else {
                                continue;
                            };
                            let Some(Frame::Array(Some(items))) = parts.into_iter().nth(1) else {
                                continue;
                            };
                            entries.extend(items.into_iter().filter_map(|item| entry(item, 1)));
                        }
                    }
                    Ok(Frame::Array(None)) => {}
                    Ok(Frame::Error(e)) => return Err(gone(member, &e)),
                    Ok(other) => {
                        return Err(End::Lost(format!("unexpected reply {}", other.describe())))
                    }
                    Err(e) => return Err(End::Lost(e.to_string())),
                }
            }
        }
        if !entries.is_empty() {
            // Sending may wait for a reader, which `subscribe` has not
            // returned to yet.
            progress.ready();
        }
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            let (id, count) = (entry.id.clone(), entry.count);
            let item = deliver(entry, member, control).map(|delivery| ReadAhead {
                delivery,
                id,
                count,
            });
            match permits.next() {
                Some(permit) => {
                    permit.send(item);
                }
                None => {
                    if let Err(mpsc::error::SendError(item)) = tx.send(item).await {
                        // The subscription is gone: hand back what it will
                        // never take.
                        let held = item
                            .ok()
                            .map(|h| (h.id, h.count))
                            .into_iter()
                            .chain(entries.map(|e| (e.id, e.count)))
                            .collect();
                        release(control, member, held).await;
                        return Err(End::Dropped);
                    }
                }
            }
        }
    }
}

/// Why reading failed when Redis answered an error: the group or stream
/// was removed (`remove_durable`; the subscription ends), Redis refuses the
/// reads themselves (see [`refusal`]; the subscription ends), or something
/// else (the member reconnects).
/// On a cluster a stream that vanished under a blocked read may have been
/// migrated to another node (resharding): the member reconnects, and its
/// next read says which (`NOGROUP` when removed, `MOVED` or `ASK` when moved).
fn gone(member: &Member, error: &[u8]) -> End {
    let text = String::from_utf8_lossy(error);
    let vanished = text.contains("no longer exists");
    if vanished && member.cluster {
        return End::Lost(format!("Redis answered {text}"));
    }
    if text.contains("NOGROUP") || vanished {
        End::Removed(format!(
            "the durable consumer '{}' no longer exists in Redis (removed with remove_durable, or Redis restarted without persistence: see durable_storage); the subscription ends: {text}",
            member.group
        ))
    } else if refusal(&text) {
        End::Refused(format!(
            "Redis refuses the reads of the durable consumer '{}' on stream {} (it answered {text}); not a lost connection: trying again gets the same answer{}",
            member.group,
            member.stream,
            if text.starts_with("NOPERM") || text.contains("can't") {
                format!("; {ACL_NEEDS}")
            } else if text.contains("min-idle-time") {
                format!("; ack_wait {:?} is longer than Redis takes", member.ack_wait)
            } else {
                String::new()
            }
        ))
    } else {
        End::Lost(format!("Redis answered {text}"))
    }
}

/// What an ACL user needs for durable subscriptions, as errors say it.
const ACL_NEEDS: &str = "an ACL user of durable subscriptions needs the commands FCALL, XREADGROUP, XAUTOCLAIM, XPENDING, XACK and XCLAIM, the keys `~switchboard:durable*` and the channels `&switchboard:durable:*`";

/// Whether an error reply refuses the command itself rather than telling of
/// a passing state: the user's ACL (`NOPERM`, or a function calling a
/// command the ACL denies), or arguments Redis does not take (an `ack_wait`
/// beyond `XAUTOCLAIM`'s range). A new connection gets the same answer, so
/// reconnecting would loop for ever. Passing states (`LOADING`, `BUSY`,
/// `MASTERDOWN`, `TRYAGAIN`, `READONLY` in a failover, `MOVED`/`ASK`) are
/// not refusals.
fn refusal(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("noperm") || lower.starts_with("wrongtype") {
        return true;
    }
    lower.starts_with("err")
        && [
            "can't run this command",
            "can't access",
            "no permissions",
            "invalid",
            "wrong number of arguments",
            "syntax error",
            "unknown command",
            "out of range",
            "not an integer",
        ]
        .iter()
        .any(|mark| lower.contains(mark))
}

/// The commands of the claim function this user may not run. Redis says
/// only that a function's command was refused, not which, so each is sent
/// with an argument it rejects after the ACL check: a `NOPERM` answer
/// names it, and nothing is read, claimed or acknowledged.
async fn denied_commands(conn: &mut Conn, member: &Member) -> Vec<&'static str> {
    let (stream, group, name) = (
        member.stream.as_bytes(),
        member.group.as_bytes(),
        member.name.as_bytes(),
    );
    let probes: [(&'static str, Vec<&[u8]>); 5] = [
        // An unbalanced list of streams.
        (
            "XREADGROUP",
            vec![
                b"XREADGROUP",
                b"GROUP",
                group,
                name,
                b"COUNT",
                b"1",
                b"STREAMS",
                stream,
            ],
        ),
        // COUNT must be above 0.
        (
            "XAUTOCLAIM",
            vec![
                b"XAUTOCLAIM",
                stream,
                group,
                name,
                b"0",
                b"0-0",
                b"COUNT",
                b"0",
            ],
        ),
        // Not an id.
        (
            "XPENDING",
            vec![b"XPENDING", stream, group, b"-", b"+", b"x"],
        ),
        ("XACK", vec![b"XACK", stream, group, b"x"]),
        ("XCLAIM", vec![b"XCLAIM", stream, group, name, b"x", b"0-1"]),
    ];
    let mut denied = Vec::new();
    for (command, args) in probes {
        match answered(conn, member, &args).await {
            Ok(Frame::Error(e)) if e.starts_with(b"NOPERM") => denied.push(command),
            Ok(_) => {}
            // The connection broke: what is known so far.
            Err(_) => break,
        }
    }
    denied
}

/// Runs the claim function (`args`: min idle, count, max deliver, cursor,
/// own); returns the next cursor and the entries.
async fn claim(
    conn: &mut Conn,
    member: &Member,
    args: &[&str; 5],
) -> std::result::Result<(String, Vec<Entry>), End> {
    let mut reply = claim_call(conn, member, args).await;
    if let Ok(Frame::Error(e)) = &reply {
        if e.starts_with(b"ERR Function not found") {
            // FUNCTION FLUSH, a restart without persistence, or a new
            // owner of the durable keys' slot on a cluster: load it again,
            // on this connection's node.
            crate::control::load(conn).await.map_err(End::Lost)?;
            reply = claim_call(conn, member, args).await;
        }
    }
    match reply {
        Ok(Frame::Array(Some(parts))) => {
            let mut parts = parts.into_iter();
            let next = parts
                .next()
                .and_then(|f| f.bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
                .unwrap_or_else(|| "0-0".into());
            let entries = match parts.next() {
                Some(Frame::Array(Some(items))) => items
                    .into_iter()
                    .filter_map(|item| {
                        let Frame::Array(Some(mut parts)) = item else {
                            return None;
                        };
                        let count = parts.get(2).and_then(number).unwrap_or(1);
                        parts.truncate(2);
                        entry(
                            Frame::Array(Some(parts)),
                            count.try_into().unwrap_or(u32::MAX),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok((next, entries))
        }
        Ok(Frame::Error(e)) => match gone(member, &e) {
            End::Refused(reason) if e.windows(14).any(|w| w == b"can't run this") => {
                let denied = denied_commands(conn, member).await;
                Err(End::Refused(match denied.as_slice() {
                    [] => reason,
                    denied => format!(
                        "this user may not run {}, which durable subscriptions need: {reason}",
                        denied.join(", ")
                    ),
                }))
            }
            end => Err(end),
        },
        Ok(other) => Err(End::Lost(format!(
            "unexpected reply to the claim function: {}",
            other.describe()
        ))),
        Err(e) => Err(End::Lost(e.to_string())),
    }
}

/// Calls the claim function once.
async fn claim_call(conn: &mut Conn, member: &Member, args: &[&str; 5]) -> std::io::Result<Frame> {
    let command: [&[u8]; 11] = [
        b"FCALL",
        b"switchboard_v1_claim",
        b"1",
        member.stream.as_bytes(),
        member.group.as_bytes(),
        member.name.as_bytes(),
        args[0].as_bytes(),
        args[1].as_bytes(),
        args[2].as_bytes(),
        args[3].as_bytes(),
        args[4].as_bytes(),
    ];
    answered(conn, member, &command).await
}

/// Sends a command on the member's connection and reads the reply, giving
/// the connection up when none comes within `answer_within` (a link that
/// died without a reset).
async fn answered(conn: &mut Conn, member: &Member, args: &[&[u8]]) -> std::io::Result<Frame> {
    match tokio::time::timeout(member.answer_within, conn.command(args)).await {
        Ok(reply) => reply,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from Redis within {:?}", member.answer_within),
        )),
    }
}

/// An `[id, [field, value, ...]]` entry.
fn entry(item: Frame, count: u32) -> Option<Entry> {
    let Frame::Array(Some(parts)) = item else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()?
        .bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())?;
    let fields = match parts.next() {
        Some(Frame::Array(Some(fields))) => fields,
        _ => Vec::new(),
    };
    Some(Entry { id, fields, count })
}

/// The delivery for an entry; an entry switchboard did not write (no
/// subject field, or not a subject) is an error item naming it.
fn deliver(entry: Entry, member: &Member, control: &Arc<Control>) -> Result<Delivery> {
    let mut subject = None;
    let mut body = None;
    for pair in entry.fields.chunks(2) {
        if let [name, value] = pair {
            match name.bytes().map(|b| &b[..]) {
                Some(b"s") => subject = value.bytes().cloned(),
                Some(b"b") => body = value.bytes().cloned(),
                _ => {}
            }
        }
    }
    let acker = StreamAck {
        control: control.clone(),
        member: member.clone(),
        id: entry.id.clone(),
        subject: subject
            .as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default(),
    };
    let subject = match subject.as_deref().map(std::str::from_utf8) {
        Some(Ok(text)) => Subject::new(text),
        _ => Err(Error::InvalidSubject {
            subject: String::new(),
            reason: "no subject".into(),
        }),
    };
    let subject = match subject {
        Ok(subject) => subject,
        Err(error) => {
            // Not redelivered forever: acknowledged (it stays in the stream).
            let (control, owner, id) = (control.clone(), member.clone(), entry.id.clone());
            tokio::spawn(async move {
                let _ = control
                    .call(&[
                        b"XACK",
                        owner.stream.as_bytes(),
                        owner.group.as_bytes(),
                        id.as_bytes(),
                    ])
                    .await;
            });
            return Err(Error::InvalidSubject {
                subject: acker.subject,
                reason: format!(
                    "entry {} of stream {} (durable consumer '{}') was not written by switchboard and cannot be delivered ({error}); it was acknowledged and skipped",
                    entry.id, member.stream, member.group
                ),
            });
        }
    };
    let (headers, payload) = wire::decode(body.unwrap_or_default());
    let message = Message::from_parts(subject, payload, headers);
    Ok(
        Delivery::with_acker(message, Box::new(acker), entry.count > 1)
            .with_delivery_count(entry.count),
    )
}

/// Acknowledges one stream entry through the control connection.
#[derive(Debug)]
struct StreamAck {
    control: Arc<Control>,
    member: Member,
    id: String,
    subject: String,
}

impl StreamAck {
    async fn call(&self, action: &'static str, args: &[&[u8]]) -> Result<()> {
        self.control
            .call(args)
            .await
            .map(|_| ())
            .map_err(|reason| Error::Ack {
                broker: KIND,
                action,
                subject: self.subject.clone(),
                reason,
            })
    }

    /// Makes the entry claimable after `delay` (at most its ack deadline):
    /// its idle time is set to `ack_wait - delay`, and members claim entries
    /// idle for `ack_wait`. It stays pending in Redis meanwhile, so it comes
    /// back even if this process dies.
    async fn requeue(&self, delay: Duration) -> Result<()> {
        if delay > self.member.ack_wait {
            tracing::warn!(?delay, ack_wait = ?self.member.ack_wait, subject = %self.subject, "redis: a nack's delay is longer than the ack deadline; the message comes back after the ack deadline");
        }
        let idle_ms = self.member.ack_wait.saturating_sub(delay).as_millis();
        reidle(
            &self.control,
            &self.member,
            &[self.id.as_str()],
            idle_ms,
            None,
        )
        .await
        .map(|_| ())
        .map_err(|reason| Error::Ack {
            broker: KIND,
            action: "nack",
            subject: self.subject.clone(),
            reason,
        })
    }
}

#[async_trait]
impl Acknowledge for StreamAck {
    async fn ack(self: Box<Self>) -> Result<()> {
        let m = &self.member;
        self.call(
            "ack",
            &[
                b"XACK",
                m.stream.as_bytes(),
                m.group.as_bytes(),
                self.id.as_bytes(),
            ],
        )
        .await
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<()> {
        if requeue {
            return self.requeue(Duration::ZERO).await;
        }
        // Rejected: acknowledged, so it is not delivered again (it stays in
        // the stream until trimmed).
        let m = &self.member;
        self.call(
            "reject",
            &[
                b"XACK",
                m.stream.as_bytes(),
                m.group.as_bytes(),
                self.id.as_bytes(),
            ],
        )
        .await
    }

    fn supports_delay(&self) -> bool {
        true
    }

    async fn nack_with_delay(self: Box<Self>, delay: Duration) -> Result<()> {
        self.requeue(delay).await
    }
}
