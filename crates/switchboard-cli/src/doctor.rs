//! `switchboard doctor`: connect, then check live what the broker declares —
//! a one-screen health report of a deployment.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use switchboard::{AnyBroker, Bytes, Headers, Message, Pattern, QueueGroup, Subject, Subscription};

use crate::connection;
use crate::stdout::line_now;

/// How long each check waits for what it expects.
const PATIENCE: Duration = Duration::from_secs(5);

/// The largest payload the check publishes (a broker allowing 512 MiB is not
/// sent 512 MiB to find out).
const PAYLOAD_PROBE: usize = 1024 * 1024;

/// Arguments of `switchboard doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  switchboard doctor
  switchboard --broker rediss://:PASSWORD@redis.internal:6380?ca=/etc/ca.pem doctor

Each line is one check: ok, FAIL (the broker does not do what it declares) or
skip (not declared). The checks publish on subjects under `_switchboard.doctor.`
and remove what they subscribed. Exits 0 when every declared capability held,
1 otherwise (and when connecting fails).")]
pub struct DoctorArgs {}

/// One check's outcome.
enum Outcome {
    Ok(String),
    Fail(String),
    Skip(String),
}

/// Runs `switchboard doctor`.
pub(crate) async fn run(url: &str, _args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let broker = connection::connect(url).await?;
    let connect_time = started.elapsed();
    let capabilities = broker.capabilities();
    line_now(&format!(
        "broker     {} at {}",
        broker.kind(),
        connection::display_url(url)
    ))?;
    line_now(&format!("connected  in {}", millis(connect_time)))?;
    let declared: Vec<&str> = [
        ("queue groups", capabilities.queue_groups),
        ("headers", capabilities.headers),
        ("native wildcards", capabilities.native_wildcards),
        ("ack", capabilities.ack),
        ("redelivery", capabilities.redelivery),
        ("persistence", capabilities.persistence),
        ("order per publisher", capabilities.ordered_per_publisher),
        ("durable", capabilities.durable),
        ("durable storage", capabilities.durable_storage),
        ("request/reply", capabilities.request_reply),
    ]
    .into_iter()
    .filter_map(|(name, yes)| yes.then_some(name))
    .collect();
    line_now(&format!("declares   {}", declared.join(", ")))?;
    let prefix = format!(
        "_switchboard.doctor.p{}n{}",
        std::process::id(),
        started.elapsed().subsec_nanos()
    );
    let mut failed = 0;
    let checks: [(&str, Outcome); 6] = [
        ("round trip", round_trip(&broker, &prefix).await),
        (
            "headers",
            headers(&broker, &prefix, capabilities.headers).await,
        ),
        ("wildcards", wildcards(&broker, &prefix).await),
        (
            "queue groups",
            queue_groups(&broker, &prefix, capabilities.queue_groups).await,
        ),
        (
            "max payload",
            max_payload(&broker, &prefix, capabilities.max_payload).await,
        ),
        (
            "request/reply",
            request_reply(&broker, &prefix, capabilities.request_reply).await,
        ),
    ];
    for (name, outcome) in checks {
        match outcome {
            Outcome::Ok(detail) => line_now(&format!("ok     {name:<14} {detail}"))?,
            Outcome::Skip(detail) => line_now(&format!("skip   {name:<14} {detail}"))?,
            Outcome::Fail(detail) => {
                failed += 1;
                line_now(&format!("FAIL   {name:<14} {detail}"))?;
            }
        }
    }
    let status = broker.status();
    line_now(&format!(
        "link       {} ({} disconnect(s) while checking)",
        if status.connected {
            "connected"
        } else {
            "DOWN"
        },
        status.disconnects
    ))?;
    let _ = connection::close(&broker).await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn subject(prefix: &str, rest: &str) -> Result<Subject, String> {
    Subject::new(&format!("{prefix}.{rest}")).map_err(|e| e.to_string())
}

/// Subscribes to `pattern` (in `group` if given).
async fn subscribe(
    broker: &AnyBroker,
    pattern: &str,
    group: Option<&QueueGroup>,
) -> Result<Subscription, String> {
    let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
    match group {
        Some(group) => broker.subscribe_group(&pattern, group).await,
        None => broker.subscribe(&pattern).await,
    }
    .map_err(|e| format!("subscribing failed: {e}"))
}

/// Publishes and flushes `message`.
async fn publish(broker: &AnyBroker, message: Message) -> Result<(), String> {
    broker
        .publish(message)
        .await
        .map_err(|e| format!("publishing failed: {e}"))?;
    broker
        .flush()
        .await
        .map_err(|e| format!("flushing failed: {e}"))
}

/// The next message of `subscription` within [`PATIENCE`].
async fn next(subscription: &mut Subscription) -> Result<Message, String> {
    match tokio::time::timeout(PATIENCE, subscription.next()).await {
        Ok(Some(Ok(mut delivery))) => {
            let _ = delivery.ack().await;
            Ok(delivery.into_message())
        }
        Ok(Some(Err(error))) => Err(format!("the subscription reported: {error}")),
        Ok(None) => Err("the subscription ended".to_string()),
        Err(_) => Err(format!("nothing arrived within {PATIENCE:?}")),
    }
}

fn outcome(result: Result<String, String>) -> Outcome {
    result.map_or_else(Outcome::Fail, Outcome::Ok)
}

async fn round_trip(broker: &AnyBroker, prefix: &str) -> Outcome {
    outcome(
        async {
            let subject = subject(prefix, "ping")?;
            let mut subscription = subscribe(broker, subject.as_str(), None).await?;
            let sent = Instant::now();
            publish(
                broker,
                Message::from_parts(subject, Bytes::from("ping"), Headers::new()),
            )
            .await?;
            let got = next(&mut subscription).await?;
            if got.payload().as_ref() != b"ping" {
                return Err("the payload changed on the way".to_string());
            }
            Ok(format!("publish to receive in {}", millis(sent.elapsed())))
        }
        .await,
    )
}

async fn headers(broker: &AnyBroker, prefix: &str, declared: bool) -> Outcome {
    if !declared {
        return Outcome::Skip("not declared".to_string());
    }
    outcome(
        async {
            let subject = subject(prefix, "headers")?;
            let mut subscription = subscribe(broker, subject.as_str(), None).await?;
            let mut headers = Headers::new();
            headers
                .insert("x-doctor", "hello 1")
                .map_err(|e| e.to_string())?;
            publish(
                broker,
                Message::from_parts(subject, Bytes::new(), headers.clone()),
            )
            .await?;
            let got = next(&mut subscription).await?;
            if got.headers() != &headers {
                return Err(format!("sent {headers:?}, received {:?}", got.headers()));
            }
            Ok("a header round-trips unchanged".to_string())
        }
        .await,
    )
}

async fn wildcards(broker: &AnyBroker, prefix: &str) -> Outcome {
    outcome(
        async {
            let mut one = subscribe(broker, &format!("{prefix}.w.*"), None).await?;
            let mut rest = subscribe(broker, &format!("{prefix}.w.>"), None).await?;
            publish(
                broker,
                Message::from_parts(
                    subject(prefix, "w.a.b")?,
                    Bytes::from("deep"),
                    Headers::new(),
                ),
            )
            .await?;
            publish(
                broker,
                Message::from_parts(subject(prefix, "w.a")?, Bytes::from("one"), Headers::new()),
            )
            .await?;
            let first = next(&mut one).await?;
            if first.payload().as_ref() != b"one" {
                return Err("`*` matched more than one token".to_string());
            }
            let deep = next(&mut rest).await?;
            let shallow = next(&mut rest).await?;
            if deep.payload().as_ref() != b"deep" || shallow.payload().as_ref() != b"one" {
                return Err("`>` did not match both subjects in order".to_string());
            }
            Ok("`*` one token, `>` the rest".to_string())
        }
        .await,
    )
}

async fn queue_groups(broker: &AnyBroker, prefix: &str, declared: bool) -> Outcome {
    if !declared {
        return Outcome::Skip("not declared".to_string());
    }
    outcome(
        async {
            let group = QueueGroup::new("doctor").map_err(|e| e.to_string())?;
            let pattern = format!("{prefix}.group");
            let mut members = [
                subscribe(broker, &pattern, Some(&group)).await?,
                subscribe(broker, &pattern, Some(&group)).await?,
            ];
            let total = 20;
            for n in 0..total {
                broker
                    .publish(Message::from_parts(
                        subject(prefix, "group")?,
                        Bytes::from(n.to_string()),
                        Headers::new(),
                    ))
                    .await
                    .map_err(|e| format!("publishing failed: {e}"))?;
            }
            broker
                .flush()
                .await
                .map_err(|e| format!("flushing failed: {e}"))?;
            let mut received = Vec::new();
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while received.len() < total {
                let [first, second] = &mut members;
                let item = tokio::time::timeout_at(deadline, async {
                    tokio::select! {
                        item = first.next() => item,
                        item = second.next() => item,
                    }
                })
                .await;
                match item {
                    Ok(Some(Ok(mut delivery))) => {
                        let _ = delivery.ack().await;
                        received.push(delivery.into_message());
                    }
                    Ok(Some(Err(error))) => return Err(format!("a member reported: {error}")),
                    Ok(None) => return Err("a member's subscription ended".to_string()),
                    Err(_) => return Err(format!("{} of {total} arrived", received.len())),
                }
            }
            // A message given to both members would show as one more within a moment.
            let extra = tokio::time::timeout(Duration::from_millis(300), async {
                let [first, second] = &mut members;
                tokio::select! {
                    item = first.next() => item,
                    item = second.next() => item,
                }
            })
            .await;
            if let Ok(Some(Ok(_))) = extra {
                return Err("a message reached both members".to_string());
            }
            Ok(format!("{total} messages, each to one of 2 members"))
        }
        .await,
    )
}

async fn max_payload(broker: &AnyBroker, prefix: &str, declared: Option<usize>) -> Outcome {
    let size = declared.unwrap_or(PAYLOAD_PROBE).min(PAYLOAD_PROBE);
    outcome(
        async {
            let subject = subject(prefix, "payload")?;
            let mut subscription = subscribe(broker, subject.as_str(), None).await?;
            let payload = Bytes::from(vec![0x5a; size]);
            publish(
                broker,
                Message::from_parts(subject, payload.clone(), Headers::new()),
            )
            .await?;
            let got = next(&mut subscription).await?;
            if got.payload() != &payload {
                return Err(format!(
                    "{size} bytes sent, {} different bytes received",
                    got.payload().len()
                ));
            }
            let limit = declared.map_or("no limit declared".to_string(), |max| {
                format!("declared {max}")
            });
            Ok(format!("{size} bytes round-trip ({limit})"))
        }
        .await,
    )
}

async fn request_reply(broker: &AnyBroker, prefix: &str, declared: bool) -> Outcome {
    if !declared {
        return Outcome::Skip("not declared".to_string());
    }
    outcome(
        async {
            let subject = subject(prefix, "request")?;
            let mut subscription = subscribe(broker, subject.as_str(), None).await?;
            let answering = async {
                let item = tokio::time::timeout(PATIENCE, subscription.next()).await;
                if let Ok(Some(Ok(mut delivery))) = item {
                    let _ = delivery.reply("pong").await;
                    let _ = delivery.ack().await;
                }
            };
            let sent = Instant::now();
            let asking = broker.request(
                Message::from_parts(subject, Bytes::from("ping"), Headers::new()),
                PATIENCE,
            );
            let ((), reply) = tokio::join!(answering, asking);
            let reply = reply.map_err(|e| format!("the request failed: {e}"))?;
            if reply.payload().as_ref() != b"pong" {
                return Err("the reply's payload changed".to_string());
            }
            Ok(format!("answered in {}", millis(sent.elapsed())))
        }
        .await,
    )
}
