//! Typed reactions: handlers that take the payload decoded as a `T` —
//! [`Worker::on_json`], [`Worker::on_typed`], [`Route::json`],
//! [`Route::typed`] and the [`Typed`] handler under them.
//!
//! A payload that does not decode is not the handler's business: it is a
//! [permanent](crate::HandlerError::is_permanent) failure ([`DecodeError`]),
//! so the default stack dead-letters it at once with the decode error in
//! [`ERROR_HEADER`](crate::ERROR_HEADER), never retries it, and counts it in
//! [`Stats::decode_failed`](crate::Stats::decode_failed) (and
//! [`Stats::permanent`](crate::Stats::permanent)). Which codec reads a
//! message is [the codec module's rule](crate::codec#which-codec-reads-a-message).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_core::{BoxError, Codec, Headers, Json, CONTENT_TYPE_HEADER};

use crate::codec::{Format, Formats};
use crate::{Context, Handler, HandlerError, Route, Worker};

/// What a typed handler returns on success: `()` for nothing, or
/// `Option<R>` to answer a request with `Some(reply)`.
///
/// A reply is sent only when the message is a request
/// ([`Context::is_request`]; see `Broker::request`), encoded with the codec
/// the request was read with and its `content-type`; on a message nobody
/// waits for, it is dropped (logged at debug level), so one handler can serve
/// both events and requests.
pub trait IntoReply: Send {
    /// The reply's type.
    type Reply: Serialize + Send;

    /// The reply to send, if any.
    fn into_reply(self) -> Option<Self::Reply>;
}

impl IntoReply for () {
    type Reply = ();

    fn into_reply(self) -> Option<()> {
        None
    }
}

impl<R: Serialize + Send> IntoReply for Option<R> {
    type Reply = R;

    fn into_reply(self) -> Option<R> {
        self
    }
}

/// An async function that handles a decoded `T`: `Fn(T, Context) ->
/// impl Future<Output = Result<O, E>>` with `O` `()` or `Option<reply>`
/// ([`IntoReply`]) and `E: Into<BoxError>` (`HandlerError`, `String`, any
/// error). Implemented for every such closure and `async fn`; its closure
/// arguments are inferred, so `.on_json::<Alert>(pattern, |alert, ctx| async
/// move { … })` needs no annotations.
pub trait TypedFn<T>: Fn(T, Context) -> <Self as TypedFn<T>>::Fut + Send + Sync + 'static {
    /// The future the function returns.
    type Fut: Future<Output = Result<Self::Ok, Self::Err>> + Send;
    /// What it returns on success.
    type Ok: IntoReply;
    /// What it returns on failure.
    type Err: Into<BoxError>;
}

impl<T, F, Fut, O, E> TypedFn<T> for F
where
    F: Fn(T, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
    O: IntoReply,
    E: Into<BoxError>,
{
    type Fut = Fut;
    type Ok = O;
    type Err = E;
}

/// The reply type of typed function `F` over `T`.
type ReplyOf<F, T> = <<F as TypedFn<T>>::Ok as IntoReply>::Reply;

/// A payload could not be read as the route's type (or as the value its
/// schema checks): it does not decode with its codec, or its
/// `content-type` names a codec the route does not have. Always
/// [permanent](crate::HandlerError::is_permanent).
#[derive(Debug, thiserror::Error)]
#[error("the payload does not decode into {target}: {source}")]
#[non_exhaustive]
pub struct DecodeError {
    /// What it was read as: a type name, or the value a schema checks.
    pub target: String,
    /// Why: the codec's error ([`switchboard_core::Error::Json`] or
    /// [`switchboard_core::Error::Codec`]) or an
    /// [`UnknownContentType`](crate::UnknownContentType).
    #[source]
    pub source: BoxError,
}

impl DecodeError {
    /// Counts the failure and makes it a permanent handler error.
    fn fail(ctx: &Context, target: String, source: impl Into<BoxError>) -> HandlerError {
        ctx.counters().add_decode_failed();
        HandlerError::permanent(DecodeError {
            target,
            source: source.into(),
        })
    }
}

/// Reads `ctx`'s payload with the codec of `formats` its `content-type`
/// picks, as `target` (for the error); returns the codec too. A failure is
/// counted and permanent.
pub(crate) fn read<T, R>(
    formats: &Formats<T, R>,
    ctx: &Context,
    target: impl Fn() -> String,
) -> Result<(Format<T, R>, T), HandlerError>
where
    T: DeserializeOwned,
    R: Serialize,
{
    let format = match formats.pick(ctx.message()) {
        Ok(format) => *format,
        Err(unknown) => return Err(DecodeError::fail(ctx, target(), unknown)),
    };
    let value = format
        .decode(ctx.message())
        .map_err(|error| DecodeError::fail(ctx, target(), error))?;
    Ok((format, value))
}

/// A [`Handler`] that decodes each payload as a `T` with codec `C` (or the
/// codec the message's `content-type` names) and calls `F` with it and the
/// [`Context`]; a reply it returns answers the request (see [`IntoReply`]).
///
/// [`Worker::on_json`], [`Worker::on_typed`], [`Route::json`] and
/// [`Route::typed`] build one; use it directly to put it in a
/// [`Route::custom`] stack or wrap it in layers:
///
/// ```
/// use switchboard_worker::{Context, HandlerError, HandlerExt, Json, Route, Typed};
///
/// #[derive(serde::Deserialize)]
/// struct Alert { robot: String }
///
/// let page = Typed::<Json, Alert, _>::new(|alert: Alert, _ctx: Context| async move {
///     println!("paging about {}", alert.robot);
///     Ok::<_, HandlerError>(())
/// });
/// let route = Route::custom("alerts.>", page.catch_panic().dead_letter());
/// ```
pub struct Typed<C, T, F>
where
    F: TypedFn<T>,
{
    handler: F,
    formats: Formats<T, ReplyOf<F, T>>,
    codec: PhantomData<fn() -> C>,
}

impl<C, T, F> Typed<C, T, F>
where
    C: Codec,
    T: DeserializeOwned + Send + 'static,
    F: TypedFn<T>,
{
    /// `handler`, reading payloads with `C` unless their `content-type` names another codec.
    pub fn new(handler: F) -> Self {
        Typed {
            handler,
            formats: Formats::with_default(Format::of::<C>()),
            codec: PhantomData,
        }
    }
}

impl<C, T, F: TypedFn<T>> fmt::Debug for Typed<C, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("type", &std::any::type_name::<T>())
            .field("formats", &self.formats)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C, T, F> Handler for Typed<C, T, F>
where
    C: Codec,
    T: DeserializeOwned + Send + 'static,
    F: TypedFn<T>,
{
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self.handle(ctx).await
    }

    fn call_unboxed(&self, ctx: Context) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        Self: Sized,
    {
        self.handle(ctx)
    }
}

impl<C, T, F> Typed<C, T, F>
where
    C: Codec,
    T: DeserializeOwned + Send + 'static,
    F: TypedFn<T>,
{
    /// Decodes the payload, calls the function, and sends its reply, if any.
    async fn handle(&self, ctx: Context) -> Result<(), HandlerError> {
        let (format, value) = read(&self.formats, &ctx, || {
            std::any::type_name::<T>().to_string()
        })?;
        let outcome = (self.handler)(value, ctx.clone())
            .await
            .map_err(HandlerError::new)?;
        let Some(reply) = outcome.into_reply() else {
            return Ok(());
        };
        if !ctx.is_request() {
            tracing::debug!(subject = %ctx.subject(), "the handler returned a reply, but the message is not a request: nobody waits for it");
            return Ok(());
        }
        let payload = format.encode(&reply).map_err(|error| {
            HandlerError::permanent(format!(
                "cannot encode the reply to {:?} as {}: {error}",
                ctx.subject().as_str(),
                format.name
            ))
        })?;
        let mut headers = Headers::new();
        headers.insert(CONTENT_TYPE_HEADER, format.content_type)?;
        ctx.reply_with(payload, headers).await?;
        Ok(())
    }
}

impl Route {
    /// A route whose handler gets each payload decoded from JSON as a `T`
    /// (or with the codec its `content-type` names), with the default stack;
    /// see [`Worker::on_json`].
    pub fn json<T>(pattern: impl Into<String>, handler: impl TypedFn<T>) -> Route
    where
        T: DeserializeOwned + Send + 'static,
    {
        Route::typed::<Json, T>(pattern, handler)
    }

    /// A route whose handler gets each payload decoded with codec `C` as a
    /// `T` (or with the codec its `content-type` names), with the default
    /// stack. The route also reads a payload without `content-type` with `C`
    /// when it checks a [schema](Route::schema), and names `C`'s media type
    /// in the [AsyncAPI document](crate::asyncapi).
    pub fn typed<C, T>(pattern: impl Into<String>, handler: impl TypedFn<T>) -> Route
    where
        C: Codec,
        T: DeserializeOwned + Send + 'static,
    {
        let mut route = Route::new(pattern, Typed::<C, T, _>::new(handler));
        route.contract.typed::<C, T>();
        route
    }
}

impl Worker {
    /// Routes messages matching `pattern` to `handler`, which gets each
    /// payload decoded from JSON as a `T` and the [`Context`] (the default
    /// settings and layers of [`Route`]).
    ///
    /// A payload that does not decode is dead-lettered at once (see
    /// [the module docs](crate::typed)); a payload whose `content-type` names
    /// another codec this build has (MessagePack, CBOR) is read with it.
    /// Return `Ok(Some(reply))` to answer a request (see [`IntoReply`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde::Deserialize;
    /// use switchboard_core::{MemoryBroker, PublisherExt};
    /// use switchboard_worker::{HandlerError, Worker};
    ///
    /// #[derive(Deserialize)]
    /// struct Alert { robot: String, severity: String }
    ///
    /// let broker = MemoryBroker::new();
    /// let worker = Worker::new(broker.clone())
    ///     .on_json::<Alert>("alerts.>", |alert, ctx| async move {
    ///         println!("[{}] {} ({}) -> alerting Sarah Connor!", ctx.subject(), alert.robot, alert.severity);
    ///         Ok::<_, HandlerError>(())
    ///     })
    ///     .max_messages(2);
    /// let running = worker.start().await?;
    /// broker.publish_json("alerts.robot", &serde_json::json!({"robot": "T-800", "severity": "high"})).await?;
    /// broker.publish_to("alerts.robot", "not JSON").await?; // dead-lettered at once
    /// let summary = running.wait().await;
    /// assert_eq!((summary.stats.succeeded(), summary.stats.decode_failed), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn on_json<T>(self, pattern: impl Into<String>, handler: impl TypedFn<T>) -> Self
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.route(Route::json::<T>(pattern, handler))
    }

    /// Like [`Worker::on_json`], with codec `C` (e.g. `MessagePack` or `Cbor`
    /// with the worker's `msgpack` / `cbor` features) for payloads without
    /// `content-type`: `worker.on_typed::<Cbor, Alert>("alerts.>", handler)`.
    pub fn on_typed<C, T>(self, pattern: impl Into<String>, handler: impl TypedFn<T>) -> Self
    where
        C: Codec,
        T: DeserializeOwned + Send + 'static,
    {
        self.route(Route::typed::<C, T>(pattern, handler))
    }
}
