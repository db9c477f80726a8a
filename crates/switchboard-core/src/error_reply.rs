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
    let mut description =
        Headers::one_line_value(&crate::redact_text(description), MAX_SERVICE_ERROR_LEN);
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
/// [`Error::Service`] when it is an error reply. Every adapter's
/// [`Broker::request`](crate::Broker::request) passes its reply through
/// this, so an error reply fails the request the same way on every broker.
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
    let Some(description) = reply.headers().get(SERVICE_ERROR_HEADER) else {
        return Ok(reply);
    };
    let code = reply
        .headers()
        .get(SERVICE_ERROR_CODE_HEADER)
        .and_then(|code| code.trim().parse().ok())
        .unwrap_or(500);
    Err(Error::Service {
        broker,
        subject: subject.to_string(),
        code,
        description: description.to_string(),
    })
}
