//! [`DeadLetter`]: a message that finally failed is published to a
//! dead-letter subject, saying why, instead of being lost or redelivered
//! without end.

use std::future::Future;

use async_trait::async_trait;
use switchboard_core::{Message, Subject};

use crate::error::one_line;
use crate::{Context, Handler, HandlerError, Layer};

/// The header a dead letter carries with the subject the message was first published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "switchboard-original-subject";
/// The header a dead letter carries with how many attempts were made.
pub const ATTEMPTS_HEADER: &str = "switchboard-attempts";
/// The header a dead letter carries with the last error, as one line
/// (URL passwords redacted).
pub const ERROR_HEADER: &str = "switchboard-error";
/// The header a dead letter carries with the pattern of the route that gave up.
pub const ROUTE_HEADER: &str = "switchboard-route";
/// The header a dead letter carries with `true` when the last error was
/// [permanent](HandlerError::is_permanent) (so it was not retried, and
/// handling the message again as it is would fail again), else `false`.
pub const PERMANENT_HEADER: &str = "switchboard-permanent";
/// The longest [`ERROR_HEADER`] value, in bytes.
pub const MAX_ERROR_HEADER_LEN: usize = 1000;

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
/// [`ATTEMPTS_HEADER`], [`ERROR_HEADER`], [`PERMANENT_HEADER`] and
/// [`ROUTE_HEADER`]) and returns `Ok`, so the worker acknowledges the
/// original. If publishing fails, that error is returned and the message is
/// not acknowledged. A dead-lettered request is also answered with an error
/// reply (400 when the error was permanent, else 500; see
/// [`Context::reply_error`]), so its requester does not wait out its timeout.
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
        letter(&self.subject, ctx, error)
    }
}

/// The dead letter to `subject` for `ctx`'s message after `error`.
fn letter(
    subject: &DeadLetterSubject,
    ctx: &Context,
    error: &HandlerError,
) -> Result<Message, HandlerError> {
    let original = ctx.message();
    let subject = subject.resolve(original.subject())?;
    let attempts = error.attempts().unwrap_or(ctx.attempt().max(1));
    let mut headers = original.headers().clone();
    headers.insert(ORIGINAL_SUBJECT_HEADER, original.subject().as_str())?;
    headers.insert(ATTEMPTS_HEADER, attempts.to_string())?;
    // Redacted before it is cut: a password cut short would escape redaction.
    headers.insert(
        ERROR_HEADER,
        one_line(
            &switchboard_core::redact_text(&error.last().to_string()),
            MAX_ERROR_HEADER_LEN,
        ),
    )?;
    headers.insert(PERMANENT_HEADER, error.is_permanent().to_string())?;
    headers.insert(ROUTE_HEADER, ctx.route())?;
    Ok(Message::from_parts(
        subject,
        original.payload().clone(),
        headers,
    ))
}

/// What [`DeadLetter`] does once `handled` (the inner handler on `ctx`) is
/// over. Shared with the route's default stack, which runs it without a box
/// of its own.
pub(crate) async fn dead_lettering(
    subject: &DeadLetterSubject,
    ctx: &Context,
    handled: impl Future<Output = Result<(), HandlerError>>,
) -> Result<(), HandlerError> {
    let error = match handled.await {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    // A durable route's broker delivers it again: dead-letter on the last delivery.
    if !error.is_permanent() && !ctx.is_last_delivery() {
        return Err(error);
    }
    let letter = letter(subject, ctx, &error)?;
    let target = letter.subject().clone();
    // Not dead-lettered: the message goes back to the broker with both
    // reasons (a refused letter is no reason to reject the message itself).
    send_letter(ctx, letter).await.map_err(|send| {
        HandlerError::new(format!(
            "{error}; its dead letter to {target} could not be sent: {send}"
        ))
    })?;
    ctx.counters().add_dead_lettered();
    tracing::warn!(dead_letter = %target, permanent = error.is_permanent(), %error, "message dead-lettered");
    if ctx.is_request() {
        // Handled as far as the broker goes, but its requester gets no
        // answer: say so now rather than after its timeout.
        let code = crate::context::failure_code(error.is_permanent());
        // Whole: the error reply redacts it before cutting it to one line.
        let description = error.last().to_string();
        if let Err(reply_error) = ctx.reply_error(code, &description).await {
            tracing::warn!(error = %reply_error, "the error reply to the request could not be sent; the requester waits out its timeout");
        }
    }
    Ok(())
}

/// How long a dead letter that could not be sent (the broker was away, the
/// flush timed out) is tried again before the message is given back.
const LETTER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Publishes `letter` and flushes, trying again while the failure is
/// temporary, for up to [`LETTER_PATIENCE`]: the letter is sent on the
/// message's last delivery, so a failure given up at once (a connection cut
/// during the flush) nacked a message the broker would not deliver again,
/// and it was lost, logged as "nacked for redelivery".
async fn send_letter(ctx: &Context, letter: Message) -> Result<(), HandlerError> {
    let started = tokio::time::Instant::now();
    let mut backoff = switchboard_core::Backoff::DEFAULT.attempts();
    loop {
        let sent = async {
            ctx.publish(letter.clone()).await?;
            // The original is acknowledged once this returns: make sure the broker has the letter.
            ctx.broker().flush().await
        };
        let error = match sent.await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let delay = backoff.failed();
        if !error.is_temporary() || started.elapsed() + delay > LETTER_PATIENCE {
            return Err(error.into());
        }
        tracing::warn!(dead_letter = %letter.subject(), %error, "sending the dead letter failed; trying again in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl<H: Handler> Handler for DeadLetter<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        dead_lettering(&self.subject, &ctx, self.inner.call(ctx.clone())).await
    }
}

/// The [`Layer`] of [`DeadLetter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterLayer {
    subject: DeadLetterSubject,
}

impl DeadLetterLayer {
    /// Dead-letters to `dlq.<subject>`.
    pub fn new() -> Self {
        DeadLetterLayer::default()
    }

    /// Dead-letters to `subject` instead (see [`DeadLetterSubject`]).
    pub fn to(subject: DeadLetterSubject) -> Self {
        DeadLetterLayer { subject }
    }
}

impl<H: Handler> Layer<H> for DeadLetterLayer {
    type Handler = DeadLetter<H>;

    fn layer(&self, inner: H) -> DeadLetter<H> {
        DeadLetter::new(inner).to(self.subject.clone())
    }
}
