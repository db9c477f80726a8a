//! Client CPU time (user + system, all threads of this process) over a run.

use cpu_time::ProcessTime;

/// A start point for measuring this process's CPU time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuClock(Option<ProcessTime>);

impl CpuClock {
    /// Starts measuring (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`).
    pub(crate) fn start() -> Self {
        CpuClock(ProcessTime::try_now().ok())
    }

    /// CPU seconds (user + system) since `start`, if the clock is available.
    pub(crate) fn elapsed_s(&self) -> Option<f64> {
        let start = self.0?;
        start.try_elapsed().ok().map(|d| d.as_secs_f64())
    }
}
