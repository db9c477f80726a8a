//! Payload formats: the [`Codec`] trait, [`Json`] (built in) and the
//! `content-type` header that says which codec a payload was written with.
//!
//! A codec turns any `serde` value into payload bytes and back, and names the
//! media type it writes, so that a reader can pick the right one:
//! [`Message::encode`] and [`PublisherExt::publish_encoded`](crate::PublisherExt::publish_encoded)
//! set [`CONTENT_TYPE_HEADER`]; [`Message::decode`] reads with the codec given.
//! The worker (`switchboard-worker`) adds MessagePack and CBOR behind cargo
//! features and picks the codec of each incoming message from its header.

use serde::{de::DeserializeOwned, Serialize};

use crate::{BoxError, Error, Headers, Message, Result, Subject};

/// The header naming a payload's media type (e.g. `application/json`), as
/// [`Message::encode`] sets it. Looked up case-insensitively by
/// [`content_type`].
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// A payload format: encodes `serde` values to bytes and decodes them back.
///
/// Codecs are unit types passed by value (`Json`, the worker's `MessagePack`
/// and `Cbor`), so the format is chosen at compile time and costs nothing at
/// run time (hence `Copy + Default`). Implement it for your own format (e.g. a protobuf-in-serde
/// crate): give it a name for messages, the media type it writes, and say
/// which media types it reads ([`Codec::accepts`]).
///
/// ```
/// use switchboard_core::{Codec, Json, Message};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Alert { robot: String }
///
/// let message = Message::encode("alerts.robot", &Alert { robot: "T-800".into() }, Json)?;
/// assert_eq!(message.headers().get("content-type"), Some(Json::CONTENT_TYPE));
/// assert_eq!(message.decode::<Alert>(Json)?, Alert { robot: "T-800".into() });
/// # Ok::<(), switchboard_core::Error>(())
/// ```
pub trait Codec: Copy + Default + Send + Sync + 'static {
    /// The format's name in messages: `JSON`, `MessagePack`, `CBOR`.
    const NAME: &'static str;

    /// The media type this codec writes in [`CONTENT_TYPE_HEADER`].
    const CONTENT_TYPE: &'static str;

    /// Whether this codec reads payloads of `media_type` (the header's value
    /// without parameters, e.g. `application/json`; compare without regard to
    /// case). By default only [`Codec::CONTENT_TYPE`].
    fn accepts(media_type: &str) -> bool {
        media_type.eq_ignore_ascii_case(Self::CONTENT_TYPE)
    }

    /// `value` as payload bytes.
    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, BoxError>;

    /// A `T` read from payload bytes.
    fn decode<T: DeserializeOwned>(payload: &[u8]) -> std::result::Result<T, BoxError>;
}

/// JSON (`application/json`, with `serde_json`). Also reads the structured
/// syntax suffix `application/<anything>+json` (RFC 6839), e.g.
/// `application/cloudevents+json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "JSON";
    const CONTENT_TYPE: &'static str = "application/json";

    fn accepts(media_type: &str) -> bool {
        let lower = media_type.to_ascii_lowercase();
        lower == Self::CONTENT_TYPE
            || (lower.starts_with("application/") && lower.ends_with("+json"))
    }

    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, BoxError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode<T: DeserializeOwned>(payload: &[u8]) -> std::result::Result<T, BoxError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

/// The media type in `headers`' [`CONTENT_TYPE_HEADER`] (its name matched
/// without regard to case), without parameters such as `; charset=utf-8`
/// and trimmed; `None` when the header is missing or empty.
///
/// ```
/// use switchboard_core::{codec::content_type, Headers};
/// let mut headers = Headers::new();
/// headers.insert("Content-Type", "application/json; charset=utf-8")?;
/// assert_eq!(content_type(&headers), Some("application/json"));
/// # Ok::<(), switchboard_core::Error>(())
/// ```
pub fn content_type(headers: &Headers) -> Option<&str> {
    let value = match headers.get(CONTENT_TYPE_HEADER) {
        Some(value) => value,
        None => headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
            .map(|(_, value)| value)?,
    };
    let media = value.split(';').next().unwrap_or("").trim();
    (!media.is_empty()).then_some(media)
}

/// The error for a payload `codec` could not write or read on `subject`:
/// [`Error::Json`] for JSON's own errors, [`Error::Codec`] otherwise.
pub(crate) fn codec_error(codec: &'static str, subject: &Subject, source: BoxError) -> Error {
    match source.downcast::<serde_json::Error>() {
        Ok(json) => Error::Json {
            subject: subject.to_string(),
            source: *json,
        },
        Err(source) => Error::Codec {
            codec,
            subject: subject.to_string(),
            source,
        },
    }
}

impl Message {
    /// A message whose payload is `value` written by `codec`, with
    /// [`CONTENT_TYPE_HEADER`] set to the codec's media type.
    /// ([`Message::json`] is `Message::encode(subject, value, Json)`.)
    pub fn encode<S, T>(subject: S, value: &T, codec: impl Codec) -> Result<Self>
    where
        S: TryInto<Subject>,
        Error: From<S::Error>,
        T: Serialize + ?Sized,
    {
        encode_with(subject, value, codec)
    }

    /// Reads the payload as a `T` with `codec` (whatever the `content-type`
    /// header says: the worker's typed routes are what pick a codec from it).
    pub fn decode<T: DeserializeOwned>(&self, codec: impl Codec) -> Result<T> {
        decode_with(self, codec)
    }
}

fn encode_with<S, T, C>(subject: S, value: &T, _codec: C) -> Result<Message>
where
    S: TryInto<Subject>,
    Error: From<S::Error>,
    T: Serialize + ?Sized,
    C: Codec,
{
    let subject = subject.try_into()?;
    let payload = C::encode(value).map_err(|source| codec_error(C::NAME, &subject, source))?;
    let mut headers = Headers::new();
    headers.insert(CONTENT_TYPE_HEADER, C::CONTENT_TYPE)?;
    Ok(Message::from_parts(subject, payload.into(), headers))
}

fn decode_with<T: DeserializeOwned, C: Codec>(message: &Message, _codec: C) -> Result<T> {
    C::decode(message.payload()).map_err(|source| codec_error(C::NAME, message.subject(), source))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_reads_its_suffix_and_no_other_type() {
        assert!(Json::accepts("application/json"));
        assert!(Json::accepts("Application/JSON"));
        assert!(Json::accepts("application/cloudevents+json"));
        assert!(!Json::accepts("application/msgpack"));
        assert!(!Json::accepts("text/plain"));
    }

    #[test]
    fn json_errors_stay_json_errors() {
        let message = Message::new("a.b", "{not json").unwrap();
        let error = message.decode::<serde_json::Value>(Json).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Json);
        assert!(!error.is_temporary());
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let mut headers = Headers::new();
        assert_eq!(content_type(&headers), None);
        headers
            .insert("CONTENT-TYPE", " application/cbor ;x=1")
            .unwrap_err();
        headers
            .insert("CONTENT-TYPE", "application/cbor ;x=1")
            .unwrap();
        assert_eq!(content_type(&headers), Some("application/cbor"));
    }
}
