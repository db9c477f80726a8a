//! The publishing connection: `publish` appends an encoded PUBLISH to a shared
//! buffer and returns; one writer sends whatever has accumulated in a single
//! write (so concurrent or back-to-back publishes pipeline), and one reader
//! counts the replies. `flush` waits until the reply count reaches the number
//! of publishes made before it.
//!
//! With a keepalive, the reader gives the connection up when nothing came
//! back for that long while replies are owed, and the writer sends a `PING`
//! when the connection has been idle for a third of it, so an idle link that
//! died is noticed too (its `+PONG` is not counted as a publish's reply).
//!
//! On a cluster whose durable master has replicas, `flush` also queues a
//! `WAIT 1` behind the durable publishes it covers (see the crate docs,
//! "Redis Cluster"); the reader knows its reply by its position.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use switchboard_core::{Error, Message, Pattern, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch, Notify};

use crate::connection::{Conn, ReadHalf};
use crate::options::{RedisOptions, Target};
use crate::{resp, wire, KIND};

/// Bytes of encoded commands that may wait for the writer before `publish` waits.
const HIGH_WATER: usize = 4 * 1024 * 1024;

/// [`Shared::ping_at`] when no PING is in flight.
const NO_PING: u64 = u64::MAX;

/// A range of publishes (1-based sequence numbers, inclusive) that failed.
#[derive(Debug)]
struct Failure {
    first: u64,
    last: u64,
    reason: String,
    /// An ACL refused them (`NOPERM`): not delivered, and not temporary.
    refused: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Encoded commands the writer has not taken yet.
    buf: Vec<u8>,
    /// How many publishes were accepted (the last sequence number).
    queued: u64,
    /// Publishes that failed and no flush has reported yet.
    failures: Vec<Failure>,
    /// No more publishes (`close` was called).
    closed: bool,
    /// The writer may stop once it has written everything.
    shutdown: bool,
    /// Why the connection is down, while reconnecting fails.
    down: Option<String>,
    /// Which subjects are kept for durable consumers, as far as this
    /// publisher knows (see [`crate::routing`]).
    routing: Routing,
    /// The registry version `routing` reflects (0: none yet).
    version: u64,
    /// The first durable write (sequence number) no `WAIT` covers yet, on a
    /// cluster whose durable master has replicas (see [`Shared::flush`]).
    unreplicated: Option<u64>,
    /// The `WAIT`s sent and not yet answered, oldest first.
    waits: std::collections::VecDeque<Wait>,
}

/// A `WAIT` in the pipeline: it covers the durable writes from `from` on,
/// and its reply is the one for sequence number `at`.
#[derive(Debug)]
struct Wait {
    from: u64,
    at: u64,
}

/// How a publish reaches Redis: a plain PUBLISH, or the durable mode's
/// function (which stores the message for every durable consumer whose
/// pattern matches, then PUBLISHes it).
#[derive(Debug, Default)]
pub(crate) enum Routing {
    /// The durable mode is unavailable (no functions on this server): every
    /// publish is a plain PUBLISH.
    #[default]
    Plain,
    /// The registry of durable patterns is not known now (the routing link
    /// is down or has not loaded it yet): every publish goes through the
    /// function, which reads the registry itself.
    Unknown,
    /// The durable patterns as the routing link last reported them: a
    /// subject matching none is a plain PUBLISH; one matching exactly one
    /// is stored by the client itself (`XADD` to that pattern's stream, then
    /// the PUBLISH, no function: a function call costs Redis about as much
    /// as the `XADD`); one matching several goes through the function.
    Known(Vec<Route>),
}

/// A durable pattern and the key of its stream, encoded once.
#[derive(Debug)]
pub(crate) struct Route {
    pattern: Pattern,
    stream: Vec<u8>,
}

/// How one publish goes out (see [`Routing`]).
enum Path<'a> {
    Plain,
    Function,
    Stream(&'a [u8]),
}

impl Routing {
    fn path(&self, subject: &str) -> Path<'_> {
        match self {
            Routing::Plain => Path::Plain,
            Routing::Unknown => Path::Function,
            Routing::Known(routes) => {
                let mut matching = routes.iter().filter(|r| r.pattern.matches(subject));
                match (matching.next(), matching.next()) {
                    (None, _) => Path::Plain,
                    (Some(route), None) => Path::Stream(&route.stream),
                    (Some(_), Some(_)) => Path::Function,
                }
            }
        }
    }
}

/// The names the durable publish path needs, encoded once.
#[derive(Debug)]
pub(crate) struct DurableKeys {
    /// The registry hash's key.
    pub(crate) registry: Vec<u8>,
    /// The key names (for the streams' keys).
    pub(crate) keys: crate::routing::Keys,
    /// The stream length cap, as text.
    pub(crate) maxlen: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: there is something to write (or to shut down).
    wake: Notify,
    /// Wakes publishers waiting for room in the buffer.
    space: Notify,
    /// How many publishes are resolved (answered by the server or failed), in order.
    answered: watch::Sender<u64>,
    max_payload: usize,
    /// How long `flush` waits for the replies.
    flush_timeout: Duration,
    /// How long a connection owing replies may stay silent; `None`: no limit.
    keepalive: Option<Duration>,
    /// How many publishes were written to a connection (the writer's count).
    written: AtomicU64,
    /// The number of publishes written before the PING in flight, whose
    /// reply is the `+PONG` at that position; [`NO_PING`] when none is.
    ping_at: AtomicU64,
    /// The publishing connection's state, for `Broker::status`.
    pub(crate) link: switchboard_core::Link,
    /// The durable publish path's key and stream cap.
    durable: DurableKeys,
    /// Woken when Redis answered a durable publish with `Function not
    /// found` (the library was flushed): the routing link loads it again.
    pub(crate) function_missing: Notify,
    /// Woken when Redis answered a durable publish with a cluster redirect
    /// (`MOVED`, ...): the routing link moves to the new owner too.
    pub(crate) owner_moved: Notify,
    /// How many replicas the master of the durable keys has (the target's
    /// count, updated on each connection to it); 0 on one server.
    replicas: Arc<std::sync::atomic::AtomicUsize>,
    /// The sequence number of the reply to the oldest `WAIT` in flight;
    /// [`NO_PING`] when none is.
    wait_at: AtomicU64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Routes every publish through the durable function until the registry
    /// is known again (the routing link is down, or reconnecting).
    pub(crate) fn routing_unknown(&self) {
        let mut state = lock(&self.state);
        if !matches!(state.routing, Routing::Plain) {
            state.routing = Routing::Unknown;
        }
    }

    /// Turns on the durable mode: until the registry is known, every publish
    /// goes through the function.
    pub(crate) fn enable_durable(&self) {
        lock(&self.state).routing = Routing::Unknown;
    }

    /// Takes the registry's durable `patterns` at `version`, if that is newer
    /// than what this publisher has, or if `reset` (the routing link just
    /// (re)loaded the registry, so whatever it had may be stale). Returns
    /// whether it was taken. Publishes that start after this returns use it.
    pub(crate) fn set_routing(&self, version: u64, patterns: Vec<Pattern>, reset: bool) -> bool {
        let mut state = lock(&self.state);
        if matches!(state.routing, Routing::Plain) {
            return false;
        }
        let take = if reset {
            version >= state.version
        } else {
            version > state.version && matches!(state.routing, Routing::Known(_))
        };
        if take {
            state.version = version;
            state.routing = Routing::Known(
                patterns
                    .into_iter()
                    .map(|pattern| Route {
                        stream: self.durable.keys.stream(&pattern).into_bytes(),
                        pattern,
                    })
                    .collect(),
            );
        }
        take
    }

    pub(crate) async fn publish(&self, message: &Message) -> Result<()> {
        let subject = message.subject().as_str().as_bytes();
        let (payload, headers) = (&message.payload()[..], message.headers());
        if headers.contains(crate::request::REPLY_TO) {
            // Delivered, it would turn the message into a request answered
            // to whatever it names, and vanish from the headers.
            return Err(Error::InvalidHeader {
                name: crate::request::REPLY_TO.to_string(),
                reason: "the Redis adapter carries a request's inbox in this envelope header; rename the header, or use `request` to ask".into(),
            });
        }
        let body_len = wire::encoded_len(headers, payload);
        if body_len > self.max_payload {
            return Err(Error::PayloadTooLarge {
                broker: KIND,
                subject: message.subject().to_string(),
                size: body_len,
                max: self.max_payload,
            });
        }
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut guard = lock(&self.state);
                let state = &mut *guard;
                if state.closed {
                    return Err(Error::Closed { broker: KIND });
                }
                if let Some(reason) = &state.down {
                    return Err(Error::Publish {
                        broker: KIND,
                        subject: message.subject().to_string(),
                        reason: format!("not connected ({reason}); reconnecting"),
                        source: None,
                    });
                }
                if state.buf.len() < HIGH_WATER {
                    let was_empty = state.buf.is_empty();
                    let path = state.routing.path(message.subject().as_str());
                    if !matches!(path, Path::Plain) && state.unreplicated.is_none() {
                        state.unreplicated = Some(state.queued + 1);
                    }
                    match path {
                        Path::Plain => {
                            resp::encode_publish(&mut state.buf, subject, body_len, |out| {
                                wire::encode_into(headers, payload, out)
                            })
                        }
                        Path::Stream(stream) => resp::encode_stored_publish(
                            &mut state.buf,
                            stream,
                            subject,
                            &self.durable.maxlen,
                            body_len,
                            |out| wire::encode_into(headers, payload, out),
                        ),
                        Path::Function => resp::encode_fcall_publish(
                            &mut state.buf,
                            crate::routing::PUBLISH_FUNCTION,
                            &self.durable.registry,
                            subject,
                            &self.durable.maxlen,
                            body_len,
                            |out| wire::encode_into(headers, payload, out),
                        ),
                    }
                    state.queued += 1;
                    drop(guard);
                    if was_empty {
                        self.wake.notify_one();
                    }
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Waits until every publish accepted so far is resolved; reports failures.
    ///
    /// Gives up with [`Error::Timeout`] after the flush timeout. Nothing is
    /// forgotten then: the replies are still counted as they come, and the
    /// failures stay until a later flush (whose target covers them) reports them.
    pub(crate) async fn flush(&self, allow_closed: bool) -> Result<()> {
        let target = {
            let mut state = lock(&self.state);
            if state.closed && !allow_closed {
                return Err(Error::Closed { broker: KIND });
            }
            self.wait_for_replica(&mut state);
            state.queued
        };
        let mut answered = self.answered.subscribe();
        match tokio::time::timeout(self.flush_timeout, answered.wait_for(|&n| n >= target)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                return Err(Error::Flush {
                    broker: KIND,
                    reason: "the connection task ended".into(),
                    source: None,
                })
            }
            Err(_) => {
                tracing::warn!(
                    after = ?self.flush_timeout,
                    outstanding = target.saturating_sub(*self.answered.borrow()),
                    "redis: flush timed out waiting for replies"
                );
                return Err(Error::Timeout {
                    broker: KIND,
                    operation: "flush".into(),
                    after: self.flush_timeout,
                });
            }
        }
        let mut state = lock(&self.state);
        let (failed, kept): (Vec<Failure>, Vec<Failure>) = std::mem::take(&mut state.failures)
            .into_iter()
            .partition(|f| f.first <= target);
        state.failures = kept;
        drop(state);
        match failed.first() {
            None => Ok(()),
            Some(first) => {
                let count: u64 = failed.iter().map(|f| f.last - f.first + 1).sum();
                if failed.iter().all(|f| f.refused) {
                    return Err(Error::Refused {
                        broker: KIND,
                        count,
                        reason: format!("{}: this user may not publish there", first.reason),
                    });
                }
                Err(Error::Flush {
                    broker: KIND,
                    reason: format!(
                        "{count} message(s) published before the flush failed: {}",
                        first.reason
                    ),
                    source: None,
                })
            }
        }
    }

    /// On a cluster whose durable master has replicas, queues a `WAIT 1`
    /// behind the durable writes not covered yet, so that `flush` returns
    /// once a replica has them too (Redis replicates asynchronously: what
    /// only the master had is lost if it fails over), and fails saying so
    /// if none confirms within [`wait_timeout`].
    fn wait_for_replica(&self, state: &mut State) {
        let Some(from) = state.unreplicated else {
            return;
        };
        if self.replicas.load(Ordering::Relaxed) == 0 || state.down.is_some() {
            return;
        }
        state.unreplicated = None;
        let was_empty = state.buf.is_empty();
        let millis = wait_timeout(self.flush_timeout).as_millis().to_string();
        resp::encode_command(&mut state.buf, &[b"WAIT", b"1", millis.as_bytes()]);
        state.queued += 1;
        if state.waits.is_empty() {
            self.wait_at.store(state.queued, Ordering::Release);
        }
        state.waits.push_back(Wait {
            from,
            at: state.queued,
        });
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The reader got the reply to the oldest `WAIT` (sequence number `at`).
    fn replicated(&self, at: u64, reply: &resp::Frame) {
        let mut state = lock(&self.state);
        let wait = state.waits.pop_front();
        let next = state.waits.front().map_or(NO_PING, |w| w.at);
        self.wait_at.store(next, Ordering::Release);
        let Some(wait) = wait.filter(|w| w.at == at) else {
            return;
        };
        let reason = match reply {
            resp::Frame::Integer(n) if *n >= 1 => return,
            resp::Frame::Integer(_) => format!(
                "stored by the master of the durable keys, but no replica confirmed them within {:?} (WAIT); a failover now would lose them",
                wait_timeout(self.flush_timeout)
            ),
            other => format!("Redis answered WAIT with {}", other.describe()),
        };
        // The durable writes before it (and the publishes between them).
        self.fail(&mut state, wait.from, wait.at - 1, reason);
    }

    /// Forgets the `WAIT`s whose replies will not come (the connection
    /// broke; everything up to `written` is resolved).
    fn forget_waits(&self, state: &mut State, written: u64) {
        while state.waits.front().is_some_and(|w| w.at <= written) {
            state.waits.pop_front();
        }
        let next = state.waits.front().map_or(NO_PING, |w| w.at);
        self.wait_at.store(next, Ordering::Release);
    }

    /// Stops accepting publishes.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// Lets the writer stop once its buffer is written.
    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.wake.notify_one();
    }

    fn fail(&self, state: &mut State, first: u64, last: u64, reason: String) {
        self.record(state, first, last, reason, false);
    }

    /// Records publishes `first..=last` as failed; `refused` when an ACL
    /// refused them.
    fn record(&self, state: &mut State, first: u64, last: u64, reason: String, refused: bool) {
        if first <= last {
            tracing::warn!(count = last - first + 1, %reason, "redis: publishes failed");
            state.failures.push(Failure {
                first,
                last,
                reason,
                refused,
            });
        }
    }
}

/// How long a flush's `WAIT` waits for a replica: a second, or half the
/// flush timeout if that is shorter.
fn wait_timeout(flush_timeout: Duration) -> Duration {
    (flush_timeout / 2)
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(1))
}

/// Starts the publishing side on an open connection; returns its shared state
/// and the task that drives it (ends after [`Shared::shutdown`]).
pub(crate) fn start(
    conn: Conn,
    target: Target,
    options: RedisOptions,
    max_payload: usize,
) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        space: Notify::new(),
        answered: watch::Sender::new(0),
        max_payload,
        flush_timeout: options.flush_timeout,
        keepalive: options.keepalive,
        written: AtomicU64::new(0),
        ping_at: AtomicU64::new(NO_PING),
        link: switchboard_core::Link::new(KIND),
        function_missing: Notify::new(),
        owner_moved: Notify::new(),
        replicas: target.owner_replicas.clone(),
        wait_at: AtomicU64::new(NO_PING),
        durable: DurableKeys {
            registry: crate::routing::Keys::of(&target)
                .registry()
                .as_bytes()
                .to_vec(),
            keys: crate::routing::Keys::of(&target),
            maxlen: options.stream_maxlen.to_string().into_bytes(),
        },
    });
    let task = tokio::spawn(run(shared.clone(), conn, target, options));
    (shared, task)
}

async fn run(shared: Arc<Shared>, conn: Conn, target: Target, options: RedisOptions) {
    // Every publish up to `written` was written to a connection (and is
    // answered, failed, or in flight on the current one).
    let mut written: u64 = 0;
    let mut conn = Some(conn);
    let mut backoff = options.reconnect_backoff.attempts();
    let client_name = options.client_name();
    loop {
        let current = match conn.take() {
            Some(c) => c,
            None => {
                if lock(&shared.state).shutdown {
                    return;
                }
                match target
                    .connect_durable(options.connect_timeout, &client_name)
                    .await
                {
                    Ok(c) => {
                        shared.link.restored();
                        lock(&shared.state).down = None;
                        backoff.succeeded();
                        c
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        shared.link.attempt_failed(&reason, !e.is_temporary());
                        {
                            let mut state = lock(&shared.state);
                            let queued = state.queued;
                            state.buf.clear();
                            shared.fail(
                                &mut state,
                                written + 1,
                                queued,
                                format!("not sent, Redis is unreachable: {reason}"),
                            );
                            written = queued;
                            shared.written.store(written, Ordering::Release);
                            shared.forget_waits(&mut state, written);
                            state.down = Some(reason);
                        }
                        shared.answered.send_replace(written);
                        shared.space.notify_waiters();
                        if !wait_or_shutdown(&shared, backoff.failed()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let (reader, mut writer, rbuf) = current.split();
        shared.ping_at.store(NO_PING, Ordering::Release);
        let (dead_tx, mut dead_rx) = oneshot::channel();
        // Aborted on drop, so the reader never outlives this task (which
        // `close` may abort when Redis does not answer).
        let mut reader = AbortOnDrop(tokio::spawn(read_replies(
            shared.clone(),
            reader,
            rbuf,
            written,
            dead_tx,
        )));
        let mut chunk = Vec::new();
        // The idle PING's timer: one per connection, moved on only when it
        // fires (a timer set per wait was a timer-wheel insert and removal
        // per publish at moderate rates).
        let idle = shared.keepalive.map(|keepalive| keepalive / 3);
        let mut last_write = tokio::time::Instant::now();
        let timer = tokio::time::sleep_until(last_write + idle.unwrap_or_default());
        tokio::pin!(timer);
        let reason = loop {
            // Take what accumulated, or wait for more.
            let stop = {
                let mut state = lock(&shared.state);
                if state.buf.is_empty() {
                    state.shutdown
                } else {
                    std::mem::swap(&mut state.buf, &mut chunk);
                    written = state.queued;
                    shared.written.store(written, Ordering::Release);
                    false
                }
            };
            if chunk.is_empty() {
                if stop {
                    let _ = writer.shutdown().await;
                    return;
                }
                tokio::select! {
                    _ = shared.wake.notified() => continue,
                    reason = &mut dead_rx => break reason.unwrap_or_else(|_| "reader ended".into()),
                    _ = &mut timer, if idle.is_some() => {
                        let Some(idle) = idle else { continue };
                        let due = last_write + idle;
                        if tokio::time::Instant::now() < due {
                            // Written since it was set: not idle that long yet.
                            timer.as_mut().reset(due);
                            continue;
                        }
                        last_write = tokio::time::Instant::now();
                        timer.as_mut().reset(last_write + idle);
                        // Idle with nothing owed: a PING proves the link alive.
                        let owed = written > *shared.answered.borrow();
                        if owed || shared.ping_at.load(Ordering::Acquire) != NO_PING {
                            continue;
                        }
                        shared.ping_at.store(written, Ordering::Release);
                        let mut ping = Vec::new();
                        resp::encode_command(&mut ping, &[b"PING"]);
                        let sent = async {
                            writer.write_all(&ping).await?;
                            writer.flush().await
                        };
                        tokio::select! {
                            result = sent => if let Err(e) = result {
                                break format!("write failed: {e}");
                            },
                            reason = &mut dead_rx => break reason.unwrap_or_else(|_| "reader ended".into()),
                        }
                        continue;
                    }
                }
            }
            shared.space.notify_waiters();
            let sent = async {
                writer.write_all(&chunk).await?;
                writer.flush().await
            };
            tokio::select! {
                result = sent => {
                    if let Err(e) = result {
                        break format!("write failed: {e}");
                    }
                }
                reason = &mut dead_rx => break reason.unwrap_or_else(|_| "reader ended".into()),
            }
            if idle.is_some() {
                last_write = tokio::time::Instant::now();
            }
            chunk.clear();
            if chunk.capacity() > HIGH_WATER * 2 {
                chunk = Vec::new();
            }
        };
        reader.0.abort();
        let _ = (&mut reader.0).await;
        let answered = *shared.answered.borrow();
        {
            let mut state = lock(&shared.state);
            shared.fail(
                &mut state,
                answered + 1,
                written,
                format!("the connection broke before Redis answered ({reason}); they may or may not have been delivered"),
            );
            shared.forget_waits(&mut state, written);
        }
        shared.answered.send_replace(written);
        shared.link.lost(format_args!("publisher: {reason}"));
        if !wait_or_shutdown(&shared, Duration::ZERO).await {
            return;
        }
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps for `delay`; false if the publisher is shut down (now or meanwhile).
async fn wait_or_shutdown(shared: &Shared, delay: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        if lock(&shared.state).shutdown {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return !lock(&shared.state).shutdown,
            _ = shared.wake.notified() => {}
        }
    }
}

async fn read_replies(
    shared: Arc<Shared>,
    mut reader: ReadHalf,
    mut buf: BytesMut,
    mut answered: u64,
    dead: oneshot::Sender<String>,
) {
    // When bytes last came, or the connection last owed nothing.
    let mut heard = tokio::time::Instant::now();
    let check = shared.keepalive.map(|keepalive| keepalive / 3);
    // One timer, moved on only when it fires (see `run`): due a third of
    // the keepalive after bytes last came.
    let timer = tokio::time::sleep_until(heard + check.unwrap_or_default());
    tokio::pin!(timer);
    let reason = 'outer: loop {
        let before = answered;
        loop {
            // The next reply is a WAIT's (unless a PING's PONG comes first).
            if shared.ping_at.load(Ordering::Acquire) != answered
                && shared.wait_at.load(Ordering::Acquire) == answered + 1
            {
                match resp::parse(&mut buf) {
                    Ok(Some(frame)) => {
                        answered += 1;
                        shared.replicated(answered, &frame);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => break 'outer format!("unexpected reply: {}", e.0),
                }
            }
            let status = resp::parse_status(&mut buf);
            if matches!(status, Ok(Some(_))) && shared.ping_at.load(Ordering::Acquire) == answered {
                // The answer to the writer's PING, not to a publish.
                shared.ping_at.store(NO_PING, Ordering::Release);
                continue;
            }
            match status {
                Ok(Some(None)) => answered += 1,
                Ok(Some(Some(error))) => {
                    answered += 1;
                    if error.starts_with("ERR Function not found") {
                        shared.function_missing.notify_one();
                    }
                    {
                        let mut state = lock(&shared.state);
                        shared.record(
                            &mut state,
                            answered,
                            answered,
                            format!("Redis answered {error}"),
                            error.starts_with("NOPERM"),
                        );
                    }
                    if crate::cluster::is_redirect(error.as_bytes()) {
                        // The durable keys' slot moved (a failover,
                        // resharding): reconnect to its owner; the routing
                        // link follows.
                        shared.answered.send_replace(answered);
                        shared.owner_moved.notify_one();
                        break 'outer format!("Redis answered {error}; reconnecting to the node that owns the durable keys");
                    }
                }
                Ok(None) => break,
                Err(e) => break 'outer format!("unexpected reply: {}", e.0),
            }
        }
        if answered != before {
            shared.answered.send_replace(answered);
        }
        crate::connection::reserve(&mut buf);
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break "the server closed the connection".to_string(),
                Ok(_) => {
                    if check.is_some() {
                        heard = tokio::time::Instant::now();
                    }
                }
                Err(e) => break e.to_string(),
            },
            _ = &mut timer, if check.is_some() => {
                let Some(check) = check else { continue };
                let due = heard + check;
                if tokio::time::Instant::now() < due {
                    timer.as_mut().reset(due);
                    continue;
                }
                timer.as_mut().reset(tokio::time::Instant::now() + check);
                let owed = shared.written.load(Ordering::Acquire) > answered
                    || shared.ping_at.load(Ordering::Acquire) != NO_PING;
                match shared.keepalive {
                    Some(keepalive) if owed && heard.elapsed() >= keepalive => {
                        break format!(
                            "no answer from Redis for {keepalive:?} (keepalive)"
                        );
                    }
                    _ if !owed => heard = tokio::time::Instant::now(),
                    _ => {}
                }
            }
        }
    };
    let _ = dead.send(reason);
}
