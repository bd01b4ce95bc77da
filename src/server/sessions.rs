//! Session liveness, tracked in memory by the active node.
//!
//! Renewals (client heartbeats) do not go through Raft: the active node
//! records when it last heard from each session here. A sweeper proposes
//! `Expire` for sessions the state knows but that have been silent for the
//! session TTL. The tracker belongs to one leadership: when the term changes
//! it starts empty, and every session the state knows is given a fresh TTL
//! from the moment the new active node first looks at it, so clients that
//! were heartbeating the old active node are not expired by a failover.
//!
//! # Sessions per source address
//!
//! The tracker also records the source IP address each session was last
//! heard from, and counts the sessions of each address, so that the active
//! node can refuse a new session from an address that already has
//! `limits.sessions_per_address_max` of them ([`SessionTracker::admit`]). The
//! count lives here, in memory, rather than in the replicated state: the
//! source address is a fact about one TCP connection to one node, not about
//! the license state, and a deterministic state machine could only count the
//! address the active node stamped into each command, in every log entry and
//! snapshot, for a limit that only the active node enforces. The count
//! follows the sessions the state holds: a session leaves it when the state no
//! longer holds it (it expired; the sweeper forgets it within one sweep
//! period) or when its first check-out created nothing (a denial leaves no
//! session behind). A session that checked in its last grant stays in the
//! state, retry window and all, until it stops heartbeating and expires, so
//! it counts until then; otherwise check-out/check-in cycles from fresh
//! session ids would fill the state past the limit. After a failover the new
//! active node starts with an empty count, which rebuilds as sessions renew:
//! until a session is heard from in the new term it does not count.
//!
//! # Time
//!
//! Silence is measured on the tracker's [`Clock`]: CLOCK_BOOTTIME in
//! production, which keeps counting while the machine is suspended (a
//! suspended node's sessions do fall silent), and tokio's clock in tests,
//! which a test pauses and advances to the exact moment a session expires.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::lease::boottime_ms;
use crate::license::ids::Term;
use crate::license::state::SessionId;

/// Most sessions one `Expire` command names.
pub const EXPIRE_BATCH_MAX: usize = 1024;
/// Most `Expire` commands one sweep proposes: 65,536 sessions a tick.
pub const EXPIRE_ROUNDS_MAX: usize = 64;
/// Most sessions one expiry log line names (handle, user, host and seats);
/// the rest are counted, so a mass expiry stays one bounded line.
pub const EXPIRED_SESSIONS_NAMED_MAX: usize = 16;

/// Who the sessions were: `session 123 (ada@ws1: cad x2), session 456 (no
/// seats)`, the first [`EXPIRED_SESSIONS_NAMED_MAX`] of them, then `and N
/// more`.
pub fn expired_text(state: &crate::license::state::LicenseState, sessions: &[SessionId]) -> String {
    let mut parts: Vec<String> = sessions
        .iter()
        .take(EXPIRED_SESSIONS_NAMED_MAX)
        .map(|session| {
            let grants: Vec<_> = state.session_grants(*session, None).collect();
            match grants.first() {
                None => format!("session {session} (no seats)"),
                Some(first) => {
                    let seats: Vec<String> = grants
                        .iter()
                        .map(|g| format!("{} x{}", g.feature, g.count))
                        .collect();
                    format!(
                        "session {session} ({}@{}: {})",
                        first.user,
                        first.host,
                        seats.join(", ")
                    )
                }
            }
        })
        .collect();
    if sessions.len() > EXPIRED_SESSIONS_NAMED_MAX {
        parts.push(format!(
            "and {} more",
            sessions.len() - EXPIRED_SESSIONS_NAMED_MAX
        ));
    }
    parts.join(", ")
}

/// Where the tracker reads the time, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// CLOCK_BOOTTIME ([`boottime_ms`]), the clock the lease's `since_ms`
    /// is read from: what a node uses.
    #[default]
    Boottime,
    /// Ms since `origin` on tokio's clock, which a test can pause and
    /// advance; `since_ms` arguments are then on the same scale.
    Tokio(tokio::time::Instant),
}

impl Clock {
    /// The time now, in ms.
    pub fn now_ms(self) -> u64 {
        match self {
            Clock::Boottime => boottime_ms(),
            Clock::Tokio(origin) => origin.elapsed().as_millis() as u64,
        }
    }
}

/// When each session was last heard from, and from where, for one term.
#[derive(Default)]
pub struct SessionTracker {
    clock: Clock,
    // std Mutex: short critical sections, never held across `.await`.
    inner: Mutex<Tracker>,
}

#[derive(Default)]
struct Tracker {
    term: Term,
    last_seen: HashMap<SessionId, Seen>,
    /// Tracked sessions per source address (only addresses with at least one).
    per_address: HashMap<IpAddr, usize>,
    /// Sessions the sweeper chose to expire: from that moment until the state
    /// no longer holds them (or their `Expire` failed), requests of theirs
    /// are told to ask again rather than answered from a state about to drop
    /// them ([`Doomed`]).
    doomed: HashSet<SessionId>,
}

struct Seen {
    /// Boot-time ms.
    at: u64,
    /// Where the session's last request came from; `None` for a session only
    /// known from the state so far (not heard from in this term).
    address: Option<IpAddr>,
}

/// A request of a session the sweeper has chosen to expire, whose `Expire`
/// is in flight. Answering it from the state would tell the client its grants
/// are held a moment before they are dropped; it is told to ask again
/// instead, and by then the state says "expired" (or, if the `Expire` failed,
/// the request's touch has made the session live again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doomed;

/// Why [`SessionTracker::admit`] turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address already has this many sessions, the most it may have.
    Limit(usize),
    /// The session is being expired.
    Doomed,
}

/// What [`SessionTracker::renewing`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewing {
    /// Tracked in this term, and now touched.
    Touched,
    /// Not tracked in this term (nothing recorded).
    Untracked,
    /// Being expired; touched all the same.
    Doomed,
}

impl SessionTracker {
    /// A tracker that reads the time from `clock` ([`SessionTracker::default`]
    /// reads CLOCK_BOOTTIME).
    pub fn new(clock: Clock) -> SessionTracker {
        SessionTracker {
            clock,
            inner: Mutex::default(),
        }
    }

    /// Records that `session` was heard from in `term`, from `address` when
    /// the connection has one; [`Doomed`] if it is being expired.
    pub fn touch(
        &self,
        term: Term,
        session: SessionId,
        address: Option<IpAddr>,
    ) -> Result<(), Doomed> {
        let mut tracker = self.lock();
        tracker.reset_if_new(term);
        tracker.seen(session, address, self.clock.now_ms());
        if tracker.doomed.contains(&session) {
            return Err(Doomed);
        }
        Ok(())
    }

    /// A renewal of `session` in `term`, recorded *before* the state is read:
    /// touches the session if it is tracked. Touching first closes the race
    /// with the sweeper — a session touched here cannot be chosen as silent
    /// afterwards, and one chosen before is reported [`Renewing::Doomed`].
    /// An untracked session is left alone (a renewal cannot make up sessions
    /// that count against its address); the caller touches it once the state
    /// shows it holds the session.
    pub fn renewing(&self, term: Term, session: SessionId, address: Option<IpAddr>) -> Renewing {
        let mut tracker = self.lock();
        tracker.reset_if_new(term);
        if !tracker.last_seen.contains_key(&session) {
            return Renewing::Untracked;
        }
        tracker.seen(session, address, self.clock.now_ms());
        if tracker.doomed.contains(&session) {
            Renewing::Doomed
        } else {
            Renewing::Touched
        }
    }

    /// Like [`touch`](Self::touch), for a request that would start a new
    /// session (one the state does not hold) when `new` is set: refused, with
    /// the number of sessions the address has, if `address` already has
    /// `max` sessions and `session` is not one of them.
    pub fn admit(
        &self,
        term: Term,
        session: SessionId,
        address: Option<IpAddr>,
        new: bool,
        max: usize,
    ) -> Result<(), Refusal> {
        let mut tracker = self.lock();
        tracker.reset_if_new(term);
        if new && let Some(address) = address {
            let counted = tracker
                .last_seen
                .get(&session)
                .is_some_and(|s| s.address == Some(address));
            let sessions = tracker.per_address.get(&address).copied().unwrap_or(0);
            if !counted && sessions >= max {
                return Err(Refusal::Limit(sessions));
            }
        }
        tracker.seen(session, address, self.clock.now_ms());
        if tracker.doomed.contains(&session) {
            return Err(Refusal::Doomed);
        }
        Ok(())
    }

    /// Stops tracking `session` in `term`: a request that would have started
    /// it created nothing.
    pub fn forget(&self, term: Term, session: SessionId) {
        let mut tracker = self.lock();
        if tracker.term == term {
            tracker.remove(&session);
        }
    }

    /// Of `known` sessions, those silent for longer than `ttl` in `term`,
    /// counting silence from no earlier than `since_ms` (boot-time ms: when
    /// this node's current spell of serving began, so an outage of the node
    /// is not billed to its sessions). Sessions not seen yet in this term
    /// start their TTL now. The sessions returned are doomed until
    /// [`settle_failed`](Self::settle_failed) says their `Expire` failed, or the state no
    /// longer holds them.
    pub fn silent(
        &self,
        term: Term,
        since_ms: u64,
        known: &[SessionId],
        ttl: Duration,
    ) -> Vec<SessionId> {
        self.silent_at(self.clock.now_ms(), term, since_ms, known, ttl)
    }

    fn silent_at(
        &self,
        now: u64,
        term: Term,
        since_ms: u64,
        known: &[SessionId],
        ttl: Duration,
    ) -> Vec<SessionId> {
        let mut ttl = ttl.as_millis() as u64;
        if crate::fault::broken(crate::fault::Break::Sweeper) {
            ttl /= 20;
        }
        let mut tracker = self.lock();
        tracker.reset_if_new(term);
        let mut silent = Vec::new();
        for session in known {
            if tracker.doomed.contains(session) {
                continue;
            }
            let seen = tracker.last_seen.entry(*session).or_insert(Seen {
                at: now,
                address: None,
            });
            if now.saturating_sub(seen.at.max(since_ms)) > ttl {
                silent.push(*session);
                if silent.len() >= EXPIRE_BATCH_MAX {
                    break;
                }
            }
        }
        tracker.doomed.extend(silent.iter().copied());
        // Forget sessions the state no longer knows (expired, or never created).
        if tracker.last_seen.len() > known.len() || !tracker.doomed.is_empty() {
            let known: HashSet<_> = known.iter().collect();
            let gone: Vec<SessionId> = tracker
                .last_seen
                .keys()
                .filter(|s| !known.contains(s))
                .copied()
                .collect();
            for session in gone {
                tracker.remove(&session);
            }
            tracker.doomed.retain(|s| known.contains(s));
        }
        silent
    }

    /// The `Expire` of `sessions` chosen in `term` failed: they are no
    /// longer doomed (a request that touched them meanwhile keeps them alive).
    pub fn settle_failed(&self, term: Term, sessions: &[SessionId]) {
        let mut tracker = self.lock();
        if tracker.term == term {
            for session in sessions {
                tracker.doomed.remove(session);
            }
        }
    }

    /// Sessions tracked in this term.
    pub fn len(&self) -> usize {
        self.lock().last_seen.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions last heard from `address` in this term.
    pub fn sessions_from(&self, address: IpAddr) -> usize {
        self.lock().per_address.get(&address).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tracker {
    fn reset_if_new(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.last_seen.clear();
            self.per_address.clear();
            self.doomed.clear();
        }
    }

    /// Records `session` as heard from at `now` (ms), from `address` (or
    /// from where it was last heard, when the connection has no address).
    fn seen(&mut self, session: SessionId, address: Option<IpAddr>, now: u64) {
        let previous = self.last_seen.insert(session, Seen { at: now, address });
        let previous = previous.and_then(|p| p.address);
        match (previous, address) {
            (Some(old), Some(new)) if old != new => {
                self.uncount(old);
                *self.per_address.entry(new).or_insert(0) += 1;
            }
            (None, Some(new)) => *self.per_address.entry(new).or_insert(0) += 1,
            (Some(old), None) => {
                if let Some(seen) = self.last_seen.get_mut(&session) {
                    seen.address = Some(old);
                }
            }
            _ => {}
        }
    }

    fn remove(&mut self, session: &SessionId) {
        self.doomed.remove(session);
        if let Some(Seen {
            address: Some(address),
            ..
        }) = self.last_seen.remove(session)
        {
            self.uncount(address);
        }
    }

    fn uncount(&mut self, address: IpAddr) {
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
    }
}

/// How often the sweeper looks for silent sessions: a tenth of the TTL,
/// within 50 ms to 1 s.
pub fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    // One address gets at most `max` new sessions; a session it already has
    // is never refused, another address is not affected, and a session that
    // leaves the state (or created nothing) frees its place.
    #[test]
    fn new_sessions_per_address_are_limited() {
        let tracker = SessionTracker::default();
        for i in 0..3 {
            tracker
                .admit(Term(1), SessionId(i), Some(A), true, 3)
                .unwrap();
        }
        assert_eq!(
            tracker.admit(Term(1), SessionId(9), Some(A), true, 3),
            Err(Refusal::Limit(3))
        );
        tracker
            .admit(Term(1), SessionId(0), Some(A), true, 3)
            .unwrap();
        tracker
            .admit(Term(1), SessionId(1), Some(A), false, 3)
            .unwrap();
        tracker
            .admit(Term(1), SessionId(9), Some(B), true, 3)
            .unwrap();
        assert_eq!((tracker.sessions_from(A), tracker.sessions_from(B)), (3, 1));

        tracker.forget(Term(1), SessionId(2));
        assert_eq!(tracker.sessions_from(A), 2);
        tracker
            .admit(Term(1), SessionId(8), Some(A), true, 3)
            .unwrap();

        // The state holds 0, 1 and 9 only: 8 is forgotten by the sweep.
        let known = [SessionId(0), SessionId(1), SessionId(9)];
        assert!(
            tracker
                .silent(Term(1), 0, &known, Duration::from_secs(60))
                .is_empty()
        );
        assert_eq!(tracker.sessions_from(A), 2);

        // A session moving to another address is counted there only.
        tracker.touch(Term(1), SessionId(1), Some(B)).unwrap();
        assert_eq!((tracker.sessions_from(A), tracker.sessions_from(B)), (1, 2));
        // A request without an address keeps the session where it was.
        tracker.touch(Term(1), SessionId(1), None).unwrap();
        assert_eq!(tracker.sessions_from(B), 2);

        // A new term starts the count afresh.
        tracker
            .admit(Term(2), SessionId(7), Some(A), true, 1)
            .unwrap();
        assert_eq!((tracker.sessions_from(A), tracker.sessions_from(B)), (1, 0));
    }

    const TTL: Duration = Duration::from_secs(6);

    // Silence is counted from no earlier than the start of the node's current
    // spell of serving: a session the node could not hear while its lease
    // had lapsed is not expired for that outage.
    #[test]
    fn an_outage_of_the_node_is_not_billed_to_its_sessions() {
        let tracker = SessionTracker::default();
        let t = boottime_ms();
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        let known = [SessionId(1)];
        let later = t + 7_000;
        // Served all along: silent for 7 s > 6 s.
        let spell_from_start = tracker.silent_at(later, Term(1), 0, &known, TTL);
        assert_eq!(spell_from_start, vec![SessionId(1)]);

        let tracker = SessionTracker::default();
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        // The lease lapsed and came back in the same term 2 s after the
        // touch: 5 s of silence count, not 7.
        assert!(
            tracker
                .silent_at(later, Term(1), t + 2_000, &known, TTL)
                .is_empty()
        );
        assert_eq!(
            tracker.silent_at(t + 8_100, Term(1), t + 2_000, &known, TTL),
            vec![SessionId(1)]
        );
    }

    // A session the sweeper chose is doomed: every request of it is told to
    // ask again until its Expire resolves; it is not chosen twice; a failed
    // Expire lifts the doom, and the state dropping the session forgets it.
    #[test]
    fn a_session_chosen_for_expiry_is_not_answered_until_it_resolves() {
        let tracker = SessionTracker::default();
        let t = boottime_ms();
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        tracker.touch(Term(1), SessionId(2), Some(A)).unwrap();
        let known = [SessionId(1), SessionId(2)];
        let later = t + 7_000;
        let chosen = tracker.silent_at(later, Term(1), 0, &known, TTL);
        assert_eq!(chosen.len(), 2);

        assert_eq!(tracker.touch(Term(1), SessionId(1), Some(A)), Err(Doomed));
        assert_eq!(
            tracker.renewing(Term(1), SessionId(1), Some(A)),
            Renewing::Doomed
        );
        assert_eq!(
            tracker.admit(Term(1), SessionId(1), Some(A), false, 10),
            Err(Refusal::Doomed)
        );
        assert!(
            tracker
                .silent_at(later + 1, Term(1), 0, &known, TTL)
                .is_empty(),
            "chosen once"
        );

        // Session 1's Expire failed: it was touched meanwhile, so it lives.
        tracker.settle_failed(Term(1), &[SessionId(1)]);
        assert_eq!(
            tracker.renewing(Term(1), SessionId(1), Some(A)),
            Renewing::Touched
        );
        // Session 2's Expire was applied: the state no longer holds it.
        let now = boottime_ms();
        assert!(
            tracker
                .silent_at(now, Term(1), 0, &[SessionId(1)], TTL)
                .is_empty()
        );
        assert_eq!(
            tracker.renewing(Term(1), SessionId(2), Some(A)),
            Renewing::Untracked
        );
        assert_eq!(tracker.sessions_from(A), 1);

        // A new term forgets every doom.
        let chosen = tracker.silent_at(later + 20_000, Term(1), 0, &[SessionId(1)], TTL);
        assert_eq!(chosen, vec![SessionId(1)]);
        assert_eq!(tracker.touch(Term(2), SessionId(1), Some(A)), Ok(()));
    }

    /// One millisecond: the step past a deadline that makes it pass.
    const TICK: Duration = Duration::from_millis(1);

    /// A tracker on tokio's (paused) clock, and that clock's origin.
    fn paused_tracker() -> (SessionTracker, tokio::time::Instant) {
        let origin = tokio::time::Instant::now();
        (SessionTracker::new(Clock::Tokio(origin)), origin)
    }

    // A session silent for exactly the TTL is still live; one millisecond
    // later the sweeper expires it.
    #[tokio::test(start_paused = true)]
    async fn a_silent_session_expires_one_ttl_after_it_was_last_heard() {
        let (tracker, _) = paused_tracker();
        let known = [SessionId(1)];
        tokio::time::advance(Duration::from_secs(2)).await;
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        tokio::time::advance(TTL).await;
        assert!(tracker.silent(Term(1), 0, &known, TTL).is_empty());
        tokio::time::advance(TICK).await;
        assert_eq!(tracker.silent(Term(1), 0, &known, TTL), vec![SessionId(1)]);
    }

    // A renewal restarts the TTL: the session expires one TTL after its last
    // renewal, not after its first.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_restarts_the_ttl() {
        let (tracker, _) = paused_tracker();
        let known = [SessionId(1)];
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        tokio::time::advance(TTL / 2).await;
        assert_eq!(
            tracker.renewing(Term(1), SessionId(1), Some(A)),
            Renewing::Touched
        );
        tokio::time::advance(TTL).await;
        assert!(tracker.silent(Term(1), 0, &known, TTL).is_empty());
        tokio::time::advance(TICK).await;
        assert_eq!(tracker.silent(Term(1), 0, &known, TTL), vec![SessionId(1)]);
    }

    // After a term change every session the state holds gets a fresh TTL
    // from the moment the new term first looks at it, however long it was
    // silent in the old term: a failover does not expire live clients.
    #[tokio::test(start_paused = true)]
    async fn a_new_term_gives_every_session_a_fresh_ttl() {
        let (tracker, _) = paused_tracker();
        let known = [SessionId(1)];
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        // The new term's first sweep: silent for 5 s in term 1, fresh in term 2.
        assert!(tracker.silent(Term(2), 0, &known, TTL).is_empty());
        tokio::time::advance(Duration::from_secs(1) + TICK).await;
        assert!(
            tracker.silent(Term(2), 0, &known, TTL).is_empty(),
            "term 1's silence is not carried into term 2"
        );
        tokio::time::advance(TTL - Duration::from_secs(1) - TICK).await;
        assert!(tracker.silent(Term(2), 0, &known, TTL).is_empty());
        tokio::time::advance(TICK).await;
        assert_eq!(tracker.silent(Term(2), 0, &known, TTL), vec![SessionId(1)]);
    }

    // While the node did not serve (its lease lapsed), no client could renew
    // with it: silence counts from when it served again, so the session
    // expires one TTL after that, not one TTL after it was last heard.
    #[tokio::test(start_paused = true)]
    async fn an_outage_of_the_node_is_not_billed_on_the_paused_clock() {
        let (tracker, origin) = paused_tracker();
        let known = [SessionId(1)];
        tracker.touch(Term(1), SessionId(1), Some(A)).unwrap();
        let outage = Duration::from_secs(4);
        tokio::time::advance(outage).await;
        let since_ms = Clock::Tokio(origin).now_ms();
        tokio::time::advance(TTL).await;
        assert!(
            tracker.silent(Term(1), since_ms, &known, TTL).is_empty(),
            "silent for TTL + outage, but only TTL while serving"
        );
        tokio::time::advance(TICK).await;
        assert_eq!(
            tracker.silent(Term(1), since_ms, &known, TTL),
            vec![SessionId(1)]
        );
    }
}
