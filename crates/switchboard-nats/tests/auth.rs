//! NKey users (`nkey=`) and credentials files (`creds=`, operator/JWT mode)
//! against nats-servers of the test's own, with keys and JWTs made by the
//! test: the right file works, a wrong, missing or malformed one is one line
//! naming the file and never showing a seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_core::{Broker, ConnectKind, Error, Message, Publisher, SubscriberExt};
use switchboard_nats::{NatsBroker, NatsOptions};
use switchboard_testkit::{assert_chain_does_not_repeat, unique, NatsAuth, NatsOperator};

/// Publishes one message through `broker` and receives it on a subscription.
async fn round_trip(broker: &NatsBroker) {
    let subject = unique("auth");
    let mut subscription = broker.subscribe_to(&subject).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "signed in").unwrap())
        .await
        .unwrap();
    let delivery = switchboard_conformance::recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("signed in"));
}

/// Checks that `err` is one authentication line naming `file` and showing none of `secrets`.
fn assert_auth_error(err: &Error, file: &std::path::Path, secrets: &[&str]) {
    let text = err.to_string();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth), "{text}");
    assert!(!err.is_temporary(), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    let report = format!("{err:?}");
    for secret in secrets {
        assert!(!text.contains(secret), "shows a secret: {text}");
        assert!(!report.contains(secret), "shows a secret: {report}");
    }
    assert_chain_does_not_repeat(err);
}

#[tokio::test]
async fn nkey_user_with_its_seed_file_connects() {
    let auth = NatsAuth::new();
    let alice = auth.nkey_user("alice");
    let Some(server) = auth.start_nkey_server(&[&alice]) else {
        return;
    };
    // In the URL.
    let url = format!("{}?nkey={}", server.url(), alice.seed_file.display());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
    // With the options builder.
    let broker = NatsBroker::connect_with(&server.url(), NatsOptions::new().nkey(&alice.seed_file))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn wrong_missing_or_malformed_seed_files_are_named_without_the_seed() {
    let auth = NatsAuth::new();
    let alice = auth.nkey_user("alice");
    let mallory = auth.nkey_user("mallory");
    let Some(server) = auth.start_nkey_server(&[&alice]) else {
        return;
    };
    let connect = |file: std::path::PathBuf| {
        let url = server.url();
        async move { NatsBroker::connect_with(&url, NatsOptions::new().nkey(file)).await }
    };

    // A seed the server does not know.
    let err = connect(mallory.seed_file.clone()).await.unwrap_err();
    assert_auth_error(&err, &mallory.seed_file, &[&mallory.seed, &alice.seed]);
    assert!(err.to_string().contains("authorization failed"), "{err}");
    assert!(err.to_string().contains("public key"), "{err}");

    // No file there.
    let missing = auth.dir().join("nobody.nk");
    let err = connect(missing.clone()).await.unwrap_err();
    assert_auth_error(&err, &missing, &[]);
    assert!(
        err.to_string().contains("cannot read the NKey seed file"),
        "{err}"
    );

    // A file without a seed: its content is not shown.
    let garbage = auth.write("garbage.nk", "SUPERSECRETNOTASEED\n");
    let err = connect(garbage.clone()).await.unwrap_err();
    assert_auth_error(&err, &garbage, &["SUPERSECRETNOTASEED"]);
    assert!(err.to_string().contains("holds no NKey seed"), "{err}");

    // No credentials at all.
    let err = switchboard_nats::connect(&server.url()).await.unwrap_err();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth), "{err}");
}

#[tokio::test]
async fn creds_file_of_a_trusted_account_connects() {
    let operator = NatsOperator::new();
    let creds = operator.creds("bob");
    let Some(server) = operator.start_server() else {
        return;
    };
    // The server is in operator mode: without a JWT it lets nobody in.
    let err = switchboard_nats::connect(&server.url()).await.unwrap_err();
    assert_eq!(err.connect_kind(), Some(ConnectKind::Auth), "{err}");
    let url = format!("{}?creds={}", server.url(), creds.display());
    let broker = switchboard_nats::connect(&url).await.unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
    let broker = NatsBroker::connect_with(&server.url(), NatsOptions::new().creds(&creds))
        .await
        .unwrap();
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

#[tokio::test]
async fn foreign_missing_or_malformed_creds_files_are_named_without_the_seed() {
    let operator = NatsOperator::new();
    let foreign = operator.foreign_creds("eve");
    let Some(server) = operator.start_server() else {
        return;
    };
    let connect = |file: std::path::PathBuf| {
        let url = server.url();
        async move { NatsBroker::connect_with(&url, NatsOptions::new().creds(file)).await }
    };
    let seed_of = |file: &std::path::Path| {
        std::fs::read_to_string(file)
            .unwrap()
            .split_whitespace()
            .find(|w| w.starts_with("SU"))
            .unwrap()
            .to_string()
    };

    // A JWT from an account the server does not trust.
    let err = connect(foreign.clone()).await.unwrap_err();
    assert_auth_error(&err, &foreign, &[&seed_of(&foreign)]);
    assert!(err.to_string().contains("authorization failed"), "{err}");

    let missing = operator.dir().join("nobody.creds");
    let err = connect(missing.clone()).await.unwrap_err();
    assert_auth_error(&err, &missing, &[]);
    assert!(
        err.to_string().contains("cannot read the credentials file"),
        "{err}"
    );

    // A seed file given as a credentials file: no JWT in it.
    let auth = NatsAuth::new();
    let seed_only = auth.nkey_user("carol");
    let err = connect(seed_only.seed_file.clone()).await.unwrap_err();
    assert_auth_error(&err, &seed_only.seed_file, &[&seed_only.seed]);
    assert!(err.to_string().contains("is not usable"), "{err}");
}

/// A nats-server of the test's own with user `lim` (password `lpw`)
/// allowed to publish to `publish` and to subscribe to `allowed.>` and
/// `_INBOX.>`; the URL to connect as `lim`.
fn limited_server(publish: &str) -> Option<(switchboard_testkit::NatsServer, String)> {
    let auth = NatsAuth::new();
    let config = auth.write(
        "limited.conf",
        &format!(
            r#"authorization {{ users = [ {{ user: lim, password: lpw, permissions: {{ publish: {publish}, subscribe: ["allowed.>", "_INBOX.>"] }} }} ] }}"#
        ),
    );
    let server = switchboard_testkit::NatsServer::start(&["-c", &config.display().to_string()])?;
    let url = server.url().replacen("nats://", "nats://lim:lpw@", 1);
    Some((server, format!("{url}?flush_timeout=5s")))
}

/// A least-privilege user who may publish only to `allowed.>` (replies to
/// `_INBOX` only subscribed, as plain NATS clients need): the round trip's
/// echo to `_INBOX` is refused, so subscribing and flushing fall back to a
/// socket flush at once, instead of subscribing never finishing and every
/// flush failing after the flush timeout.
#[tokio::test]
async fn a_user_who_may_not_publish_to_inboxes_still_works() {
    let Some((_server, url)) = limited_server(r#""allowed.>""#) else {
        return;
    };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let mut subscription = broker.subscribe_to("allowed.>").await.unwrap();
    broker
        .publish(Message::new("allowed.x", "hi").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    let delivery = switchboard_conformance::recv(&mut subscription).await;
    assert_eq!(delivery.payload_str(), Some("hi"));
    // Neither waited out the 5 s flush timeout (a "does not hang" bound).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    broker.close().await.unwrap();
}

/// A publish the server refuses (`Permissions Violation`) fails the flush
/// that follows, naming the subject: it was a log line, and the flush said
/// the message had been processed.
#[tokio::test]
async fn a_flush_after_a_refused_publish_fails_naming_the_subject() {
    let Some((_server, url)) = limited_server(r#"["allowed.>", "_INBOX.>"]"#) else {
        return;
    };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    broker
        .publish(Message::new("secret.x", "no").unwrap())
        .await
        .unwrap();
    let errors = three_flushes(&broker).await;
    assert_eq!(errors.len(), 1, "reported once: {errors:?}");
    let text = errors[0].to_string();
    assert!(text.contains("\"secret.x\""), "{text}");
    assert!(text.contains("may not publish there"), "{text}");
    assert!(
        !errors[0].is_temporary(),
        "publishing again fails again: {text}"
    );
    assert!(
        matches!(errors[0], Error::Refused { count: 1, .. }),
        "{errors:?}"
    );
    // More refusals between two flushes than the subjects kept (16) are
    // still counted exactly.
    for n in 0..40 {
        broker
            .publish(Message::new(format!("secret.{n}"), "no").unwrap())
            .await
            .unwrap();
    }
    let errors = three_flushes(&broker).await;
    let refused: u64 = errors
        .iter()
        .map(|error| match error {
            Error::Refused { count, .. } => *count,
            other => panic!("not a refusal: {other}"),
        })
        .sum();
    assert_eq!(refused, 40, "every refusal counted once: {errors:?}");
    // The connection goes on.
    broker
        .publish(Message::new("allowed.x", "yes").unwrap())
        .await
        .unwrap();
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
}

/// The errors of three flushes 50 ms apart: a refusal comes as an event, on
/// a channel of its own, so it is reported by the flush that follows or,
/// rarely, the next one.
async fn three_flushes(broker: &NatsBroker) -> Vec<Error> {
    let mut errors = Vec::new();
    for _ in 0..3 {
        if let Err(error) = broker.flush().await {
            errors.push(error);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    errors
}

/// A nats-server whose user `u` may publish anywhere (`inboxes`: to
/// `_INBOX.>` too) but not subscribe to `nosub.>`; its URL.
fn no_subscribe_server(inboxes: bool) -> Option<(switchboard_testkit::NatsServer, String)> {
    let auth = NatsAuth::new();
    let publish = if inboxes {
        r#"">""#
    } else {
        r#"{ deny: ["_INBOX.>"] }"#
    };
    let config = auth.write(
        "nosub.conf",
        &format!(
            r#"authorization {{ users = [ {{ user: u, password: p-secret, permissions: {{ publish: {publish}, subscribe: {{ deny: ["nosub.>"] }} }} }} ] }}"#
        ),
    );
    let server = switchboard_testkit::NatsServer::start(&["-c", &config.display().to_string()])?;
    let url = server.url().replacen("nats://", "nats://u:p-secret@", 1);
    Some((server, format!("{url}?flush_timeout=5s")))
}

/// Checks that `err` is the refusal of a subscription to `nosub.>`.
fn assert_subscription_refused(err: &Error) {
    let text = err.to_string();
    assert!(matches!(err, Error::Subscribe { .. }), "{err:?}");
    assert!(text.contains("Permissions Violation"), "{text}");
    assert!(
        text.contains(r#"this user may not subscribe to "nosub.>""#),
        "{text}"
    );
    assert!(!text.contains("p-secret"), "{text}");
}

/// A subscription the server refuses fails `subscribe`, naming the
/// refusal. Before, it looked like success: a logged warning, and a
/// subscription waiting for ever for messages that could never come.
#[tokio::test]
async fn a_refused_subscription_fails_subscribe() {
    let Some((_server, url)) = no_subscribe_server(true) else {
        return;
    };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    for _ in 0..20 {
        let err = broker.subscribe_to("nosub.>").await.unwrap_err();
        assert_subscription_refused(&err);
    }
    // Allowed subjects still work on the same connection.
    round_trip(&broker).await;
    broker.close().await.unwrap();
}

/// Without the round trip's echo (the user may not publish to `_INBOX.>`)
/// the refusal can come after `subscribe` returned: the subscription then
/// yields one error item saying so, and ends.
#[tokio::test]
async fn a_refusal_after_subscribe_returned_ends_the_subscription() {
    use futures::StreamExt;
    let Some((_server, url)) = no_subscribe_server(false) else {
        return;
    };
    let broker = switchboard_nats::connect(&url).await.unwrap();
    match broker.subscribe_to("nosub.>").await {
        Err(err) => assert_subscription_refused(&err),
        Ok(mut subscription) => {
            let wait = std::time::Duration::from_secs(5);
            let item = tokio::time::timeout(wait, subscription.next())
                .await
                .expect("the refusal is an item");
            match item {
                Some(Err(err)) => assert_subscription_refused(&err),
                other => panic!("{other:?}"),
            }
            let end = tokio::time::timeout(wait, subscription.next())
                .await
                .expect("the stream ends");
            assert!(end.is_none(), "{end:?}");
        }
    }
    broker.close().await.unwrap();
}

/// A durable subscription whose JetStream requests the server refuses fails
/// at once naming the `$JS.API` subject (it timed out after 10 s), and the
/// refusal of the adapter's own request is no refused publish of the
/// caller's: the next flush succeeds.
#[tokio::test]
async fn a_durable_subscription_jetstream_refuses_fails_at_once() {
    let auth = NatsAuth::new();
    let config = auth.write(
        "nojs.conf",
        r#"authorization { users = [ { user: u, password: p-secret, permissions: { publish: { deny: ["$JS.API.CONSUMER.>"] } } } ] }"#,
    );
    let store = auth.dir().join("js");
    let Some(server) = switchboard_testkit::NatsServer::start(&[
        "-js",
        "-sd",
        &store.display().to_string(),
        "-c",
        &config.display().to_string(),
    ]) else {
        return;
    };
    let url = server.url().replacen("nats://", "nats://u:p-secret@", 1);
    let broker = switchboard_nats::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let durable = switchboard_core::Durable::new("nojs").unwrap();
    let err = broker
        .subscribe_durable_to("nojs.>", &durable)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("$JS.API"), "{text}");
    assert!(!text.contains("p-secret"), "{text}");
    // Not the 10 s timeout (a "does not hang" bound).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    broker.flush().await.unwrap();
    broker.close().await.unwrap();
}
