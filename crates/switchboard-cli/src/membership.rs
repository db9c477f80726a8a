//! How a command subscribes: alone, as a member of a queue group, or as (a
//! member of) a durable consumer — one choice shared by `listen`, `reply` and
//! `bridge`.

use switchboard::{AnyBroker, Durable, Pattern, QueueGroup, Subscription};

/// How a command subscribes.
pub(crate) enum Membership {
    /// Every matching message.
    Plain,
    /// As a member of a queue group.
    Group(QueueGroup),
    /// As (a member of) a durable consumer.
    Durable(Durable),
}

impl Membership {
    /// Subscribes `broker` to `pattern` this way.
    pub(crate) async fn subscribe(
        &self,
        broker: &AnyBroker,
        pattern: &Pattern,
    ) -> switchboard::Result<Subscription> {
        match self {
            Membership::Plain => broker.subscribe(pattern).await,
            Membership::Group(group) => broker.subscribe_group(pattern, group).await,
            Membership::Durable(durable) => broker.subscribe_durable(pattern, durable).await,
        }
    }
}
