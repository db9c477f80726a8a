//! `switchboard send`.

use std::process::ExitCode;

/// Arguments of `switchboard send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {}

/// Runs `switchboard send`.
pub(crate) async fn run(_url: &str, _args: SendArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`send` is not built yet")
}
