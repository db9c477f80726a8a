//! `switchboard listen`.

use std::process::ExitCode;

/// Arguments of `switchboard listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {}

/// Runs `switchboard listen`.
pub(crate) async fn run(_url: &str, _args: ListenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`listen` is not built yet")
}
