//! `switchboard bench`.

use std::process::ExitCode;

/// Arguments of `switchboard bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs `switchboard bench`.
pub(crate) async fn run(_brokers: Option<&str>, _args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench` is not built yet")
}
