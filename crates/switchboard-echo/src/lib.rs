//! An adapter written the way a third party would write one, outside
//! switchboard's crates: the in-memory broker under the scheme `echo://`.
//!
//! It shows the whole path an adapter takes to `switchboard::connect`:
//!
//! 1. implement [`Publisher`], [`Subscriber`] and [`Broker`] (here by handing
//!    every call to a [`MemoryBroker`]), with its own [`Broker::kind`];
//! 2. expose a [`DRIVER`]: the kind, the schemes, the URL the bare kind
//!    stands for, and a function that connects;
//! 3. the program registers it once, `switchboard::register(switchboard_echo::DRIVER)`,
//!    and from then on `switchboard::connect("echo://…")` and, in a binary
//!    that calls `switchboard_cli::main()` afterwards (this crate's
//!    `switchboard-echo`), `--broker echo://…` reach it;
//! 4. its `tests/conformance.rs` runs `switchboard_conformance::suite!`
//!    through `switchboard::connect`, as every built-in adapter does.
//!
//! `echo://NAME` is `memory://NAME` (handles with the same name share a hub;
//! `capacity=N` as for memory), so like the in-memory broker it connects the
//! publishers and subscribers of one process only.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{
    async_trait, Broker, Capabilities, ConnectionStatus, Driver, Durable, Error, MemoryBroker,
    Message, Pattern, Publisher, QueueGroup, Result, Subscriber, Subscription,
};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "echo";

/// The URL scheme: `echo://[name][?capacity=N]`.
pub const SCHEMES: &[&str] = &["echo"];

/// The URL the bare kind `echo` stands for.
pub const DEFAULT_URL: &str = "echo://";

/// This adapter's entry for `switchboard::register`.
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url)?) as Arc<dyn Broker>) })
})
.with_locate(locate);

/// Where an echo URL leads: its hub (what `switchboard bridge` compares to
/// refuse a hub bridged to itself).
fn locate(url: &str) -> Option<switchboard_core::Location> {
    let rest = url.split_once("://")?.1;
    let hub = rest.split(['?', '/', '#']).next().unwrap_or_default();
    Some(switchboard_core::Location::place(format!("echo://{hub}")))
}

/// Connects to `echo://[name][?capacity=N]`: the in-memory hub `name`.
pub fn connect(url: &str) -> Result<EchoBroker> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(KIND) => rest,
        _ => {
            return Err(Error::invalid_url(
                url,
                "an echo URL starts with echo://, e.g. echo://hub",
            ))
        }
    };
    let memory = MemoryBroker::connect(&format!("memory://{rest}"))
        .map_err(|error| Error::invalid_url(url, error))?;
    Ok(EchoBroker { memory })
}

/// A handle on an in-memory hub that calls itself `echo`.
#[derive(Debug, Clone)]
pub struct EchoBroker {
    memory: MemoryBroker,
}

#[async_trait]
impl Publisher for EchoBroker {
    async fn publish(&self, message: Message) -> Result<()> {
        self.memory.publish(message).await
    }

    async fn flush(&self) -> Result<()> {
        self.memory.flush().await
    }
}

#[async_trait]
impl Subscriber for EchoBroker {
    async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription> {
        self.memory.subscribe(pattern).await
    }

    async fn subscribe_group(&self, pattern: &Pattern, group: &QueueGroup) -> Result<Subscription> {
        self.memory.subscribe_group(pattern, group).await
    }

    async fn subscribe_durable(
        &self,
        pattern: &Pattern,
        durable: &Durable,
    ) -> Result<Subscription> {
        self.memory.subscribe_durable(pattern, durable).await
    }

    async fn remove_durable(&self, pattern: &Pattern, durable: &Durable) -> Result<()> {
        self.memory.remove_durable(pattern, durable).await
    }
}

#[async_trait]
impl Broker for EchoBroker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.memory.capabilities()
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.memory.request(message, timeout).await
    }

    fn status(&self) -> ConnectionStatus {
        self.memory.status()
    }

    async fn close(&self) -> Result<()> {
        self.memory.close().await
    }
}
