//! Durable subscriptions: a named consumer whose messages the broker keeps
//! while it is away and removes only when they are acknowledged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Result};

/// How long a delivery may stay unacknowledged before the broker delivers it
/// again, unless set.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// The settings of a durable subscription: who the consumer is, how long a
/// delivery may stay unacknowledged, how often one message may be delivered.
///
/// Every subscriber that uses the same durable consumer shares its messages:
/// each message goes to one of them (a durable queue group). The consumer is
/// named by its [`group`](Durable::group) when set, else by its [`name`](Durable::name); the name
/// then names the member, so that a member that comes back under its own name
/// gets its own unacknowledged messages at once (Redis Streams consumers),
/// while messages of a member that does not come back reach the others after
/// [`Durable::ack_wait`].
///
/// Messages published on a matching subject after the consumer was first
/// created are kept for it while no member is connected, delivered when one
/// comes back, and removed once acknowledged. A delivery that is nacked, or
/// not acknowledged within `ack_wait` (for example because its subscriber
/// crashed), is delivered again, with a higher
/// [`Delivery::delivery_count`](crate::Delivery::delivery_count).
///
/// ```
/// use std::time::Duration;
/// use switchboard_core::Durable;
/// let durable = Durable::new("sarah-connor")?
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(5);
/// assert_eq!(durable.consumer().as_str(), "sarah-connor");
/// let member = Durable::new("worker-1")?.group("reactions")?;
/// assert_eq!(member.consumer().as_str(), "reactions");
/// assert!(Durable::new("no.dots").is_err());
/// # Ok::<(), switchboard_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Durable {
    /// The member's name; the consumer's too when no group is set.
    pub name: ConsumerName,
    /// The durable consumer this subscriber is a member of, when set.
    pub group: Option<ConsumerName>,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// At most this many deliveries of one message, if set.
    pub max_deliver: Option<u32>,
}

impl Durable {
    /// A durable consumer named `name` with the default [`ack_wait`](Durable::ack_wait)
    /// ([`DEFAULT_ACK_WAIT`]) and no delivery limit. Fails if `name` is not a
    /// valid [`ConsumerName`].
    pub fn new(name: &str) -> Result<Self> {
        Ok(Durable {
            name: ConsumerName::new(name)?,
            group: None,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: None,
        })
    }

    /// Makes this subscriber the member `name` of the durable consumer
    /// `group`: the group is what the broker stores; members share its messages.
    pub fn group(mut self, group: &str) -> Result<Self> {
        self.group = Some(ConsumerName::new(group)?);
        Ok(self)
    }

    /// The longest [`ack_wait`](Durable::ack_wait): a year. Every broker
    /// stores it (JetStream refused 200 years, Redis' `XAUTOCLAIM` a
    /// millisecond count past 2^63), and a delivery unacknowledged longer is
    /// one nobody will acknowledge.
    pub const MAX_ACK_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

    /// How long a delivery may stay unacknowledged before it is delivered
    /// again: at least one second (brokers count it in seconds or
    /// milliseconds, and less would redeliver what is still being handled),
    /// at most [`Durable::MAX_ACK_WAIT`].
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.clamp(Duration::from_secs(1), Self::MAX_ACK_WAIT);
        self
    }

    /// At most this many deliveries of one message (at least 1). The broker
    /// stops delivering a message after that; the reaction worker dead-letters
    /// it on its last delivery, so it is never dropped silently.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = Some(max_deliver.max(1));
        self
    }

    /// The name of what the broker stores: the group, else the name.
    pub fn consumer(&self) -> &ConsumerName {
        self.group.as_ref().unwrap_or(&self.name)
    }
}

/// The name of a durable consumer or of one of its members.
///
/// Letters, digits, `-` and `_`, 1 to [`ConsumerName::MAX_LEN`] bytes, so that
/// it is a valid JetStream consumer name, AMQP queue name and Redis
/// consumer-group name (JetStream forbids `.` in consumer names).
///
/// ```
/// use switchboard_core::ConsumerName;
/// assert!(ConsumerName::new("alerts-worker").is_ok());
/// assert!(ConsumerName::new("alerts.worker").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerName(Arc<str>);

impl ConsumerName {
    /// The longest name accepted, in bytes (room is left for a broker-side prefix).
    pub const MAX_LEN: usize = 128;

    /// Parses and validates a consumer name.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidDurable {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid(
                "it is empty; name the consumer, e.g. `alerts-worker`".into(),
            ));
        }
        if name.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "it is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(invalid(format!(
                "it contains {c:?}; use letters, digits, `-` and `_` only"
            )));
        }
        Ok(ConsumerName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for ConsumerName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ConsumerName::new(s)
    }
}
