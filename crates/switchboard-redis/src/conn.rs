//! Opening one connection: TCP or TLS, `AUTH`, `SELECT`, `CLIENT SETNAME`, with
//! errors that say what went wrong and how to fix it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use switchboard_core::options::{self, Query};
use switchboard_core::{ConnectKind, Error, Result};
use switchboard_tls::TlsFailure;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::options::RedisOptions;
use crate::resp::{self, Frame};
use crate::tls::{tls_target, TlsTarget};
use crate::BROKER;

/// The port of a URL that names none.
const DEFAULT_PORT: u16 = 6379;

/// Idle time before the kernel sends the first TCP keepalive probe.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Time between unanswered keepalive probes.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel declares the connection dead.
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;

/// Turns on TCP keepalive, so a connection whose peer vanished without a
/// reset (a dead host, a dropped NAT entry) fails with an error after about
/// 30 s of silence instead of waiting forever. Failing to set it is logged,
/// not fatal: the connection works without it.
fn set_keepalive(tcp: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(
        target_os = "android",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "windows",
    ))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "redis: cannot enable TCP keepalive");
    }
}

/// Where and how to connect, read from the URL once.
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL as given, for error messages (redacted when shown).
    pub(crate) url: String,
    host: String,
    port: u16,
    tls: Option<TlsTarget>,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &switchboard_core::redact_url(&self.url))
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Reads a `redis[s]://[[user]:password@]host[:port][/database][?query][#insecure]`
    /// URL; the query's options are applied to `options`.
    pub(crate) fn parse(url: &str, options: &mut RedisOptions) -> Result<Self> {
        const FORM: &str = "the form is redis[s]://[[user]:password@]host[:port][/database]";
        let parsed =
            url::Url::parse(url).map_err(|e| Error::invalid_url(url, format!("{e}; {FORM}")))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => {
                return Err(Error::invalid_url(
                    url,
                    "a Redis URL starts with redis:// (or rediss:// for TLS), e.g. redis://127.0.0.1:6379",
                ))
            }
        };
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
            _ => {
                return Err(Error::invalid_url(
                    url,
                    format!("the URL names no host; {FORM}"),
                ))
            }
        }
        .to_string();
        let insecure = match (parsed.fragment(), tls) {
            (None, _) => false,
            (Some("insecure"), true) => true,
            (Some(other), _) => {
                return Err(Error::invalid_url(
                    url,
                    format!("unknown fragment `#{other}`; only rediss:// URLs take one, `#insecure` (no certificate check)"),
                ))
            }
        };
        let db = match parsed.path().trim_matches('/') {
            "" => 0,
            path => path.parse::<i64>().map_err(|_| {
                Error::invalid_url(
                    url,
                    format!("the database `{path}` is not a number; {FORM}"),
                )
            })?,
        };
        let username = match parsed.username() {
            "" => None,
            user => Some(options::decode(url, "user name", user)?),
        };
        let password = parsed
            .password()
            .map(|p| options::decode(url, "password", p))
            .transpose()?;
        let query = Query::parse(url, &parsed, crate::QUERY_KEYS)?;
        options.apply(&query)?;
        let tls = tls_target(url, &query, &options.tls, &host, tls, insecure)?;
        Ok(Target {
            url: url.to_string(),
            port: parsed.port().unwrap_or(DEFAULT_PORT),
            host,
            tls,
            username,
            password,
            db,
        })
    }

    pub(crate) fn error(
        &self,
        kind: ConnectKind,
        reason: impl fmt::Display,
        source: Option<switchboard_core::BoxError>,
    ) -> Error {
        Error::connect(BROKER, &self.url, kind, reason, source)
    }

    /// Opens a connection and runs the handshake, all within `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration, client_name: &str) -> Result<Conn> {
        match tokio::time::timeout(timeout, self.connect_inner(client_name)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(
                ConnectKind::Timeout,
                format!(
                    "no answer within {timeout:?}; is the host reachable, the port right{}?",
                    if self.tls.is_some() {
                        " and the server speaking TLS there"
                    } else {
                        ""
                    }
                ),
                None,
            )),
        }
    }

    async fn connect_inner(&self, client_name: &str) -> Result<Conn> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                let (kind, reason) = match e.kind() {
                    io::ErrorKind::ConnectionRefused => (
                        ConnectKind::Refused,
                        "nothing answers (connection refused); is redis-server running?"
                            .to_string(),
                    ),
                    // tokio says so in text only.
                    _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => (
                        ConnectKind::Dns,
                        format!("cannot resolve host {:?}; check the host name", self.host),
                    ),
                    _ => (
                        ConnectKind::Other,
                        format!(
                            "cannot reach {}:{}; is the host reachable?",
                            self.host, self.port
                        ),
                    ),
                };
                self.error(kind, reason, Some(Box::new(e)))
            })?;
        let _ = tcp.set_nodelay(true);
        set_keepalive(&tcp);
        let stream = match &self.tls {
            None => Stream::Tcp(tcp),
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        // rustls' own text follows as the source: a failure
                        // with no more precise meaning gets a reason that
                        // does not repeat it.
                        let reason = match tls.options.explain(&e) {
                            Some(failure) if !matches!(failure, TlsFailure::Other { .. }) => {
                                failure.to_string()
                            }
                            _ => "TLS handshake failed; does the server speak TLS on this port (tls-port)?".to_string(),
                        };
                        self.error(ConnectKind::Tls, reason, Some(Box::new(e)))
                    })?;
                Stream::Tls(Box::new(stream))
            }
        };
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        self.handshake(&mut conn, client_name).await?;
        Ok(conn)
    }

    async fn handshake(&self, conn: &mut Conn, client_name: &str) -> Result<()> {
        let io_error = |e: io::Error| {
            // With TLS 1.3 a refused client certificate shows only now, as
            // the server's alert on the first read after the handshake.
            if let Some(failure) = self.tls.as_ref().and_then(|tls| tls.options.explain(&e)) {
                return self.error(ConnectKind::Tls, failure, Some(Box::new(e)));
            }
            let kind = if e.kind() == io::ErrorKind::InvalidData {
                ConnectKind::Protocol
            } else {
                ConnectKind::Other
            };
            self.error(
                kind,
                format!(
                    "the handshake failed; is it a Redis server{}?",
                    if self.tls.is_none() {
                        " (a TLS-only server needs rediss://)"
                    } else {
                        ""
                    }
                ),
                Some(Box::new(e)),
            )
        };
        if let Some(password) = &self.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            if let Frame::Error(e) = conn.command(&args).await.map_err(io_error)? {
                let text = String::from_utf8_lossy(&e);
                let hint = if text.contains("without any password configured") {
                    "the server has no password; remove it from the URL"
                } else {
                    "check the user and password in the URL (redis://[user]:PASSWORD@host:port)"
                };
                return Err(self.error(
                    ConnectKind::Auth,
                    format!("authentication failed ({text}); {hint}"),
                    None,
                ));
            }
        }
        if self.db != 0 {
            let db = self.db.to_string();
            if let Frame::Error(e) = conn
                .command(&[b"SELECT", db.as_bytes()])
                .await
                .map_err(io_error)?
            {
                return Err(self.error(
                    ConnectKind::Protocol,
                    format!(
                        "cannot select database {} ({}); use a database below the server's `databases` setting",
                        self.db,
                        String::from_utf8_lossy(&e)
                    ),
                    None,
                ));
            }
        }
        // Naming the connection makes it visible in CLIENT LIST; it also proves
        // the server answers commands (a missing password shows up here).
        if let Frame::Error(e) = conn
            .command(&[b"CLIENT", b"SETNAME", client_name.as_bytes()])
            .await
            .map_err(io_error)?
        {
            let text = String::from_utf8_lossy(&e);
            if text.starts_with("NOAUTH") {
                return Err(self.error(
                    ConnectKind::Auth,
                    format!("authentication required ({text}); put the password in the URL: redis://[user]:PASSWORD@host:port"),
                    None,
                ));
            }
            // Other refusals (an ACL user without CLIENT, a proxy) are harmless.
            tracing::debug!(error = %text, "CLIENT SETNAME refused");
        }
        Ok(())
    }
}

/// A TCP or TLS stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Boxed halves of a connection, so the reader and the writer can run apart.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// See [`ReadHalf`].
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open, authenticated connection and its read buffer.
pub(crate) struct Conn {
    stream: Stream,
    pub(crate) buf: BytesMut,
}

impl Conn {
    /// Sends one command and reads its reply.
    pub(crate) async fn command(&mut self, args: &[&[u8]]) -> io::Result<Frame> {
        let mut out = Vec::new();
        resp::encode_command(&mut out, args);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        self.read_frame().await
    }

    /// Sends one command without waiting for its reply.
    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut out = Vec::new();
        resp::encode_command(&mut out, args);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Reads the next frame. Cancel-safe: bytes read before a cancellation
    /// stay in the buffer for the next call.
    pub(crate) async fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            match resp::parse(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the server does not speak RESP: {}", e.0),
                    ))
                }
            }
            self.buf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    /// Splits into halves; bytes already read stay in the returned buffer.
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf, BytesMut) {
        match self.stream {
            Stream::Tcp(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w), self.buf)
            }
            tls @ Stream::Tls(_) => {
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w), self.buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target> {
        Target::parse(url, &mut RedisOptions::new())
    }

    #[test]
    fn reads_urls_like_redis_rs() {
        let t = parse("redis://:secret@127.0.0.1:6380/3").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 6380);
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert_eq!(t.db, 3);
        assert!(t.tls.is_none());
        assert!(!format!("{t:?}").contains("secret"));
        let t = parse("rediss://user:pw@example.com").unwrap();
        assert_eq!(t.port, 6379);
        assert_eq!(t.username.as_deref(), Some("user"));
        assert!(t.tls.is_some());
        let t = parse("rediss://example.com/#insecure").unwrap();
        assert!(t.tls.unwrap().options.accepts_invalid_certs());
        let t = parse("redis://:p%40ss%3Aw@[::1]:6380").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss:w"));
        assert_eq!(t.host, "::1");
    }

    #[test]
    fn the_query_sets_options() {
        let mut options = RedisOptions::new().client_name("code");
        Target::parse(
            "redis://h?connect_timeout=2s&flush_timeout=3s&capacity=7&name=url+name&keepalive=off",
            &mut options,
        )
        .unwrap();
        assert_eq!(options.connect_timeout, Duration::from_secs(2));
        assert_eq!(options.flush_timeout, Duration::from_secs(3));
        assert_eq!(options.subscription_capacity, 7);
        assert_eq!(options.client_name, "url-name");
        assert_eq!(options.keepalive, None);
        assert_eq!(
            RedisOptions::new().keepalive,
            Some(crate::DEFAULT_KEEPALIVE)
        );
    }

    /// Every connection gets TCP keepalive: checked on the socket itself, after
    /// a real connect and handshake against a stand-in server that answers `+OK`.
    #[tokio::test]
    async fn connections_have_tcp_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            // CLIENT SETNAME is the only handshake command without a password.
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(b"+OK\r\n").await.unwrap();
            // Keep the connection open until the client is done.
            let _ = socket.read(&mut buf).await;
        });
        let target = parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let conn = target
            .connect(Duration::from_secs(5), "keepalive-test")
            .await
            .unwrap();
        let Stream::Tcp(tcp) = &conn.stream else {
            panic!("a redis:// URL gives a plain TCP stream");
        };
        let socket = socket2::SockRef::from(tcp);
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        }
        drop(conn);
        server.await.unwrap();
    }

    #[test]
    fn malformed_urls_say_so() {
        for (bad, needle) in [
            ("nats://x", "redis://"),
            ("127.0.0.1:6379", "the form is"),
            ("redis://:pw@h:notaport", "the form is"),
            ("redis://h/x", "`x` is not a number"),
            ("redis://:pw@h?foo=1", "unknown parameter `foo`"),
            ("redis://:pw@h?capacity=0", "`capacity=0`"),
            ("redis://:p%zz@h", "`%zz`"),
            ("redis://h#insecure", "only rediss://"),
            ("rediss://h#secure", "`#secure`"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }

    #[test]
    fn tls_keys_from_the_url_and_the_options() {
        let t = parse("rediss://h:1?ca=/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            t.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{t}"
        );
        let e = parse("redis://h:1?ca=/ca.pem").unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{e}");
        assert!(e.to_string().contains("write rediss://"), "{e}");
        let e = parse("rediss://h:1?cert=/c.pem").unwrap_err().to_string();
        assert!(e.contains("without `key`"), "{e}");
        let e = parse("rediss://h:1/?ca=/ca.pem#insecure")
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradicts"), "{e}");
        let named = Target::parse(
            "rediss://127.0.0.1:1",
            &mut RedisOptions::new()
                .tls(switchboard_tls::TlsOptions::new().server_name("cache.internal")),
        )
        .unwrap();
        assert_eq!(named.tls.unwrap().name.to_str(), "cache.internal");
        // Set in code, TLS settings apply to rediss:// URLs and are left unused on redis://.
        let mut coded =
            RedisOptions::new().tls(switchboard_tls::TlsOptions::new().ca("/nonexistent/ca.pem"));
        assert!(Target::parse("redis://h:1", &mut coded)
            .unwrap()
            .tls
            .is_none());
        // `ca` may be repeated; every file is kept, in order.
        let e = parse("rediss://h:1?ca=/nonexistent/a.pem&ca=/nonexistent/b.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/a.pem"), "{e}");
        // The TLS keys are among the keys an unknown one is told about.
        let e = parse("rediss://h:1?cafile=/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ca`, `cert`, `key` and `tls_server_name`"),
            "{e}"
        );
        for key in switchboard_tls::QUERY_KEYS {
            assert!(crate::QUERY_KEYS.contains(&key), "{key}");
        }
    }
}
