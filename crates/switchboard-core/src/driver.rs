//! [`Driver`]: what an adapter tells the `switchboard` facade so that
//! `switchboard::connect(url)` can reach it by its URL scheme.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::{Broker, Location, Result};

/// How an adapter connects, as the facade's registry keeps it: the broker
/// kind, the URL schemes it takes, the URL a bare kind stands for, and a
/// function that connects to a URL.
///
/// Every adapter crate exposes one as `pub const DRIVER: Driver`
/// (`switchboard_nats::DRIVER`, [`memory::DRIVER`](crate::memory::DRIVER), …);
/// `switchboard::register(DRIVER)` makes a third-party adapter reachable
/// through `switchboard::connect("mybroker://…")` and the `switchboard`
/// command's `--broker`, as sqlx's `install_drivers` does for databases.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_core::{Broker, Driver, MemoryBroker};
///
/// /// The in-memory broker under another scheme, as a third party would write it.
/// pub const DRIVER: Driver = Driver::new("echo", &["echo"], "echo://", |url| {
///     Box::pin(async move {
///         let memory = url.replacen("echo://", "memory://", 1);
///         Ok(Arc::new(MemoryBroker::connect(&memory)?) as Arc<dyn Broker>)
///     })
/// });
/// assert_eq!(DRIVER.kind(), "echo");
/// assert!(DRIVER.takes_scheme("ECHO"));
/// ```
#[derive(Clone, Copy)]
pub struct Driver {
    kind: &'static str,
    schemes: &'static [&'static str],
    default_url: &'static str,
    connect: Connect,
    locate: Option<Locate>,
}

/// The function a [`Driver`] connects with: a URL in, a broker out.
pub type Connect = for<'a> fn(&'a str) -> BoxFuture<'a, Result<Arc<dyn Broker>>>;

/// The function a [`Driver`] reads where a URL leads with, without
/// connecting: `None` for a URL it cannot read.
pub type Locate = fn(&str) -> Option<Location>;

impl Driver {
    /// A driver for broker `kind` (what [`Broker::kind`] returns), reached by
    /// URLs with one of `schemes` (lower case, without `://`), with
    /// `default_url` standing for the bare kind (`--broker mybroker`), and
    /// `connect` opening a connection to a URL.
    pub const fn new(
        kind: &'static str,
        schemes: &'static [&'static str],
        default_url: &'static str,
        connect: Connect,
    ) -> Self {
        Driver {
            kind,
            schemes,
            default_url,
            connect,
            locate: None,
        }
    }

    /// This driver, able to say where its URLs lead ([`Driver::locate`])
    /// with `locate`, the adapter's own URL parser: only the adapter knows
    /// its default ports and how it writes several servers or a socket.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use switchboard_core::{Broker, Driver, Location, MemoryBroker};
    ///
    /// const DRIVER: Driver = Driver::new("echo", &["echo"], "echo://", |url| {
    ///     Box::pin(async move {
    ///         let memory = url.replacen("echo://", "memory://", 1);
    ///         Ok(Arc::new(MemoryBroker::connect(&memory)?) as Arc<dyn Broker>)
    ///     })
    /// })
    /// .with_locate(|url| Some(Location::place(url.trim_end_matches('/'))));
    /// assert_eq!(DRIVER.locate("echo://a/"), Some(Location::place("echo://a")));
    /// ```
    pub const fn with_locate(mut self, locate: Locate) -> Self {
        self.locate = Some(locate);
        self
    }

    /// The broker kind (`nats`, `redis`, `amqp`, `memory`, or an adapter's own).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The URL schemes this driver takes, without `://`.
    pub fn schemes(&self) -> &'static [&'static str] {
        self.schemes
    }

    /// The URL a bare kind stands for: the broker's usual local address.
    pub fn default_url(&self) -> &'static str {
        self.default_url
    }

    /// Whether `scheme` (any case, without `://`) is one of this driver's.
    pub fn takes_scheme(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }

    /// Where `url` leads (its servers or place, and scope), read without
    /// connecting; `None` when the URL cannot be read or the driver does
    /// not say (a third-party driver without [`Driver::with_locate`]).
    pub fn locate(&self, url: &str) -> Option<Location> {
        self.locate.and_then(|locate| locate(url))
    }

    /// Connects to `url` with this driver's adapter.
    pub fn connect<'a>(&self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Broker>>> {
        (self.connect)(url)
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("kind", &self.kind)
            .field("schemes", &self.schemes)
            .field("default_url", &self.default_url)
            .finish_non_exhaustive()
    }
}
