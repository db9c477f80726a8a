//! The `switchboard` command line: `send`, `listen`, `request`, `reply`,
//! `bridge`, `worker`, `bench` and `demo`
//! on any broker, chosen by `--broker` or `BROKER_URL`.
//!
//! The binary in `src/main.rs` only calls [`main`]; each subcommand is a module
//! with its arguments and a `run` function, except `bench`, whose arguments and
//! `run` are the `switchboard-bench` crate's (it brings the raw broker clients
//! and the plotting the other commands do not need).
//!
//! `--broker` takes a URL whose scheme picks the adapter, or a bare kind
//! standing for its default URL, from the drivers the `switchboard` facade
//! knows: the built-in adapters and any registered with
//! [`switchboard::register`]. A binary that links a third-party adapter
//! registers it, then runs this crate's [`main`]; `--broker mybroker://…`
//! (and `--broker mybroker`) then work in every command:
//!
//! ```ignore
//! // src/main.rs of a `switchboard` command that knows one more broker
//! fn main() -> std::process::ExitCode {
//!     if let Err(error) = switchboard::register(my_adapter::DRIVER) {
//!         eprintln!("error: {error}");
//!         return std::process::ExitCode::FAILURE;
//!     }
//!     switchboard_cli::main()
//! }
//! ```
//!
//! The workspace's `switchboard-echo` crate is such a binary, tested with
//! `demo` and `send` through its adapter.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bridge;
mod child;
mod completions;
mod connection;
mod demo;
mod doctor;
mod duration_arg;
mod format;
mod listen;
mod logging;
mod membership;
mod otel;
mod remove_durable;
mod reply;
mod request;
mod send;
mod signals;
mod stdout;
mod worker;

/// Write event-driven programs once, run them on any broker.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Cli {
    /// Broker kind (nats, redis, amqp, mqtt, memory, or a registered adapter's) or URL
    /// (nats://, tls://, redis://, rediss://, amqp://, amqps://, mqtt://, mqtts://, memory://, …).
    /// Defaults to nats://127.0.0.1:4222, or memory:// for `demo`.
    // The env value is not shown in `--help`: it holds the password.
    #[arg(
        long,
        global = true,
        env = "BROKER_URL",
        hide_env_values = true,
        value_name = "KIND|URL"
    )]
    pub broker: Option<String>,

    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    /// Client libraries' traces that carry credentials are never shown.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a message (or one per line of stdin) on a subject.
    Send(send::SendArgs),
    /// Print messages whose subject matches a pattern.
    Listen(listen::ListenArgs),
    /// Send a request and print the reply.
    Request(request::RequestArgs),
    /// Answer requests on a pattern (with a text, the request itself, or a command's output).
    Reply(reply::ReplyArgs),
    /// Forward everything matching a pattern from one broker to another.
    Bridge(bridge::BridgeArgs),
    /// Run reactions from a config file: exec a command, forward, or log, with retries and dead letters.
    Worker(worker::WorkerArgs),
    /// Delete a durable consumer (made by `listen --durable` or a worker route) and what the broker keeps for it.
    RemoveDurable(remove_durable::RemoveDurableArgs),
    /// Measure throughput and latency across brokers, against raw-client baselines.
    Bench(switchboard_bench::BenchArgs),
    /// Run the alert/reaction scenario in one process (in-memory broker by default).
    Demo(demo::DemoArgs),
    /// Check live what the broker declares: round trip, headers, wildcards, groups, payload, requests.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print a man page (roff): `switchboard man > switchboard.1`, `switchboard man send`, or every page with `--dir`.
    Man(completions::ManArgs),
}

impl Cli {
    /// Parses the command line; a `BROKER_URL` that is set but empty counts
    /// as unset (as 12-factor setups write it), where it was an error about
    /// a URL ` ` with no word of where it came from. `--broker ''` stays an
    /// error.
    fn parse_treating_empty_env_as_unset() -> Cli {
        let matches = <Cli as clap::CommandFactory>::command().get_matches();
        let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        if cli
            .broker
            .as_deref()
            .is_some_and(|url| url.trim().is_empty())
            && matches.value_source("broker") == Some(clap::parser::ValueSource::EnvVariable)
        {
            cli.broker = None;
        }
        cli
    }

    /// The broker URL for commands that default to the local NATS server.
    fn broker_or_default(&self) -> String {
        self.broker
            .clone()
            .unwrap_or_else(|| switchboard::DEFAULT_URL.to_string())
    }
}

/// Parses the command line, runs the command and turns its outcome into an exit
/// code: errors are printed as one line on stderr.
pub fn main() -> ExitCode {
    // One crypto provider for every TLS client in the process, including the
    // raw clients `bench` drives (async-nats, redis-rs, lapin), which ask
    // rustls for the process default.
    switchboard_tls::install_default_provider();
    let cli = Cli::parse_treating_empty_env_as_unset();
    logging::init(cli.verbose);
    // Before the runtime: the exporter's HTTP client and its batch thread
    // are made outside any async context.
    let telemetry = match otel::init() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Whatever still runs is not waited for: a blocking read of stdin (tokio
    // cannot cancel it) or a client's reconnect loop would keep the process
    // alive after the command has finished and said so.
    runtime.shutdown_background();
    // The spans of the last messages are still buffered.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes on one line, as `{:#}` shows them, less a cause
/// whose text the line already ends with: a library error that puts its
/// source in its own message as well (as `std` advises against, but a
/// `Display`-only reader needs) is not said twice.
fn report(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.broker_or_default();
    match cli.command {
        Command::Send(args) => send::run(&url, args).await,
        Command::Listen(args) => listen::run(&url, args).await,
        Command::Request(args) => request::run(&url, args).await,
        Command::Reply(args) => reply::run(&url, args).await,
        Command::Worker(args) => worker::run(&url, args).await,
        Command::Bridge(args) => bridge::run(args).await,
        Command::Bench(args) => {
            switchboard_bench::run(cli.broker.as_deref(), args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => doctor::run(&url, args).await,
        Command::RemoveDurable(args) => remove_durable::run(&url, args).await,
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => completions::man(&args),
        Command::Demo(args) => demo::run(cli.broker.as_deref().unwrap_or("memory://"), args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error = switchboard::worker::Error::Metrics {
            addr: ([127, 0, 0, 1], 9090).into(),
            source: io,
        };
        let error = anyhow::Error::new(error).context("the worker stopped");
        assert_eq!(
            report(&error),
            "the worker stopped: cannot serve metrics on 127.0.0.1:9090: address in use"
        );
        let chained = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&chained), "outer: inner");
    }
}
