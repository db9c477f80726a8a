//! [`Retry`]: tries a failed attempt again, with exponential backoff and
//! jitter, unless its error is permanent.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Context, Handler, HandlerError, Layer};

/// When and how often [`Retry`] tries again: up to `attempts` tries in all,
/// waiting `initial_backoff`, then twice as long each time (capped at
/// `max_backoff`), each wait shortened by a random part of up to `jitter`
/// (0.0 to 1.0) so that workers retrying together spread out.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total tries, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// How much each wait grows (2.0 doubles it).
    pub multiplier: f64,
    /// Up to which fraction of each wait is taken off at random (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms then 200 ms (up to 10 s), jitter 0.2.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `attempts` tries in all (at least 1).
    pub fn new(attempts: u32) -> Self {
        RetryPolicy::default().attempts(attempts)
    }

    /// No retry: one attempt.
    pub fn never() -> Self {
        RetryPolicy::new(1)
    }

    /// Sets the total number of tries (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Sets the wait before the first retry.
    pub fn backoff(mut self, initial: Duration) -> Self {
        self.initial_backoff = initial;
        self
    }

    /// Sets the longest wait.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Sets the growth factor of the waits (at least 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the random part (0.0 for none, up to 1.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The wait after failed attempt `attempt` (from 1), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.max(1.0).powi(exponent);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        let max = self.max_backoff.as_secs_f64();
        Duration::try_from_secs_f64(secs.min(max)).unwrap_or(self.max_backoff)
    }

    /// The wait after failed attempt `attempt` (from 1), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 {
            return base;
        }
        let cut = self.jitter.clamp(0.0, 1.0) * rand::random::<f64>();
        base.mul_f64(1.0 - cut)
    }
}

/// Retries failed attempts as its [`RetryPolicy`] says, passing the attempt
/// number in [`Context::attempt`] and recording it on the current tracing span.
///
/// When it gives up it returns [`HandlerError::Exhausted`] with the count and
/// the last error: after the policy's attempts, or at once when an attempt
/// failed with a [permanent](HandlerError::is_permanent) error — a
/// [`HandlerError::permanent`] one, or a switchboard error that is not
/// temporary, such as a payload that does not decode or an invalid subject —
/// which it counts in [`Stats::permanent`](crate::Stats::permanent).
#[derive(Debug, Clone)]
pub struct Retry<H> {
    inner: H,
    policy: RetryPolicy,
}

impl<H> Retry<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// What [`Retry`] does: calls `attempt` with a copy of `ctx` numbered for
/// each try, as `policy` says. Shared with the route's default stack, which
/// runs it without a box of its own.
pub(crate) async fn retrying<F, Fut>(
    policy: &RetryPolicy,
    ctx: &Context,
    mut attempt: F,
) -> Result<(), HandlerError>
where
    F: FnMut(Context) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let first = ctx.attempt().max(1);
    record_attempt(first);
    let result = attempt(ctx.clone().with_attempt(first)).await;
    retrying_after(policy, ctx, result, attempt).await
}

/// Records the number of a retry on the current tracing span.
///
/// The first attempt is not recorded: the worker's `switchboard.message`
/// span starts at `attempt=1`, and the text log format appends each value
/// recorded, so every line of every message read `attempt=1 attempt=1`
/// (and looking up the current span cost each message a registry update
/// with INFO on). A retry's number is recorded: the line then reads
/// `attempt=1 attempt=2`, the attempts so far.
pub(crate) fn record_attempt(number: u32) {
    // With INFO off everywhere no span can have the field: skip the
    // look-up of the current span (about 80 instructions).
    if number > 1 && tracing::level_enabled!(tracing::Level::INFO) {
        tracing::Span::current().record("attempt", number);
    }
}

/// [`retrying`] once the first attempt (numbered `ctx.attempt()`, at
/// least 1) ended with `result`: the route's default stack makes that
/// attempt itself, so that a message handled at once skips this future.
pub(crate) async fn retrying_after<F, Fut>(
    policy: &RetryPolicy,
    ctx: &Context,
    result: Result<(), HandlerError>,
    mut attempt: F,
) -> Result<(), HandlerError>
where
    F: FnMut(Context) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let mut error = match result {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let attempts = policy.attempts.max(1);
    let first = ctx.attempt().max(1);
    let mut number = first;
    loop {
        let tried = number - first + 1;
        if error.is_permanent() {
            tracing::warn!(attempt = number, %error, "attempt failed with a permanent error; not retrying");
            ctx.counters().add_permanent();
        } else if tried >= attempts || !error.is_retryable() {
            tracing::warn!(attempt = number, %error, "attempt failed; giving up");
        } else {
            let delay = policy.delay(tried);
            tracing::info!(attempt = number, %error, ?delay, "attempt failed; retrying");
            ctx.counters().add_retried();
            tokio::time::sleep(delay).await;
            number += 1;
            record_attempt(number);
            error = match attempt(ctx.clone().with_attempt(number)).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            continue;
        }
        return Err(HandlerError::Exhausted {
            attempts: tried,
            last: Box::new(error),
        });
    }
}

#[async_trait]
impl<H: Handler> Handler for Retry<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        retrying(&self.policy, &ctx, |ctx| self.inner.call(ctx)).await
    }
}

/// The [`Layer`] of [`Retry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries as `policy` says.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }
}

impl<H: Handler> Layer<H> for RetryLayer {
    type Handler = Retry<H>;

    fn layer(&self, inner: H) -> Retry<H> {
        Retry::new(inner, self.policy)
    }
}
