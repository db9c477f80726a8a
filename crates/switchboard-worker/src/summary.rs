//! What a worker did: the [`Summary`] it returns when it stops, why it
//! stopped, and the messages it left unfinished.

use std::fmt;
use std::time::Duration;

use switchboard_core::Subject;

use crate::Stats;

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Shutdown was asked (signal, token, [`Running::shutdown`](crate::Running::shutdown)).
    Shutdown,
    /// The `max_messages` were done.
    MaxMessages,
    /// Every subscription ended (e.g. the broker handle was closed).
    SubscriptionsEnded,
}

/// A message the worker did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unfinished {
    /// The route's pattern.
    pub route: String,
    /// The message's subject.
    pub subject: Subject,
    /// Whether its handler had started (otherwise it was still buffered).
    pub started: bool,
    /// Whether it was nacked for redelivery (false where the broker cannot redeliver).
    pub requeued: bool,
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Summary {
    /// The counters at the end.
    pub stats: Stats,
    /// Messages left unfinished (grace period over, or buffered at shutdown).
    pub unfinished: Vec<Unfinished>,
    /// Why it stopped.
    pub reason: StopReason,
    /// What went wrong while shutting down (flush, unsubscribe, close).
    pub errors: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker stopped after {:.1?}: {}",
            self.elapsed, self.stats
        )?;
        if !self.unfinished.is_empty() {
            let requeued = self.unfinished.iter().filter(|u| u.requeued).count();
            write!(
                f,
                "; unfinished: {} ({} requeued, {} not redeliverable)",
                self.unfinished
                    .iter()
                    .map(|u| u.subject.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                requeued,
                self.unfinished.len() - requeued
            )?;
        }
        Ok(())
    }
}
