//! `switchboard --broker tls://…`, `rediss://…` and `amqps://…` against real TLS
//! listeners started by the test (nats-server with a `tls {}` block,
//! redis-server with `--tls-port`, a TLS-terminating proxy in front of the
//! shared RabbitMQ), with certificates made by the test: `send` and `listen`
//! work with `ca=`, and every failure is one line, never a panic.
// Tests may unwrap: a failure is a test failure (helpers outside #[test] too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{assert_one_error_line, broker_url, run, send, unique, Listener, PATIENCE};
use switchboard_testkit::{NatsServer, Pki, RedisServer, TlsProxy};

/// `send` then `listen` over `url` (with `ca=` in it): the message arrives.
fn send_and_listen(url: &str) {
    let prefix = unique("tls");
    let pattern = format!("{prefix}.>");
    let listen = Listener::start(url, &["--on", &pattern, "--count", "1"]).unwrap_or_else(
        |(status, stderr)| panic!("listen over TLS exited with {status}: {stderr}"),
    );
    let subject = format!("{prefix}.secure");
    send(url, &["--on", &subject, "over TLS"], b"");
    assert_eq!(listen.lines(1), [format!("[{subject}] over TLS")]);
    let (status, stderr) = listen.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `send`, `listen` and `worker` each fail in one line naming `expected`, without a panic.
fn every_command_fails_in_one_line(url: &str, pki: &Pki, expected: &str) {
    let config = pki.dir().join("reactions.toml");
    std::fs::write(&config, "[[route]]\non = \"a.>\"\nexec = [\"true\"]\n").unwrap();
    let config = config.display().to_string();
    for args in [
        &["send", "--on", "a.b", "x"][..],
        &["listen", "--on", "a.>"][..],
        &["worker", "--config", &config][..],
    ] {
        let output = run(url, args, b"");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded: {stderr}");
        assert_one_error_line(&stderr, expected);
    }
}

#[test]
fn nats_tls_without_ca_is_a_clear_error_not_a_panic() {
    let pki = Pki::new();
    let Some(server) = NatsServer::start_tls(&pki) else {
        return;
    };
    every_command_fails_in_one_line(&server.tls_url(), &pki, "certificate is not trusted");
}

#[test]
fn nats_tls_with_ca_sends_and_listens() {
    let pki = Pki::new();
    let Some(server) = NatsServer::start_tls(&pki) else {
        return;
    };
    send_and_listen(&format!("{}?{}", server.tls_url(), pki.ca_query()));
}

#[test]
fn nats_mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let Some(server) = NatsServer::start_mutual_tls(&pki) else {
        return;
    };
    let url = format!("{}?{}", server.tls_url(), pki.ca_query());
    every_command_fails_in_one_line(&url, &pki, "requires a client certificate");
    send_and_listen(&format!("{url}&{}", pki.client_query()));
}

#[test]
fn redis_tls_with_ca_sends_and_listens() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_tls(&pki) else {
        return;
    };
    every_command_fails_in_one_line(&server.tls_url(), &pki, "certificate is not trusted");
    send_and_listen(&format!("{}?{}", server.tls_url(), pki.ca_query()));
}

#[test]
fn amqp_tls_with_ca_sends_and_listens() {
    let Some(plain) = broker_url("amqp", "amqp_tls_with_ca_sends_and_listens") else {
        return;
    };
    let port = url_port(&plain, 5672);
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, port);
    let tls = format!("amqps://guest:guest@{}", proxy.address());
    every_command_fails_in_one_line(&tls, &pki, "certificate is not trusted");
    send_and_listen(&format!("{tls}?{}", pki.ca_query()));
}

fn url_port(url: &str, default: u16) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|tail| tail.split(['/', '?']).next())
        .and_then(|port| port.parse().ok())
        .unwrap_or(default)
}
