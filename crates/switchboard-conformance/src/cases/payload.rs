//! Payloads travel byte for byte.

use switchboard_core::{Bytes, Delivery, Error, ErrorKind, Message};

use super::{assert_kind, expect_err, flush, msg, noise, publish, subscribe};
use crate::receive::show_payload;
use crate::{expect_silence, recv, Context, SILENCE};

/// One mebibyte.
const MIB: usize = 1 << 20;

/// Largest limit [`payload_limit_is_exact`] allocates a payload for.
const LARGEST_TESTED_LIMIT: usize = 16 * MIB;

/// Publishes `message` on a second connection, receives it on the first and
/// checks subject, payload and headers arrived unchanged and only once.
pub(super) async fn round_trip(ctx: &Context, message: Message) -> Delivery {
    let publisher = ctx.connect().await;
    let mut subscription = subscribe(ctx.broker(), &message.subject().clone().into()).await;
    publish(&publisher, message.clone()).await;
    flush(&publisher).await;
    let delivery = recv(&mut subscription).await;
    assert_same(&delivery, &message);
    expect_silence(&mut subscription, SILENCE).await;
    delivery
}

/// Asserts `delivery` carries exactly `sent`'s subject, payload and headers.
pub(super) fn assert_same(delivery: &Delivery, sent: &Message) {
    assert_eq!(
        delivery.subject(),
        sent.subject(),
        "the delivery arrived on another subject"
    );
    let (got, want) = (delivery.payload(), sent.payload());
    if got != want {
        let first_difference = got
            .iter()
            .zip(want.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "the payload changed on the way: sent {} bytes, received {} bytes, first difference at byte {first_difference}\n sent:     {}\n received: {}",
            want.len(),
            got.len(),
            show_payload(want),
            show_payload(got)
        );
    }
    assert_eq!(
        delivery.headers(),
        sent.headers(),
        "the headers changed on the way (left: received, right: sent)"
    );
}

/// An empty payload arrives as an empty payload.
pub async fn payload_empty(ctx: &Context) {
    let message = msg(ctx.subject("payload.empty"), Bytes::new());
    round_trip(ctx, message).await;
}

/// Every byte value arrives unchanged: all 256 values up and down, invalid
/// UTF-8, NUL and CR LF sequences that look like protocol lines.
pub async fn payload_binary(ctx: &Context) {
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend((0..=255u8).rev());
    payload.extend_from_slice(b"\r\nPUB x 5\r\nhello\r\n\0\0\xff\xfe\xc3\x28\r\n\r\n");
    payload.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
    payload.extend(noise(4096, 7));
    let message = msg(ctx.subject("payload.binary"), payload);
    round_trip(ctx, message).await;
}

/// UTF-8 text (accents, CJK, emoji, right-to-left, a BOM, NUL) arrives unchanged.
pub async fn payload_utf8(ctx: &Context) {
    let text = "héllo wörld — 日本語 テキスト 🚀🦀 مرحبا \u{FEFF}bom \u{0} nul\n\"quoted\" {\"json\": [1, 2]}";
    let message = msg(ctx.subject("payload.utf8"), text);
    let delivery = round_trip(ctx, message).await;
    assert_eq!(delivery.payload_str(), Some(text));
}

/// A 1 MiB payload arrives unchanged; where `capabilities.max_payload` is
/// smaller, `publish` fails with [`Error::PayloadTooLarge`] instead.
pub async fn payload_one_mebibyte(ctx: &Context) {
    let subject = ctx.subject("payload.mebibyte");
    let message = msg(subject, noise(MIB, 42));
    match ctx.capabilities().max_payload {
        Some(max) if max < MIB => {
            let error = expect_err(
                ctx.broker().publish(message).await,
                &format!("publishing 1 MiB where max_payload is {max}"),
            );
            assert_too_large(&error, MIB, max);
        }
        _ => {
            round_trip(ctx, message).await;
        }
    }
}

/// When `capabilities.max_payload` declares a limit (of at most 16 MiB), a
/// payload of exactly that size round-trips and one byte more fails with
/// [`Error::PayloadTooLarge`]. Skipped without a limit.
pub async fn payload_limit_is_exact(ctx: &Context) {
    let Some(max) = ctx.capabilities().max_payload else {
        ctx.skip("capabilities.max_payload is None (no limit declared)");
        return;
    };
    if max > LARGEST_TESTED_LIMIT {
        ctx.skip(format!(
            "max_payload {max} is larger than the {LARGEST_TESTED_LIMIT} bytes tested"
        ));
        return;
    }
    let at_limit = msg(ctx.subject("payload.limit"), noise(max, 9));
    round_trip(ctx, at_limit).await;

    let over = msg(ctx.subject("payload.limit"), noise(max + 1, 9));
    let error = expect_err(
        ctx.broker().publish(over).await,
        &format!("publishing {} bytes where max_payload is {max}", max + 1),
    );
    assert_too_large(&error, max + 1, max);
}

fn assert_too_large(error: &Error, size: usize, max: usize) {
    assert_kind(
        error,
        ErrorKind::InvalidInput,
        "publishing an oversized payload",
    );
    assert!(
        matches!(error, Error::PayloadTooLarge { .. }),
        "publishing {size} bytes over a limit of {max} should fail with Error::PayloadTooLarge, not: {error:?}"
    );
}
