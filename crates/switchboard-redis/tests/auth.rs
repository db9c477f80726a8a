//! ACL users and unix sockets against redis-servers of the test's own:
//! `redis://user:pass@host` works for the right user, a wrong password and an
//! unknown user are one line each without the password; `redis+unix://` and
//! `unix://` pass conformance cases over the socket, with and without a user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use switchboard_conformance::{cases, Connector, Context};
use switchboard_core::{Broker, ConnectKind, Error, Message, Publisher, SubscriberExt};
use switchboard_testkit::{assert_chain_does_not_repeat, unique, RedisServer};

/// The ACL rules of the servers here: `alice` may do everything, the default user nothing.
/// (redis-server takes a directive's words as separate arguments.)
const ACL: [&str; 10] = [
    "--user",
    "alice",
    "on",
    ">s3cret-pw",
    "~*",
    "&*",
    "+@all",
    "--user",
    "default",
    "off",
];

fn connector() -> Connector {
    Connector::new(|url: String| async move { switchboard_redis::connect(&url).await })
}

/// Publishes one message and receives it on another connection's subscription.
async fn round_trip(url: &str) {
    let publisher = switchboard_redis::connect(url).await.unwrap();
    let subscriber = switchboard_redis::connect(url).await.unwrap();
    let subject = unique("auth");
    let mut subscription = subscriber.subscribe_to(&subject).await.unwrap();
    publisher
        .publish(Message::new(subject.as_str(), "let in").unwrap())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let delivery = switchboard_conformance::recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("let in"));
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

/// Checks that `err` is one authentication line showing none of `secrets`.
fn assert_auth_error(err: &Error, secrets: &[&str]) {
    let text = err.to_string();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth), "{text}");
    assert!(!err.is_temporary(), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    for secret in secrets {
        assert!(!text.contains(secret), "shows a secret: {text}");
        assert!(
            !format!("{err:?}").contains(secret),
            "shows a secret: {err:?}"
        );
    }
    assert_chain_does_not_repeat(err);
}

#[tokio::test]
async fn acl_user_with_its_password_connects() {
    let Some(server) = RedisServer::start(&ACL) else {
        return;
    };
    let url = format!("redis://alice:s3cret-pw@127.0.0.1:{}", server.port());
    round_trip(&url).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_one_line_without_the_password() {
    let Some(server) = RedisServer::start(&ACL) else {
        return;
    };
    let port = server.port();
    let err = switchboard_redis::connect(&format!("redis://alice:wrong-pw@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_auth_error(&err, &["wrong-pw"]);
    assert!(err.to_string().contains("alice:***@"), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let err = switchboard_redis::connect(&format!("redis://mallory:s3cret-pw@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_auth_error(&err, &["s3cret-pw"]);
    assert!(err.to_string().contains("mallory:***@"), "{err}");

    // No user at all: the default user is off.
    let err = switchboard_redis::connect(&server.url()).await.unwrap_err();
    assert_auth_error(&err, &[]);
}

/// A redis-server also listening on a unix socket in a directory of its own.
struct UnixRedis {
    server: RedisServer,
    socket: PathBuf,
}

impl UnixRedis {
    fn start(extra: &[&str]) -> Option<Self> {
        let dir = std::env::temp_dir().join(unique("redis-unix"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let path = socket.display().to_string();
        let mut args = vec!["--unixsocket", &path, "--unixsocketperm", "700"];
        args.extend_from_slice(extra);
        let server = RedisServer::start(&args)?;
        // redis-server opens the TCP port first, then the socket: wait until
        // the socket accepts connections too (it exists a moment before).
        let deadline = std::time::Instant::now() + switchboard_testkit::process::START_PATIENCE;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {path}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(UnixRedis { server, socket })
    }
}

impl Drop for UnixRedis {
    fn drop(&mut self) {
        self.server.process.kill();
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs conformance cases against `url`.
async fn conformance_over(url: &str) {
    for (name, case) in [
        ("cross_connection_delivery", 0),
        ("headers_round_trip", 1),
        ("payload_binary", 2),
        ("fan_out_to_every_subscriber", 3),
    ] {
        let broker: Arc<dyn Broker> = connector().connect(url).await.unwrap();
        let ctx = Context::new("redis", name, url, connector(), broker);
        match case {
            0 => cases::cross_connection_delivery(&ctx).await,
            1 => cases::headers_round_trip(&ctx).await,
            2 => cases::payload_binary(&ctx).await,
            _ => cases::fan_out_to_every_subscriber(&ctx).await,
        }
        ctx.finish().await;
    }
}

#[tokio::test]
async fn unix_socket_urls_pass_conformance_cases() {
    let Some(redis) = UnixRedis::start(&[]) else {
        return;
    };
    let path = redis.socket.display().to_string();
    conformance_over(&format!("redis+unix://{path}")).await;
    conformance_over(&format!("unix://{path}?db=1&name=over-unix")).await;
}

#[tokio::test]
async fn unix_socket_with_an_acl_user() {
    let Some(redis) = UnixRedis::start(&ACL) else {
        return;
    };
    let path = redis.socket.display().to_string();
    round_trip(&format!("redis+unix://alice:s3cret-pw@{path}")).await;
    let err = switchboard_redis::connect(&format!("unix://alice:wrong-pw@{path}"))
        .await
        .unwrap_err();
    assert_auth_error(&err, &["wrong-pw"]);
    assert!(err.to_string().contains(&path), "{err}");
}

#[tokio::test]
async fn a_socket_nobody_serves_is_named() {
    let dir = std::env::temp_dir().join(unique("redis-unix-none"));
    let url = format!("redis+unix://{}/redis.sock", dir.display());
    let err = switchboard_redis::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Refused), "{text}");
    assert!(text.contains("no socket at"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert_chain_does_not_repeat(&err);
}

/// A user limited to its own channels, with no keys (`FUNCTION` and every
/// other command allowed): the durable mode is off for it, so it publishes
/// plainly. Before, every publish went to the durable function, whose keys
/// it may not touch, and no publish of it got through.
#[tokio::test]
async fn a_user_without_the_durable_keys_publishes_plainly() {
    let acl = [
        "--user",
        "carol",
        "on",
        ">c4rol-pw",
        "&own.*",
        "+@all",
        "--user",
        "default",
        "off",
    ];
    let Some(server) = RedisServer::start(&acl) else {
        return;
    };
    let url = format!("redis://carol:c4rol-pw@127.0.0.1:{}", server.port());
    let publisher = switchboard_redis::connect(&url).await.unwrap();
    let subscriber = switchboard_redis::connect(&url).await.unwrap();
    assert!(!publisher.capabilities().durable);
    let mut subscription = subscriber.subscribe_to("own.news").await.unwrap();
    publisher
        .publish(Message::new("own.news", "plainly").unwrap())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let delivery = switchboard_conformance::recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("plainly"));

    // A channel it may not publish on: refused, counted, not temporary.
    for _ in 0..3 {
        publisher
            .publish(Message::new("others.news", "no").unwrap())
            .await
            .unwrap();
    }
    let err = publisher.flush().await.unwrap_err();
    assert!(matches!(err, Error::Refused { count: 3, .. }), "{err:?}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("NOPERM"), "{err}");
    publisher.flush().await.unwrap();

    let durable = switchboard_core::Durable::new("carols").unwrap();
    let err = subscriber
        .subscribe_durable_to("own.>", &durable)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        switchboard_core::ErrorKind::Unsupported,
        "{err}"
    );
    assert!(err.to_string().contains("~switchboard:durable*"), "{err}");
    assert!(!err.to_string().contains("c4rol-pw"), "{err}");
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

/// `subscribe_durable` for a user whose ACL refuses one of the durable
/// reads' commands, on a server of its own; the error within 10 s.
async fn durable_refused(denied: &str, durable: switchboard_core::Durable) -> Error {
    let acl = [
        "--user",
        "part",
        "on",
        ">ppw-secret",
        "~*",
        "&*",
        "+@all",
        denied,
        "--user",
        "default",
        "off",
    ];
    let server = RedisServer::start(&acl).expect("redis-server");
    let url = format!("redis://part:ppw-secret@127.0.0.1:{}", server.port());
    let broker = switchboard_redis::connect(&url).await.unwrap();
    assert!(broker.capabilities().durable, "{denied}");
    let subscribed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        broker.subscribe_durable_to("a.>", &durable),
    )
    .await
    .expect("subscribe_durable answers");
    let err = match subscribed {
        Ok(_) => panic!("{denied}: subscribe_durable succeeded for a user who may not read"),
        Err(err) => err,
    };
    broker.close().await.unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Subscribe { .. }), "{err:?}");
    assert!(!text.contains("ppw-secret"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("a.>"), "{text}");
    err
}

/// A durable subscription Redis refuses to serve (the ACL denies a command
/// of its reads) fails with
/// one error naming what is missing. Before, each refusal counted as a lost
/// connection: the subscription reconnected every 100 ms for ever.
#[tokio::test]
async fn a_durable_subscription_redis_refuses_fails_naming_why() {
    if switchboard_testkit::process::find_program("redis-server").is_none() {
        return;
    }
    let durable = || switchboard_core::Durable::new("d1").unwrap();
    for denied in ["-xautoclaim", "-xreadgroup"] {
        let err = durable_refused(denied, durable()).await;
        let command = denied.trim_start_matches('-').to_ascii_uppercase();
        assert!(
            err.to_string()
                .contains(&format!("this user may not run {command}")),
            "{denied}: {err}"
        );
    }
    // An `ack_wait` past `XAUTOCLAIM`'s range looped the same way; it is
    // now capped at `Durable::MAX_ACK_WAIT`, which Redis takes.
    let huge = durable().ack_wait(std::time::Duration::from_secs(99_999_999_999_999_999));
    assert_eq!(huge.ack_wait, switchboard_core::Durable::MAX_ACK_WAIT);
}
