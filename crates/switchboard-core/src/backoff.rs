//! [`Backoff`]: how long an adapter waits between reconnection attempts.

use std::time::Duration;

/// The delays between reconnection attempts: the first attempt goes at once,
/// a failed one waits `min`, and each further failure doubles the wait up to
/// `max`; a success starts over. Every adapter reconnects on this schedule
/// ([`Backoff::DEFAULT`] unless its options say otherwise), so an outage
/// costs the same on every broker and a broker that is down is not hammered.
///
/// There is no jitter: the reconnects of one process are spread by the
/// moments their connections broke, and a schedule that is the same on every
/// run keeps fault tests predictable.
///
/// ```
/// use std::time::Duration;
/// use switchboard_core::Backoff;
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// let delays: Vec<u64> = (1..=6)
///     .map(|attempt| backoff.before(attempt).as_millis() as u64)
///     .collect();
/// assert_eq!(delays, [0, 100, 200, 400, 800, 1000]);
///
/// let mut attempts = backoff.attempts();
/// assert_eq!(attempts.failed(), Duration::from_millis(100));
/// assert_eq!(attempts.failed(), Duration::from_millis(200));
/// attempts.succeeded();
/// assert_eq!(attempts.failed(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// 100 ms doubling to 5 s: the schedule of every adapter unless configured.
    pub const DEFAULT: Backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// Waits `min` after the first failure, doubling up to `max` (a `max`
    /// below `min` is read as `min`; a zero `min` as 1 ms, so a broker that is
    /// down is never retried in a tight loop).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
        }
    }

    /// The wait after the first failed attempt.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest wait between two attempts.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait before attempt number `attempt` of one outage, counting from
    /// 1: zero before the first, `min` before the second, then doubling up to
    /// `max`. For client libraries that ask for a delay per attempt.
    pub fn before(&self, attempt: usize) -> Duration {
        match attempt {
            0 | 1 => Duration::ZERO,
            n => {
                let doublings = u32::try_from(n - 2).unwrap_or(u32::MAX).min(31);
                self.min
                    .checked_mul(1 << doublings)
                    .map_or(self.max, |delay| delay.min(self.max))
            }
        }
    }

    /// A counter for one connection's attempts, for adapters that run their
    /// own reconnect loop.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            backoff: *self,
            next: self.min,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// The state of one reconnect loop on a [`Backoff`] schedule.
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    next: Duration,
}

impl Attempts {
    /// An attempt failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.backoff.max);
        delay
    }

    /// An attempt succeeded: the next outage starts from `min` again.
    pub fn succeeded(&mut self) {
        self.next = self.backoff.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_and_starts_over() {
        let backoff = Backoff::DEFAULT;
        let mut attempts = backoff.attempts();
        let waits: Vec<Duration> = (0..8).map(|_| attempts.failed()).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        attempts.succeeded();
        assert_eq!(attempts.failed(), ms(100));
        assert_eq!(backoff.before(1), Duration::ZERO);
        assert_eq!(backoff.before(2), ms(100));
        assert_eq!(backoff.before(8), ms(5000));
        assert_eq!(backoff.before(usize::MAX), ms(5000), "no overflow");
    }

    #[test]
    fn bounds_are_kept_sane() {
        let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.min(), Duration::from_millis(1));
        assert_eq!(backoff.max(), Duration::from_millis(1));
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.max(), Duration::from_secs(2));
    }
}
