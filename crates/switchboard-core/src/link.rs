//! The state of a broker connection, as adapters report it and users read it.
//!
//! Adapters keep one [`Link`] per connection and tell it when the connection
//! is lost and when it is back; [`Broker::status`](crate::Broker::status) returns its
//! [`ConnectionStatus`]. The same two log lines are written on every broker —
//! one warning when the link is lost, one line when it is back with how long
//! it was down — instead of one warning per failed reconnect attempt.
//!
//! Each subscription keeps a [`SubscriptionLink`] as well: its stream reports
//! the loss as an [`Error::Disconnected`](crate::Error::Disconnected) item, and
//! the link logs one line when the subscription is back
//! (`redis: resubscribed to 'alerts.>' after 1.2s`). A failed attempt to
//! reconnect or resubscribe is logged at debug level, unless its reason is
//! lasting (refused credentials, a certificate) and new in the outage: then
//! it is one warning ([`Link::attempt_failed`], [`SubscriptionLink::retry_failed`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What a broker handle knows of its connection now.
///
/// ```
/// use switchboard_core::{Broker, MemoryBroker};
/// let broker = MemoryBroker::new();
/// let status = broker.status();
/// assert!(status.connected);
/// assert_eq!(status.disconnects, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// Whether the connection is up now (false while reconnecting and after `close`).
    pub connected: bool,
    /// How many times the connection was lost since it was made. Messages
    /// handed to the client around a loss may not have reached the broker.
    pub disconnects: u64,
    /// Whether the handle was closed.
    pub closed: bool,
}

impl ConnectionStatus {
    /// The status of a connection that never fails (the in-memory broker).
    pub const fn up() -> Self {
        ConnectionStatus {
            connected: true,
            disconnects: 0,
            closed: false,
        }
    }
}

/// The link state one adapter connection keeps: whether it is up, how often it
/// was lost, since when it is down. Cheap to share (`Arc<Link>`); every method
/// only does bookkeeping and never waits, so it can be called from a client
/// library's event callback.
pub struct Link {
    broker: &'static str,
    connected: AtomicBool,
    closed: AtomicBool,
    disconnects: AtomicU64,
    down_since: Mutex<Option<Instant>>,
    /// Why the connection is down: the loss, then the last failed attempt
    /// to reconnect; `None` while it is up.
    failure: Mutex<Option<String>>,
    changes: watch::Sender<ConnectionStatus>,
}

impl Link {
    /// A link that is up (adapters create it once connected).
    pub fn new(broker: &'static str) -> Self {
        Link {
            broker,
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            disconnects: AtomicU64::new(0),
            down_since: Mutex::new(None),
            failure: Mutex::new(None),
            changes: watch::Sender::new(ConnectionStatus::up()),
        }
    }

    /// The status now.
    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            connected: self.connected.load(Ordering::Acquire)
                && !self.closed.load(Ordering::Acquire),
            disconnects: self.disconnects.load(Ordering::Acquire),
            closed: self.closed.load(Ordering::Acquire),
        }
    }

    /// A receiver that sees every change of [`Link::status`], for health checks.
    pub fn watch(&self) -> watch::Receiver<ConnectionStatus> {
        self.changes.subscribe()
    }

    /// The connection was lost (`reason` says how). Logs one warning per
    /// outage; returns `true` if the link was up until now.
    pub fn lost(&self, reason: impl fmt::Display) -> bool {
        if self.closed.load(Ordering::Acquire) || !self.connected.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.disconnects.fetch_add(1, Ordering::AcqRel);
        *self.down_since() = Some(Instant::now());
        *lock(&self.failure) = Some(reason.to_string());
        tracing::warn!(
            broker = self.broker,
            "{}: connection lost ({reason}); reconnecting",
            self.broker
        );
        self.publish();
        true
    }

    /// An attempt to reconnect failed (`reason` says why). A `lasting`
    /// reason — one that will not go away by itself: the credentials or the
    /// certificate were refused — is a warning the first time it is seen in
    /// this outage: an expired certificate or a rotated password fails every
    /// attempt, and was only "connection lost … reconnecting" at the default
    /// level, the reason shown at `-vv`. A broker still away (refused, timed
    /// out) is the restart the loss's warning announced: debug level.
    pub fn attempt_failed(&self, reason: impl fmt::Display, lasting: bool) {
        if self.closed.load(Ordering::Acquire) || self.connected.load(Ordering::Acquire) {
            return;
        }
        let reason = reason.to_string();
        let mut failure = lock(&self.failure);
        if lasting && failure.as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                broker = self.broker,
                "{}: reconnecting failed: {reason}; retrying",
                self.broker
            );
        } else {
            tracing::debug!(
                broker = self.broker,
                "{}: reconnecting failed ({reason})",
                self.broker
            );
        }
        *failure = Some(reason);
    }

    /// Why the connection is down (the last failed attempt to reconnect, or
    /// the loss); `None` while it is up. For errors that would otherwise
    /// guess ("is the server running?").
    pub fn failure(&self) -> Option<String> {
        if self.status().connected {
            return None;
        }
        lock(&self.failure).clone()
    }

    /// The connection is back (and, where the adapter does it, subscriptions
    /// are renewed). Logs one line with how long it was down; returns that
    /// duration if the link was down until now.
    pub fn restored(&self) -> Option<Duration> {
        if self.connected.swap(true, Ordering::AcqRel) {
            return None;
        }
        let down = self.down_since().take().map(|since| since.elapsed());
        *lock(&self.failure) = None;
        match down {
            Some(down) => tracing::warn!(
                broker = self.broker,
                "{}: reconnected after {:.1?}",
                self.broker,
                down
            ),
            None => tracing::warn!(broker = self.broker, "{}: reconnected", self.broker),
        }
        self.publish();
        down
    }

    /// The handle was closed on purpose: no more warnings, `connected` is false.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.publish();
    }

    fn down_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        lock(&self.down_since)
    }

    fn publish(&self) {
        self.changes.send_replace(self.status());
    }
}

/// One subscription's outages, for adapters that resubscribe after a lost
/// connection: it remembers since when the subscription is down and logs one
/// line when it is back. The loss itself is the subscription's
/// [`Error::Disconnected`](crate::Error::Disconnected) item, so it is only
/// logged at debug level here.
#[derive(Debug)]
pub struct SubscriptionLink {
    broker: &'static str,
    pattern: String,
    down_since: Option<Instant>,
    /// A hash of the last failed attempt's reason in this outage (0: none),
    /// to warn once per reason: a hash, not the text, as idle subscriptions
    /// pay for every byte here.
    failure: u64,
}

impl SubscriptionLink {
    /// The pattern subscribed to, as given to [`SubscriptionLink::new`].
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The link of a subscription to `pattern` that is up.
    pub fn new(broker: &'static str, pattern: impl fmt::Display) -> Self {
        SubscriptionLink {
            broker,
            pattern: pattern.to_string(),
            down_since: None,
            failure: 0,
        }
    }

    /// The subscription lost its connection (`reason` says how). Returns
    /// `true` if it was up until now, i.e. this starts an outage the stream
    /// should report once.
    pub fn lost(&mut self, reason: impl fmt::Display) -> bool {
        if self.down_since.is_some() {
            return false;
        }
        self.down_since = Some(Instant::now());
        tracing::debug!(
            broker = self.broker,
            "{}: subscription to '{}' lost ({reason})",
            self.broker,
            self.pattern
        );
        true
    }

    /// An attempt to subscribe again failed. As for [`Link::attempt_failed`],
    /// a `lasting` reason (a rotated password, an expired certificate: it
    /// fails every attempt, and was shown only at `-vv`) is a warning the
    /// first time it is seen in this outage; anything else is debug level.
    pub fn retry_failed(&mut self, error: impl fmt::Display, retry_in: Duration, lasting: bool) {
        use std::hash::{Hash as _, Hasher as _};
        let error = error.to_string();
        if lasting {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            error.hash(&mut hasher);
            let failure = hasher.finish().max(1);
            if failure != self.failure {
                self.failure = failure;
                tracing::warn!(
                    broker = self.broker,
                    "{}: resubscribing to '{}' failed: {error}; retrying in {retry_in:.1?}",
                    self.broker,
                    self.pattern
                );
                return;
            }
        }
        tracing::debug!(
            broker = self.broker,
            "{}: resubscribing to '{}' failed: {error}; retrying in {retry_in:.1?}",
            self.broker,
            self.pattern
        );
    }

    /// Whether the subscription is down now.
    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    /// The subscription is back. Logs one line with how long it was down;
    /// returns that duration if it was down until now.
    pub fn resubscribed(&mut self) -> Option<Duration> {
        self.failure = 0;
        let down = self.down_since.take()?.elapsed();
        tracing::warn!(
            broker = self.broker,
            "{}: resubscribed to '{}' after {:.1?}",
            self.broker,
            self.pattern,
            down
        );
        Some(down)
    }
}

/// `mutex` locked, also after a panic elsewhere (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("broker", &self.broker)
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outages_once_each() {
        let link = Link::new("test");
        let mut changes = link.watch();
        assert!(link.status().connected);
        assert!(link.lost("reset"));
        assert!(!link.lost("reset again"), "still the same outage");
        assert_eq!(link.status().disconnects, 1);
        assert!(!link.status().connected);
        assert!(changes.has_changed().unwrap());
        assert!(link.restored().is_some());
        assert!(link.restored().is_none(), "already up");
        assert!(link.lost("again"));
        assert_eq!(link.status().disconnects, 2);
        link.close();
        assert!(!link.lost("after close"), "closing is not an outage");
        let status = link.status();
        assert!(status.closed && !status.connected);
        assert!(changes.borrow_and_update().closed);
    }

    #[test]
    fn a_failed_reconnect_keeps_its_reason_until_the_link_is_back() {
        let link = Link::new("test");
        link.attempt_failed("ignored while up", true);
        assert_eq!(link.failure(), None);
        assert!(link.lost("reset by peer"));
        assert_eq!(link.failure().as_deref(), Some("reset by peer"));
        link.attempt_failed("refused", false);
        assert_eq!(link.failure().as_deref(), Some("refused"));
        link.attempt_failed("not authorized", true);
        link.attempt_failed("not authorized", true);
        assert_eq!(link.failure().as_deref(), Some("not authorized"));
        assert!(link.restored().is_some());
        assert_eq!(link.failure(), None);
    }

    #[test]
    fn a_subscription_outage_is_reported_once_and_ends_once() {
        let mut link = SubscriptionLink::new("test", "a.>");
        assert!(!link.is_down());
        assert!(link.resubscribed().is_none(), "it was never down");
        assert!(link.lost("reset"));
        assert!(!link.lost("refused"), "the same outage");
        assert!(link.is_down());
        assert!(link.resubscribed().is_some());
        assert!(link.resubscribed().is_none());
        assert!(link.lost("again"), "a new outage");
    }
}
