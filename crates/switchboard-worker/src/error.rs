//! The worker's errors: [`Error`] (setting up and running a worker) and
//! [`HandlerError`] (one message could not be handled).

use std::time::Duration;

use switchboard_core::BoxError;

/// Something went wrong setting up or starting a [`Worker`](crate::Worker).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker has no route, so it would do nothing.
    #[error("the worker has no routes; add one with `on(pattern, handler)`")]
    NoRoutes,
    /// A route's settings are invalid (pattern, queue group, dead-letter subject...).
    #[error("route {pattern:?}: {reason}")]
    InvalidRoute {
        /// The route's pattern, as given.
        pattern: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Routes would hand messages round in a loop (see [`find_cycle`](crate::find_cycle)):
    /// one message would be forwarded or dead-lettered without end.
    #[error("routes form a loop: {0}; a message entering it would go round without end — publish or dead-letter to a subject none of these routes receives, or turn the dead letter off (`Route::no_dead_letter`)")]
    Cycle(crate::RouteCycle),
    /// Subscribing a route failed: the message says why (a feature the
    /// broker lacks, a refusal...), as `source` does.
    #[error("cannot subscribe route {pattern:?}: {source}")]
    Subscribe {
        /// The route's pattern.
        pattern: String,
        /// The broker's error.
        #[source]
        source: switchboard_core::Error,
    },
    /// The metrics and health server cannot listen on its address (see
    /// [`Running::serve_metrics`](crate::Running::serve_metrics)).
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why: the port is taken, the address is not this host's...
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the worker's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why handling one message failed.
///
/// A handler returns it (any error converts with [`HandlerError::new`] or `?`
/// in a closure returning `Result<(), E>` with `E: Into<BoxError>`); the
/// layers add their own: [`Timeout`](HandlerError::Timeout) from
/// [`Timeout`](crate::Timeout), [`Panicked`](HandlerError::Panicked) from
/// [`CatchPanic`](crate::CatchPanic), [`Exhausted`](HandlerError::Exhausted)
/// from [`Retry`](crate::Retry).
///
/// An error is either temporary (trying again may succeed) or
/// [permanent](HandlerError::is_permanent): [`Retry`](crate::Retry) does not
/// retry a permanent error, and [`DeadLetter`](crate::DeadLetter) marks its
/// letter with [`PERMANENT_HEADER`](crate::PERMANENT_HEADER).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler failed; trying again may succeed.
    #[error("{0}")]
    Failed(BoxError),
    /// The handler failed in a way retrying cannot fix: [`Retry`](crate::Retry)
    /// gives up at once (the message still goes to the dead-letter subject).
    #[error("{0}")]
    Permanent(BoxError),
    /// The attempt did not finish in time (it was cancelled).
    #[error("timed out after {after:?}")]
    Timeout {
        /// The time limit.
        after: Duration,
    },
    /// The handler panicked.
    #[error("panicked: {message}")]
    Panicked {
        /// The panic message, if it was text.
        message: String,
    },
    /// [`Retry`](crate::Retry) gave up: every attempt failed, or one failed
    /// with a permanent error.
    #[error("{}", gave_up(*attempts, last))]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<HandlerError>,
    },
    /// A switchboard operation of the handler or a layer failed (publishing,
    /// decoding a payload...): permanent when the error is not
    /// [temporary](switchboard_core::Error::is_temporary) — an invalid
    /// subject or header, a payload that does not decode, an unsupported
    /// feature, a closed broker handle.
    #[error("{0}")]
    Broker(switchboard_core::Error),
}

/// How [`HandlerError::Exhausted`] reads.
fn gave_up(attempts: u32, last: &HandlerError) -> String {
    if last.is_permanent() {
        format!("gave up after {attempts} attempt(s), not retrying a permanent error: {last}")
    } else {
        format!("gave up after {attempts} attempt(s): {last}")
    }
}

impl HandlerError {
    /// A failure from any error (or a `String`/`&str`): temporary, unless it
    /// is a switchboard [`Error`](switchboard_core::Error) that is not
    /// temporary (it becomes [`HandlerError::Broker`]). A boxed
    /// `HandlerError` is unboxed rather than wrapped.
    pub fn new(error: impl Into<BoxError>) -> Self {
        let error: BoxError = error.into();
        let error = match error.downcast::<HandlerError>() {
            Ok(handler_error) => return *handler_error,
            Err(other) => other,
        };
        match error.downcast::<switchboard_core::Error>() {
            Ok(switchboard_error) => HandlerError::Broker(*switchboard_error),
            Err(other) => HandlerError::Failed(other),
        }
    }

    /// A failure that must not be retried: the input is wrong, and handling
    /// it again would fail again.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError::Permanent(error.into())
    }

    /// Whether retrying cannot help: a [`Permanent`](HandlerError::Permanent)
    /// error, a switchboard error that is not
    /// [temporary](switchboard_core::Error::is_temporary), or an
    /// [`Exhausted`](HandlerError::Exhausted) whose last error is one of those.
    pub fn is_permanent(&self) -> bool {
        match self {
            HandlerError::Permanent(_) => true,
            HandlerError::Broker(error) => !error.is_temporary(),
            HandlerError::Exhausted { last, .. } => last.is_permanent(),
            HandlerError::Failed(_)
            | HandlerError::Timeout { .. }
            | HandlerError::Panicked { .. } => false,
        }
    }

    /// Whether trying again may help ([`Retry`](crate::Retry) asks this): not
    /// [permanent](HandlerError::is_permanent), and not already given up on
    /// by a `Retry`.
    pub fn is_retryable(&self) -> bool {
        !self.is_permanent() && !matches!(self, HandlerError::Exhausted { .. })
    }

    /// How many attempts were made, if a [`Retry`](crate::Retry) layer counted them.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            HandlerError::Exhausted { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    /// The error of the last attempt: itself, or the last error inside
    /// [`Exhausted`](HandlerError::Exhausted).
    pub fn last(&self) -> &HandlerError {
        match self {
            HandlerError::Exhausted { last, .. } => last.last(),
            other => other,
        }
    }

    /// The message as one line of at most `max` bytes, safe for a header:
    /// line breaks and control characters become spaces, runs of spaces collapse.
    pub fn one_line(&self, max: usize) -> String {
        one_line(&self.to_string(), max)
    }
}

impl From<switchboard_core::Error> for HandlerError {
    fn from(error: switchboard_core::Error) -> Self {
        HandlerError::Broker(error)
    }
}

/// `text` as one line of at most `max` bytes (cut on a character boundary,
/// ending with `…` when cut).
pub(crate) fn one_line(text: &str, max: usize) -> String {
    switchboard_core::Headers::one_line_value(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_sanitizes() {
        assert_eq!(one_line("a\r\nb\t\0c  d\n", 100), "a b c d");
        assert_eq!(one_line("héllo wörld", 7), "hél…");
        assert!(one_line(&"x".repeat(5000), 1000).len() <= 1000);
    }

    #[test]
    fn new_unwraps_handler_errors() {
        let boxed: BoxError = Box::new(HandlerError::Timeout {
            after: Duration::from_secs(1),
        });
        assert!(matches!(
            HandlerError::new(boxed),
            HandlerError::Timeout { .. }
        ));
        assert!(matches!(HandlerError::new("boom"), HandlerError::Failed(_)));
    }

    #[test]
    fn switchboard_errors_are_permanent_unless_temporary() {
        let invalid = switchboard_core::Subject::new("a..b").unwrap_err();
        let from_box = HandlerError::new(invalid);
        assert!(matches!(from_box, HandlerError::Broker(_)));
        assert!(from_box.is_permanent());
        assert!(!from_box.is_retryable());
        let lost = HandlerError::from(switchboard_core::Error::Disconnected {
            broker: "memory",
            reason: "test".into(),
        });
        assert!(!lost.is_permanent());
        assert!(lost.is_retryable());
        assert!(HandlerError::permanent("bad input").is_permanent());
        assert!(!HandlerError::new("flaky").is_permanent());
        let gave_up = HandlerError::Exhausted {
            attempts: 1,
            last: Box::new(HandlerError::permanent("bad input")),
        };
        assert!(gave_up.is_permanent());
        assert_eq!(
            gave_up.to_string(),
            "gave up after 1 attempt(s), not retrying a permanent error: bad input"
        );
        let gave_up = HandlerError::Exhausted {
            attempts: 3,
            last: Box::new(HandlerError::new("flaky")),
        };
        assert!(!gave_up.is_permanent());
        assert!(!gave_up.is_retryable());
        assert_eq!(gave_up.to_string(), "gave up after 3 attempt(s): flaky");
    }

    /// `eprintln!("error: {e}")` says why a route could not subscribe (it
    /// said only which route, the reason left to `source()`).
    #[test]
    fn a_subscribe_error_says_why() {
        let error = Error::Subscribe {
            pattern: "alerts.>".into(),
            source: switchboard_core::Error::unsupported("mqtt", "durable subscriptions"),
        };
        assert_eq!(
            error.to_string(),
            "cannot subscribe route \"alerts.>\": mqtt does not support durable subscriptions"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
