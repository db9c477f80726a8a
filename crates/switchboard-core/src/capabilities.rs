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
        max_payload: None,
    };
}
