//! The batcher: collects concurrent license commands into one log entry.
//!
//! openraft 0.9 flushes the log once per `client_write` and waits for that
//! flush before the next append, so one command per entry would cost one
//! fsync per license request. The batcher owns a bounded queue; its task
//! takes a permit (at most `in_flight_max` batches proposed and not yet
//! committed), waits for the first command, gathers more for up to
//! `linger_us` or `commands_max` commands, stamps the batch with the wall
//! clock (only while it agrees with a majority of the peers' clocks, see
//! `src/clock.rs`), and proposes it. A batch also stops at [`BATCH_BYTES_MAX`] encoded
//! bytes, and a command over [`COMMAND_BYTES_MAX`] is refused before it is
//! queued, so that every log entry fits one AppendEntries message. While batches are in flight, new commands queue up
//! and go out together in the next one (group commit), so under load a batch
//! grows to what one flush can carry and an idle request pays at most the
//! linger time.
//!
//! Every submitted command gets exactly one answer: its outcome and the log id
//! of the entry, or an error saying this node is not the leader (with a hint)
//! or that the proposal failed. An error does not mean the command was not
//! applied: the client retries with the same request id, and the state
//! machine's per-session dedup returns the first outcome.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::Batching;
use crate::license::state::{Batch, Command, Outcome};
use crate::raft::{LogId, Raft};

/// Commands waiting for the batcher, at most.
pub const QUEUE_MAX: usize = 16_384;
/// Largest command, encoded. The largest a request can make is a license
/// import (at most 1 MiB of text on the admin plane, or a file of the license
/// directory); anything bigger is refused before it reaches the log.
pub const COMMAND_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Largest batch (one log entry), encoded: commands are added while they fit,
/// so a command near [`COMMAND_BYTES_MAX`] travels alone. openraft gives an
/// AppendEntries one heartbeat interval to be sent, written and synced on the
/// follower, so an entry must be small enough for that, and must fit alone in
/// one AppendEntries message ([`crate::raft::network::APPEND_BYTES_MAX`]).
pub const BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
const _: () = assert!(COMMAND_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX < crate::raft::network::APPEND_BYTES_MAX);

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// This node is not the leader; the leader is `leader` if known.
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader's id and address, when known.
        leader: Option<(u64, String)>,
    },
    /// The queue is full: the node is overloaded.
    #[error("the node is overloaded: {QUEUE_MAX} requests are queued")]
    Overloaded,
    /// The command is larger than [`COMMAND_BYTES_MAX`] encoded.
    #[error("the request is {0} bytes encoded; at most {COMMAND_BYTES_MAX} fit one log entry")]
    TooLarge(usize),
    /// The node is shutting down or Raft stopped.
    #[error("the node is shutting down")]
    Stopped,
    /// This node's wall clock disagrees with a majority of its peers': it
    /// stamps no batch (`src/clock.rs`). Nothing was proposed.
    #[error("this node's clock disagrees with its peers' ({0}); it proposes nothing")]
    ClockOff(String),
    /// The proposal failed for another reason; the outcome is unknown.
    #[error("the request could not be committed: {0}")]
    Failed(String),
}

/// The outcome of one command and the entry it was applied in.
pub type Applied = (Outcome, LogId);

struct Pending {
    command: Command,
    /// `command`'s encoded length.
    bytes: usize,
    reply: oneshot::Sender<Result<Applied, BatchError>>,
}

/// Submits commands to the batcher task.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batcher task; it stops when every `Batcher` clone is dropped.
    /// Batches are stamped with this node's wall clock while `clock` says it
    /// agrees with a majority, and failed with [`BatchError::ClockOff`] otherwise.
    pub fn spawn(raft: Raft, settings: Batching, clock: Arc<Clock>) -> (Batcher, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_MAX);
        let task = tokio::spawn(run(raft, settings, clock, receiver));
        (Batcher { queue }, task)
    }

    /// Proposes a command and waits until it is committed and applied.
    pub async fn submit(&self, command: Command) -> Result<Applied, BatchError> {
        let bytes = crate::codec::encoded_len(&command)
            .map_err(|e| BatchError::Failed(format!("the request does not encode: {e}")))?;
        if bytes > COMMAND_BYTES_MAX {
            return Err(BatchError::TooLarge(bytes));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Pending {
                command,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BatchError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => BatchError::Stopped,
            })?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

async fn run(
    raft: Raft,
    settings: Batching,
    clock: Arc<Clock>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(settings.in_flight_max));
    let linger = Duration::from_micros(settings.linger_us);
    let mut writes = tokio::task::JoinSet::new();
    // A command that did not fit the previous batch.
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let first = match carried.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => break,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < settings.commands_max {
            let next = match receiver.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if linger.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(next)) => next,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            if bytes + next.bytes > BATCH_BYTES_MAX {
                // It opens the next batch.
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let raft = raft.clone();
        let clock = clock.clone();
        writes.spawn(async move {
            propose(&raft, &clock, batch).await;
            drop(permit);
        });
        // Reap finished writes so the set does not grow.
        while writes.try_join_next().is_some() {}
    }
    while writes.join_next().await.is_some() {}
}

async fn propose(raft: &Raft, clock: &Clock, pending: Vec<Pending>) {
    let (commands, replies): (Vec<Command>, Vec<_>) =
        pending.into_iter().map(|p| (p.command, p.reply)).unzip();
    let now_ms = match clock.stamp() {
        Ok(now_ms) => now_ms,
        Err(verdict) => {
            let error = BatchError::ClockOff(verdict.to_string());
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let size = commands.len();
    match raft.client_write(Batch { now_ms, commands }).await {
        Ok(response) => {
            debug!(size, log_id = %response.log_id, "batch committed");
            let log_id = response.log_id;
            if response.data.len() != replies.len() {
                // The state machine answers one outcome per command; anything else is a bug.
                panic!(
                    "batch of {} commands got {} outcomes",
                    replies.len(),
                    response.data.len()
                );
            }
            for (reply, outcome) in replies.into_iter().zip(response.data) {
                let _ = reply.send(Ok((outcome, log_id)));
            }
        }
        Err(error) => {
            let error = match error {
                RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                    BatchError::NotLeader {
                        leader: forward
                            .leader_id
                            .zip(forward.leader_node.map(|n| n.address)),
                    }
                }
                RaftError::Fatal(openraft::error::Fatal::Stopped) => BatchError::Stopped,
                other => {
                    warn!(size, error = %other, "batch not committed");
                    BatchError::Failed(other.to_string())
                }
            };
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
