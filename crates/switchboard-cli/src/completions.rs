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

/// Arguments of `switchboard man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  switchboard man > switchboard.1                 # the main page
  switchboard man send > switchboard-send.1       # the page its SEE ALSO names
  switchboard man --dir /usr/local/share/man/man1 # every page, one file each")]
pub struct ManArgs {
    /// The subcommand whose page to print (`switchboard-send(1)` is `send`); the main page if absent.
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "dir")]
    pub(crate) subcommand: Option<String>,
    /// Write every page (the main one and one per subcommand) into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<std::path::PathBuf>,
}

/// Prints a man page (roff) on stdout, or writes them all into `--dir`.
///
/// The main page's SEE ALSO names a page per subcommand (`switchboard-send(1)`),
/// so each of those can be printed too, or all written at once.
pub(crate) fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let command = pages();
    if let Some(dir) = &args.dir {
        clap_mangen::generate_to(command, dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let page_of = match &args.subcommand {
        None => command,
        Some(name) => match command.find_subcommand(name) {
            Some(subcommand) => subcommand.clone(),
            None => {
                let known: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
                eprintln!(
                    "error: no man page for `{name}`: name a subcommand ({}), or none for the main page",
                    known.join(", ")
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(page_of)
        .render(&mut page)
        .context("cannot render the man page")?;
    write_stdout(&page)
}

/// The command as its man pages show it: built, so that each subcommand's
/// page is titled `switchboard-send`, and without clap's `help` subcommand,
/// which has no page of its own.
fn pages() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    crate::stdout::write_now(bytes)?;
    Ok(ExitCode::SUCCESS)
}
