//! Error replies: a responder that cannot answer a request says so at once,
//! instead of leaving the requester to wait out its timeout.
//!
//! An error reply is a reply with an empty payload and two headers, those of
//! the NATS micro protocol ([`SERVICE_ERROR_HEADER`] and
//! [`SERVICE_ERROR_CODE_HEADER`]): a NATS service or client written in
//! another language reads switchboard's error replies, and a micro service's
//! error reply fails a switchboard request. Every broker carries the two
//! headers alike, so the same holds on Redis, RabbitMQ, MQTT and memory.

use crate::{Error, Headers, Message, Result};

/// The header of an error reply that says what went wrong (NATS micro's).
pub const SERVICE_ERROR_HEADER: &str = "Nats-Service-Error";

/// The header of an error reply that carries its code, in decimal (NATS micro's).
pub const SERVICE_ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// The longest description an error reply carries, in bytes; a longer one is cut.
pub const MAX_SERVICE_ERROR_LEN: usize = 1000;

/// The headers of an error reply with `code` and `description` (made one
/// line of at most [`MAX_SERVICE_ERROR_LEN`] bytes, with the password of
/// any URL in it redacted by [`redact_text`](crate::redact_text): the
/// description leaves the process, and a handler's error may name a URL
/// it connected to).
///
/// ```
/// use switchboard_core::{error_reply_headers, SERVICE_ERROR_HEADER};
/// let headers = error_reply_headers(503, "busy:\n try later")?;
/// assert_eq!(headers.get(SERVICE_ERROR_HEADER), Some("busy: try later"));
/// let headers = error_reply_headers(500, "redis://:hunter2@cache:6379 refused")?;
/// assert_eq!(headers.get(SERVICE_ERROR_HEADER), Some("redis://:***@cache:6379 refused"));
/// # Ok::<(), switchboard_core::Error>(())
/// ```
pub fn error_reply_headers(code: u16, description: &str) -> Result<Headers> {
    let mut description = clean(description);
    if description.is_empty() {
        // An empty value would read, on the requester's side, as no reason at all.
        description = format!("failed with code {code}");
    }
    let mut headers = Headers::new();
    headers.insert(SERVICE_ERROR_HEADER, description)?;
    headers.insert(SERVICE_ERROR_CODE_HEADER, code.to_string())?;
    Ok(headers)
}

/// What the reply to a request on `subject` means: itself, or
/// [`Error::Service`] when it is an error reply (it carries either header:
/// a broker may have left out a plain client's description it could not
/// carry). Every adapter's [`Broker::request`](crate::Broker::request)
/// passes its reply through this, so an error reply fails the request the
/// same way on every broker. The description came from elsewhere, so it is
/// treated as the sender's would be: one line of at most
/// [`MAX_SERVICE_ERROR_LEN`] bytes, URL passwords redacted.
///
/// ```
/// use switchboard_core::{error_reply_headers, reply_outcome, ErrorKind, Message};
/// let reply = Message::from_parts(
///     "reply.x".parse()?,
///     switchboard_core::Bytes::new(),
///     error_reply_headers(400, "bad order id")?,
/// );
/// let error = reply_outcome("nats", "orders.get", reply).unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::Service);
/// assert!(error.to_string().contains("bad order id (error code 400)"));
/// # Ok::<(), switchboard_core::Error>(())
/// ```
pub fn reply_outcome(broker: &'static str, subject: &str, reply: Message) -> Result<Message> {
    let headers = reply.headers();
    let description = headers.get(SERVICE_ERROR_HEADER);
    let code = headers.get(SERVICE_ERROR_CODE_HEADER);
    if description.is_none() && code.is_none() {
        return Ok(reply);
    }
    let description = clean(description.unwrap_or_default());
    Err(Error::Service {
        broker,
        subject: subject.to_string(),
        code: code.and_then(|code| code.trim().parse().ok()),
        description: if description.is_empty() {
            "no reason given".to_string()
        } else {
            description
        },
    })
}

/// A description as an error reply carries it, sent or received: URL
/// passwords redacted first (a password cut short would escape redaction),
/// then one line of at most [`MAX_SERVICE_ERROR_LEN`] bytes.
fn clean(description: &str) -> String {
    Headers::one_line_value(&crate::redact_text(description), MAX_SERVICE_ERROR_LEN)
}

/// An error reply's code as [`Error::Service`] shows it.
pub(crate) struct ServiceCode(pub(crate) Option<u16>);

impl std::fmt::Display for ServiceCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(code) => write!(f, "error code {code}"),
            None => f.write_str("no readable error code"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(pairs: &[(&str, &str)]) -> Message {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.insert_received(name, value).unwrap();
        }
        Message::from_parts("r".parse().unwrap(), Bytes::new(), headers)
    }

    fn service(message: Message) -> (Option<u16>, String) {
        match reply_outcome("test", "s", message) {
            Err(Error::Service {
                code, description, ..
            }) => (code, description),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn a_reply_without_either_header_is_the_answer() {
        let answer = reply(&[("x", "1")]);
        assert_eq!(reply_outcome("test", "s", answer.clone()).unwrap(), answer);
    }

    #[test]
    fn either_header_makes_an_error_reply() {
        assert_eq!(
            service(reply(&[(SERVICE_ERROR_CODE_HEADER, "503")])),
            (Some(503), "no reason given".to_string())
        );
        assert_eq!(
            service(reply(&[(SERVICE_ERROR_HEADER, "down")])),
            (None, "down".to_string())
        );
    }

    #[test]
    fn what_a_plain_client_sent_is_made_safe_to_print() {
        for code in ["abc", "99999", "-1", ""] {
            let (read, _) = service(reply(&[
                (SERVICE_ERROR_HEADER, "x"),
                (SERVICE_ERROR_CODE_HEADER, code),
            ]));
            assert_eq!(read, None, "{code:?}");
        }
        let (_, description) = service(reply(&[(
            SERVICE_ERROR_HEADER,
            "\u{1b}[31mred\u{1b}[0m redis://admin:hunter2@cache:6379 database unavailable\n",
        )]));
        assert_eq!(
            description,
            "[31mred [0m redis://admin:***@cache:6379 database unavailable"
        );
        let (_, long) = service(reply(&[(SERVICE_ERROR_HEADER, &"x".repeat(5000))]));
        assert!(long.len() <= MAX_SERVICE_ERROR_LEN, "{}", long.len());
        let error = reply_outcome("test", "s", reply(&[(SERVICE_ERROR_HEADER, "x")])).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("failed: x (no readable error code)"),
            "{error}"
        );
        assert!(error.is_temporary());
    }

    #[test]
    fn a_password_is_redacted_before_the_description_is_cut() {
        let text = format!("{} redis://admin:hunter2@cache:6379", "y".repeat(980));
        let headers = error_reply_headers(500, &text).unwrap();
        let sent = headers.get(SERVICE_ERROR_HEADER).unwrap();
        assert!(!sent.contains("hunter2"), "{sent}");
    }
}
