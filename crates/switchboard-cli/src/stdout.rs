//! Standard output written by a thread of its own.
//!
//! A write to a pipe whose reader stopped reading blocks until the reader
//! reads again, possibly forever. Written from the async runtime, that would
//! stall the thread that also has to notice Ctrl-C or SIGTERM; written here,
//! only this thread waits, the command can still stop, and it can tell how
//! many lines did get out. Lines are flushed as soon as they are written (a
//! reader sees each at once); lines queued while the writer is busy go out
//! together in one write. Commands that print a result once and end write
//! it with [`write_now`] instead.
//!
//! A write is what tells a writer that its reader went away, and a command
//! waiting for messages may have nothing to write for a long time: `listen |
//! head -1` would wait for a second message only to learn that `head` had
//! ended. So for `listen`, when standard output is a pipe, it is also
//! watched for the error condition the kernel raises on a pipe without
//! readers ([`Stdout::watching_reader`]).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

/// Lines queued for the writer thread before `print` waits for room.
const QUEUE: usize = 256;

/// Most bytes the writer thread gathers into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// A handle on the stdout writer thread; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct Stdout {
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    /// Standard output when it is a pipe, watched for its reader leaving.
    pipe: Option<Arc<Pipe>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Lines written and flushed so far.
    printed: AtomicU64,
    /// Why writing stopped, once it did (the thread has ended then).
    failure: OnceLock<(std::io::ErrorKind, String)>,
}

impl Shared {
    fn failure(&self) -> std::io::Error {
        match self.failure.get() {
            Some((kind, text)) => std::io::Error::new(*kind, text.clone()),
            None => std::io::Error::other("the stdout writer stopped"),
        }
    }
}

#[derive(Debug)]
struct Job {
    /// A line, without its line break; `None` only marks a point in the queue.
    line: Option<String>,
    /// Told once everything up to this job was written and flushed.
    written: Option<oneshot::Sender<()>>,
}

impl Stdout {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_lines(jobs, &writer))?;
        Ok(Stdout {
            queue,
            shared,
            pipe: None,
        })
    }

    /// Also watches standard output, when it is a pipe, for its reader
    /// leaving, so that [`Stdout::failed`] tells of it while nothing is
    /// written. Only for a command that waits on `failed` (`listen`): the
    /// worker never does, and would register the descriptor for nothing.
    pub(crate) fn watching_reader(mut self) -> Self {
        self.pipe = Pipe::watch().map(Arc::new);
        self
    }

    /// Queues `line` (a line break is added) and returns at once, unless the
    /// queue is full. Fails if an earlier write failed (e.g. `BrokenPipe`: the
    /// reader went away).
    pub(crate) async fn print(&self, line: String) -> std::io::Result<()> {
        self.send(Some(line), None).await.map(drop)
    }

    /// Queues `line` and waits until it was written and flushed, for callers
    /// that acknowledge a message only once it was printed.
    pub(crate) async fn print_and_wait(&self, line: String) -> std::io::Result<()> {
        let (written, done) = oneshot::channel();
        self.send(Some(line), Some(written)).await?;
        done.await.map_err(|_| self.shared.failure())
    }

    /// Waits until every line queued so far was written and flushed.
    pub(crate) async fn finish(&self) -> std::io::Result<()> {
        let (written, done) = oneshot::channel();
        self.send(None, Some(written)).await?;
        done.await.map_err(|_| self.shared.failure())
    }

    /// Resolves once writing has failed, or standard output is a pipe whose
    /// reader went away (`BrokenPipe`, though nothing was written since),
    /// with why; pending forever while all is well.
    pub(crate) async fn failed(&self) -> std::io::Error {
        let reader_gone = async {
            match &self.pipe {
                Some(pipe) => pipe.reader_gone().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The writer thread drops the queue's receiving end only when it stops.
            () = self.queue.closed() => self.shared.failure(),
            () = reader_gone => std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader of standard output went away",
            ),
        }
    }

    /// How many lines were written and flushed so far.
    pub(crate) fn printed(&self) -> u64 {
        self.shared.printed.load(Ordering::Acquire)
    }

    async fn send(
        &self,
        line: Option<String>,
        written: Option<oneshot::Sender<()>>,
    ) -> std::io::Result<()> {
        self.queue
            .send(Job { line, written })
            .await
            .map_err(|_| self.shared.failure())
    }
}

/// Standard output, when it is a pipe, registered with the runtime: Linux
/// raises an error condition on the writing end of a pipe once no reader is
/// left (`EPOLLERR`), whether or not anything is written.
///
/// The registration is a duplicate of the descriptor, only ever waited on:
/// every write goes through the writer thread's blocking `std::io::Stdout`,
/// which is why the duplicate is not switched to non-blocking mode (the flag
/// belongs to the pipe both descriptors share).
#[derive(Debug)]
struct Pipe {
    #[cfg(unix)]
    sender: tokio::net::unix::pipe::Sender,
}

impl Pipe {
    /// Watches standard output if it is a pipe (a terminal, a file or
    /// `/dev/null` has no reader to lose); `None` otherwise, or where the
    /// runtime cannot watch it.
    #[cfg(unix)]
    fn watch() -> Option<Pipe> {
        use std::os::fd::AsFd as _;
        use std::os::unix::fs::FileTypeExt as _;
        // Registering needs the runtime's reactor; without one, no watch.
        tokio::runtime::Handle::try_current().ok()?;
        let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        let file = std::fs::File::from(fd);
        if !file.metadata().ok()?.file_type().is_fifo() {
            return None;
        }
        let sender = tokio::net::unix::pipe::Sender::from_file_unchecked(file).ok()?;
        Some(Pipe { sender })
    }

    #[cfg(not(unix))]
    fn watch() -> Option<Pipe> {
        None
    }

    /// Resolves once the pipe has no reader left.
    async fn reader_gone(&self) {
        #[cfg(unix)]
        if let Ok(ready) = self.sender.ready(tokio::io::Interest::ERROR).await {
            // Otherwise the runtime is shutting down.
            if ready.is_error() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Writes `bytes` to standard output and flushes, for commands that print
/// their result and end (`request`, `doctor`, `completions`, `man`, `worker
/// --asyncapi`). A reader that went away (`| head -1`, `| true`) is not an
/// error, as for `listen`: it stopped reading what it did not want. Any other
/// failure is, with the reason (`println!` would panic on either).
pub(crate) fn write_now(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// [`write_now`] for one line (a line break is added).
pub(crate) fn line_now(line: &str) -> anyhow::Result<()> {
    write_now(format!("{line}\n").as_bytes())
}

/// The writer thread: takes what is queued, writes it in one go, flushes.
/// Ends at the first failed write (recording why) or when every handle is gone.
fn write_lines(mut jobs: mpsc::Receiver<Job>, shared: &Shared) {
    let stdout = std::io::stdout();
    let mut buffer = Vec::with_capacity(BATCH_BYTES);
    let mut waiting = Vec::new();
    while let Some(job) = jobs.blocking_recv() {
        let mut lines = 0u64;
        let mut next = Some(job);
        while let Some(job) = next.take() {
            if let Some(line) = job.line {
                buffer.extend_from_slice(line.as_bytes());
                buffer.push(b'\n');
                lines += 1;
            }
            waiting.extend(job.written);
            if buffer.len() < BATCH_BYTES {
                next = jobs.try_recv().ok();
            }
        }
        if !buffer.is_empty() {
            let mut out = stdout.lock();
            if let Err(error) = out.write_all(&buffer).and_then(|()| out.flush()) {
                let _ = shared.failure.set((error.kind(), error.to_string()));
                return;
            }
            buffer.clear();
        }
        shared.printed.fetch_add(lines, Ordering::AcqRel);
        for written in waiting.drain(..) {
            let _ = written.send(());
        }
    }
}
