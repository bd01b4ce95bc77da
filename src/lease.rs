//! The quorum lease as the services read it: whether, and in which term, this
//! node may answer. The activator (`src/activator/`) keeps it; the services
//! (`src/server/`) only read it, so this leaf module is all the two share and
//! neither imports the other's internals for it.

use std::sync::Mutex;

use crate::license::ids::Term;

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
    pub(crate) term: Term,
    /// Boot-time ms until which a quorum has confirmed this node leads.
    pub(crate) until_ms: u64,
    /// Whether the node activated in `term` and may serve.
    pub(crate) serving: bool,
    /// Boot-time ms at which the node's current spell of serving began: set
    /// by [`Lease::update`] whenever the lease starts to let the node serve
    /// after it did not (a new term, or the same term after a lapse).
    pub(crate) since_ms: u64,
}

impl LeaseState {
    fn lets_serve(&self, now_ms: u64) -> bool {
        let lapsed = now_ms >= self.until_ms && !crate::fault::broken(crate::fault::Break::Lease);
        self.serving && !lapsed
    }
}

impl Lease {
    /// The term this node serves in, if it serves right now.
    pub fn serving_term(&self) -> Option<Term> {
        self.serving_since().map(|(term, _)| term)
    }

    /// The term this node serves in and the boot-time ms its current spell
    /// of serving began, if it serves right now. Session liveness counts
    /// silence from no earlier than that moment (`src/server/sessions.rs`):
    /// while the node did not serve, no client could renew with it.
    pub fn serving_since(&self) -> Option<(Term, u64)> {
        let state = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state
            .lets_serve(boottime_ms())
            .then_some((state.term, state.since_ms))
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut LeaseState)) {
        let now = boottime_ms();
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = *state;
        f(&mut state);
        let resumed = !before.lets_serve(now) || before.term != state.term;
        if state.lets_serve(now) && resumed {
            state.since_ms = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(lease: &Lease, term: Term, until_ms: u64) {
        lease.update(|l| {
            l.term = term;
            l.until_ms = until_ms;
            l.serving = true;
        });
    }

    // A spell of serving starts when the lease first lets the node serve, is
    // kept while it is renewed in time, and starts again after a lapse in the
    // same term or in a new term.
    #[test]
    fn a_lapse_starts_a_new_spell_of_serving() {
        let lease = Lease::default();
        assert_eq!(lease.serving_since(), None);
        let first = boottime_ms();
        serve(&lease, Term(3), first + 60_000);
        let (term, since) = lease.serving_since().unwrap();
        assert_eq!(term, Term(3));
        assert!(since >= first);
        std::thread::sleep(std::time::Duration::from_millis(5));
        serve(&lease, Term(3), boottime_ms() + 60_000);
        assert_eq!(
            lease.serving_since(),
            Some((Term(3), since)),
            "renewed in time"
        );

        serve(&lease, Term(3), 1); // lapsed: its end is long past
        assert_eq!(lease.serving_since(), None);
        std::thread::sleep(std::time::Duration::from_millis(5));
        serve(&lease, Term(3), boottime_ms() + 60_000);
        let (_, again) = lease.serving_since().unwrap();
        assert!(
            again >= since + 5,
            "same term after a lapse: {again} vs {since}"
        );

        std::thread::sleep(std::time::Duration::from_millis(5));
        serve(&lease, Term(4), boottime_ms() + 60_000);
        let (term, newer) = lease.serving_since().unwrap();
        assert_eq!(term, Term(4));
        assert!(newer >= again + 5, "a new term: {newer} vs {again}");
    }
}
