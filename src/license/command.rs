//! What the Raft log carries and what applying it gives: the state-machine
//! [`Command`]s, the [`Batch`] of them one log entry holds, and the
//! [`Outcome`] of each, with the [`DenyReason`] of a refused check-out.
//!
//! Part of the replicated (bincode) form: variants and fields keep their
//! order and types. Applied by `LicenseState` (`state.rs`); this module
//! imports only the ids and the license lines, never the state (its docs only
//! link to the state's limits).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::feature::FeatureLine;
use super::formats::Advertisement;
use super::host::HostId;
use super::identity::ClusterId;
use super::ids::{GrantToken, NodeId, RequestId, SessionId, Term};

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
    /// Take `count` seats of a vendor's `feature` for a session.
    Checkout {
        /// Which request this is, for retries.
        request: RequestId,
        /// The vendor whose feature is wanted.
        vendor: String,
        /// The feature wanted.
        feature: String,
        /// The lowest version accepted (empty: any).
        version: String,
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
        /// The cluster name the node serves: the first activation records it,
        /// later ones must name the same.
        cluster_name: String,
        /// The identity of the cluster CA that issued the node's certificate
        /// (`None` without TLS). The first activation that carries one records
        /// it; later ones do not change it (a re-issued CA keeps the cluster's
        /// identity, so files bound to it stay valid).
        cluster_id: Option<ClusterId>,
        /// The node's quorum lease `L` (ms): how long it may serve after a
        /// quorum round, so how long a successor must wait.
        lease_ms: u64,
        /// How long the node waited after its first quorum round before it
        /// proposed this (`L + M` of its own timing, ms).
        wait_ms: u64,
    },
    /// Trust a vendor key: license lines signed by it (for its vendor) verify.
    TrustKey {
        /// The vendor it may sign for; `None`: any vendor.
        vendor: Option<String>,
        /// The Ed25519 public key.
        key: [u8; 32],
        /// Who asked.
        author: String,
    },
    /// Trust a node's configured `vendor_keys`, all at once, on a cluster
    /// that has never trusted any key; on any other cluster it changes
    /// nothing ([`Outcome::BootstrapDone`]), so a key an administrator
    /// untrusted never comes back from a node's config.
    BootstrapTrust {
        /// The keys: the vendor each may sign for (`None`: any) and its bytes.
        keys: Vec<(Option<String>, [u8; 32])>,
        /// The node that proposed it, e.g. `node 2 (vendor_keys bootstrap)`.
        author: String,
    },
    /// The active node's record of the host id each voter reports (for
    /// license lines bound to host ids, which count only while a majority
    /// of the voters report a listed one). Replaces the previous report.
    ReportHosts {
        /// Every voter, with the host id it reported (`None`: none known).
        voters: Vec<(NodeId, Option<HostId>)>,
        /// The node that proposed it, e.g. `node 2 (active)`.
        author: String,
    },
    /// Stop trusting a vendor key.
    UntrustKey {
        /// Its key id (hex, as `raftlm status` shows it).
        key_id: String,
        /// Who asked.
        author: String,
    },
    /// A membership change an administrator asked for, recorded before the
    /// active node makes it (`src/server/membership.rs`): among the
    /// administrators' actions, and `retire` among the ids never used again.
    RecordMembership {
        /// What was asked, e.g. `add node 4 (learner) at …` or `voters 1, 2, 3 → 1, 2, 4`.
        action: String,
        /// Ids that leave the cluster with this change.
        retire: Vec<u64>,
        /// Who asked.
        author: String,
    },
    /// The active node's record of what every member says it reads, and
    /// the format the cluster writes from now on (`src/server/formats.rs`).
    /// Added in format 7.
    RecordFormats {
        /// Every voter and learner, with what it said.
        #[serde(with = "crate::codec::only_in_7")]
        members: Vec<(NodeId, Advertisement)>,
        /// The write format: the current one, or a newer one every member reads.
        write: u8,
        /// The node that proposed it, e.g. `node 2 (active)`.
        author: String,
    },
    /// An administrator removes grants (`raftlm remove`, lmremove): their
    /// seats are free again, and their holders' renewals say who removed
    /// them. The active node resolved what was asked into `tokens`; grants
    /// gone meanwhile are skipped. Added in format 7.
    RemoveGrants {
        /// The grants, at most
        /// [`REMOVE_GRANTS_MAX`](super::removal::REMOVE_GRANTS_MAX).
        #[serde(with = "crate::codec::only_in_7")]
        tokens: Vec<GrantToken>,
        /// What was asked, e.g. `--session 1234 --feature cad`.
        asked: String,
        /// Who asked.
        author: String,
    },
    /// A member moved to new addresses (`raftlm cluster set-address`): they
    /// replace the ones its membership entry holds. Added in format 7.
    SetAddress {
        /// The member.
        #[serde(with = "crate::codec::only_in_7")]
        node: NodeId,
        /// Its client-plane address.
        address: String,
        /// Its peer-plane address.
        peer_address: String,
        /// Who asked.
        author: String,
    },
}

impl Command {
    /// The oldest record format that can hold this command.
    pub fn format(&self) -> u8 {
        match self {
            Command::RecordFormats { .. }
            | Command::SetAddress { .. }
            | Command::RemoveGrants { .. } => super::formats::FORMAT_SET_ADDRESS,
            _ => crate::codec::FORMAT_OLDEST,
        }
    }
}

/// A grant an administrator removed, as it was when removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedGrant {
    /// Its token.
    pub token: GrantToken,
    /// The vendor of its feature.
    pub vendor: String,
    /// Its feature.
    pub feature: String,
    /// Seats it held.
    pub count: u32,
    /// The holding session.
    pub session: SessionId,
    /// The user its client reported.
    pub user: String,
    /// The host its client reported.
    pub host: String,
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
    /// No license of this vendor for this feature.
    NoSuchFeature,
    /// The feature is licensed, but no line of the version asked for or higher.
    VersionNotLicensed,
    /// Every license line for the feature has expired.
    Expired,
    /// The request asks for more seats than the feature has in all.
    ExceedsLicensed,
    /// Not enough seats free right now.
    InUse,
    /// The count was zero or above
    /// [`CHECKOUT_SEATS_MAX`](super::state::CHECKOUT_SEATS_MAX).
    BadCount,
    /// The server holds [`GRANTS_MAX`](super::state::GRANTS_MAX) grants or
    /// [`SESSIONS_MAX`](super::state::SESSIONS_MAX) sessions.
    CapacityReached,
    /// The unexpired lines are bound to host ids (`SERVER … HOSTIDS=`) that
    /// fewer than a majority of the voters report.
    HostsNotListed,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::NoSuchFeature => "no license for this feature",
            DenyReason::VersionNotLicensed => "no license for this version of the feature",
            DenyReason::Expired => "every license for this feature has expired",
            DenyReason::ExceedsLicensed => "more seats asked for than are licensed",
            DenyReason::InUse => "not enough free seats",
            DenyReason::BadCount => "the seat count must be between 1 and 1000000",
            DenyReason::CapacityReached => "the server holds the most grants or sessions it allows",
            DenyReason::HostsNotListed => {
                "the licenses for this feature are bound to host ids that fewer than a majority of the cluster's nodes report (raftlm status shows each node's host id)"
            }
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
        /// Lines whose signed content is already imported (they count once).
        duplicates: u32,
        /// Lines replaced by a newer issuance (theirs or this file's).
        superseded: u32,
    },
    /// A license was removed.
    Removed {
        /// The license name.
        name: String,
    },
    /// A license change was refused because it would leave fewer seats than are in use.
    LicenseRefused {
        /// The vendor of the feature that would be short.
        vendor: String,
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
    /// The node waited less than the previous active node's lease could
    /// still run: their timing is not safe together. Not recorded.
    TimingIncompatible {
        /// The previous active node.
        previous: NodeId,
        /// Its quorum lease (ms).
        lease_ms: u64,
        /// How long the new node waited (its `L + M`, ms).
        wait_ms: u64,
    },
    /// The activation names another cluster than the one recorded; not recorded.
    WrongCluster {
        /// The cluster name the state holds.
        held: String,
        /// The name the activation asked for.
        asked: String,
    },
    /// A license line does not verify against the trusted keys and the
    /// cluster name, or has expired: the import is refused whole.
    LicenseUnverified {
        /// The line (1-based in its file).
        line: u32,
        /// Why, as one sentence.
        reason: String,
    },
    /// A key is trusted now (or was already).
    KeyTrusted {
        /// Its id.
        key_id: String,
    },
    /// A key is no longer trusted.
    KeyUntrusted {
        /// Its id.
        key_id: String,
    },
    /// No trusted key has that id.
    NoSuchKey,
    /// The key signs lines an imported license holds; remove that license first.
    KeyInUse {
        /// The license holding a line it signed.
        license: String,
    },
    /// A membership change was recorded.
    MembershipRecorded {
        /// Ids retired so far, this change's included.
        retired: u32,
    },
    /// A membership change would retire more ids than the state keeps.
    TooManyRetired,
    /// A `vendor_keys` bootstrap trusted these keys.
    KeysBootstrapped {
        /// Their ids.
        key_ids: Vec<String>,
    },
    /// A `vendor_keys` bootstrap on a cluster that has trusted keys before
    /// (its administrators own the trust set now): nothing changed.
    BootstrapDone,
    /// The voters' host ids were recorded.
    HostsReported {
        /// How many voters the report names.
        voters: u32,
    },
    /// A host report naming more than
    /// [`HOST_REPORT_VOTERS_MAX`](super::state::HOST_REPORT_VOTERS_MAX) voters:
    /// not recorded.
    HostsRefused {
        /// How many it named.
        voters: u32,
    },
    /// The key bytes are not a usable Ed25519 public key, or the cluster
    /// trusts [`TRUSTED_KEYS_MAX`](super::trust::TRUSTED_KEYS_MAX) keys already.
    BadKey {
        /// Why.
        reason: String,
    },
    /// What the members read was recorded; the cluster writes `write` (it
    /// wrote `from` before).
    FormatsRecorded {
        /// The write format before.
        from: u8,
        /// The write format now.
        write: u8,
    },
    /// A `RecordFormats` or `SetAddress` that the state refused.
    FormatsRefused {
        /// Why.
        reason: String,
    },
    /// Grants an administrator removed.
    GrantsRemoved {
        /// Each grant removed, as it was.
        removed: Vec<RemovedGrant>,
    },
    /// A member's addresses were moved.
    AddressSet {
        /// The member.
        node: NodeId,
    },
}
