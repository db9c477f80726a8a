//! What a route declares about its messages — the codec a payload without
//! `content-type` is read with, the payload's type, its schema — for checking
//! payloads on the way in and for the [AsyncAPI document](crate::asyncapi).

use std::fmt;

use switchboard_core::{Codec, Json};

use crate::codec::{Format, Formats};
use crate::schema::{Schema, Validate};
use crate::{BoxHandler, HandlerExt};

/// A route's declarations; empty for a plain [`Route::new`](crate::Route::new).
#[derive(Clone, Default)]
pub(crate) struct Contract {
    /// The codec of payloads without `content-type`, for a typed route.
    codec: Option<Format<serde_json::Value>>,
    /// The payload's Rust type, for a typed route.
    pub(crate) type_name: Option<&'static str>,
    /// The payload schema, or why it could not be made.
    pub(crate) schema: Option<Result<Schema, String>>,
    /// What the route does, in words (see `Route::describe`).
    pub(crate) description: Option<String>,
}

impl Contract {
    /// Declares a typed route: payloads are `T`s, read with `C` by default.
    pub(crate) fn typed<C: Codec, T>(&mut self) {
        self.codec = Some(Format::of::<C>());
        self.type_name = Some(std::any::type_name::<T>());
    }

    /// The codec of payloads without `content-type`: a typed route's, else JSON.
    fn default_format(&self) -> Format<serde_json::Value> {
        self.codec.unwrap_or_else(Format::of::<Json>)
    }

    /// The media type the route's payloads are declared in: a typed route's
    /// codec, JSON for a route with a schema, else unknown.
    pub(crate) fn content_type(&self) -> Option<&'static str> {
        match (&self.codec, &self.schema) {
            (Some(format), _) => Some(format.content_type),
            (None, Some(_)) => Some(Json::CONTENT_TYPE),
            (None, None) => None,
        }
    }

    /// `handler` checked against the schema first, when there is one
    /// (`None` when there is none: the handler is used as it is); or why
    /// the schema could not be made.
    pub(crate) fn wrap(&self, handler: &BoxHandler) -> Result<Option<BoxHandler>, String> {
        match &self.schema {
            None => Ok(None),
            Some(Err(reason)) => Err(reason.clone()),
            Some(Ok(schema)) => Ok(Some(
                Validate {
                    inner: handler.clone(),
                    schema: schema.clone(),
                    formats: Formats::with_default(self.default_format()),
                }
                .boxed(),
            )),
        }
    }
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("codec", &self.codec)
            .field("type", &self.type_name)
            .field("description", &self.description)
            .field(
                "schema",
                &self
                    .schema
                    .as_ref()
                    .map(|schema| schema.as_ref().map(Schema::name)),
            )
            .finish()
    }
}
