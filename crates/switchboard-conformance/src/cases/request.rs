//! Request/reply: one request, the first reply back to the requester.

use std::time::Duration;

use switchboard_core::{Error, ErrorKind, Headers};
use tokio::time::{timeout, Instant};

use super::{assert_kind, expect_err, flush, msg, publish, subscribe};
use crate::{recv, Context, RECEIVE_TIMEOUT};

/// How long a request in these cases waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// With `capabilities.request_reply`: a subscriber on another connection
/// receives a request (`is_request()`), replies with a payload and a header,
/// and the requester gets exactly that reply, reported on the request's
/// subject; so does a request whose timeout is `Duration::MAX`; a plain
/// publish is not a request and replying to it fails with
/// [`ErrorKind::Unsupported`]. Without the
/// capability, `request` fails with [`ErrorKind::Unsupported`] at once.
pub async fn request_gets_the_reply(ctx: &Context) {
    let subject = ctx.subject("request");
    if !ctx.capabilities().request_reply {
        let error = expect_err(
            timeout(
                RECEIVE_TIMEOUT,
                ctx.broker().request(msg(subject, "ping"), REQUEST_TIMEOUT),
            )
            .await
            .expect("request on a broker without request/reply did not resolve"),
            "request on a broker without request/reply",
        );
        assert_kind(
            &error,
            ErrorKind::Unsupported,
            "request without request_reply",
        );
        return;
    }
    let responder = ctx.connect().await;
    let mut requests = subscribe(&responder, &subject.clone().into()).await;

    // A plain message is not a request.
    publish(ctx.broker(), msg(subject.clone(), "plain")).await;
    flush(ctx.broker()).await;
    let plain = recv(&mut requests).await;
    assert!(
        !plain.is_request(),
        "a plainly published message says it is a request"
    );
    let error = expect_err(
        plain.reply("nobody asked").await,
        "reply to a plain message",
    );
    assert_kind(&error, ErrorKind::Unsupported, "reply to a plain message");

    let answering = tokio::spawn(async move {
        let request = recv(&mut requests).await;
        assert!(
            request.is_request(),
            "a request arrived without a way to reply"
        );
        assert_eq!(
            request.payload_str(),
            Some("ping"),
            "the request's payload changed"
        );
        assert_eq!(
            request.headers().get("x-ask"),
            Some("1"),
            "the request's header was lost"
        );
        let mut headers = Headers::new();
        headers.insert("x-answer", "42").expect("a valid header");
        request
            .reply_with("pong", headers)
            .await
            .expect("replying to a request failed");
        let unhurried = recv(&mut requests).await;
        unhurried
            .reply("no hurry")
            .await
            .expect("replying to a request failed");
        requests
    });
    let request = msg(subject.clone(), "ping")
        .with_header("x-ask", "1")
        .expect("a valid header");
    let reply = timeout(
        REQUEST_TIMEOUT + RECEIVE_TIMEOUT,
        ctx.broker().request(request, REQUEST_TIMEOUT),
    )
    .await
    .expect("request did not resolve")
    .unwrap_or_else(|e| panic!("{}: request failed: {e}", ctx.broker_name()));
    assert_eq!(
        reply.payload_str(),
        Some("pong"),
        "the reply's payload changed"
    );
    // Whatever inbox carried it, the reply is reported on the request's
    // subject: one behaviour on every broker.
    assert_eq!(
        reply.subject(),
        &subject,
        "the reply is not reported on the request's subject"
    );
    assert_eq!(
        reply.headers().get("x-answer"),
        Some("42"),
        "the reply's header was lost: {:?}",
        reply.headers()
    );
    // "As long as it takes" is a timeout too (it panicked on Redis and
    // RabbitMQ, overflowing the deadline).
    let reply = timeout(
        REQUEST_TIMEOUT + RECEIVE_TIMEOUT,
        ctx.broker()
            .request(msg(subject.clone(), "whenever"), Duration::MAX),
    )
    .await
    .expect("request with Duration::MAX did not resolve")
    .unwrap_or_else(|e| {
        panic!(
            "{}: request with Duration::MAX failed: {e}",
            ctx.broker_name()
        )
    });
    assert_eq!(reply.payload_str(), Some("no hurry"));
    answering.await.expect("the responder failed");
}

/// With `capabilities.request_reply`: a request nobody is subscribed to fails
/// with [`ErrorKind::NoResponders`] or [`ErrorKind::Timeout`], and it does so
/// within its timeout (plus a margin), never hanging. Skipped otherwise.
pub async fn request_without_responders_fails(ctx: &Context) {
    if !ctx.capabilities().request_reply {
        ctx.skip("capabilities.request_reply is false");
        return;
    }
    let wait = Duration::from_secs(1);
    let started = Instant::now();
    let result = timeout(
        wait + RECEIVE_TIMEOUT,
        ctx.broker()
            .request(msg(ctx.subject("nobody"), "anyone?"), wait),
    )
    .await
    .expect("a request without responders hung past its timeout");
    let error = expect_err(result, "a request nobody answers");
    assert!(
        matches!(error.kind(), ErrorKind::NoResponders | ErrorKind::Timeout),
        "a request nobody answers should fail with NoResponders or Timeout, not {:?}: {error}",
        error.kind()
    );
    assert!(
        started.elapsed() < wait + RECEIVE_TIMEOUT,
        "the request took {:?} to fail with a timeout of {wait:?}",
        started.elapsed()
    );
}

/// With `capabilities.request_reply`: a responder that answers with
/// `reply_error(503, …)` fails the request at once with
/// [`ErrorKind::Service`], carrying the code and the description made one
/// line, long before the request's timeout (its headers, NATS micro's,
/// arrived as they were sent). Skipped otherwise.
pub async fn request_gets_the_error_reply(ctx: &Context) {
    if !ctx.capabilities().request_reply {
        ctx.skip("capabilities.request_reply is false");
        return;
    }
    let subject = ctx.subject("refused");
    let responder = ctx.connect().await;
    let mut requests = subscribe(&responder, &subject.clone().into()).await;
    let answering = tokio::spawn(async move {
        let request = recv(&mut requests).await;
        request
            .reply_error(503, "busy:\n try again later")
            .await
            .expect("an error reply failed");
        requests
    });
    let started = Instant::now();
    let error = expect_err(
        timeout(
            REQUEST_TIMEOUT + RECEIVE_TIMEOUT,
            ctx.broker()
                .request(msg(subject.clone(), "work"), REQUEST_TIMEOUT),
        )
        .await
        .expect("a request answered with an error did not resolve"),
        "a request answered with an error reply",
    );
    assert_kind(&error, ErrorKind::Service, "an error reply");
    match &error {
        Error::Service {
            code,
            description,
            subject: on,
            ..
        } => {
            assert_eq!(*code, Some(503), "the error reply's code changed: {error}");
            assert_eq!(
                description, "busy: try again later",
                "the error reply's description changed"
            );
            assert_eq!(on, subject.as_str(), "the error names another subject");
        }
        other => panic!("an error reply should be Error::Service, not {other:?}"),
    }
    assert!(error.is_temporary(), "a 503 error reply is not temporary");
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "the error reply took {:?}: the request waited out its timeout",
        started.elapsed()
    );
    answering.await.expect("the responder failed");
}
