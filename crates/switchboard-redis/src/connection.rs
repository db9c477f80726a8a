//! Opening one connection: TCP (with TCP keepalive), TLS or a unix socket, then `AUTH`,
//! `SELECT` and `CLIENT SETNAME`, all within the connect timeout; and the
//! open connection, which sends commands and reads RESP frames.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_core::Result;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::error;
use crate::options::Target;
use crate::resp::{self, Frame};

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

/// A plain stream: TCP, or a unix socket.
pub(crate) type Plain = Either<TcpStream, UnixStream>;

/// A plain stream, or a TLS stream over TCP.
pub(crate) type Stream = Either<Plain, Box<TlsStream<TcpStream>>>;

impl Target {
    /// Opens a connection and runs the handshake, all within `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration, client_name: &str) -> Result<Conn> {
        match tokio::time::timeout(timeout, self.connect_inner(client_name)).await {
            Ok(result) => result,
            Err(_) => Err(error::connect_timed_out(self, timeout)),
        }
    }

    async fn connect_inner(&self, client_name: &str) -> Result<Conn> {
        if let Some(path) = &self.socket {
            let unix = UnixStream::connect(path)
                .await
                .map_err(|e| error::unix_failed(self, path, e))?;
            let mut conn = Conn {
                stream: Either::Left(Either::Right(unix)),
                buf: BytesMut::with_capacity(64 * 1024),
            };
            self.handshake(&mut conn, client_name).await?;
            return Ok(conn);
        }
        let (tcp, host) = if self.is_cluster() {
            let (tcp, index) = self.connect_cluster_node().await?;
            (tcp, self.cluster[index].0.as_str())
        } else {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| error::tcp_failed(self, e))?;
            (tcp, self.host.as_str())
        };
        self.finish(tcp, host, client_name).await
    }

    /// Sets up an open TCP connection to `host` (TCP options, TLS checked
    /// against `host` on a cluster) and runs the handshake.
    pub(crate) async fn finish(
        &self,
        tcp: TcpStream,
        host: &str,
        client_name: &str,
    ) -> Result<Conn> {
        let _ = tcp.set_nodelay(true);
        set_keepalive(&tcp);
        let stream = match &self.tls {
            None => Either::Left(Either::Left(tcp)),
            Some(tls) => {
                // A cluster node is checked against its own host name.
                let name = if self.is_cluster() {
                    tls.options.name_for(host).map_err(|e| {
                        self.error(
                            switchboard_core::ConnectKind::Tls,
                            format!("cluster node {host}: {e}; set tls_server_name"),
                            None,
                        )
                    })?
                } else {
                    tls.name.clone()
                };
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| error::tls_failed(self, tls, e))?;
                Either::Right(Box::new(stream))
            }
        };
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        self.handshake(&mut conn, client_name).await?;
        Ok(conn)
    }

    /// A TCP connection to a node of the cluster: the one that answered
    /// last first, then the others in the URL's order, so a connection lost
    /// with its node moves to another one. Returns the node's index.
    pub(crate) async fn connect_cluster_node(&self) -> Result<(TcpStream, usize)> {
        use std::sync::atomic::Ordering;
        let nodes = self.cluster.len();
        let start = self.next_node.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for step in 0..nodes {
            let index = (start + step) % nodes;
            let (host, port) = &self.cluster[index];
            match TcpStream::connect((host.as_str(), *port)).await {
                Ok(tcp) => {
                    if step > 0 {
                        tracing::info!("redis: now on cluster node {host}:{port}");
                    }
                    self.next_node.store(index, Ordering::Relaxed);
                    return Ok((tcp, index));
                }
                Err(e) => failures.push(format!("{host}:{port}: {e}")),
            }
        }
        Err(self.error(
            switchboard_core::ConnectKind::Refused,
            format!(
                "no node of the cluster answers ({}); is the cluster running?",
                failures.join("; ")
            ),
            None,
        ))
    }

    async fn handshake(&self, conn: &mut Conn, client_name: &str) -> Result<()> {
        let io_error = |e: io::Error| error::handshake_failed(self, e);
        if let Some(password) = &self.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            if let Frame::Error(e) = conn.command(&args).await.map_err(io_error)? {
                return Err(error::auth_refused(self, &e));
            }
        }
        if self.db != 0 {
            let db = self.db.to_string();
            if let Frame::Error(e) = conn
                .command(&[b"SELECT", db.as_bytes()])
                .await
                .map_err(io_error)?
            {
                return Err(error::select_refused(self, &e));
            }
        }
        // Naming the connection makes it visible in CLIENT LIST; it also proves
        // the server answers commands (a missing password shows up here).
        if let Frame::Error(e) = conn
            .command(&[b"CLIENT", b"SETNAME", client_name.as_bytes()])
            .await
            .map_err(io_error)?
        {
            if e.starts_with(b"NOAUTH") {
                return Err(error::auth_required(self, &e));
            }
            // Other refusals (an ACL user without CLIENT, a proxy) are harmless.
            tracing::debug!(error = %String::from_utf8_lossy(&e), "CLIENT SETNAME refused");
        }
        Ok(())
    }
}

/// How much a read buffer grows by when it needs room.
const READ_CHUNK: usize = 64 * 1024;

/// A read buffer with less room than this gets [`READ_CHUNK`] more before a read.
const MIN_SPARE: usize = 8 * 1024;

/// Makes room in a read buffer before a read, if little is left (see
/// [`Conn::read_more`]).
pub(crate) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(READ_CHUNK);
    }
}

/// Boxed halves of a connection, so the reader and the writer can run apart.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// See [`ReadHalf`].
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open, authenticated connection and its read buffer.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
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
            self.read_more().await?;
        }
    }

    /// Reads what the server sent into the buffer (at least one byte).
    /// Cancel-safe. Makes room only when little is left: the frames taken
    /// off the buffer share its memory, so making room while they live
    /// means a new allocation, which per read (at high rates, per message)
    /// cost more than the read.
    pub(crate) async fn read_more(&mut self) -> io::Result<()> {
        reserve(&mut self.buf);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }

    /// Splits into halves; bytes already read stay in the returned buffer.
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf, BytesMut) {
        match self.stream {
            Either::Left(Either::Left(tcp)) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w), self.buf)
            }
            Either::Left(Either::Right(unix)) => {
                let (r, w) = unix.into_split();
                (Box::new(r), Box::new(w), self.buf)
            }
            tls @ Either::Right(_) => {
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w), self.buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RedisOptions;
    use tokio::io::AsyncWriteExt;

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
        let target = Target::parse(
            &format!("redis://127.0.0.1:{port}"),
            &mut RedisOptions::new(),
        )
        .unwrap();
        let conn = target
            .connect(Duration::from_secs(5), "keepalive-test")
            .await
            .unwrap();
        let Either::Left(Either::Left(tcp)) = &conn.stream else {
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
}
