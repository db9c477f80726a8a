//! The typed version of the seed's reaction worker: alerts are JSON
//! `Alert`s, decoded (and checked against the schema of their type) before
//! the reaction sees them; a reaction pages Sarah Connor with a typed `Page`
//! and answers a request with a typed reply. A payload that is not an
//! `Alert` is dead-lettered at once to `dlq.<subject>`, with why in its
//! `switchboard-error` header — never retried, never a panic.
//!
//! ```text
//! BROKER_URL=nats://127.0.0.1:4222 cargo run --example typed_alert
//! # in another terminal:
//! switchboard --broker nats send --on alerts.robot '{"robot":"T-800","severity":"high"}'
//! switchboard --broker nats send --on alerts.robot 'bad robot detected'   # dead-lettered
//! # its contract, as an AsyncAPI 3.0 document (JSON):
//! cargo run --example typed_alert -- --asyncapi
//! ```
//!
//! `tests/typed_alert.rs` unit-tests these reactions with
//! `switchboard::testing`, in milliseconds and without a server.

use std::io::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchboard::worker::asyncapi::AsyncApi;
use switchboard::worker::{HandlerError, Route, Worker};
use switchboard::{Broker, Message};

/// What a robot sighting says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// The model, e.g. `T-800`.
    #[schemars(length(min = 1))]
    pub robot: String,
    /// How bad it is.
    pub severity: Severity,
}

/// How bad a sighting is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Keep an eye on it.
    Low,
    /// Run.
    High,
}

/// What Sarah Connor's pager receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Who is paged.
    pub to: String,
    /// What about.
    pub text: String,
}

/// Where pages go.
pub const PAGER: &str = "pager.sarah_connor";

/// The reactions, on any broker: the program runs them on `BROKER_URL`, the
/// tests on `switchboard::testing::TestBroker`.
pub fn reactions(broker: impl Broker + 'static) -> Worker {
    Worker::new(broker)
        .route(
            Route::json::<Alert>("alerts.>", |alert, ctx| async move {
                let page = Page {
                    to: "Sarah Connor".into(),
                    text: format!("{} sighted on {}", alert.robot, ctx.subject()),
                };
                let severity = format!("{:?}", alert.severity).to_lowercase();
                ctx.publish(Message::json(PAGER, &page)?.with_header("severity", severity)?)
                    .await?;
                Ok::<_, HandlerError>(())
            })
            .schema_of::<Alert>()
            .publishes_to(PAGER)
            .describe("Pages Sarah Connor about each robot sighting."),
        )
        // `switchboard`'s request/reply: "is it safe?" gets a typed answer.
        .on_json::<Alert>("ask.safe", |alert, _ctx| async move {
            Ok::<_, HandlerError>(Some(alert.severity == Severity::Low))
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--asyncapi") {
        let document = AsyncApi::new("Sarah Connor's pager", "1.0.0")
            .server_url(&switchboard::url_from_env())?
            .document(reactions(switchboard::MemoryBroker::new()).routes());
        let text = serde_json::to_string_pretty(&document)?;
        // `| head` closing stdout early is fine: no panic, no error.
        let _ = writeln!(std::io::stdout(), "{text}");
        return Ok(());
    }
    let broker = switchboard::from_env().await?;
    let running = reactions(broker.clone()).start().await?;
    println!(
        "waiting for alerts on 'alerts.>' via {} (Ctrl-C to stop)",
        switchboard::redact_url(&switchboard::url_from_env())
    );
    let summary = running
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    println!("{summary}");
    broker.close().await?;
    Ok(())
}
