//! Headers travel unchanged, and nothing is added to them.

use switchboard_core::{ErrorKind, Headers};

use super::payload::round_trip;
use super::{assert_kind, expect_err, flush, msg, publish, subscribe};
use crate::{recv, Context};

/// Several headers (mixed-case names kept as written; values with spaces,
/// colons, quotes and Unicode) arrive exactly as sent, with nothing added.
/// Without `capabilities.headers`, publishing a message with headers fails
/// with [`ErrorKind::Unsupported`] (headers are never dropped silently).
pub async fn headers_round_trip(ctx: &Context) {
    let headers = Headers::try_from(vec![
        ("Trace-Id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("content-type", "application/json; charset=utf-8"),
        ("X-UPPER-CASE", "VALUE"),
        ("x-lower", "with spaces in it"),
        ("Colons", "a: b: c"),
        ("Unicode", "héllo wörld ✓ 日本語 🚀"),
        ("Punctuation", "k=v; q=\"quoted\", list"),
        ("n", "1"),
    ])
    .unwrap();
    let message = msg(ctx.subject("headers.basic"), "with headers").with_headers(headers);
    if !ctx.capabilities().headers {
        let error = expect_err(
            ctx.broker().publish(message).await,
            "publishing headers where capabilities.headers is false",
        );
        assert_kind(
            &error,
            ErrorKind::Unsupported,
            "publishing headers where capabilities.headers is false",
        );
        ctx.skip("capabilities.headers is false: checked that publishing headers is Unsupported");
        return;
    }
    round_trip(ctx, message).await;
}

/// Header edge cases the core rules allow arrive unchanged: an empty value,
/// inner runs of spaces, a tab, names differing only in case, unusual
/// punctuation in names, a 255-byte name, a 8 KiB value, 64 headers, and an
/// empty payload. Needs `capabilities.headers`.
pub async fn headers_edge_cases(ctx: &Context) {
    if !ctx.capabilities().headers {
        ctx.skip("capabilities.headers is false");
        return;
    }
    let mut headers = Headers::new();
    let long_name = "n".repeat(switchboard_core::MAX_HEADER_NAME_LEN);
    let long_value: String = "0123456789abcdef".repeat(512);
    let pairs: Vec<(&str, &str)> = vec![
        ("empty", ""),
        ("spaced", "inner  runs   of spaces"),
        ("tab", "a\tb"),
        ("Key", "upper"),
        ("key", "lower"),
        ("KEY", "shout"),
        ("x!#$%&'*+-.^_`|~", "token characters"),
        ("a/b@c{d}[e]\"f\"", "separator characters"),
        ("protocol", "NATS/1.0 503"),
        ("astral", "𝄞 𓀀"),
        (&long_name, "long name"),
        ("long-value", &long_value),
    ];
    for (name, value) in pairs {
        headers.insert(name, value).unwrap();
    }
    for i in 0..64 {
        headers.insert(format!("h{i:02}"), format!("v{i}")).unwrap();
    }
    let message = msg(ctx.subject("headers.edge"), "").with_headers(headers);
    round_trip(ctx, message).await;
}

/// A 200 KiB header value is either carried whole or refused at `publish`
/// with [`ErrorKind::InvalidInput`] (MQTT 5 carries at most 64 KiB per
/// user property, AMQP a message's headers in one frame of `frame_max`),
/// and either way the connection goes on: a message published next
/// arrives. Refused only after the broker had closed the connection (and
/// every subscription on it) was the defect this case stops. Needs
/// `capabilities.headers`.
pub async fn oversized_header_is_carried_or_refused(ctx: &Context) {
    if !ctx.capabilities().headers {
        ctx.skip("capabilities.headers is false");
        return;
    }
    let subject = ctx.subject("headers.big");
    let mut subscription = subscribe(ctx.broker(), &subject.clone().into()).await;
    let big = "v".repeat(200 * 1024);
    let message = msg(subject.clone(), "big")
        .with_header("big", &big)
        .expect("a valid header");
    match ctx.broker().publish(message).await {
        Ok(()) => {
            flush(ctx.broker()).await;
            let delivery = recv(&mut subscription).await;
            assert_eq!(
                delivery.headers().get("big").map(str::len),
                Some(big.len()),
                "a 200 KiB header published without error did not arrive whole"
            );
        }
        Err(error) => assert_kind(&error, ErrorKind::InvalidInput, "a 200 KiB header refused"),
    }
    publish(ctx.broker(), msg(subject, "after")).await;
    flush(ctx.broker()).await;
    let delivery = recv(&mut subscription).await;
    assert_eq!(
        delivery.payload_str(),
        Some("after"),
        "the message after a 200 KiB header did not arrive"
    );
}

/// A message published without headers arrives with empty headers (the
/// adapter adds none of its own). Runs on every broker.
pub async fn no_headers_arrive_empty(ctx: &Context) {
    let message = msg(ctx.subject("headers.none"), "no headers");
    let delivery = round_trip(ctx, message).await;
    assert!(delivery.headers().is_empty());
}
