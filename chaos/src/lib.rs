//! raftlm-chaos: a chaos harness for raftlm.
//!
//! It starts a three-node cluster of the real `raftlm` binary on loopback
//! (or, with `--netns`, on a LAN in a box whose access point is a real
//! address moved between hosts),
//! puts a fault-injecting TCP proxy on every ordered pair of nodes, runs a
//! workload of client sessions that check seats out and in while a seeded
//! nemesis kills, pauses, restarts and partitions nodes, records every
//! operation as a history, and checks the history and every node's final
//! state against raftlm's promises: never more seats granted than licensed
//! nor more said to be free than can be, no acknowledged grant lost, no
//! phantom grant, retries never granted twice, fencing terms never going
//! back, reads never going back to a lower applied index, replicas' stores
//! and live states converging, renewals calling every token not held
//! unknown, no impossible answer, no node exit the harness did not cause and
//! no panic, silent sessions expired neither early nor late, and no seat
//! left after the clients stop (the drain). See
//! `chaos/README.md` for how to run it and what a report looks like.
//!
//! Modules, from pure to effectful:
//! - [`history`] — the recorded operations (JSON lines);
//! - [`checker`] — the invariants over a history (pure, unit-tested);
//! - [`report`] — figures and verdicts as text or JSON;
//! - [`proxy`] — fault-injecting TCP proxies between nodes;
//! - [`lan`] — network namespaces for `--netns`: a LAN in a box, the
//!   access point's real address on it and a sampler of who holds it;
//! - [`powerfs`] — the FUSE filesystem a power cut takes unsynced writes from;
//! - [`cluster`] — the node processes, their configs and signals;
//! - [`host`] — with `--netns`, the hosts' systemd side: the watchdog and
//!   `ExecStopPost`;
//! - [`replica`] — every node's store read after the run;
//! - [`workload`] — client sessions with raw tonic clients;
//! - [`node_info`] — every node's log and state digests, asked over `NodeInfo`;
//! - [`nemesis`] — the seeded fault schedule;
//! - [`run`] — one run, start to end.
//!
//! Left out: clock drift (as opposed to jumps), and disk faults other than
//! power cuts (full disks, failing or corrupted reads).

#![warn(missing_docs)]

pub mod apps;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod host;
pub mod hostile;
pub mod lan;
pub mod nemesis;
pub mod node_info;
pub mod powerfs;
pub mod proxy;
pub mod replica;
pub mod report;
pub mod run;
pub mod tail;
pub mod workload;
