//! The checker: decides from a history (and the replicas' final states)
//! whether raftlm kept its promises. Pure: no I/O, no clock.
//!
//! # What is certain
//!
//! The checker never assumes more than the history proves, so every
//! violation it reports is real (given a correct history):
//!
//! - a grant `g` exists from the moment its check-out was answered `ok`
//!   (`c_g`, the end of the answered attempt) — it was applied before the
//!   reply;
//! - `g` is *certainly held* until the first check-in attempt that quotes it
//!   is sent, or until its session could first have been expired, whichever
//!   is earlier. The session TTL bounds expiry from below: every answered
//!   request of a session (check-out, check-in, renewal) touched it at some
//!   moment between sending and answer, and the active node expires a session
//!   only after a silence longer than the TTL since its last touch in its own
//!   term (a new active node starts every TTL afresh, which only delays
//!   expiry). So, starting from `P = a + TTL` for the granting attempt sent at
//!   `a`, every answered attempt `(a_i, c_i)` with `c_i < P` pushes the bound to
//!   `max(P, a_i + TTL)`. Time in which no node served is not silence: the
//!   active node counts silence from no earlier than the start of its own
//!   serving spell (it became active, or its lease came back after a lapse),
//!   and every Status read says how long the answering node had served
//!   (`serving_for_ms`), so a read sent at `r` shows a spell that began no
//!   earlier than `r − serving_for`. Spells follow each other (one node serves
//!   at a time), so whoever expires the session at or after `P` serves in a
//!   spell that began no earlier than that of any read answered before `P`:
//!   the bound is pushed to `spell start + TTL` as well, and both pushes are
//!   repeated until the bound stays put. The result `E_g` is a lower bound of
//!   the expiry.
//!
//! # Invariants
//!
//! - **seats-never-over-granted** — at no moment do the grants certainly held
//!   of a feature add up to more seats than are licensed, and no state the
//!   cluster showed (a Status read, a node's own store) holds more, counting
//!   every grant in it, acknowledged or not;
//! - **available-never-overstated** — a check-out's reply never says more
//!   seats are free than the licensed seats less every other grant certainly
//!   held over the whole operation and its own; the total it gives for a
//!   permanent feature whose license never changes is the licensed count; an
//!   "in use" denial says fewer seats are free than were asked for;
//! - **no-lost-grant** — no answer says a certainly held grant is gone: a
//!   renewal listing it as unknown, a check-in of it answered "not held", a
//!   request answered "session expired", or a linearizable status read that
//!   lacks it (the workload's reader reads every half second; the harness
//!   reads after healing and after a kill-all + restart);
//! - **no-phantom-grant** — every grant in a read state (every status read,
//!   and the replicas' own stores) comes from an `ok` check-out (same
//!   session, feature and seats) or can be matched one-to-one to an `unknown`
//!   one of its session; a grant whose check-in was answered `ok` before a
//!   read was sent is not in that read;
//! - **retry-never-double-grants** — the attempts of one request id never get
//!   two different grant tokens, and no final state holds a grant that only a
//!   second application of a retried, resolved request could explain;
//! - **fencing-terms-monotonic** — no answer carries a lower term than an
//!   answer that completed before it was sent (real-time order over all
//!   clients);
//! - **reads-never-go-back** — every Status read (the workload's reader, the
//!   harness's reads after healing, after the kill-all and in the drain)
//!   records the applied index of the state it shows, and every check-out
//!   and check-in answer the index its command was applied at (a denial or
//!   "not held" too: both are committed). Status is linearizable, so in
//!   real-time order over all clients (a) a read sent after another read was
//!   answered never shows a lower applied index, and (b) a read shows at
//!   least the index of every check-out or check-in answered before it was
//!   sent. Operations that overlap are not ordered. One sort and a heap of
//!   completions, as for fencing: O(n log n). Answers without an index
//!   (histories from before it was recorded) are not judged;
//! - **replicas-converge** — every node's own store, read after the run, holds
//!   the same log prefix and the same license state at the compared index;
//! - **live-states-converge** — after the drain, before the nodes stop, each
//!   node's `NodeInfo` reports its applied index, its committed index and
//!   the SHA-256 digest of its live license state as of that index (taken
//!   under one lock); the harness asks until all three report one applied
//!   index (up to 10 s: the clients have stopped). Every node must answer,
//!   all must stand at one applied index, nodes at the same index must
//!   report the same digest, and a node's live digest must equal the digest
//!   of its own store replayed by the harness when both are at the same
//!   index (the same digest function, `LicenseState::digest`);
//! - **one-entry-per-log-id** — a log id (leader term, leader node, index)
//!   names one entry for the life of the cluster. After each power cut
//!   (once a node serves, and again a few seconds later), after the final
//!   restart and at the end, the harness asks every node (`NodeInfo`) for
//!   its recent log ids, each with a hash of the entry's stored bytes, and
//!   after the run reads the same from every store ([`LogView`]). Any two
//!   views — two nodes, or one node before and after a restart — that hold
//!   an entry under one log id must hold the same hash. Compared across
//!   time, so a later snapshot that overwrites a divergence cannot hide it;
//! - **states-agree-at-each-index** — each node keeps, in memory, the
//!   digest of its license state right after every applied index that is a
//!   multiple of a fixed step (the most recent few), and `NodeInfo` returns
//!   them, asked at the same moments. Entries are applied only once
//!   committed, so every digest any node ever reports at one index, and the
//!   replayed stores' digests at the compared index, must be equal: the
//!   states are compared at common applied indexes while the cluster runs,
//!   not only at the end;
//! - **expiry-judged-on-true-time** — with dated licenses in the run: no
//!   check-out of a feature is refused as expired while the run's true time
//!   (the harness's clock; node clocks may be jumped) is more than the
//!   tolerance before the feature's end, and none is granted on an attempt
//!   sent more than the tolerance after it. The tolerance is the nodes'
//!   clock bound plus a second: a node stamps state time only while its
//!   clock is within the bound of a majority's.
//! - **renewal-reports-unknown** — a renewal's answer lists as unknown every
//!   token it quoted that the session does not hold: one of its own whose
//!   check-in was answered ok before the renewal was sent, one granted to
//!   another session (the active node matches a quoted token to the
//!   renewing session's grants only), and a made-up one no check-out was
//!   granted. The tokens the session quoted as held are judged by
//!   `no-lost-grant` alone, as before;
//! - **no-unexpected-exit** — no node process ends unless the harness ends
//!   it (a kill, a power cut, a SIGTERM answered by a clean exit within
//!   10 s), and no node's log tells of a panic. The harness notices an exit
//!   when it next looks at the process (a heal, a fault aimed at the active
//!   node, a restart), so the time reported is when it was noticed and when
//!   the process was last seen running;
//! - **no-leaked-seat** — the run ends with a drain: the clients stop
//!   (heartbeats too; sessions are abandoned, not checked in), and once every
//!   session could have expired (a node serving, then the TTL, the
//!   activation wait, a sweep period and slack) a linearizable Status read
//!   must show no grant and no seat in use, and must be answered at all;
//! - **silent-sessions-expire-in-time** — the upper bound of expiry: a
//!   session whose last attempt ended at `T` and a node that served without a
//!   break from `S` (a read's `serving_for`) must have parted by
//!   `max(T, S) + TTL + a sweep period + slack`; no read taken later by that
//!   spell holds its grants, and no check-in of them sent later in it is
//!   answered "released". Only sessions whose heartbeats the history holds
//!   are judged (an application's client library renews unrecorded);
//! - **no-impossible-answer** — no check-out is answered what the workload
//!   cannot be told: "stale request" (a session's requests are sequential, so
//!   a retry is always of its latest request, inside the retry window; the
//!   answer is recorded `unknown` with detail `stale`), "no such feature" for
//!   a licensed feature (an expired line still counts as licensed), "expired"
//!   or "exceeds licensed" for a feature whose end the run does not plan
//!   (permanent lines; the workload asks for at most the seats licensed), and
//!   "bad count", "version not licensed" or no reason at all (it asks for 1
//!   to 3 seats of any version); a check-out of 0 seats or of more than are
//!   licensed (the workload asks for some on purpose) must be refused "bad
//!   count" or "exceeds licensed" and never granted; "no such feature" is
//!   fair for the license an administrator imports and removes during the
//!   run; and no grant is released twice (a second check-in, sent after the
//!   first was answered ok, must be answered "not held"). Dated features
//!   are left to `expiry-judged-on-true-time`.
//!
//! Unavailability is measured per fault type as the time from a fault's start
//! to the end of the first check-out attempt sent after it that the cluster
//! answered (a grant or a denial: both are committed through Raft; with a
//! pool kept exhausted on purpose, a denial proves availability as well).
//!
//! Left out: the checker does not model the session tracker's fresh TTL after
//! a failover (it only lengthens lives, so ignoring it is conservative), and
//! it cannot see grants created by `unknown` check-outs until a final read
//! shows them.
//!
//! # Files
//!
//! One file per family of invariants, each checking what its name says:
//! `seats` (seats-never-over-granted, available-never-overstated,
//! no-leaked-seat), `grants` (no-lost-grant, no-phantom-grant,
//! retry-never-double-grants), `fencing` (fencing-terms-monotonic), `reads`
//! (reads-never-go-back), `convergence` (replicas-converge,
//! live-states-converge), `log_views` (one-entry-per-log-id,
//! states-agree-at-each-index), `expiry` (expiry-judged-on-true-time,
//! silent-sessions-expire-in-time), `answers` (no-impossible-answer,
//! renewal-reports-unknown) and `exits` (no-unexpected-exit). `model` holds
//! the public types, `common` what the families share (the history rebuilt
//! as operations, the certain life of a grant, tallies), `figures` the run's
//! figures. This file runs every family ([`check`]).

mod answers;
mod common;
mod convergence;
mod exits;
mod expiry;
mod fencing;
mod figures;
mod grants;
mod log_views;
mod model;
mod reads;
mod seats;
#[cfg(test)]
mod test_support;

pub use exits::{LOG_LINE_CHARS_MAX, panics_in_log};
pub use log_views::log_views_line;
pub use model::*;

use crate::history::Event;
use common::{Spells, Tally, operations};

/// Checks a history against the invariants. See the module docs.
pub fn check(events: &[Event], input: &CheckInput) -> Verdict {
    let ops = operations(events);
    let mut verdict = Verdict::default();

    figures::operation_counts(&ops, &mut verdict);

    let mut double = Tally::new(DOUBLE);
    let mut lost = Tally::new(LOST);
    let mut phantom = Tally::new(PHANTOM);
    let spells = Spells::new(&ops);
    figures::session_figures(events, &ops, &mut verdict);
    let grants = grants::grant_lives(&ops, input, &spells, &mut double, &mut verdict);

    let seats = seats::check_seats(&ops, &grants, input, &mut verdict);
    grants::check_lost(&ops, &grants, &mut lost);
    grants::check_final_states(&ops, &grants, input, &mut phantom, &mut double, &mut lost);
    let fencing = fencing::check_fencing(&ops);
    let reads = reads::check_reads(&ops);
    let converge = convergence::check_convergence(&input.replicas);
    let live = convergence::check_live(&input.live, &input.replicas);
    let one_entry = log_views::check_one_entry_per_log_id(&input.logs);
    let states_at = log_views::check_states_at_each_index(&input.logs);
    let expiry = expiry::check_expiry(&ops, input);
    let impossible = answers::check_impossible(&ops, input);
    let renew_unknown = answers::check_renewal_unknown(&ops, &grants);
    let exits = exits::check_exits(input);
    let leak = seats::check_drain(events, &ops, input, &mut verdict);
    let available = seats::check_available(&ops, &grants, input);
    let in_time = expiry::check_expire_in_time(&ops, &spells, input);

    verdict.invariants = vec![
        seats,
        available,
        lost.finish(),
        phantom.finish(),
        double.finish(),
        fencing,
        reads,
        converge,
        live,
        one_entry,
        states_at,
        expiry,
        impossible,
        renew_unknown,
        exits,
        leak,
        in_time,
    ];
    figures::unavailability(events, &ops, &mut verdict);
    verdict
}

#[cfg(test)]
mod tests {
    use crate::checker::test_support::*;

    /// A history where everything went right: grants, a renewal, check-ins, an
    /// unknown check-out that shows up in the final read, and expiry of an
    /// abandoned session freeing its seat.
    fn good_history() -> Builder {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.checkout(2, "cad", 1, 5, 20, 2, token(2, 6));
        h.renew(1, 1000, 1010, 2, vec![]);
        h.checkin(1, token(2, 5), 2000, 2010, 2, true);
        // Session 3 abandons its grant; after its TTL the seat is free again.
        h.checkout(3, "cad", 1, 2100, 2110, 2, token(2, 8));
        // Unknown check-out of session 2 that was applied.
        h.checkout_attempt(99, 1, 2, "cad", 1, 3000, 4000, None);
        h.fault(2500, "kill");
        h.checkout(4, "cad", 1, 15_000, 15_010, 3, token(3, 20));
        h.renew(2, 15_100, 15_110, 3, vec![]);
        h.read(
            15_200,
            15_210,
            3,
            vec![
                seen(token(2, 6), 2, "cad", 1),
                seen(token(2, 9), 2, "cad", 1),
                seen(token(3, 20), 4, "cad", 1),
            ],
        );
        h
    }

    // A correct history passes every invariant, and the figures add up.
    #[test]
    fn good_history_passes() {
        let verdict = good_history().check(&[("cad", 3)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(verdict.grants, 4);
        assert_eq!(verdict.operations["checkout"].unknown, 1);
        assert_eq!(verdict.faults["kill"], 1);
        let kill = &verdict.unavailability["kill"];
        assert_eq!(kill.recovered, 1);
        // The first answered check-out sent after the fault at 2.5 s ends at 15.01 s.
        assert_eq!(kill.max_ms, 12_510.0);
        assert_eq!(verdict.peak_seats["cad"], 2);
    }
}
