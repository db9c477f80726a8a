//! The harness a case runs in: how to connect, and a private corner of the subject space.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::TcpProxy;
use switchboard_core::{
    redact_url, Broker, Capabilities, Durable, Error, Pattern, QueueGroup, Result, Subject,
    Subscription,
};

/// How long connecting may take before the broker counts as not answering.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set this environment variable to `1` to make a case fail, instead of being
/// skipped, when its broker does not answer (for CI, where the brokers must be up).
pub const REQUIRE_BROKERS_ENV: &str = "SWITCHBOARD_REQUIRE_BROKERS";

/// Whether a broker that does not answer must fail a test instead of skipping it:
/// true when [`REQUIRE_BROKERS_ENV`] is set to `1` (surrounding whitespace ignored).
pub fn brokers_required() -> bool {
    std::env::var(REQUIRE_BROKERS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Skips a test for `reason` (printing `skipped: <reason>` to stderr), or, when
/// [`brokers_required`], panics with `SWITCHBOARD_REQUIRE_BROKERS=1 but <reason>`.
///
/// The caller returns right after it; it is for tests outside the [`suite!`](crate::suite)
/// that need a broker (or another outside service) which may be missing.
///
/// ```
/// fn a_test_needing_a_server(answers: bool) {
///     if !answers {
///         switchboard_conformance::skip_or_fail("no server on 127.0.0.1:4222");
///         return;
///     }
///     // ... the test itself
/// }
/// # a_test_needing_a_server(true);
/// ```
#[track_caller]
pub fn skip_or_fail(reason: impl fmt::Display) {
    if brokers_required() {
        panic!("{REQUIRE_BROKERS_ENV}=1 but {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// The broker URL in environment variable `env`, or `default` when it is unset,
/// empty or only whitespace (the rule [`Suite::url`] follows).
pub fn broker_url(env: &str, default: &str) -> String {
    std::env::var(env)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

type ConnectFn = dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn Broker>>> + Send + Sync;

/// An adapter's way to open a connection from a URL, with the broker type erased.
#[derive(Clone)]
pub struct Connector(Arc<ConnectFn>);

impl Connector {
    /// Wraps `connect`, a function from a URL to a future of the adapter's broker.
    ///
    /// ```
    /// use switchboard_conformance::Connector;
    /// let connector = Connector::new(|url: String| async move {
    ///     switchboard_core::MemoryBroker::connect(&url)
    /// });
    /// # let _ = connector;
    /// ```
    pub fn new<F, Fut, B>(connect: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B>> + Send + 'static,
        B: Broker + 'static,
    {
        Connector(Arc::new(move |url: String| {
            let future = connect(url);
            Box::pin(async move {
                let broker = future.await?;
                Ok(Arc::new(broker) as Arc<dyn Broker>)
            })
        }))
    }

    /// Opens one connection to `url`, failing with [`Error::Timeout`] after [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, url: &str) -> Result<Arc<dyn Broker>> {
        match tokio::time::timeout(CONNECT_TIMEOUT, (self.0)(url.to_string())).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                broker: "conformance",
                operation: format!("connecting to {}", redact_url(url)),
                after: CONNECT_TIMEOUT,
            }),
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector(..)")
    }
}

/// One broker under test: its name, where to find it and how to connect.
/// [`suite!`](crate::suite) builds one per case; [`Suite::context`] applies the skipping policy.
#[derive(Debug, Clone)]
pub struct Suite {
    broker: String,
    url_env: String,
    default_url: String,
    connector: Connector,
}

impl Suite {
    /// A suite for broker kind `broker`, whose URL is read from the environment
    /// variable `url_env` (falling back to `default_url` when unset or empty).
    pub fn new(
        broker: impl Into<String>,
        url_env: impl Into<String>,
        default_url: impl Into<String>,
        connector: Connector,
    ) -> Self {
        Suite {
            broker: broker.into(),
            url_env: url_env.into(),
            default_url: default_url.into(),
            connector,
        }
    }

    /// A suite for broker kind `broker` at `url`, whatever the environment
    /// says: for a server the test started itself (a private TLS listener).
    pub fn at(broker: impl Into<String>, url: impl Into<String>, connector: Connector) -> Self {
        Suite {
            broker: broker.into(),
            // No variable has an empty name: the URL is always `url`.
            url_env: String::new(),
            default_url: url.into(),
            connector,
        }
    }

    /// Runs every case ([`cases::ALL`](crate::cases::ALL)) in one test, a
    /// few at a time, each with a context (and prefix) of its own, then
    /// fails naming every case that failed. For a broker the test starts
    /// itself, where one test per case (what [`suite!`](crate::suite) makes)
    /// would start one server per case.
    pub async fn run_all(&self) {
        self.run_all_but(&[]).await;
    }

    /// [`Suite::run_all`] but the cases of `left_out`, each `(case, why)`,
    /// which print `skipped: <case>: <why>`.
    pub async fn run_all_but(&self, left_out: &[(&str, &str)]) {
        use futures::StreamExt as _;

        /// Cases at a time: what `cargo test` runs on two cores, and twice that.
        const AT_ONCE: usize = 4;
        /// Cases that take longer are named on stderr (with `--nocapture`).
        const SLOW_CASE: Duration = Duration::from_secs(5);
        for (name, why) in left_out {
            eprintln!("skipped: {} {name}: {why}", self.broker);
        }
        let chosen = crate::cases::ALL
            .iter()
            .filter(|name| !left_out.iter().any(|(out, _)| out == *name));
        let runs = chosen.map(|name| async move {
            let Some(case) = crate::cases::by_name(name) else {
                return Some(format!("{name}: not a case"));
            };
            let suite = self.clone();
            let started = std::time::Instant::now();
            // Each case in a task of its own, so that its panic is its failure.
            let run = tokio::spawn(async move {
                if let Some(ctx) = suite.context(name).await {
                    case(&ctx).await;
                    ctx.finish().await;
                }
            });
            let outcome = run.await;
            if started.elapsed() > SLOW_CASE {
                eprintln!("{name} took {:.1?}", started.elapsed());
            }
            match outcome {
                Ok(()) => None,
                Err(error) => Some(format!("{name}: {error}")),
            }
        });
        let failed: Vec<String> = futures::stream::iter(runs)
            .buffer_unordered(AT_ONCE)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        assert!(
            failed.is_empty(),
            "{} of {} conformance cases failed on {} at {}:\n{}",
            failed.len(),
            crate::cases::ALL.len(),
            self.broker,
            redact_url(&self.url()),
            failed.join("\n")
        );
    }

    /// The broker kind under test.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The URL to connect to: the environment variable's value, or the default.
    pub fn url(&self) -> String {
        broker_url(&self.url_env, &self.default_url)
    }

    /// Connects for case `case`. When the broker does not answer, prints
    /// `skipped: <broker> at <url> does not answer: <error>` to stderr and
    /// returns `None` — or panics if [`REQUIRE_BROKERS_ENV`] is `1`.
    ///
    /// Only a broker that does not answer (a connect error that
    /// [`is_temporary`](switchboard_core::Error::is_temporary): refused, timed
    /// out, not resolved) skips. Any other failure panics whatever the
    /// environment says: a URL the adapter cannot parse, a scheme nobody
    /// registered, refused credentials or TLS are the adapter's or the
    /// setup's bugs, and skipping them reported every case passed.
    pub async fn context(&self, case: &'static str) -> Option<Context> {
        self.context_or_skip(case, brokers_required()).await
    }

    /// [`Suite::context`] with the requirement given rather than read from the environment.
    pub async fn context_or_skip(&self, case: &'static str, require: bool) -> Option<Context> {
        let url = self.url();
        match self.connector.connect(&url).await {
            Ok(broker) => Some(Context::new(
                self.broker.clone(),
                case,
                url,
                self.connector.clone(),
                broker,
            )),
            Err(error) if !does_not_answer(&error) => panic!(
                "{} at {} could not be connected to, and not because it does not answer: \
                 {error} (fix the URL, the adapter's connect or its registration; only a \
                 broker that does not answer skips the suite)",
                self.broker,
                redact_url(&url),
            ),
            Err(error) if require => panic!(
                "{} at {} does not answer: {error} ({REQUIRE_BROKERS_ENV}=1 requires it; \
                 start the broker or point {} at one)",
                self.broker,
                redact_url(&url),
                self.url_env
            ),
            Err(error) => {
                eprintln!(
                    "skipped: {} at {} does not answer: {error}",
                    self.broker,
                    redact_url(&url)
                );
                None
            }
        }
    }
}

/// Whether `error` says the broker is not there (nothing listens, or it did
/// not answer in time), as opposed to the connection being wrong.
fn does_not_answer(error: &switchboard_core::Error) -> bool {
    error
        .connect_kind()
        .is_some_and(switchboard_core::ConnectKind::is_temporary)
}

/// What a case works with: a connected broker, the means to open more
/// connections, and a random subject prefix of its own.
///
/// Every connection (the first one and those from [`Context::connect`]) is
/// closed by [`Context::finish`].
#[derive(Debug)]
pub struct Context {
    broker_name: String,
    case: &'static str,
    url: String,
    connector: Connector,
    broker: Arc<dyn Broker>,
    prefix: String,
    connections: Mutex<Vec<Arc<dyn Broker>>>,
    /// Durable consumers the case created, removed by [`Context::finish`].
    durables: Mutex<Vec<(Pattern, Durable)>>,
    /// Proxies of [`Context::connect_through_proxy`], kept alive while
    /// [`Context::finish`] closes the connections through them.
    proxies: Mutex<Vec<Arc<TcpProxy>>>,
}

impl Context {
    /// A context around an open connection `broker`, for case `case` of broker kind
    /// `broker_name`; more connections come from `connector` and `url`.
    pub fn new(
        broker_name: impl Into<String>,
        case: &'static str,
        url: impl Into<String>,
        connector: Connector,
        broker: Arc<dyn Broker>,
    ) -> Self {
        Context {
            broker_name: broker_name.into(),
            case,
            url: url.into(),
            connector,
            prefix: format!("cf.{:016x}", rand::random::<u64>()),
            connections: Mutex::new(vec![broker.clone()]),
            durables: Mutex::new(Vec::new()),
            proxies: Mutex::new(Vec::new()),
            broker,
        }
    }

    /// The connection the case started with.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The broker kind the suite was declared for (what `Broker::kind` should return).
    pub fn broker_name(&self) -> &str {
        &self.broker_name
    }

    /// The name of the running case.
    pub fn case(&self) -> &'static str {
        self.case
    }

    /// The broker URL, password redacted (for messages).
    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    /// The capabilities the first connection declares.
    pub fn capabilities(&self) -> Capabilities {
        self.broker.capabilities()
    }

    /// Opens another connection to the same broker (closed by [`Context::finish`]).
    /// Panics if it fails: the broker answered the first connection.
    pub async fn connect(&self) -> Arc<dyn Broker> {
        let broker = self.connector.connect(&self.url).await.unwrap_or_else(|e| {
            panic!(
                "{}: opening another connection to {} failed: {e}",
                self.case,
                self.url()
            )
        });
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(broker.clone());
        broker
    }

    /// Opens another connection to the same broker through a new [`TcpProxy`]
    /// the case controls (closed by [`Context::finish`]), so that a case can
    /// cut the link under the adapter. `None` when the URL does not name
    /// exactly one `host:port` to put the proxy in front of (an in-process
    /// broker, a unix socket, a list of servers, a default port): the case
    /// then prints a skip line. Panics if connecting through the proxy fails.
    pub async fn connect_through_proxy(&self) -> Option<(Arc<TcpProxy>, Arc<dyn Broker>)> {
        let (target, url) = proxied_url(&self.url)?;
        let address = std::net::ToSocketAddrs::to_socket_addrs(&target.as_str())
            .ok()?
            .next()?;
        let proxy = Arc::new(TcpProxy::start(address));
        let proxied = url.replace(PROXY_PORT, &proxy.port().to_string());
        let broker = self.connector.connect(&proxied).await.unwrap_or_else(|e| {
            panic!(
                "{}: connecting to {} through a proxy on port {} failed: {e}",
                self.case,
                self.url(),
                proxy.port()
            )
        });
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(broker.clone());
        // Kept until the connection is closed, so that closing does not meet a dead link.
        self.proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(proxy.clone());
        Some((proxy, broker))
    }

    /// This case's private subject prefix, `cf.<16 hex digits>` (itself a valid subject).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<name>` as a subject; `name` may contain dots. Panics if invalid.
    pub fn subject(&self, name: &str) -> Subject {
        let text = self.prefixed(name);
        Subject::new(&text).unwrap_or_else(|e| panic!("{}: test subject: {e}", self.case))
    }

    /// `<prefix>.<name>` as a pattern (`name` may use `*` and `>`). Panics if invalid.
    pub fn pattern(&self, name: &str) -> Pattern {
        let text = self.prefixed(name);
        Pattern::new(&text).unwrap_or_else(|e| panic!("{}: test pattern: {e}", self.case))
    }

    /// A queue group name unique to this case: `<prefix>.<name>`. Panics if invalid.
    pub fn group(&self, name: &str) -> QueueGroup {
        let text = self.prefixed(name);
        QueueGroup::new(&text).unwrap_or_else(|e| panic!("{}: test group: {e}", self.case))
    }

    fn prefixed(&self, name: &str) -> String {
        if name.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A durable consumer name unique to this case, `cf-<16 hex digits>-<name>`
    /// (consumer names cannot hold dots), with the default settings. Panics if invalid.
    pub fn durable(&self, name: &str) -> Durable {
        let text = format!("{}-{name}", self.prefix.replace('.', "-"));
        Durable::new(&text).unwrap_or_else(|e| panic!("{}: test durable: {e}", self.case))
    }

    /// Subscribes `broker` to the durable consumer `durable` over `pattern`,
    /// failing the case if it fails or hangs, and remembers the consumer so
    /// that [`Context::finish`] removes it from the broker.
    pub async fn subscribe_durable(
        &self,
        broker: &Arc<dyn Broker>,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Subscription {
        {
            let mut durables = self.durables.lock().unwrap_or_else(|p| p.into_inner());
            if !durables
                .iter()
                .any(|(p, d)| p == pattern && d.consumer() == durable.consumer())
            {
                durables.push((pattern.clone(), durable.clone()));
            }
        }
        let subscribed = tokio::time::timeout(
            crate::RECEIVE_TIMEOUT,
            broker.subscribe_durable(pattern, durable),
        )
        .await;
        match subscribed {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(error)) => panic!(
                "{}: subscribe_durable to {pattern:?} as {:?} failed: {error}",
                self.case,
                durable.consumer()
            ),
            Err(_) => panic!(
                "{}: subscribe_durable to {pattern:?} as {:?} did not resolve within {:?}",
                self.case,
                durable.consumer(),
                crate::RECEIVE_TIMEOUT
            ),
        }
    }

    /// Prints `skipped: <broker> <case>: <reason>` to stderr, for a check the
    /// broker's capabilities rule out.
    pub fn skip(&self, reason: impl fmt::Display) {
        eprintln!("skipped: {} {}: {reason}", self.broker_name, self.case);
    }

    /// Removes the durable consumers made with [`Context::subscribe_durable`]
    /// from the broker, then closes every connection of this context, failing
    /// if a removal or a close fails.
    pub async fn finish(&self) {
        let durables =
            std::mem::take(&mut *self.durables.lock().unwrap_or_else(|p| p.into_inner()));
        for (pattern, durable) in durables {
            let removed = tokio::time::timeout(
                crate::FLUSH_TIMEOUT,
                self.broker.remove_durable(&pattern, &durable),
            )
            .await;
            match removed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!(
                    "{}: removing durable consumer {:?} failed: {e}",
                    self.case,
                    durable.consumer()
                ),
                Err(_) => panic!(
                    "{}: removing durable consumer {:?} did not finish within {:?}",
                    self.case,
                    durable.consumer(),
                    crate::FLUSH_TIMEOUT
                ),
            }
        }
        let connections =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for broker in connections {
            let closed = tokio::time::timeout(crate::FLUSH_TIMEOUT, broker.close()).await;
            match closed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{}: closing a connection failed: {e}", self.case),
                Err(_) => panic!(
                    "{}: closing a connection did not finish within {:?}",
                    self.case,
                    crate::FLUSH_TIMEOUT
                ),
            }
        }
    }
}

/// Stands for the proxy's port in the URL [`proxied_url`] returns, until the proxy is bound.
const PROXY_PORT: &str = "{proxy-port}";

/// Splits a URL naming one `host:port` into that address and the URL with
/// the port replaced by [`PROXY_PORT`]. The host name is kept, so that TLS
/// still checks the name the certificate holds; credentials, path and query
/// are kept as they are.
fn proxied_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    if host_port.contains(',') {
        return None;
    }
    let (host, port) = host_port.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The proxy listens on 127.0.0.1 only, where an IPv6 address cannot reach it.
    if host.starts_with('[') {
        return None;
    }
    let target = format!("{host}:{port}");
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Some((
        target,
        format!("{scheme}://{userinfo}{host}:{PROXY_PORT}{tail}"),
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn proxied_url_keeps_everything_but_the_port() {
        assert_eq!(
            proxied_url("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5"),
            Some((
                "127.0.0.1:5672".into(),
                "amqp://guest:guest@127.0.0.1:{proxy-port}/%2f?heartbeat=5".into()
            ))
        );
        assert_eq!(
            proxied_url("tls://localhost:4443?ca=/tmp/ca.pem"),
            Some((
                "localhost:4443".into(),
                "tls://localhost:{proxy-port}?ca=/tmp/ca.pem".into()
            ))
        );
    }

    #[test]
    fn proxied_url_needs_one_explicit_host_and_port() {
        assert_eq!(proxied_url("memory://"), None);
        assert_eq!(proxied_url("memory://shared"), None);
        assert_eq!(proxied_url("redis://127.0.0.1"), None);
        assert_eq!(proxied_url("nats://a:4222,b:4223"), None);
        assert_eq!(proxied_url("redis+unix:///run/redis.sock"), None);
        assert_eq!(proxied_url("nats://[::1]:4222"), None);
        assert_eq!(proxied_url("not a url"), None);
    }
    use super::*;

    fn failing() -> Suite {
        Suite::new(
            "nowhere",
            "SWITCHBOARD_CONFORMANCE_TEST_UNSET_URL",
            "nowhere://127.0.0.1:1",
            Connector::new(|url: String| async move {
                Err::<switchboard_core::MemoryBroker, _>(Error::connect(
                    "nowhere",
                    &url,
                    switchboard_core::ConnectKind::Refused,
                    "connection refused",
                    None,
                ))
            }),
        )
    }

    #[tokio::test]
    async fn unanswered_broker_is_skipped() {
        assert!(failing().context_or_skip("case", false).await.is_none());
    }

    #[tokio::test]
    #[should_panic(expected = "does not answer")]
    async fn unanswered_broker_fails_when_required() {
        failing().context_or_skip("case", true).await;
    }

    #[tokio::test]
    async fn context_names_are_prefixed_and_unique() {
        let suite = Suite::new(
            "memory",
            "SWITCHBOARD_CONFORMANCE_TEST_UNSET_URL",
            "memory://",
            Connector::new(
                |url: String| async move { switchboard_core::MemoryBroker::connect(&url) },
            ),
        );
        let a = suite.context_or_skip("a", true).await.unwrap();
        let b = suite.context_or_skip("b", true).await.unwrap();
        assert_ne!(a.prefix(), b.prefix());
        assert!(a.prefix().starts_with("cf."));
        assert_eq!(a.subject("x.y").as_str(), format!("{}.x.y", a.prefix()));
        assert_eq!(a.subject("").as_str(), a.prefix());
        assert!(a.pattern(">").matches(a.subject("x").as_str()));
        assert!(!a.pattern(">").matches(b.subject("x").as_str()));
        a.group("workers");
        a.finish().await;
        b.finish().await;
    }
}
