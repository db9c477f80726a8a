//! What a broker really provides, declared by each adapter and queryable at run time.

/// What a broker provides through switchboard. Every field is `false` (or `None`)
/// unless the adapter declares it, so a new field never claims a feature by default.
///
/// An operation that needs a capability the broker lacks returns
/// [`Error::Unsupported`](crate::Error::Unsupported); nothing is faked.
/// The conformance suite selects its cases from these flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// Subscribers can share a named queue group, each message going to one member.
    pub queue_groups: bool,
    /// Headers travel as the broker's own headers (a plain client sees them as such),
    /// rather than in a switchboard-specific envelope.
    pub native_headers: bool,
    /// Headers round-trip at all (natively or in an envelope).
    pub headers: bool,
    /// The broker filters `*`/`>` patterns itself (otherwise the adapter filters).
    pub native_wildcards: bool,
    /// `Delivery::ack` / `nack` reach the broker.
    pub ack: bool,
    /// A nacked message, or one whose delivery was dropped unacknowledged, is
    /// delivered again (see [the delivery contract](crate::Delivery#the-delivery-contract)).
    pub redelivery: bool,
    /// Messages published while no subscriber exists are kept for later ones.
    pub persistence: bool,
    /// Messages from one publisher on one subject reach a subscriber in publish order.
    pub ordered_per_publisher: bool,
    /// `subscribe_durable` works: a named consumer whose messages are kept while
    /// it is away, delivered when it is back and removed when acknowledged.
    pub durable: bool,
    /// Messages kept for durable consumers survive a restart of the broker
    /// (false for the in-memory broker: they live as long as the process).
    pub durable_storage: bool,
    /// Deliveries say how many times they were delivered
    /// ([`Delivery::delivery_count`](crate::Delivery::delivery_count)).
    pub delivery_count: bool,
    /// [`Delivery::nack_with_delay`](crate::Delivery::nack_with_delay) delivers
    /// the message again after the delay.
    pub nack_delay: bool,
    /// [`Broker::request`](crate::Broker::request) and
    /// [`Delivery::reply`](crate::Delivery::reply) work.
    pub request_reply: bool,
    /// Largest payload accepted, in bytes, if the broker has a limit.
    pub max_payload: Option<usize>,
}

impl Capabilities {
    /// No capability declared: the starting point adapters build on.
    pub const NONE: Capabilities = Capabilities {
        queue_groups: false,
        native_headers: false,
        headers: false,
        native_wildcards: false,
        ack: false,
        redelivery: false,
        persistence: false,
        ordered_per_publisher: false,
        durable: false,
        durable_storage: false,
        delivery_count: false,
        nack_delay: false,
        request_reply: false,
        max_payload: None,
    };
}
