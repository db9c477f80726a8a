//! Commands run for a message (the worker's `exec` action, `reply --command`):
//! each started in a process group of its own, fed its input while its output
//! is read, and killed with everything it started when it is cancelled — or
//! when switchboard itself is killed (see [`Guardian`]).

use std::collections::HashSet;
use std::future::Future;
use std::io::{self, Write as _};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

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
    /// Started with the first command, so that a worker without `exec`
    /// routes starts no process of its own.
    guardian: Arc<OnceLock<Option<Guardian>>>,
}

impl Children {
    fn groups(&self) -> MutexGuard<'_, HashSet<u32>> {
        match self.groups.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn guardian(&self) -> Option<&Guardian> {
        self.guardian.get_or_init(Guardian::start).as_ref()
    }

    /// Lists `pgid`, with the guardian too, under one lock so that the
    /// guardian hears of each group in the order it came and went.
    fn insert(&self, pgid: u32) {
        let mut groups = self.groups();
        groups.insert(pgid);
        if let Some(guardian) = self.guardian() {
            guardian.tell('+', pgid);
        }
    }

    /// Unlists `pgid`; false if it was not listed (`kill_all` took it).
    fn remove(&self, pgid: u32) -> bool {
        let mut groups = self.groups();
        let listed = groups.remove(&pgid);
        if listed {
            if let Some(guardian) = self.guardian.get().and_then(Option::as_ref) {
                guardian.tell('-', pgid);
            }
        }
        listed
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
            children.insert(pgid);
        }
        KillGroup {
            pgid,
            children: children.clone(),
        }
    }

    /// The command exited by itself: nothing to kill.
    fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            self.children.remove(pgid);
        }
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // Not listed any more means `kill_all` has killed it already.
            if self.children.remove(pgid) {
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
    // Before the command, so that it is never running unguarded.
    #[cfg(unix)]
    children.guardian();
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

/// How long the output of a command that has exited is still read: what it
/// wrote before exiting is in the pipe already, so this only bounds the wait
/// for a process it left running (`job &`) that holds the same pipe.
const OUTPUT_LINGER: Duration = Duration::from_millis(250);

impl Running {
    /// Writes `input` to the command's stdin and closes it, while `out` and
    /// `err` read its stdout and stderr, and waits for it to exit: all at once,
    /// because a command may print more than a pipe holds before it has read
    /// all its input (`cat` of a large message), and would block for ever on
    /// its output if its input were written first.
    ///
    /// The command's exit decides, not the end of its output: a process it
    /// left running in the background that still holds its stdout, stderr or
    /// stdin (`sleep 60 & echo ok`) would otherwise keep the attempt waiting
    /// until its timeout, and a command that exited 0 be called timed out.
    /// Such a process is left running, as a shell would leave it; what it
    /// writes after [`OUTPUT_LINGER`] is not read.
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
        let pipes = async {
            tokio::join!(feed, out, err);
        };
        tokio::pin!(pipes);
        let exited = self.child.wait();
        tokio::pin!(exited);
        let mut pipes_done = false;
        let status = loop {
            tokio::select! {
                status = &mut exited => break status?,
                () = &mut pipes, if !pipes_done => pipes_done = true,
            }
        };
        // It exited by itself: nothing to kill (and once its group is empty,
        // the group's id may be given to another process).
        self.guard.disarm();
        if !pipes_done
            && tokio::time::timeout(OUTPUT_LINGER, &mut pipes)
                .await
                .is_err()
        {
            tracing::warn!(
                "a command exited ({status}) but left a process running that holds its \
                 stdin, stdout or stderr: its output from now on is not read (redirect a \
                 background job's, e.g. `job >/dev/null 2>&1 &`)"
            );
        }
        Ok(status)
    }
}

/// A `sh` that outlives switchboard to kill the commands it left running.
///
/// A switchboard killed with SIGKILL (the OOM killer, `kill -9`, a
/// container runtime out of patience) runs no destructor, and its commands
/// would run on with no one to stop them. So the first command starts this
/// guardian: a shell in a process group of its own, told on its stdin each
/// group that starts (`+ PGID`) and ends (`- PGID`). Its stdin closes when
/// switchboard exits, however it exits — the kernel closes the pipe — and
/// the guardian then kills every group still listed, and exits.
///
/// A shell and not a thread or a prctl: nothing in a killed process runs,
/// and a parent-death signal needs code between fork and exec, which
/// `unsafe_code = "forbid"` rules out (and would reach the command only, not
/// what it started). A command started in the instant before switchboard was
/// killed, before the guardian heard of it, is not covered.
#[derive(Debug)]
struct Guardian {
    stdin: Mutex<std::process::ChildStdin>,
}

/// The guardian's script: a list of groups as a space-separated string, and
/// signals that would stop it early ignored (its own group spares it a
/// terminal's Ctrl-C; a `kill` of switchboard's group spares it too).
const GUARDIAN_SCRIPT: &str = r#"trap '' HUP INT TERM
groups=' '
while read -r op id; do
  case "$op" in
    +) groups="$groups$id " ;;
    -) case "$groups" in *" $id "*) groups="${groups%%" $id "*} ${groups#*" $id "}" ;; esac ;;
  esac
done
for id in $groups; do kill -s KILL -- "-$id" 2>/dev/null; done
"#;

impl Guardian {
    /// Starts the guardian, or says on stderr why there is none (commands
    /// then run as before: killed on every exit but SIGKILL).
    fn start() -> Option<Guardian> {
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", GUARDIAN_SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        match command.spawn() {
            // Never waited for: it exits after switchboard does, or when the
            // last `Children` is dropped, moments before switchboard exits.
            Ok(mut child) => child.stdin.take().map(|stdin| Guardian {
                stdin: Mutex::new(stdin),
            }),
            Err(error) => {
                tracing::warn!(
                    "cannot start `sh` to watch the commands run for messages ({error}): \
                     were switchboard killed with SIGKILL, they would run on"
                );
                None
            }
        }
    }

    fn tell(&self, op: char, pgid: u32) {
        let mut stdin = match self.stdin.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A guardian killed by hand is no reason to fail a message: its
        // commands are still killed on every exit but SIGKILL.
        let _ = writeln!(stdin, "{op} {pgid}");
    }
}
