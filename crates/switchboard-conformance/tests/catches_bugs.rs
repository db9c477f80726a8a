//! The suite must fail broken adapters: each test wraps the in-memory broker
//! with one deliberate bug and checks that the case meant to catch it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use futures::StreamExt;
use std::time::Duration;
use switchboard_conformance::{cases, Connector, Context, Suite};

use switchboard_core::{
    async_trait, Acknowledge, Broker, Capabilities, ConnectionStatus, Delivery, Durable, Error,
    MemoryBroker, Message, Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Silently drops every 1000th delivery.
    DropsSilently,
    /// Replaces every 1000th delivery by an `Error::Lost` item (honest loss).
    ReportsLoss,
    /// Subscribes to everything under the first token when a pattern has a wildcard.
    LooseWildcards,
    /// Adds a header of its own to every message.
    AddsHeader,
    /// Collapses runs of whitespace inside header values (as a naive
    /// line-based header parser would).
    SquashesHeaderWhitespace,
    /// Treats queue groups as plain fan-out.
    GroupsAsFanOut,
    /// `close` does not end subscriptions.
    CloseKeepsSubscriptions,
    /// Claims another broker kind.
    WrongKind,
    /// `status()` says connected after `close`.
    StatusIgnoresClose,
    /// Loses the headers of a reply.
    DropsReplyHeaders,
    /// A durable subscription is a plain one: nothing is kept while away.
    DurableAsFanOut,
    /// Acknowledgements of durable deliveries never reach the broker.
    DurableLosesAcks,
    /// A durable nack acknowledges instead of asking for redelivery.
    DurableNackAcks,
    /// A nack with a delay redelivers at once.
    DurableIgnoresDelay,
    /// Durable consumers get the default ack wait (30 s) whatever was asked.
    DurableIgnoresAckWait,
    /// Durable consumers have no delivery limit whatever was asked.
    DurableIgnoresMaxDeliver,
    /// Every member of a durable group gets a consumer of its own.
    DurableIgnoresGroup,
}

#[derive(Debug, Clone)]
struct Faulty {
    inner: MemoryBroker,
    fault: Fault,
}

#[async_trait]
impl Publisher for Faulty {
    async fn publish(&self, message: Message) -> Result<()> {
        let message = match self.fault {
            Fault::AddsHeader => message.with_header("x-adapter", "1")?,
            Fault::SquashesHeaderWhitespace => {
                let mut headers = switchboard_core::Headers::new();
                for (name, value) in message.headers() {
                    headers.insert(name, value.split_whitespace().collect::<Vec<_>>().join(" "))?;
                }
                message.with_headers(headers)
            }
            _ => message,
        };
        self.inner.publish(message).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
}

#[async_trait]
impl Subscriber for Faulty {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        let subscription = if self.fault == Fault::LooseWildcards && !pattern.is_literal() {
            let first: Vec<&str> = pattern.as_str().split('.').take(2).collect();
            let loose = Pattern::new(&format!("{}.>", first.join(".")))?;
            self.inner.subscribe(&loose).await?
        } else {
            self.inner.subscribe(pattern).await?
        };
        let fault = self.fault;
        let mut count = 0u64;
        let stream = subscription.filter_map(move |item| {
            count += 1;
            let item = match fault {
                Fault::DropsSilently if count % 1000 == 0 => None,
                Fault::ReportsLoss if count % 1000 == 0 => Some(Err(Error::Lost {
                    broker: "memory",
                    pattern: "flood".into(),
                    count: 1,
                    reason: "test".into(),
                })),
                _ => Some(item),
            };
            futures::future::ready(item)
        });
        Ok(Subscription::new(pattern.clone(), None, stream))
    }
    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        if self.fault == Fault::GroupsAsFanOut {
            self.inner.subscribe(pattern).await
        } else {
            self.inner.subscribe_group(pattern, group).await
        }
    }
    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        let mut durable = durable.clone();
        let mut pattern = pattern.clone();
        match self.fault {
            Fault::DurableAsFanOut => return self.inner.subscribe(&pattern).await,
            Fault::DurableIgnoresAckWait => durable.ack_wait = switchboard_core::DEFAULT_ACK_WAIT,
            Fault::DurableIgnoresMaxDeliver => durable.max_deliver = None,
            Fault::DurableIgnoresGroup => durable.group = None,
            Fault::LooseWildcards if !pattern.is_literal() => {
                let first: Vec<&str> = pattern.as_str().split('.').take(2).collect();
                pattern = Pattern::new(&format!("{}.>", first.join(".")))?;
            }
            _ => {}
        }
        let subscription = self.inner.subscribe_durable(&pattern, &durable).await?;
        let fault = self.fault;
        let stream = subscription.map(move |item| {
            item.map(|delivery| {
                let message = delivery.message().clone();
                let (redelivered, count) = (delivery.redelivered(), delivery.delivery_count());
                let wrapped = Delivery::with_acker(
                    message,
                    Box::new(FaultyAck { delivery, fault }),
                    redelivered,
                );
                match count {
                    Some(count) => wrapped.with_delivery_count(count),
                    None => wrapped,
                }
            })
        });
        Ok(Subscription::new(pattern, None, stream))
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.inner.remove_durable(pattern, durable).await
    }
}

#[async_trait]
impl Broker for Faulty {
    fn kind(&self) -> &'static str {
        if self.fault == Fault::WrongKind {
            "mammoth"
        } else {
            "memory"
        }
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        let reply = self.inner.request(message, timeout).await?;
        if self.fault == Fault::DropsReplyHeaders {
            return Ok(reply.with_headers(switchboard_core::Headers::new()));
        }
        Ok(reply)
    }
    fn status(&self) -> ConnectionStatus {
        if self.fault == Fault::StatusIgnoresClose {
            return ConnectionStatus::up();
        }
        self.inner.status()
    }
    async fn close(&self) -> Result<()> {
        if self.fault == Fault::CloseKeepsSubscriptions {
            // Leaves the subscriptions' routes in place.
            return Ok(());
        }
        self.inner.close().await
    }
}

async fn context(fault: Fault) -> Context {
    let suite = Suite::new(
        "memory",
        "SWITCHBOARD_CONFORMANCE_TEST_UNSET_URL",
        "memory://catches-bugs",
        Connector::new(move |url: String| async move {
            Ok(Faulty {
                inner: MemoryBroker::connect(&url)?,
                fault,
            })
        }),
    );
    suite.context_or_skip("catches_bugs", true).await.unwrap()
}

/// Settles a durable delivery of [`Faulty`], with its fault.
#[derive(Debug)]
struct FaultyAck {
    delivery: Delivery,
    fault: Fault,
}

#[async_trait]
impl Acknowledge for FaultyAck {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        match self.fault {
            // Dropping the delivery leaves it unacknowledged.
            Fault::DurableLosesAcks => Ok(()),
            _ => self.delivery.ack().await,
        }
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        match self.fault {
            Fault::DurableNackAcks => self.delivery.ack().await,
            _ if requeue => self.delivery.nack().await,
            _ => self.delivery.reject().await,
        }
    }
    fn supports_delay(&self) -> bool {
        true
    }
    async fn nack_with_delay(mut self: Box<Self>, delay: Duration) -> Result<()> {
        match self.fault {
            Fault::DurableIgnoresDelay => self.delivery.nack().await,
            _ => self.delivery.nack_with_delay(delay).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received 0 of 5 deliveries")]
async fn durable_as_fan_out_fails_while_away() {
    cases::durable_keeps_messages_while_away(&context(Fault::DurableAsFanOut).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received 0 of 6 deliveries")]
async fn durable_as_fan_out_fails_resume() {
    cases::durable_resume_continues(&context(Fault::DurableAsFanOut).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received a message it should not have")]
async fn durable_lost_acks_fail() {
    cases::durable_ack_removes(&context(Fault::DurableLosesAcks).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received nothing within")]
async fn durable_nack_that_acks_fails() {
    cases::durable_nack_redelivers_with_count(&context(Fault::DurableNackAcks).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received a message it should not have")]
async fn durable_ignored_delay_fails() {
    cases::durable_nack_with_delay(&context(Fault::DurableIgnoresDelay).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received nothing within")]
async fn durable_ignored_ack_wait_fails() {
    cases::durable_ack_wait_redelivers(&context(Fault::DurableIgnoresAckWait).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "received a message it should not have")]
async fn durable_ignored_max_deliver_fails() {
    cases::durable_max_deliver_stops(&context(Fault::DurableIgnoresMaxDeliver).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "expected delivery count 2")]
async fn durable_ignored_group_fails() {
    cases::durable_group_shares_work(&context(Fault::DurableIgnoresGroup).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "the messages a durable wildcard pattern kept")]
async fn durable_loose_wildcards_fail() {
    cases::durable_wildcard_pattern(&context(Fault::LooseWildcards).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "SILENT LOSS")]
async fn silent_loss_fails() {
    cases::no_silent_loss_with(&context(Fault::DropsSilently).await, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_loss_passes() {
    cases::no_silent_loss_with(&context(Fault::ReportsLoss).await, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "did not receive exactly what Pattern::matches says")]
async fn loose_wildcards_fail() {
    cases::wildcards_match_reference(&context(Fault::LooseWildcards).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "headers changed")]
async fn added_header_fails() {
    cases::no_headers_arrive_empty(&context(Fault::AddsHeader).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "headers changed")]
async fn squashed_header_whitespace_fails() {
    cases::headers_edge_cases(&context(Fault::SquashesHeaderWhitespace).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exactly once")]
async fn groups_as_fan_out_fail() {
    cases::queue_group_shares_messages(&context(Fault::GroupsAsFanOut).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "did not end")]
async fn close_keeping_subscriptions_fails() {
    cases::close_ends_subscriptions(&context(Fault::CloseKeepsSubscriptions).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "Broker::kind()")]
async fn wrong_kind_fails() {
    cases::capabilities_are_sane(&context(Fault::WrongKind).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "after close, status() should say closed")]
async fn status_ignoring_close_fails() {
    cases::close_rejects_publish_and_subscribe(&context(Fault::StatusIgnoresClose).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "the reply's header was lost")]
async fn dropped_reply_headers_fail() {
    cases::request_gets_the_reply(&context(Fault::DropsReplyHeaders).await).await;
}

/// The AMQP adapter with one bug. These bugs need a broker that redelivers
/// or a link that can be cut, which the in-memory broker has not, so they
/// are planted on RabbitMQ.
#[derive(Debug, Clone)]
struct PlantedAmqp(switchboard_amqp::AmqpBroker, AmqpBug);

#[derive(Debug, Clone, Copy)]
enum AmqpBug {
    /// A delivery dropped without `ack`/`nack` is acknowledged (the contract
    /// says it stays unacknowledged, so the broker redelivers it).
    AcksOnDrop,
    /// A subscription ends at its first error item (a lost connection)
    /// instead of resuming once the adapter has reconnected.
    GivesUpOnError,
}

impl PlantedAmqp {
    fn wrap(&self, subscription: Subscription) -> Subscription {
        match self.1 {
            AmqpBug::AcksOnDrop => acking_on_drop(subscription),
            AmqpBug::GivesUpOnError => {
                let pattern = subscription.pattern().clone();
                let group = subscription.group().cloned();
                let stream = subscription.take_while(|item| std::future::ready(item.is_ok()));
                Subscription::new(pattern, group, stream)
            }
        }
    }
}

/// Settles through the real delivery; acknowledges it when dropped unsettled.
#[derive(Debug)]
struct AckOnDrop(Option<Delivery>);

#[async_trait]
impl Acknowledge for AckOnDrop {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        match self.0.take() {
            Some(mut delivery) => delivery.ack().await,
            None => Ok(()),
        }
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        match self.0.take() {
            Some(mut delivery) if requeue => delivery.nack().await,
            Some(mut delivery) => delivery.reject().await,
            None => Ok(()),
        }
    }
    fn supports_delay(&self) -> bool {
        false
    }
    async fn nack_with_delay(self: Box<Self>, _delay: Duration) -> Result<()> {
        Err(Error::unsupported("amqp", "nack with a delay"))
    }
}

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        if let Some(mut delivery) = self.0.take() {
            tokio::spawn(async move {
                let _ = delivery.ack().await;
            });
        }
    }
}

fn acking_on_drop(subscription: Subscription) -> Subscription {
    let pattern = subscription.pattern().clone();
    let group = subscription.group().cloned();
    let stream = subscription.map(|item| {
        item.map(|delivery| {
            let (message, redelivered) = (delivery.message().clone(), delivery.redelivered());
            Delivery::with_acker(message, Box::new(AckOnDrop(Some(delivery))), redelivered)
        })
    });
    Subscription::new(pattern, group, stream)
}

#[async_trait]
impl Publisher for PlantedAmqp {
    async fn publish(&self, message: Message) -> Result<()> {
        self.0.publish(message).await
    }
    async fn flush(&self) -> Result<()> {
        self.0.flush().await
    }
}

#[async_trait]
impl Subscriber for PlantedAmqp {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        Ok(self.wrap(self.0.subscribe(pattern).await?))
    }
    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        Ok(self.wrap(self.0.subscribe_group(pattern, group).await?))
    }
    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        Ok(self.wrap(self.0.subscribe_durable(pattern, durable).await?))
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.0.remove_durable(pattern, durable).await
    }
}

#[async_trait]
impl Broker for PlantedAmqp {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn status(&self) -> ConnectionStatus {
        self.0.status()
    }
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.0.request(message, timeout).await
    }
    async fn close(&self) -> Result<()> {
        self.0.close().await
    }
}

/// Runs `case` against RabbitMQ with `bug` planted and returns its panic message.
async fn planted_amqp_failure<F, Fut>(bug: AmqpBug, case: F, what: &str) -> String
where
    F: FnOnce(Context) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let suite = Suite::new(
        "amqp",
        "SWITCHBOARD_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        Connector::new(move |url: String| async move {
            Ok(PlantedAmqp(switchboard_amqp::connect(&url).await?, bug))
        }),
    );
    // Skipped (or failed, when brokers are required) without RabbitMQ.
    let Some(ctx) = suite.context("catches_bugs").await else {
        return String::new();
    };
    let panic = tokio::spawn(async move { case(ctx).await })
        .await
        .expect_err(what)
        .into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_on_drop_fails() {
    let text = planted_amqp_failure(
        AmqpBug::AcksOnDrop,
        |ctx| async move { cases::dropped_delivery_is_redelivered(&ctx).await },
        "dropped_delivery_is_redelivered passed an adapter that acknowledges on drop",
    )
    .await;
    if !text.is_empty() {
        assert!(text.contains("NOT REDELIVERED"), "failed otherwise: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_after_a_cut_fails() {
    let text = planted_amqp_failure(
        AmqpBug::GivesUpOnError,
        |ctx| async move { cases::reconnects_after_cut(&ctx).await },
        "reconnects_after_cut passed an adapter whose subscriptions end at a lost connection",
    )
    .await;
    if !text.is_empty() {
        assert!(
            text.contains("ended while recovering"),
            "failed otherwise: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_giving_up_after_a_cut_fails() {
    let text = planted_amqp_failure(
        AmqpBug::GivesUpOnError,
        |ctx| async move { cases::durable_resumes_after_cut(&ctx).await },
        "durable_resumes_after_cut passed an adapter whose subscriptions end at a lost connection",
    )
    .await;
    if !text.is_empty() {
        assert!(
            text.contains("ended after the cut"),
            "failed otherwise: {text}"
        );
    }
}

/// `Suite::run_all` (the suite in one test, for servers a test starts) fails
/// naming the case that caught the bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "no_headers_arrive_empty: ")]
async fn run_all_fails_naming_the_case() {
    let suite = Suite::at(
        "memory",
        "memory://catches-bugs-run-all",
        Connector::new(|url: String| async move {
            Ok(Faulty {
                inner: MemoryBroker::connect(&url)?,
                fault: Fault::AddsHeader,
            })
        }),
    );
    // The flood is left out: it takes long and does not see headers.
    suite
        .run_all_but(&[("no_silent_loss_under_flood", "not about headers")])
        .await;
}

/// A suite whose connector fails with `error`, as a third-party adapter's
/// might, at a URL its environment variable does not override.
fn failing_suite(error: fn(&str) -> Error) -> Suite {
    Suite::new(
        "myecho",
        "SWITCHBOARD_CONFORMANCE_TEST_UNSET_URL",
        "myecho://",
        Connector::new(move |url: String| async move { Err::<MemoryBroker, _>(error(&url)) }),
    )
}

/// A URL the adapter cannot parse (or a forgotten `register`) is its bug,
/// not a broker that is away: the suite fails instead of skipping every case
/// (it reported all of them passed).
#[tokio::test]
#[should_panic(expected = "not because it does not answer: invalid broker URL myecho://")]
async fn a_connect_bug_fails_the_suite_even_when_brokers_are_optional() {
    let suite = failing_suite(|url| Error::invalid_url(url, "the parser rejects everything"));
    let _ = suite.context_or_skip("a_connect_bug", false).await;
}

/// A broker that does not answer skips, when brokers are optional.
#[tokio::test]
async fn a_broker_that_does_not_answer_skips() {
    let suite = failing_suite(|url| {
        Error::connect(
            "myecho",
            url,
            switchboard_core::ConnectKind::Refused,
            "connection refused",
            None,
        )
    });
    assert!(suite.context_or_skip("not_there", false).await.is_none());
}
