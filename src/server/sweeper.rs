//! The session sweeper: while this node serves, it proposes `Expire` for the
//! sessions the state knows but the [`SessionTracker`](super::sessions::SessionTracker)
//! has not heard from for the session TTL (see [`sessions`](super::sessions)).

use std::time::Duration;

use tracing::{info, warn};

use crate::license::ids::Term;
use crate::license::state::{Command, SessionId};

use super::sessions::{EXPIRE_ROUNDS_MAX, expired_text, sweep_period};
use super::shared::Shared;

/// Runs the sweeper until `stop` resolves: while this node serves, expires
/// sessions silent for longer than the session TTL.
pub async fn sweep(shared: std::sync::Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let ttl = Duration::from_millis(shared.config.timing.session_ttl_ms);
    let mut ticker = tokio::time::interval(sweep_period(ttl));
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
            // The sessions table counts terms as bare numbers.
            let Some((crate::license::ids::Term(term), since_ms)) = shared.lease.serving_since()
            else {
                break;
            };
            let known: Vec<SessionId> = shared
                .state
                .read(|state| state.sessions().keys().copied().collect());
            let silent = shared.sessions.silent(Term(term), since_ms, &known, ttl);
            if silent.is_empty() {
                break;
            }
            let count = silent.len();
            let who = shared.state.read(|state| expired_text(state, &silent));
            match shared
                .batcher
                .submit(Command::Expire {
                    sessions: silent.clone(),
                })
                .await
            {
                Ok((outcome, log_id)) => {
                    info!(count, %log_id, ?outcome, sessions = %who, "expired silent sessions")
                }
                Err(error) => {
                    shared.sessions.settle_failed(Term(term), &silent);
                    warn!(count, %error, "could not expire silent sessions");
                    break;
                }
            }
        }
    }
}
