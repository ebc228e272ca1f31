//! The clock seam: wall-clock time in epoch milliseconds.
//!
//! Durations and timeouts use `tokio::time`, which the simulation virtualises.
//! Only record timestamps, segment ages and retention need calendar time, and
//! they take it from a [`Clock`] handed in. Invariant: nothing outside this file
//! reads the operating system's clock.

use std::sync::Arc;

/// Calendar time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock, for the real binary.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // This is the real-environment seam.
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A fixed epoch plus the runtime's elapsed time. Under a paused or simulated
/// tokio clock this is fully deterministic.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeClock {
    epoch_ms: i64,
    start: tokio::time::Instant,
}

impl RuntimeClock {
    /// Must be called inside a tokio runtime.
    pub fn new(epoch_ms: i64) -> Self {
        Self {
            epoch_ms,
            // tokio's clock, not the OS's: virtual under the simulation.
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for RuntimeClock {
    fn now_ms(&self) -> i64 {
        let elapsed_ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.epoch_ms.saturating_add(elapsed_ms)
    }
}

/// A clock moved by hand, for tests of time-driven behaviour (roll, retention).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms: std::sync::atomic::AtomicI64::new(now_ms),
        }
    }

    pub fn advance_ms(&self, delta_ms: i64) {
        self.now_ms
            .fetch_add(delta_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
}
