//! The reaction side of the seed article: whenever a robot is reported on
//! `some_event` or `alerts.>`, alert Sarah Connor — declared with the worker's
//! `on(pattern, handler)`, the article's `@On('some_event')`. Failed reactions
//! are retried with backoff, then dead-lettered to `dlq.<subject>`; Ctrl-C lets
//! the reaction in progress finish, unsubscribes and closes the connection
//! before exiting, printing what was done.
//!
//! The broker comes from `BROKER_URL`, so the same program runs on every broker:
//!
//! ```text
//! BROKER_URL=nats://127.0.0.1:4222 cargo run --example alert_sarah_connor
//! # in another terminal:
//! BROKER_URL=nats://127.0.0.1:4222 cargo run --example send_alert
//! # or with the command line:
//! switchboard --broker nats send --on alerts.robot --header severity=high "bad robot detected"
//! ```
//!
//! An alert whose payload contains `unreachable` fails, to show retries and
//! the dead letter (`switchboard listen --on 'dlq.>'` shows it arrive). An
//! alert that is not UTF-8 text fails permanently: retrying cannot fix it, so
//! it is dead-lettered at once, with `switchboard-permanent: true`.
//!
//! `tests/alert_sarah_connor.rs` unit-tests these reactions with
//! `switchboard::testing`, without a server. `examples/typed_alert.rs` is the
//! typed version, with JSON alerts.

use std::time::Duration;

use switchboard::worker::{Context, HandlerError, Route, Worker};
use switchboard::Broker;

/// The reaction: what happens when an alert arrives.
async fn alert_sarah_connor(ctx: Context) -> Result<(), HandlerError> {
    let Some(text) = ctx.payload_str() else {
        return Err(HandlerError::permanent("the alert is not UTF-8 text"));
    };
    let severity = ctx.headers().get("severity").unwrap_or("unknown");
    if text.contains("unreachable") {
        return Err(HandlerError::new(format!(
            "Sarah Connor cannot be reached (attempt {})",
            ctx.attempt()
        )));
    }
    println!(
        "[{}] {text} (severity {severity}) -> alerting Sarah Connor!",
        ctx.subject()
    );
    Ok(())
}

/// The reactions, on any broker: the program runs them on `BROKER_URL`, the
/// tests on `switchboard::testing::TestBroker`.
pub fn reactions(broker: impl Broker + 'static) -> Worker {
    Worker::new(broker)
        .on("some_event", alert_sarah_connor)
        .route(
            Route::new("alerts.>", alert_sarah_connor)
                .concurrency(4)
                .attempts(3)
                .backoff(Duration::from_millis(200))
                .timeout(Duration::from_secs(5)),
        )
        .grace_period(Duration::from_secs(10))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker = switchboard::from_env().await?;
    let running = reactions(broker.clone()).start().await?;
    println!(
        "waiting for incoming messages on 'some_event' and 'alerts.>' via {} (Ctrl-C to stop)",
        switchboard::redact_url(&switchboard::url_from_env())
    );
    let summary = running
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("caught Ctrl-C, cleaning after ourselves...");
        })
        .await;
    println!("{summary}");
    broker.close().await?;
    Ok(())
}
