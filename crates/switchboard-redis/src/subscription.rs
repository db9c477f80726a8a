//! Subscriptions: every PUBSUB subscription of a broker handle shares one
//! pub/sub connection (`<name>-sub`), owned by one task, the hub. It sends
//! SUBSCRIBE or PSUBSCRIBE once per distinct channel or glob (UNSUBSCRIBE
//! when the last subscription on it goes), and hands each message to the
//! subscriptions on its channel or glob, each checking it with
//! [`Pattern::matches`].
//!
//! Each subscription has a bounded queue ([`RedisOptions::capacity`]) that
//! allocates nothing until a message is waiting, so an idle subscription
//! costs a few hundred bytes. The hub never waits for a reader (that would
//! stall every other subscription of the handle): when a queue is full the
//! message is dropped and counted, and the stream yields one [`Error::Lost`]
//! item with the exact count where the messages went missing.
//!
//! While it reads, the hub also watches the link: after a third of the
//! keepalive time without a frame it sends `PING` (allowed on a subscribed
//! connection), and a whole keepalive time without a frame means the link is
//! dead. A lost connection gives every subscription one
//! [`Error::Disconnected`] item; the hub reconnects with the backoff and
//! subscribes every channel and glob again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::Stream;
use switchboard_core::{
    Delivery, Error, Message, Pattern, Result, Subject, Subscription, SubscriptionLink, Token,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::connection::Conn;
use crate::options::{RedisOptions, Target};
use crate::request::{RedisReply, REPLY_TO};
use crate::resp::{self, Frame};
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (a queue).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The broker handle's end of the shared pub/sub connection: it starts the
/// hub task on the first subscription (a handle that only publishes opens no
/// pub/sub connection) and hands it commands.
pub(crate) struct Hub {
    target: Target,
    options: RedisOptions,
    shutdown: watch::Receiver<bool>,
    replies: Arc<publisher::Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A hub whose connection is opened by the first subscription.
    pub(crate) fn new(
        target: Target,
        options: RedisOptions,
        shutdown: watch::Receiver<bool>,
        replies: Arc<publisher::Shared>,
    ) -> Self {
        Hub {
            target,
            options,
            shutdown,
            replies,
            commands: Mutex::new(None),
            next_id: AtomicU64::new(0),
        }
    }

    /// The hub task's command queue, starting the task if it is not running.
    fn commands(&self) -> mpsc::UnboundedSender<Command> {
        let mut commands = lock(&self.commands);
        if let Some(tx) = commands.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            target: self.target.clone(),
            options: self.options.clone(),
            replies: self.replies.clone(),
            commands: rx,
            registry: Registry::default(),
            pending: VecDeque::new(),
            waiting: Vec::new(),
            resubscribing: 0,
            last_subject: None,
            link: SubscriptionLink::new(KIND, format!("{}-sub", self.options.client_name())),
        };
        tokio::spawn(task.run(self.shutdown.clone()));
        *commands = Some(tx.clone());
        tx
    }

    /// Subscribes `pattern` and resolves once Redis confirmed it.
    pub(crate) async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        if *self.shutdown.borrow() {
            return Err(Error::Closed { broker: KIND });
        }
        let capacity = self.options.capacity.max(1);
        let slot = Arc::new(Slot {
            pattern: pattern.clone(),
            capacity,
            queue: Mutex::new(Queue::default()),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let commands = self.commands();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        // Made before the command is sent: dropping it (a timeout, a
        // cancelled subscribe) takes the subscription out again.
        let deliveries = Deliveries {
            slot: slot.clone(),
            id,
            commands: commands.clone(),
            done: Some(done_tx),
        };
        let member = Member { id, slot };
        if commands
            .send(Command::Subscribe {
                member,
                ready: ready_tx,
            })
            .is_err()
        {
            return Err(Error::Closed { broker: KIND });
        }
        let wait = self.options.connect_timeout * 2;
        match tokio::time::timeout(wait, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(Error::Closed { broker: KIND }),
            Err(_) => {
                return Err(Error::Subscribe {
                    broker: KIND,
                    pattern: pattern.to_string(),
                    reason: format!("Redis did not confirm the subscription within {wait:?}"),
                    source: None,
                })
            }
        }
        let unsubscribe_wait = self.options.flush_timeout;
        Ok(
            Subscription::new(pattern.clone(), None, deliveries).with_close(move || {
                Box::pin(async move {
                    // The stream is dropped by now, which sent the UNSUBSCRIBE
                    // (when it was the last on its channel); wait for Redis to
                    // confirm it. A hub that is gone (the handle closed) or a
                    // connection that is down has nothing left to undo.
                    let _ = tokio::time::timeout(unsubscribe_wait, done_rx).await;
                    Ok(())
                })
            }),
        )
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Subscriptions still alive keep the task (they hold senders too).
        lock(&self.commands).take();
    }
}

/// What the broker handle and the subscriptions ask of the hub task.
enum Command {
    Subscribe {
        member: Member,
        ready: oneshot::Sender<Result<()>>,
    },
    /// The subscription `id` on `pattern` was dropped; `done` is told once
    /// Redis confirmed the UNSUBSCRIBE (or at once if nothing had to be undone).
    Remove {
        id: u64,
        pattern: Pattern,
        done: Option<oneshot::Sender<()>>,
    },
}

/// What the hub and one subscription's stream share.
struct Slot {
    pattern: Pattern,
    capacity: usize,
    queue: Mutex<Queue>,
}

/// A subscription's waiting items. The deque allocates only when an item
/// waits, so an idle subscription holds no buffer.
#[derive(Default)]
struct Queue {
    items: VecDeque<Result<Delivery>>,
    /// Messages dropped since the last [`Error::Lost`] item was queued.
    lost: u64,
    waker: Option<Waker>,
    /// The hub is gone (the handle closed): the stream ends once drained.
    ended: bool,
}

impl Slot {
    /// Queues a delivery, or counts it as lost when the queue is full. A
    /// loss is reported in place: before the first item queued after it, or
    /// when the reader has drained the queue.
    fn deliver(&self, item: Result<Delivery>) {
        let waker = {
            let mut queue = lock(&self.queue);
            if queue.items.len() >= self.capacity {
                queue.lost += 1;
                return;
            }
            if queue.lost > 0 {
                let lost = self.lost(std::mem::take(&mut queue.lost));
                queue.items.push_back(Err(lost));
            }
            queue.items.push_back(item);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues an error item (a lost connection) whatever the queue's length:
    /// there is one per outage, and it must not be dropped.
    fn report(&self, error: Error) {
        let waker = {
            let mut queue = lock(&self.queue);
            if queue.lost > 0 {
                let lost = self.lost(std::mem::take(&mut queue.lost));
                queue.items.push_back(Err(lost));
            }
            queue.items.push_back(Err(error));
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends the stream once it is drained.
    fn end(&self) {
        let waker = {
            let mut queue = lock(&self.queue);
            queue.ended = true;
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn lost(&self, count: u64) -> Error {
        Error::Lost {
            broker: KIND,
            pattern: self.pattern.to_string(),
            count,
            reason: format!(
                "the subscription's buffer of {} messages was full (its reader fell behind); read faster or raise `capacity`",
                self.capacity
            ),
        }
    }
}

/// A subscription's stream. Dropping it takes the subscription out of the
/// hub (which UNSUBSCRIBEs when it was the last on its channel).
struct Deliveries {
    slot: Arc<Slot>,
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    done: Option<oneshot::Sender<()>>,
}

impl Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = lock(&self.slot.queue);
        if let Some(item) = queue.items.pop_front() {
            if queue.items.is_empty() && queue.items.capacity() > 64 {
                // A burst is over: give its memory back.
                queue.items = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        if queue.lost > 0 {
            let count = std::mem::take(&mut queue.lost);
            return Poll::Ready(Some(Err(self.slot.lost(count))));
        }
        if queue.ended {
            return Poll::Ready(None);
        }
        if !queue
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            queue.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        // Without the hub (the handle closed) there is nothing to undo.
        let _ = self.commands.send(Command::Remove {
            id: self.id,
            pattern: self.slot.pattern.clone(),
            done: self.done.take(),
        });
    }
}

/// One subscription as the hub knows it.
struct Member {
    id: u64,
    slot: Arc<Slot>,
}

/// The subscriptions by Redis channel (SUBSCRIBE) and by glob (PSUBSCRIBE).
#[derive(Default)]
struct Registry {
    channels: HashMap<Box<[u8]>, Vec<Member>>,
    globs: HashMap<Box<[u8]>, Vec<Member>>,
}

impl Registry {
    fn map(&mut self, glob: bool) -> &mut HashMap<Box<[u8]>, Vec<Member>> {
        if glob {
            &mut self.globs
        } else {
            &mut self.channels
        }
    }

    /// Adds a member; returns whether its channel or glob is new.
    fn add(&mut self, member: Member) -> bool {
        let (channel, glob) = channel_for(&member.slot.pattern);
        let members = self
            .map(glob)
            .entry(channel.into_bytes().into_boxed_slice())
            .or_default();
        members.push(member);
        members.len() == 1
    }

    /// Removes a member; returns the command undoing its channel or glob
    /// when it was the last there.
    fn remove(&mut self, id: u64, pattern: &Pattern) -> Option<(&'static [u8], String)> {
        let (channel, glob) = channel_for(pattern);
        let map = self.map(glob);
        let members = map.get_mut(channel.as_bytes())?;
        members.retain(|member| member.id != id);
        if !members.is_empty() {
            return None;
        }
        map.remove(channel.as_bytes());
        let command: &'static [u8] = if glob {
            b"PUNSUBSCRIBE"
        } else {
            b"UNSUBSCRIBE"
        };
        Some((command, channel))
    }

    fn members(&self) -> impl Iterator<Item = &Member> {
        self.channels.values().chain(self.globs.values()).flatten()
    }

    fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.globs.is_empty()
    }
}

/// A command sent whose reply has not come yet: Redis answers a pub/sub
/// connection's commands in order, one reply per channel named.
enum Pending {
    Subscribe {
        id: u64,
        pattern: Pattern,
        ready: oneshot::Sender<Result<()>>,
    },
    /// A channel or glob (named) subscribed again after a reconnection.
    Resubscribe(String),
    Unsubscribe(Option<oneshot::Sender<()>>),
    Ping,
}

/// The hub task: owns the connection and the registry.
struct Task {
    target: Target,
    options: RedisOptions,
    replies: Arc<publisher::Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    registry: Registry,
    pending: VecDeque<Pending>,
    /// Subscriptions waiting for a connection to confirm them.
    waiting: Vec<(u64, Pattern, oneshot::Sender<Result<()>>)>,
    /// Resubscriptions not yet confirmed; at 0 the outage is over.
    resubscribing: usize,
    link: SubscriptionLink,
    /// The subject of the last message's channel: a run of messages on one
    /// channel is checked and allocated once (see [`dispatch`]).
    last_subject: Option<Subject>,
}

/// Why the connection ended: `Some(reason)` it broke, `None` the handle was
/// closed or nothing uses the hub any more.
type Ended = Option<String>;

impl Task {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = self.options.reconnect_backoff.attempts();
        loop {
            // Nothing to subscribe: wait for something to do.
            while self.registry.is_empty() && self.waiting.is_empty() {
                let command = tokio::select! {
                    command = self.commands.recv() => command,
                    _ = closed(&mut shutdown) => None,
                };
                match command {
                    Some(command) => self.apply_offline(command),
                    None => return self.end(),
                }
            }
            let name = format!("{}-sub", self.options.client_name());
            let connected = tokio::select! {
                connected = self.target.connect(self.options.connect_timeout, &name) => connected,
                _ = closed(&mut shutdown) => return self.end(),
            };
            let conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    // Those waiting for their first confirmation get this
                    // error, as a subscription on a connection of its own would.
                    // (The error is not `Clone`: the first gets it, any
                    // other its text.)
                    let text = e.to_string();
                    let lasting = !e.is_temporary();
                    let mut error = Some(e);
                    for (id, pattern, ready) in std::mem::take(&mut self.waiting) {
                        self.registry.remove(id, &pattern);
                        let _ = ready.send(Err(error.take().unwrap_or_else(|| Error::Subscribe {
                            broker: KIND,
                            pattern: pattern.to_string(),
                            reason: text.clone(),
                            source: None,
                        })));
                    }
                    if self.registry.is_empty() {
                        continue;
                    }
                    let delay = backoff.failed();
                    self.link.retry_failed(&text, delay, lasting);
                    if self.pause(delay, &mut shutdown).await.is_err() {
                        return self.end();
                    }
                    continue;
                }
            };
            backoff.succeeded();
            let reason = match self.serve(conn, &mut shutdown).await {
                Some(reason) => reason,
                None => return self.end(),
            };
            self.lost(&reason);
            // Reconnect after a short pause, so a server that keeps closing us is not hammered.
            let pause = self.options.reconnect_backoff.min();
            if self.pause(pause, &mut shutdown).await.is_err() {
                return self.end();
            }
        }
    }

    /// Sleeps `delay`, applying commands meanwhile; a new subscription cuts
    /// the pause short. `Err` when the handle was closed or nobody is left.
    async fn pause(
        &mut self,
        delay: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::result::Result<(), ()> {
        let until = Instant::now() + delay;
        loop {
            let command = tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                command = self.commands.recv() => command,
                _ = closed(shutdown) => return Err(()),
            };
            let Some(command) = command else {
                return Err(());
            };
            let subscribing = matches!(command, Command::Subscribe { .. });
            self.apply_offline(command);
            if subscribing {
                return Ok(());
            }
        }
    }

    /// Applies a command while there is no connection: the server forgot
    /// every subscription with the last one.
    fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Subscribe { member, ready } => {
                let (id, pattern) = (member.id, member.slot.pattern.clone());
                self.registry.add(member);
                self.waiting.push((id, pattern, ready));
            }
            Command::Remove { id, pattern, done } => {
                self.registry.remove(id, &pattern);
                self.waiting.retain(|(waiting, _, _)| *waiting != id);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }

    /// The handle was closed, or nothing uses the hub: every stream ends.
    fn end(mut self) {
        for member in self.registry.members() {
            member.slot.end();
        }
        for (_, _, ready) in self.waiting.drain(..) {
            let _ = ready.send(Err(Error::Closed { broker: KIND }));
        }
    }

    /// Every confirmed subscription gets one `Disconnected` item; those
    /// not yet confirmed wait for the next connection.
    fn lost(&mut self, reason: &str) {
        let mut unconfirmed = HashSet::new();
        for pending in self.pending.drain(..) {
            if let Pending::Subscribe { id, pattern, ready } = pending {
                unconfirmed.insert(id);
                self.waiting.push((id, pattern, ready));
            }
        }
        unconfirmed.extend(self.waiting.iter().map(|(id, _, _)| *id));
        self.resubscribing = 0;
        if !self.link.is_down() {
            // The "resubscribed to …" line names what came back: the
            // pattern when there is one, else how many share the connection.
            self.link = SubscriptionLink::new(KIND, self.outage_label());
        }
        self.link.lost(reason);
        for member in self.registry.members() {
            if unconfirmed.contains(&member.id) {
                continue;
            }
            member.slot.report(Error::Disconnected {
                broker: KIND,
                reason: format!(
                    "the subscription to '{}' lost its connection ({reason}); resubscribing. Messages published until it is back are lost (PUBSUB keeps nothing)",
                    member.slot.pattern
                ),
            });
        }
    }

    /// Subscribes everything on a new connection, then reads it until it
    /// breaks. With a `keepalive`, sends PING after a third of it without a
    /// frame, and gives the connection up after all of it.
    async fn serve(&mut self, mut conn: Conn, shutdown: &mut watch::Receiver<bool>) -> Ended {
        let mut out = Vec::new();
        // A channel a waiting subscription asks for is subscribed below, once:
        // a refusal (an ACL's NOPERM) is then that subscription's error, not
        // also a warning about a failed resubscribe it never had.
        let asked: std::collections::HashSet<(bool, String)> = self
            .waiting
            .iter()
            .map(|(_, pattern, _)| {
                let (channel, glob) = channel_for(pattern);
                (glob, channel)
            })
            .collect();
        for (glob, map) in [
            (false, &self.registry.channels),
            (true, &self.registry.globs),
        ] {
            let command: &[u8] = if glob { b"PSUBSCRIBE" } else { b"SUBSCRIBE" };
            for channel in map.keys() {
                let name = String::from_utf8_lossy(channel).into_owned();
                if asked.contains(&(glob, name.clone())) {
                    continue;
                }
                resp::encode_command(&mut out, &[command, channel]);
                self.pending.push_back(Pending::Resubscribe(name));
                self.resubscribing += 1;
            }
        }
        // Each one waiting gets its own confirmation (a second SUBSCRIBE of
        // a channel is answered, and changes nothing).
        for (id, pattern, ready) in std::mem::take(&mut self.waiting) {
            let (channel, glob) = channel_for(&pattern);
            let command: &[u8] = if glob { b"PSUBSCRIBE" } else { b"SUBSCRIBE" };
            resp::encode_command(&mut out, &[command, channel.as_bytes()]);
            self.pending
                .push_back(Pending::Subscribe { id, pattern, ready });
        }
        if let Err(reason) = self.write(&mut conn, &mut out).await {
            return Some(reason);
        }
        let keepalive = self.options.keepalive;
        // When bytes last came, and whether a PING is out since.
        let mut heard = Instant::now();
        let mut pinged = false;
        // Bytes read with the handshake's replies (none, normally).
        if let Err(reason) = self.drain(&mut conn.buf) {
            return Some(reason);
        }
        // One timer for the connection, moved on only when it fires (not
        // re-registered per read: at high rates that was a timer-wheel
        // insert and removal per message).
        let due = |heard: Instant, pinged: bool| {
            keepalive.map(|keepalive| heard + if pinged { keepalive } else { keepalive / 3 })
        };
        let timer = tokio::time::sleep_until(due(heard, pinged).unwrap_or_else(Instant::now));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                read = conn.read_more() => {
                    if let Err(e) = read {
                        return Some(e.to_string());
                    }
                    heard = Instant::now();
                    pinged = false;
                    // Every complete frame read, handled in one go: one
                    // wake-up of this task per read, not one turn of this
                    // loop (and its futures) per message.
                    if let Err(reason) = self.drain(&mut conn.buf) {
                        return Some(reason);
                    }
                }
                command = self.commands.recv() => {
                    let command = command?;
                    self.apply(command, &mut out);
                    // Take what else is queued, so a burst goes in one write.
                    while out.len() < 1 << 20 {
                        match self.commands.try_recv() {
                            Ok(command) => self.apply(command, &mut out),
                            Err(_) => break,
                        }
                    }
                    if let Err(reason) = self.write(&mut conn, &mut out).await {
                        return Some(reason);
                    }
                }
                _ = &mut timer, if keepalive.is_some() => {
                    let (Some(keepalive), Some(at)) = (keepalive, due(heard, pinged)) else {
                        continue;
                    };
                    if Instant::now() < at {
                        // Bytes came since it was set: not due yet.
                        timer.as_mut().reset(at);
                        continue;
                    }
                    if pinged {
                        return Some(format!(
                            "nothing from Redis for {keepalive:?}, not even an answer to PING (keepalive)"
                        ));
                    }
                    pinged = true;
                    timer.as_mut().reset(heard + keepalive);
                    resp::encode_command(&mut out, &[b"PING"]);
                    self.pending.push_back(Pending::Ping);
                    if let Err(reason) = self.write(&mut conn, &mut out).await {
                        return Some(reason);
                    }
                }
                _ = closed(shutdown) => return None,
            }
        }
    }

    /// Handles every complete frame in `buf`: message pushes on the fast
    /// path ([`resp::take_push`]), anything else as a [`Frame`]. `Err` when
    /// the connection must be given up.
    fn drain(&mut self, buf: &mut bytes::BytesMut) -> std::result::Result<(), String> {
        loop {
            if let Some(push) = resp::take_push(buf) {
                let members = match push.glob() {
                    None => self.registry.channels.get(push.channel()),
                    Some(glob) => self.registry.globs.get(glob),
                };
                if let Some(members) = members {
                    dispatch(
                        members,
                        push.channel(),
                        &push.body(),
                        &self.replies,
                        &mut self.last_subject,
                    );
                }
                continue;
            }
            match resp::parse(buf) {
                Ok(Some(frame)) => self.frame(frame)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("the server does not speak RESP: {}", e.0)),
            }
        }
    }

    /// Writes and empties `out`, within the keepalive (or connect) time.
    async fn write(&self, conn: &mut Conn, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        if out.is_empty() {
            return Ok(());
        }
        let limit = self
            .options
            .keepalive
            .unwrap_or(self.options.connect_timeout);
        let written = tokio::time::timeout(limit, async {
            conn.stream.write_all(out).await?;
            conn.stream.flush().await
        })
        .await;
        out.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("sending to Redis failed: {e}")),
            Err(_) => Err(format!("Redis did not take a command within {limit:?}")),
        }
    }

    /// Applies a command on a live connection, encoding what to send into `out`.
    fn apply(&mut self, command: Command, out: &mut Vec<u8>) {
        match command {
            Command::Subscribe { member, ready } => {
                let (id, pattern) = (member.id, member.slot.pattern.clone());
                self.registry.add(member);
                let (channel, glob) = channel_for(&pattern);
                let command: &[u8] = if glob { b"PSUBSCRIBE" } else { b"SUBSCRIBE" };
                resp::encode_command(out, &[command, channel.as_bytes()]);
                self.pending
                    .push_back(Pending::Subscribe { id, pattern, ready });
            }
            Command::Remove { id, pattern, done } => match self.registry.remove(id, &pattern) {
                Some((command, channel)) => {
                    resp::encode_command(out, &[command, channel.as_bytes()]);
                    self.pending.push_back(Pending::Unsubscribe(done));
                }
                None => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            },
        }
    }

    /// Handles one frame from Redis: a message for the subscriptions, or the
    /// reply to the oldest command. `Err` when the connection must be given up.
    fn frame(&mut self, frame: Frame) -> std::result::Result<(), String> {
        let items = match frame {
            Frame::Array(Some(items)) => items,
            Frame::Error(e) => {
                let text = String::from_utf8_lossy(&e).into_owned();
                match self.pending.pop_front() {
                    Some(Pending::Subscribe { id, pattern, ready }) => {
                        self.registry.remove(id, &pattern);
                        let _ = ready.send(Err(Error::Subscribe {
                            broker: KIND,
                            pattern: pattern.to_string(),
                            reason: format!("Redis answered {text}"),
                            source: None,
                        }));
                        return Ok(());
                    }
                    Some(Pending::Resubscribe(channel)) => {
                        tracing::warn!(
                            %channel,
                            "redis: subscribing again to a channel after a reconnection failed (Redis answered {text}); its subscriptions get nothing until the next reconnection"
                        );
                        self.resubscribed();
                        return Ok(());
                    }
                    _ => return Err(format!("Redis answered {text}")),
                }
            }
            // A connection subscribed to nothing (every subscription gone)
            // answers PING outside pub/sub mode.
            Frame::Simple(text) if text.eq_ignore_ascii_case(b"PONG") => {
                return match self.pending.pop_front() {
                    Some(Pending::Ping) => Ok(()),
                    other => Err(unexpected("a PING answer", other)),
                };
            }
            _ => return Ok(()),
        };
        let kind = match items.first().and_then(Frame::bytes) {
            Some(kind) => PushKind::of(kind),
            None => return Ok(()),
        };
        match (kind, items.as_slice()) {
            (PushKind::Message, [_, channel, body]) => {
                if let (Some(channel), Some(body)) = (channel.bytes(), body.bytes()) {
                    if let Some(members) = self.registry.channels.get(&channel[..]) {
                        dispatch(
                            members,
                            channel,
                            body,
                            &self.replies,
                            &mut self.last_subject,
                        );
                    }
                }
            }
            (PushKind::PMessage, [_, glob, channel, body]) => {
                if let (Some(glob), Some(channel), Some(body)) =
                    (glob.bytes(), channel.bytes(), body.bytes())
                {
                    if let Some(members) = self.registry.globs.get(&glob[..]) {
                        dispatch(
                            members,
                            channel,
                            body,
                            &self.replies,
                            &mut self.last_subject,
                        );
                    }
                }
            }
            (PushKind::Subscribed, _) => match self.pending.pop_front() {
                Some(Pending::Subscribe { ready, .. }) => {
                    let _ = ready.send(Ok(()));
                }
                Some(Pending::Resubscribe(_)) => self.resubscribed(),
                other => return Err(unexpected("a subscription confirmation", other)),
            },
            (PushKind::Unsubscribed, _) => match self.pending.pop_front() {
                Some(Pending::Unsubscribe(done)) => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                other => return Err(unexpected("an unsubscription confirmation", other)),
            },
            (PushKind::Pong, _) => match self.pending.pop_front() {
                Some(Pending::Ping) => {}
                other => return Err(unexpected("a PING answer", other)),
            },
            _ => {}
        }
        Ok(())
    }

    /// What an outage's log lines name: the one pattern subscribed, or the
    /// number of patterns on the shared connection.
    fn outage_label(&self) -> String {
        let patterns: HashSet<&str> = self
            .registry
            .members()
            .map(|member| member.slot.pattern.as_str())
            .collect();
        match patterns.iter().next() {
            Some(pattern) if patterns.len() == 1 => (*pattern).to_string(),
            _ => format!(
                "{} patterns on {}-sub",
                patterns.len(),
                self.options.client_name()
            ),
        }
    }

    /// One resubscription confirmed; after the last, the outage is over.
    fn resubscribed(&mut self) {
        self.resubscribing = self.resubscribing.saturating_sub(1);
        if self.resubscribing == 0 {
            self.link.resubscribed();
        }
    }
}

/// What a pub/sub push from Redis is, from its first element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushKind {
    Message,
    PMessage,
    Subscribed,
    Unsubscribed,
    Pong,
    Other,
}

impl PushKind {
    /// Compared in place, whatever the case: a lower-case copy of the kind
    /// was an allocation per message.
    fn of(kind: &[u8]) -> Self {
        let is = |name: &[u8]| kind.eq_ignore_ascii_case(name);
        if is(b"message") {
            PushKind::Message
        } else if is(b"pmessage") {
            PushKind::PMessage
        } else if is(b"subscribe") || is(b"psubscribe") {
            PushKind::Subscribed
        } else if is(b"unsubscribe") || is(b"punsubscribe") {
            PushKind::Unsubscribed
        } else if is(b"pong") {
            PushKind::Pong
        } else {
            PushKind::Other
        }
    }
}

/// Describes a reply that does not match the oldest command sent: the
/// connection is out of step and is renewed.
fn unexpected(what: &str, pending: Option<Pending>) -> String {
    let expected = match pending {
        None => "nothing",
        Some(Pending::Subscribe { .. } | Pending::Resubscribe(_)) => "a subscription confirmation",
        Some(Pending::Unsubscribe(_)) => "an unsubscription confirmation",
        Some(Pending::Ping) => "a PING answer",
    };
    format!("Redis sent {what} where {expected} was due")
}

/// Hands a message to every subscription on its channel or glob. The
/// channel is checked as a subject once (not once per subscription), and
/// not at all when it is `last`'s channel again.
fn dispatch(
    members: &[Member],
    channel: &[u8],
    body: &bytes::Bytes,
    replies: &Arc<publisher::Shared>,
    last: &mut Option<Subject>,
) {
    let subject = match last
        .as_ref()
        .filter(|subject| subject.as_str().as_bytes() == channel)
    {
        Some(subject) => Ok(subject.clone()),
        None => {
            let subject = subject_of(channel);
            if let Ok(subject) = &subject {
                *last = Some(subject.clone());
            }
            subject
        }
    };
    for member in members {
        if let Some(item) = item_for(channel, &subject, body, &member.slot.pattern, Some(replies)) {
            member.slot.deliver(item);
        }
    }
}

/// The subject a channel names, or why it is not one.
fn subject_of(channel: &[u8]) -> std::result::Result<Subject, String> {
    let Ok(text) = std::str::from_utf8(channel) else {
        return Err("the channel is not UTF-8".to_string());
    };
    match Subject::new(text) {
        Ok(subject) => Ok(subject),
        Err(Error::InvalidSubject { reason, .. }) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// The item for a message on `channel`: a delivery; an
/// [`Error::InvalidSubject`] for a channel Redis delivered to this
/// subscription that is not a valid subject (a plain client can publish to
/// any channel); or `None` for a valid subject the pattern does not match (a
/// glob is wider than a pattern). A message carrying a [`REPLY_TO`] inbox
/// is a request, answered through `replies` (the broker's publisher).
#[cfg(test)]
fn item(
    channel: &[u8],
    body: &bytes::Bytes,
    pattern: &Pattern,
    replies: Option<&Arc<publisher::Shared>>,
) -> Option<Result<Delivery>> {
    item_for(channel, &subject_of(channel), body, pattern, replies)
}

/// [`item`], with the channel already checked as a subject (`subject`).
fn item_for(
    channel: &[u8],
    subject: &std::result::Result<Subject, String>,
    body: &bytes::Bytes,
    pattern: &Pattern,
    replies: Option<&Arc<publisher::Shared>>,
) -> Option<Result<Delivery>> {
    let subject = match subject {
        Ok(subject) if pattern.matches(subject.as_str()) => subject.clone(),
        Ok(_) => return None,
        Err(why) => {
            return Some(Err(Error::InvalidSubject {
                subject: String::from_utf8_lossy(channel).into_owned(),
                reason: format!(
                    "a message received from redis for subscription '{pattern}' on channel {:?} cannot be delivered ({why}); it was skipped",
                    String::from_utf8_lossy(channel)
                ),
            }))
        }
    };
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
            (Some(Ok(inbox)), Some(replies)) => delivery.with_replier(Box::new(RedisReply {
                publisher: replies.clone(),
                inbox,
            })),
            (Some(Err(error)), _) => {
                tracing::warn!(subject = %delivery.subject(), %error, "redis: a request's reply channel is not a subject; it cannot be answered");
                delivery
            }
        },
    ))
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
