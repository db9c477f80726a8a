//! The worker's metrics and health over HTTP: the library's
//! `Running::serve_metrics` on the in-memory broker, and `switchboard worker
//! --metrics` on a nats-server of the test's own, which the test kills and
//! restarts to watch `/readyz` flip to 503 and back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{assert_one_error_line, Process, Stdout, TempDir, PATIENCE};
use switchboard::worker::{Context, HandlerError, Route, Worker};
use switchboard::{MemoryBroker, Message, Publisher};
use switchboard_testkit::{free_port, unique, NatsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `addr`: the status code and the body (one request per
/// connection, `Connection: close`), bounded by a timeout.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an HTTP answer within 10s")
        .expect("an HTTP answer");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the series `name{labels}` in a scrape (labels as written, in order).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Scrapes until `check` holds on the scrape (or panics after `patience`).
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        if check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what} in the metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks `path` until it answers `status` (or panics after `patience`).
async fn wait_status(addr: SocketAddr, path: &str, status: u16, patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let (got, body) = get(addr, path).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn library_metrics_count_per_route_and_outcome() {
    let broker = MemoryBroker::new();
    let running = Worker::new(broker.clone())
        .on("jobs.ok", |_ctx: Context| async {
            Ok::<_, HandlerError>(())
        })
        .route(
            Route::new("jobs.bad", |_ctx: Context| async {
                Err::<(), _>(HandlerError::permanent("not today"))
            })
            .dead_letter("dead.jobs"),
        )
        .start()
        .await
        .unwrap();
    let server = running
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let before = scrape_until(addr, "the routes", |s| {
        s.contains(r#"switchboard_worker_messages_total{route="jobs.ok",outcome="received"} 0"#)
    })
    .await;
    assert_eq!(value(&before, "switchboard_worker_ready"), Some(1.0));
    assert_eq!(
        value(&before, r#"switchboard_broker_connected{broker="memory"}"#),
        Some(1.0)
    );

    for _ in 0..3 {
        broker
            .publish(Message::new("jobs.ok", "fine").unwrap())
            .await
            .unwrap();
    }
    broker
        .publish(Message::new("jobs.bad", "broken").unwrap())
        .await
        .unwrap();
    let after = scrape_until(addr, "4 messages handled", |s| {
        value(
            s,
            r#"switchboard_worker_messages_total{route="jobs.ok",outcome="handled"}"#,
        ) == Some(3.0)
            && value(
                s,
                r#"switchboard_worker_messages_total{route="jobs.bad",outcome="handled"}"#,
            ) == Some(1.0)
    })
    .await;
    let series = |route: &str, outcome: &str| {
        value(
            &after,
            &format!(r#"switchboard_worker_messages_total{{route="{route}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(series("jobs.ok", "received"), Some(3.0));
    assert_eq!(series("jobs.ok", "dead_lettered"), Some(0.0));
    assert_eq!(series("jobs.bad", "received"), Some(1.0));
    assert_eq!(series("jobs.bad", "dead_lettered"), Some(1.0));
    assert_eq!(series("jobs.bad", "permanent"), Some(1.0));
    assert_eq!(series("jobs.bad", "retried"), Some(0.0));
    assert_eq!(
        value(
            &after,
            r#"switchboard_worker_handler_duration_seconds_count{route="jobs.ok"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&after, r#"switchboard_worker_in_flight{route="jobs.ok"}"#),
        Some(0.0)
    );
    // The worker's own totals agree with the per-route series.
    assert_eq!(running.stats().handled, 4);

    // Shutting down: not ready any more, still alive.
    let token = running.shutdown_token();
    token.cancel();
    wait_status(addr, "/readyz", 503, PATIENCE).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let summary = tokio::time::timeout(PATIENCE, running.wait())
        .await
        .unwrap();
    assert_eq!(summary.stats.handled, 4);
    tokio::time::timeout(PATIENCE, server.stop()).await.unwrap();
}

#[tokio::test]
async fn library_refuses_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let running = Worker::new(MemoryBroker::new())
        .on("x", |_ctx: Context| async { Ok::<_, HandlerError>(()) })
        .start()
        .await
        .unwrap();
    let error = running.serve_metrics(addr).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("cannot serve metrics on {addr}: ")),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_worker_metrics_follow_messages_and_the_broker_connection() {
    let Some(mut server) = NatsServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let subject = unique("metrics");
    let dir = TempDir::new("metrics");
    let config = dir.write(
        "worker.toml",
        &format!("[[route]]\non = \"{subject}.>\"\npublish = \"{subject}-out.{{subject}}\"\n"),
    );
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let worker = Process::start(
        &[
            "--broker",
            &url,
            "worker",
            "--config",
            &config,
            "--metrics",
            &addr.to_string(),
        ],
        Stdout::Read,
    );
    worker.wait_stderr("worker ready", PATIENCE);
    assert!(
        worker
            .stderr()
            .contains(&format!("metrics on http://{addr}/metrics")),
        "{}",
        worker.stderr()
    );
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));

    let broker = switchboard::connect(&url).await.unwrap();
    let route = format!("{subject}.>");
    let received =
        format!(r#"switchboard_worker_messages_total{{route="{route}",outcome="received"}}"#);
    let handled =
        format!(r#"switchboard_worker_messages_total{{route="{route}",outcome="handled"}}"#);
    let first = scrape_until(addr, "the route", |s| value(s, &received).is_some()).await;
    assert_eq!(value(&first, &received), Some(0.0));
    for n in 0..5 {
        broker
            .publish(Message::new(format!("{subject}.{n}"), "x").unwrap())
            .await
            .unwrap();
    }
    broker.flush().await.unwrap();
    let counted = scrape_until(addr, "5 handled", |s| value(s, &handled) == Some(5.0)).await;
    assert_eq!(value(&counted, &received), Some(5.0));
    assert_eq!(
        value(&counted, r#"switchboard_broker_connected{broker="nats"}"#),
        Some(1.0)
    );
    let _ = broker.close().await;

    // The broker goes away: not ready (503), still alive.
    server.process.kill();
    let reason = wait_status(addr, "/readyz", 503, PATIENCE).await;
    assert!(reason.contains("connection is down"), "{reason}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let down = scrape_until(addr, "the broker down", |s| {
        value(s, r#"switchboard_broker_connected{broker="nats"}"#) == Some(0.0)
    })
    .await;
    assert_eq!(value(&down, "switchboard_worker_ready"), Some(0.0));

    // Back on the same port: ready again once the client reconnected.
    server.process.start_again();
    wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
    let up = scrape_until(addr, "the broker back", |s| {
        value(s, r#"switchboard_broker_connected{broker="nats"}"#) == Some(1.0)
    })
    .await;
    assert!(
        value(
            &up,
            r#"switchboard_broker_disconnects_total{broker="nats"}"#
        ) >= Some(1.0),
        "{up}"
    );

    // The subscription reported the broken connection as an `Err` item.
    let disconnected = format!(
        r#"switchboard_worker_subscription_errors_total{{route="{route}",kind="disconnected"}}"#
    );
    scrape_until(addr, "the disconnection counted", |s| {
        value(s, &disconnected) >= Some(1.0)
    })
    .await;

    worker.signal("INT");
    let (status, _, stderr) = worker.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
}

/// Runs `switchboard worker --metrics ADDR` on the in-memory broker to its end.
fn worker_with_metrics(tag: &str, addr: &str) -> std::process::Output {
    let dir = TempDir::new(tag);
    let config = dir.write("worker.toml", "[[route]]\non = \"a.>\"\nlog = true\n");
    harness::switchboard()
        .args([
            "--broker",
            "memory://",
            "worker",
            "--config",
            &config,
            "--metrics",
            addr,
        ])
        .output()
        .unwrap()
}

#[test]
fn cli_worker_metrics_bad_address_is_one_line() {
    let output = worker_with_metrics("metrics-bad", "nowhere");
    assert_eq!(output.status.code(), Some(1));
    assert_one_error_line(
        &String::from_utf8_lossy(&output.stderr),
        "--metrics \"nowhere\" is not an address to listen on",
    );
}

#[test]
fn cli_worker_metrics_port_taken_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = worker_with_metrics("metrics-taken", &addr);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors = harness::error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
