//! `switchboard worker`.

use std::process::ExitCode;

/// Arguments of `switchboard worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {}

/// Runs `switchboard worker`.
pub(crate) async fn run(_url: &str, _args: WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`worker` is not built yet")
}
