//! Publishing (QoS 0), `flush` (a SUBSCRIBE round trip as an ordering
//! barrier), requests (MQTT 5 response topic and correlation data) and
//! replies.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use switchboard_core::{Error, Headers, Message, Reply, Result};
use tokio::sync::oneshot;

use crate::connection::{lock, Kind, Request, Shared, MQTT_MAX_PACKET};
use crate::{subscription, wire, KIND};

/// Room kept in a packet for everything but the payload when `max_payload`
/// is declared: the fixed header (5), the topic length (2), the longest topic
/// a subject maps to (255 bytes, each escaped to 3) and an empty property list (1).
const PACKET_RESERVE: usize = 5 + 2 + 255 * 3 + 1;

/// The largest payload declared in `Capabilities::max_payload`: a message
/// without headers of that size fits a packet of `max_packet` on any subject.
pub(crate) fn max_payload(max_packet: usize) -> usize {
    max_packet
        .min(MQTT_MAX_PACKET)
        .saturating_sub(PACKET_RESERVE)
}

/// Publishes `topic` with `payload` and `properties` at QoS 0, after checking
/// the size; `subject` names the message in errors.
async fn send(
    shared: &Shared,
    subject: &str,
    topic: String,
    payload: Bytes,
    properties: PublishProperties,
) -> Result<()> {
    if shared.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    // MQTT 5 strings carry a 2-byte length: a longer user property would be
    // framed wrong, and the server drops the connection (and with it every
    // subscription) rather than the message.
    for (name, value) in &properties.user_properties {
        for (what, text) in [("name", name), ("value", value)] {
            if text.len() > usize::from(u16::MAX) {
                return Err(Error::InvalidHeader {
                    name: name.chars().take(64).collect(),
                    reason: format!(
                        "its {what} is {} bytes once encoded; an MQTT 5 user property's name and value are at most 65,535 bytes each",
                        text.len()
                    ),
                });
            }
        }
    }
    let max_packet = shared.max_packet();
    let limit = max_payload(max_packet);
    let size = wire::packet_size(&topic, &payload, &properties);
    // The payload against the declared limit; with headers, the whole packet
    // against the server's.
    let (size, max) = if payload.len() > limit {
        (payload.len(), limit)
    } else {
        (size, max_packet)
    };
    if size > max {
        return Err(Error::PayloadTooLarge {
            broker: KIND,
            subject: subject.to_string(),
            size,
            max,
        });
    }
    let timeout = shared.target.options.flush_timeout;
    let queued = tokio::time::timeout(
        timeout,
        shared
            .client
            .publish_with_properties(topic, QoS::AtMostOnce, false, payload, properties),
    )
    .await;
    match queued {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if shared.is_closed() => {
            let _ = e;
            Err(Error::Closed { broker: KIND })
        }
        Ok(Err(e)) => Err(Error::Publish {
            broker: KIND,
            subject: subject.to_string(),
            reason: "the client did not take the message".into(),
            source: Some(Box::new(e)),
        }),
        Err(_) => Err(Error::Publish {
            broker: KIND,
            subject: subject.to_string(),
            reason: format!(
                "the client's queue stayed full for {timeout:?} (is the connection down?); the message was not sent"
            ),
            source: None,
        }),
    }
}

/// Publishes `message` at QoS 0 (at most once): headers as user properties.
pub(crate) async fn publish(shared: &Shared, message: Message) -> Result<()> {
    let topic = wire::topic_for(message.subject());
    let (subject, payload, headers) = message.into_parts();
    wire::check_headers(&headers)?;
    let properties = PublishProperties {
        user_properties: wire::properties_for(&headers),
        ..PublishProperties::default()
    };
    send(shared, subject.as_str(), topic, payload, properties).await
}

/// Waits until the server has processed everything published before: a
/// SUBSCRIBE to the connection's flush filter queued after those publishes,
/// answered by SUBACK.
pub(crate) async fn flush(shared: &Shared) -> Result<()> {
    if shared.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    flush_open(shared).await
}

/// [`flush`] without the closed check, for `close`.
pub(crate) async fn flush_open(shared: &Shared) -> Result<()> {
    let acked = shared
        .round_trip(Kind::Subscribe, || {
            Some(Request::Barrier {
                filter: shared.flush_filter(),
            })
        })
        .await;
    match acked {
        Ok(_) => Ok(()),
        Err(reason) => Err(Error::Flush {
            broker: KIND,
            reason: format!("{reason}; messages published before may not have reached the server"),
            source: None,
        }),
    }
}

/// Publishes `message` as a request and waits up to `timeout` for the first
/// reply on this connection's inbox.
pub(crate) async fn request(
    shared: &Shared,
    message: Message,
    timeout: Duration,
) -> Result<Message> {
    if shared.is_closed() {
        return Err(Error::Closed { broker: KIND });
    }
    shared
        .inbox
        .get_or_try_init(|| subscription::subscribe_inbox(shared))
        .await?;
    let topic = wire::topic_for(message.subject());
    let (request_subject, payload, headers) = message.into_parts();
    wire::check_headers(&headers)?;
    let subject = request_subject.as_str().to_string();
    let number = shared.next_request.fetch_add(1, Ordering::AcqRel);
    let correlation = Bytes::from(number.to_be_bytes().to_vec());
    let (tx, rx) = oneshot::channel();
    lock(&shared.requests).insert(correlation.clone(), tx);
    let properties = PublishProperties {
        user_properties: wire::properties_for(&headers),
        response_topic: Some(shared.inbox_topic()),
        correlation_data: Some(correlation.clone()),
        ..PublishProperties::default()
    };
    let outcome = async {
        send(shared, &subject, topic, payload, properties).await?;
        match tokio::time::timeout(timeout, rx).await {
            // The reply arrives on the inbox; it is reported on the
            // request's subject, as on every broker.
            Ok(Ok(reply)) => {
                let (_, payload, headers) = reply.into_parts();
                Ok(Message::from_parts(request_subject, payload, headers))
            }
            Ok(Err(_)) => Err(Error::Closed { broker: KIND }),
            // MQTT cannot tell that nobody listens: a timeout is all there is.
            Err(_) => Err(Error::request_timeout(KIND, subject.as_str(), timeout)),
        }
    }
    .await;
    lock(&shared.requests).remove(&correlation);
    outcome
}

/// Answers a request: publishes to its response topic with its correlation data.
pub(crate) struct Replier {
    shared: Arc<Shared>,
    topic: String,
    correlation: Option<Bytes>,
}

impl Replier {
    pub(crate) fn new(shared: Arc<Shared>, topic: String, correlation: Option<Bytes>) -> Self {
        Replier {
            shared,
            topic,
            correlation,
        }
    }
}

impl fmt::Debug for Replier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replier")
            .field("response_topic", &self.topic)
            .finish_non_exhaustive()
    }
}

#[switchboard_core::async_trait]
impl Reply for Replier {
    async fn reply(&self, payload: Bytes, headers: Headers) -> Result<()> {
        wire::check_headers(&headers)?;
        let properties = PublishProperties {
            user_properties: wire::properties_for(&headers),
            correlation_data: self.correlation.clone(),
            ..PublishProperties::default()
        };
        send(
            &self.shared,
            &self.topic,
            self.topic.clone(),
            payload,
            properties,
        )
        .await
    }
}
