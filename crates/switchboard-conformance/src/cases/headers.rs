//! Headers travel unchanged, and nothing is added to them.

use switchboard_core::{ErrorKind, Headers};

use super::payload::round_trip;
use super::{assert_kind, expect_err, msg};
use crate::Context;

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

/// A message published without headers arrives with empty headers (the
/// adapter adds none of its own). Runs on every broker.
pub async fn no_headers_arrive_empty(ctx: &Context) {
    let message = msg(ctx.subject("headers.none"), "no headers");
    let delivery = round_trip(ctx, message).await;
    assert!(delivery.headers().is_empty());
}
