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
    /// Subscribing a route failed.
    #[error("cannot subscribe route {pattern:?}")]
    Subscribe {
        /// The route's pattern.
        pattern: String,
        /// The broker's error.
        #[source]
        source: switchboard_core::Error,
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
    /// [`Retry`](crate::Retry) gave up: every attempt failed.
    #[error("gave up after {attempts} attempt(s): {last}")]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<HandlerError>,
    },
    /// A broker operation of the handler or a layer failed (e.g. publishing).
    #[error("{0}")]
    Broker(switchboard_core::Error),
}

impl HandlerError {
    /// A retryable failure from any error (or a `String`/`&str`). A boxed
    /// `HandlerError` is unboxed rather than wrapped.
    pub fn new(error: impl Into<BoxError>) -> Self {
        let error: BoxError = error.into();
        match error.downcast::<HandlerError>() {
            Ok(handler_error) => *handler_error,
            Err(other) => HandlerError::Failed(other),
        }
    }

    /// A failure that must not be retried.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError::Permanent(error.into())
    }

    /// Whether trying again may help ([`Retry`](crate::Retry) asks this).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            HandlerError::Permanent(_) | HandlerError::Exhausted { .. }
        )
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
    let mut out = String::with_capacity(text.len().min(max));
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while cut > 0 && !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
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
}
