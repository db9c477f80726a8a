//! What `listen` says when its link has trouble: one warning when the
//! connection is lost, one line when the subscription is back, nothing that
//! blames a slow reader after a restart; and a message it cannot represent is
//! one stderr line, after which it goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{unique, Listener, PATIENCE};
use switchboard_testkit::{NatsServer, RedisServer};

/// Sends raw RESP to `port`, as `redis-cli PUBLISH channel payload` does.
fn raw_publish(port: u16, channel: &str, payload: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut command = b"*3\r\n$7\r\nPUBLISH\r\n".to_vec();
    for arg in [channel, payload] {
        command.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    stream.write_all(&command).unwrap();
    let mut reply = [0u8; 16];
    let _ = stream.read(&mut reply).unwrap();
}

/// Sends `line` with `switchboard send` until `listener` prints it.
fn send_until_printed(url: &str, subject: &str, listener: &Listener) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing printed; stderr: {}",
            listener.stderr()
        );
        let _ = harness::run(url, &["send", "--on", subject, "after"], b"");
        if let Some(line) = listener.line(Duration::from_millis(500)) {
            return line;
        }
    }
}

#[test]
fn a_channel_that_is_not_a_subject_is_one_warning_and_listen_goes_on() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let listener = Listener::start(&server.url(), &["--on", "a.>", "--count", "1"]).unwrap();
    raw_publish(server.port(), "a.bad subject", "x");
    raw_publish(server.port(), "a.good", "y");
    assert_eq!(listener.lines(1), ["[a.good] y"]);
    let (status, stderr) = listener.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("\"a.bad subject\""), "{stderr}");
    assert!(warnings[0].contains("redis"), "{stderr}");
}

/// The lines about one outage of a Redis server, down for a while (so that
/// several reconnection attempts fail): the loss and the recovery, once each.
#[test]
fn a_redis_restart_is_reported_as_a_lost_connection_and_a_resubscription() {
    let Some(mut server) = RedisServer::start(&[]) else {
        return;
    };
    let subject = unique("restart");
    let listener = Listener::start(&server.url(), &["--on", &subject]).unwrap();
    server.process.kill();
    std::thread::sleep(Duration::from_millis(2500));
    server.process.start_again();
    assert_eq!(
        send_until_printed(&server.url(), &subject, &listener),
        format!("[{subject}] after")
    );
    listener.signal("INT");
    let (_, stderr) = listener.wait(PATIENCE);
    assert!(!stderr.contains("client-output-buffer"), "{stderr}");
    assert!(!stderr.contains("behind"), "{stderr}");
    let lost: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("lost its connection"))
        .collect();
    assert_eq!(lost.len(), 1, "{stderr}");
    assert!(lost[0].contains("resubscribing"), "{stderr}");
    let back: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(&format!("resubscribed to '{subject}' after")))
        .collect();
    assert_eq!(back.len(), 1, "{stderr}");
    assert!(
        !stderr.contains("failed"),
        "attempts are not warnings: {stderr}"
    );
}

#[test]
fn a_nats_restart_logs_one_resubscribed_line() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let subject = unique("restart");
    let listener = Listener::start(&server.url(), &["--on", &subject]).unwrap();
    server.process.kill();
    std::thread::sleep(Duration::from_millis(2500));
    server.process.start_again();
    assert_eq!(
        send_until_printed(&server.url(), &subject, &listener),
        format!("[{subject}] after")
    );
    listener.signal("INT");
    let (_, stderr) = listener.wait(PATIENCE);
    let back = stderr
        .lines()
        .filter(|line| line.contains(&format!("resubscribed to '{subject}' after")))
        .count();
    assert_eq!(back, 1, "{stderr}");
    assert!(
        !stderr.contains("client error"),
        "attempts are not warnings: {stderr}"
    );
}

/// The shared RabbitMQ cannot be restarted by a test: its link is cut
/// instead, through a proxy the test controls.
#[test]
fn an_amqp_cut_logs_one_resubscribed_line() {
    let Some(url) = harness::broker_url("amqp", "an_amqp_cut_logs_one_resubscribed_line") else {
        return;
    };
    let mut through_proxy = url::Url::parse(&url).unwrap();
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(
        through_proxy.host_str().unwrap(),
        through_proxy.port().unwrap_or(5672),
    ))
    .unwrap()
    .next()
    .unwrap();
    let proxy = switchboard_testkit::TcpProxy::start(address);
    through_proxy.set_host(Some("127.0.0.1")).unwrap();
    through_proxy.set_port(Some(proxy.port())).unwrap();
    let subject = unique("cut");
    let listener = Listener::start(through_proxy.as_str(), &["--on", &subject]).unwrap();
    proxy.refuse();
    proxy.cut();
    std::thread::sleep(Duration::from_millis(1500));
    proxy.accept();
    assert_eq!(
        send_until_printed(&url, &subject, &listener),
        format!("[{subject}] after")
    );
    listener.signal("INT");
    let (_, stderr) = listener.wait(PATIENCE);
    let lost = stderr
        .lines()
        .filter(|line| line.starts_with("warning: amqp: connection lost"))
        .count();
    assert_eq!(lost, 1, "{stderr}");
    let back = stderr
        .lines()
        .filter(|line| line.contains(&format!("resubscribed to '{subject}' after")))
        .count();
    assert_eq!(back, 1, "{stderr}");
    assert!(
        !stderr.contains("failed"),
        "attempts are not warnings: {stderr}"
    );
}
