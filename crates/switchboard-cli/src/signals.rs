//! Ctrl-C (SIGINT) and SIGTERM, the same way for every command: `send`,
//! `listen` and `worker` install [`Signals`] before they start working, wait
//! for it next to their work (so a signal wins over a blocked broker or a full
//! stdout pipe), and exit with the shell's status for the signal.

use std::fmt;
use std::process::ExitCode;

/// A signal that asks a command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT, what a terminal's Ctrl-C sends.
    Interrupt,
    /// SIGTERM, what supervisors (systemd, Docker, Kubernetes) send.
    Terminate,
}

impl Signal {
    /// The exit status of a command this signal interrupted: 128 + the signal
    /// number, as shells report it (130 for SIGINT, 143 for SIGTERM).
    pub(crate) fn exit_status(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// [`Signal::exit_status`] as an exit code.
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// The stop signals, caught from [`Signals::install`] on: until then the
/// default action (ending the process) applies.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching SIGINT and SIGTERM now (rather than when first awaited),
    /// so a signal that comes before [`Signals::recv`] is not lost.
    pub(crate) fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use anyhow::Context as _;
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal. Cancel-safe: use it in `select!`.
    pub(crate) async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Signal::Interrupt
        }
    }
}
