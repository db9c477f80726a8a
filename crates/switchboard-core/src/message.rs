//! The message that travels: a subject, a payload and headers.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Headers, Json, Result, Subject};

/// A message: the subject it is published to, an opaque payload and [`Headers`].
///
/// The payload is carried byte-for-byte on every broker; headers travel as the
/// broker's native headers where it has them (see each adapter's docs).
///
/// ```
/// use switchboard_core::Message;
/// let message = Message::new("alerts.cpu", "CPU at 98%")?.with_header("host", "web-1")?;
/// assert_eq!(message.subject().as_str(), "alerts.cpu");
/// assert_eq!(&message.payload()[..], b"CPU at 98%");
/// assert_eq!(message.headers().get("host"), Some("web-1"));
/// # Ok::<(), switchboard_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    subject: Subject,
    payload: Bytes,
    headers: Headers,
}

impl Message {
    /// A message with no headers. Fails if `subject` is not a valid [`Subject`].
    pub fn new<S>(subject: S, payload: impl Into<Bytes>) -> Result<Self>
    where
        S: TryInto<Subject>,
        Error: From<S::Error>,
    {
        Ok(Message {
            subject: subject.try_into()?,
            payload: payload.into(),
            headers: Headers::new(),
        })
    }

    /// A message from parts that are already valid.
    pub fn from_parts(subject: Subject, payload: Bytes, headers: Headers) -> Self {
        Message {
            subject,
            payload,
            headers,
        }
    }

    /// A message whose payload is `value` encoded as JSON, with a
    /// `content-type: application/json` header (see [`Message::encode`] for
    /// other [`Codec`](crate::Codec)s).
    ///
    /// ```
    /// use switchboard_core::Message;
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Alert { cpu: u8 }
    /// let message = Message::json("alerts.cpu", &Alert { cpu: 98 })?;
    /// assert_eq!(message.decode_json::<Alert>()?, Alert { cpu: 98 });
    /// # Ok::<(), switchboard_core::Error>(())
    /// ```
    pub fn json<S, T>(subject: S, value: &T) -> Result<Self>
    where
        S: TryInto<Subject>,
        Error: From<S::Error>,
        T: Serialize + ?Sized,
    {
        Message::encode(subject, value, Json)
    }

    /// Decodes the payload as JSON (whatever its `content-type` says).
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T> {
        self.decode(Json)
    }

    /// Adds or replaces a header (builder style).
    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self> {
        self.headers.insert(name, value)?;
        Ok(self)
    }

    /// Replaces all headers (builder style).
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change them.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// Takes the message apart.
    pub fn into_parts(self) -> (Subject, Bytes, Headers) {
        (self.subject, self.payload, self.headers)
    }
}
