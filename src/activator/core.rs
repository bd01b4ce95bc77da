//! The activator's decisions, as a plain state machine: no I/O, no clock,
//! no tasks. [`Core::step`] takes what happened ([`Input`], with the
//! boot-time clock `now` it happened at) and returns what to do
//! ([`Action`]); the task in `super` performs the actions and feeds their
//! results back as inputs. The scenario scripts in
//! `tests/data/activator/*.script` drive this core with inputs and record
//! the actions it returns (`tests/activator_scripts.rs`); those of
//! `tests/data/activator/cluster/` drive two or three cores together and
//! check after every step that no two of them serve at the same time.
//!
//! The state is a few enums rather than flags, so that impossible
//! combinations cannot be built: the access point's address ([`Address`]),
//! its listener ([`Listener`]), activation and service ([`Service`]),
//! taking part in elections ([`Standing`]) and the node's life ([`Life`]).
//! After every step the core checks the rules that make serving safe and
//! panics, with the values, if one is broken (see `Core::check_invariants`).
//!
//! The rules (`docs/architecture.md`, "The activator"), for the leader of term `T`:
//! - every heartbeat it starts a quorum round (a slow one is not waited
//!   for, up to [`ROUNDS_IN_FLIGHT_MAX`] at once); a round
//!   that started at `t0` and confirmed leadership makes the lease valid
//!   until `t0 + lease_ms`;
//! - it activates once it has held a lease for `lease_ms + lease_margin_ms`
//!   since its first confirmed round (by then any previous leader's lease
//!   has run out), its clock agrees with a majority, and — in command mode —
//!   the access point's `up` command has succeeded (and no release's `down`
//!   is still to succeed: a commit that arrives then comes too late); activation is the
//!   `Activate` entry committed in `T`, and only then does it serve;
//! - it stops serving when the lease lapses, when no majority of clocks
//!   agrees with its own, or when it stops leading; then it releases the
//!   access point: the listener is closed and, in command mode, `down` runs,
//!   and is retried every tick until it succeeds;
//! - an activation that fails or times out releases the access point too, so
//!   an `up` never outlives a failed activation;
//! - a node that must not serve steps back from leadership: for good when
//!   its config cannot be safe with the cluster's (wrong cluster name,
//!   incompatible timing), for three election timeouts when its clock is the
//!   odd one.

use std::fmt;

use crate::config::AccessPointMode;
use crate::license::ids::{NodeId, Term};

/// What the core needs to know of the node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How often the leader starts a quorum round.
    pub heartbeat_ms: u64,
    /// `L`: how long one confirmed round lets the node serve.
    pub lease_ms: u64,
    /// `M`: the wait beyond `L` after the first confirmed round.
    pub lease_margin_ms: u64,
    /// The longest election timeout: a clock step-back lasts three of them.
    pub election_timeout_max_ms: u64,
    /// The access point backend.
    pub mode: AccessPointMode,
    /// Never stop serving when the lease lapses: the `lease` break of the
    /// test-only feature fault-injection (`src/fault.rs`). Always `false` in a
    /// shipped build.
    pub ignore_lapse: bool,
}

/// How this node's clock compares with its peers' (see `src/clock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockView {
    /// A majority of clocks agrees with this node's.
    Agrees,
    /// Not enough fresh readings to tell.
    Unknown,
    /// This node's clock is the odd one.
    Condemned,
}

/// How an `Activate` proposal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Committed in this term.
    Committed,
    /// Committed, but in another term (this node lost leadership meanwhile).
    OtherTerm,
    /// Not committed (an error, or no answer within the activation timeout).
    Failed(String),
    /// The state refused it: this node must never serve (the reason).
    Refused(String),
    /// Not proposed: this node's state machine has not applied what a peer
    /// has (the reason). Its log lacks committed entries — it led before a
    /// restart and lost a log tail — or it could not catch up in time.
    Behind(String),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Raft's view changed (or is polled): whether this node leads, and the term.
    Raft {
        /// This node is the leader.
        leader: bool,
        /// The current term.
        term: Term,
        /// The node this one knows as the leader of `term`, if any.
        leader_id: Option<NodeId>,
    },
    /// The periodic tick (more often than the heartbeat), with the clock's
    /// verdict and how long this node has not heard from a leader.
    Tick {
        /// The clock's verdict now.
        clock: ClockView,
        /// Ms since this node last heard from a leader (or started).
        silence_ms: u64,
        /// A fresh random delay, `0..=election_timeout_max_ms -
        /// election_timeout_min_ms`, added to the silence an election waits for.
        jitter_ms: u64,
    },
    /// A quorum round of `term` that started at `t0` ended.
    Round {
        /// The term it was started in.
        term: Term,
        /// When it started (boot-time ms).
        t0: u64,
        /// Whether a quorum confirmed this node's leadership in `term`.
        ok: bool,
    },
    /// The access point's `up` command ended.
    Up {
        /// Whether it succeeded; else why not.
        result: Result<(), String>,
    },
    /// The access point's `down` command ended.
    Down {
        /// Whether it succeeded; else why not.
        result: Result<(), String>,
    },
    /// The `Activate` proposal of `term` ended.
    Activated {
        /// The term it was proposed in.
        term: Term,
        /// How it ended.
        result: Activation,
    },
    /// Binding the access point's listener ended.
    Bound {
        /// Whether it is bound; else why not.
        result: Result<(), String>,
    },
    /// A planned handover to this node: node `from`, stopping as leader of
    /// `term`, has released the access point; `served` if it had activated
    /// in `term`. Believed only if this node's own view is that `from` leads
    /// `term` (any member's certificate can send one).
    Handover {
        /// The node that sent it (bound to its certificate).
        from: NodeId,
        /// The term relinquished.
        term: Term,
        /// Whether that leader served in it.
        served: bool,
    },
    /// The node is stopping.
    Stop,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a quorum round in `term` (report [`Input::Round`] with `t0 = now`).
    Round {
        /// The term.
        term: Term,
    },
    /// Publish the lease: valid in `term` until `until_ms`; `serving` says
    /// whether requests may be answered.
    Lease {
        /// The term.
        term: Term,
        /// Boot-time ms until which it is valid (0: no lease).
        until_ms: u64,
        /// Whether the node serves.
        serving: bool,
    },
    /// Run the access point's `up` command (report [`Input::Up`]).
    Up,
    /// Run the access point's `down` command (report [`Input::Down`]).
    Down,
    /// Propose `Activate` in `term` (report [`Input::Activated`]; the task
    /// gives up after its activation timeout).
    Activate {
        /// The term.
        term: Term,
    },
    /// Bind the access point's listener and serve on it (report [`Input::Bound`]).
    Bind,
    /// Close the access point's listener.
    Unbind,
    /// Turn heartbeats off, and start no elections: for good (`until_ms`
    /// `None`) or until then.
    StepBack {
        /// Why, for the log and `status`.
        why: String,
        /// Boot-time ms at which to take part again; `None`: never.
        until_ms: Option<u64>,
    },
    /// Turn heartbeats back on; elections are started again.
    Rejoin,
    /// Start an election now (the leader has been silent too long): ask
    /// every voter a pre-vote first, and start it only if a majority, this
    /// node included, grants it (`src/raft/pre_vote.rs`; performed by the
    /// task, which reports nothing back: a won election shows as Raft's view).
    Elect,
    /// Hand leadership over (this leader is stopping): ask the most
    /// up-to-date follower to start an election at once.
    Handover {
        /// The term this node leads in.
        term: Term,
        /// Whether it served (activated) in it.
        served: bool,
    },
    /// Log a line.
    Log {
        /// `info`, `warn` or `error`.
        level: Level,
        /// What to say.
        message: String,
    },
    /// Everything is released: the task may end.
    Stopped,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something to look at.
    Warn,
    /// Something is wrong.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Round { term } => write!(f, "round term={term}"),
            Action::Lease {
                term,
                until_ms,
                serving,
            } => write!(f, "lease term={term} until={until_ms} serving={serving}"),
            Action::Up => write!(f, "up"),
            Action::Down => write!(f, "down"),
            Action::Activate { term } => write!(f, "activate term={term}"),
            Action::Bind => write!(f, "bind"),
            Action::Unbind => write!(f, "unbind"),
            Action::StepBack { why, until_ms } => match until_ms {
                Some(until) => write!(f, "step-back until={until} why=\"{why}\""),
                None => write!(f, "step-back for-good why=\"{why}\""),
            },
            Action::Rejoin => write!(f, "rejoin"),
            Action::Elect => write!(f, "elect"),
            Action::Handover { term, served } => {
                write!(f, "handover term={term} served={served}")
            }
            Action::Log { level, message } => write!(f, "log {level} \"{message}\""),
            Action::Stopped => write!(f, "stopped"),
        }
    }
}

/// Most quorum rounds in flight at once: a round starts every heartbeat
/// without waiting for a slow one to end, so one slow round does not let the
/// lease lapse.
pub const ROUNDS_IN_FLIGHT_MAX: u32 = 4;

/// How often a repeated failure (an `up` that keeps failing, a bind) is logged.
pub const REPEAT_LOG_MS: u64 = 1_000;

/// The access point's address in `command` mode: raised by `up`, released by
/// `down`. Every other mode stays [`Address::Down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// Not raised: no `up` ran, or a `down` succeeded since.
    Down,
    /// `up` runs. `then_lower`: the address was released meanwhile, so
    /// `down` runs once `up` ends, whatever its result (a failed `up` may
    /// have half raised it).
    Raising {
        /// Released while `up` ran.
        then_lower: bool,
    },
    /// `up` succeeded and no `down` has since.
    Up,
    /// Released: a `down` must still succeed. `running` while one runs;
    /// otherwise one failed and is retried at the next tick.
    Lowering {
        /// A `down` runs.
        running: bool,
    },
}

impl Address {
    /// `up` succeeded (or was cut short by a release) and no `down` has
    /// succeeded since.
    fn raised(self) -> bool {
        matches!(self, Address::Up | Address::Lowering { .. })
    }

    /// A `down` must still succeed (now, or once `up` ends).
    fn down_needed(self) -> bool {
        matches!(
            self,
            Address::Raising { then_lower: true } | Address::Lowering { .. }
        )
    }
}

/// The access point's listener (`bind` and `command` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Not bound.
    Closed,
    /// A bind runs.
    Binding,
    /// Bound, serving on the access point.
    Bound,
}

/// Whether the node serves, or is on its way to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Not serving, and no `Activate` proposal runs.
    Idle,
    /// An `Activate` proposal runs.
    Activating,
    /// Activated in the lease's term: requests are answered.
    Serving,
}

/// Whether the node takes part in elections and may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It does.
    Member,
    /// Stepped back until `until_ms` (its clock is the odd one, or its state
    /// is behind its peers'); then it rejoins.
    Paused {
        /// Boot-time ms at which it rejoins.
        until_ms: u64,
        /// `clock` or `catch-up`, for the log line that ends the step-back.
        reason: &'static str,
    },
    /// Stepped back for good (its config cannot be safe with the
    /// cluster's). A pause that was running when it did is kept until it
    /// ends, so that the task still wakes then; it ends with no rejoin.
    Retired {
        /// The end of that pause, if one runs.
        pause_until_ms: Option<u64>,
    },
}

impl Standing {
    /// The end of a running step-back, if any.
    fn back_until(self) -> Option<u64> {
        match self {
            Standing::Member => None,
            Standing::Paused { until_ms, .. } => Some(until_ms),
            Standing::Retired { pause_until_ms } => pause_until_ms,
        }
    }

    /// Takes a step-back until `until_ms` for `reason`.
    fn pause(self, until_ms: u64, reason: &'static str) -> Standing {
        match self {
            Standing::Retired { .. } => Standing::Retired {
                pause_until_ms: Some(until_ms),
            },
            _ => Standing::Paused { until_ms, reason },
        }
    }
}

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Running.
    Running,
    /// Told to stop: releasing the access point.
    Stopping {
        /// The handover to send once the access point is released: the term
        /// this node led and whether it served in it (`None`: it did not
        /// lead, or had stepped back for good).
        handover: Option<(Term, bool)>,
    },
    /// Everything is released and [`Action::Stopped`] was returned.
    Stopped,
}

/// The activator's state.
#[derive(Debug, Clone)]
pub struct Core {
    settings: Settings,
    /// Raft's last view: whether this node leads, and the term.
    leader: bool,
    term: Term,
    /// The term the lease and activation below belong to.
    lease_term: Term,
    lease_until_ms: u64,
    /// Activation and service in `lease_term`.
    service: Service,
    /// When the first confirmed round of `lease_term` started.
    first_round_ms: Option<u64>,
    /// Quorum rounds started and not yet ended.
    rounds_in_flight: u32,
    /// The address, in `command` mode.
    address: Address,
    /// The listener.
    listener: Listener,
    /// An `up`, an activation or a bind failed: retry at the next tick, not at once.
    retry_at_tick: bool,
    /// Whether this node takes part in elections.
    standing: Standing,
    /// Running, stopping or stopped.
    life: Life,
    /// When a repeated failure was last logged.
    last_repeat_log_ms: Option<u64>,
    /// The clock's verdict at the last tick.
    clock: ClockView,
    /// When the last quorum round was started.
    last_round_ms: Option<u64>,
    /// When this node last started an election.
    last_elect_ms: Option<u64>,
    /// A term whose leader served in it and handed over to this node.
    relinquished: Option<Term>,
    /// The latest term whose leader this node knew, and that leader (from
    /// Raft's view); kept while an election of the next term runs.
    last_leader: Option<(Term, NodeId)>,
}

impl Core {
    /// A core for a node that neither leads nor holds anything.
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            leader: false,
            term: Term::default(),
            lease_term: Term::default(),
            lease_until_ms: 0,
            service: Service::Idle,
            first_round_ms: None,
            rounds_in_flight: 0,
            address: Address::Down,
            listener: Listener::Closed,
            retry_at_tick: false,
            standing: Standing::Member,
            life: Life::Running,
            last_repeat_log_ms: None,
            clock: ClockView::Unknown,
            last_round_ms: None,
            last_elect_ms: None,
            relinquished: None,
            last_leader: None,
        }
    }

    /// Whether the node serves.
    pub fn serving(&self) -> bool {
        self.service == Service::Serving
    }

    /// When the core wants a tick sooner than the next periodic one (the end
    /// of the `L + M` wait, the end of a clock step-back), if after `now`.
    pub fn wake_at(&self, now: u64) -> Option<u64> {
        let serve_from = self
            .first_round_ms
            .filter(|_| self.service == Service::Idle && self.leader)
            .map(|first| first + self.wait_ms());
        // The lease's end, while the node serves or holds the address.
        let lapse = (self.serving() || self.address.raised())
            .then_some(self.lease_until_ms)
            .filter(|&until| until > 0);
        [serve_from, self.standing.back_until(), lapse]
            .into_iter()
            .flatten()
            .filter(|&at| at > now)
            .min()
    }

    /// Whether the access point may be held: listener bound or `up` run.
    pub fn holds(&self) -> bool {
        self.listener != Listener::Closed || self.address != Address::Down
    }

    /// Takes one input at boot-time `now` and returns what to do.
    pub fn step(&mut self, now: u64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Raft {
                leader,
                term,
                leader_id,
            } => {
                let changed = leader != self.leader || term != self.term;
                self.leader = leader;
                self.term = term;
                if let Some(id) = leader_id {
                    self.last_leader = Some((term, id));
                }
                if changed && (self.lease_term != term || !leader) {
                    if self.serving() {
                        out.push(log(
                            Level::Info,
                            format!(
                                "no longer leader in term {}: stopping service",
                                self.lease_term
                            ),
                        ));
                    }
                    self.reset_lease(&mut out);
                    self.release(&mut out);
                    self.lease_term = term;
                }
                let out = self.finish(now, out);
                // The lease rules did not run: a lapse is `decide`'s at the
                // next other input (the task wakes at the lease's end).
                self.check_invariants(now, false);
                return out;
            }
            Input::Tick {
                clock,
                silence_ms,
                jitter_ms,
            } => {
                self.clock = clock;
                // Elections are started here, with fresh jitter each time:
                // once a leader has been silent for longer than voters refuse
                // votes for (election_timeout_max_ms), plus the jitter.
                if !self.leader
                    && self.standing == Standing::Member
                    && self.life == Life::Running
                    && silence_ms >= self.settings.election_timeout_max_ms + jitter_ms
                    && self
                        .last_elect_ms
                        .is_none_or(|at| now >= at + self.settings.election_timeout_max_ms)
                {
                    self.last_elect_ms = Some(now);
                    out.push(Action::Elect);
                }
                self.retry_at_tick = false;
                // A step-back that is over ends; one for good stays.
                match self.standing {
                    Standing::Paused { until_ms, reason } if now >= until_ms => {
                        self.standing = Standing::Member;
                        out.push(Action::Rejoin);
                        out.push(log(
                            Level::Info,
                            format!("{reason} step-back over: taking part in elections again"),
                        ));
                    }
                    Standing::Retired {
                        pause_until_ms: Some(until_ms),
                    } if now >= until_ms => {
                        self.standing = Standing::Retired {
                            pause_until_ms: None,
                        };
                    }
                    _ => {}
                }
                if self.address == (Address::Lowering { running: false })
                    && self.listener == Listener::Closed
                {
                    // A failed down is retried every tick until it succeeds.
                    self.address = Address::Lowering { running: true };
                    out.push(Action::Down);
                }
                if self.leader
                    && self.lease_term == self.term
                    && self.rounds_in_flight < ROUNDS_IN_FLIGHT_MAX
                    && self.standing == Standing::Member
                    && clock != ClockView::Condemned
                    && self.life == Life::Running
                    && self
                        .last_round_ms
                        .is_none_or(|at| now >= at + self.settings.heartbeat_ms)
                {
                    // No rounds while stepped back: their heartbeats would
                    // keep the followers from electing another node.
                    self.rounds_in_flight += 1;
                    self.last_round_ms = Some(now);
                    out.push(Action::Round { term: self.term });
                }
            }
            Input::Round { term, t0, ok } => {
                self.rounds_in_flight = self.rounds_in_flight.saturating_sub(1);
                if ok && self.leader && term == self.term && term == self.lease_term {
                    self.lease_until_ms = self.lease_until_ms.max(t0 + self.settings.lease_ms);
                    self.first_round_ms.get_or_insert(t0);
                    out.push(self.lease_action());
                }
            }
            Input::Up { result } => {
                if let Err(message) = &result {
                    // Retried at the next tick, not at once.
                    self.retry_at_tick = true;
                    self.repeat_log(
                        now,
                        &mut out,
                        format!("access point up command failed; retrying, not serving until it succeeds: {message}"),
                    );
                }
                self.address = match (self.address, result.is_ok()) {
                    // Released while up ran: take it down again (a failed up
                    // may have half raised the address). A lease that lapsed
                    // meanwhile is `decide`'s.
                    (Address::Raising { then_lower: true }, _) => {
                        Address::Lowering { running: false }
                    }
                    (Address::Lowering { running }, _) => Address::Lowering { running },
                    (_, true) => Address::Up,
                    (Address::Raising { then_lower: false }, false) => Address::Down,
                    (other, false) => other,
                };
                if self.address.down_needed() {
                    self.release(&mut out);
                }
            }
            Input::Down { result } => match result {
                Ok(()) => {
                    self.address = match self.address {
                        Address::Raising { .. } => Address::Raising { then_lower: false },
                        _ => Address::Down,
                    };
                    out.push(log(Level::Info, "access point down".into()));
                }
                Err(message) => {
                    if let Address::Lowering { .. } = self.address {
                        self.address = Address::Lowering { running: false };
                    }
                    out.push(log(
                        Level::Error,
                        format!("access point down command failed; retrying every tick: {message}"),
                    ));
                }
            },
            Input::Activated { term, result } => {
                if self.service == Service::Activating {
                    self.service = Service::Idle;
                }
                match result {
                    Activation::Committed
                        if term == self.lease_term
                            && self.may_activate(now)
                            && (self.settings.mode != AccessPointMode::Command
                                || self.address == Address::Up) =>
                    {
                        self.service = Service::Serving;
                        out.push(self.lease_action());
                        out.push(log(
                            Level::Info,
                            format!("active in term {term}: serving license requests"),
                        ));
                    }
                    Activation::Committed | Activation::OtherTerm => {
                        out.push(log(
                            Level::Warn,
                            format!("activation of term {term} came too late: not serving"),
                        ));
                        self.release(&mut out);
                    }
                    Activation::Failed(message) => {
                        self.retry_at_tick = true;
                        out.push(log(
                            Level::Warn,
                            format!("activation of term {term} not committed: {message}; releasing the access point"),
                        ));
                        self.release(&mut out);
                    }
                    Activation::Behind(why)
                        if term == self.lease_term
                            && self.leader
                            && self.standing.back_until().is_none() =>
                    {
                        // Step back for a while so that a node whose log is
                        // complete is elected; rejoin afterwards.
                        let until = now + 3 * self.settings.election_timeout_max_ms;
                        self.reset_lease(&mut out);
                        self.release(&mut out);
                        self.standing = self.standing.pause(until, "catch-up");
                        out.push(log(
                            Level::Warn,
                            format!("not activating in term {term}: {why}; stepping back from leadership so that a node with the whole log is elected"),
                        ));
                        out.push(Action::StepBack {
                            why,
                            until_ms: Some(until),
                        });
                    }
                    Activation::Behind(why) => {
                        self.retry_at_tick = true;
                        out.push(log(
                            Level::Warn,
                            format!("activation of term {term} not proposed: {why}"),
                        ));
                        self.release(&mut out);
                    }
                    Activation::Refused(why) => {
                        self.standing = Standing::Retired {
                            pause_until_ms: self.standing.back_until(),
                        };
                        self.reset_lease(&mut out);
                        self.release(&mut out);
                        out.push(log(
                            Level::Error,
                            format!("not serving: {why}; stepping back from leadership (no heartbeats, no elections) so that another node takes over; fix this node's config and restart it"),
                        ));
                        out.push(Action::StepBack {
                            why,
                            until_ms: None,
                        });
                    }
                }
            }
            Input::Bound { result } => match result {
                Ok(()) if self.serving() => {
                    self.listener = Listener::Bound;
                    out.push(log(Level::Info, "access point up".into()));
                }
                Ok(()) => {
                    // Bound after the node stopped serving: close it again.
                    self.listener = Listener::Bound;
                    self.release(&mut out);
                }
                Err(message) => {
                    if self.listener == Listener::Binding {
                        self.listener = Listener::Closed;
                    }
                    self.retry_at_tick = true;
                    self.repeat_log(
                        now,
                        &mut out,
                        format!("access point not bound yet; serving on this node's own address and retrying: {message}"),
                    );
                }
            },
            Input::Handover { from, term, served } => {
                if self.last_leader != Some((term, from)) {
                    let view = match self.last_leader {
                        Some((known, id)) => format!("node {id} led term {known}"),
                        None => "no leader is known".to_string(),
                    };
                    out.push(log(
                        Level::Warn,
                        format!(
                            "handover from node {from} for term {term} not believed: in this node's view {view}; the wait before activating stays"
                        ),
                    ));
                } else if served {
                    self.relinquished = Some(term);
                }
            }
            Input::Stop => {
                let served = self.serving();
                let term = self.lease_term;
                if self.life == Life::Running {
                    let hand_over =
                        self.leader && !matches!(self.standing, Standing::Retired { .. });
                    // Sent once the address is released (see `finish`).
                    self.life = Life::Stopping {
                        handover: hand_over.then_some((term, served)),
                    };
                }
                self.reset_lease(&mut out);
                self.release(&mut out);
            }
        }
        self.decide(now, &mut out);
        let out = self.finish(now, out);
        self.check_invariants(now, true);
        out
    }

    /// Panics, saying which and with the values, if the state breaks one of
    /// the rules that make serving safe. Run after every step; `decided`:
    /// the lease rules ran in it (every input but a Raft view).
    ///
    /// - serving ⇒ this node leads the lease's term, has a lease, and (once
    ///   the rules ran, unless the test-only `ignore_lapse` is set) the lease
    ///   is valid at `now`;
    /// - serving ⇒ running, a member (not stepped back);
    /// - in `command` mode, serving ⇒ the address is up (`up` succeeded and
    ///   no release began); in other modes no address is ever raised;
    /// - the listener is bound only while the node serves (a bind that
    ///   completes afterwards is closed in the same step); in `none` mode it
    ///   is never bound. In `bind` mode the node may serve while its bind has
    ///   not succeeded yet: it serves on its own address meanwhile;
    /// - a stopped node holds nothing and runs no activation.
    fn check_invariants(&self, now: u64, decided: bool) {
        let serving = self.serving();
        if serving {
            assert!(
                self.leader && self.lease_term == self.term,
                "activator: serving in term {} but Raft's view is leader={} in term {}",
                self.lease_term,
                self.leader,
                self.term
            );
            assert!(
                self.lease_until_ms > 0,
                "activator: serving in term {} without a lease",
                self.lease_term
            );
            assert!(
                !decided || self.settings.ignore_lapse || now < self.lease_until_ms,
                "activator: serving at {now} on a lease of term {} that lapsed at {}",
                self.lease_term,
                self.lease_until_ms
            );
            assert!(
                self.life == Life::Running && self.standing == Standing::Member,
                "activator: serving while {:?} and {:?}",
                self.life,
                self.standing
            );
            assert!(
                self.settings.mode != AccessPointMode::Command || self.address == Address::Up,
                "activator: serving in command mode with the address {:?}",
                self.address
            );
        }
        assert!(
            self.settings.mode == AccessPointMode::Command || self.address == Address::Down,
            "activator: address {:?} in {:?} mode",
            self.address,
            self.settings.mode
        );
        assert!(
            self.listener != Listener::Bound || serving,
            "activator: the listener is bound but the node does not serve"
        );
        assert!(
            self.settings.mode != AccessPointMode::None || self.listener == Listener::Closed,
            "activator: listener {:?} in none mode",
            self.listener
        );
        if self.life == Life::Stopped {
            assert!(
                !self.holds() && self.service == Service::Idle,
                "activator: stopped while holding the access point ({:?}, {:?}) or {:?}",
                self.address,
                self.listener,
                self.service
            );
        }
    }

    /// After any input: the lease, clock and activation rules.
    fn decide(&mut self, now: u64, out: &mut Vec<Action>) {
        let clock = self.clock;
        if self.life != Life::Running || matches!(self.standing, Standing::Retired { .. }) {
            return;
        }
        if clock == ClockView::Condemned && self.leader && self.standing.back_until().is_none() {
            let until = now + 3 * self.settings.election_timeout_max_ms;
            out.push(log(
                Level::Error,
                "this node's wall clock disagrees with a majority of its peers' by more than timing.clock_skew_max_ms: not serving, and stepping back from leadership; fix the clock (NTP)".into(),
            ));
            self.reset_lease(out);
            self.release(out);
            self.standing = self.standing.pause(until, "clock");
            out.push(Action::StepBack {
                why: "this node's clock disagrees with a majority of its peers'".into(),
                until_ms: Some(until),
            });
            return;
        }
        if self.serving() && now >= self.lease_until_ms && !self.settings.ignore_lapse {
            out.push(log(
                Level::Warn,
                format!("quorum lease of term {} lapsed: stopping service and releasing the access point", self.lease_term),
            ));
            self.reset_lease(out);
            self.release(out);
            return;
        }
        if self.serving() && clock != ClockView::Agrees {
            // Without a majority of clocks the batcher stamps nothing: stop
            // serving rather than answer every request with an error.
            out.push(log(
                Level::Warn,
                "no majority of clocks agrees with this node's: stopping service and releasing the access point".into(),
            ));
            self.reset_lease(out);
            self.release(out);
            return;
        }
        if !self.serving() && self.address == Address::Up && !self.may_activate(now) {
            // The address is up but this node may not activate (the lease
            // lapsed while `Activate` was in flight): release it now, not
            // when the activation times out.
            out.push(log(
                Level::Warn,
                format!(
                    "quorum lease of term {} lapsed before activation: releasing the access point",
                    self.lease_term
                ),
            ));
            self.release(out);
            return;
        }
        if !self.serving()
            && self.may_activate(now)
            && clock == ClockView::Agrees
            && !self.retry_at_tick
        {
            if self.settings.mode == AccessPointMode::Command && self.address != Address::Up {
                // Activate only with the address up: not while `up` runs,
                // nor while a release's `down` has not succeeded yet (the
                // address would go down under a serving node).
                if self.address == Address::Down {
                    self.address = Address::Raising { then_lower: false };
                    out.push(Action::Up);
                }
            } else if self.service != Service::Activating {
                self.service = Service::Activating;
                out.push(Action::Activate {
                    term: self.lease_term,
                });
            }
        }
        if self.serving()
            && self.settings.mode != AccessPointMode::None
            && self.listener == Listener::Closed
            && !self.retry_at_tick
        {
            self.listener = Listener::Binding;
            out.push(Action::Bind);
        }
    }

    /// How long after its first confirmed round a leader waits before it
    /// activates: `L + M`, or nothing in the term right after one whose
    /// leader served and handed over to this node (it stopped serving first,
    /// and every earlier lease had run out before it served).
    fn wait_ms(&self) -> u64 {
        if self
            .relinquished
            .is_some_and(|term| term.0 + 1 == self.lease_term.0)
        {
            0
        } else {
            self.settings.lease_ms + self.settings.lease_margin_ms
        }
    }

    /// Whether the L + M wait is over and the lease is valid now, in the current term.
    fn may_activate(&self, now: u64) -> bool {
        let Some(first) = self.first_round_ms else {
            return false;
        };
        self.leader
            && self.lease_term == self.term
            && self.standing == Standing::Member
            && self.life == Life::Running
            && now >= first + self.wait_ms()
            && now < self.lease_until_ms
    }

    fn lease_action(&self) -> Action {
        Action::Lease {
            term: self.lease_term,
            until_ms: self.lease_until_ms,
            serving: self.serving(),
        }
    }

    /// No lease and no service any more (published at once).
    fn reset_lease(&mut self, out: &mut Vec<Action>) {
        let had = self.serving() || self.lease_until_ms != 0;
        if self.serving() {
            self.service = Service::Idle;
        }
        self.lease_until_ms = 0;
        self.first_round_ms = None;
        if had {
            out.push(Action::Lease {
                term: self.lease_term,
                until_ms: 0,
                serving: false,
            });
        }
    }

    /// Closes the listener and, if `up` ran, runs `down`.
    fn release(&mut self, out: &mut Vec<Action>) {
        if self.serving() {
            self.service = Service::Idle;
            out.push(self.lease_action());
        }
        if self.listener == Listener::Bound {
            self.listener = Listener::Closed;
            out.push(Action::Unbind);
        }
        self.address = match self.address {
            Address::Raising { .. } => Address::Raising { then_lower: true },
            Address::Up | Address::Lowering { running: false } => {
                out.push(Action::Down);
                Address::Lowering { running: true }
            }
            other => other,
        };
    }

    fn repeat_log(&mut self, now: u64, out: &mut Vec<Action>, message: String) {
        if self
            .last_repeat_log_ms
            .is_none_or(|at| now >= at + REPEAT_LOG_MS)
        {
            self.last_repeat_log_ms = Some(now);
            out.push(log(Level::Warn, message));
        }
    }

    fn finish(&mut self, _now: u64, out: Vec<Action>) -> Vec<Action> {
        let mut out = out;
        if let Life::Stopping { handover } = self.life
            && !self.holds()
            && self.service != Service::Activating
        {
            if let Some((term, served)) = handover {
                out.push(Action::Handover { term, served });
            }
            self.life = Life::Stopped;
            out.push(Action::Stopped);
        }
        out
    }
}

fn log(level: Level, message: String) -> Action {
    Action::Log { level, message }
}
