//! How a received message is printed: one line of text or one JSON object.
//!
//! Text: `[SUBJECT] PAYLOAD {NAME=VALUE, ...}`, the headers part left out when
//! there are none. Control characters (line breaks, tabs, escape sequences) in
//! the payload and header values are shown escaped (`\n`, `\t`, `\u{1b}`), so
//! one message is always one line and cannot drive the terminal. A payload that
//! is not UTF-8 is shown as `<N bytes, not UTF-8, base64 ...>`.
//!
//! JSON: `{"subject": ..., "headers": {...}, "payload": "..."}`, or with
//! `"payload_base64"` in place of `"payload"` when the payload is not UTF-8.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde::Deserialize;
use switchboard::{Bytes, Headers, Message, Subject};

/// How `listen` prints each message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// `[alerts.cpu] CPU at 98% {severity=high}`: for people.
    #[default]
    Text,
    /// One JSON object per line with `subject`, `headers` and `payload` (or
    /// `payload_base64` when the payload is not UTF-8): for programs.
    Json,
}

impl Format {
    /// The line (without its line break) that shows `message`; in JSON,
    /// with `delivery_count` when given (durable subscriptions).
    pub(crate) fn line(self, message: &Message, delivery_count: Option<u32>) -> String {
        match self {
            Format::Text => text_line(message),
            Format::Json => json_line(message, delivery_count),
        }
    }
}

/// `[SUBJECT] PAYLOAD {NAME=VALUE, ...}`.
pub(crate) fn text_line(message: &Message) -> String {
    let mut line = format!("[{}]", message.subject());
    let payload = payload_text(message.payload());
    if !payload.is_empty() {
        line.push(' ');
        line.push_str(&payload);
    }
    if !message.headers().is_empty() {
        line.push(' ');
        line.push_str(&headers_text(message.headers()));
    }
    line
}

/// Longest [`text_brief`] line, in bytes, before it is cut.
const BRIEF: usize = 200;

/// [`text_line`] cut to about 200 bytes, for status lines on stderr that name
/// a message (`reply`'s "answered …", "no reply to …"): a 1 MiB request
/// would otherwise be a 1 MiB warning.
pub(crate) fn text_brief(message: &Message) -> String {
    let mut line = text_line(message);
    if line.len() > BRIEF {
        let mut cut = BRIEF;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        let _ = write!(line, "… ({} bytes of payload)", message.payload().len());
    }
    line
}

/// One message in JSON, fields in this order.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    subject: &'a str,
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_count: Option<u32>,
}

/// `{"subject":...,"headers":{...},"payload":...}` (or `payload_base64`),
/// plus `"delivery_count":N` when `delivery_count` is given.
pub(crate) fn json_line(message: &Message, delivery_count: Option<u32>) -> String {
    let text = message.payload_str();
    let line = JsonLine {
        subject: message.subject().as_str(),
        headers: message.headers().iter().collect(),
        payload: text,
        payload_base64: match text {
            Some(_) => None,
            None => Some(base64::engine::general_purpose::STANDARD.encode(message.payload())),
        },
        delivery_count,
    };
    // Serializing strings and a map with string keys cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

/// A line as [`json_line`] writes it, read back (for `send --format json`):
/// `subject` (unless `subject` is given, which wins), `headers` (optional,
/// string values), and `payload` or `payload_base64` (neither: empty).
/// A `delivery_count` (what a durable `listen` adds) is accepted and left
/// out: it says how often the broker delivered the captured message, which
/// is no part of the message, so a durable capture replays as any other.
/// Errors say what is wrong with the line, not where it is.
pub(crate) fn message_from_json(line: &[u8], subject: Option<&Subject>) -> anyhow::Result<Message> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        subject: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        payload: Option<String>,
        payload_base64: Option<String>,
        #[serde(default, rename = "delivery_count")]
        _delivery_count: Option<u32>,
    }
    // serde would read an array as the struct's fields in order, and name
    // the struct in its error ("expected struct Line with 5 elements").
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        anyhow::bail!(
            "not a JSON message (not a JSON object); expected {{\"subject\":…,\"headers\":{{…}},\"payload\":…}} as `listen --format json` prints"
        );
    }
    let line: Line = serde_json::from_slice(line).map_err(|error| {
        anyhow::anyhow!(
            "not a JSON message ({error}); expected {{\"subject\":…,\"headers\":{{…}},\"payload\":…}} as `listen --format json` prints"
        )
    })?;
    let subject = match (subject, line.subject) {
        (Some(subject), _) => subject.clone(),
        (None, Some(subject)) => Subject::new(&subject)?,
        (None, None) => anyhow::bail!("the line has no \"subject\" (or give --on)"),
    };
    let payload = match (line.payload, line.payload_base64) {
        (Some(_), Some(_)) => anyhow::bail!("the line has both \"payload\" and \"payload_base64\""),
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|error| anyhow::anyhow!("\"payload_base64\" is not base64: {error}"))?,
        ),
        (None, None) => Bytes::new(),
    };
    let mut headers = Headers::new();
    for (name, value) in &line.headers {
        headers.insert(name, value)?;
    }
    Ok(Message::from_parts(subject, payload, headers))
}

/// `{a=1, b=2}`, values escaped as in [`escape_controls`].
pub(crate) fn headers_text(headers: &Headers) -> String {
    let mut text = String::from("{");
    for (index, (name, value)) in headers.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{name}={}", escape_controls(value));
    }
    text.push('}');
    text
}

/// The payload as one line of text: UTF-8 with control characters escaped, or
/// a base64 summary when it is not UTF-8.
pub(crate) fn payload_text(payload: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(payload) {
        Ok(text) => escape_controls(text),
        Err(_) => Cow::Owned(format!(
            "<{} bytes, not UTF-8, base64 {}>",
            payload.len(),
            base64::engine::general_purpose::STANDARD.encode(payload)
        )),
    }
}

/// `text` with control characters written as `\n`, `\r`, `\t` or `\u{..}`.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &'static [u8], headers: &[(&str, &str)]) -> Message {
        let mut message = Message::new("alerts.cpu", payload).unwrap();
        for (name, value) in headers {
            message.headers_mut().insert(*name, *value).unwrap();
        }
        message
    }

    #[test]
    fn text_shows_subject_payload_and_headers() {
        let m = message(b"CPU at 98%", &[("severity", "high"), ("host", "web-1")]);
        assert_eq!(
            text_line(&m),
            "[alerts.cpu] CPU at 98% {host=web-1, severity=high}"
        );
        assert_eq!(text_line(&message(b"hi", &[])), "[alerts.cpu] hi");
        assert_eq!(text_line(&message(b"", &[])), "[alerts.cpu]");
    }

    #[test]
    fn text_is_one_line_and_escapes_controls() {
        let m = message(b"two\nlines\t\x1b[31mred", &[("k", "a\tb")]);
        assert_eq!(
            text_line(&m),
            "[alerts.cpu] two\\nlines\\t\\u{1b}[31mred {k=a\\tb}"
        );
        assert_eq!(
            text_line(&message(b"\xff\x00", &[])),
            "[alerts.cpu] <2 bytes, not UTF-8, base64 /wA=>"
        );
    }

    #[test]
    fn json_uses_payload_or_payload_base64() {
        let m = message(b"CPU \"at\" 98%", &[("severity", "high")]);
        let value: serde_json::Value = serde_json::from_str(&json_line(&m, None)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"subject": "alerts.cpu", "headers": {"severity": "high"}, "payload": "CPU \"at\" 98%"})
        );
        let value: serde_json::Value =
            serde_json::from_str(&json_line(&message(b"\xde\xad\xbe\xef", &[]), None)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"subject": "alerts.cpu", "headers": {}, "payload_base64": "3q2+7w=="})
        );
        assert!(!json_line(&message(b"a\nb", &[]), None).contains('\n'));
        let value: serde_json::Value =
            serde_json::from_str(&json_line(&message(b"x", &[]), Some(3))).unwrap();
        assert_eq!(value["delivery_count"], 3);
    }

    #[test]
    fn a_brief_line_is_cut_at_a_character() {
        let short = message(b"hi", &[]);
        assert_eq!(text_brief(&short), text_line(&short));
        let long = Message::new("alerts.cpu", "é".repeat(1000)).unwrap();
        let brief = text_brief(&long);
        assert!(brief.len() < BRIEF + 40, "{brief}");
        assert!(brief.ends_with("… (2000 bytes of payload)"), "{brief}");
    }

    #[test]
    fn a_durable_capture_reads_back_without_its_delivery_count() {
        let m = message(b"x", &[("severity", "high")]);
        let back = message_from_json(json_line(&m, Some(3)).as_bytes(), None).unwrap();
        assert_eq!(back, m);
    }
}
