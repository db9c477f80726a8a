//! Commands run for a message (the worker's `exec` action, `reply --command`):
//! each started in a process group of its own, fed its input while its output
//! is read, and killed with everything it started when it is cancelled.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

/// The process groups of the commands running now. Each command is killed
/// with its group when it is cancelled (its [`Running`] dropped); a process
/// that quits at once (the worker's second Ctrl-C) runs no destructor, so it
/// kills them all through this list before exiting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Children {
    groups: Arc<Mutex<HashSet<u32>>>,
}

impl Children {
    fn groups(&self) -> MutexGuard<'_, HashSet<u32>> {
        match self.groups.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Kills the process group of every command still running (SIGKILL);
    /// returns how many there were.
    pub(crate) fn kill_all(&self) -> usize {
        let groups: Vec<u32> = self.groups().drain().collect();
        kill_groups(&groups);
        groups.len()
    }
}

/// `kill -KILL -- -PGID...`: each command and whatever it started.
fn kill_groups(groups: &[u32]) {
    if groups.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--"])
        .args(groups.iter().map(|pgid| format!("-{pgid}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the command's process group unless it was disarmed (the command
/// exited), and keeps it listed in [`Children`] meanwhile.
struct KillGroup {
    pgid: Option<u32>,
    children: Children,
}

impl KillGroup {
    fn arm(pgid: Option<u32>, children: &Children) -> Self {
        if let Some(pgid) = pgid {
            children.groups().insert(pgid);
        }
        KillGroup {
            pgid,
            children: children.clone(),
        }
    }

    /// The command exited by itself: nothing to kill.
    fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            self.children.groups().remove(&pgid);
        }
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // Not listed any more means `kill_all` has killed it already.
            if self.children.groups().remove(&pgid) {
                kill_groups(&[pgid]);
            }
        }
    }
}

/// A command started by [`spawn`]. Dropping it before [`Running::finish`]
/// has seen the command exit (a timeout, a signal, a cancelled attempt) kills
/// its whole process group: a shell's `sleep` goes with the shell.
pub(crate) struct Running {
    /// The command; take its stdout and stderr to read them, leave its stdin
    /// to [`Running::finish`].
    pub(crate) child: Child,
    guard: KillGroup,
}

/// Starts `command` in a process group of its own, listed in `children` until
/// it exits. Its own group lets switchboard kill whatever it started, and
/// keeps a terminal's Ctrl-C from reaching it: switchboard decides when it
/// is stopped.
pub(crate) fn spawn(command: &mut Command, children: &Children) -> io::Result<Running> {
    command.kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let child = command.spawn()?;
    #[cfg(unix)]
    let guard = KillGroup::arm(child.id(), children);
    #[cfg(not(unix))]
    let guard = KillGroup::arm(None, children);
    Ok(Running { child, guard })
}

impl Running {
    /// Writes `input` to the command's stdin and closes it, while `out` and
    /// `err` read its stdout and stderr, and waits for it to exit: all at once,
    /// because a command may print more than a pipe holds before it has read
    /// all its input (`cat` of a large message), and would block for ever on
    /// its output if its input were written first.
    pub(crate) async fn finish(
        mut self,
        input: Bytes,
        out: impl Future<Output = ()>,
        err: impl Future<Output = ()>,
    ) -> io::Result<ExitStatus> {
        let stdin = self.child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its stdin is fine: ignore a broken pipe.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let ((), (), (), status) = tokio::join!(feed, out, err, self.child.wait());
        let status = status?;
        // It exited by itself: nothing to kill (and once its group is empty,
        // the group's id may be given to another process).
        self.guard.disarm();
        Ok(status)
    }
}
