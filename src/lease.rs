//! The quorum lease as the services read it: whether, and in which term, this
//! node may answer. The activator (`src/activator.rs`) keeps it; the services
//! (`src/server/`) only read it, so this leaf module is all the two share and
//! neither imports the other's internals for it.

use std::sync::Mutex;

/// Milliseconds on `CLOCK_BOOTTIME`: monotonic, and counts time the process
/// was stopped or the machine suspended.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// What services read to decide whether to answer: the term and lease this
/// node serves under.
#[derive(Default)]
pub struct Lease {
    // std Mutex: a few words copied in and out, never held across `.await`.
    inner: Mutex<LeaseState>,
}

/// The lease as the activator sets it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LeaseState {
    /// The term the lease is for.
    pub(crate) term: u64,
    /// Boot-time ms until which a quorum has confirmed this node leads.
    pub(crate) until_ms: u64,
    /// Whether the node activated in `term` and may serve.
    pub(crate) serving: bool,
}

impl Lease {
    /// The term this node serves in, if it serves right now.
    pub fn serving_term(&self) -> Option<u64> {
        let state = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (state.serving && boottime_ms() < state.until_ms).then_some(state.term)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut LeaseState)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
