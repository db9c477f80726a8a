//! Durable subscriptions on JetStream: a stream that captures the durable
//! subject space (found, or provisioned if missing), a durable pull consumer
//! per durable name, and deliveries acknowledged through JetStream.
//!
//! Publishes are unchanged: a stream captures plain publishes on its
//! subjects. To make `flush` mean "stored" for those subjects, each
//! connection keeps the subjects of the server's streams ([`Captured`]):
//! a message on a captured subject is published as a JetStream publish and
//! `flush` waits for its acknowledgement (the PubAck).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::stream::{Stream, StreamExt};
use switchboard_core::{
    async_trait, Acknowledge, BoxError, Delivery, Durable, Error, Pattern, Result, Subject,
    Subscription,
};

use crate::broker::Shared;
use crate::{wire, KIND};

/// How long a pull request waits on the server before the client pulls again.
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// How often the server proves an idle pull is alive; two missed ones make
/// the subscription report a disconnect and pull again.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// Messages fetched in one pull: each goes to this member until acknowledged
/// or until `ack_wait` is over, so smaller batches share work more evenly.
const PULL_BATCH: usize = 64;

/// PubAcks kept before a publish waits for them (async-nats allows 5,000).
pub(crate) const MAX_PENDING_ACKS: usize = 4096;

/// How long a stream this adapter provisions keeps a message: a consumer
/// away longer loses what is older.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The prefix of the streams this adapter provisions.
pub const STREAM_PREFIX: &str = "switchboard-";

/// The subjects the server's JetStream streams capture, as this connection
/// knows them, and the PubAcks of JetStream publishes not yet awaited.
#[derive(Default)]
pub(crate) struct Captured {
    /// True when `subjects` is not empty: the plain path checks only this.
    any: AtomicBool,
    subjects: RwLock<Vec<Pattern>>,
    pending: Mutex<Vec<(async_nats::Subject, jetstream::context::PublishAckFuture)>>,
    /// Held while a publish awaits the oldest PubAcks (the window slid):
    /// `flush` takes it after its own, so it returns only once those are in too.
    confirming: tokio::sync::Mutex<()>,
}

impl Captured {
    /// Whether a stream captures `subject`.
    pub(crate) fn captures(&self, subject: &Subject) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        match self.subjects.read() {
            Ok(subjects) => subjects.iter().any(|p| p.matches(subject.as_str())),
            Err(_) => false,
        }
    }

    fn add(&self, patterns: impl IntoIterator<Item = Pattern>) {
        if let Ok(mut subjects) = self.subjects.write() {
            for pattern in patterns {
                if !subjects.contains(&pattern) {
                    subjects.push(pattern);
                }
            }
            self.any.store(!subjects.is_empty(), Ordering::Release);
        }
    }

    /// Forgets every subject pattern that matches `subject`.
    fn forget(&self, subject: &str) {
        if let Ok(mut subjects) = self.subjects.write() {
            subjects.retain(|p| !p.matches(subject));
            self.any.store(!subjects.is_empty(), Ordering::Release);
        }
    }

    fn remove_all(&self, patterns: &[Pattern]) {
        if let Ok(mut subjects) = self.subjects.write() {
            subjects.retain(|p| !patterns.contains(p));
            self.any.store(!subjects.is_empty(), Ordering::Release);
        }
    }

    /// Keeps the PubAck of a JetStream publish for the next `flush`.
    pub(crate) fn pending(
        &self,
        subject: async_nats::Subject,
        ack: jetstream::context::PublishAckFuture,
    ) {
        let ack = (subject, ack);
        match self.pending.lock() {
            Ok(mut pending) => pending.push(ack),
            Err(poisoned) => poisoned.into_inner().push(ack),
        }
    }

    /// The PubAcks published so far, leaving none.
    fn take_pending(&self) -> Vec<(async_nats::Subject, jetstream::context::PublishAckFuture)> {
        match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// The oldest `count` PubAcks published so far (at most all of them).
    fn take_oldest(
        &self,
        count: usize,
    ) -> Vec<(async_nats::Subject, jetstream::context::PublishAckFuture)> {
        let mut pending = match self.pending.lock() {
            Ok(pending) => pending,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = count.min(pending.len());
        pending.drain(..count).collect()
    }

    /// How many PubAcks wait for a `flush` (JetStream allows 5,000 in flight
    /// per connection: publishing waits for them well before that).
    pub(crate) fn pending_len(&self) -> usize {
        match self.pending.lock() {
            Ok(pending) => pending.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
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

/// How many of the oldest PubAcks a publish awaits when
/// [`MAX_PENDING_ACKS`] are outstanding: the window slides by this much, so
/// the rest stay in flight while it waits (awaiting all of them at once
/// emptied the pipe each time: ~0.8x the raw client's sliding window).
pub(crate) const ACK_SLIDE: usize = MAX_PENDING_ACKS / 8;

/// Waits for the oldest [`ACK_SLIDE`] JetStream publishes to be stored
/// (the publish window is full).
pub(crate) async fn confirm_oldest(shared: &Shared) -> Result<()> {
    let _confirming = shared.captured.confirming.lock().await;
    confirm(shared, shared.captured.take_oldest(ACK_SLIDE)).await
}

/// Waits for every JetStream publish since the last flush to be stored
/// (those a publish is awaiting included).
pub(crate) async fn confirm_pending(shared: &Shared) -> Result<()> {
    let result = confirm(shared, shared.captured.take_pending()).await;
    // PubAcks a concurrent publish took (sliding the window) are older than
    // ours: wait until that publish has them.
    drop(shared.captured.confirming.lock().await);
    result
}

/// Waits for `pending` PubAcks; reports the messages not stored.
async fn confirm(
    shared: &Shared,
    pending: Vec<(async_nats::Subject, jetstream::context::PublishAckFuture)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let count = pending.len();
    let timeout = shared.options.flush_timeout;
    let acks = futures::future::join_all(
        pending
            .into_iter()
            .map(|(subject, ack)| async move { (subject, ack.await) }),
    );
    let results = tokio::time::timeout(timeout, acks)
        .await
        .map_err(|_| Error::Flush {
            broker: KIND,
            reason: format!(
                "JetStream did not confirm storing {count} message(s) within {timeout:?}"
            ),
            source: None,
        })?;
    let mut failures = Vec::new();
    for (subject, result) in results {
        let Err(error) = result else { continue };
        // No PubAck because no stream captures the subject any more (it was
        // deleted since this connection learned of it): the message went
        // out as a plain publish, with nothing to store it in. This
        // connection forgets those subjects.
        use jetstream::context::PublishErrorKind as Kind;
        let gone = matches!(error.kind(), Kind::StreamNotFound | Kind::TimedOut)
            && shared
                .jetstream
                .stream_by_subject(subject.as_str())
                .await
                .is_err();
        if gone {
            shared.captured.forget(subject.as_str());
        } else {
            failures.push(error);
        }
    }
    let mut failed = failures.into_iter();
    if let Some(first) = failed.next() {
        let more = failed.count();
        return Err(Error::Flush {
            broker: KIND,
            reason: format!(
                "JetStream did not store {} of {count} message(s) published on subjects a stream captures",
                more + 1
            ),
            source: Some(Box::new(first) as BoxError),
        });
    }
    Ok(())
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
            // so with a generic create error): update that one.
            Err(error)
                if matches!(
                    error.kind(),
                    stream::ConsumerCreateStrictErrorKind::AlreadyExists
                        | stream::ConsumerCreateStrictErrorKind::JetStream(_)
                ) =>
            {
                last_error = Some(Box::new(error));
            }
            Err(error) => return Err(failed("creating", Box::new(error))),
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
    let stream = tokio::time::timeout(timeout, stream_for(context, pattern, shared.options.replicas))
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
    let consumer = tokio::time::timeout(
        shared.options.flush_timeout,
        consumer_for(stream, pattern, durable),
    )
    .await
    .map_err(|_| Error::Timeout {
        broker: KIND,
        operation: format!(
            "creating or resuming JetStream consumer {name:?} for {:?}",
            pattern.as_str()
        ),
        after: timeout,
    })??;
    let messages = pull(&consumer).await.map_err(|e| {
        failed(
            format!("pulling from JetStream consumer {name:?} failed"),
            Some(Box::new(e)),
        )
    })?;
    let client = shared.client.clone();
    let timeout = shared.options.flush_timeout;
    Ok(Subscription::new(
        pattern.clone(),
        None,
        deliveries(consumer, messages, pattern.clone(), name),
    )
    .with_close(move || {
        Box::pin(async move {
            // Writes out the acks given so far.
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

/// Starts pulling from `consumer`: batches of [`PULL_BATCH`], each pull
/// request kept [`PULL_EXPIRES`] on the server, heartbeats every
/// [`PULL_HEARTBEAT`].
async fn pull(
    consumer: &consumer::PullConsumer,
) -> std::result::Result<consumer::pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
}

/// JetStream's messages as deliveries; error items for missed heartbeats
/// and failed pulls, and the end once the consumer was deleted.
///
/// After missed heartbeats the pull starts over with a fresh pull request.
/// async-nats 0.51 does not pull again by itself until its pull request
/// expires (35 s): when a cluster node dies with the consumer's leader, the
/// pull request waiting there is gone and the client's count of messages
/// still to come is wrong, so the consumer stalled for 35 s at a time
/// (tests/cluster_durable.rs saw 33 s, and over 120 s in CI).
fn deliveries(
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
    pattern: Pattern,
    name: String,
) -> impl Stream<Item = Result<Delivery>> + Send {
    use consumer::pull::MessagesErrorKind as Kind;
    struct State {
        consumer: consumer::PullConsumer,
        messages: consumer::pull::Stream,
        pattern: Pattern,
        name: String,
        last: Option<Subject>,
        ended: bool,
    }
    let state = State {
        consumer,
        messages,
        pattern,
        name,
        last: None,
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let name = &state.name;
        let item = match state.messages.next().await? {
            Ok(message) => delivery(message, &state.pattern, &mut state.last),
            Err(error) => {
                let reason = match error.kind() {
                    Kind::MissingHeartbeat => {
                        // Without a connection this fails: the next missed
                        // heartbeat tries again.
                        if let Ok(fresh) = pull(&state.consumer).await {
                            state.messages = fresh;
                        }
                        format!(
                            "JetStream consumer {name:?} missed its heartbeats (connection or server down?); the client pulls again, and what was not acknowledged is delivered again"
                        )
                    }
                    Kind::ConsumerDeleted => {
                        state.ended = true;
                        format!("JetStream consumer {name:?} was deleted")
                    }
                    _ => format!(
                        "pulling from JetStream consumer {name:?} failed: {error}; the client pulls again"
                    ),
                };
                Err(Error::Disconnected {
                    broker: KIND,
                    reason,
                })
            }
        };
        Some((item, state))
    })
}

/// One JetStream message as a delivery acknowledged through JetStream.
fn delivery(
    message: jetstream::Message,
    pattern: &Pattern,
    last: &mut Option<Subject>,
) -> Result<Delivery> {
    let count = message
        .info()
        .ok()
        .and_then(|info| u32::try_from(info.delivered).ok())
        .unwrap_or(1);
    let (message, acker) = message.split();
    // No client: the reply subject of a JetStream message is its ack subject, not a requester.
    let delivered = wire::delivery(message, pattern, last, None)?.into_message();
    let subject = delivered.subject().clone();
    Ok(Delivery::with_acker(
        delivered,
        Box::new(JetStreamAck { acker, subject }),
        count > 1,
    )
    .with_delivery_count(count))
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
    async fn send(self, kind: AckKind, action: &'static str) -> Result<()> {
        self.acker.ack_with(kind).await.map_err(|e| Error::Ack {
            broker: KIND,
            action,
            subject: self.subject.to_string(),
            reason: e.to_string(),
        })
    }
}

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.send(AckKind::Ack, "ack").await
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

/// Publishes `message` as a JetStream publish whose PubAck the next `flush`
/// awaits.
pub(crate) async fn publish(
    shared: &Shared,
    subject: async_nats::Subject,
    payload: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
) -> std::result::Result<(), jetstream::context::PublishError> {
    let ack = match headers {
        None => shared.jetstream.publish(subject.clone(), payload).await?,
        Some(headers) => {
            shared
                .jetstream
                .publish_with_headers(subject.clone(), headers, payload)
                .await?
        }
    };
    shared.captured.pending(subject, ack);
    Ok(())
}
