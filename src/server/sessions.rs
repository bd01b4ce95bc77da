//! Session liveness, tracked in memory by the active node.
//!
//! Renewals (client heartbeats) do not go through Raft: the active node
//! records when it last heard from each session here. A sweeper proposes
//! `Expire` for sessions the state knows but that have been silent for the
//! session TTL. The tracker belongs to one leadership: when the term changes
//! it starts empty, and every session the state knows is given a fresh TTL
//! from the moment the new active node first looks at it, so clients that
//! were heartbeating the old active node are not expired by a failover.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::license::state::{Command, SessionId};
use crate::server::Shared;

/// Most sessions one `Expire` command names.
pub const EXPIRE_BATCH_MAX: usize = 1024;
/// Most `Expire` commands one sweep proposes: 65,536 sessions a tick.
pub const EXPIRE_ROUNDS_MAX: usize = 64;

/// When each session was last heard from, for one term.
#[derive(Default)]
pub struct SessionTracker {
    // std Mutex: short critical sections, never held across `.await`.
    inner: Mutex<Tracker>,
}

#[derive(Default)]
struct Tracker {
    term: u64,
    last_seen: HashMap<SessionId, Instant>,
}

impl SessionTracker {
    /// Records that `session` was heard from in `term`.
    pub fn touch(&self, term: u64, session: SessionId) {
        let mut tracker = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tracker.reset_if_new(term);
        tracker.last_seen.insert(session, Instant::now());
    }

    /// Of `known` sessions, those silent for longer than `ttl` in `term`.
    /// Sessions not seen yet in this term start their TTL now.
    pub fn silent(&self, term: u64, known: &[SessionId], ttl: Duration) -> Vec<SessionId> {
        let now = Instant::now();
        let mut tracker = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tracker.reset_if_new(term);
        let mut silent = Vec::new();
        for session in known {
            let seen = *tracker.last_seen.entry(*session).or_insert(now);
            if now.duration_since(seen) > ttl {
                silent.push(*session);
                if silent.len() >= EXPIRE_BATCH_MAX {
                    break;
                }
            }
        }
        // Forget sessions the state no longer knows (checked in, expired).
        if tracker.last_seen.len() > known.len() {
            let known: std::collections::HashSet<_> = known.iter().collect();
            tracker.last_seen.retain(|s, _| known.contains(s));
        }
        silent
    }

    /// Sessions tracked in this term.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seen
            .len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tracker {
    fn reset_if_new(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.last_seen.clear();
        }
    }
}

/// Runs the sweeper until `stop` resolves: while this node serves, expires
/// sessions silent for longer than the session TTL.
pub async fn sweep(shared: std::sync::Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let ttl = Duration::from_millis(shared.config.timing.session_ttl_ms);
    let period = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        // Expire every silent session, a batch at a time (up to
        // EXPIRE_ROUNDS_MAX batches a tick), so that expiry keeps up with
        // however many sessions go silent.
        for _ in 0..EXPIRE_ROUNDS_MAX {
            let Ok(term) = shared.serving() else { break };
            let known: Vec<SessionId> = shared
                .state
                .read(|state| state.sessions().keys().copied().collect());
            let silent = shared.sessions.silent(term, &known, ttl);
            if silent.is_empty() {
                break;
            }
            let count = silent.len();
            match shared
                .batcher
                .submit(Command::Expire { sessions: silent })
                .await
            {
                Ok((outcome, log_id)) => {
                    info!(count, %log_id, ?outcome, "expired silent sessions")
                }
                Err(error) => {
                    warn!(count, %error, "could not expire silent sessions");
                    break;
                }
            }
        }
    }
}
