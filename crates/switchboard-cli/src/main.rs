//! The `switchboard` command. Everything lives in the `switchboard_cli` library;
//! this file only runs it.

fn main() -> std::process::ExitCode {
    switchboard_cli::main()
}
