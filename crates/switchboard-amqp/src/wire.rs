//! The wire mapping: subjects to routing keys, patterns to binding keys,
//! headers to AMQP field tables and back.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchboard_core::{Error, Headers, Pattern, Token};

use crate::KIND;

/// The binding key for `pattern`: literals and `*` as they are, a trailing `>`
/// as `*.#` (one or more tokens: `#` alone would also match zero).
pub(crate) fn binding_key(pattern: &Pattern) -> Result<ShortString, Error> {
    let key = pattern
        .tokens()
        .iter()
        .map(|token| match token {
            Token::Literal(literal) => literal.as_str(),
            Token::Any => "*",
            Token::Rest => "*.#",
        })
        .collect::<Vec<_>>()
        .join(".");
    ShortString::try_new(key).map_err(|_| Error::Subscribe {
        broker: KIND,
        pattern: pattern.to_string(),
        reason: "the AMQP binding key (a trailing `>` becomes `*.#`) is longer than 255 bytes; use a shorter pattern".to_string(),
        source: None,
    })
}

/// Room in a content header frame for everything but the header table: the
/// frame's own 8 bytes, the header's fixed 14, and the other properties the
/// adapter sets (a reply-to and a correlation id, short strings).
const CONTENT_HEADER_RESERVE: usize = 8 + 14 + 2 * 256 + 64;

/// Headers as an AMQP field table of long strings; `None` when there are
/// none. Refused with [`Error::InvalidHeader`] when the table would not fit
/// the connection's `frame_max` (0: no limit): AMQP carries a message's
/// properties in one frame, and RabbitMQ answers a larger one by closing the
/// whole connection, and every subscription on it.
pub(crate) fn to_field_table(
    headers: &Headers,
    frame_max: u32,
) -> switchboard_core::Result<Option<FieldTable>> {
    if headers.is_empty() {
        return Ok(None);
    }
    // A table is its 4-byte length, then per entry a short-string name,
    // a type byte and a long string (4-byte length).
    let size = 4 + headers
        .iter()
        .map(|(name, value)| 1 + name.len() + 1 + 4 + value.len())
        .sum::<usize>();
    let room = (frame_max as usize).saturating_sub(CONTENT_HEADER_RESERVE);
    if frame_max != 0 && size > room {
        let largest = headers
            .iter()
            .max_by_key(|(_, value)| value.len())
            .map_or("", |(name, _)| name);
        return Err(Error::InvalidHeader {
            name: largest.to_string(),
            reason: format!(
                "the headers take {size} bytes, and AMQP carries them in one frame: at most {room} bytes with this connection's frame_max of {frame_max}; put large data in the payload"
            ),
        });
    }
    let mut table = FieldTable::default();
    for (name, value) in headers {
        // Header names are at most 255 bytes (core validates), so this cannot fail.
        if let Ok(name) = ShortString::try_new(name) {
            table.insert(name, AMQPValue::LongString(LongString::from(value)));
        }
    }
    Ok(Some(table))
}

/// An AMQP field value as header text: strings as they are, numbers, booleans,
/// decimals and timestamps as their decimal text; `None` (the header is
/// skipped) for arrays, tables, byte arrays, void and non-UTF-8 strings.
pub(crate) fn value_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::DecimalValue(d) => decimal_text(d.value, d.scale),
        AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::ByteArray(_)
        | AMQPValue::Void => return None,
    })
}

fn decimal_text(value: u32, scale: u8) -> String {
    let digits = value.to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{int}.{frac}")
}

/// Headers from an AMQP field table (see [`value_text`]); a value with line
/// breaks or surrounding whitespace is made one trimmed line
/// ([`Headers::insert_received`]), and a name switchboard's [`Headers`]
/// cannot hold is skipped.
pub(crate) fn from_field_table(table: Option<&FieldTable>) -> Headers {
    let mut headers = Headers::new();
    let Some(table) = table else {
        return headers;
    };
    for (name, value) in table.inner() {
        match value_text(value) {
            Some(text) => {
                if let Err(error) = headers.insert_received(name.as_str(), &text) {
                    tracing::warn!(%error, "amqp: header left out of a received message");
                }
            }
            // A warning, as on NATS: the receiver would otherwise never learn
            // that a plain client's header did not reach it.
            None => tracing::warn!(
                header = name.as_str(),
                "amqp: header left out of a received message: its value is an array, a table, bytes or void, not text, a number or a boolean"
            ),
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{DecimalValue, FieldArray};

    #[test]
    fn binding_keys() {
        let key = |p: &str| binding_key(&p.parse().unwrap()).unwrap().to_string();
        assert_eq!(key("a.b"), "a.b");
        assert_eq!(key("a.*.c"), "a.*.c");
        assert_eq!(key("a.>"), "a.*.#");
        assert_eq!(key(">"), "*.#");
        assert_eq!(key("*.x.>"), "*.x.*.#");
    }

    #[test]
    fn headers_round_trip_and_foreign_values() {
        let headers: Headers = vec![("trace-id", "abc"), ("Case", "Ünïcode: ok")]
            .try_into()
            .unwrap();
        let table = to_field_table(&headers, 131_072).unwrap().unwrap();
        assert_eq!(
            table.inner().get("trace-id"),
            Some(&AMQPValue::LongString("abc".into()))
        );
        assert_eq!(from_field_table(Some(&table)), headers);
        assert!(to_field_table(&Headers::new(), 131_072).unwrap().is_none());

        let mut foreign = FieldTable::default();
        foreign.insert("n".into(), AMQPValue::LongInt(-42));
        foreign.insert("b".into(), AMQPValue::Boolean(true));
        foreign.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
        );
        foreign.insert("s".into(), AMQPValue::ShortString("x".into()));
        foreign.insert("arr".into(), AMQPValue::FieldArray(FieldArray::default()));
        foreign.insert("bad name".into(), AMQPValue::LongString("x".into()));
        foreign.insert("nl".into(), AMQPValue::LongString("a\nb".into()));
        let h = from_field_table(Some(&foreign));
        assert_eq!(h.get("n"), Some("-42"));
        assert_eq!(h.get("b"), Some("true"));
        assert_eq!(h.get("d"), Some("0.05"));
        assert_eq!(h.get("s"), Some("x"));
        // Made one line rather than dropped (`Headers::insert_received`).
        assert_eq!(h.get("nl"), Some("a b"));
        assert_eq!(h.len(), 5);
    }
}
