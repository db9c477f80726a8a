//! The codecs this crate adds to core's [`Json`] — `MessagePack` (cargo
//! feature `msgpack`) and `Cbor` (feature `cbor`) — and how a route picks
//! the codec of each message from its `content-type` header.
//!
//! # Which codec reads a message
//!
//! A typed route (and a route with a [schema](crate::Route::schema)) reads
//! each payload with the codec its `content-type` header names, among the
//! route's default codec and the codecs this build has (JSON always,
//! MessagePack and CBOR with their features):
//!
//! - no `content-type` header: the route's default codec (JSON for
//!   [`Worker::on_json`](crate::Worker::on_json), `C` for
//!   [`Worker::on_typed::<C, _>`](crate::Worker::on_typed));
//! - a media type one of them reads ([`Codec::accepts`]): that codec;
//! - any other media type: a [permanent](crate::HandlerError::is_permanent)
//!   failure naming it and the media types this build reads — the message is
//!   dead-lettered at once, never retried.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_core::codec::content_type;
use switchboard_core::{BoxError, Codec, Json, Message};

/// MessagePack (`application/msgpack`, with `rmp-serde`), structs written as
/// maps with their field names so that any MessagePack reader understands
/// them. Also reads `application/x-msgpack` and `application/vnd.msgpack`.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Codec for MessagePack {
    const NAME: &'static str = "MessagePack";
    const CONTENT_TYPE: &'static str = "application/msgpack";

    fn accepts(media_type: &str) -> bool {
        [
            "application/msgpack",
            "application/x-msgpack",
            "application/vnd.msgpack",
        ]
        .iter()
        .any(|known| media_type.eq_ignore_ascii_case(known))
    }

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
        Ok(rmp_serde::to_vec_named(value)?)
    }

    fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, BoxError> {
        Ok(rmp_serde::from_slice(payload)?)
    }
}

/// CBOR (`application/cbor`, RFC 8949, with `ciborium`).
#[cfg(feature = "cbor")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cbor;

#[cfg(feature = "cbor")]
impl Codec for Cbor {
    const NAME: &'static str = "CBOR";
    const CONTENT_TYPE: &'static str = "application/cbor";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out)?;
        Ok(out)
    }

    fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, BoxError> {
        Ok(ciborium::from_reader(payload)?)
    }
}

/// One codec as a route uses it, its types erased: its name and media type,
/// how it reads a `T` and writes an `R` (a typed handler's reply).
pub(crate) struct Format<T, R = ()> {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    accepts: fn(&str) -> bool,
    decode: fn(&Message) -> switchboard_core::Result<T>,
    encode: fn(&R) -> Result<Vec<u8>, BoxError>,
}

impl<T, R> Clone for Format<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Format<T, R> {}

impl<T, R> fmt::Debug for Format<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl<T: DeserializeOwned, R: Serialize> Format<T, R> {
    /// Codec `C`.
    pub(crate) fn of<C: Codec>() -> Self {
        Format {
            name: C::NAME,
            content_type: C::CONTENT_TYPE,
            accepts: C::accepts,
            decode: |message| message.decode(C::default()),
            encode: |value| C::encode(value),
        }
    }

    /// Reads `message`'s payload.
    pub(crate) fn decode(&self, message: &Message) -> switchboard_core::Result<T> {
        (self.decode)(message)
    }

    /// Writes `value` (a reply).
    pub(crate) fn encode(&self, value: &R) -> Result<Vec<u8>, BoxError> {
        (self.encode)(value)
    }
}

/// The codecs a route reads: its default, and every codec this build has.
pub(crate) struct Formats<T, R = ()> {
    default: Format<T, R>,
    others: Vec<Format<T, R>>,
}

impl<T, R> fmt::Debug for Formats<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Formats")
            .field("default", &self.default)
            .field("others", &self.others)
            .finish()
    }
}

impl<T: DeserializeOwned, R: Serialize> Formats<T, R> {
    /// `default` first, then the built-in codecs other than it.
    pub(crate) fn with_default(default: Format<T, R>) -> Self {
        let mut built_in = vec![Format::of::<Json>()];
        #[cfg(feature = "msgpack")]
        built_in.push(Format::of::<MessagePack>());
        #[cfg(feature = "cbor")]
        built_in.push(Format::of::<Cbor>());
        built_in.retain(|format| format.name != default.name);
        Formats {
            default,
            others: built_in,
        }
    }

    /// The codec for `message`, from its `content-type` (see [the module docs](self)).
    pub(crate) fn pick(&self, message: &Message) -> Result<&Format<T, R>, UnknownContentType> {
        let Some(media) = content_type(message.headers()) else {
            return Ok(&self.default);
        };
        std::iter::once(&self.default)
            .chain(&self.others)
            .find(|format| (format.accepts)(media))
            .ok_or_else(|| UnknownContentType {
                content_type: media.to_string(),
                known: std::iter::once(&self.default)
                    .chain(&self.others)
                    .map(|format| format.content_type)
                    .collect(),
                default: self.default.content_type,
            })
    }
}

/// A message's `content-type` names a format none of the route's codecs
/// reads: a [permanent](crate::HandlerError::is_permanent) failure (the
/// worker dead-letters the message at once).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownContentType {
    /// The media type of the message.
    pub content_type: String,
    /// The media types the route reads.
    pub known: Vec<&'static str>,
    /// The route's default, used without a `content-type` header.
    pub default: &'static str,
}

impl fmt::Display for UnknownContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "content-type {:?} is not a format this route reads ({}); publish with one of those, or without content-type for {}, or enable the worker's codec feature for it",
            self.content_type,
            self.known.join(", "),
            self.default
        )
    }
}

impl std::error::Error for UnknownContentType {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_type(content_type: Option<&str>) -> Message {
        let message = Message::new("a.b", "{}").unwrap();
        match content_type {
            Some(value) => message.with_header("content-type", value).unwrap(),
            None => message,
        }
    }

    #[test]
    fn the_header_picks_the_codec() {
        let formats: Formats<serde_json::Value> = Formats::with_default(Format::of::<Json>());
        assert_eq!(formats.pick(&with_type(None)).unwrap().name, "JSON");
        assert_eq!(
            formats
                .pick(&with_type(Some("application/json; charset=utf-8")))
                .unwrap()
                .name,
            "JSON"
        );
        let unknown = formats
            .pick(&with_type(Some("text/plain")))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with(
                "content-type \"text/plain\" is not a format this route reads (application/json"
            ),
            "{unknown}"
        );
        #[cfg(feature = "cbor")]
        assert_eq!(
            formats
                .pick(&with_type(Some("application/cbor")))
                .unwrap()
                .name,
            "CBOR"
        );
        #[cfg(feature = "msgpack")]
        assert_eq!(
            formats
                .pick(&with_type(Some("application/x-msgpack")))
                .unwrap()
                .name,
            "MessagePack"
        );
    }
}
