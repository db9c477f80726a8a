//! `switchboard completions SHELL` and `switchboard man`: shell completions
//! (clap_complete) and a man page (clap_mangen), generated from the same
//! definitions clap parses, so they never drift from the real options.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::Cli;

/// Arguments of `switchboard completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  switchboard completions bash > ~/.local/share/bash-completion/completions/switchboard
  switchboard completions zsh > \"${fpath[1]}/_switchboard\"
  switchboard completions fish > ~/.config/fish/completions/switchboard.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "switchboard", &mut script);
    write_stdout(&script)
}

/// Prints the man page (roff) on stdout: `switchboard man > switchboard.1`.
pub(crate) fn man() -> anyhow::Result<ExitCode> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    crate::stdout::write_now(bytes)?;
    Ok(ExitCode::SUCCESS)
}
