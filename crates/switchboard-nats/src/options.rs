//! [`NatsOptions`] and the parsing of `nats://` / `tls://` URLs.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::ServerAddr;
use switchboard_core::options::{self, Query};
use switchboard_core::{Backoff, Error, Result};
use switchboard_tls::TlsOptions;

use crate::tls::check_tls;

pub use switchboard_core::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE,
};

/// Messages each subscription buffers in the client before async-nats drops
/// (and switchboard reports) messages, unless configured: 2^20.
///
/// async-nats' own default is 65,536, which a single fast publisher overruns
/// within milliseconds (a 1→1 run of 1M 16-byte messages lost 5–37% of them).
/// The buffer only holds messages while the subscriber is behind, and the
/// channel allocates in small blocks as it fills, so a large bound costs
/// nothing while the subscriber keeps up; a subscriber that falls behind by
/// the whole buffer holds about `capacity × (200 B + payload)` of memory.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The URL key naming an NKey seed file: `nkey=/etc/nats/user.nk`.
pub const NKEY: &str = "nkey";

/// The URL key naming a credentials file (a user JWT and its seed): `creds=/etc/nats/user.creds`.
pub const CREDS: &str = "creds";

/// The URL key setting how many servers keep each stream the adapter
/// provisions for durable subscriptions: `replicas=3` (JetStream clusters
/// allow 1 to 5).
pub const REPLICAS: &str = "replicas";

/// The URL query keys the NATS adapter takes: the ones every adapter shares
/// ([`options::COMMON`]), NATS's own [`NKEY`] and [`CREDS`], and, on `tls://`
/// URLs, the TLS ones ([`options::TLS`]).
pub const QUERY_KEYS: &[&str] = &[
    options::CONNECT_TIMEOUT,
    options::FLUSH_TIMEOUT,
    options::CAPACITY,
    options::NAME,
    options::KEEPALIVE,
    NKEY,
    CREDS,
    REPLICAS,
    options::CA,
    options::CERT,
    options::KEY,
    options::TLS_SERVER_NAME,
];

/// Options of a NATS connection: set with the builder methods, each named
/// after its option, and read from the public fields (as on every
/// switchboard adapter). Every option but `reconnect_backoff` can also be
/// set in the URL's query
/// (`nats://host:4222?capacity=65536&connect_timeout=2s&keepalive=10s&name=api`);
/// values in the URL win over the ones set here.
///
/// ```
/// use std::time::Duration;
/// use switchboard_nats::NatsOptions;
/// let options = NatsOptions::new()
///     .connect_timeout(Duration::from_secs(2))
///     .capacity(100_000)
///     .name("billing");
/// assert_eq!(options.capacity, 100_000);
/// assert_eq!(options.name.as_deref(), Some("billing"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsOptions {
    /// How long connecting may take (TCP, TLS and the NATS handshake).
    /// URL: `connect_timeout=5s`; default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long `flush` and `subscribe` wait for the server's round trip, and
    /// the most `close`, `Subscription::close` and a `publish` into a full
    /// client queue with the connection down take. URL: `flush_timeout=10s`;
    /// default [`DEFAULT_FLUSH_TIMEOUT`].
    pub flush_timeout: Duration,
    /// Messages each subscription buffers in the client while its reader is
    /// behind (0 is read as 1). URL: `capacity=N`; default [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// The connection name the server shows. URL: `name=api`; default none.
    pub name: Option<String>,
    /// How soon a connection that passes nothing is declared dead; `None`
    /// leaves async-nats' own ping (a minute). URL: `keepalive=15s`,
    /// `keepalive=off`; default [`DEFAULT_KEEPALIVE`].
    pub keepalive: Option<Duration>,
    /// The delays between reconnection attempts (builder only); default
    /// [`Backoff::DEFAULT`].
    pub reconnect_backoff: Backoff,
    /// How `tls://` connections verify the server and identify the client.
    /// URL: `ca=`, `cert=`, `key=`, `tls_server_name=`; default the platform's
    /// trust store.
    pub tls: TlsOptions,
    /// A file holding the NKey seed to sign the server's challenge with
    /// (an NKey user in the server's `authorization` block). URL:
    /// `nkey=/etc/nats/user.nk`; default none. Read when connecting; the
    /// seed is never shown.
    pub nkey: Option<PathBuf>,
    /// A credentials file (`.creds`: a user JWT and its NKey seed, as `nsc`
    /// writes it) for servers in operator (JWT) mode. URL:
    /// `creds=/etc/nats/user.creds`; default none. Read when connecting; the
    /// seed is never shown.
    pub creds: Option<PathBuf>,
    /// How many servers of a JetStream cluster keep each stream this adapter
    /// provisions for durable subscriptions (1 to 5; a stream that exists
    /// already keeps its own setting). With 3, a stream and its consumers
    /// survive the loss of one server. URL: `replicas=3`; default 1.
    pub replicas: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            capacity: DEFAULT_CAPACITY,
            name: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            reconnect_backoff: Backoff::DEFAULT,
            tls: TlsOptions::new(),
            nkey: None,
            creds: None,
            replicas: 1,
        }
    }
}

impl NatsOptions {
    /// The defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_FLUSH_TIMEOUT`],
    /// [`DEFAULT_CAPACITY`], [`DEFAULT_KEEPALIVE`], [`Backoff::DEFAULT`], no
    /// connection name.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long connecting may take (TCP, TLS and the NATS handshake) before
    /// [`connect`](crate::connect) fails saying why. URL: `connect_timeout=5s`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `flush` and `subscribe` wait for the server to answer their
    /// round trip; also the most `close` and `Subscription::close` take, and
    /// how long a `publish` waits for room in the client's queue while the
    /// connection is down. URL: `flush_timeout=10s`.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How many messages each subscription buffers in the client while its
    /// reader is behind (at least 1). Past that async-nats drops messages, and
    /// the subscription yields an [`Error::Lost`] item. URL: `capacity=1048576`.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, switchboard_core::options::MAX_CAPACITY);
        self
    }

    /// The connection name the server shows in its monitoring. URL: `name=api`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How soon a connection that passes nothing is declared dead: the client
    /// PINGs the server when it has heard nothing for a third of this, and
    /// after three PINGs without an answer it drops the connection, reports
    /// [`Error::Disconnected`] on every subscription and reconnects. `None`
    /// leaves async-nats' own setting (a PING a minute: about 3 minutes).
    /// URL: `keepalive=15s`, `keepalive=off`.
    pub fn keepalive(mut self, keepalive: Option<Duration>) -> Self {
        self.keepalive = keepalive.filter(|k| !k.is_zero());
        self
    }

    /// The delays between reconnection attempts once a connection is lost:
    /// the first at once, then `min` doubling to `max` ([`Backoff::DEFAULT`],
    /// 100 ms to 5 s, as on every adapter). Not a URL option.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// How `tls://` connections verify the server and identify the client:
    /// CA files, a client certificate, the server name. URL: `ca=PATH`,
    /// `cert=PATH&key=PATH`, `tls_server_name=NAME` (added to what is set here).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Authenticates as an NKey user: the file holds the user's seed
    /// (`SU…`, as `nk -gen user` writes it), which signs the server's
    /// challenge; the server lists the public key (`U…`). URL:
    /// `nkey=/etc/nats/user.nk`. Not together with [`creds`](Self::creds).
    pub fn nkey(mut self, seed_file: impl Into<PathBuf>) -> Self {
        self.nkey = Some(seed_file.into());
        self
    }

    /// Authenticates with a credentials file (a user JWT and its seed, as
    /// `nsc generate creds` writes it), for servers run in operator (JWT)
    /// mode. URL: `creds=/etc/nats/user.creds`. Not together with
    /// [`nkey`](Self::nkey).
    pub fn creds(mut self, creds_file: impl Into<PathBuf>) -> Self {
        self.creds = Some(creds_file.into());
        self
    }

    /// How many servers keep each stream provisioned for durable
    /// subscriptions (see [`replicas`](Self::replicas)); clamped to 1..=5,
    /// JetStream's range.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.clamp(1, 5);
        self
    }
}

/// Credentials found in a URL. Not `Debug`, so they cannot end up in a log.
pub(crate) enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
}

/// A parsed connection URL: the servers (without credentials or query),
/// the credentials, and the options with the URL's query applied.
pub(crate) struct Target {
    pub(crate) servers: Vec<ServerAddr>,
    pub(crate) credentials: Credentials,
    pub(crate) options: NatsOptions,
}

/// Parses `nats://[user:password@|token@]host[:port][,nats://host2...][?param=value...]`.
pub(crate) fn parse_url(url: &str, mut options: NatsOptions) -> Result<Target> {
    let mut servers = Vec::new();
    let mut credentials = Credentials::None;
    let mut tls_in_url = false;
    for part in url.split(',') {
        let mut parsed = url::Url::parse(part.trim()).map_err(|e| {
            Error::invalid_url(url, format!("{e}; expected e.g. nats://127.0.0.1:4222"))
        })?;
        if !crate::SCHEMES.contains(&parsed.scheme()) {
            return Err(Error::invalid_url(
                url,
                format!(
                    "the scheme `{}` is not a NATS scheme; use nats:// or tls://",
                    parsed.scheme()
                ),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid_url(
                url,
                "the URL names no host; expected e.g. nats://127.0.0.1:4222",
            ));
        }
        if !matches!(parsed.path(), "" | "/") {
            return Err(Error::invalid_url(
                url,
                format!(
                    "NATS URLs have no path, found `{}`; remove it",
                    parsed.path()
                ),
            ));
        }
        let query = Query::parse(url, &parsed, QUERY_KEYS)?;
        tls_in_url |= options.tls.apply_url_query(url, &query)?;
        apply_query(&query, &mut options)?;
        let user = options::decode(url, "user name", parsed.username())?;
        let password = parsed
            .password()
            .map(|p| options::decode(url, "password", p))
            .transpose()?;
        let found = match (user.is_empty(), password) {
            (true, None) => Credentials::None,
            (_, Some(password)) => Credentials::UserPassword(user, password),
            (false, None) => Credentials::Token(user),
        };
        if matches!(credentials, Credentials::None) {
            credentials = found;
        }
        let stripped = parsed.set_username("").is_ok() && parsed.set_password(None).is_ok();
        if !stripped {
            return Err(Error::invalid_url(
                url,
                "credentials cannot be taken out of this URL",
            ));
        }
        parsed.set_query(None);
        parsed.set_fragment(None);
        let server = ServerAddr::from_url(parsed).map_err(|e| Error::invalid_url(url, e))?;
        servers.push(server);
    }
    check_tls(
        url,
        &options,
        tls_in_url,
        servers.iter().all(ServerAddr::tls_required),
    )?;
    if options.nkey.is_some() && options.creds.is_some() {
        return Err(Error::invalid_url(
            url,
            "both `nkey` and `creds` are set; a credentials file holds its own seed, so give one of them",
        ));
    }
    Ok(Target {
        servers,
        credentials,
        options,
    })
}

fn apply_query(query: &Query, options: &mut NatsOptions) -> Result<()> {
    if let Some(capacity) = query.capacity()? {
        options.capacity = capacity;
    }
    if let Some(timeout) = query.duration(options::CONNECT_TIMEOUT)? {
        options.connect_timeout = timeout;
    }
    if let Some(timeout) = query.duration(options::FLUSH_TIMEOUT)? {
        options.flush_timeout = timeout;
    }
    if let Some(name) = query.text(options::NAME) {
        options.name = Some(name.to_string());
    }
    if let Some(keepalive) = query.keepalive()? {
        options.keepalive = keepalive;
    }
    match query.count(REPLICAS)? {
        Some(n @ 1..=5) => options.replicas = n,
        Some(n) => {
            return Err(query.invalid(
                REPLICAS,
                &n.to_string(),
                "1 to 5 (JetStream keeps a stream on at most 5 servers)",
            ))
        }
        None => {}
    }
    for (key, field) in [(NKEY, &mut options.nkey), (CREDS, &mut options.creds)] {
        match query.text(key) {
            Some("") => return Err(query.invalid(key, "", "a file path")),
            Some(path) => *field = Some(PathBuf::from(path)),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target> {
        parse_url(url, NatsOptions::new())
    }

    #[test]
    fn plain_url() {
        let target = parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(target.servers.len(), 1);
        assert_eq!(target.servers[0].host(), "127.0.0.1");
        assert_eq!(target.servers[0].port(), 4222);
        assert!(matches!(target.credentials, Credentials::None));
        assert_eq!(target.options, NatsOptions::new());
    }

    #[test]
    fn credentials_and_token() {
        let target = parse("nats://alice:s%40cret@localhost:4222").unwrap();
        match target.credentials {
            Credentials::UserPassword(u, p) => {
                assert_eq!((u.as_str(), p.as_str()), ("alice", "s@cret"))
            }
            _ => panic!("expected user and password"),
        }
        assert_eq!(target.servers[0].username(), None);
        assert_eq!(target.servers[0].password(), None);
        let target = parse("tls://T0KEN@example.com").unwrap();
        assert!(matches!(target.credentials, Credentials::Token(ref t) if t == "T0KEN"));
        assert!(target.servers[0].tls_required());
        assert_eq!(target.servers[0].port(), 4222);
    }

    #[test]
    fn query_parameters() {
        let target = parse(
            "nats://h:1?capacity=16&connect_timeout=250ms&flush_timeout=2s&name=api&keepalive=3s",
        )
        .unwrap();
        assert_eq!(target.options.capacity, 16);
        assert_eq!(target.options.connect_timeout, Duration::from_millis(250));
        assert_eq!(target.options.flush_timeout, Duration::from_secs(2));
        assert_eq!(target.options.name.as_deref(), Some("api"));
        assert_eq!(target.options.keepalive, Some(Duration::from_secs(3)));
        assert_eq!(NatsOptions::new().keepalive, Some(DEFAULT_KEEPALIVE));
        let target = parse("nats://h?keepalive=off").unwrap();
        assert_eq!(target.options.keepalive, None);
    }

    #[test]
    fn tls_keys() {
        for key in options::COMMON.iter().chain(&switchboard_tls::QUERY_KEYS) {
            assert!(QUERY_KEYS.contains(key), "{key}");
        }
        let target =
            parse("tls://h:1?ca=/ca.pem&cert=/c.pem&key=/k.pem&tls_server_name=n.example").unwrap();
        assert_eq!(
            &target.options.tls,
            &TlsOptions::new()
                .ca("/ca.pem")
                .client_cert("/c.pem", "/k.pem")
                .server_name("n.example")
        );
        // `ca` may be repeated, and is decoded like every other value.
        let target = parse("tls://h:1?ca=/a.pem&ca=/b%20c.pem&ca=system").unwrap();
        assert_eq!(
            &target.options.tls,
            &TlsOptions::new()
                .ca("/a.pem")
                .ca("/b c.pem")
                .system_roots(true)
        );
        // Set in code, they apply where the URL asks for TLS and are left unused elsewhere.
        let coded = NatsOptions::new().tls(TlsOptions::new().ca("/ca.pem"));
        assert!(parse_url("nats://h:1", coded).is_ok());
        for (url, needle) in [
            ("nats://h:1?ca=/ca.pem", "write tls:// instead of nats://"),
            ("nats://h:1?tls_server_name=n.example", "write tls://"),
            ("tls://h:1?cert=/c.pem", "without `key`"),
            ("tls://h:1?tls_server_name=a%20b", "not a valid DNS name"),
        ] {
            let err = parse(url).err().unwrap().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn replicas_key() {
        assert_eq!(parse("nats://h:1").unwrap().options.replicas, 1);
        let target = parse("nats://a:1,nats://b:2?replicas=3").unwrap();
        assert_eq!(target.options.replicas, 3);
        for bad in ["0", "6", "three"] {
            let err = parse(&format!("nats://h:1?replicas={bad}"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(&format!("`replicas={bad}`")), "{err}");
        }
        assert_eq!(NatsOptions::new().replicas(9).replicas, 5);
    }

    #[test]
    fn nkey_and_creds_keys() {
        let target = parse("nats://h:1?nkey=/etc/nats/u%20ser.nk").unwrap();
        assert_eq!(
            target.options.nkey.as_deref(),
            Some(std::path::Path::new("/etc/nats/u ser.nk"))
        );
        let target = parse("tls://h:1?creds=/etc/nats/u.creds&ca=/ca.pem").unwrap();
        assert_eq!(
            target.options.creds.as_deref(),
            Some(std::path::Path::new("/etc/nats/u.creds"))
        );
        let coded = NatsOptions::new().nkey("/a.nk");
        let err = parse_url("nats://h:1?creds=/b.creds", coded)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("both `nkey` and `creds`"), "{err}");
        let err = parse("nats://h:1?nkey=").err().unwrap().to_string();
        assert!(err.contains("nkey"), "{err}");
    }

    #[test]
    fn several_servers() {
        let target = parse("nats://u:p@a:1,nats://b:2").unwrap();
        assert_eq!(target.servers.len(), 2);
        assert!(matches!(target.credentials, Credentials::UserPassword(..)));
    }

    #[test]
    fn bad_urls_say_why_and_redact() {
        let err = parse("nats://u:hunter2@h:1?bogus=1&capacity=2")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown parameter `bogus`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for (url, needle) in [
            ("nats://h?capacity=0", "capacity=0"),
            ("nats://h?connect_timeout=5", "with a unit"),
            ("nats://u:p%zz@h", "a `%` at character 2"),
            ("nats://h?name=%g0", "a `%` at character 1"),
            ("redis://h", "not a NATS scheme"),
            ("nats://h/path", "no path"),
            ("nats://", "no host"),
            ("not a url", "expected e.g."),
        ] {
            let err = parse(url).err().unwrap().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
