//! The alert side of the seed article: publish one alert and exit.
//!
//! The broker comes from `BROKER_URL` (12-factor style), so the same program
//! runs on NATS, Redis, RabbitMQ or the in-memory broker:
//!
//! ```text
//! BROKER_URL=nats://127.0.0.1:4222 cargo run --example send_alert
//! BROKER_URL=redis://127.0.0.1:6379 cargo run --example send_alert -- alerts.robot "bad robot detected"
//! BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example send_alert -- some_event "Terminator just dropped in our space-time"
//! ```
//!
//! Arguments: `[SUBJECT] [MESSAGE]`, by default `some_event` and
//! `bad robot detected`. The alert carries a `severity: high` header. Run
//! `cargo run --example alert_sarah_connor` in another terminal to see it arrive.

use switchboard::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let subject = args.next().unwrap_or_else(|| "some_event".to_string());
    let text = args
        .next()
        .unwrap_or_else(|| "bad robot detected".to_string());

    let broker = switchboard::from_env().await?;
    let alert = Message::new(subject.as_str(), text.clone())?.with_header("severity", "high")?;
    broker.publish(alert).await?;
    // `publish` only hands the message to the client: flush before leaving.
    broker.flush().await?;
    broker.close().await?;
    println!(
        "published {text:?} on {subject} via {}",
        switchboard::redact_url(&switchboard::url_from_env())
    );
    Ok(())
}
