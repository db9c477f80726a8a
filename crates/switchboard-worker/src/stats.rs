//! Counters of what the worker did, and their snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The worker's live counters (atomics), shared by the router and the layers.
/// Read them with [`Counters::snapshot`] or [`Worker::stats`](crate::Worker::stats).
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    permanent: AtomicU64,
    dead_lettered: AtomicU64,
    timed_out: AtomicU64,
    panicked: AtomicU64,
    unfinished: AtomicU64,
    decode_failed: AtomicU64,
    /// Whether someone waits on `settled` (only `testing` does).
    watched: AtomicBool,
    /// Notified each time a message is done with (handled, failed or unfinished).
    settled: Notify,
    /// The worker's counters, when these are one route's: every count is
    /// added there too (see [`Counters::for_route`]).
    parent: Option<Arc<Counters>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Messages taken from the subscriptions.
    pub received: u64,
    /// Messages done with and acknowledged: the handler succeeded, or the message
    /// was published to its dead-letter subject.
    pub handled: u64,
    /// Messages whose handling ended in an error that no layer resolved (no
    /// dead-letter layer, or publishing the dead letter failed): nacked where
    /// the broker can redeliver (rejected without redelivery when the error
    /// is permanent), and reported in the log.
    pub failed: u64,
    /// Retries: attempts made after a failed one.
    pub retried: u64,
    /// Messages given up on because an attempt failed with a permanent error
    /// (see [`HandlerError::is_permanent`](crate::HandlerError::is_permanent)),
    /// so they were not retried.
    pub permanent: u64,
    /// Messages published to a dead-letter subject.
    pub dead_lettered: u64,
    /// Attempts cancelled by a timeout.
    pub timed_out: u64,
    /// Attempts that panicked.
    pub panicked: u64,
    /// Messages left unfinished at shutdown (nacked where the broker supports it).
    pub unfinished: u64,
    /// Messages whose payload could not be read as the route declares it: it
    /// did not decode into the typed handler's type (or its `content-type`
    /// names no codec the route has), or it did not match the route's
    /// schema. Such failures are permanent, so these are also counted in
    /// [`permanent`](Stats::permanent).
    pub decode_failed: u64,
}

impl Stats {
    /// Messages whose handler succeeded (`handled - dead_lettered`).
    pub fn succeeded(&self) -> u64 {
        self.handled.saturating_sub(self.dead_lettered)
    }

    /// Messages that are done, one way or the other (`handled + failed`).
    pub fn completed(&self) -> u64 {
        self.handled + self.failed
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} received, {} handled ({} succeeded, {} dead-lettered), {} failed, {} retried, {} permanent (not retried; {} not decodable), {} timed out, {} panicked, {} unfinished",
            self.received,
            self.handled,
            self.succeeded(),
            self.dead_lettered,
            self.failed,
            self.retried,
            self.permanent,
            self.decode_failed,
            self.timed_out,
            self.panicked,
            self.unfinished
        )
    }
}

macro_rules! incr {
    ($($(#[$doc:meta])* $name:ident => $field:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self) {
            self.$field.fetch_add(1, Ordering::Relaxed);
            if let Some(parent) = &self.parent {
                parent.$name();
            }
        }
    )*};
}

impl Counters {
    /// Counters of one route of the worker whose counters are `worker`:
    /// each count is added to both, so the worker's stay the totals and the
    /// route's are what its metrics report.
    pub fn for_route(worker: Arc<Counters>) -> Counters {
        Counters {
            parent: Some(worker),
            ..Counters::default()
        }
    }

    incr! {
        /// Counts a message taken from a subscription.
        add_received => received,
        /// Counts a retry.
        add_retried => retried,
        /// Counts a message given up on because of a permanent error.
        add_permanent => permanent,
        /// Counts a dead letter published.
        add_dead_lettered => dead_lettered,
        /// Counts a timed-out attempt.
        add_timed_out => timed_out,
        /// Counts a panicked attempt.
        add_panicked => panicked,
        /// Counts a payload that could not be read as the route declares it.
        add_decode_failed => decode_failed,
    }

    /// Counts a message handled and acknowledged.
    pub fn add_handled(&self) {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.settle();
        if let Some(parent) = &self.parent {
            parent.add_handled();
        }
    }

    /// Counts a message that ended in an unresolved error.
    pub fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.settle();
        if let Some(parent) = &self.parent {
            parent.add_failed();
        }
    }

    /// Counts a message left unfinished at shutdown.
    pub fn add_unfinished(&self) {
        self.unfinished.fetch_add(1, Ordering::SeqCst);
        self.settle();
        if let Some(parent) = &self.parent {
            parent.add_unfinished();
        }
    }

    /// Wakes whoever waits for messages to be done with (a cheap load otherwise).
    fn settle(&self) {
        // SeqCst on both sides (here and in `watch`/`settled`): with weaker
        // orderings the watcher could read the old count while this reads the
        // old flag, and the wake-up would be lost.
        if self.watched.load(Ordering::SeqCst) {
            self.settled.notify_waiters();
        }
    }

    /// The notification of messages being done with, from now on.
    #[cfg(feature = "testing")]
    pub(crate) fn watch(&self) -> &Notify {
        self.watched.store(true, Ordering::SeqCst);
        &self.settled
    }

    /// How many messages are done with: handled, failed or left unfinished.
    #[cfg(feature = "testing")]
    pub(crate) fn settled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
            + self.failed.load(Ordering::SeqCst)
            + self.unfinished.load(Ordering::SeqCst)
    }

    /// The counters now.
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            received: get(&self.received),
            handled: get(&self.handled),
            failed: get(&self.failed),
            retried: get(&self.retried),
            permanent: get(&self.permanent),
            dead_lettered: get(&self.dead_lettered),
            timed_out: get(&self.timed_out),
            panicked: get(&self.panicked),
            unfinished: get(&self.unfinished),
            decode_failed: get(&self.decode_failed),
        }
    }
}
