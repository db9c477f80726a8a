//! `switchboard-echo`: the `switchboard` command with the echo adapter
//! registered, as a binary linking a third-party adapter would be built.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(error) = switchboard::register(switchboard_echo::DRIVER) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    switchboard_cli::main()
}
