//! `LicenseState`: the replicated license state machine, as plain data.
//!
//! Every node applies the same commands in the same (Raft log) order to its
//! own `LicenseState`, so every node holds the same seats, grants and
//! sessions. `apply` is deterministic: no clock, no randomness, no I/O. Time
//! enters inside the command batch: the active node stamps `now_ms` on each
//! batch it proposes, and the state keeps `max(previous, now_ms)` so its time
//! never runs backwards even when a new leader's clock is behind the old one's.
//!
//! # Seats and grants
//!
//! A feature's *licensed* seats are the sum of the counts of every imported
//! `FEATURE`/`INCREMENT` line for it (lines with the same signature count
//! once). A line past its expiry date no longer grants: new check-outs can use
//! only the seats of unexpired lines. Seats already granted stay granted until
//! they are checked in or their session expires, which is what applications
//! expect from a floating-license server (a running program is not killed at
//! midnight). The invariant is therefore `in use ≤ licensed` per feature,
//! checked after every command, and a check-out never takes a seat beyond the
//! unexpired ones.
//!
//! A grant is named by its [`GrantToken`]: the term and log index of the
//! entry that created it, plus its slot in that entry (the batcher puts many
//! commands in one entry). Tokens are unique by construction and a retried or
//! recycled token can never name a different grant.
//!
//! # Sessions and retries
//!
//! Every client-originated command carries a [`RequestId`] `(session, seq)`.
//! The state remembers the outcomes of the last [`DEDUP_WINDOW`] requests of
//! each session, so a retried request returns the first outcome and never
//! takes a second seat. A request older than the window is answered
//! [`Outcome::Stale`] instead of being applied again. A session that was
//! expired is dead: its later requests (a retry that was in flight, a client
//! back from caching mode) are answered [`Outcome::SessionExpired`], and the
//! client starts a new session. The last [`EXPIRED_SESSIONS_REMEMBERED`]
//! expired sessions are remembered for this.
//!
//! # Invariants
//!
//! Checked after every apply; a violation is a bug and panics with the
//! values, so replicas can never diverge silently:
//! - seats in use ≤ seats licensed, per feature;
//! - the per-feature use counters equal the sum of the live grants;
//! - state time never decreases.
//!
//! Left out here: signature checking (done before a license is proposed) and
//! session liveness (the active node tracks heartbeats in memory and proposes
//! `Expire`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::feature::{Expiry, FeatureLine};

/// How many recent outcomes each session remembers for retries.
pub const DEDUP_WINDOW: usize = 32;
/// Most live grants the state holds; a check-out beyond it is denied.
pub const GRANTS_MAX: usize = 1_000_000;
/// Most sessions the state holds; a new session beyond it is denied.
pub const SESSIONS_MAX: usize = 1_000_000;
/// How many expired sessions the state remembers, so that a late request
/// from one is refused instead of starting it again.
pub const EXPIRED_SESSIONS_REMEMBERED: usize = 100_000;
/// Most seats one check-out may ask for.
pub const CHECKOUT_SEATS_MAX: u32 = 1_000_000;
/// How many administrators' actions the state remembers, newest last.
pub const ADMIN_ACTIONS_REMEMBERED: usize = 64;

/// A client session (one client process), named by its public handle: a
/// value derived from the session's secret (see [`super::secret`]).
/// Displayed in decimal, as lmstat-style scrapers expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one client request: its session and the session's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The session that sent the request.
    pub session: SessionId,
    /// The request's number within its session, starting at 1.
    pub seq: u64,
}

/// A Raft term, used as the fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// Names a grant: the term and log index of the entry that created it and its
/// slot within that entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GrantToken {
    /// Term of the creating entry.
    pub term: u64,
    /// Log index of the creating entry.
    pub index: u64,
    /// Position of the check-out within the entry's batch.
    pub slot: u32,
}

impl fmt::Display for GrantToken {
    /// `term.index.slot`, e.g. `3.1042.7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.term, self.index, self.slot)
    }
}

impl std::str::FromStr for GrantToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("grant token \"{s}\" is not of the form TERM.INDEX.SLOT");
        let mut it = s.split('.');
        let mut next = || it.next().ok_or_else(bad)?.parse::<u64>().map_err(|_| bad());
        let (term, index, slot) = (next()?, next()?, next()?);
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(GrantToken {
            term,
            index,
            slot: u32::try_from(slot).map_err(|_| bad())?,
        })
    }
}

/// A state-machine command: the payload of the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add or replace the license file `name` (`lmreread`). Lines were verified
    /// and bound to the cluster name before the command was proposed.
    ImportLicense {
        /// The license's name (its file name); importing a name again replaces it.
        name: String,
        /// The verified feature lines.
        lines: Vec<FeatureLine>,
        /// Who asked: the administrator certificate's subject, or the node
        /// that imported its license directory.
        author: String,
    },
    /// Remove the license file `name`.
    RemoveLicense {
        /// The name it was imported under.
        name: String,
        /// Who asked (as for an import).
        author: String,
    },
    /// Take `count` seats of `feature` for a session.
    Checkout {
        /// Which request this is, for retries.
        request: RequestId,
        /// The feature wanted.
        feature: String,
        /// Seats wanted.
        count: u32,
        /// The user name the client reports.
        user: String,
        /// The host name the client reports.
        host: String,
    },
    /// Return the seats of a grant.
    Checkin {
        /// Which request this is, for retries.
        request: RequestId,
        /// The grant to return.
        token: GrantToken,
    },
    /// The active node's sweep: these sessions stopped heartbeating; their
    /// grants are released and the sessions forgotten.
    Expire {
        /// Sessions to expire.
        sessions: Vec<SessionId>,
    },
    /// A node became active in a term.
    Activate {
        /// The term it leads.
        term: Term,
        /// The node.
        node: NodeId,
    },
}

/// A batch of commands in one log entry, stamped by the active node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The active node's wall-clock time when it proposed the batch (ms since the epoch).
    pub now_ms: u64,
    /// The commands, applied in order; the i-th gets slot i.
    pub commands: Vec<Command>,
}

/// Why a check-out was denied. Part of the domain, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    /// No license for this feature.
    NoSuchFeature,
    /// Every license line for the feature has expired.
    Expired,
    /// The request asks for more seats than the feature has in all.
    ExceedsLicensed,
    /// Not enough seats free right now.
    InUse,
    /// The count was zero or above [`CHECKOUT_SEATS_MAX`].
    BadCount,
    /// The server holds [`GRANTS_MAX`] grants or [`SESSIONS_MAX`] sessions.
    CapacityReached,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::NoSuchFeature => "no license for this feature",
            DenyReason::Expired => "every license for this feature has expired",
            DenyReason::ExceedsLicensed => "more seats asked for than are licensed",
            DenyReason::InUse => "not enough free seats",
            DenyReason::BadCount => "the seat count must be between 1 and 1000000",
            DenyReason::CapacityReached => "the server holds the most grants or sessions it allows",
        })
    }
}

/// What applying a command produced. Domain outcomes are values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Seats were granted.
    Granted {
        /// The grant's token, quoted in renewals and check-in.
        token: GrantToken,
        /// The feature.
        feature: String,
        /// Seats held.
        count: u32,
        /// Seats still free for new check-outs after this grant.
        available: u32,
        /// Seats licensed and unexpired.
        total: u32,
    },
    /// The check-out was refused.
    Denied {
        /// Why.
        reason: DenyReason,
        /// Seats free for new check-outs.
        available: u32,
        /// Seats licensed and unexpired.
        total: u32,
    },
    /// A grant was returned.
    CheckedIn {
        /// The feature.
        feature: String,
        /// Seats returned.
        count: u32,
    },
    /// The grant does not exist (already checked in or expired) or is not this session's.
    UnknownGrant,
    /// The request is older than the session's retry window; its first outcome is forgotten.
    Stale,
    /// The session was expired (it stopped heartbeating); start a new session.
    SessionExpired,
    /// A license was imported.
    Imported {
        /// The license name.
        name: String,
        /// Lines taken in.
        lines: u32,
        /// Lines ignored because a line with the same signature is already imported.
        duplicates: u32,
    },
    /// A license was removed.
    Removed {
        /// The license name.
        name: String,
    },
    /// A license change was refused because it would leave fewer seats than are in use.
    LicenseRefused {
        /// The feature that would be short.
        feature: String,
        /// Seats in use.
        in_use: u32,
        /// Seats that would remain licensed.
        licensed: u32,
    },
    /// No license by that name.
    NoSuchLicense,
    /// Sessions were expired.
    Expired {
        /// Sessions forgotten.
        sessions: u32,
        /// Grants released.
        grants: u32,
    },
    /// An activation was recorded.
    Activated,
}

/// Where a command sits in the log: used to build grant tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Term of the entry.
    pub term: u64,
    /// Index of the entry.
    pub index: u64,
}

/// Seats held by one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant token.
    pub token: GrantToken,
    /// The feature.
    pub feature: String,
    /// Seats held.
    pub count: u32,
    /// The holding session.
    pub session: SessionId,
    /// User name reported by the client.
    pub user: String,
    /// Host name reported by the client.
    pub host: String,
    /// State time when granted (ms since the epoch).
    pub since_ms: u64,
}

/// What the state knows of a client session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Grants the session holds.
    pub grants: BTreeSet<GrantToken>,
    /// Outcomes of its last requests, oldest first.
    recent: VecDeque<(u64, Outcome)>,
    /// Highest sequence number evicted from `recent`; requests at or below it
    /// that are not in `recent` are stale.
    forgotten_seq: u64,
}

/// An administrator's action, as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAction {
    /// State time when it was applied (ms since the epoch).
    pub at_ms: u64,
    /// Who asked (an administrator certificate's subject, or a node).
    pub author: String,
    /// What was asked, e.g. `import license acme.lic`.
    pub action: String,
    /// What came of it, e.g. `imported 3 lines` or the refusal.
    pub result: String,
}

/// The node that last became active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The node.
    pub node: NodeId,
    /// Its term.
    pub term: Term,
    /// State time of the activation.
    pub at_ms: u64,
}

/// The seats of one feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSeats {
    /// Seats in use.
    pub in_use: u32,
}

/// The replicated license state. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseState {
    /// State time: the highest `now_ms` applied (ms since the epoch).
    now_ms: u64,
    /// Imported licenses by name, lines in file order.
    licenses: BTreeMap<String, Vec<FeatureLine>>,
    /// Seats in use, by feature.
    in_use: BTreeMap<String, u32>,
    /// Live grants.
    grants: BTreeMap<GrantToken, Grant>,
    /// Known sessions.
    sessions: BTreeMap<SessionId, Session>,
    /// The last activation, if any.
    activation: Option<Activation>,
    /// Number of activations applied (failovers + 1).
    activations: u64,
    /// Recently expired sessions, oldest first (bounded by
    /// [`EXPIRED_SESSIONS_REMEMBERED`]), and the same as a set for look-ups.
    expired_order: VecDeque<SessionId>,
    expired_set: BTreeSet<SessionId>,
    /// The last [`ADMIN_ACTIONS_REMEMBERED`] administrators' actions, oldest first.
    admin_actions: VecDeque<AdminAction>,
}

/// A summary of one feature, for status reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSummary {
    /// The feature name.
    pub feature: String,
    /// The vendor (of its first line).
    pub vendor: String,
    /// Highest version licensed.
    pub version: String,
    /// Seats of all imported lines.
    pub licensed: u32,
    /// Seats of unexpired lines.
    pub unexpired: u32,
    /// Seats in use.
    pub in_use: u32,
    /// The latest expiry among the lines.
    pub expiry: Expiry,
}

impl LicenseState {
    /// An empty state: no licenses, no grants, time zero.
    pub fn new() -> LicenseState {
        LicenseState::default()
    }

    /// Applies one batch at a log position; returns one outcome per command.
    pub fn apply_batch(&mut self, at: LogPosition, batch: &Batch) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(batch.commands.len());
        for (slot, command) in batch.commands.iter().enumerate() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            outcomes.push(self.apply(at, slot, batch.now_ms, command));
        }
        outcomes
    }

    /// Applies one command at a log position and slot, with the proposer's time.
    ///
    /// Panics if an invariant breaks afterwards (a bug, never user input).
    pub fn apply(&mut self, at: LogPosition, slot: u32, now_ms: u64, command: &Command) -> Outcome {
        let before_ms = self.now_ms;
        self.now_ms = self.now_ms.max(now_ms);
        let outcome = match command {
            Command::ImportLicense {
                name,
                lines,
                author,
            } => {
                let outcome = self.import(name, lines);
                self.record_admin(author, format!("import license {name}"), &outcome);
                outcome
            }
            Command::RemoveLicense { name, author } => {
                let outcome = self.remove(name);
                self.record_admin(author, format!("remove license {name}"), &outcome);
                outcome
            }
            Command::Checkout {
                request,
                feature,
                count,
                user,
                host,
            } => {
                let token = GrantToken {
                    term: at.term,
                    index: at.index,
                    slot,
                };
                self.deduplicated(*request, |state| {
                    state.checkout(token, request.session, feature, *count, user, host)
                })
            }
            Command::Checkin { request, token } => {
                self.deduplicated(*request, |state| state.checkin(request.session, *token))
            }
            Command::Expire { sessions } => self.expire(sessions),
            Command::Activate { term, node } => {
                self.activation = Some(Activation {
                    node: *node,
                    term: *term,
                    at_ms: self.now_ms,
                });
                self.activations += 1;
                Outcome::Activated
            }
        };
        assert!(
            self.now_ms >= before_ms,
            "time regression {} → {}",
            before_ms,
            self.now_ms
        );
        self.check_seats();
        outcome
    }

    fn record_admin(&mut self, author: &str, action: String, outcome: &Outcome) {
        let result = match outcome {
            Outcome::Imported {
                lines, duplicates, ..
            } => format!("imported {lines} lines ({duplicates} duplicates)"),
            Outcome::Removed { .. } => "removed".to_string(),
            Outcome::NoSuchLicense => "refused: no license by that name".to_string(),
            Outcome::LicenseRefused {
                feature,
                in_use,
                licensed,
            } => format!(
                "refused: {in_use} seats of {feature} in use, {licensed} would remain licensed"
            ),
            other => format!("{other:?}"),
        };
        if self.admin_actions.len() >= ADMIN_ACTIONS_REMEMBERED {
            self.admin_actions.pop_front();
        }
        self.admin_actions.push_back(AdminAction {
            at_ms: self.now_ms,
            author: author.to_string(),
            action,
            result,
        });
    }

    fn deduplicated(
        &mut self,
        request: RequestId,
        run: impl FnOnce(&mut LicenseState) -> Outcome,
    ) -> Outcome {
        if let Some(session) = self.sessions.get(&request.session) {
            if let Some((_, first)) = session.recent.iter().find(|(seq, _)| *seq == request.seq) {
                return first.clone();
            }
            if request.seq <= session.forgotten_seq {
                return Outcome::Stale;
            }
        } else if self.expired_set.contains(&request.session) {
            return Outcome::SessionExpired;
        } else if self.sessions.len() >= SESSIONS_MAX {
            return Outcome::Denied {
                reason: DenyReason::CapacityReached,
                available: 0,
                total: 0,
            };
        }
        let outcome = run(self);
        let session = self
            .sessions
            .entry(request.session)
            .or_insert_with(|| Session {
                grants: BTreeSet::new(),
                recent: VecDeque::new(),
                forgotten_seq: 0,
            });
        if session.recent.len() >= DEDUP_WINDOW
            && let Some((seq, _)) = session.recent.pop_front()
        {
            session.forgotten_seq = session.forgotten_seq.max(seq);
        }
        session.recent.push_back((request.seq, outcome.clone()));
        outcome
    }

    fn checkout(
        &mut self,
        token: GrantToken,
        session: SessionId,
        feature: &str,
        count: u32,
        user: &str,
        host: &str,
    ) -> Outcome {
        let (licensed, unexpired) = self.seats_licensed(feature);
        let in_use = self.in_use.get(feature).copied().unwrap_or(0);
        let available = unexpired.saturating_sub(in_use);
        let deny = |reason| Outcome::Denied {
            reason,
            available,
            total: unexpired,
        };
        if count == 0 || count > CHECKOUT_SEATS_MAX {
            return deny(DenyReason::BadCount);
        }
        if licensed == 0 {
            return deny(DenyReason::NoSuchFeature);
        }
        if unexpired == 0 {
            return deny(DenyReason::Expired);
        }
        if count > unexpired {
            return deny(DenyReason::ExceedsLicensed);
        }
        if count > available {
            return deny(DenyReason::InUse);
        }
        if self.grants.len() >= GRANTS_MAX {
            return deny(DenyReason::CapacityReached);
        }
        let grant = Grant {
            token,
            feature: feature.to_string(),
            count,
            session,
            user: user.to_string(),
            host: host.to_string(),
            since_ms: self.now_ms,
        };
        let previous = self.grants.insert(token, grant);
        assert!(previous.is_none(), "grant token {token} issued twice");
        *self.in_use.entry(feature.to_string()).or_insert(0) += count;
        self.sessions
            .entry(session)
            .or_insert_with(|| Session {
                grants: BTreeSet::new(),
                recent: VecDeque::new(),
                forgotten_seq: 0,
            })
            .grants
            .insert(token);
        Outcome::Granted {
            token,
            feature: feature.to_string(),
            count,
            available: available - count,
            total: unexpired,
        }
    }

    fn checkin(&mut self, session: SessionId, token: GrantToken) -> Outcome {
        match self.grants.get(&token) {
            Some(grant) if grant.session == session => {}
            _ => return Outcome::UnknownGrant,
        }
        match self.release(token) {
            Some(grant) => Outcome::CheckedIn {
                feature: grant.feature,
                count: grant.count,
            },
            None => Outcome::UnknownGrant,
        }
    }

    /// Removes a grant and returns its seats; `None` if there is no such grant.
    fn release(&mut self, token: GrantToken) -> Option<Grant> {
        let grant = self.grants.remove(&token)?;
        let used = self.in_use.get_mut(&grant.feature);
        let used =
            used.unwrap_or_else(|| panic!("grant {token} of {} has no seat count", grant.feature));
        *used = used.checked_sub(grant.count).unwrap_or_else(|| {
            panic!(
                "seat count of {} below zero releasing {token}",
                grant.feature
            )
        });
        if *used == 0 {
            self.in_use.remove(&grant.feature);
        }
        if let Some(session) = self.sessions.get_mut(&grant.session) {
            session.grants.remove(&token);
        }
        Some(grant)
    }

    fn expire(&mut self, sessions: &[SessionId]) -> Outcome {
        let (mut expired, mut released) = (0, 0);
        for id in sessions {
            let Some(session) = self.sessions.remove(id) else {
                continue;
            };
            expired += 1;
            if self.expired_set.insert(*id) {
                self.expired_order.push_back(*id);
            }
            if self.expired_order.len() > EXPIRED_SESSIONS_REMEMBERED
                && let Some(oldest) = self.expired_order.pop_front()
            {
                self.expired_set.remove(&oldest);
            }
            for token in session.grants {
                if self.release(token).is_some() {
                    released += 1;
                }
            }
        }
        Outcome::Expired {
            sessions: expired,
            grants: released,
        }
    }

    fn import(&mut self, name: &str, lines: &[FeatureLine]) -> Outcome {
        // Lines already imported under another name (same signature) count once.
        let elsewhere: BTreeSet<&str> = self
            .licenses
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .flat_map(|(_, lines)| lines.iter().map(|l| l.signature.as_str()))
            .collect();
        let mut kept: Vec<FeatureLine> = Vec::with_capacity(lines.len());
        let mut duplicates = 0;
        for line in lines {
            if elsewhere.contains(line.signature.as_str())
                || kept.iter().any(|k| k.signature == line.signature)
            {
                duplicates += 1;
            } else {
                kept.push(line.clone());
            }
        }
        let mut candidate = self.licenses.clone();
        candidate.insert(name.to_string(), kept);
        if let Some(refusal) = self.shortfall(&candidate) {
            return refusal;
        }
        let count = candidate.get(name).map_or(0, Vec::len);
        self.licenses = candidate;
        Outcome::Imported {
            name: name.to_string(),
            lines: u32::try_from(count).unwrap_or(u32::MAX),
            duplicates,
        }
    }

    fn remove(&mut self, name: &str) -> Outcome {
        if !self.licenses.contains_key(name) {
            return Outcome::NoSuchLicense;
        }
        let mut candidate = self.licenses.clone();
        candidate.remove(name);
        if let Some(refusal) = self.shortfall(&candidate) {
            return refusal;
        }
        self.licenses = candidate;
        Outcome::Removed {
            name: name.to_string(),
        }
    }

    /// A refusal if `licenses` would license fewer seats than are in use.
    fn shortfall(&self, licenses: &BTreeMap<String, Vec<FeatureLine>>) -> Option<Outcome> {
        self.in_use.iter().find_map(|(feature, &in_use)| {
            let licensed = seats_in(licenses, feature, None);
            (licensed < in_use).then(|| Outcome::LicenseRefused {
                feature: feature.clone(),
                in_use,
                licensed,
            })
        })
    }

    /// Seats licensed for `feature`: (all lines, unexpired lines at state time).
    pub fn seats_licensed(&self, feature: &str) -> (u32, u32) {
        (
            seats_in(&self.licenses, feature, None),
            seats_in(&self.licenses, feature, Some(self.now_ms)),
        )
    }

    /// Asserts the seat invariants. Cheap: O(features).
    fn check_seats(&self) {
        for (feature, &in_use) in &self.in_use {
            let licensed = seats_in(&self.licenses, feature, None);
            assert!(
                in_use <= licensed,
                "feature {feature}: {in_use} seats in use but {licensed} licensed"
            );
        }
    }

    /// Asserts every invariant, including the expensive ones: the use
    /// counters equal the sum of the grants, sessions and grants agree.
    /// O(grants); tests and snapshot loading call it.
    pub fn check_invariants(&self) {
        self.check_seats();
        let mut counted: BTreeMap<&str, u32> = BTreeMap::new();
        for (token, grant) in &self.grants {
            assert_eq!(
                *token, grant.token,
                "grant filed under {token} names {}",
                grant.token
            );
            *counted.entry(grant.feature.as_str()).or_insert(0) += grant.count;
            let held = self
                .sessions
                .get(&grant.session)
                .is_some_and(|s| s.grants.contains(token));
            assert!(
                held,
                "grant {token} is not listed by its session {}",
                grant.session
            );
        }
        let tracked: BTreeMap<&str, u32> =
            self.in_use.iter().map(|(f, n)| (f.as_str(), *n)).collect();
        assert_eq!(counted, tracked, "seat counters disagree with the grants");
        let listed: usize = self.sessions.values().map(|s| s.grants.len()).sum();
        assert_eq!(
            listed,
            self.grants.len(),
            "sessions list {listed} grants, state holds {}",
            self.grants.len()
        );
        assert_eq!(
            self.expired_order.len(),
            self.expired_set.len(),
            "expired-session list and set disagree"
        );
        for id in &self.expired_order {
            assert!(
                !self.sessions.contains_key(id),
                "session {id} is both expired and live"
            );
        }
    }

    /// State time (ms since the epoch): the highest `now_ms` applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Live grants, by token.
    pub fn grants(&self) -> &BTreeMap<GrantToken, Grant> {
        &self.grants
    }

    /// A live grant.
    pub fn grant(&self, token: &GrantToken) -> Option<&Grant> {
        self.grants.get(token)
    }

    /// Whether a session was expired (and is remembered as such).
    pub fn is_expired(&self, session: SessionId) -> bool {
        self.expired_set.contains(&session)
    }

    /// Known sessions, by id.
    pub fn sessions(&self) -> &BTreeMap<SessionId, Session> {
        &self.sessions
    }

    /// Imported licenses by name.
    pub fn licenses(&self) -> &BTreeMap<String, Vec<FeatureLine>> {
        &self.licenses
    }

    /// Seats in use for a feature.
    pub fn in_use(&self, feature: &str) -> u32 {
        self.in_use.get(feature).copied().unwrap_or(0)
    }

    /// The last activation, if any node has become active.
    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    /// How many activations have been applied.
    pub fn activations(&self) -> u64 {
        self.activations
    }

    /// The most recent administrators' actions, oldest first.
    pub fn admin_actions(&self) -> &VecDeque<AdminAction> {
        &self.admin_actions
    }

    /// One summary per licensed feature, by name.
    pub fn features(&self) -> Vec<FeatureSummary> {
        let mut by_feature: BTreeMap<&str, FeatureSummary> = BTreeMap::new();
        for line in self.licenses.values().flatten() {
            let entry = by_feature
                .entry(line.feature.as_str())
                .or_insert_with(|| FeatureSummary {
                    feature: line.feature.clone(),
                    vendor: line.vendor.clone(),
                    version: line.version.clone(),
                    licensed: 0,
                    unexpired: 0,
                    in_use: self.in_use(&line.feature),
                    expiry: line.expiry,
                });
            entry.licensed = entry.licensed.saturating_add(line.seats);
            if line.expiry.is_valid_at(self.now_ms) {
                entry.unexpired = entry.unexpired.saturating_add(line.seats);
            }
            if version_greater(&line.version, &entry.version) {
                entry.version = line.version.clone();
            }
            entry.expiry = later_expiry(entry.expiry, line.expiry);
        }
        by_feature.into_values().collect()
    }
}

impl Session {
    /// How many recent outcomes this session remembers.
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }
}

fn seats_in(
    licenses: &BTreeMap<String, Vec<FeatureLine>>,
    feature: &str,
    at_ms: Option<u64>,
) -> u32 {
    licenses
        .values()
        .flatten()
        .filter(|line| line.feature == feature)
        .filter(|line| at_ms.is_none_or(|now| line.expiry.is_valid_at(now)))
        .fold(0u32, |sum, line| sum.saturating_add(line.seats))
}

fn later_expiry(a: Expiry, b: Expiry) -> Expiry {
    match (a, b) {
        (Expiry::Permanent, _) | (_, Expiry::Permanent) => Expiry::Permanent,
        (Expiry::On(x), Expiry::On(y)) => Expiry::On(x.max(y)),
    }
}

/// Compares dotted versions numerically where both parts are numbers.
fn version_greater(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a) > parts(b)
}
