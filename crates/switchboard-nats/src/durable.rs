//! Durable subscriptions on JetStream: a stream that captures the durable
//! subject space (found, or provisioned if missing), a durable pull consumer
//! per durable name, and deliveries acknowledged through JetStream.
//!
//! Publishes are unchanged: a stream captures plain publishes on its
//! subjects. To make `flush` mean "stored" for those subjects, each
//! connection keeps the subjects of the server's streams ([`Captured`]):
//! a message on a captured subject is published as a JetStream publish and
//! `flush` waits for its acknowledgement (the PubAck).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::context::{ConsumerInfoErrorKind, PublishAckFuture, PublishError};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::stream::{Stream, StreamExt};
use switchboard_core::{
    async_trait, Acknowledge, BoxError, Delivery, Durable, Error, Pattern, Result, Subject,
    Subscription,
};

use crate::broker::Shared;
use crate::publisher::{finished, poll_once};
use crate::pull::{Pull, PullError};
use crate::{wire, KIND};

/// PubAcks kept before a publish waits for the oldest (async-nats allows
/// 5,000 in flight per JetStream context and then blocks publishing).
pub(crate) const MAX_PENDING_ACKS: usize = 4096;

/// How long a stream this adapter provisions keeps a message: a consumer
/// away longer loses what is older.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The prefix of the streams this adapter provisions.
pub const STREAM_PREFIX: &str = "switchboard-";

/// Generations of every [`Captured`] in the process come from this one
/// counter, so a generation names one list of one connection.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last capture decision this thread made: the subject, the
    /// generation of the subject list it was made from, and whether a stream
    /// captures it. Publishing in a loop to one subject then costs a pointer
    /// comparison instead of matching every stream's subjects (which, for a
    /// `>` pattern, allocated). Per thread, so there is no lock.
    static LAST_DECISION: RefCell<Option<(Subject, u64, bool)>> = const { RefCell::new(None) };
}

/// A PubAck as a future: async-nats' [`PublishAckFuture`] made into one
/// when it is kept (the allocation its `.await` makes anyway), so that the
/// window can look whether it is in without waiting.
type PubAck = std::pin::Pin<
    Box<
        dyn Future<Output = std::result::Result<jetstream::publish::PublishAck, PublishError>>
            + Send,
    >,
>;

/// A JetStream publish whose PubAck is not awaited yet.
struct Stored {
    subject: async_nats::Subject,
    ack: PubAck,
}

/// The PubAcks not yet awaited, and what the window learnt from those a
/// publish found already in when the window was full (taken out without a
/// wait), for the next `flush` to report.
#[derive(Default)]
struct Window {
    /// PubAcks in publishing order, fewer than [`MAX_PENDING_ACKS`] between
    /// two publishes.
    acks: VecDeque<Stored>,
    /// PubAcks taken out of a full window already answered.
    confirmed: usize,
    /// Those that said the message was not stored, kept to be classified by
    /// `flush` ([`not_stored_anywhere`] asks the server).
    failures: Vec<(async_nats::Subject, PublishError)>,
}

/// What publishes learnt from the PubAcks they awaited (the window slid),
/// for the next `flush` to report.
#[derive(Default)]
struct Slid {
    /// PubAcks awaited since the last `flush`.
    confirmed: usize,
    /// How many of them said the message was not stored.
    failed: usize,
    /// The first of those failures.
    first: Option<PublishError>,
}

/// The subjects the server's JetStream streams capture, as this connection
/// knows them, and the PubAcks of JetStream publishes not yet awaited.
pub(crate) struct Captured {
    /// True when `subjects` is not empty: the plain path checks only this.
    any: AtomicBool,
    /// Changes with every change of `subjects` (see [`GENERATIONS`]).
    generation: AtomicU64,
    subjects: RwLock<Vec<Pattern>>,
    /// PubAcks in publishing order, and what the full window learnt.
    window: Mutex<Window>,
    /// Held while a publish awaits the oldest PubAck (the window slid), with
    /// what those PubAcks said: `flush` takes it after awaiting the window,
    /// so it returns only once those are in too, and reports their failures.
    sliding: tokio::sync::Mutex<Slid>,
}

impl Default for Captured {
    fn default() -> Self {
        Captured {
            any: AtomicBool::new(false),
            generation: AtomicU64::new(GENERATIONS.fetch_add(1, Ordering::Relaxed)),
            subjects: RwLock::new(Vec::new()),
            window: Mutex::new(Window::default()),
            sliding: tokio::sync::Mutex::new(Slid::default()),
        }
    }
}

impl Captured {
    /// Whether a stream captures `subject`.
    pub(crate) fn captures(&self, subject: &Subject) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        // Read before the list: a change made meanwhile stores a newer
        // generation, so a decision cached under this one is only ever
        // recomputed, never wrongly reused.
        let generation = self.generation.load(Ordering::Acquire);
        let cached = LAST_DECISION.with(|last| match &*last.borrow() {
            Some((text, made_in, captured)) if *made_in == generation && text == subject => {
                Some(*captured)
            }
            _ => None,
        });
        if let Some(captured) = cached {
            return captured;
        }
        let captured = match self.subjects.read() {
            Ok(subjects) => subjects.iter().any(|p| p.matches(subject.as_str())),
            Err(_) => false,
        };
        LAST_DECISION
            .with(|last| *last.borrow_mut() = Some((subject.clone(), generation, captured)));
        captured
    }

    /// Changes the subject list; a new generation once it is changed.
    fn change(&self, edit: impl FnOnce(&mut Vec<Pattern>)) {
        if let Ok(mut subjects) = self.subjects.write() {
            edit(&mut subjects);
            self.any.store(!subjects.is_empty(), Ordering::Release);
            self.generation.store(
                GENERATIONS.fetch_add(1, Ordering::Relaxed),
                Ordering::Release,
            );
        }
    }

    fn add(&self, patterns: impl IntoIterator<Item = Pattern>) {
        self.change(|subjects| {
            for pattern in patterns {
                if !subjects.contains(&pattern) {
                    subjects.push(pattern);
                }
            }
        });
    }

    /// Forgets every subject pattern that matches `subject`.
    fn forget(&self, subject: &str) {
        self.change(|subjects| subjects.retain(|p| !p.matches(subject)));
    }

    fn remove_all(&self, patterns: &[Pattern]) {
        self.change(|subjects| subjects.retain(|p| !patterns.contains(p)));
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        match self.window.lock() {
            Ok(window) => window,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Keeps the PubAck of a JetStream publish for a later wait; true if the
    /// window is full (the publish should await the oldest, [`slide`]).
    ///
    /// A full window first takes out its oldest PubAcks that are in already
    /// (with 4,096 outstanding, the oldest usually is): that costs what the
    /// raw client's `.await` on a ready PubAck costs, under the one lock
    /// taken for this publish anyway, where waiting for it in [`slide`] took
    /// the window's lock three times and the `sliding` lock, and boxed the
    /// wait. Only a PubAck not in yet is left to [`slide`]'s wait.
    fn keep(&self, subject: async_nats::Subject, ack: PublishAckFuture) -> bool {
        let mut window = self.window();
        window.acks.push_back(Stored {
            subject,
            ack: std::future::IntoFuture::into_future(ack),
        });
        while window.acks.len() >= MAX_PENDING_ACKS {
            let Some(oldest) = window.acks.front_mut() else {
                return false;
            };
            let result = match poll_once(oldest.ack.as_mut()) {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => return true,
            };
            let Some(oldest) = window.acks.pop_front() else {
                return false;
            };
            window.confirmed += 1;
            if let Err(error) = result {
                window.failures.push((oldest.subject, error));
            }
        }
        false
    }

    fn is_full(&self) -> bool {
        self.window().acks.len() >= MAX_PENDING_ACKS
    }
}

/// Learns the subjects of every stream on the server (at connect). A server
/// without JetStream has none; a failure is logged and leaves the list empty.
pub(crate) async fn load_captured(
    client: &async_nats::Client,
    captured: &Captured,
    timeout: Duration,
) {
    if !client.server_info().jetstream {
        return;
    }
    let context = jetstream::new(client.clone());
    let listing = async {
        let mut streams = context.streams();
        let mut subjects = Vec::new();
        while let Some(info) = streams.next().await {
            let info = info?;
            subjects.extend(
                info.config
                    .subjects
                    .iter()
                    .filter_map(|s| Pattern::new(s).ok()),
            );
        }
        Ok::<_, jetstream::context::StreamsError>(subjects)
    };
    match tokio::time::timeout(timeout, listing).await {
        Ok(Ok(subjects)) => captured.add(subjects),
        Ok(Err(error)) => {
            tracing::warn!(%error, "nats: listing JetStream streams failed; flush will not wait for their PubAcks")
        }
        Err(_) => tracing::warn!(
            ?timeout,
            "nats: listing JetStream streams timed out; flush will not wait for their PubAcks"
        ),
    }
}

/// Awaits the oldest PubAcks while the window is full. A failure is kept for
/// the next `flush` to report: the message being published was handed over
/// already, so its publish succeeds.
pub(crate) async fn slide(shared: &Shared) {
    let captured = &shared.captured;
    while captured.is_full() {
        // Taken before the PubAck leaves the window, so that a `flush`
        // that no longer finds it there waits for it here.
        let mut slid = captured.sliding.lock().await;
        let Some(oldest) = captured.window().acks.pop_front() else {
            return;
        };
        slid.confirmed += 1;
        let result = oldest.ack.await;
        if let Err(error) = result {
            if !not_stored_anywhere(shared, &oldest.subject, &error).await {
                slid.failed += 1;
                slid.first.get_or_insert(error);
            }
        }
    }
}

/// Whether a PubAck failed because no stream captures the subject any more
/// (deleted since this connection learned of it): the message went out as a
/// plain publish, with nothing to store it in. This connection then forgets
/// those subjects.
async fn not_stored_anywhere(
    shared: &Shared,
    subject: &async_nats::Subject,
    error: &PublishError,
) -> bool {
    use jetstream::context::PublishErrorKind as Kind;
    if !matches!(error.kind(), Kind::StreamNotFound | Kind::TimedOut) {
        return false;
    }
    let Ok(text) = Subject::new(subject.as_str()) else {
        return false;
    };
    // Forgotten already (the window holds many of its publishes), after a
    // lookup that found no stream.
    if !shared.captured.captures(&text) {
        return true;
    }
    // Only a lookup that answers "no stream" counts: one that fails (a
    // cluster electing a leader after losing a node times out PubAcks and
    // lookups alike) leaves the message reported as not stored. Counting
    // any failed lookup as "gone" let `flush` succeed over 100 messages
    // JetStream never stored (tests/cluster_durable.rs caught it).
    use jetstream::context::GetStreamByNameErrorKind as Lookup;
    let gone = matches!(
        shared.jetstream.stream_by_subject(subject.as_str()).await,
        Err(error) if matches!(error.kind(), Lookup::NotFound)
    );
    if gone {
        shared.captured.forget(subject.as_str());
    }
    gone
}

/// Waits for every JetStream publish since the last flush to be stored
/// (those publishes are awaiting included); reports the messages not stored.
pub(crate) async fn confirm_pending(shared: &Shared) -> Result<()> {
    let Window {
        acks: pending,
        confirmed,
        failures,
    } = std::mem::take(&mut *shared.captured.window());
    let timeout = shared.options.flush_timeout;
    let deadline = switchboard_core::deadline(timeout);
    let mut count = pending.len() + confirmed;
    let timed_out = |count: usize| Error::Flush {
        broker: KIND,
        reason: format!("JetStream did not confirm storing {count} message(s) within {timeout:?}"),
        source: None,
    };
    let acks = futures::future::join_all(
        pending
            .into_iter()
            .map(|Stored { subject, ack }| async move { (subject, ack.await) }),
    );
    let results = tokio::time::timeout_at(deadline, acks)
        .await
        .map_err(|_| timed_out(count))?;
    let mut failed = 0;
    let mut first = None;
    // Those the full window took out come first: they are older.
    let failures = failures
        .into_iter()
        .map(|(subject, error)| (subject, Err(error)));
    for (subject, result) in failures.chain(results) {
        let Err(error) = result else { continue };
        if !not_stored_anywhere(shared, &subject, &error).await {
            failed += 1;
            first.get_or_insert(error);
        }
    }
    // PubAcks publishes took from the window (sliding it) are older than
    // those awaited here: wait until those publishes have them.
    let slid = match tokio::time::timeout_at(deadline, shared.captured.sliding.lock()).await {
        Ok(mut slid) => std::mem::take(&mut *slid),
        Err(_) => return Err(timed_out(count)),
    };
    count += slid.confirmed;
    failed += slid.failed;
    let first = slid.first.or(first);
    match first {
        Some(first) => Err(Error::Flush {
            broker: KIND,
            reason: format!(
                "JetStream did not store {failed} of {count} message(s) published on subjects a stream captures"
            ),
            source: Some(Box::new(first) as BoxError),
        }),
        None => Ok(()),
    }
}

/// The name of the stream provisioned for `pattern`: [`STREAM_PREFIX`], a
/// readable form of the pattern, and a hash that keeps distinct patterns apart.
pub(crate) fn stream_name(pattern: &Pattern) -> String {
    let readable: String = pattern
        .as_str()
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            '*' => 'S',
            '>' => 'R',
            _ => '_',
        })
        .take(64)
        .collect();
    // FNV-1a: the same name in every process and version.
    let hash = pattern
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{STREAM_PREFIX}{readable}-{hash:016x}")
}

/// Whether the stream subject `subject` captures every subject `pattern` matches.
fn covers(subject: &str, pattern: &str) -> bool {
    let mut s = subject.split('.');
    let mut p = pattern.split('.');
    loop {
        match (s.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn subscribe_error(pattern: &Pattern, reason: String, source: Option<BoxError>) -> Error {
    Error::Subscribe {
        broker: KIND,
        pattern: pattern.as_str().to_string(),
        reason,
        source,
    }
}

/// The stream whose subjects capture `pattern`: an existing one, or one
/// provisioned for it (file storage, kept [`STREAM_MAX_AGE`], on `replicas`
/// servers).
async fn stream_for(
    context: &jetstream::Context,
    pattern: &Pattern,
    replicas: usize,
) -> Result<stream::Stream> {
    let failed =
        |reason: String, source: Option<BoxError>| subscribe_error(pattern, reason, source);
    if let Ok(name) = context.stream_by_subject(pattern.as_str()).await {
        let mut stream = context.get_stream(&name).await.map_err(|e| {
            failed(
                format!("reading JetStream stream {name:?} failed"),
                Some(Box::new(e)),
            )
        })?;
        let info = stream.info().await.map_err(|e| {
            failed(
                format!("reading JetStream stream {name:?} failed"),
                Some(Box::new(e)),
            )
        })?;
        if !info
            .config
            .subjects
            .iter()
            .any(|s| covers(s, pattern.as_str()))
        {
            return Err(failed(
                format!(
                    "JetStream stream {name:?} captures {:?}, only part of the pattern; \
                     subscribe durably to a pattern inside one stream's subjects, or widen the stream",
                    info.config.subjects
                ),
                None,
            ));
        }
        return Ok(stream);
    }
    let name = stream_name(pattern);
    context
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![pattern.as_str().to_string()],
            // Not interest retention: with it, nats-server 2.9.10 dropped the
            // backlog of a consumer that was away across a restart
            // (tests/durable.rs caught it).
            retention: stream::RetentionPolicy::Limits,
            max_age: STREAM_MAX_AGE,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            failed(
                format!(
                    "creating JetStream stream {name:?} failed (is JetStream enabled? start nats-server with -js)"
                ),
                Some(Box::new(e)),
            )
        })
}

/// The durable pull consumer `durable` on `stream`: created on first use to
/// deliver what is published from now on, else updated to this member's
/// `pattern`, `ack_wait` and `max_deliver`, keeping where it starts.
///
/// The start is a sequence number, not `DeliverPolicy::New`: a consumer
/// that had not delivered anything yet when nats-server restarted would
/// otherwise start over from the stream's end, skipping what was published
/// before the restart.
async fn consumer_for(
    mut stream: stream::Stream,
    pattern: &Pattern,
    durable: &Durable,
) -> Result<consumer::PullConsumer> {
    let name = durable.consumer().to_string();
    let stream_name = stream.cached_info().config.name.clone();
    let failed = |what: &str, error: BoxError| {
        subscribe_error(
            pattern,
            format!("{what} JetStream consumer {name:?} on stream {stream_name:?} failed"),
            Some(error),
        )
    };
    let config = |deliver_policy| consumer::pull::Config {
        durable_name: Some(name.clone()),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: durable.ack_wait,
        max_deliver: durable.max_deliver.map_or(-1, i64::from),
        filter_subject: pattern.as_str().to_string(),
        ..Default::default()
    };
    // While a cluster elects a new consumer or stream leader (a node was
    // lost), reading the consumer fails for a few seconds although it
    // exists: creating it then would start it over at the stream's end and
    // skip its backlog (nats-server 2.9 answers "start sequence can not be
    // updated"). Only "not found" creates; other failures are retried.
    let mut last_error: Option<BoxError> = None;
    for _ in 0..CONSUMER_ATTEMPTS {
        match stream.consumer_info(&name).await {
            Ok(existing) => {
                return stream
                    .create_consumer(config(existing.config.deliver_policy))
                    .await
                    .map_err(|e| failed("updating", Box::new(e)));
            }
            Err(error) if matches!(error.kind(), ConsumerInfoErrorKind::NotFound) => {}
            Err(error) => {
                last_error = Some(Box::new(error));
                tokio::time::sleep(CONSUMER_RETRY).await;
                continue;
            }
        }
        let next = stream
            .info()
            .await
            .map_err(|e| failed("reading the stream for", Box::new(e)))?
            .state
            .last_sequence
            + 1;
        let created = stream
            .create_consumer_strict(config(consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            }))
            .await;
        match created {
            Ok(consumer) => return Ok(consumer),
            // Another member created it meanwhile (servers before 2.10 say
            // so with a generic create error), or the server is busy: read
            // it again. A refusal of the consumer itself is not retried.
            Err(error)
                if match error.kind() {
                    stream::ConsumerCreateStrictErrorKind::AlreadyExists => true,
                    stream::ConsumerCreateStrictErrorKind::JetStream(ref e) => {
                        !refuses_the_consumer(e)
                    }
                    _ => false,
                } =>
            {
                last_error = Some(Box::new(error));
            }
            Err(error) => {
                let work_queue = matches!(
                    error.kind(),
                    stream::ConsumerCreateStrictErrorKind::JetStream(ref e)
                        if (10098..=10101).contains(&e.error_code().0)
                );
                if work_queue {
                    return Err(subscribe_error(
                        pattern,
                        format!(
                            "JetStream stream {stream_name:?} is a work-queue stream: it takes only consumers that start at its beginning and do not overlap, and a durable subscription starts at the end of a limits-retention stream; subscribe to subjects such a stream captures (or that no stream captures yet: switchboard then provisions one)"
                        ),
                        Some(Box::new(error)),
                    ));
                }
                return Err(failed("creating", Box::new(error)));
            }
        }
    }
    Err(subscribe_error(
        pattern,
        format!(
            "JetStream consumer {name:?} on stream {stream_name:?} could neither be read nor created \
             after {CONSUMER_ATTEMPTS} attempts (is the cluster electing a leader?)"
        ),
        last_error,
    ))
}

/// Whether JetStream refused a consumer for what it is (its settings, the
/// stream's kind: a 4xx answer other than "exists"), which no retry changes.
fn refuses_the_consumer(error: &jetstream::Error) -> bool {
    let code = error.error_code();
    (400..500).contains(&error.code())
        && code != jetstream::ErrorCode::CONSUMER_ALREADY_EXISTS
        && code != jetstream::ErrorCode::CONSUMER_NAME_EXIST
        && code.0 != 10012
}

/// Reads or creates of a consumer tried before giving up, [`CONSUMER_RETRY`] apart.
const CONSUMER_ATTEMPTS: usize = 20;

/// The pause between two attempts to read or create a consumer.
const CONSUMER_RETRY: Duration = Duration::from_millis(250);

/// Whether deleting a consumer failed because it does not exist.
fn consumer_missing(error: &stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        stream::ConsumerErrorKind::JetStream(ref e)
            if e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}

/// Subscribes to the durable consumer `durable` over `pattern` (see the
/// [crate docs](crate#durable-subscriptions-jetstream)).
pub(crate) async fn subscribe(
    shared: &Shared,
    pattern: &Pattern,
    durable: &Durable,
) -> Result<Subscription> {
    let failed =
        |reason: String, source: Option<BoxError>| subscribe_error(pattern, reason, source);
    let context = &shared.jetstream;
    // Timeouts are `Error::Timeout`, which is temporary: a JetStream cluster
    // electing a leader after losing a node answers nothing for a while.
    let timeout = shared.options.flush_timeout;
    // A user the server does not let use the JetStream API is refused at
    // once: said then, naming the subject, instead of a timeout later.
    let before = crate::connection::refusals_so_far(&shared.registry);
    let refused = || async {
        let subject = crate::connection::refused_js_api(&shared.registry, before).await;
        Err::<std::convert::Infallible, _>(failed(
            format!(
                "the server refused this user's JetStream request to {subject:?} (Permissions Violation); durable subscriptions need publish permission on \"$JS.API.>\" (at least the STREAM and CONSUMER requests)"
            ),
            None,
        ))
    };
    let stream = tokio::time::timeout(timeout, async {
        tokio::select! {
            stream = stream_for(context, pattern, shared.options.replicas) => stream,
            refused = refused() => refused.map(|never| match never {}),
        }
    })
        .await
        .map_err(|_| Error::Timeout {
            broker: KIND,
            operation: format!(
                "finding or creating the JetStream stream for durable subscription {:?} to {:?} \
                 (is JetStream enabled? start nats-server with -js; a cluster may be electing a leader)",
                durable.consumer(),
                pattern.as_str()
            ),
            after: timeout,
        })??;
    let captured: Vec<Pattern> = stream
        .cached_info()
        .config
        .subjects
        .iter()
        .filter_map(|s| Pattern::new(s).ok())
        .collect();
    shared.captured.add(captured);
    let name = durable.consumer().to_string();
    let consumer = tokio::time::timeout(shared.options.flush_timeout, async {
        tokio::select! {
            consumer = consumer_for(stream, pattern, durable) => consumer,
            refused = refused() => refused.map(|never| match never {}),
        }
    })
    .await
    .map_err(|_| Error::Timeout {
        broker: KIND,
        operation: format!(
            "creating or resuming JetStream consumer {name:?} for {:?}",
            pattern.as_str()
        ),
        after: timeout,
    })??;
    let info = consumer.cached_info();
    let messages = Pull::start(
        context.clone(),
        &info.stream_name,
        &info.name,
        shared.registry.reconnects(),
    )
    .await
    .map_err(|e| {
        failed(
            format!("pulling from JetStream consumer {name:?} failed"),
            Some(Box::new(e)),
        )
    })?;
    let client = shared.client.clone();
    let timeout = shared.options.flush_timeout;
    let releasing = Releasing::default();
    let messages = Pulling {
        messages,
        releasing: releasing.clone(),
    };
    Ok(Subscription::new(
        pattern.clone(),
        None,
        deliveries(messages, pattern.clone(), name),
    )
    .with_close(move || {
        // The deliveries (the pull stream) are dropped before this runs:
        // that unsubscribes its inbox, and the server drops a pull request
        // whose inbox nobody listens to, so after the flush below none is
        // left waiting for its 30 s expiry
        // (tests/durable.rs, `close_leaves_no_pull_request_waiting`).
        // JetStream has no call to cancel a pull request, and needs none.
        Box::pin(async move {
            // The stream is gone: its read-ahead is being handed back.
            let release = releasing.lock().ok().and_then(|mut slot| slot.take());
            if let Some(release) = release {
                let _ = release.await;
            }
            // Writes out the acks (and hand-backs) given so far, and the inbox's UNSUB.
            match tokio::time::timeout(timeout, client.flush()).await {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::Timeout {
                    broker: KIND,
                    operation: "writing out acknowledgements while closing a durable subscription"
                        .into(),
                    after: timeout,
                }),
            }
        })
    }))
}

/// The task handing back what the dropped [`Pulling`] stream held,
/// awaited by `Subscription::close`.
type Releasing = std::sync::Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>;

/// A member's pull stream. It asks for the next batch while half of one is
/// still to come, so up to two batches are read ahead; when the
/// subscription is dropped or closed, the messages it already received and
/// nobody took are handed back (`-NAK`), so another member of the group (or
/// the next run of `listen --durable --count N`) gets them at once instead
/// of after `ack_wait` (after [`HAND_BACK_AFTER`]). JetStream counts them as
/// delivered: they come again with their delivery count one higher. Only
/// what was still on its way from the server when the member left waits
/// for `ack_wait`, as it does after a crash.
struct Pulling {
    messages: Pull,
    releasing: Releasing,
}

/// The delay of the `-NAK`s that hand a dropped member's read-ahead back.
/// The member's pull request stays on the server (until it expires) as long
/// as its inbox is subscribed, and the client sends the unsubscribe from
/// its own task: a message handed back at once could be redelivered to
/// that pull request before the unsubscribe arrives, and then wait out
/// `ack_wait`.
const HAND_BACK_AFTER: Duration = Duration::from_millis(200);

impl Drop for Pulling {
    fn drop(&mut self) {
        let held = self.messages.take_received();
        if held.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(async move {
            for message in held {
                if let Err(error) = message.ack_with(AckKind::Nak(Some(HAND_BACK_AFTER))).await {
                    tracing::debug!(%error, "nats: could not hand back a message read ahead; it comes back after ack_wait");
                }
            }
        });
        if let Ok(mut slot) = self.releasing.lock() {
            *slot = Some(task);
        }
    }
}

/// JetStream's messages as deliveries; error items for missed heartbeats
/// (after which the stream has pulled again) and failed pulls, and the end
/// once the consumer was deleted or refuses pull requests.
fn deliveries(
    messages: Pulling,
    pattern: Pattern,
    name: String,
) -> impl Stream<Item = Result<Delivery>> + Send {
    Deliveries {
        messages,
        pattern,
        name,
        last: None,
    }
}

/// The stream [`deliveries`] returns, written out rather than made with
/// `futures::stream::unfold`: `unfold` moves its whole state into and out
/// of a future for every message, about 1,500 instructions of copying per
/// delivery (callgrind, `nats-durable-instructions switchboard-consume`).
struct Deliveries {
    messages: Pulling,
    pattern: Pattern,
    name: String,
    last: Option<Subject>,
}

impl Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        let error = match std::task::ready!(this.messages.messages.poll_next_unpin(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(message)) => {
                return Poll::Ready(Some(delivery(message, &this.pattern, &mut this.last)))
            }
            Some(Err(error)) => error,
        };
        let name = &this.name;
        let reason = match error {
            PullError::MissingHeartbeat => format!(
                "JetStream consumer {name:?} missed its heartbeats (connection or server down?); the client pulls again, and what was not acknowledged is delivered again"
            ),
            PullError::ConsumerDeleted => format!("JetStream consumer {name:?} was deleted"),
            PullError::Refused(status) => format!(
                "JetStream consumer {name:?} refuses pull requests ({status}); the subscription ends"
            ),
            PullError::Failed(reason) => format!(
                "pulling from JetStream consumer {name:?} failed: {reason}; the client pulls again"
            ),
        };
        Poll::Ready(Some(Err(Error::Disconnected {
            broker: KIND,
            reason,
        })))
    }
}

/// One JetStream message as a delivery acknowledged through JetStream.
fn delivery(
    message: jetstream::Message,
    pattern: &Pattern,
    last: &mut Option<Subject>,
) -> Result<Delivery> {
    let count = delivered_count(message.reply.as_deref());
    let (message, acker) = message.split();
    // No client: the reply subject of a JetStream message is its ack subject, not a requester.
    let delivered = wire::delivery(message, pattern, None, last, None)?.into_message();
    let subject = delivered.subject().clone();
    Ok(Delivery::with_acker(
        delivered,
        Box::new(JetStreamAck { acker, subject }),
        count > 1,
    )
    .with_delivery_count(count))
}

/// How many times JetStream delivered a message (1 the first time), read
/// from its ack subject `reply` as async-nats' `Message::info` reads it
/// (`$JS.ACK.` and 7 tokens, or 9 and more with domain and account hash),
/// but only that token: `info` also parses both sequences, the pending count
/// and the timestamp, about 1,700 instructions per delivery for a number
/// this adapter does not use (callgrind, `nats-durable-instructions
/// switchboard-consume`). 1 for a subject in neither form.
fn delivered_count(reply: Option<&str>) -> u32 {
    let Some(tokens) = reply.and_then(|reply| reply.strip_prefix("$JS.ACK.")) else {
        return 1;
    };
    // One pass over the bytes, remembering where the first five tokens end
    // (`str::split` cost about 800 instructions here, callgrind).
    let mut ends = [0usize; 5];
    let mut dots = 0usize;
    for (at, byte) in tokens.bytes().enumerate() {
        if byte == b'.' {
            if let Some(end) = ends.get_mut(dots) {
                *end = at;
            }
            dots += 1;
        }
    }
    // 7 tokens in all: stream, consumer, delivered, ...; 9 and more:
    // domain, account hash, stream, consumer, delivered, ...
    let token = |index: usize| {
        let start = index
            .checked_sub(1)
            .and_then(|before| ends.get(before))
            .map_or(0, |end| end + 1);
        let end = ends.get(index).copied().unwrap_or_default();
        tokens.get(start..end).unwrap_or_default()
    };
    let delivered = match dots + 1 {
        7 => token(2),
        9.. => token(4),
        _ => return 1,
    };
    delivered.parse().unwrap_or(1)
}

/// Acknowledges one JetStream delivery (`+ACK`, `-NAK` with an optional
/// delay, `+TERM`).
struct JetStreamAck {
    acker: jetstream::message::Acker,
    subject: Subject,
}

impl std::fmt::Debug for JetStreamAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAck")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl JetStreamAck {
    async fn send(self: Box<Self>, kind: AckKind, action: &'static str) -> Result<()> {
        let sent = self.acker.ack_with(kind).await;
        sent.map_err(|e| self.failed(action, &e))
    }

    fn failed(&self, action: &'static str, error: &async_nats::Error) -> Error {
        Error::Ack {
            broker: KIND,
            action,
            subject: self.subject.to_string(),
            reason: error.to_string(),
        }
    }
}

#[async_trait]
impl Acknowledge for JetStreamAck {
    /// `+ACK` handed to the client, as before: like async-nats' `ack_with`,
    /// this does not wait for the server. Written out rather than `async`:
    /// the `+ACK` is handed over right here when the client takes it at
    /// once (the usual case), and the boxed future returned is then
    /// zero-sized, where the `async` form boxed the acknowledgement and the
    /// client's publish with it, about 700 instructions per delivery
    /// (callgrind, `nats-durable-instructions switchboard-consume`).
    fn ack<'async_trait>(
        self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'async_trait>>
    where
        Self: 'async_trait,
    {
        // An `+ACK` the client cannot take at once is dropped unsent
        // (async-nats sends nothing until its queue's room is taken) and
        // made again, awaited.
        let attempt = poll_once(std::pin::pin!(self.acker.ack_with(AckKind::Ack)));
        match attempt {
            std::task::Poll::Ready(Ok(())) => finished(Ok(())),
            std::task::Poll::Ready(Err(error)) => finished(Err(self.failed("ack", &error))),
            std::task::Poll::Pending => Box::pin(self.send(AckKind::Ack, "ack")),
        }
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<()> {
        if requeue {
            self.send(AckKind::Nak(None), "nack").await
        } else {
            self.send(AckKind::Term, "reject").await
        }
    }

    fn supports_delay(&self) -> bool {
        true
    }

    async fn nack_with_delay(self: Box<Self>, delay: Duration) -> Result<()> {
        self.send(AckKind::Nak(Some(delay)), "nack").await
    }
}

/// Deletes the consumer `durable` from the stream that captures `pattern`,
/// and the stream too when this adapter provisioned it and no consumer is left.
pub(crate) async fn remove(shared: &Shared, pattern: &Pattern, durable: &Durable) -> Result<()> {
    let failed = |reason: String, source: Option<BoxError>| Error::Subscribe {
        broker: KIND,
        pattern: pattern.as_str().to_string(),
        reason,
        source,
    };
    let context = &shared.jetstream;
    let Ok(name) = context.stream_by_subject(pattern.as_str()).await else {
        return Ok(());
    };
    let stream = context.get_stream(&name).await.map_err(|e| {
        failed(
            format!("reading JetStream stream {name:?} failed"),
            Some(Box::new(e)),
        )
    })?;
    let consumer = durable.consumer().as_str();
    if let Err(error) = stream.delete_consumer(consumer).await {
        if !consumer_missing(&error) {
            return Err(failed(
                format!("deleting JetStream consumer {consumer:?} of stream {name:?} failed"),
                Some(Box::new(error)),
            ));
        }
    }
    if name.starts_with(STREAM_PREFIX) {
        let left = stream.consumer_names().count().await;
        if left == 0 {
            let subjects: Vec<Pattern> = stream
                .cached_info()
                .config
                .subjects
                .iter()
                .filter_map(|s| Pattern::new(s).ok())
                .collect();
            context.delete_stream(&name).await.map_err(|e| {
                failed(
                    format!("deleting JetStream stream {name:?} failed"),
                    Some(Box::new(e)),
                )
            })?;
            shared.captured.remove_all(&subjects);
        }
    }
    Ok(())
}

/// Publishes a message as a JetStream publish whose PubAck the next `flush`
/// awaits, awaiting the oldest PubAcks first while the window is full (so
/// that async-nats' own limit on PubAcks in flight is never reached).
pub(crate) async fn publish(
    shared: &Shared,
    subject: async_nats::Subject,
    payload: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
) -> std::result::Result<(), PublishError> {
    slide(shared).await;
    let ack = match headers {
        None => shared.jetstream.publish(subject.clone(), payload).await?,
        Some(headers) => {
            shared
                .jetstream
                .publish_with_headers(subject.clone(), headers, payload)
                .await?
        }
    };
    if shared.captured.keep(subject, ack) {
        slide(shared).await;
    }
    Ok(())
}

/// The eager JetStream publish of a message without headers: handed to
/// async-nats right here if it takes it at once (the usual case). `None`:
/// it did not (its queue is full, or as many PubAcks are in flight as it
/// allows), and nothing was sent; `Some(true)`: handed over, and the window
/// is full ([`slide`]).
pub(crate) fn try_publish(
    shared: &Shared,
    subject: &async_nats::Subject,
    payload: &bytes::Bytes,
) -> Option<std::result::Result<bool, PublishError>> {
    // A publish that cannot go at once is dropped unsent (async-nats sends
    // nothing until its permit and its queue's room are taken) and made
    // again, awaited.
    let attempt = poll_once(std::pin::pin!(shared
        .jetstream
        .publish(subject.clone(), payload.clone())));
    match attempt {
        std::task::Poll::Ready(Ok(ack)) => Some(Ok(shared.captured.keep(subject.clone(), ack))),
        std::task::Poll::Ready(Err(error)) => Some(Err(error)),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::delivered_count;

    /// The delivered count is read from both ack subject forms as
    /// async-nats' `Message::info` reads it; anything else counts as a
    /// first delivery.
    #[test]
    fn delivered_count_reads_both_ack_subject_forms() {
        let old = "$JS.ACK.orders.worker.3.41.17.1700000000000000000.0";
        let new = "$JS.ACK.hub.ACCHASH.orders.worker.2.41.17.1700000000000000000.0.xyz";
        let without_token = "$JS.ACK._.ACCHASH.orders.worker.5.41.17.1700000000000000000.0";
        assert_eq!(delivered_count(Some(old)), 3);
        assert_eq!(delivered_count(Some(new)), 2);
        assert_eq!(delivered_count(Some(without_token)), 5);
        assert_eq!(delivered_count(Some("$JS.ACK.orders.worker.3.41")), 1);
        assert_eq!(delivered_count(Some("_INBOX.abc")), 1);
        assert_eq!(
            delivered_count(Some("$JS.ACK.s.c.x.41.17.1700000000000000000.0")),
            1
        );
        assert_eq!(delivered_count(None), 1);
    }
}
