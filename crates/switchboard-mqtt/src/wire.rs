//! The mapping between switchboard messages and MQTT 5 PUBLISH packets.
//!
//! # Subjects and topics
//!
//! A subject's tokens become topic levels: `alerts.cpu` is the topic
//! `alerts/cpu`, so plain MQTT clients see the names they expect. Characters
//! MQTT gives a meaning that a subject token may hold are percent-escaped:
//! `%` → `%25`, `/` → `%2F`, `+` → `%2B`, `#` → `%23`, a `$` starting
//! the first token → `%24` (MQTT keeps `$` topics for the server, such as
//! `$SYS`), and the Unicode non-characters MQTT servers refuse (U+FFFE, …)
//! as the `%XX` of their UTF-8 bytes. Every other character is kept. So the
//! mapping is a bijection between subjects and the topics it produces: two
//! subjects never share a topic, and a received topic becomes the subject it
//! was made from.
//!
//! A received topic that no subject maps to (an empty level as in `a//b`, a
//! level with `.`, a `%` that is not one of the escapes above, a topic over
//! 255 bytes once decoded) is reported as an
//! [`Error::InvalidSubject`](switchboard_core::Error::InvalidSubject) item on
//! the subscription it arrived for, never silently skipped.
//!
//! Patterns: `*` → `+`, `>` → `#`. MQTT's `#` also matches the parent level
//! (`alerts/#` matches `alerts`), so every delivery is checked against
//! [`Pattern::matches`] and the parent is not delivered to `alerts.>`. A queue
//! group subscribes to the shared subscription `$share/GROUP/filter`.
//!
//! # Headers
//!
//! Headers travel as MQTT 5 user properties, one per header, in name order; a
//! message without headers carries none, so a plain client sees exactly the
//! payload. MQTT servers refuse control characters in strings (mosquitto
//! drops the connection), so a value holding one (a tab, say) or a Unicode
//! non-character is sent percent-escaped (those characters and `%`), with a
//! `switchboard-escaped` user property naming the header; switchboard
//! unescapes it on receipt, a plain client sees `a%09b`. That name is
//! reserved: publishing a header called `switchboard-escaped` fails.
//! Received, a property named twice keeps its last value, and a property
//! switchboard does not accept as a header (a name with a space, a value
//! with a line break) is left out with a warning.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use switchboard_core::{Headers, Pattern, QueueGroup, Subject, Token, MAX_SUBJECT_LEN};

/// The topic of `subject`.
pub fn topic_for(subject: &Subject) -> String {
    let mut topic = String::with_capacity(subject.as_str().len() + 8);
    for (index, token) in subject.tokens().enumerate() {
        if index > 0 {
            topic.push('/');
        }
        push_level(&mut topic, token, index == 0);
    }
    topic
}

/// The topic filter of `pattern`, inside `$share/GROUP/` for a queue group.
pub fn filter_for(pattern: &Pattern, group: Option<&QueueGroup>) -> String {
    let mut filter = String::with_capacity(pattern.as_str().len() + 8);
    if let Some(group) = group {
        // Group names are letters, digits, `-`, `_` and `.`: nothing to escape.
        filter.push_str("$share/");
        filter.push_str(group.as_str());
        filter.push('/');
    }
    for (index, token) in pattern.tokens().iter().enumerate() {
        if index > 0 {
            filter.push('/');
        }
        match token {
            Token::Any => filter.push('+'),
            Token::Rest => filter.push('#'),
            Token::Literal(text) => push_level(&mut filter, text, index == 0),
        }
    }
    filter
}

fn push_level(out: &mut String, token: &str, first: bool) {
    for (position, c) in token.char_indices() {
        let escape = matches!(c, '%' | '/' | '+' | '#')
            || (c == '$' && first && position == 0)
            || refused_by_servers(c);
        if escape {
            push_escaped(out, c);
        } else {
            out.push(c);
        }
    }
}

/// Characters MQTT servers may refuse in a UTF-8 string (MQTT 5 §1.5.4:
/// control characters and non-characters; mosquitto drops the connection
/// over them): topics and header values carry them percent-escaped.
fn refused_by_servers(c: char) -> bool {
    let code = c as u32;
    matches!(code, 0x01..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF) || code & 0xFFFE == 0xFFFE
}

/// `c` as `%XX` per UTF-8 byte.
fn push_escaped(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for byte in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{byte:02X}"));
    }
}

/// Decodes every `%XX` in `text`; `None` if one is malformed or the bytes are not UTF-8.
fn unescape(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The subject `topic` was made from, or why no subject maps to it.
pub fn subject_for(topic: &[u8]) -> Result<Subject, String> {
    let topic = std::str::from_utf8(topic).map_err(|_| "the topic is not UTF-8".to_string())?;
    let mut subject = String::with_capacity(topic.len());
    for (index, level) in topic.split('/').enumerate() {
        if level.is_empty() {
            return Err(format!(
                "level {} of the topic is empty; subjects have no empty tokens",
                index + 1
            ));
        }
        if level.contains('.') {
            return Err(format!(
                "the topic level {level:?} contains `.`, which separates subject tokens"
            ));
        }
        if index == 0 && level.starts_with('$') {
            return Err("the topic starts with `$`, which MQTT keeps for the server".to_string());
        }
        let decoded = unescape(level).ok_or_else(|| {
            format!("the topic level {level:?} has a `%` that is not a percent-escape")
        })?;
        if index > 0 {
            subject.push('.');
        }
        subject.push_str(&decoded);
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "it is {} bytes long as a subject; the limit is {MAX_SUBJECT_LEN} bytes",
            subject.len()
        ));
    }
    let parsed = Subject::new(&subject).map_err(|e| match e {
        switchboard_core::Error::InvalidSubject { reason, .. } => reason,
        other => other.to_string(),
    })?;
    // Only topics switchboard makes map back: anything else (`%41` for `A`,
    // a `.` escaped) would make two topics one subject.
    if topic_for(&parsed) != topic {
        return Err(format!(
            "switchboard writes the subject {:?} as the topic {:?}, not {topic:?} (a `%` that is not one of its escapes)",
            parsed.as_str(),
            topic_for(&parsed)
        ));
    }
    Ok(parsed)
}

/// The user property naming a header whose value is percent-escaped (one
/// property per such header); reserved, so a header of that name is refused.
pub const ESCAPED: &str = "switchboard-escaped";

/// The user properties carrying `headers`: one per header, the value as is
/// unless it holds a character servers refuse (a tab or another control
/// character, a Unicode non-character), in which case it is
/// percent-escaped (those characters and `%`) and an [`ESCAPED`] property
/// names the header.
pub fn properties_for(headers: &Headers) -> Vec<(String, String)> {
    let mut properties = Vec::with_capacity(headers.len());
    let mut escaped = Vec::new();
    for (name, value) in headers.iter() {
        if value.chars().any(refused_by_servers) {
            let mut text = String::with_capacity(value.len() + 8);
            for c in value.chars() {
                if c == '%' || refused_by_servers(c) {
                    push_escaped(&mut text, c);
                } else {
                    text.push(c);
                }
            }
            properties.push((name.to_string(), text));
            escaped.push((ESCAPED.to_string(), name.to_string()));
        } else {
            properties.push((name.to_string(), value.to_string()));
        }
    }
    properties.extend(escaped);
    properties
}

/// The headers in received user properties: the last value of a name wins;
/// values named by [`ESCAPED`] are unescaped; a property switchboard does not
/// accept as a header is left out with a warning.
pub fn headers_from(properties: &[(String, String)]) -> Headers {
    let mut headers = Headers::new();
    let escaped: Vec<&str> = properties
        .iter()
        .filter(|(name, _)| name == ESCAPED)
        .map(|(_, value)| value.as_str())
        .collect();
    for (name, value) in properties {
        if name == ESCAPED {
            continue;
        }
        let value = if escaped.contains(&name.as_str()) {
            match unescape(value) {
                Some(value) => value,
                None => {
                    tracing::warn!(header = %name, "mqtt: an escaped header value is not valid; left out");
                    continue;
                }
            }
        } else {
            value.clone()
        };
        if let Err(e) = headers.insert_received(name.as_str(), &value) {
            tracing::warn!(error = %e, "mqtt: a user property is not a valid header; left out");
        }
    }
    headers
}

/// Refuses a header named [`ESCAPED`], which the adapter uses itself.
pub(crate) fn check_headers(headers: &Headers) -> switchboard_core::Result<()> {
    if headers.contains(ESCAPED) {
        return Err(switchboard_core::Error::InvalidHeader {
            name: ESCAPED.to_string(),
            reason:
                "the MQTT adapter uses this user property to mark escaped values; rename the header"
                    .into(),
        });
    }
    Ok(())
}

/// The size of the PUBLISH packet for `topic`, `payload` and `properties`,
/// fixed header included, as MQTT's Maximum Packet Size counts it.
pub(crate) fn packet_size(topic: &str, payload: &Bytes, properties: &PublishProperties) -> usize {
    let mut props = 0;
    for (name, value) in &properties.user_properties {
        props += 1 + 2 + name.len() + 2 + value.len();
    }
    if let Some(topic) = &properties.response_topic {
        props += 1 + 2 + topic.len();
    }
    if let Some(data) = &properties.correlation_data {
        props += 1 + 2 + data.len();
    }
    let remaining = 2 + topic.len() + varint_len(props) + props + payload.len();
    1 + varint_len(remaining) + remaining
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_topics_and_back() {
        for (subject, topic) in [
            ("alerts.cpu", "alerts/cpu"),
            ("a.#.+.b", "a/%23/%2B/b"),
            ("50%.off", "50%25/off"),
            ("$SYS.x", "%24SYS/x"),
            ("a.$b", "a/$b"),
            ("a.x$", "a/x$"),
            ("héllo.日本", "héllo/日本"),
            ("a.%2F", "a/%252F"),
            ("a.\u{FFFE}", "a/%EF%BF%BE"),
        ] {
            let parsed = Subject::new(subject).unwrap();
            assert_eq!(topic_for(&parsed), topic, "{subject}");
            assert_eq!(
                subject_for(topic.as_bytes()).unwrap().as_str(),
                subject,
                "{topic}"
            );
        }
        let slash = Subject::new("a/b.c").unwrap();
        assert_eq!(topic_for(&slash), "a%2Fb/c");
        assert_eq!(subject_for(b"a%2Fb/c").unwrap(), slash);
    }

    #[test]
    fn topics_no_subject_maps_to_are_refused() {
        for (topic, needle) in [
            ("a//b", "empty"),
            ("/a", "empty"),
            ("a/", "empty"),
            ("a.b/c", "contains `.`"),
            ("50%off", "not a percent-escape"),
            ("a/%24b", "not one of"),
            ("a/%41", "not one of"),
            ("$SYS/broker", "keeps for the server"),
            ("a b", "whitespace"),
        ] {
            let error = subject_for(topic.as_bytes()).unwrap_err();
            assert!(error.contains(needle), "{topic}: {error}");
        }
        assert!(subject_for(b"\xff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn patterns_map_to_filters() {
        let group = QueueGroup::new("pagers").unwrap();
        for (pattern, group, filter) in [
            ("alerts.>", None, "alerts/#"),
            ("*.cpu.*", None, "+/cpu/+"),
            (">", None, "#"),
            ("a.+.#", None, "a/%2B/%23"),
            ("alerts.*", Some(&group), "$share/pagers/alerts/+"),
            ("$x.>", None, "%24x/#"),
        ] {
            let parsed = Pattern::new(pattern).unwrap();
            assert_eq!(filter_for(&parsed, group), filter, "{pattern}");
        }
    }

    #[test]
    fn headers_round_trip_as_user_properties() {
        let mut headers = Headers::new();
        headers.insert("b", "2").unwrap();
        headers.insert("a", "1").unwrap();
        let properties = properties_for(&headers);
        assert_eq!(
            properties,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(headers_from(&properties), headers);
        let received = vec![
            ("k".to_string(), "old".to_string()),
            ("bad name".to_string(), "x".to_string()),
            ("k".to_string(), "new".to_string()),
        ];
        let headers = headers_from(&received);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers.get("k"), Some("new"));
        // Control characters travel escaped, and only where they occur.
        let mut headers = Headers::new();
        headers.insert("tab", "a\tb 100%").unwrap();
        headers.insert("plain", "50%").unwrap();
        let properties = properties_for(&headers);
        assert_eq!(
            properties,
            vec![
                ("plain".into(), "50%".into()),
                ("tab".into(), "a%09b 100%25".into()),
                (ESCAPED.into(), "tab".into()),
            ]
        );
        assert_eq!(headers_from(&properties), headers);
    }

    #[test]
    fn packet_size_counts_every_byte() {
        let payload = Bytes::from(vec![0u8; 200]);
        let properties = PublishProperties::default();
        // 1 fixed + 2 length bytes (remaining 2+3+1+200 = 206) + 206.
        assert_eq!(packet_size("a/b", &payload, &properties), 1 + 2 + 206);
    }
}
