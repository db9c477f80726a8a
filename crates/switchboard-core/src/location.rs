//! [`Location`]: where a broker URL leads, read by the adapter that owns the
//! URL's syntax, so that a tool holding two URLs (the `switchboard bridge`
//! command) can tell when they are one broker written two ways.

use std::collections::BTreeSet;

/// Where a broker URL leads: the servers a connection may reach, or the one
/// place a server-less broker is named by, and the part of a server whose
/// messages are kept apart from the rest.
///
/// An adapter reads it with its own URL parser (default ports, lists of
/// servers, unix sockets are its knowledge) and gives it through
/// [`Driver::with_locate`](crate::Driver::with_locate). Two URLs of one
/// driver whose locations share a server (or name the same place) and have
/// the same scope carry each other's messages.
///
/// ```
/// use switchboard_core::Location;
///
/// let a = Location::servers([("LOCALHOST", 4222), ("[::1]", 4222)]);
/// let b = Location::servers([("localhost", 4222)]);
/// assert_eq!(a.shared_servers(&b).next(), Some(&("localhost".to_string(), 4222)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    servers: BTreeSet<(String, u16)>,
    place: Option<String>,
    scope: String,
}

impl Location {
    /// Servers reached by `host:port`, any one of which a connection may be
    /// made to (a cluster's seed list). Host names are compared without
    /// case and IPv6 addresses without brackets.
    pub fn servers<H: AsRef<str>>(servers: impl IntoIterator<Item = (H, u16)>) -> Self {
        let servers = servers
            .into_iter()
            .map(|(host, port)| {
                let host = host.as_ref().trim_start_matches('[').trim_end_matches(']');
                (host.to_ascii_lowercase(), port)
            })
            .collect();
        Location {
            servers,
            place: None,
            scope: String::new(),
        }
    }

    /// A broker with no host, named by `place`: an in-memory hub's URL, a
    /// unix socket's path.
    pub fn place(place: impl Into<String>) -> Self {
        Location {
            servers: BTreeSet::new(),
            place: Some(place.into()),
            scope: String::new(),
        }
    }

    /// The same location restricted to `scope`: the part of a server whose
    /// messages are apart from the rest (an AMQP vhost and exchange). Two
    /// locations on one server with different scopes do not share messages.
    #[must_use]
    pub fn within(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The servers (`host`, `port`), hosts lower-cased and unbracketed.
    pub fn server_list(&self) -> impl Iterator<Item = &(String, u16)> {
        self.servers.iter()
    }

    /// The place a server-less broker is named by, if that is what this is.
    pub fn named_place(&self) -> Option<&str> {
        self.place.as_deref()
    }

    /// The scope within the server(s); empty when a server has none.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The servers written alike in both locations (host names are not
    /// resolved here: `localhost` and `127.0.0.1` differ).
    pub fn shared_servers<'a>(
        &'a self,
        other: &'a Self,
    ) -> impl Iterator<Item = &'a (String, u16)> {
        self.servers.intersection(&other.servers)
    }
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn hosts_are_compared_without_case_or_brackets() {
        let a = Location::servers([("[::1]", 1), ("Host.Example", 2)]);
        let b = Location::servers([("::1", 1)]);
        assert_eq!(a.shared_servers(&b).count(), 1);
        assert!(a.server_list().any(|(host, _)| host == "host.example"));
    }

    #[test]
    fn a_scope_sets_locations_apart() {
        let a = Location::servers([("h", 1)]).within("vhost /");
        assert_ne!(a, Location::servers([("h", 1)]));
        assert_eq!(a.scope(), "vhost /");
        assert_eq!(
            Location::place("memory://").named_place(),
            Some("memory://")
        );
    }
}
