//! Opening the connection (credentials, keepalive, reconnect schedule, TLS,
//! a bounded handshake), the registry that turns async-nats connection
//! events (`SlowConsumer(sid)`, `Disconnected`, `Connected`) into link state
//! and `Err` items on the subscriptions they concern (and, after a reconnect
//! to another node of a cluster, one log line naming it), and the round trip
//! that proves the server has processed everything sent before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::StreamExt;
use switchboard_core::{BoxError, ConnectKind, Error, Link, Pattern, Result, SubscriptionLink};
use tokio::sync::watch;

use crate::error::{connect_error, ClientError};
use crate::options::{parse_url, Credentials, NatsOptions};
use crate::KIND;

/// An open connection: the client, the registry its events go to, and the
/// options in effect (the URL's query applied).
pub(crate) struct Connection {
    pub(crate) client: async_nats::Client,
    pub(crate) registry: Arc<Registry>,
    pub(crate) options: NatsOptions,
}

/// Connects to `url` with `options` (the URL's query overrides them). Fails
/// fast, saying why, if nothing answers or the server rejects the
/// credentials; once connected, async-nats reconnects by itself on
/// [`NatsOptions::reconnect_backoff`]'s schedule.
pub(crate) async fn open(url: &str, options: NatsOptions) -> Result<Connection> {
    let target = parse_url(url, options)?;
    let options = target.options;
    let registry = Registry::new(target.servers.clone());
    let events = registry.clone();
    let backoff = options.reconnect_backoff;
    let mut connect = match target.credentials {
        Credentials::None => async_nats::ConnectOptions::new(),
        Credentials::UserPassword(user, password) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        Credentials::Token(token) => async_nats::ConnectOptions::with_token(token),
    }
    .connection_timeout(options.connect_timeout)
    .subscription_capacity(options.capacity.max(1))
    .reconnect_delay_callback(move |attempt| backoff.before(attempt))
    // Subjects are validated by switchboard already.
    .skip_subject_validation(true)
    .event_callback(move |event| {
        let connected = matches!(event, async_nats::Event::Connected);
        events.on_event(event);
        if connected {
            Registry::follow_server(&events);
        }
        std::future::ready(())
    });
    if let Some(name) = &options.name {
        connect = connect.name(name);
    }
    if let Some(keepalive) = options.keepalive {
        // async-nats PINGs after a ping interval without hearing from the
        // server, and drops the connection at the third PING in a row
        // without an answer: a silent link is detected after 3 intervals.
        connect = connect.ping_interval((keepalive / 3).max(Duration::from_millis(1)));
    }
    let tls_required = target
        .servers
        .iter()
        .all(async_nats::ServerAddr::tls_required);
    connect = crate::tls::configure(url, connect, &options.tls, tls_required)?;
    connect = crate::auth::configure(url, connect, &options).await?;
    let timeout = options.connect_timeout;
    let client = match tokio::time::timeout(timeout, connect.connect(target.servers)).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return Err(connect_error(url, &options, error)),
        Err(_) => {
            return Err(Error::connect(
                KIND,
                url,
                ConnectKind::Timeout,
                format!(
                    "timed out after {timeout:?}; is the host reachable and running nats-server?"
                ),
                None,
            ))
        }
    };
    registry.attach(&client);
    Ok(Connection {
        client,
        registry,
        options,
    })
}

/// One round trip through the server: subscribes to a fresh inbox,
/// publishes an empty message to it and waits for it to come back. The
/// server handles a connection's commands in order, so once it is back
/// every command sent before (SUB, PUB, UNSUB) has been processed.
///
/// async-nats' `Client::flush` only writes the buffer to the socket, and it
/// has no public PING, hence the echo. The echo is visible to other
/// subscribers of `_INBOX.>` (or `>`), like any request/reply inbox traffic.
///
/// A user the server does not let publish to `_INBOX.>` (least-privilege
/// accounts) gets a `Permissions Violation` for the echo: the round trip
/// then ends at once, warns once, and from then on this connection's round
/// trips only write to the socket (what any NATS client's flush does),
/// instead of each waiting out the timeout. A flush then reports the
/// publishes the server refused ([`refused_since_last_flush`]); without the
/// echo there is no round trip to wait for, and a refusal is reported by
/// whichever flush comes after it arrived.
///
/// The whole round trip is bounded by the flush timeout: while the
/// connection is down async-nats takes no commands and answers no flush.
pub(crate) async fn round_trip(
    client: &async_nats::Client,
    registry: &Registry,
    timeout: Duration,
) -> std::result::Result<(), (String, Option<BoxError>)> {
    let mut refusals = registry.refusals.subscribe();
    let before = refusals.borrow_and_update().count;
    let inbox = client.new_inbox();
    let written = || async {
        client.flush().await.map_err(|e| {
            (
                "writing to the server failed".to_string(),
                Some(ClientError::boxed(e)),
            )
        })
    };
    let echoed = async {
        if registry.echo_refused.load(Ordering::Acquire) {
            return written().await;
        }
        let mut echo = client.subscribe(inbox.clone()).await.map_err(|e| {
            (
                "the client is gone".to_string(),
                Some(ClientError::boxed(e)),
            )
        })?;
        client
            .publish(inbox.clone(), Bytes::new())
            .await
            .map_err(|e| {
                (
                    "the client is gone".to_string(),
                    Some(ClientError::boxed(e)),
                )
            })?;
        written().await?;
        let echo_refused = async {
            loop {
                if refusals
                    .borrow_and_update()
                    .since(before)
                    .any(|subject| *subject == inbox.as_str())
                {
                    return;
                }
                if refusals.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            echoed = echo.next() => match echoed {
                Some(_) => Ok(()),
                None => Err(("the connection was closed".to_string(), None)),
            },
            () = echo_refused => {
                if !registry.echo_refused.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "nats: this user may not publish to _INBOX.> (the server refused it), so flush and subscribe confirm only that the client wrote to the socket, not that the server processed it; grant publish permission on _INBOX.> for confirmed flushes"
                    );
                }
                Ok(())
            }
        }
    };
    let outcome = match tokio::time::timeout(timeout, echoed).await {
        Ok(result) => result,
        Err(_) if !registry.link.status().connected => Err((
            format!(
                "the connection to the server is down and did not come back within {timeout:?} (the client keeps reconnecting); messages published since it broke may not have reached the server"
            ),
            None,
        )),
        Err(_) => Err((
            format!(
                "the server did not answer within {timeout:?} (is the link frozen, or may this client not publish and subscribe to {inbox:?}?)"
            ),
            None,
        )),
    };
    outcome
}

/// The publishes the server refused (`Permissions Violation for Publish to
/// S`) since the previous call, with one subject refused, if any; each
/// refusal is reported once. A flush calls it after its round trip: the
/// refusals reach the adapter as events, on a channel of their own, so the
/// event task is given one turn first, and one that comes just before the
/// echo may be seen only by the next flush.
pub(crate) async fn refused_since_last_flush(registry: &Registry) -> Option<(u64, String)> {
    tokio::task::yield_now().await;
    let refusals = registry.refusals.borrow();
    let reported = registry
        .refusals_reported
        .swap(refusals.publishes, Ordering::AcqRel);
    let refused = refusals.publishes.saturating_sub(reported);
    if refused == 0 {
        return None;
    }
    // Only the last `Refusals::KEPT` subjects are kept: the latest stands for all.
    let example = match refusals
        .recent
        .iter()
        .rev()
        .find(|subject| !is_own_request(subject))
    {
        Some(subject) => format!(", e.g. to {subject:?}"),
        None => String::new(),
    };
    Some((
        refused,
        format!("Permissions Violation{example}: this user may not publish there"),
    ))
}

/// How many refusals the server reported so far (for [`refused_js_api`]).
pub(crate) fn refusals_so_far(registry: &Registry) -> u64 {
    registry.refusals.borrow().count
}

/// Resolves with the subject once the server refuses a publish to the
/// JetStream API (`$JS.API.…`) after the `before`-th refusal: JetStream
/// requests are publishes, and a user who may not make them otherwise
/// learns of it only as a timeout.
pub(crate) async fn refused_js_api(registry: &Registry, before: u64) -> String {
    let mut refusals = registry.refusals.subscribe();
    loop {
        if let Some(subject) = refusals
            .borrow_and_update()
            .since(before)
            .find(|subject| subject.starts_with("$JS.API."))
        {
            return subject.clone();
        }
        if refusals.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Whether `subject` is one the adapter publishes to itself: an inbox (the
/// round trip's echo) or the JetStream API (its durable subscriptions'
/// requests, whose refusal fails the subscription). Its refusal is no
/// publish of the caller's, for a flush to report.
fn is_own_request(subject: &str) -> bool {
    subject.starts_with("_INBOX.") || subject.starts_with("$JS.API.")
}

/// Bit set on registry keys that are not async-nats sids (see [`sid_of`](crate::subscription::sid_of)).
const SYNTHETIC: u64 = 1 << 63;

/// What the event callback tells one subscription. The counters only grow;
/// `epoch` grows after either does, so the stream's per-message check is a
/// single atomic load.
#[derive(Default)]
pub(crate) struct Notices {
    pub(crate) epoch: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    /// The server's refusal of the subscription (`Permissions Violation
    /// for Subscription to …`), once it came.
    pub(crate) refused: std::sync::OnceLock<String>,
    pub(crate) waker: AtomicWaker,
}

impl Notices {
    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    /// The server refused the subscription: its stream ends with one error.
    fn refuse(&self, error: &str) {
        if self.refused.set(error.to_string()).is_ok() {
            self.epoch.fetch_add(1, Ordering::Release);
            self.waker.wake();
        }
    }
}

struct Entry {
    notices: Arc<Notices>,
    /// Whether the key is the async-nats sid, so `SlowConsumer(sid)` can be
    /// matched to exactly this subscription.
    exact: bool,
    /// The subscription's outages, for the "resubscribed" log line; its
    /// pattern is the subject the server names in a refusal.
    link: SubscriptionLink,
}

/// Live subscriptions of one connection, shared with its event callback.
pub(crate) struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_synthetic: AtomicU64,
    /// Becomes `true` once async-nats reports the connection closed.
    closed: watch::Sender<bool>,
    /// Counts the reconnects: the server then holds none of the
    /// connection's JetStream pull requests any more.
    reconnects: watch::Sender<u64>,
    /// The connection's state, for `Broker::status` and the outage log lines.
    pub(crate) link: Link,
    /// The client, to read the server's INFO after a reconnect. Set once
    /// connected; taken back when the broker is closed or dropped, since
    /// async-nats closes a connection only with its last client.
    client: Mutex<Option<async_nats::Client>>,
    /// The server connected to now, as log lines name it.
    server: Mutex<Option<ServerName>>,
    /// The servers of the URL, to name the one connected to as the user did.
    servers: Vec<async_nats::ServerAddr>,
    /// The subjects the server refused this connection to publish to
    /// (`Permissions Violation for Publish to …`), the latest last.
    refusals: watch::Sender<Refusals>,
    /// Set once the server refused the round trip's echo: this user may not
    /// publish to `_INBOX.>`, and round trips fall back to a socket flush.
    echo_refused: AtomicBool,
    /// How many of `refusals.publishes` a flush has reported: each is reported once,
    /// by the first flush that sees it.
    refusals_reported: AtomicU64,
}

/// Publish refusals the server reported, counted; the last few kept.
#[derive(Debug, Default, Clone)]
pub(crate) struct Refusals {
    /// Every refusal, the round trip's own echoes included.
    count: u64,
    /// Refusals of publishes outside `_INBOX.`: what a flush reports,
    /// counted exactly however many came between two flushes.
    publishes: u64,
    recent: std::collections::VecDeque<String>,
}

impl Refusals {
    /// How many refused subjects are kept.
    const KEPT: usize = 16;

    /// The subjects refused after the `since`-th refusal, oldest first.
    fn since(&self, since: u64) -> impl Iterator<Item = &String> {
        let new = (self.count.saturating_sub(since)).min(self.recent.len() as u64) as usize;
        self.recent.iter().skip(self.recent.len() - new)
    }
}

/// The subject of a server error `Permissions Violation for Publish to "S"`.
fn refused_publish(error: &str) -> Option<String> {
    const MARK: &str = "permissions violation for publish to";
    let at = error.to_ascii_lowercase().find(MARK)?;
    let subject = error[at + MARK.len()..]
        .trim()
        .trim_matches(['"', '\'', ' ']);
    (!subject.is_empty()).then(|| subject.to_string())
}

/// The subject of a server error `Permissions Violation for Subscription
/// to "S"` (followed by ` using queue "Q"` for a queue group).
fn refused_subscription(error: &str) -> Option<String> {
    const MARK: &str = "permissions violation for subscription to";
    let at = error.to_ascii_lowercase().find(MARK)?;
    let rest = error[at + MARK.len()..]
        .trim()
        .trim_start_matches(['\'', '"']);
    let subject = rest.split(['"', '\'', ' ']).next().unwrap_or_default();
    (!subject.is_empty()).then(|| subject.to_string())
}

/// How long to wait, after async-nats says it is connected again, for the
/// new server's INFO (async-nats reports the event before it stores it).
const SERVER_INFO_PATIENCE: Duration = Duration::from_secs(2);

/// A server as log lines name it: its `server_name` and address (host and
/// port only, never credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerName {
    name: String,
    address: String,
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.name, self.address)
    }
}

impl Registry {
    pub(crate) fn new(servers: Vec<async_nats::ServerAddr>) -> Arc<Self> {
        Arc::new(Registry {
            entries: Mutex::new(HashMap::new()),
            next_synthetic: AtomicU64::new(0),
            closed: watch::channel(false).0,
            reconnects: watch::channel(0).0,
            link: Link::new(KIND),
            client: Mutex::new(None),
            server: Mutex::new(None),
            servers,
            refusals: watch::channel(Refusals::default()).0,
            echo_refused: AtomicBool::new(false),
            refusals_reported: AtomicU64::new(0),
        })
    }

    /// Remembers the connected `client` and logs (at info level, `-v` in
    /// the CLI) which server it is on.
    pub(crate) fn attach(&self, client: &async_nats::Client) {
        let server = self.name_of(&client.server_info());
        tracing::info!("{KIND}: connected to server {server}");
        *lock(&self.server) = Some(server);
        *lock(&self.client) = Some(client.clone());
    }

    /// Lets go of the client (the broker is closed or dropped).
    pub(crate) fn detach(&self) {
        lock(&self.client).take();
    }

    /// After a reconnect: once the new server's INFO is in, logs one warning
    /// if it is another server than before (a failover in a cluster), e.g.
    /// `nats: now on server n2 at 127.0.0.1:4223 (was n1 at 127.0.0.1:4222)`.
    fn follow_server(registry: &Arc<Registry>) {
        // None at the first connection, which `attach` reports.
        let Some(client) = lock(&registry.client).clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let registry = Arc::clone(registry);
        runtime.spawn(async move {
            let deadline = Instant::now() + SERVER_INFO_PATIENCE;
            loop {
                let now = registry.name_of(&client.server_info());
                let before = lock(&registry.server).replace(now.clone());
                match before {
                    Some(before) if before != now => {
                        tracing::warn!("{KIND}: now on server {now} (was {before})");
                        return;
                    }
                    _ if Instant::now() >= deadline => return,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
    }

    /// How log lines name the server of `info`: the URL's server with its
    /// port (as the user wrote it), else the address the server announces.
    fn name_of(&self, info: &async_nats::ServerInfo) -> ServerName {
        let address = self
            .servers
            .iter()
            .find(|server| server.port() == info.port && server.host() == info.host)
            .or_else(|| {
                self.servers
                    .iter()
                    .find(|server| server.port() == info.port)
            })
            .map(|server| format!("{}:{}", server.host(), server.port()))
            .unwrap_or_else(|| format!("{}:{}", info.host, info.port));
        let name = if info.server_name.is_empty() {
            info.server_id.clone()
        } else {
            info.server_name.clone()
        };
        ServerName { name, address }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a subscription to `pattern`; `sid` is its async-nats sid when known.
    pub(crate) fn register(&self, sid: Option<u64>, pattern: &Pattern) -> (u64, Arc<Notices>) {
        let notices = Arc::new(Notices::default());
        let (key, exact) = match sid {
            Some(sid) => (sid, true),
            None => (
                SYNTHETIC | self.next_synthetic.fetch_add(1, Ordering::Relaxed),
                false,
            ),
        };
        self.entries().insert(
            key,
            Entry {
                notices: notices.clone(),
                exact,
                link: SubscriptionLink::new(KIND, pattern),
            },
        );
        (key, notices)
    }

    pub(crate) fn remove(&self, key: u64) {
        self.entries().remove(&key);
    }

    /// Handles one async-nats connection event. Runs on async-nats' event
    /// task, so it only does bookkeeping and never waits.
    pub(crate) fn on_event(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                let entries = self.entries();
                match entries.get(&sid) {
                    Some(entry) if entry.exact => entry.notices.bump(&entry.notices.lost),
                    _ => {
                        // The sid is not one we could map: tell every
                        // subscription whose sid is unknown, rather than nobody.
                        let mut told = false;
                        for entry in entries.values().filter(|e| !e.exact) {
                            entry.notices.bump(&entry.notices.lost);
                            told = true;
                        }
                        if !told {
                            tracing::debug!(
                                sid,
                                "nats: slow consumer on a subscription already gone"
                            );
                        }
                    }
                }
            }
            async_nats::Event::Disconnected => {
                self.link
                    .lost("core NATS subscriptions miss what is published until it is back; durable ones get it from JetStream");
                for entry in self.entries().values_mut() {
                    entry.link.lost("the connection broke");
                    entry.notices.bump(&entry.notices.disconnects);
                }
            }
            async_nats::Event::Connected => {
                self.link.restored();
                self.reconnects.send_modify(|count| *count += 1);
                // async-nats sends every SUB again right after this event.
                for entry in self.entries().values_mut() {
                    entry.link.resubscribed();
                }
            }
            async_nats::Event::Closed => {
                tracing::debug!("nats: connection closed");
                self.detach();
                self.closed.send_replace(true);
            }
            async_nats::Event::ServerError(error) => {
                if let async_nats::ServerError::Other(text) = &error {
                    if let Some(subject) = refused_subscription(text) {
                        // The server does not say which SUB it refused, only
                        // its subject; the same user is refused the same
                        // subject every time, so every subscription to it is.
                        let refused = self
                            .entries()
                            .values()
                            .filter(|entry| entry.link.pattern() == subject)
                            .map(|entry| entry.notices.refuse(text))
                            .count();
                        if refused == 0 {
                            tracing::debug!(%subject, "nats: the server refused a subscription already gone");
                        }
                        return;
                    }
                }
                let refused = match &error {
                    async_nats::ServerError::Other(text) => refused_publish(text),
                    _ => None,
                };
                match refused {
                    // The next flush reports it (see `round_trip`).
                    Some(subject) => {
                        tracing::debug!(%subject, "nats: the server refused a publish");
                        self.refusals.send_modify(|refusals| {
                            refusals.count += 1;
                            if !is_own_request(&subject) {
                                refusals.publishes += 1;
                            }
                            if refusals.recent.len() == Refusals::KEPT {
                                refusals.recent.pop_front();
                            }
                            refusals.recent.push_back(subject);
                        });
                    }
                    None => tracing::warn!(%error, "nats: the server reported an error"),
                }
            }
            async_nats::Event::ClientError(error) => {
                // While reconnecting, async-nats reports every failed attempt;
                // the outage itself was reported once already.
                if self.link.status().connected {
                    tracing::warn!(%error, "nats: client error");
                } else {
                    // async-nats passes its connect error as text; a TLS or
                    // authorization failure will not go away by itself.
                    let text = error.to_string();
                    let lasting = ["tls", "authorization", "authentication"]
                        .iter()
                        .any(|word| text.to_ascii_lowercase().contains(word));
                    self.link.attempt_failed(text, lasting);
                }
            }
            other => tracing::info!(event = %other, "nats: connection event"),
        }
    }

    /// Changes on every reconnect (see [`crate::pull::Pull::start`]).
    pub(crate) fn reconnects(&self) -> watch::Receiver<u64> {
        self.reconnects.subscribe()
    }

    /// Waits until async-nats reports the connection closed.
    pub(crate) async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

/// `mutex` locked, also after a panic elsewhere (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_subscriptions_are_parsed() {
        let cases = [
            (
                "Permissions Violation for Subscription to \"nosub.>\"",
                Some("nosub.>"),
            ),
            (
                "permissions violation for subscription to \"a.b\" using queue \"q\"",
                Some("a.b"),
            ),
            (
                "Permissions Violation for Subscription to 'x.*'",
                Some("x.*"),
            ),
            ("Permissions Violation for Publish to \"a\"", None),
            ("Permissions Violation for Subscription to \"\"", None),
        ];
        for (text, subject) in cases {
            assert_eq!(refused_subscription(text).as_deref(), subject, "{text}");
        }
    }
}
