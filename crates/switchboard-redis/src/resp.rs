//! The small part of RESP2 (the Redis protocol) this adapter speaks: encoding
//! commands, and parsing replies and pub/sub pushes without copying payloads.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// Deepest array nesting accepted from the server (pub/sub replies are flat).
const MAX_DEPTH: usize = 8;

/// One reply or push from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...`
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` (`None` for the null bulk string)
    Bulk(Option<Bytes>),
    /// `*2\r\n...` (`None` for the null array)
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The frame as text, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(Some(b)) => {
                String::from_utf8_lossy(b).into_owned()
            }
            Frame::Integer(n) => n.to_string(),
            Frame::Bulk(None) | Frame::Array(None) => "(nil)".to_string(),
            Frame::Array(Some(items)) => {
                let parts: Vec<String> = items.iter().map(Frame::describe).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// The bytes of a simple or bulk string.
    pub(crate) fn bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// The server sent something that is not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

enum Raw {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    Array(Option<Vec<Raw>>),
}

/// Position just past the `\r\n` ending the line that starts at `pos`, and the line's end.
fn line(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = buf.get(pos..)?.iter().position(|&b| b == b'\n')? + pos;
    if nl == pos || buf[nl - 1] != b'\r' {
        // A bare `\n` is not RESP; treat it as the end anyway and let the caller fail on content.
        return Some((nl, nl + 1));
    }
    Some((nl - 1, nl + 1))
}

fn int(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "expected a number, got {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

fn parse_raw(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Raw, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((end, next)) = line(buf, pos + 1) else {
        return Ok(None);
    };
    let body = pos + 1..end;
    match kind {
        b'+' => Ok(Some((Raw::Simple(body), next))),
        b'-' => Ok(Some((Raw::Error(body), next))),
        b':' => Ok(Some((Raw::Integer(int(&buf[body])?), next))),
        b'$' => {
            let len = int(&buf[body])?;
            if len < 0 {
                return Ok(Some((Raw::Bulk(None), next)));
            }
            let len = usize::try_from(len)
                .map_err(|_| ProtocolError(format!("bulk length {len} too large")))?;
            let data_end = next.saturating_add(len);
            if buf.len() < data_end.saturating_add(2) {
                return Ok(None);
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            Ok(Some((Raw::Bulk(Some(next..data_end)), data_end + 2)))
        }
        b'*' => {
            let count = int(&buf[body])?;
            if count < 0 {
                return Ok(Some((Raw::Array(None), next)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deeply".into()));
            }
            let count = usize::try_from(count).unwrap_or(0);
            let mut items = Vec::with_capacity(count.min(16));
            let mut at = next;
            for _ in 0..count {
                match parse_raw(buf, at, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Raw::Array(Some(items)), at)))
        }
        other => Err(ProtocolError(format!(
            "unexpected reply type byte {:?}",
            char::from(other)
        ))),
    }
}

fn materialize(raw: Raw, frame: &Bytes) -> Frame {
    match raw {
        Raw::Simple(r) => Frame::Simple(frame.slice(r)),
        Raw::Error(r) => Frame::Error(frame.slice(r)),
        Raw::Integer(n) => Frame::Integer(n),
        Raw::Bulk(r) => Frame::Bulk(r.map(|r| frame.slice(r))),
        Raw::Array(items) => Frame::Array(
            items.map(|items| items.into_iter().map(|i| materialize(i, frame)).collect()),
        ),
    }
}

/// Takes one complete frame off the front of `buf`, or `None` if more bytes are needed.
/// Bulk strings share `buf`'s memory (no copy).
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    match parse_raw(buf, 0, 0)? {
        None => Ok(None),
        Some((raw, end)) => {
            let frame = buf.split_to(end).freeze();
            Ok(Some(materialize(raw, &frame)))
        }
    }
}

/// The reply to a command that answers with one line (`:n`, `-ERR`, `+OK`): takes it
/// off `buf` and returns `Ok(None)` for success, `Ok(Some(message))` for an error
/// reply, or nothing if the line is incomplete. Cheaper than [`parse`] for the
/// stream of PUBLISH replies.
pub(crate) fn parse_status(buf: &mut BytesMut) -> Result<Option<Option<String>>, ProtocolError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        b':' | b'+' => match line(buf, 1) {
            Some((_, next)) => {
                let _ = buf.split_to(next);
                Ok(Some(None))
            }
            None => Ok(None),
        },
        b'-' => match line(buf, 1) {
            Some((end, next)) => {
                let text = String::from_utf8_lossy(&buf[1..end]).into_owned();
                let _ = buf.split_to(next);
                Ok(Some(Some(text)))
            }
            None => Ok(None),
        },
        // Anything else (a bulk or array reply) is parsed in full and counted as success.
        _ => Ok(parse(buf)?.map(|frame| match frame {
            Frame::Error(e) => Some(String::from_utf8_lossy(&e).into_owned()),
            _ => None,
        })),
    }
}

/// A pub/sub message push taken off the buffer by [`take_push`]: the whole
/// frame, and where its parts are in it.
#[derive(Debug)]
pub(crate) struct Push {
    /// The frame's bytes (shared with the read buffer, not copied).
    pub(crate) frame: Bytes,
    /// The glob of a `pmessage` (`None` for a `message`).
    pub(crate) glob: Option<Range<usize>>,
    pub(crate) channel: Range<usize>,
    pub(crate) body: Range<usize>,
}

impl Push {
    /// The glob, for a `pmessage`.
    pub(crate) fn glob(&self) -> Option<&[u8]> {
        self.glob.clone().map(|r| &self.frame[r])
    }

    pub(crate) fn channel(&self) -> &[u8] {
        &self.frame[self.channel.clone()]
    }

    /// The body, sharing the frame's memory.
    pub(crate) fn body(&self) -> Bytes {
        self.frame.slice(self.body.clone())
    }
}

/// One bulk string at `pos`: its range and the position after it; `None`
/// when it is incomplete or not a (non-null) bulk string.
fn bulk_at(buf: &[u8], pos: usize) -> Option<(Range<usize>, usize)> {
    if buf.get(pos) != Some(&b'$') {
        return None;
    }
    let (end, next) = line(buf, pos + 1)?;
    let len: usize = std::str::from_utf8(&buf[pos + 1..end]).ok()?.parse().ok()?;
    let data_end = next.checked_add(len)?;
    if buf.get(data_end..data_end.checked_add(2)?)? != b"\r\n" {
        return None;
    }
    Some((next..data_end, data_end + 2))
}

/// Takes a complete `message` or `pmessage` push off the front of `buf`
/// without building a [`Frame`] (the hub's hot path: no allocation per
/// message). `None` leaves `buf` as it was: anything else, an incomplete
/// push, or a malformed one is for [`parse`] to handle (or reject).
pub(crate) fn take_push(buf: &mut BytesMut) -> Option<Push> {
    const MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n";
    const PMESSAGE: &[u8] = b"*4\r\n$8\r\npmessage\r\n";
    let (glob, at) = if buf.starts_with(MESSAGE) {
        (None, MESSAGE.len())
    } else if buf.starts_with(PMESSAGE) {
        let (glob, at) = bulk_at(buf, PMESSAGE.len())?;
        (Some(glob), at)
    } else {
        return None;
    };
    let (channel, at) = bulk_at(buf, at)?;
    let (body, end) = bulk_at(buf, at)?;
    Some(Push {
        frame: buf.split_to(end).freeze(),
        glob,
        channel,
        body,
    })
}

fn put_len(buf: &mut impl BufMut, prefix: u8, n: usize) {
    buf.put_u8(prefix);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
    buf.put_slice(b"\r\n");
}

/// Appends a command (an array of bulk strings) to `buf`.
pub(crate) fn encode_command(buf: &mut impl BufMut, args: &[&[u8]]) {
    put_len(buf, b'*', args.len());
    for arg in args {
        put_len(buf, b'$', arg.len());
        buf.put_slice(arg);
        buf.put_slice(b"\r\n");
    }
}

/// Appends `PUBLISH channel <body>` to `buf`, where `write_body` writes exactly `body_len` bytes.
pub(crate) fn encode_publish(
    buf: &mut Vec<u8>,
    channel: &[u8],
    body_len: usize,
    write_body: impl FnOnce(&mut Vec<u8>),
) {
    buf.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    put_len(buf, b'$', channel.len());
    buf.extend_from_slice(channel);
    buf.extend_from_slice(b"\r\n");
    put_len(buf, b'$', body_len);
    let before = buf.len();
    write_body(buf);
    debug_assert_eq!(buf.len() - before, body_len);
    buf.extend_from_slice(b"\r\n");
}

/// Appends the durable mode's direct publish of a subject kept in exactly
/// one stream (see [`crate::routing`]): `CLIENT REPLY SKIP`, `PUBLISH
/// channel <body>` (whose reply Redis skips), then `XADD <stream> NOMKSTREAM
/// MAXLEN ~ <maxlen> * s <channel> b <body>`, so one publish still gets one
/// reply, and that reply is the stream's: an error when storing failed, a
/// nil when the stream is gone (its last durable consumer was removed).
/// The body is written once by `write_body` and copied for the `XADD`.
pub(crate) fn encode_stored_publish(
    buf: &mut Vec<u8>,
    stream: &[u8],
    channel: &[u8],
    maxlen: &[u8],
    body_len: usize,
    write_body: impl FnOnce(&mut Vec<u8>),
) {
    buf.extend_from_slice(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n");
    encode_publish(buf, channel, body_len, write_body);
    // The body as `encode_publish` wrote it: just before the final CRLF.
    let body_end = buf.len() - 2;
    let body_start = body_end - body_len;
    buf.extend_from_slice(b"*11\r\n$4\r\nXADD\r\n");
    for arg in [
        stream,
        &b"NOMKSTREAM"[..],
        b"MAXLEN",
        b"~",
        maxlen,
        b"*",
        b"s",
        channel,
    ] {
        put_len(buf, b'$', arg.len());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"$1\r\nb\r\n");
    put_len(buf, b'$', body_len);
    buf.extend_from_within(body_start..body_end);
    buf.extend_from_slice(b"\r\n");
}

/// Encodes `FCALL <function> 1 <key> <channel> <body> <maxlen>` (the durable
/// mode's publish, see [`crate::routing`]), the body written in place by
/// `write_body` as for [`encode_publish`].
pub(crate) fn encode_fcall_publish(
    buf: &mut Vec<u8>,
    function: &[u8],
    key: &[u8],
    channel: &[u8],
    maxlen: &[u8],
    body_len: usize,
    write_body: impl FnOnce(&mut Vec<u8>),
) {
    buf.extend_from_slice(b"*7\r\n$5\r\nFCALL\r\n");
    for arg in [function, &b"1"[..], key, channel] {
        put_len(buf, b'$', arg.len());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
    put_len(buf, b'$', body_len);
    let before = buf.len();
    write_body(buf);
    debug_assert_eq!(buf.len() - before, body_len);
    buf.extend_from_slice(b"\r\n");
    put_len(buf, b'$', maxlen.len());
    buf.extend_from_slice(maxlen);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_publish_is_three_commands_with_one_reply_owed() {
        let mut buf = Vec::new();
        encode_stored_publish(&mut buf, b"st", b"a.b", b"100", 2, |out| {
            out.extend_from_slice(b"hi")
        });
        let mut expected = Vec::new();
        encode_command(&mut expected, &[b"CLIENT", b"REPLY", b"SKIP"]);
        encode_command(&mut expected, &[b"PUBLISH", b"a.b", b"hi"]);
        encode_command(
            &mut expected,
            &[
                b"XADD",
                b"st",
                b"NOMKSTREAM",
                b"MAXLEN",
                b"~",
                b"100",
                b"*",
                b"s",
                b"a.b",
                b"b",
                b"hi",
            ],
        );
        assert_eq!(buf, expected);
    }

    #[test]
    fn parses_replies_and_waits_for_more() {
        let mut buf = BytesMut::from(&b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhel"[..]);
        assert_eq!(parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"lo\r\n:1\r\n");
        let frame = parse(&mut buf).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Array(Some(vec![
                Frame::Bulk(Some(Bytes::from_static(b"message"))),
                Frame::Bulk(Some(Bytes::from_static(b"ch"))),
                Frame::Bulk(Some(Bytes::from_static(b"hello"))),
            ]))
        );
        assert_eq!(parse(&mut buf), Ok(Some(Frame::Integer(1))));
        assert!(buf.is_empty());
    }

    #[test]
    fn pushes_are_taken_without_frames() {
        let mut buf = BytesMut::from(
            &b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n*4\r\n$8\r\npmessage\r\n$3\r\nc.*\r\n$3\r\nc.d\r\n$0\r\n\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhel"[..],
        );
        let push = take_push(&mut buf).unwrap();
        assert_eq!((push.glob(), push.channel()), (None, &b"ch"[..]));
        assert_eq!(push.body(), Bytes::from_static(b"hello"));
        let push = take_push(&mut buf).unwrap();
        assert_eq!(push.glob(), Some(&b"c.*"[..]));
        assert_eq!(push.channel(), b"c.d");
        assert!(push.body().is_empty());
        // Incomplete: left alone, and complete once the rest came.
        let before = buf.len();
        assert!(take_push(&mut buf).is_none());
        assert_eq!(buf.len(), before);
        buf.extend_from_slice(b"lo\r\n+PONG\r\n");
        assert_eq!(
            take_push(&mut buf).unwrap().body(),
            Bytes::from_static(b"hello")
        );
        // Not a message push: for `parse`.
        assert!(take_push(&mut buf).is_none());
        assert_eq!(
            parse(&mut buf),
            Ok(Some(Frame::Simple(Bytes::from_static(b"PONG"))))
        );
        // A malformed push is left for `parse` to reject.
        let mut buf = BytesMut::from(&b"*3\r\n$7\r\nmessage\r\n$2\r\nchXX$1\r\nx\r\n"[..]);
        assert!(take_push(&mut buf).is_none());
        assert!(parse(&mut buf).is_err());
    }

    #[test]
    fn status_replies() {
        let mut buf = BytesMut::from(&b":0\r\n-NOPERM no\r\n+OK\r\n:1"[..]);
        assert_eq!(parse_status(&mut buf), Ok(Some(None)));
        assert_eq!(parse_status(&mut buf), Ok(Some(Some("NOPERM no".into()))));
        assert_eq!(parse_status(&mut buf), Ok(Some(None)));
        assert_eq!(parse_status(&mut buf), Ok(None));
    }

    #[test]
    fn encodes_commands() {
        let mut buf = Vec::new();
        encode_command(&mut buf, &[b"AUTH", b"pw"]);
        assert_eq!(buf, b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
        let mut buf = Vec::new();
        encode_publish(&mut buf, b"a.b", 2, |b| b.extend_from_slice(b"hi"));
        assert_eq!(buf, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\na.b\r\n$2\r\nhi\r\n");
        let mut buf = BytesMut::from(&buf[..]);
        let frame = parse(&mut buf).unwrap().unwrap();
        assert_eq!(frame.describe(), "[PUBLISH, a.b, hi]");
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 400\r\n"[..]);
        assert!(parse(&mut buf).is_err());
    }
}
