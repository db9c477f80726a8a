//! What is measured: the brokers named on the command line, and which code
//! talks to each (switchboard, or the broker's own client).

/// The brokers measured when `--broker` is not given.
const DEFAULT_BROKERS: &str = "nats,redis,amqp,mqtt,memory";

/// Which code talks to the broker in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Implementation {
    /// Through `switchboard::connect` and `dyn Broker`.
    Switchboard,
    /// Directly with async-nats, redis-rs, lapin or rumqttc.
    Raw,
    /// The raw client again, in switchboard's place (`--control`): an A/A
    /// run whose ratio is the machine's noise, not switchboard's cost.
    Control,
}

impl Implementation {
    /// The name in results (`implementation` in the JSON, `impl` in the table).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Implementation::Switchboard => "switchboard",
            Implementation::Raw => "raw",
            Implementation::Control => "control",
        }
    }
}

/// One broker to measure.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The kind (`nats`, `redis`, `amqp`, `mqtt`, `memory`), or the scheme if unknown.
    pub(crate) kind: String,
    /// The URL connected to.
    pub(crate) url: String,
}

impl Target {
    /// The brokers of a comma-separated list of kinds or URLs (the default list
    /// when `None`), in order; empty items are skipped.
    pub(crate) fn list(brokers: Option<&str>) -> Vec<Target> {
        brokers
            .unwrap_or(DEFAULT_BROKERS)
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Target::parse)
            .collect()
    }

    /// One kind (`memory` gets a hub of its own) or URL.
    fn parse(item: &str) -> Target {
        let item = item.trim();
        let url = if item.eq_ignore_ascii_case("memory") {
            // A private hub, so nothing else in the process shares it.
            format!("memory://bench-{}", std::process::id())
        } else {
            switchboard::resolve_url(item).to_string()
        };
        let scheme = url
            .split_once("://")
            .map_or("", |(s, _)| s)
            .to_ascii_lowercase();
        let kind = switchboard::drivers()
            .into_iter()
            .find(|d| d.takes_scheme(&scheme))
            .map_or(scheme, |d| d.kind().to_string());
        Target { kind, url }
    }

    /// Whether a raw-client baseline exists for this kind.
    pub(crate) fn has_raw_client(&self) -> bool {
        matches!(self.kind.as_str(), "nats" | "redis" | "amqp" | "mqtt")
    }

    /// Messages per throughput run when `--msgs` is not given: RabbitMQ with
    /// confirms is ~20x slower than the others.
    pub(crate) fn default_msgs(&self) -> u64 {
        match self.kind.as_str() {
            "amqp" => 30_000,
            _ => 200_000,
        }
    }
}
