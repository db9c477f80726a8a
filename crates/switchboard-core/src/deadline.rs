//! Deadlines from durations a caller chose, which may be as large as
//! `Duration::MAX`.

use std::time::Duration;

use tokio::time::Instant;

/// How far off a deadline that would not fit in an [`Instant`] is put: far
/// enough to mean "never" to any program, near enough never to overflow.
const FAR_OFF: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);

/// The instant `after` from now; a duration too large to add (a caller's
/// `Duration::MAX` for "wait as long as it takes") gives a deadline thirty
/// years off, where `Instant::now() + after` panicked.
///
/// ```
/// use std::time::Duration;
/// let never = switchboard_core::deadline(Duration::MAX);
/// assert!(never > tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365));
/// ```
pub fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now + FAR_OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_now_plus_the_duration_or_far_off() {
        let before = Instant::now();
        let soon = deadline(Duration::from_millis(5));
        assert!(soon >= before + Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
        assert!(deadline(Duration::MAX) >= before + FAR_OFF);
    }
}
