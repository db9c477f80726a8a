//! The layers: [`Retry`], [`Timeout`], [`CatchPanic`] and [`DeadLetter`], each
//! a [`Handler`] wrapping another, usable alone and in any order.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use switchboard_core::{Message, Subject};

use crate::error::one_line;
use crate::{Context, Handler, HandlerError};

/// The header a dead letter carries with the subject the message was first published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "switchboard-original-subject";
/// The header a dead letter carries with how many attempts were made.
pub const ATTEMPTS_HEADER: &str = "switchboard-attempts";
/// The header a dead letter carries with the last error, as one line.
pub const ERROR_HEADER: &str = "switchboard-error";
/// The header a dead letter carries with the pattern of the route that gave up.
pub const ROUTE_HEADER: &str = "switchboard-route";
/// The longest [`ERROR_HEADER`] value, in bytes.
pub const MAX_ERROR_HEADER_LEN: usize = 1000;

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
/// When every attempt failed it returns [`HandlerError::Exhausted`] with the
/// count and the last error; a [`HandlerError::Permanent`] error is not retried.
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

#[async_trait]
impl<H: Handler> Handler for Retry<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let attempts = self.policy.attempts.max(1);
        let first = ctx.attempt().max(1);
        let mut attempt = first;
        loop {
            tracing::Span::current().record("attempt", attempt);
            let error = match self.inner.call(ctx.clone().with_attempt(attempt)).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let tried = attempt - first + 1;
            if tried >= attempts || !error.is_retryable() {
                tracing::warn!(attempt, %error, "attempt failed; giving up");
                return Err(HandlerError::Exhausted {
                    attempts: tried,
                    last: Box::new(error),
                });
            }
            let delay = self.policy.delay(tried);
            tracing::info!(attempt, %error, ?delay, "attempt failed; retrying");
            ctx.counters().add_retried();
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Fails an attempt that takes longer than a limit with
/// [`HandlerError::Timeout`], cancelling it (dropping its future, which for
/// example kills a child process spawned with `kill_on_drop`).
#[derive(Debug, Clone)]
pub struct Timeout<H> {
    inner: H,
    after: Duration,
}

impl<H> Timeout<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, after: Duration) -> Self {
        Timeout { inner, after }
    }
}

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters_ctx = ctx.clone();
        match tokio::time::timeout(self.after, self.inner.call(ctx)).await {
            Ok(result) => result,
            Err(_) => {
                counters_ctx.counters().add_timed_out();
                Err(HandlerError::Timeout { after: self.after })
            }
        }
    }
}

/// Turns a panic in the inner handler into [`HandlerError::Panicked`]: the
/// attempt fails and the worker keeps running.
#[derive(Debug, Clone)]
pub struct CatchPanic<H> {
    inner: H,
}

impl<H> CatchPanic<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        CatchPanic { inner }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_string()
    }
}

#[async_trait]
impl<H: Handler> Handler for CatchPanic<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let counters_ctx = ctx.clone();
        match AssertUnwindSafe(self.inner.call(ctx)).catch_unwind().await {
            Ok(result) => result,
            Err(payload) => {
                counters_ctx.counters().add_panicked();
                Err(HandlerError::Panicked {
                    message: panic_message(&*payload),
                })
            }
        }
    }
}

/// Where [`DeadLetter`] publishes: a subject template in which `{subject}`
/// stands for the message's subject. The default is `dlq.{subject}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSubject(String);

impl DeadLetterSubject {
    /// The default template, `dlq.{subject}`.
    pub const DEFAULT: &'static str = "dlq.{subject}";

    /// A template; checked now when it has no `{subject}`, otherwise when used.
    pub fn new(template: impl Into<String>) -> switchboard_core::Result<Self> {
        let template = template.into();
        let probe = template.replace("{subject}", "x");
        Subject::new(&probe).map_err(|_| switchboard_core::Error::InvalidSubject {
            subject: template.clone(),
            reason: "not a valid dead-letter subject; use dot-separated tokens, optionally with `{subject}`, e.g. `dlq.{subject}`".into(),
        })?;
        Ok(DeadLetterSubject(template))
    }

    /// The subject for a message published to `original`.
    pub fn resolve(&self, original: &Subject) -> switchboard_core::Result<Subject> {
        Subject::new(&self.0.replace("{subject}", original.as_str()))
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DeadLetterSubject {
    fn default() -> Self {
        DeadLetterSubject(Self::DEFAULT.to_string())
    }
}

/// When the inner handler fails, publishes the message to a dead-letter
/// subject (payload and headers kept, plus [`ORIGINAL_SUBJECT_HEADER`],
/// [`ATTEMPTS_HEADER`], [`ERROR_HEADER`] and [`ROUTE_HEADER`]) and returns
/// `Ok`, so the worker acknowledges the original. If publishing fails, that
/// error is returned and the message is not acknowledged.
#[derive(Debug, Clone)]
pub struct DeadLetter<H> {
    inner: H,
    subject: DeadLetterSubject,
}

impl<H> DeadLetter<H> {
    /// Wraps `inner`, publishing to `dlq.<subject>`.
    pub fn new(inner: H) -> Self {
        DeadLetter {
            inner,
            subject: DeadLetterSubject::default(),
        }
    }

    /// Publishes to `subject` instead (see [`DeadLetterSubject`]).
    pub fn to(mut self, subject: DeadLetterSubject) -> Self {
        self.subject = subject;
        self
    }

    /// The dead letter for `ctx`'s message after `error`.
    pub fn letter(&self, ctx: &Context, error: &HandlerError) -> Result<Message, HandlerError> {
        let original = ctx.message();
        let subject = self.subject.resolve(original.subject())?;
        let attempts = error.attempts().unwrap_or(ctx.attempt().max(1));
        let mut headers = original.headers().clone();
        headers.insert(ORIGINAL_SUBJECT_HEADER, original.subject().as_str())?;
        headers.insert(ATTEMPTS_HEADER, attempts.to_string())?;
        headers.insert(
            ERROR_HEADER,
            one_line(&error.last().to_string(), MAX_ERROR_HEADER_LEN),
        )?;
        headers.insert(ROUTE_HEADER, ctx.route())?;
        Ok(Message::from_parts(
            subject,
            original.payload().clone(),
            headers,
        ))
    }
}

#[async_trait]
impl<H: Handler> Handler for DeadLetter<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let error = match self.inner.call(ctx.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let letter = self.letter(&ctx, &error)?;
        let target = letter.subject().clone();
        ctx.publish(letter).await?;
        // The original is acknowledged once this returns: make sure the broker has the letter.
        ctx.broker().flush().await?;
        ctx.counters().add_dead_lettered();
        tracing::warn!(dead_letter = %target, %error, "message dead-lettered");
        Ok(())
    }
}
