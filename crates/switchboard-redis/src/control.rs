//! The control connection: one plain request/reply connection per broker
//! handle for what is neither a publish nor a subscription's read — loading
//! the durable-mode function library, registering and removing durable
//! consumers, reading the registry, `XACK`, nacks, and the routing link's
//! acknowledgements. Commands take turns on it (a mutex); it reconnects on
//! the next command after a failure, loading the library again each time, so
//! a Redis restarted without persistence gets the functions back. A command
//! that fails on a connection kept from earlier is sent once more on a new
//! one (the commands sent here are idempotent, or counted by sender where
//! they are not: see `routing`).

use std::time::Duration;

use tokio::sync::Mutex;

use crate::connection::Conn;
use crate::options::{RedisOptions, Target};
use crate::resp::Frame;

/// The function library of the durable mode (see the crate docs, "Durable mode").
pub(crate) const LIBRARY: &str = include_str!("lua/switchboard.lua");

/// Why a control command failed, in words for the caller's error.
pub(crate) type Failure = String;

pub(crate) struct Control {
    target: Target,
    options: RedisOptions,
    conn: Mutex<Option<Conn>>,
    /// How long one command (connecting included) may take.
    timeout: Duration,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Control {
    pub(crate) fn new(target: Target, options: RedisOptions) -> Self {
        let timeout = options.connect_timeout + options.flush_timeout;
        Control {
            target,
            options,
            conn: Mutex::new(None),
            timeout,
        }
    }

    /// Opens the connection and loads the library now; the error says why
    /// the durable mode is unavailable (e.g. a Redis older than 7.0, which
    /// has no functions, or an ACL user without `FUNCTION`).
    pub(crate) async fn start(&self, conn: Conn) -> Result<(), Failure> {
        let mut slot = self.conn.lock().await;
        let mut conn = conn;
        let loaded = load_when_ready(&mut conn, self.timeout).await;
        *slot = Some(conn);
        loaded
    }

    /// Loads the library again (after a publish met `Function not found`).
    /// On a cluster the connection is renewed instead, which loads the
    /// library on the node that owns the durable keys now (after a
    /// resharding the control connection may still be on the old one).
    pub(crate) async fn reload(&self) -> Result<(), Failure> {
        if self.target.is_cluster() {
            *self.conn.lock().await = None;
            return self.call(&[b"PING"]).await.map(|_| ());
        }
        self.call(&[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()])
            .await
            .map(|_| ())
    }

    /// Sends one command and returns its reply; an error reply is a failure.
    /// A `Function not found` reply (the library was flushed) loads it again
    /// and retries once.
    pub(crate) async fn call(&self, args: &[&[u8]]) -> Result<Frame, Failure> {
        match tokio::time::timeout(self.timeout, self.call_inner(args)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection's state is unknown (a reply may still come): renew it.
                if let Ok(mut slot) = self.conn.try_lock() {
                    *slot = None;
                }
                Err(format!("Redis did not answer within {:?}", self.timeout))
            }
        }
    }

    async fn call_inner(&self, args: &[&[u8]]) -> Result<Frame, Failure> {
        let mut slot = self.conn.lock().await;
        let mut reloaded = false;
        let mut renewed = false;
        // Reconnecting (and a server still loading its data after a restart)
        // is retried with the backoff for up to the connect timeout.
        let give_up = switchboard_core::deadline(self.options.connect_timeout);
        let mut backoff = self.options.reconnect_backoff.attempts();
        loop {
            // A connection kept from earlier may have died meanwhile (a
            // restart, an idle timeout): one that fails is renewed once.
            let fresh = slot.is_none();
            if fresh {
                match self.open().await {
                    Ok(conn) => *slot = Some(conn),
                    Err(reason) => {
                        let delay = backoff.failed();
                        if tokio::time::Instant::now() + delay > give_up {
                            return Err(reason);
                        }
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            match conn.command(args).await {
                Ok(Frame::Error(e)) if !reloaded && e.starts_with(b"ERR Function not found") => {
                    reloaded = true;
                    load(conn).await?;
                }
                Ok(Frame::Error(e)) if e.starts_with(b"ASK ") => {
                    // The durable slot is being migrated, and this key has
                    // moved already: this one command goes to the new node.
                    match crate::cluster::asked(&e) {
                        Some((host, port)) => return self.ask(&host, port, args).await,
                        None => {
                            return Err(format!("Redis answered {}", String::from_utf8_lossy(&e)))
                        }
                    }
                }
                Ok(Frame::Error(e)) if crate::cluster::is_redirect(&e) => {
                    // The durable slot moved (a failover, resharding) or the
                    // cluster is not serving it now: find its owner again.
                    *slot = None;
                    let delay = backoff.failed();
                    if tokio::time::Instant::now() + delay > give_up {
                        return Err(format!("Redis answered {}", String::from_utf8_lossy(&e)));
                    }
                    tracing::debug!(reply = %String::from_utf8_lossy(&e), "redis: the durable keys' slot moved; reconnecting to its owner");
                    tokio::time::sleep(delay).await;
                }
                Ok(Frame::Error(e)) if e.starts_with(b"LOADING") => {
                    let delay = backoff.failed();
                    if tokio::time::Instant::now() + delay > give_up {
                        return Err(format!("Redis answered {}", String::from_utf8_lossy(&e)));
                    }
                    tokio::time::sleep(delay).await;
                }
                Ok(Frame::Error(e)) => {
                    return Err(format!("Redis answered {}", String::from_utf8_lossy(&e)))
                }
                Ok(frame) => return Ok(frame),
                Err(e) => {
                    *slot = None;
                    if fresh || renewed {
                        return Err(format!("the control connection broke: {e}"));
                    }
                    renewed = true;
                }
            }
        }
    }

    /// Sends one command, after `ASKING`, to the node an `ASK` redirect
    /// named, on a connection of its own, and returns the reply.
    async fn ask(&self, host: &str, port: u16, args: &[&[u8]]) -> Result<Frame, Failure> {
        let name = format!("{}-control", self.options.client_name());
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| {
                format!("the node {host}:{port} an ASK redirect named does not answer: {e}")
            })?;
        let mut conn = self
            .target
            .finish(tcp, host, &name)
            .await
            .map_err(|e| e.to_string())?;
        let broke = |e: std::io::Error| format!("the connection to {host}:{port} (ASK) broke: {e}");
        conn.command(&[b"ASKING"]).await.map_err(broke)?;
        let mut reply = conn.command(args).await.map_err(broke)?;
        if matches!(&reply, Frame::Error(e) if e.starts_with(b"ERR Function not found")) {
            load(&mut conn).await?;
            conn.command(&[b"ASKING"]).await.map_err(broke)?;
            reply = conn.command(args).await.map_err(broke)?;
        }
        match reply {
            Frame::Error(e) => Err(format!("Redis answered {}", String::from_utf8_lossy(&e))),
            frame => Ok(frame),
        }
    }

    /// Opens a control connection and loads the library on it.
    async fn open(&self) -> Result<Conn, Failure> {
        let name = format!("{}-control", self.options.client_name());
        let mut conn = self
            .target
            .connect_durable(self.options.connect_timeout, &name)
            .await
            .map_err(|e| e.to_string())?;
        load_when_ready(&mut conn, self.timeout).await?;
        Ok(conn)
    }
}

/// How long a Redis still loading its dataset (just restarted) is waited for
/// before the durable mode is given up.
const LOADING_PATIENCE: Duration = Duration::from_secs(60);

/// [`load`], waiting while Redis answers `LOADING` (it has just restarted
/// and reads its dataset): a connection made in that window took the
/// refusal for a Redis without functions, turned the durable mode off for
/// the life of the process and published plainly, so durable consumers
/// never got those messages, and `send` exited 0.
/// Each attempt waits at most `timeout` for Redis's answer.
async fn load_when_ready(conn: &mut Conn, timeout: Duration) -> Result<(), Failure> {
    let started = tokio::time::Instant::now();
    let mut backoff = switchboard_core::Backoff::DEFAULT.attempts();
    let mut told = false;
    loop {
        let loaded = tokio::time::timeout(timeout, load(conn))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "Redis did not answer FUNCTION LOAD within {timeout:?}"
                ))
            });
        match loaded {
            Err(reason) if reason.starts_with(LOADING) => {
                if started.elapsed() >= LOADING_PATIENCE {
                    return Err(format!("{reason}, still after {LOADING_PATIENCE:?}"));
                }
                if !std::mem::replace(&mut told, true) {
                    tracing::warn!("redis: {reason}; waiting for it before publishing (durable consumers would miss what is published meanwhile)");
                }
                tokio::time::sleep(backoff.failed()).await;
            }
            other => return other,
        }
    }
}

/// How [`load`]'s failure starts when Redis answered `-LOADING`.
const LOADING: &str = "Redis is loading its dataset";

/// Loads (or replaces) the function library on `conn`.
pub(crate) async fn load(conn: &mut Conn) -> Result<(), Failure> {
    match conn
        .command(&[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()])
        .await
    {
        Ok(Frame::Error(e)) if e.starts_with(b"LOADING") => Err(format!(
            "{LOADING} (it has just started): {}",
            String::from_utf8_lossy(&e)
        )),
        Ok(Frame::Error(e)) => Err(format!(
            "FUNCTION LOAD of switchboard's library failed: {} (Redis 7.0 or later is needed, and an ACL user allowed FUNCTION and FCALL)",
            String::from_utf8_lossy(&e)
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("the control connection broke: {e}")),
    }
}
