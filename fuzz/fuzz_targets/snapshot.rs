//! A license-state snapshot as a node loads it from disk or is sent it by a
//! leader, then used: `LicenseState` checks, reads and `apply_batch`.
//!
//! The input is one codec record of `(last_applied, membership, state,
//! batch)`: the snapshot data (`raft::state_machine::Live`'s fields) followed
//! by the payload of the next log entry. Properties:
//! - a state that `check_invariants` refuses is refused as the node refuses
//!   it (the node runs that check under `catch_unwind`), so its panic is
//!   expected and ignored here;
//! - a state that passes is safe to use: `verify_lines` (which
//!   `install_snapshot` runs outside `catch_unwind`) and every read the
//!   status and license services make do not panic;
//! - applying the next entry's batch at the next log position does not panic
//!   (a panic there poisons the state machine and stops the node), and the
//!   state still passes `check_invariants` afterwards.
#![no_main]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use raftlm::codec;
use raftlm::license::state::{Batch, LicenseState, LogPosition};
use raftlm::raft::{LogId, StoredMembership};

type Input = (Option<LogId>, StoredMembership, LicenseState, Batch);

thread_local! {
    /// Set while a panic is the expected way to refuse a state.
    static EXPECTED: Cell<bool> = const { Cell::new(false) };
}

/// Wraps libFuzzer's panic hook (which aborts) so that panics inside
/// [`refused`] unwind quietly to its `catch_unwind`, as in the node.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTED.with(Cell::get) {
                fuzzer_hook(info);
            }
        }));
    });
}

/// Whether the node would refuse the state: `check_invariants` panics.
fn refused(state: &LicenseState) -> bool {
    EXPECTED.with(|e| e.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| state.check_invariants()));
    EXPECTED.with(|e| e.set(false));
    result.is_err()
}

/// Every read the services make of a served state.
fn read_all(state: &LicenseState) {
    let _ = state.verify_lines();
    let _ = state.anchors();
    let _ = state.verdicts();
    for summary in state.features() {
        let _ = summary.expiry.to_string();
        let _ = state.seats_licensed(&summary.vendor, &summary.feature);
        let _ = state.in_use(&summary.vendor, &summary.feature);
        let _ = state.backing(&summary.vendor, &summary.feature, "");
        let _ = state.backing(&summary.vendor, &summary.feature, &summary.version);
    }
    for (token, grant) in state.grants() {
        let _ = token.to_string();
        let _ = state.backing(&grant.vendor, &grant.feature, &grant.version);
    }
    for (name, lines) in state.licenses() {
        let _ = state.was_imported(name, lines);
        for line in lines {
            let _ = line.expiry.to_string();
        }
    }
    for (id, session) in state.sessions() {
        let _ = (id.to_string(), session.remembered(), state.is_expired(*id));
    }
    let _ = (
        state.cluster_name(),
        state.cluster_id(),
        state.activation(),
        state.activations(),
    );
    let _ = (state.trusted_keys(), state.admin_actions(), state.now_ms());
}

fuzz_target!(|data: &[u8]| {
    install_hook();
    // The version byte is forced to this build's (see the codec target).
    let mut record = data.to_vec();
    if let Some(version) = record.first_mut() {
        *version = codec::FORMAT_VERSION;
    }
    let Ok((last_applied, _membership, mut state, batch)) = codec::decode::<Input>(&record) else {
        return;
    };
    if refused(&state) {
        return;
    }
    read_all(&state);
    // The next entry: after the last one applied, in its term or later.
    let at = match last_applied {
        None => LogPosition { term: 1, index: 1 },
        Some(id) => match id.index.checked_add(1) {
            Some(index) => LogPosition {
                term: id.leader_id.term,
                index,
            },
            None => return,
        },
    };
    let outcomes = state.apply_batch(at, &batch);
    assert_eq!(outcomes.len(), batch.commands.len());
    state.check_invariants();
    read_all(&state);
});
