//! The mapping between switchboard messages and NATS wire messages.

use std::cell::RefCell;

use bytes::Bytes;
use switchboard_core::{
    async_trait, Delivery, Error, Headers, Message, Pattern, Reply, Result, Subject,
};

use crate::error::ClientError;
use crate::KIND;

/// Owns a switchboard subject's text so `Bytes` can share it without copying.
struct SubjectText(Subject);

impl AsRef<[u8]> for SubjectText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_str().as_bytes()
    }
}

thread_local! {
    /// The subject this thread published to last, as async-nats wants it:
    /// publishing in a loop to one subject then costs a comparison and a
    /// reference count instead of an allocation per message. Per thread, so
    /// there is no lock.
    static LAST_SUBJECT: RefCell<Option<(Subject, async_nats::Subject)>> =
        const { RefCell::new(None) };
}

/// The async-nats subject for `subject`, sharing its text (no copy).
pub(crate) fn nats_subject(subject: &Subject) -> Result<async_nats::Subject> {
    let cached = LAST_SUBJECT.with(|last| match &*last.borrow() {
        Some((text, nats)) if text == subject => Some(nats.clone()),
        _ => None,
    });
    if let Some(nats) = cached {
        return Ok(nats);
    }
    let nats = async_nats::Subject::try_from(Bytes::from_owner(SubjectText(subject.clone())))
        .map_err(|e| Error::InvalidSubject {
            subject: subject.to_string(),
            reason: e.to_string(),
        })?;
    LAST_SUBJECT.with(|last| *last.borrow_mut() = Some((subject.clone(), nats.clone())));
    Ok(nats)
}

/// NATS native headers for `headers`, one value per name, and their size on
/// the wire (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`) as the server
/// counts it against `max_payload`.
///
/// Core's [`Headers`] already refuses values with leading or trailing
/// whitespace, which NATS receivers (async-nats, nats.go) would trim.
pub(crate) fn nats_headers(headers: &Headers) -> Result<(async_nats::HeaderMap, usize)> {
    let mut map = async_nats::HeaderMap::new();
    let mut size = b"NATS/1.0\r\n\r\n".len();
    for (name, value) in headers {
        let header_name: async_nats::HeaderName =
            name.parse().map_err(|_| Error::InvalidHeader {
                name: name.to_string(),
                reason: "NATS does not accept this header name".to_string(),
            })?;
        let header_value: async_nats::HeaderValue =
            value.parse().map_err(|_| Error::InvalidHeader {
                name: name.to_string(),
                reason: "NATS does not accept this header value".to_string(),
            })?;
        size += name.len() + 2 + value.len() + 2;
        map.insert(header_name, header_value);
    }
    Ok((map, size))
}

/// A delivery for a received NATS message.
///
/// A subject switchboard does not accept (a plain client may publish one longer
/// than 255 bytes, say) yields an [`Error::InvalidSubject`] item instead of a
/// delivery, so the skip is visible. A header name or value switchboard does not
/// accept (only a plain client can send one) is left out with a warning; a name
/// sent several times keeps its last value. A message with a reply subject (a
/// request, from switchboard or any NATS client) is delivered as a request:
/// [`Delivery::reply`] publishes to that subject through `client` (without
/// one, the delivery cannot be answered).
///
/// `last` is the subscription's previous subject: consecutive messages on one
/// subject share it instead of validating and allocating it again. `known` is
/// the subject of every message of a subscription to a literal pattern (the
/// server delivers such a subscription its own subject and no other): then
/// the message's subject is not read at all. Comparing it with the previous
/// one was the first read of the message's bytes on the receiving core, a
/// cache miss per message (BENCHMARKS.md, "Round ten").
#[inline]
pub(crate) fn delivery(
    message: async_nats::Message,
    pattern: &Pattern,
    known: Option<&Subject>,
    last: &mut Option<Subject>,
    client: Option<&async_nats::Client>,
) -> Result<Delivery> {
    let subject = match (known, last) {
        (Some(known), _) => known.clone(),
        (None, Some(previous)) if previous.as_str() == message.subject.as_str() => previous.clone(),
        (None, last) => {
            let subject = Subject::new(&message.subject).map_err(|error| match error {
                Error::InvalidSubject { subject, reason } => Error::InvalidSubject {
                    subject,
                    reason: format!(
                        "{reason}; a message on it matched subscription {:?} and was skipped",
                        pattern.as_str()
                    ),
                },
                other => other,
            })?;
            *last = Some(subject.clone());
            subject
        }
    };
    // Most messages carry no headers: then no call (~30 instructions).
    let headers = match &message.headers {
        Some(map) if !map.is_empty() => headers_of(Some(map), &subject),
        _ => Headers::new(),
    };
    let delivery = Delivery::new(Message::from_parts(subject, message.payload, headers));
    Ok(match (message.reply, client) {
        (Some(inbox), Some(client)) => delivery.with_replier(Box::new(NatsReply {
            client: client.clone(),
            inbox,
        })),
        _ => delivery,
    })
}

/// The reply to a request on `subject`, as a message on that subject (it
/// came on the requester's inbox, which is no business of the caller's).
pub(crate) fn reply_message(reply: async_nats::Message, subject: Subject) -> Message {
    let headers = headers_of(reply.headers.as_ref(), &subject);
    Message::from_parts(subject, reply.payload, headers)
}

/// The headers of a received message: a value switchboard's rules refuse
/// (a NUL, a control character) is made one line, as on every broker; a
/// name switchboard refuses is left out with a warning; a name sent several
/// times keeps its last value.
fn headers_of(map: Option<&async_nats::HeaderMap>, subject: &Subject) -> Headers {
    let mut headers = Headers::new();
    for (name, values) in map.into_iter().flat_map(|map| map.iter()) {
        let Some(value) = values.last() else { continue };
        let name: &str = name.as_ref();
        if let Err(error) = headers.insert_received(name, value.as_str()) {
            tracing::warn!(subject = %subject, %error, "nats: header left out of a received message");
        }
    }
    headers
}

/// Answers a request: publishes to its reply subject (the requester's inbox).
#[derive(Debug)]
struct NatsReply {
    client: async_nats::Client,
    inbox: async_nats::Subject,
}

#[async_trait]
impl Reply for NatsReply {
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()> {
        // Checked here, as for a publish: async-nats refuses it with an error
        // that names no size, and the requester is then told only that the
        // client did not take the reply.
        let max = self.client.max_payload();
        let too_large = |size: usize| Error::PayloadTooLarge {
            broker: KIND,
            subject: self.inbox.to_string(),
            size,
            max,
        };
        let sent = if headers.is_empty() {
            if payload.len() > max {
                return Err(too_large(payload.len()));
            }
            self.client.publish(self.inbox.clone(), payload).await
        } else {
            let (map, header_size) = nats_headers(&headers)?;
            if header_size + payload.len() > max {
                return Err(too_large(header_size + payload.len()));
            }
            self.client
                .publish_with_headers(self.inbox.clone(), map, payload)
                .await
        };
        sent.map_err(|e| Error::Publish {
            broker: KIND,
            subject: self.inbox.to_string(),
            reason: "the client did not take the reply".to_string(),
            source: Some(ClientError::boxed(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_size_matches_the_wire() {
        let headers = Headers::try_from(vec![("a", "1"), ("Trace-Id", "xyz")]).unwrap();
        let (map, size) = nats_headers(&headers).unwrap();
        // NATS/1.0\r\n + a: 1\r\n + Trace-Id: xyz\r\n + \r\n
        assert_eq!(size, 10 + 6 + 15 + 2);
        assert_eq!(map.get("Trace-Id").map(|v| v.as_str()), Some("xyz"));
        assert_eq!(map.get("trace-id"), None);
    }

    #[test]
    fn padded_values_cannot_be_built_inner_whitespace_passes() {
        for value in [" x", "x ", "\tx", "x\u{a0}"] {
            let err = Headers::try_from(vec![("k", value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("whitespace"), "{value:?}: {err}");
        }
        let inner = Headers::try_from(vec![("k", "a \t b")]).unwrap();
        assert!(nats_headers(&inner).is_ok());
    }

    #[test]
    fn subject_is_shared() {
        let subject = Subject::new("alerts.cpu").unwrap();
        let nats = nats_subject(&subject).unwrap();
        assert_eq!(nats.as_str(), "alerts.cpu");
        let again = nats_subject(&subject).unwrap();
        assert_eq!(again.as_str(), "alerts.cpu");
        let other = nats_subject(&Subject::new("alerts.mem").unwrap()).unwrap();
        assert_eq!(other.as_str(), "alerts.mem");
    }

    #[test]
    fn received_messages_convert() {
        let mut map = async_nats::HeaderMap::new();
        map.append("k", "first");
        map.append("k", "last");
        map.insert("z", "nul\0");
        let message = async_nats::Message {
            subject: "a.b".into(),
            reply: None,
            payload: Bytes::from_static(b"\x00\xffbytes"),
            headers: Some(map),
            status: None,
            description: None,
            length: 0,
        };
        let pattern = Pattern::new("a.>").unwrap();
        let mut last = None;
        let delivery = delivery(message, &pattern, None, &mut last, None).unwrap();
        assert_eq!(delivery.subject().as_str(), "a.b");
        assert_eq!(&delivery.payload()[..], b"\x00\xffbytes");
        assert_eq!(delivery.headers().get("k"), Some("last"));
        // A plain client's NUL is made one line, as on RabbitMQ and Redis.
        assert_eq!(delivery.headers().get("z"), Some("nul"));
        assert_eq!(delivery.headers().len(), 2);

        let long = async_nats::Message {
            subject: "a".repeat(300).as_str().into(),
            reply: None,
            payload: Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let err = super::delivery(long, &pattern, None, &mut last, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("skipped"), "{err}");
    }

    #[test]
    fn a_literal_subscription_shares_its_subject_without_reading_the_message_s() {
        let known = Subject::new("orders.created").unwrap();
        let pattern = Pattern::new("orders.created").unwrap();
        let mut last = None;
        for _ in 0..2 {
            let message = async_nats::Message {
                subject: "orders.created".into(),
                reply: None,
                payload: Bytes::from_static(b"x"),
                headers: None,
                status: None,
                description: None,
                length: 0,
            };
            let delivery = delivery(message, &pattern, Some(&known), &mut last, None).unwrap();
            // The same text, not a copy: no allocation, no comparison.
            assert_eq!(
                delivery.subject().as_str().as_ptr(),
                known.as_str().as_ptr()
            );
            assert_eq!(&delivery.payload()[..], b"x");
        }
        assert!(last.is_none(), "the previous subject is not needed");
    }
}
