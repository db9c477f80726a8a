//! Broker faults against the real binary: a nats-server of the test's own
//! killed or restarted mid-stream, links frozen by a proxy the test controls
//! (in front of the shared brokers, which are never touched). Every bound is a
//! generous "does not hang", never a speed check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::{broker_url, error_lines, unique, Listener, Process, Stdout, TempDir, PATIENCE};
use switchboard_testkit::{NatsServer, TcpProxy};

/// How long a stopped command may take to exit before the test calls it a hang.
const EXIT_PATIENCE: Duration = Duration::from_secs(15);

/// Writes numbered lines to `stdin` until stopped or the pipe breaks, one
/// every `pause` (none when zero); counts them.
struct Feeder {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(mut stdin: std::process::ChildStdin, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stopping, counting) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stopping.load(Ordering::SeqCst) {
                n += 1;
                if writeln!(stdin, "line {n}").is_err() {
                    return;
                }
                if !pause.is_zero() {
                    let _ = stdin.flush();
                    std::thread::sleep(pause);
                }
                counting.store(n, Ordering::SeqCst);
            }
            // Dropping stdin ends `send`'s input.
        });
        Feeder {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn wait_written(&self, lines: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.written.load(Ordering::SeqCst) < lines {
            assert!(Instant::now() < deadline, "send does not read its input");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops writing and closes the pipe; returns how many lines were written.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.written.load(Ordering::SeqCst)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn send_ends_within_its_flush_timeout_when_nats_dies_mid_stream() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = format!("{}?flush_timeout=2s", server.url());
    let mut send = Process::start(&["--broker", &url, "send", "--on", "a.b"], Stdout::Read);
    let feeder = Feeder::start(send.stdin(), Duration::ZERO);
    feeder.wait_written(20_000);
    server.process.kill();
    let (status, _stdout, stderr) = send.wait(Duration::from_secs(30));
    drop(feeder);
    assert!(!status.success(), "{status}; {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(errors[0].contains("handed to the client"), "{stderr}");
    assert!(errors[0].contains("unknown"), "{stderr}");
}

/// The server is killed between two lines and stays down: `send` fails at
/// its flush, and its warning about the lost link does not claim that the
/// client reconnected (it did before).
#[test]
fn send_whose_server_stays_down_does_not_claim_a_reconnect() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = format!("{}?flush_timeout=2s", server.url());
    let mut send = Process::start(&["--broker", &url, "send", "--on", "a.b"], Stdout::Read);
    let feeder = Feeder::start(send.stdin(), Duration::from_millis(10));
    feeder.wait_written(20);
    server.process.kill();
    send.wait_stderr("connection lost", PATIENCE);
    feeder.finish();
    let (status, _stdout, stderr) = send.wait(Duration::from_secs(30));
    assert!(!status.success(), "{status}; {stderr}");
    assert!(stderr.contains("lost 1 time(s) while sending:"), "{stderr}");
    assert!(!stderr.contains("reconnected"), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(errors[0].contains("handed to the client"), "{stderr}");
}

/// `send MESSAGE --count N` whose server dies mid-way says how many of the
/// N were not sent; it spoke of lines and of "the rest of stdin", which it
/// never read.
#[test]
fn send_count_whose_server_dies_says_how_many_were_not_sent() {
    let Some(mut server) = switchboard_testkit::RedisServer::start(&[]) else {
        return;
    };
    let url = format!("{}?flush_timeout=2s", server.url());
    let send = Process::start(
        &[
            "--broker", &url, "send", "--on", "a.b", "--count", "1000000", "--sleep", "1ms", "m",
        ],
        Stdout::Read,
    );
    std::thread::sleep(Duration::from_millis(500));
    server.process.kill();
    let (status, _stdout, stderr) = send.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(
        errors[0].contains("earlier message(s) were handed to the client"),
        "{stderr}"
    );
    assert!(
        errors[0].contains(" of --count 1000000 were not sent"),
        "{stderr}"
    );
    assert!(!errors[0].contains("stdin"), "{stderr}");
}

#[test]
fn send_across_a_nats_restart_warns_that_messages_may_be_lost() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let mut send = Process::start(
        &["--broker", &url, "-v", "send", "--on", "a.b"],
        Stdout::Read,
    );
    let feeder = Feeder::start(send.stdin(), Duration::from_millis(1));
    feeder.wait_written(200);
    server.process.restart();
    send.wait_stderr("reconnected", PATIENCE);
    let sent = feeder.finish();
    let (status, _stdout, stderr) = send.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(
        stderr.contains("lost 1 time(s) while sending and the client reconnected"),
        "no warning about the reconnect: {stderr}"
    );
    assert!(stderr.contains("may not have reached"), "{stderr}");
    // -v's summary says it too.
    let summary = stderr
        .lines()
        .find(|line| line.contains(&format!("sent {sent} message(s)")))
        .unwrap_or_else(|| panic!("no summary for {sent} lines: {stderr}"));
    assert!(summary.contains("1 reconnect"), "{summary}");
}

#[test]
fn send_across_a_cut_amqp_link_warns_that_messages_may_be_lost() {
    let Some(url) = broker_url("amqp", "send_across_a_cut_amqp_link") else {
        return;
    };
    let (proxy, url) = through_proxy(&url);
    let subject = unique("cut");
    let mut send = Process::start(&["--broker", &url, "send", "--on", &subject], Stdout::Read);
    let feeder = Feeder::start(send.stdin(), Duration::from_millis(1));
    feeder.wait_written(200);
    proxy.cut();
    // The next publish finds the connection gone and reconnects.
    send.wait_stderr("connection lost", PATIENCE);
    std::thread::sleep(Duration::from_millis(500));
    feeder.finish();
    let (_status, _stdout, stderr) = send.wait(EXIT_PATIENCE);
    // Confirms outstanding at the cut may fail the final flush too; either
    // way the reconnect is reported.
    assert!(
        stderr.contains("time(s) while sending"),
        "no warning about the reconnect: {stderr}"
    );
    assert!(stderr.contains("may not have reached"), "{stderr}");
}

fn log_worker(url: &str, dir: &TempDir, subject: &str, stdout: Stdout) -> Process {
    let config = dir.write(
        "reactions.toml",
        &format!("[[route]]\non = \"{subject}\"\nlog = true\n"),
    );
    let worker = Process::start(
        &[
            "--broker", url, "worker", "--config", &config, "--grace", "2s",
        ],
        stdout,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    worker
}

#[test]
fn worker_stops_within_its_grace_period_when_nats_is_unreachable() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let dir = TempDir::new("unreachable");
    let worker = log_worker(&server.url(), &dir, "jobs.>", Stdout::Read);
    server.process.kill();
    worker.wait_stderr("connection lost", PATIENCE);
    worker.signal("TERM");
    let (status, _stdout, stderr) = worker.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

#[test]
fn listen_stops_at_once_when_nats_is_down() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let listen = Listener::start(&server.url(), &["--on", "a.>"]).unwrap();
    server.process.kill();
    let deadline = Instant::now() + PATIENCE;
    while !listen.stderr().contains("connection lost") {
        assert!(Instant::now() < deadline, "{}", listen.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    listen.signal("TERM");
    let (status, stderr) = listen.wait(Duration::from_secs(12));
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("caught SIGTERM"), "{stderr}");
}

/// `url` with its host and port replaced by a proxy's, and the proxy.
fn through_proxy(url: &str) -> (TcpProxy, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, address) = match authority.rsplit_once('@') {
        Some((userinfo, address)) => (format!("{userinfo}@"), address),
        None => (String::new(), authority),
    };
    let target: SocketAddr = address.to_socket_addrs().unwrap().next().unwrap();
    let proxy = TcpProxy::start(target);
    let url = format!("{scheme}://{userinfo}{}{tail}", proxy.address());
    (proxy, url)
}

fn worker_over_a_frozen_link(kind: &str) {
    let Some(url) = broker_url(kind, "worker_over_a_frozen_link") else {
        return;
    };
    let (proxy, url) = through_proxy(&url);
    let dir = TempDir::new("frozen");
    let worker = log_worker(&url, &dir, &unique("frozen"), Stdout::Read);
    proxy.freeze();
    std::thread::sleep(Duration::from_millis(200));
    worker.signal("TERM");
    let (status, _stdout, stderr) = worker.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

fn listen_over_a_frozen_link(kind: &str) {
    let Some(url) = broker_url(kind, "listen_over_a_frozen_link") else {
        return;
    };
    let (proxy, url) = through_proxy(&url);
    let subject = unique("frozen");
    let listen = Listener::start(&url, &["--on", &subject]).unwrap();
    proxy.freeze();
    std::thread::sleep(Duration::from_millis(200));
    listen.signal("INT");
    let (status, stderr) = listen.wait(EXIT_PATIENCE);
    assert!(status.success(), "{status}; {stderr}");
    assert!(stderr.contains("caught Ctrl-C"), "{stderr}");
}

macro_rules! frozen_on_every_broker {
    ($($kind:ident),*) => {$(
        mod $kind {
            #[test]
            fn worker_stops_within_its_grace_period_over_a_frozen_link() {
                super::worker_over_a_frozen_link(stringify!($kind));
            }
            #[test]
            fn listen_stops_over_a_frozen_link() {
                super::listen_over_a_frozen_link(stringify!($kind));
            }
        }
    )*};
}

frozen_on_every_broker!(nats, redis, amqp, mqtt);

/// A bridge whose destination goes away (every connection reset, new ones
/// refused) and comes back keeps running and forwards what came meanwhile,
/// even from a source that keeps nothing for absent readers (NATS core):
/// it stops reading --from and forwards what it holds again until --to
/// takes it. Before, it exited 1 at the first failure and what NATS sent
/// until it was restarted was lost.
#[test]
fn a_bridge_rides_out_an_outage_of_its_destination() {
    let (Some(nats), Some(redis)) = (
        broker_url("nats", "bridge_outage_from"),
        broker_url("redis", "bridge_outage_to"),
    ) else {
        return;
    };
    let (proxy, to) = through_proxy(&redis);
    let pattern = format!("{}.>", unique("outage"));
    let subject = pattern.replace('>', "n");
    let at_destination = Listener::start(&redis, &["--on", &pattern])
        .unwrap_or_else(|(status, stderr)| panic!("listen exited with {status}: {stderr}"));
    let bridge = Process::start(
        &["bridge", "--from", &nats, "--to", &to, "--on", &pattern],
        Stdout::Read,
    );
    bridge.wait_stderr("bridging '", PATIENCE);
    harness::send(&nats, &["--on", &subject, "a"], b"");
    assert_eq!(at_destination.lines(1), [format!("[{subject}] a")]);
    proxy.refuse();
    proxy.cut();
    harness::send(&nats, &["--on", &subject, "b"], b"");
    harness::send(&nats, &["--on", &subject, "c"], b"");
    bridge.wait_stderr("retrying for up to 30s", PATIENCE);
    proxy.accept();
    let mut arrived = Vec::new();
    while !arrived.contains(&format!("[{subject}] c")) {
        match at_destination.line(PATIENCE) {
            Some(line) => arrived.push(line),
            None => panic!(
                "after {arrived:?} nothing more arrived; bridge: {}",
                bridge.stderr()
            ),
        }
    }
    // b may come twice (forwarded again: whether --to had it was unknown).
    arrived.dedup();
    assert_eq!(
        arrived,
        [format!("[{subject}] b"), format!("[{subject}] c")]
    );
    bridge.signal("TERM");
    let (status, _, stderr) = bridge.wait(EXIT_PATIENCE);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("takes messages again"), "{stderr}");
}

/// A reconnect that fails for a lasting reason (here a password changed
/// while the listener was connected) says why at the default log level; it
/// said only "connection lost … reconnecting", the reason shown at `-vv`.
#[test]
fn a_reconnect_refused_for_a_changed_password_says_why() {
    let Some(server) = switchboard_testkit::RedisServer::start(&["--requirepass", "pw-one-7x"])
    else {
        return;
    };
    let port = server.port().to_string();
    let url = format!("redis://:pw-one-7x@127.0.0.1:{port}");
    let listen = Listener::start(&url, &["--on", "a.>"]).unwrap();
    let cli = |password: &str, args: &[&str]| {
        let status = std::process::Command::new("redis-cli")
            .args(["-p", &port, "--no-auth-warning", "-a", password])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli {args:?}");
    };
    cli("pw-one-7x", &["CONFIG", "SET", "requirepass", "pw-two-9y"]);
    cli("pw-two-9y", &["CLIENT", "KILL", "TYPE", "pubsub"]);
    let deadline = Instant::now() + PATIENCE;
    let stderr = loop {
        let stderr = listen.stderr();
        if stderr.contains("failed: ") && stderr.contains("WRONGPASS") {
            break stderr;
        }
        assert!(Instant::now() < deadline, "no reason given:\n{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !stderr.contains("pw-one-7x"),
        "the password leaked: {stderr}"
    );
    listen.signal("TERM");
    let _ = listen.wait(Duration::from_secs(12));
}
