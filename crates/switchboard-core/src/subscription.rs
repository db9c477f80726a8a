//! A subscription: a stream of deliveries that unsubscribes when dropped or closed.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FusedStream, Stream};

use crate::{Delivery, Pattern, QueueGroup, Result};

/// The future an adapter runs to unsubscribe explicitly in [`Subscription::close`].
pub type CloseFuture = BoxFuture<'static, Result<()>>;

/// An active subscription: a [`Stream`] of `Result<Delivery>`.
///
/// An `Err` item reports lost messages or a broken connection; the stream goes
/// on after it where the adapter recovers, and ends when the subscription is
/// closed or its broker handle is closed. So a receive loop reports an `Err`
/// item and goes on — `let delivery = item?;` would end the loop at the first
/// recoverable [`Error::Disconnected`](crate::Error::Disconnected). Dropping
/// the subscription unsubscribes; [`Subscription::close`] does so and waits
/// for the broker. Once it has ended it stays ended: polling it again
/// returns `None` (it is a [`FusedStream`]), whatever the adapter's stream.
///
/// ```no_run
/// # async fn run(broker: &dyn switchboard_core::Broker) -> switchboard_core::Result<()> {
/// use futures::StreamExt;
/// use switchboard_core::SubscriberExt;
///
/// let mut alerts = broker.subscribe_to("alerts.>").await?;
/// while let Some(item) = alerts.next().await {
///     match item {
///         Ok(mut delivery) => {
///             println!("{}: {:?}", delivery.subject(), delivery.payload_str());
///             if let Err(error) = delivery.ack().await {
///                 eprintln!("warning: {error}");
///             }
///         }
///         Err(error) => eprintln!("warning: {error}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    pattern: Pattern,
    group: Option<QueueGroup>,
    stream: BoxStream<'static, Result<Delivery>>,
    /// The stream ended: an adapter's stream may panic when polled after its
    /// end (`futures::stream::unfold` does), and a caller draining what is
    /// left after a loop ended would otherwise have to know that. A flag of
    /// its own, not `StreamExt::fuse`: that wrapper cost 18 instructions per
    /// message received on NATS (`benches/instructions.sh`, `nats-recv`).
    ended: bool,
    close: Option<Box<dyn FnOnce() -> CloseFuture + Send>>,
}

impl Subscription {
    /// Wraps an adapter's stream. Dropping `stream` must unsubscribe.
    pub fn new(
        pattern: Pattern,
        group: Option<QueueGroup>,
        stream: impl Stream<Item = Result<Delivery>> + Send + 'static,
    ) -> Self {
        Subscription {
            pattern,
            group,
            stream: Box::pin(stream),
            ended: false,
            close: None,
        }
    }

    /// Sets what [`Subscription::close`] runs after dropping the stream, for
    /// brokers where unsubscribing can be awaited and can fail.
    pub fn with_close<F>(mut self, close: F) -> Self
    where
        F: FnOnce() -> CloseFuture + Send + 'static,
    {
        self.close = Some(Box::new(close));
        self
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The queue group, for a group subscription.
    pub fn group(&self) -> Option<&QueueGroup> {
        self.group.as_ref()
    }

    /// The next item this subscription has already received, without
    /// waiting: `None` when nothing is ready or it has ended. For giving back
    /// what a reader that stops reading still holds (the worker at shutdown,
    /// the bridge giving up).
    ///
    /// It looks outside the task's cooperative budget: a tokio channel
    /// answers `Pending` once the budget is spent (128 receives), which
    /// would read as "nothing more ready" and leave the rest uncounted.
    pub fn next_ready(&mut self) -> Option<Result<Delivery>> {
        use futures::{FutureExt as _, StreamExt as _};
        tokio::task::unconstrained(self.next()).now_or_never()?
    }

    /// Unsubscribes and waits until the broker has been told.
    pub async fn close(self) -> Result<()> {
        let Subscription { stream, close, .. } = self;
        drop(stream);
        match close {
            Some(close) => close().await,
            None => Ok(()),
        }
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;
    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = self.stream.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.ended = true;
        }
        next
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt as _, StreamExt as _};

    use super::*;

    /// An adapter stream made with `unfold` panics when polled after its end;
    /// a subscription over it answers `None` again (the worker drained a
    /// RabbitMQ route's ended subscription and its task panicked).
    #[test]
    fn an_ended_subscription_stays_ended() {
        let stream = futures::stream::unfold(0u8, |n| async move {
            (n < 1).then(|| (Err(crate::Error::Closed { broker: "test" }), n + 1))
        });
        let pattern = Pattern::new("a.>").unwrap_or_else(|e| panic!("{e}"));
        let mut subscription = Subscription::new(pattern, None, stream);
        assert!(matches!(
            subscription.next().now_or_never(),
            Some(Some(Err(_)))
        ));
        assert!(matches!(subscription.next().now_or_never(), Some(None)));
        assert!(subscription.is_terminated());
        assert!(matches!(subscription.next().now_or_never(), Some(None)));
    }
}
