//! `switchboard demo`.

use std::process::ExitCode;

/// Arguments of `switchboard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `switchboard demo`.
pub(crate) async fn run(_url: &str, _args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`demo` is not built yet")
}
