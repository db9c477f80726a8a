//! A TCP proxy a test controls, between a client and a broker, to break the link
//! in the ways networks do.
//!
//! - [`TcpProxy::freeze`]: bytes stop flowing both ways but the sockets stay
//!   open, like a dead route or a hung peer: only keepalives (PING, heartbeats)
//!   can tell;
//! - [`TcpProxy::cut`]: every open connection is reset at once, like a broker
//!   crash seen from the client; new connections are still forwarded;
//! - [`TcpProxy::refuse`]: new connections are closed as soon as they are
//!   accepted, until [`TcpProxy::accept`] is called again.
//!
//! It runs on plain threads, so it works whatever runtime the test uses, and
//! it stops (closing everything) when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP proxy from a private loopback port to `target`.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    /// Joined on drop, so the port is closed once the proxy is gone.
    accepting: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    frozen: AtomicBool,
    refusing: AtomicBool,
    stopped: AtomicBool,
    accepted: AtomicU64,
    /// Both ends of every live connection, so `cut` can reset them.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        match self.streams.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn reset_all(&self) {
        for stream in self.streams().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl TcpProxy {
    /// Starts forwarding a new loopback port to `target` (e.g. `127.0.0.1:4222`).
    pub fn start(target: impl Into<SocketAddr>) -> Self {
        let target = target.into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let accepting = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(listener, target, accepting))
            .expect("the proxy thread starts");
        TcpProxy {
            port,
            shared,
            accepting: Some(accepting),
        }
    }

    /// Forwards to `127.0.0.1:port`.
    pub fn to_port(port: u16) -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for building a URL.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many client connections it has accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops moving bytes in both directions; sockets stay open.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again (what was held back is delivered).
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// Resets every open connection (new ones are still accepted).
    pub fn cut(&self) {
        self.shared.reset_all();
    }

    /// Closes new connections at once, until [`accept`](Self::accept).
    pub fn refuse(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections again after [`refuse`](Self::refuse).
    pub fn accept(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.reset_all();
        // Wakes the accept loop so it sees `stopped`, then waits for it to
        // drop the listener: a test that drops the proxy to "kill a host"
        // expects the port closed as soon as `drop` returns.
        let woken = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        if let Some(accepting) = self.accepting.take() {
            if woken {
                let _ = accepting.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.refusing.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut streams = shared.streams();
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                streams.push(a);
                streams.push(b);
            }
        }
        let up = shared.clone();
        let down = shared.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(client, server2, up));
        let _ = std::thread::Builder::new()
            .name("proxy-down".into())
            .spawn(move || pump(server, client2, down));
    }
}

/// Copies `from` to `to` until either closes, holding bytes back while frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let mut buffer = vec![0u8; 64 * 1024];
    // A read timeout lets a frozen pump stop reading without losing bytes.
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        if shared.frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let read = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        // Bytes read just as the link froze are held until it thaws.
        while shared.frozen.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
