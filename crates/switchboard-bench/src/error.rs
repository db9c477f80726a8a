//! What can go wrong: an [`Error`] ends [`run`](crate::run) with one line; a
//! [`RunError`] ends one run only, whose row then says why (its `note`) while
//! the other runs go on.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Why `switchboard bench` stopped, or — after the results were printed and
/// written — judged its own outcome a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload size cannot hold the header every bench message carries.
    #[error(
        "--size {size} is too small: every message carries a {header}-byte header (sequence number and send time)"
    )]
    SizeTooSmall {
        /// The size given.
        size: usize,
        /// The header's length: the smallest size.
        header: usize,
    },
    /// A count or a duration given as 0 (`--rate`, `--msgs`, `--time`,
    /// `--duration`, `--repeat`, `--subscribers`, `--concurrency`,
    /// `--timeout`): a run of nothing measures nothing, and taking it for 1
    /// would report what was not asked for.
    #[error("{option} must be above 0")]
    Zero {
        /// The option given as 0.
        option: &'static str,
    },
    /// The broker list names no broker.
    #[error("--broker names no broker; give e.g. --broker nats,redis,amqp,mqtt,memory")]
    NoBroker,
    /// The results could not be encoded as JSON.
    #[error("cannot encode the results as JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The results table could not be written to standard output.
    #[error("cannot write the results to stdout")]
    Stdout(#[source] std::io::Error),
    /// The SVG plot could not be drawn or written.
    #[error("cannot draw {}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What the plotting library or the file system said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No run measured anything: every broker failed or did not answer.
    #[error("no run succeeded")]
    NothingMeasured,

    /// `--control` on a broker without a raw client to run on both sides.
    #[error("--control runs the raw client on both sides, and {broker} has none; measure nats, redis, amqp or mqtt")]
    NoControl {
        /// The broker named.
        broker: String,
    },

    /// `--strict`, and a run failed, a broker did not answer, or a message was lost.
    #[error("--strict: some runs failed, a broker did not answer, or messages were lost")]
    Strict,
}

/// Why one run, one broker's probe or one subscription's message failed.
///
/// Rendered into the run's row as its `note` ([`RunError::note`]), so each
/// message names the client and, for connections, the URL (password redacted).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// switchboard reported it.
    #[error(transparent)]
    Switchboard(#[from] switchboard::Error),
    /// Subscribing through switchboard failed.
    #[error("subscribing to {pattern}")]
    Subscribe {
        pattern: String,
        #[source]
        source: switchboard::Error,
    },
    /// The `worker` mode's worker did not start.
    #[error("starting the worker")]
    WorkerStart(#[source] switchboard::worker::Error),
    /// The workload needs queue groups and the broker has none: an `unsupported` row.
    #[error("no queue groups on this broker")]
    NoQueueGroups,
    /// A message arrived that the bench did not send (too short for its header).
    #[error("a {len}-byte message is shorter than the bench header ({header} bytes)")]
    NotBench { len: usize, header: usize },
    /// `--raw` asked of a broker kind without a raw client.
    #[error("no raw client for {0}")]
    NoRawClient(String),
    /// The raw async-nats client could not connect.
    #[error("raw async-nats cannot connect to {url}")]
    NatsConnect {
        /// Password redacted.
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// async-nats failed to publish.
    #[error(transparent)]
    NatsPublish(#[from] async_nats::PublishError),
    /// async-nats failed to subscribe.
    #[error(transparent)]
    NatsSubscribe(#[from] async_nats::SubscribeError),
    /// async-nats failed to write its buffer.
    #[error(transparent)]
    NatsFlush(#[from] async_nats::client::FlushError),
    /// A JetStream operation of the raw durable baseline failed (creating or
    /// deleting the stream or consumer, publishing, awaiting a PubAck, pulling, acking).
    #[error("raw async-nats JetStream: {what} on {subject}")]
    JetStream {
        what: &'static str,
        subject: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This raw client has no durable workload (MQTT).
    #[error("no durable workload for this raw client")]
    NoDurable,
    /// `--durable` was given with a mode that has no durable workload.
    #[error("--durable runs only the pub and pubsub modes")]
    DurableMode,
    /// The raw NATS flush's echo never came back: the connection closed.
    #[error("the NATS connection closed during flush")]
    NatsClosed,
    /// The raw NATS flush's echo did not come back in time.
    #[error("the NATS server did not answer within {0:?}")]
    NatsFlushTimeout(Duration),
    /// redis-rs refused the URL.
    #[error("raw redis URL {url}")]
    RedisUrl {
        /// Password redacted.
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The raw redis-rs client could not connect.
    #[error("raw redis-rs cannot connect to {url}")]
    RedisConnect {
        /// Password redacted.
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// A redis-rs command failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The raw lapin client could not connect.
    #[error("raw lapin cannot connect to {url}")]
    AmqpConnect {
        /// Password redacted.
        url: String,
        #[source]
        source: lapin::Error,
    },
    /// A lapin operation failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// RabbitMQ refused a published message.
    #[error("RabbitMQ nacked a message")]
    AmqpNack,
    /// The raw rumqttc client could not connect.
    #[error("raw rumqttc cannot connect to {url}: {reason}")]
    MqttConnect {
        /// Password redacted.
        url: String,
        reason: String,
    },
    /// rumqttc did not take a request (its event loop stopped); rumqttc's
    /// error in words (it holds the whole request, too large to carry).
    #[error("rumqttc did not take the request: {0}")]
    Mqtt(String),
    /// The raw rumqttc connection closed while waiting for an acknowledgement.
    #[error("the MQTT connection closed while waiting for an acknowledgement")]
    MqttClosed,
    /// The raw rumqttc client's PUBACK or SUBACK did not come in time.
    #[error("the MQTT server did not acknowledge within {0:?}")]
    MqttAckTimeout(Duration),
    /// The publisher did not finish within `--timeout`.
    #[error("publishing did not finish within {0:?}")]
    PublishTimeout(Duration),
    /// The latency run's pacing thread could not be started.
    #[error("cannot start the pacing thread: {0}")]
    PacerStart(std::io::Error),
    /// The latency run's pacing thread ended without a result.
    #[error("the pacing thread stopped")]
    PacerStopped,
    /// A subscriber task panicked or was cancelled.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// A broker did not answer the probe.
    #[error("no answer within {0:?}")]
    ProbeTimeout(Duration),
    /// `redis-benchmark` could not be started.
    #[error("cannot run redis-benchmark (is it installed?): {0}")]
    RedisBenchmarkSpawn(std::io::Error),
    /// `redis-benchmark` failed.
    #[error("exited with {status}: {stderr}")]
    RedisBenchmarkExit {
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// `redis-benchmark` printed something other than its CSV.
    #[error("cannot read its output: {0}")]
    RedisBenchmarkOutput(String),
    /// The server wants the password, which `redis-benchmark` was given only
    /// in `REDISCLI_AUTH` (on its command line `ps` would show it) and did not read.
    #[error("the server refused it without a password ({0}): it gets the URL's password in REDISCLI_AUTH, never with -a where `ps` would show it, and this redis-benchmark does not read REDISCLI_AUTH")]
    RedisBenchmarkAuth(String),
}

impl From<rumqttc::v5::ClientError> for RunError {
    fn from(error: rumqttc::v5::ClientError) -> Self {
        RunError::Mqtt(error.to_string())
    }
}

impl RunError {
    /// The message and every cause below it, `: `-separated: the row's note.
    pub(crate) fn note(&self) -> String {
        let mut note = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            let _ = write!(note, ": {error}");
            cause = error.source();
        }
        note
    }

    /// The row status of a run that failed with this error.
    pub(crate) fn status(&self) -> &'static str {
        match self {
            RunError::NoQueueGroups | RunError::DurableMode | RunError::NoDurable => "unsupported",
            _ => "error",
        }
    }
}
