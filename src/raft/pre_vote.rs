//! Pre-vote: whether a node would vote for a candidate, asked before the
//! candidate starts an election, so that a node that cannot win does not
//! raise its term (openraft 0.9.25 has no pre-vote of its own).
//!
//! A node cut off from its peers keeps trying to start elections. Without a
//! pre-vote each attempt raised its term, and when it came back its higher
//! term deposed a healthy leader and forced a re-election. With one, the
//! activator's election driver (`src/activator/mod.rs`) first asks every
//! voter a `PreVote` (the peer RPC in `proto/raftlm/v1/raft.proto`) and calls
//! openraft's election only once a majority, itself included, grants it. A
//! cut-off node hears no grants and its term stays where it was.
//!
//! This module is the decision only, with no I/O and no clock: [`answer`]
//! is what a receiver answers (the Raft service, `src/raft/network.rs`,
//! gathers its view), [`won`] whether the grants suffice. Answering changes
//! nothing on the receiver: no term, no vote, no timestamp.

use std::fmt;

use super::LogId;
use crate::license::ids::Term;

/// What a candidate asks: the term it would start and how far its log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The term it would start: its current term + 1.
    pub term: Term,
    /// Its last log id (`None`: an empty log).
    pub last_log_id: Option<LogId>,
}

/// What the receiver knows when it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Its current term.
    pub term: Term,
    /// Its last log id (`None`: an empty log).
    pub last_log_id: Option<LogId>,
    /// Ms since it last heard from a leader: for a follower, since the last
    /// AppendEntries it accepted (or vote it granted); for a leader, since a
    /// quorum last acknowledged it; `u64::MAX` if never.
    pub silence_ms: u64,
    /// `timing.election_timeout_min_ms`: a leader heard from more recently
    /// than this is alive, and no election is needed.
    pub election_timeout_min_ms: u64,
}

/// Why a pre-vote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The receiver heard from a leader `silence_ms` ago, less than the
    /// election timeout.
    LeaderAlive {
        /// Ms since it heard from the leader.
        silence_ms: u64,
        /// The election timeout (min).
        election_timeout_min_ms: u64,
    },
    /// The candidate's log is less up to date than the receiver's: Raft's
    /// voting rule would refuse the vote.
    LogBehind {
        /// The candidate's last log id.
        candidate: Option<LogId>,
        /// The receiver's last log id.
        own: Option<LogId>,
    },
    /// The term the candidate would start is below the receiver's.
    TermBehind {
        /// The term asked for.
        asked: Term,
        /// The receiver's term.
        own: Term,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn log_id(id: &Option<LogId>) -> String {
            id.map_or_else(|| "none".to_string(), |l| l.to_string())
        }
        match self {
            Refusal::LeaderAlive {
                silence_ms,
                election_timeout_min_ms,
            } => write!(
                f,
                "heard from a leader {silence_ms} ms ago, within the election timeout ({election_timeout_min_ms} ms)"
            ),
            Refusal::LogBehind { candidate, own } => write!(
                f,
                "the candidate's last log id {} is behind this node's {}",
                log_id(candidate),
                log_id(own)
            ),
            Refusal::TermBehind { asked, own } => {
                write!(f, "term {asked} is below this node's term {own}")
            }
        }
    }
}

/// Whether a receiver with `view` grants a pre-vote for `ask`: only if it
/// has not heard from a leader within the election timeout, the candidate's
/// last log id is at least its own (Raft's voting rule, compared as openraft
/// compares them), and the term asked for is not below its own.
pub fn answer(ask: &Ask, view: &View) -> Result<(), Refusal> {
    if view.silence_ms < view.election_timeout_min_ms {
        return Err(Refusal::LeaderAlive {
            silence_ms: view.silence_ms,
            election_timeout_min_ms: view.election_timeout_min_ms,
        });
    }
    if ask.term < view.term {
        return Err(Refusal::TermBehind {
            asked: ask.term,
            own: view.term,
        });
    }
    // `None` (an empty log) is below every log id, as in openraft.
    if ask.last_log_id < view.last_log_id {
        return Err(Refusal::LogBehind {
            candidate: ask.last_log_id,
            own: view.last_log_id,
        });
    }
    Ok(())
}

/// Whether `granted` grants among `voters` voters (the candidate's own
/// included) are a majority: then the candidate may start its election.
pub fn won(granted: usize, voters: usize) -> bool {
    granted > voters / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, node: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(
            openraft::CommittedLeaderId::new(term, node),
            index,
        ))
    }

    fn view(silence_ms: u64) -> View {
        View {
            term: Term(21),
            last_log_id: id(21, 1, 100),
            silence_ms,
            election_timeout_min_ms: 250,
        }
    }

    // A receiver that has not heard from a leader for the election timeout
    // grants a candidate whose log is as far as its own, or further.
    #[test]
    fn a_silent_leader_and_an_up_to_date_log_are_granted() {
        let ask = Ask {
            term: Term(22),
            last_log_id: id(21, 1, 100),
        };
        assert_eq!(answer(&ask, &view(250)), Ok(()));
        assert_eq!(answer(&ask, &view(u64::MAX)), Ok(()));
        let further = Ask {
            term: Term(22),
            last_log_id: id(21, 1, 101),
        };
        assert_eq!(answer(&further, &view(300)), Ok(()));
        // A later term's entry is more up to date whatever its index.
        let later_term = Ask {
            term: Term(23),
            last_log_id: id(22, 3, 50),
        };
        assert_eq!(answer(&later_term, &view(300)), Ok(()));
    }

    // Heard from a leader within the election timeout: refused, however
    // good the candidate's log and term (this is what keeps a node that was
    // cut off from deposing a healthy leader).
    #[test]
    fn a_leader_heard_within_the_timeout_refuses() {
        let ask = Ask {
            term: Term(86),
            last_log_id: id(21, 1, 100),
        };
        assert_eq!(
            answer(&ask, &view(249)),
            Err(Refusal::LeaderAlive {
                silence_ms: 249,
                election_timeout_min_ms: 250
            })
        );
        assert!(answer(&ask, &view(0)).is_err());
    }

    // Raft's voting rule: a shorter log of the same term, an older last
    // term, or an empty log against a non-empty one is refused.
    #[test]
    fn a_log_behind_the_receivers_is_refused() {
        for behind in [id(21, 1, 99), id(20, 2, 500), None] {
            let ask = Ask {
                term: Term(22),
                last_log_id: behind,
            };
            assert_eq!(
                answer(&ask, &view(300)),
                Err(Refusal::LogBehind {
                    candidate: behind,
                    own: id(21, 1, 100)
                }),
                "{behind:?}"
            );
        }
        // Two empty logs are equal.
        let empty = View {
            last_log_id: None,
            ..view(300)
        };
        let ask = Ask {
            term: Term(22),
            last_log_id: None,
        };
        assert_eq!(answer(&ask, &empty), Ok(()));
    }

    // A term below the receiver's is refused; the receiver's own term is not.
    #[test]
    fn a_term_below_the_receivers_is_refused() {
        let ask = Ask {
            term: Term(20),
            last_log_id: id(21, 1, 100),
        };
        assert_eq!(
            answer(&ask, &view(300)),
            Err(Refusal::TermBehind {
                asked: Term(20),
                own: Term(21)
            })
        );
        let same = Ask {
            term: Term(21),
            last_log_id: id(21, 1, 100),
        };
        assert_eq!(answer(&same, &view(300)), Ok(()));
    }

    // The candidate counts itself: two of three, three of five.
    #[test]
    fn a_majority_counts_the_candidate() {
        assert!(!won(1, 3));
        assert!(won(2, 3));
        assert!(!won(2, 5));
        assert!(won(3, 5));
        assert!(won(1, 1));
    }
}
