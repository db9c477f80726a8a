//! The subscription stream: async-nats' messages as deliveries, with `Err`
//! items for what the connection's [`Registry`] was told (slow consumer,
//! disconnect), and subscribing itself.

use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::stream::Stream;
use switchboard_core::{
    BoxError, Delivery, Error, Pattern, QueueGroup, Result, Subject, Subscription,
};

use crate::broker::Shared;
use crate::connection::{round_trip, Notices, Registry};
use crate::error::ClientError;
use crate::wire;
use crate::KIND;

/// Subscribes to `pattern` (as a member of `group` if given) and resolves
/// once the server has processed the SUB.
pub(crate) async fn subscribe(
    shared: &Shared,
    pattern: &Pattern,
    group: Option<&QueueGroup>,
) -> Result<Subscription> {
    let failed = |reason: String, source: Option<BoxError>| Error::Subscribe {
        broker: KIND,
        pattern: pattern.as_str().to_string(),
        reason,
        source,
    };
    let subject = async_nats::Subject::from(pattern.as_str());
    let subscriber = match group {
        None => shared.client.subscribe(subject).await,
        Some(group) => {
            shared
                .client
                .queue_subscribe(subject, group.as_str().to_string())
                .await
        }
    }
    .map_err(|e| {
        failed(
            "the client did not take the subscription".to_string(),
            Some(ClientError::boxed(e)),
        )
    })?;
    let stream = NatsStream::new(
        subscriber,
        shared.client.clone(),
        &shared.registry,
        pattern.clone(),
        shared.options.capacity.max(1),
    );
    // Resolve only once the server has processed the SUB (dropping
    // `stream` on failure unsubscribes).
    round_trip(
        &shared.client,
        &shared.registry,
        shared.options.flush_timeout,
    )
    .await
    .map_err(|(reason, source)| failed(reason, source))?;
    // The server answers a SUB it refuses with an error, before the round
    // trip's echo; async-nats hands that to the event callback, on a task of
    // its own, so it is given a few turns to get there. A refusal that comes
    // later still ends the stream with one error item.
    for _ in 0..REFUSAL_TURNS {
        if stream.notices.refused.get().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    if let Some(error) = stream.notices.refused.get() {
        return Err(failed(refusal_reason(error, pattern), None));
    }
    let client = shared.client.clone();
    let registry = shared.registry.clone();
    let timeout = shared.options.flush_timeout;
    let unsubscribing = pattern.clone();
    Ok(
        Subscription::new(pattern.clone(), group.cloned(), stream).with_close(move || {
            Box::pin(async move {
                // While the connection is down (or closed) there is nothing
                // to end: the server forgot the subscription with the
                // connection, and async-nats does not renew a dropped one.
                if !registry.link.status().connected {
                    return Ok(());
                }
                // Dropping the stream queued the UNSUB; this writes it out.
                match tokio::time::timeout(timeout, client.flush()).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(Error::Timeout {
                        broker: KIND,
                        operation: format!("unsubscribing from {:?}", unsubscribing.as_str()),
                        after: timeout,
                    }),
                }
            })
        }),
    )
}

/// How many times `subscribe` lets other tasks run, after its round trip,
/// for a refusal the server sent before the echo to reach the registry.
const REFUSAL_TURNS: usize = 8;

/// Why a subscription the server refused (`error` is its words) failed.
fn refusal_reason(error: &str, pattern: &Pattern) -> String {
    format!(
        "the server refused the subscription (Permissions Violation): this user may not subscribe to {:?} (the server said: {error})",
        pattern.as_str()
    )
}

/// The sid async-nats gave `subscriber`.
///
/// async-nats 0.51 does not expose it, but `SlowConsumer` events name only the
/// sid; its derived `Debug` prints it first (`Subscriber { sid: 7, .. }`), so it
/// is read from there. Should a later version print something else this
/// returns `None` and loss on any unmapped sid is reported on every such
/// subscription (the integration tests check the exact mapping).
pub(crate) fn sid_of(subscriber: &async_nats::Subscriber) -> Option<u64> {
    /// Keeps the first bytes of the `Debug` output, then stops the formatter.
    struct Prefix(String);
    impl fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = 48usize.saturating_sub(self.0.len());
            let take = s.char_indices().nth(room).map_or(s.len(), |(i, _)| i);
            self.0.push_str(&s[..take]);
            if self.0.len() >= 48 {
                Err(fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut prefix = Prefix(String::with_capacity(48));
    let _ = write!(prefix, "{subscriber:?}");
    let rest = prefix.0.strip_prefix("Subscriber { sid: ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..digits].parse().ok()
}

/// The one subject a subscription to `pattern` receives, if it is a literal
/// pattern (no `*`, no `>`).
fn pattern_subject(pattern: &Pattern) -> Option<Subject> {
    if pattern.is_literal() {
        Subject::new(pattern.as_str()).ok()
    } else {
        None
    }
}

/// A subscription's stream: async-nats' messages converted to deliveries,
/// with `Err` items for what the event callback reported.
pub(crate) struct NatsStream {
    inner: async_nats::Subscriber,
    /// Sends the replies of the requests this stream delivers.
    client: async_nats::Client,
    notices: Arc<Notices>,
    seen_epoch: u64,
    seen_lost: u64,
    seen_disconnects: u64,
    key: u64,
    registry: Weak<Registry>,
    pattern: Pattern,
    capacity: usize,
    /// The subject of every message, when the pattern is a literal one.
    literal: Option<Subject>,
    last_subject: Option<Subject>,
    /// The server refused the subscription and the stream said so: it has ended.
    ended: bool,
}

impl NatsStream {
    pub(crate) fn new(
        inner: async_nats::Subscriber,
        client: async_nats::Client,
        registry: &Arc<Registry>,
        pattern: Pattern,
        capacity: usize,
    ) -> Self {
        let (key, notices) = registry.register(sid_of(&inner), &pattern);
        let literal = pattern_subject(&pattern);
        NatsStream {
            inner,
            client,
            notices,
            seen_epoch: 0,
            seen_lost: 0,
            seen_disconnects: 0,
            key,
            registry: Arc::downgrade(registry),
            pattern,
            capacity,
            literal,
            last_subject: None,
            ended: false,
        }
    }

    /// The next `Err` item to yield for notices seen since the last call, if any.
    fn take_notice(&mut self) -> Option<Error> {
        let epoch = self.notices.epoch.load(Ordering::Acquire);
        if epoch == self.seen_epoch {
            return None;
        }
        if let Some(error) = self.notices.refused.get() {
            // The server will send nothing on this subscription: waiting
            // for messages would look like a quiet subject for ever.
            self.ended = true;
            return Some(Error::Subscribe {
                broker: KIND,
                pattern: self.pattern.as_str().to_string(),
                reason: refusal_reason(error, &self.pattern),
                source: None,
            });
        }
        let disconnects = self.notices.disconnects.load(Ordering::Relaxed);
        if disconnects != self.seen_disconnects {
            self.seen_disconnects = disconnects;
            return Some(Error::Disconnected {
                broker: KIND,
                reason: format!(
                    "the connection to the NATS server broke while subscribed to {:?}; the client reconnects and resubscribes by itself, but messages published meanwhile are lost (core NATS keeps nothing)",
                    self.pattern.as_str()
                ),
            });
        }
        let lost = self.notices.lost.load(Ordering::Relaxed);
        if lost != self.seen_lost {
            self.seen_lost = lost;
            // async-nats drops without counting, and its drop reports travel
            // through a bounded queue that overflows in the very floods that
            // cause drops: any number shown would be a guess.
            return Some(Error::Lost {
                broker: KIND,
                pattern: self.pattern.as_str().to_string(),
                count: 0,
                reason: format!(
                    "the client buffer of {} messages for this subscription was full because it was not read fast enough, so async-nats dropped messages without counting them; read faster or raise `capacity` (NatsOptions::capacity or ?capacity= in the URL)",
                    self.capacity
                ),
            });
        }
        self.seen_epoch = epoch;
        None
    }
}

impl Stream for NatsStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(error) = this.take_notice() {
                return Poll::Ready(Some(Err(error)));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(message)) => {
                    return Poll::Ready(Some(wire::delivery(
                        message,
                        &this.pattern,
                        this.literal.as_ref(),
                        &mut this.last_subject,
                        Some(&this.client),
                    )));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    this.notices.waker.register(cx.waker());
                    // A notice that arrived before the waker was registered.
                    if this.notices.epoch.load(Ordering::Acquire) == this.seen_epoch {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl Drop for NatsStream {
    fn drop(&mut self) {
        // Dropping `inner` afterwards sends async-nats' UNSUB.
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(self.key);
        }
    }
}
