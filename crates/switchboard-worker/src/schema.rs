//! Payload schemas: a [`Schema`] is a compiled JSON Schema that a route
//! checks every payload against ([`Route::schema`]) and that the
//! [AsyncAPI document](crate::asyncapi) publishes as the payload's type.
//!
//! A payload that does not match is a
//! [permanent](crate::HandlerError::is_permanent) failure
//! ([`SchemaViolation`]): the default stack dead-letters it at once, the
//! violations in [`ERROR_HEADER`](crate::ERROR_HEADER), and it is counted in
//! [`Stats::decode_failed`](crate::Stats::decode_failed). Payloads are read
//! with the codec their `content-type` names ([the
//! rule](crate::codec#which-codec-reads-a-message)), so a schema checks
//! MessagePack and CBOR payloads as well as JSON ones.
//!
//! A schema that cannot be read or is not a valid JSON Schema is a
//! [`SchemaError`] when the `Schema` is made — one line naming the file —
//! never a panic. Schemas are self-contained: a `$ref` to another file or a
//! URL is not fetched (it makes the schema invalid); references inside the
//! schema (`#/definitions/...`, `#/$defs/...`) are fine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::codec::Formats;
use crate::typed::read;
use crate::{BoxHandler, Context, Handler, HandlerError, Route};

/// Most violations listed in a [`SchemaViolation`].
const MAX_VIOLATIONS: usize = 5;

/// A JSON Schema, compiled: its name (for the AsyncAPI document), its JSON,
/// and the validator. Cheap to clone.
///
/// The draft is the one its `$schema` names (draft 4, 6, 7, 2019-09 or
/// 2020-12), 2020-12 without one. AsyncAPI 3.0 documents describe payloads
/// with draft-07 schemas, which is what `Schema::of` (feature `schemars`) generates.
///
/// ```
/// use switchboard_worker::Schema;
///
/// let alert = Schema::new("alert", serde_json::json!({
///     "type": "object",
///     "required": ["robot"],
///     "properties": { "robot": { "type": "string" } }
/// }))?;
/// assert!(alert.check(&serde_json::json!({ "robot": "T-800" })).is_ok());
/// let violation = alert.check(&serde_json::json!({ "robot": 800 })).unwrap_err();
/// assert_eq!(
///     violation.to_string(),
///     "the payload does not match schema \"alert\": at /robot: 800 is not of type \"string\""
/// );
/// # Ok::<(), switchboard_worker::SchemaError>(())
/// ```
#[derive(Clone)]
pub struct Schema {
    name: Arc<str>,
    value: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

/// A schema could not be read or compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    #[error("schema file {}: cannot read it: {source}", path.display())]
    Read {
        /// The path, as given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("schema file {} is not JSON: {source}", path.display())]
    Parse {
        /// The path, as given.
        path: PathBuf,
        /// The parse error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The document is not a valid JSON Schema (or refers to one elsewhere).
    #[error("schema {name:?} is not a valid JSON Schema: {reason}; fix it so that it validates against its draft's meta-schema")]
    Invalid {
        /// The schema's name (for a file, its path).
        name: String,
        /// What is wrong, and where.
        reason: String,
    },
}

impl Schema {
    /// Compiles `value`, naming it `name` (letters, digits, `.`, `-` and `_`
    /// are kept; anything else becomes `_`).
    pub fn new(name: impl Into<String>, value: Value) -> Result<Schema, SchemaError> {
        let name = name.into();
        let validator =
            jsonschema::validator_for(&value).map_err(|error| SchemaError::Invalid {
                name: name.clone(),
                reason: located(&error.instance_path().to_string(), &error.to_string()),
            })?;
        Ok(Schema {
            name: Arc::from(component_name(&name)),
            value: Arc::new(value),
            validator: Arc::new(validator),
        })
    }

    /// Reads and compiles the JSON Schema in the file at `path`, named after
    /// the file (`alert.schema.json` is `alert`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Schema, SchemaError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| SchemaError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let stem = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('.').next())
            .filter(|stem| !stem.is_empty())
            .unwrap_or("payload");
        let mut schema = Schema::new(path.display().to_string(), value)?;
        schema.name = Arc::from(component_name(stem));
        Ok(schema)
    }

    /// The draft-07 schema of `T`, generated by `schemars`, named after the
    /// type (feature `schemars`).
    #[cfg(feature = "schemars")]
    pub fn of<T: schemars::JsonSchema>() -> Result<Schema, SchemaError> {
        let generated = schemars::generate::SchemaSettings::draft07()
            .into_generator()
            .into_root_schema_for::<T>();
        Schema::new(T::schema_name(), generated.to_value())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema's JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Checks `instance` against the schema.
    pub fn check(&self, instance: &Value) -> Result<(), SchemaViolation> {
        let mut errors = self.validator.iter_errors(instance);
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let mut listed = Vec::new();
        let mut more = 0;
        for error in std::iter::once(first).chain(errors) {
            if listed.len() < MAX_VIOLATIONS {
                listed.push(located(
                    &error.instance_path().to_string(),
                    &error.to_string(),
                ));
            } else {
                more += 1;
            }
        }
        Err(SchemaViolation {
            schema: self.name.to_string(),
            errors: listed,
            more,
        })
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `error` prefixed with where it is (a JSON pointer), unless at the root.
fn located(path: &str, error: &str) -> String {
    if path.is_empty() {
        error.to_string()
    } else {
        format!("at {path}: {error}")
    }
}

/// `name` as an AsyncAPI component key (`^[a-zA-Z0-9.\-_]+$`).
pub(crate) fn component_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "payload".to_string()
    } else {
        cleaned
    }
}

/// A payload does not match its route's schema: always
/// [permanent](crate::HandlerError::is_permanent).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaViolation {
    /// The schema's name.
    pub schema: String,
    /// The first violations, each with where it is in the payload.
    pub errors: Vec<String>,
    /// How many more there were.
    pub more: usize,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the payload does not match schema {:?}: {}",
            self.schema,
            self.errors.join("; ")
        )?;
        if self.more > 0 {
            write!(f, " (and {} more)", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaViolation {}

/// Checks each payload against a schema before the handler.
pub(crate) struct Validate {
    pub(crate) inner: BoxHandler,
    pub(crate) schema: Schema,
    pub(crate) formats: Formats<Value>,
}

#[async_trait]
impl Handler for Validate {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let (_, value) = read(&self.formats, &ctx, || {
            format!("a value to check against schema {:?}", self.schema.name())
        })?;
        if let Err(violation) = self.schema.check(&value) {
            ctx.counters().add_decode_failed();
            return Err(HandlerError::permanent(violation));
        }
        self.inner.call(ctx).await
    }
}

impl Route {
    /// Checks every payload against `schema` before the handler (an invalid
    /// one is dead-lettered at once, see [the module docs](crate::schema)),
    /// and publishes it as the payload's type in the AsyncAPI document.
    ///
    /// The check runs on each attempt, inside the default stack; on a
    /// [`Route::custom`] stack it runs before the whole stack, so an invalid
    /// payload is rejected there without a dead letter.
    ///
    /// ```
    /// use switchboard_worker::{Context, HandlerError, Route, Schema};
    /// let route = Route::new("alerts.>", |_ctx: Context| async { Ok::<_, HandlerError>(()) })
    ///     .schema(Schema::new("alert", serde_json::json!({ "type": "object" }))?);
    /// # Ok::<(), switchboard_worker::SchemaError>(())
    /// ```
    pub fn schema(mut self, schema: Schema) -> Self {
        self.contract.schema = Some(Ok(schema));
        self
    }

    /// [`Route::schema`] with the schema of `T` ([`Schema::of`], feature
    /// `schemars`). Should it fail, [`Worker::start`](crate::Worker::start)
    /// refuses the route, saying why.
    #[cfg(feature = "schemars")]
    pub fn schema_of<T: schemars::JsonSchema>(mut self) -> Self {
        self.contract.schema = Some(Schema::of::<T>().map_err(|error| error.to_string()));
        self
    }
}
