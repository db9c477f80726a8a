//! How a message's headers travel over Redis PUBSUB, which carries only bytes.
//!
//! A message **without headers** travels as its raw payload, so plain Redis
//! clients interoperate both ways: `redis-cli PUBLISH alerts.cpu hi` reaches a
//! switchboard subscriber as `hi` with no headers, and a switchboard publish
//! reaches `redis-cli SUBSCRIBE` as exactly the bytes sent.
//!
//! A message **with headers** travels in an envelope:
//!
//! ```text
//! \0SBH1\n            the magic prefix (NUL, "SBH1", line feed)
//! name: value\n       one line per header, in name order
//! ...
//! \n                  an empty line ends the headers
//! payload             the payload, byte for byte
//! ```
//!
//! Header names are visible ASCII without `:` and values have no CR, LF or NUL
//! (the rules of [`Headers`]), so the lines need no escaping. A received
//! value with surrounding whitespace or a CR (a plain client's CRLF lines) is
//! trimmed ([`Headers::insert_received`]).
//!
//! A payload sent without headers that happens to start with the magic prefix
//! is wrapped in an envelope with zero headers (`\0SBH1\n\n` + payload), so it
//! still round-trips. Decoding never fails: bytes that do not start with the
//! magic, or start with it but are not a well-formed envelope (as a plain
//! client could send), are delivered as the raw payload with no headers.
//!
//! ```
//! use switchboard_core::Headers;
//! use switchboard_redis::wire;
//! let mut headers = Headers::new();
//! headers.insert("trace-id", "abc")?;
//! let body = wire::encode(&headers, b"hi");
//! assert_eq!(&body[..], b"\0SBH1\ntrace-id: abc\n\nhi");
//! let (decoded, payload) = wire::decode(body.into());
//! assert_eq!(decoded, headers);
//! assert_eq!(&payload[..], b"hi");
//! // Without headers, the payload is the body.
//! assert_eq!(&wire::encode(&Headers::new(), b"hi")[..], b"hi");
//! # Ok::<(), switchboard_core::Error>(())
//! ```

use bytes::Bytes;
use switchboard_core::Headers;

/// The bytes an envelope starts with.
pub const MAGIC: &[u8] = b"\0SBH1\n";

/// Whether a message with these headers and payload travels in an envelope.
pub fn needs_envelope(headers: &Headers, payload: &[u8]) -> bool {
    !headers.is_empty() || payload.starts_with(MAGIC)
}

/// The size of the encoded body of a message.
pub fn encoded_len(headers: &Headers, payload: &[u8]) -> usize {
    if !needs_envelope(headers, payload) {
        return payload.len();
    }
    let lines: usize = headers.iter().map(|(n, v)| n.len() + 2 + v.len() + 1).sum();
    MAGIC.len() + lines + 1 + payload.len()
}

/// Appends the encoded body of a message to `out` (exactly [`encoded_len`] bytes).
pub fn encode_into(headers: &Headers, payload: &[u8], out: &mut Vec<u8>) {
    if needs_envelope(headers, payload) {
        out.extend_from_slice(MAGIC);
        for (name, value) in headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out.extend_from_slice(payload);
}

/// The encoded body of a message: the payload itself when there are no headers
/// (and it does not start with [`MAGIC`]), otherwise an envelope.
pub fn encode(headers: &Headers, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(headers, payload));
    encode_into(headers, payload, &mut out);
    out
}

/// Splits a received body into headers and payload. Never fails: anything that
/// is not a well-formed envelope is returned whole as the payload, with no headers.
/// The payload shares `body`'s memory.
pub fn decode(body: Bytes) -> (Headers, Bytes) {
    match parse_envelope(&body) {
        Some((headers, start)) => (headers, body.slice(start..)),
        None => (Headers::new(), body),
    }
}

/// The headers and the payload's offset, if `body` is a well-formed envelope.
fn parse_envelope(body: &[u8]) -> Option<(Headers, usize)> {
    let mut rest = body.strip_prefix(MAGIC)?;
    let mut headers = Headers::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.is_empty() {
            return Some((headers, body.len() - rest.len()));
        }
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line.split_once(':')?;
        let value = value.strip_prefix(' ')?;
        if headers.contains(name) {
            return None;
        }
        // A plain client's value may end in a space or `\r` (CRLF lines):
        // made one trimmed line, as on the other brokers.
        headers.insert_received(name, value).ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.insert(*n, *v).unwrap();
        }
        h
    }

    #[test]
    fn a_plain_clients_padded_or_crlf_value_is_trimmed() {
        let (decoded, payload) = decode(Bytes::from_static(
            b"\0SBH1\nerror: disk full \ncode: 507\r\n\nbody",
        ));
        assert_eq!(decoded, headers(&[("code", "507"), ("error", "disk full")]));
        assert_eq!(&payload[..], b"body");
    }

    fn round_trip(h: &Headers, payload: &[u8]) {
        let body = encode(h, payload);
        assert_eq!(body.len(), encoded_len(h, payload));
        let (decoded, decoded_payload) = decode(Bytes::from(body));
        assert_eq!(&decoded, h);
        assert_eq!(&decoded_payload[..], payload);
    }

    #[test]
    fn plain_payloads_travel_raw() {
        for payload in [
            &b""[..],
            b"hi",
            b"\0\x01\xff binary",
            b"\0SBH",
            b"name: x\n\n",
        ] {
            assert_eq!(encode(&Headers::new(), payload), payload);
            round_trip(&Headers::new(), payload);
        }
    }

    #[test]
    fn headers_round_trip() {
        round_trip(&headers(&[("a", "1")]), b"hi");
        round_trip(&headers(&[("Trace-Id", "x: y"), ("z", "")]), b"");
        round_trip(
            &headers(&[("k", "inner  spaced\tvalue"), ("u", "héllo")]),
            b"\0SBH1\n\n",
        );
        round_trip(&headers(&[("k", "v")]), b"\nbody\nwith: lines\n");
    }

    #[test]
    fn payload_starting_with_magic_is_wrapped() {
        let payload = b"\0SBH1\nnot: headers\n\nx";
        let body = encode(&Headers::new(), payload);
        assert_eq!(&body[..MAGIC.len() + 1], b"\0SBH1\n\n");
        round_trip(&Headers::new(), payload);
        round_trip(&Headers::new(), MAGIC);
    }

    #[test]
    fn malformed_envelopes_are_raw_payloads() {
        for body in [
            &b"\0SBH1\n"[..],
            b"\0SBH1\nno-colon\n\nx",
            b"\0SBH1\nname:nospace\n\nx",
            b"\0SBH1\nbad name: x\n\nx",
            b"\0SBH1\na: 1\na: 2\n\nx",
            b"\0SBH1\na: \xff\n\nx",
            b"\0SBH1\na: 1\n",
        ] {
            let (h, payload) = decode(Bytes::copy_from_slice(body));
            assert!(h.is_empty(), "{body:?}");
            assert_eq!(&payload[..], body);
        }
    }
}
