//! A route: a pattern, an optional queue group, a concurrency limit and the
//! handler stack messages go through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Durable, Pattern, QueueGroup, Subject, DEFAULT_ACK_WAIT};

use crate::contract::Contract;
use crate::cycle::Via;
use crate::layer::{BoxLayer, DefaultStack};
use crate::route_loop::{Erased, Looped};
use crate::{BoxHandler, DeadLetterSubject, Error, Handler, RetryPolicy};

/// The largest [`Route::concurrency`]: the router's semaphore (tokio's)
/// holds at most this many permits (`2^61 - 1` on 64-bit targets).
pub const MAX_CONCURRENCY: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The per-route concurrency limit unless set: one message at a time, in order.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// The per-attempt time limit unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes a route's default stack for its handler's own type.
type Unboxed = Arc<dyn Fn(&Settings) -> Result<Arc<dyn Looped>, String> + Send + Sync>;

#[derive(Clone)]
enum Stack {
    /// The handler gets the default layers, configured by the route's settings.
    Default(Settings),
    /// The handler is used as given; `refused` lists the default-stack
    /// setters called anyway, which [`Route::prepare`] refuses.
    Custom { refused: Vec<&'static str> },
}

/// The settings of a route's default stack.
#[derive(Debug, Clone)]
struct Settings {
    retry: RetryPolicy,
    timeout: Option<Duration>,
    dead_letter: Option<String>,
}

impl Settings {
    /// `handler` in the default stack these settings describe, or why they are invalid.
    fn wrap<H: Handler>(&self, handler: Arc<H>) -> Result<Arc<DefaultStack<H>>, String> {
        if self.timeout.is_some_and(|limit| limit.is_zero()) {
            return Err("the timeout is zero, so every attempt would fail; give a positive limit, or none with `no_timeout()`".to_string());
        }
        let dead_letter = match &self.dead_letter {
            Some(template) => {
                Some(DeadLetterSubject::new(template.clone()).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        // What `DeadLetter(Retry(Timeout(CatchPanic(handler))))` does, as
        // one future rather than four nested boxes.
        Ok(Arc::new(DefaultStack {
            handler,
            retry: self.retry,
            timeout: self.timeout,
            dead_letter,
        }))
    }
}

/// A route of a [`Worker`](crate::Worker): messages matching `pattern` go to
/// a handler, at most `concurrency` at a time.
///
/// [`Route::new`] wraps the handler in the default stack, outermost first:
///
/// 1. [`DeadLetter`](crate::DeadLetter) — publishes what finally failed to `dlq.<subject>`
///    ([`Route::dead_letter`], [`Route::no_dead_letter`]);
/// 2. [`Retry`](crate::Retry) — 3 attempts, backoff from 100 ms doubling, with jitter
///    ([`Route::attempts`], [`Route::backoff`], [`Route::retry`]);
/// 3. [`Timeout`](crate::Timeout) — 30 s per attempt ([`Route::timeout`], [`Route::no_timeout`]);
/// 4. [`CatchPanic`](crate::CatchPanic) — a panic is a failed attempt;
/// 5. your handler.
///
/// [`Route::custom`] uses the handler exactly as given, to order or replace
/// layers yourself (e.g. `h.catch_panic().timeout(d).retry(p).dead_letter()`
/// is the default stack); the setters of the default stack are refused on it.
/// Either way the [`Worker::layer`](crate::Worker::layer)s wrap the route's
/// stack (see [where layers go](crate::layer#where-layers-go)), and the
/// router acknowledges a message whose stack returned `Ok`, nacks (or,
/// without redelivery, reports) one that returned `Err`, and also catches
/// panics escaping the stack.
///
/// A handler that publishes declares where with [`Route::publishes_to`], so
/// that the worker can refuse routes that would hand messages round in a loop
/// ([`find_cycle`](crate::find_cycle)).
///
/// Settings are checked when the worker starts ([`Error::InvalidRoute`],
/// [`Error::Cycle`]).
#[derive(Clone)]
pub struct Route {
    pub(crate) pattern: String,
    pub(crate) group: Option<String>,
    pub(crate) durable: Option<String>,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) concurrency: usize,
    /// Messages of one subject are handled in order at any concurrency.
    pub(crate) ordered_per_subject: bool,
    handler: BoxHandler,
    /// The default stack made for the handler's own type (no box per
    /// message), used when nothing wraps the handler in between: no schema
    /// check and no worker layers. `None` on a custom route.
    unboxed: Option<Unboxed>,
    stack: Stack,
    publishes: Vec<String>,
    /// Its payloads' codec, type and schema (see `Route::typed`, `Route::schema`).
    pub(crate) contract: Contract,
}

impl Route {
    /// A route to `handler` wrapped in the default stack.
    ///
    /// The stack is made for `handler`'s own type, so that its future is not
    /// boxed per message (see [`Handler::call_unboxed`]). Each handler type
    /// therefore adds its own copy of the route loop to the program: about
    /// 90 KB of code in a release build (BENCHMARKS.md, "Round six"). With
    /// many routes whose handlers are all of different types, passing
    /// `handler.boxed()` (a [`BoxHandler`]) makes them share one copy, for an
    /// allocation per message.
    pub fn new<H: Handler>(pattern: impl Into<String>, handler: H) -> Self {
        let handler = Arc::new(handler);
        let unboxed: Unboxed = {
            let handler = handler.clone();
            Arc::new(move |settings: &Settings| {
                let stack: Arc<dyn Looped> = settings.wrap(handler.clone())?;
                Ok(stack)
            })
        };
        Route::with_stack(
            pattern.into(),
            handler,
            Some(unboxed),
            Stack::Default(Settings {
                retry: RetryPolicy::default(),
                timeout: Some(DEFAULT_TIMEOUT),
                dead_letter: Some(DeadLetterSubject::DEFAULT.to_string()),
            }),
        )
    }

    /// A route with the defaults of everything but its handler and stack.
    fn with_stack(
        pattern: String,
        handler: BoxHandler,
        unboxed: Option<Unboxed>,
        stack: Stack,
    ) -> Self {
        Route {
            pattern,
            group: None,
            durable: None,
            max_deliver: None,
            concurrency: DEFAULT_CONCURRENCY,
            ordered_per_subject: false,
            handler,
            unboxed,
            publishes: Vec::new(),
            contract: Contract::default(),
            stack,
        }
    }

    /// A route to `handler` used as given: no layer is added. The settings
    /// of the default stack ([`Route::retry`], [`Route::attempts`],
    /// [`Route::backoff`], [`Route::timeout`], [`Route::no_timeout`],
    /// [`Route::dead_letter`], [`Route::no_dead_letter`]) would do nothing
    /// here, so the worker refuses to start with them
    /// ([`Error::InvalidRoute`] naming the setter): wrap the handler in the
    /// layers you want instead.
    pub fn custom(pattern: impl Into<String>, handler: impl Handler) -> Self {
        // Boxed: a custom stack is run as a `dyn Handler` (a stack made for
        // the handler's type would be code the route never runs).
        Route::with_stack(
            pattern.into(),
            Arc::new(handler),
            None,
            Stack::Custom {
                refused: Vec::new(),
            },
        )
    }

    /// Subscribes as durable consumer `name` (letters, digits, `-`, `_`):
    /// messages published while the worker is away are kept for it, and
    /// each is acknowledged only after the handler stack (or its dead
    /// letter) finished, so a crash means a redelivery, not a loss. Workers
    /// with the same durable name share its messages. Needs a broker with
    /// [`Capabilities::durable`](switchboard_core::Capabilities::durable); not
    /// combined with [`Route::group`]. The consumer's ack wait is the
    /// longest the default stack may take (attempts × timeout, plus the
    /// backoff), at least [`DEFAULT_ACK_WAIT`](switchboard_core::DEFAULT_ACK_WAIT).
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = Some(name.into());
        self
    }

    /// On a durable route: at most `n` deliveries of one message. A failure
    /// before the last delivery goes back to the broker, which delivers the
    /// message again; on the last one the [`DeadLetter`](crate::DeadLetter) layer dead-letters
    /// it (stored by the broker before the original is acknowledged).
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = Some(n);
        self
    }

    /// Subscribes as a member of queue group `group`, so that several workers share the load.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Handles up to `limit` messages at a time (at least 1, at most
    /// [`MAX_CONCURRENCY`]). With 1 (the
    /// default) messages are handled one after the other, in order; above
    /// 1 they may finish, and be acknowledged, in any order, unless the
    /// route is [ordered per subject](Route::ordered_per_subject).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.clamp(1, MAX_CONCURRENCY);
        self
    }

    /// With [concurrency](Route::concurrency) above 1, handles the messages
    /// of one subject one after the other, in the order they arrived, while
    /// messages of different subjects still run side by side: per-key order
    /// with a subject per key (`orders.1042`, `orders.1043`), as a
    /// partitioned log gives per partition. A message waits for the one
    /// before it on its subject to finish (retries and dead letter
    /// included), holding one of the route's `concurrency` slots while it
    /// waits, so a run of messages on one subject is as slow as with
    /// concurrency 1. What a broker delivers again (a nack, an expired ack
    /// wait) comes back after later messages, as at concurrency 1.
    ///
    /// ```
    /// use switchboard_worker::{Context, HandlerError, Route};
    ///
    /// let route = Route::new("orders.*", |ctx: Context| async move {
    ///     println!("{}: {} bytes", ctx.message().subject(), ctx.message().payload().len());
    ///     Ok::<_, HandlerError>(())
    /// })
    /// .concurrency(16)
    /// .ordered_per_subject();
    /// ```
    pub fn ordered_per_subject(mut self) -> Self {
        self.ordered_per_subject = true;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        if let Some(stack) = self.default_stack("retry") {
            stack.retry = policy;
        }
        self
    }

    /// Sets the total number of attempts before dead-lettering (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        if let Some(stack) = self.default_stack("attempts") {
            stack.retry = stack.retry.attempts(attempts);
        }
        self
    }

    /// Sets the wait before the first retry (it doubles after each).
    pub fn backoff(mut self, initial: Duration) -> Self {
        if let Some(stack) = self.default_stack("backoff") {
            stack.retry = stack.retry.backoff(initial);
        }
        self
    }

    /// Sets the time limit of each attempt (above zero: a zero limit would
    /// fail every attempt; [`Route::no_timeout`] removes the limit).
    pub fn timeout(mut self, limit: Duration) -> Self {
        if let Some(stack) = self.default_stack("timeout") {
            stack.timeout = Some(limit);
        }
        self
    }

    /// Removes the time limit of attempts.
    pub fn no_timeout(mut self) -> Self {
        if let Some(stack) = self.default_stack("no_timeout") {
            stack.timeout = None;
        }
        self
    }

    /// Sets the dead-letter subject; `{subject}` stands for the message's subject.
    pub fn dead_letter(mut self, subject: impl Into<String>) -> Self {
        if let Some(stack) = self.default_stack("dead_letter") {
            stack.dead_letter = Some(subject.into());
        }
        self
    }

    /// Does not dead-letter: a message whose attempts all failed is nacked
    /// (redelivered where the broker can) or reported; one whose error is
    /// [permanent](crate::HandlerError::is_permanent) is rejected without
    /// redelivery, and reported.
    pub fn no_dead_letter(mut self) -> Self {
        if let Some(stack) = self.default_stack("no_dead_letter") {
            stack.dead_letter = None;
        }
        self
    }

    /// The settings of the default stack, or `None` on a custom route, which
    /// then records that `setter` was called so that starting refuses it.
    fn default_stack(&mut self, setter: &'static str) -> Option<&mut Settings> {
        match &mut self.stack {
            Stack::Default(settings) => Some(settings),
            Stack::Custom { refused } => {
                if !refused.contains(&setter) {
                    refused.push(setter);
                }
                None
            }
        }
    }

    /// Declares that the handler publishes to `target`, a subject template in
    /// which `{subject}` stands for the received message's subject (e.g.
    /// `audit.{subject}`); call it once per target. The worker does not
    /// publish for you: this tells [`Worker::start`](crate::Worker::start)
    /// where messages go, so that it can refuse routes that feed each other
    /// (or themselves) in a loop. A [`Route::custom`] stack that dead-letters
    /// declares its dead-letter subject here too.
    pub fn publishes_to(mut self, target: impl Into<String>) -> Self {
        self.publishes.push(target.into());
        self
    }

    /// The pattern, as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Where this route hands messages on: the targets declared with
    /// [`Route::publishes_to`], then the dead-letter subject of the default stack.
    pub fn targets(&self) -> impl Iterator<Item = (Via, &str)> + '_ {
        let dead_letter = self
            .dead_letter_target()
            .map(|template| (Via::DeadLetter, template));
        self.publishes
            .iter()
            .map(|target| (Via::Publish, target.as_str()))
            .chain(dead_letter)
    }

    /// The dead-letter subject template of the default stack, if it dead-letters.
    pub(crate) fn dead_letter_target(&self) -> Option<&str> {
        match &self.stack {
            Stack::Default(Settings {
                dead_letter: Some(template),
                ..
            }) => Some(template.as_str()),
            _ => None,
        }
    }

    /// How long the default stack may take on one delivery (every attempt
    /// timing out, plus the longest backoffs), at least [`DEFAULT_ACK_WAIT`]:
    /// the ack wait of a durable route, so that the broker does not deliver
    /// again what is still being handled.
    fn ack_wait(&self) -> Duration {
        match &self.stack {
            Stack::Default(Settings {
                retry,
                timeout: Some(limit),
                ..
            }) => {
                let attempts = retry.attempts.max(1);
                let handling = limit.saturating_mul(attempts);
                let backoff = retry.max_backoff.saturating_mul(attempts - 1);
                DEFAULT_ACK_WAIT.max(handling.saturating_add(backoff))
            }
            _ => DEFAULT_ACK_WAIT,
        }
    }

    /// Checks the settings and builds the handler stack, inside `layers`
    /// (the first outermost).
    pub(crate) fn prepare(&self, layers: &[BoxLayer]) -> Result<Prepared, Error> {
        let invalid = |reason: String| Error::InvalidRoute {
            pattern: self.pattern.clone(),
            reason,
        };
        let pattern = Pattern::new(&self.pattern).map_err(|e| invalid(e.to_string()))?;
        let group = match &self.group {
            Some(group) => Some(QueueGroup::new(group).map_err(|e| invalid(e.to_string()))?),
            None => None,
        };
        let durable = match (&self.durable, self.max_deliver) {
            (Some(_), _) if group.is_some() => {
                return Err(invalid(
                    "a durable route cannot also have a queue group: workers with the same durable name already share its messages".to_string(),
                ))
            }
            (Some(name), max_deliver) => {
                let mut durable = Durable::new(name)
                    .map_err(|e| invalid(e.to_string()))?
                    .ack_wait(self.ack_wait());
                if let Some(max) = max_deliver {
                    if max == 0 {
                        return Err(invalid("max_deliver must be 1 or more".to_string()));
                    }
                    durable = durable.max_deliver(max);
                }
                Some(durable)
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "max_deliver needs a durable route (set `durable`): only a durable consumer's broker counts deliveries".to_string(),
                ))
            }
            (None, None) => None,
        };
        for target in &self.publishes {
            if Subject::new(&target.replace("{subject}", "x")).is_err() {
                return Err(invalid(format!(
                    "publish target {target:?} is not a valid subject; use dot-separated tokens, optionally with `{{subject}}`, e.g. `audit.{{subject}}`"
                )));
            }
        }
        // The schema check (if any) is the innermost layer: run on each attempt.
        let checked = self.contract.wrap(&self.handler).map_err(invalid)?;
        let wrapped = checked.is_some();
        let handler = checked.unwrap_or_else(|| self.handler.clone());
        let (stack, looped): (BoxHandler, Arc<dyn Looped>) = match &self.stack {
            Stack::Custom { refused } if !refused.is_empty() => {
                let setters: Vec<String> = refused.iter().map(|s| format!("`{s}`")).collect();
                return Err(invalid(format!(
                    "{} would do nothing on a custom route (`Route::custom` uses the handler as given); wrap the handler in the layers you want instead, e.g. `handler.catch_panic().timeout(limit).retry(policy).dead_letter()`, or use `Route::new` for the default stack",
                    setters.join(", ")
                )));
            }
            Stack::Custom { .. } => (handler.clone(), Arc::new(Erased(handler))),
            Stack::Default(settings) => match &self.unboxed {
                Some(unboxed) if layers.is_empty() && !wrapped => {
                    (handler, unboxed(settings).map_err(invalid)?)
                }
                _ => {
                    let stack = settings.wrap(Arc::new(handler)).map_err(invalid)?;
                    (stack.clone() as BoxHandler, stack)
                }
            },
        };
        // With worker layers the stack is only reached through them.
        let looped = if layers.is_empty() {
            looped
        } else {
            Arc::new(Erased(BoxLayer::wrap_all(layers, stack)))
        };
        Ok(Prepared {
            pattern,
            group,
            durable,
            concurrency: self.concurrency.max(1),
            ordered_per_subject: self.ordered_per_subject,
            stack: looped,
        })
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Route");
        d.field("pattern", &self.pattern)
            .field("group", &self.group)
            .field("durable", &self.durable)
            .field("max_deliver", &self.max_deliver)
            .field("concurrency", &self.concurrency)
            .field("ordered_per_subject", &self.ordered_per_subject)
            .field("publishes", &self.publishes)
            .field("contract", &self.contract);
        match &self.stack {
            Stack::Custom { .. } => d.field("stack", &"custom"),
            Stack::Default(settings) => d
                .field("retry", &settings.retry)
                .field("timeout", &settings.timeout)
                .field("dead_letter", &settings.dead_letter),
        };
        d.finish_non_exhaustive()
    }
}

/// A checked route, ready to subscribe.
pub(crate) struct Prepared {
    pub(crate) pattern: Pattern,
    pub(crate) group: Option<QueueGroup>,
    pub(crate) durable: Option<Durable>,
    pub(crate) concurrency: usize,
    pub(crate) ordered_per_subject: bool,
    /// The route's whole stack (worker layers included), as its loop runs it.
    pub(crate) stack: Arc<dyn Looped>,
}
