//! The administrator's service: license import (`lmreread`) and removal.
//!
//! A license file is parsed and verified — signatures against the trusted
//! vendor keys, the `SERVER` line against the cluster name — on the node that
//! receives it, before it is proposed; the log carries only verified lines.
//!
//! Every admin RPC first authenticates its caller ([`administrator`]): a TLS
//! client certificate issued by the cluster CA (the acceptor checked the
//! chain) that carries the administrator role. The certificate's subject is
//! committed with the action as its author. In plaintext mode there are no
//! certificates: admin RPCs are then accepted only from loopback, and the
//! author says so.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::license::file;
use crate::license::pool::Verdict;
use crate::license::signature;
use crate::license::state::{Command, LicenseState, Outcome};
use crate::proto::v1 as pb;
use crate::proto::v1::admin_server::Admin;
use crate::server::{ServiceError, Shared};
use crate::tls::acceptor::Plane;
use crate::tls::identity::{self, Role};

pub use crate::license::file::LICENSE_FILE_BYTES_MAX;

/// Largest admin request accepted, in bytes: a license file and its name.
pub const ADMIN_REQUEST_BYTES_MAX: usize = LICENSE_FILE_BYTES_MAX + 4096;
/// Longest license name, in bytes.
pub const LICENSE_NAME_BYTES_MAX: usize = 255;

/// Checks a license name: a file name, without directories, at most
/// [`LICENSE_NAME_BYTES_MAX`] bytes.
pub fn check_license_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > LICENSE_NAME_BYTES_MAX || name.contains(['/', '\\']) {
        let shown: String = name.chars().take(64).collect();
        return Err(ServiceError::InvalidArgument(format!(
            "\"{shown}\" is not a license name: use the file name, without directories, at most {LICENSE_NAME_BYTES_MAX} bytes"
        )));
    }
    crate::server::error::check_text("license name", name)
}

/// The admin service of one node.
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    /// A service over the node's shared parts.
    pub fn new(shared: Arc<Shared>) -> AdminService {
        AdminService { shared }
    }
}

impl AdminService {
    /// The reply to a membership change: the membership as it is now.
    fn membership_changed(
        &self,
        warnings: Vec<String>,
    ) -> Result<Response<pb::MembershipChangeReply>, Status> {
        let membership = crate::server::membership::view(&self.shared)?;
        Ok(Response::new(pb::MembershipChangeReply {
            term: membership.term,
            membership: Some(membership),
            warnings,
        }))
    }
}

/// Who is calling an admin RPC: the subject of an administrator's
/// certificate, or why the call is refused (`UNAUTHENTICATED` without a
/// certificate, `PERMISSION_DENIED` with one that lacks the role).
pub fn administrator<T>(shared: &Shared, request: &Request<T>) -> Result<String, ServiceError> {
    let from = request.remote_addr();
    let refuse = |error: ServiceError| {
        if let Some(from) = from {
            shared.refusals.log(
                Plane::Client,
                from.ip(),
                &format!("admin RPC refused: {error}"),
            );
        }
        Err(error)
    };
    if shared.tls.is_none() {
        return match from {
            Some(from) if from.ip().to_canonical().is_loopback() => {
                Ok(format!("plaintext client {from}"))
            }
            _ => refuse(ServiceError::Unauthenticated(
                "this node runs without TLS (tls.plaintext): administrators are accepted only from loopback".into(),
            )),
        };
    }
    let Some(cert) = request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
    else {
        return refuse(ServiceError::Unauthenticated(
            "admin requests need an administrator certificate (set RAFTLM_CERT and RAFTLM_KEY to the files made by `raftlm tls issue --admin NAME`)".into(),
        ));
    };
    match identity::parse(&cert) {
        Ok(info) if info.has_role(Role::Admin) => Ok(info.subject),
        Ok(info) => refuse(ServiceError::PermissionDenied(format!(
            "the certificate of {} does not carry the administrator role",
            info.subject
        ))),
        Err(error) => refuse(ServiceError::PermissionDenied(format!(
            "the client certificate cannot be read: {error}"
        ))),
    }
}

/// Trusts the config's `vendor_keys` through the log, once in the life of
/// the cluster: only while it has never trusted any key. Afterwards the
/// trust anchors are cluster state, changed by administrators (`raftlm
/// license trust|untrust`), and no node's config widens them, even after an
/// untrust of the last key. The state decides (a `BootstrapTrust` applied
/// after another node's changes nothing), so two nodes racing here is safe.
pub async fn bootstrap_trust(shared: &Shared) -> Result<(), String> {
    if shared.trusted.is_empty() || shared.state.read(|s| s.trusted_ever()) {
        return Ok(());
    }
    let command = Command::BootstrapTrust {
        keys: shared
            .trusted
            .iter()
            .map(|key| (key.vendor().map(str::to_string), key.to_bytes()))
            .collect(),
        author: format!("node {} (vendor_keys bootstrap)", shared.node_id),
    };
    let (outcome, _) = shared
        .batcher
        .submit(command)
        .await
        .map_err(|e| e.to_string())?;
    info!(?outcome, "vendor_keys bootstrap applied");
    Ok(())
}

/// Where an import comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportSource {
    /// An administrator: always imported.
    Administrator,
    /// A node's license directory: skipped when the cluster has ever
    /// imported this name with this content, so an administrator's removal
    /// or newer import is never undone by a failover.
    Directory,
}

/// Verifies a license file's text and imports it under `name` through the
/// log, as `author`. Returns the outcome, the term it was committed in and
/// the file's warnings (expired lines, skipped lines, ignored VENDOR fields;
/// also logged when the import succeeds), or `None` for a directory file the
/// cluster already imported as it is.
pub async fn import_license(
    shared: &Shared,
    name: &str,
    text: &str,
    author: &str,
    source: ImportSource,
) -> Result<Option<(Outcome, u64, Vec<String>)>, ServiceError> {
    check_license_name(name)?;
    if text.len() > LICENSE_FILE_BYTES_MAX {
        return Err(ServiceError::InvalidArgument(format!(
            "{name} is larger than {LICENSE_FILE_BYTES_MAX} bytes"
        )));
    }
    let parsed = file::parse(name, text).map_err(|e| ServiceError::Refused(e.to_string()))?;
    // A cluster that trusts no key yet takes the config's bootstrap keys first,
    // so an import right after the first activation does not race them.
    shared.serving()?;
    bootstrap_trust(shared)
        .await
        .map_err(|e| ServiceError::Unknown(format!("vendor keys not trusted yet: {e}")))?;
    // Checked here against the cluster's own trust anchors, so that a file
    // that cannot verify is refused without touching the log; every node
    // checks again when it applies the import. Expiry is judged on the later
    // of the cluster's time and this node's clock: expired lines are imported
    // and count 0 seats, a file whose every line has expired is refused. A
    // file bound to a cluster identity must name the one the cluster
    // recorded, which every node checks again on apply.
    let (anchors, state_ms, cluster_id) = shared
        .state
        .read(|s| (s.anchors(), s.now_ms(), s.cluster_id().copied()));
    let at_ms = state_ms.max(crate::clock::wall_ms());
    let lines = signature::verify_bound(
        &parsed,
        name,
        &anchors,
        &shared.config.cluster_name,
        cluster_id.as_ref(),
        at_ms,
    )
    .map_err(|e| ServiceError::Refused(e.to_string()))?;
    let mut notes = parsed.warnings(name);
    notes.extend(signature::expired_notes(name, &lines, at_ms));
    shared.serving()?;
    if source == ImportSource::Directory && shared.state.read(|s| s.was_imported(name, &lines)) {
        return Ok(None);
    }
    let command = Command::ImportLicense {
        name: name.to_string(),
        lines,
        author: author.to_string(),
    };
    let (outcome, log_id) = shared.propose(command).await?;
    info!(license = name, %log_id, ?outcome, "license import applied");
    if matches!(outcome, Outcome::Imported { .. }) {
        notes.extend(shared.state.read(|s| superseded_by_expired(s, name, at_ms)));
        for note in &notes {
            warn!(license = name, "{note}");
        }
    }
    let term = shared.confirm(log_id.leader_id.term)?;
    Ok(Some((outcome, term, notes)))
}

/// Imports the `.lic` files of the license directory `dir` through the log,
/// in file-name order, as this node (see `import_license_dir` in
/// `src/node.rs`): files the cluster already imported as they are stay
/// untouched. Returns one sentence per file; each import and each refusal is
/// logged (`license file refused`). An error that is not about one file (the
/// directory cannot be read, this node stopped serving) ends it.
pub async fn import_dir(shared: &Shared, dir: &std::path::Path) -> Result<Vec<String>, String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lic"))
        .collect();
    entries.sort();
    let mut results = Vec::with_capacity(entries.len());
    for path in entries {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(file = %path.display(), %error, "cannot read license file");
                results.push(format!("{name}: cannot be read: {error}"));
                continue;
            }
        };
        let author = format!("node {} (license directory)", shared.node_id);
        match import_license(shared, &name, &text, &author, ImportSource::Directory).await {
            Ok(None) => {
                tracing::debug!(license = %name, "license directory file already imported as it is");
                results.push(format!("{name}: unchanged since it was imported"));
            }
            Ok(Some((
                Outcome::Imported {
                    lines, duplicates, ..
                },
                _,
                _,
            ))) => {
                info!(license = %name, lines, duplicates, "imported license file from the license directory");
                results.push(format!(
                    "{name}: imported {lines} lines ({duplicates} duplicates)"
                ));
            }
            Ok(Some((other, _, _))) => {
                let reason = refusal(other).to_string();
                tracing::error!(license = %name, %reason, "license file refused");
                results.push(format!("{name}: refused: {reason}"));
            }
            Err(ServiceError::Refused(reason)) => {
                tracing::error!(license = %name, %reason, "license file refused");
                results.push(format!("{name}: refused: {reason}"));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(results)
}

/// Notes for valid lines that an expired line of license `name` supersedes
/// (a newer issuance counts even when it has expired, so their seats are
/// lost until `name` is removed or renewed).
fn superseded_by_expired(state: &LicenseState, name: &str, at_ms: u64) -> Vec<String> {
    let Some(own) = state.licenses().get(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ((license, index), verdict) in state.verdicts() {
        let Verdict::Superseded {
            license: by,
            line: by_line,
        } = verdict
        else {
            continue;
        };
        let Some(winner) = own.iter().find(|l| l.line == by_line) else {
            continue;
        };
        let Some(line) = state.licenses().get(&license).and_then(|l| l.get(index)) else {
            continue;
        };
        if by == name && !winner.expiry.is_valid_at(at_ms) && line.expiry.is_valid_at(at_ms) {
            out.push(format!(
                "{license}:{}: {} {:?} is superseded by the newer issuance {name}:{by_line}, which has expired: its {} seats no longer count (remove {name}, or get a renewed file)",
                line.line,
                line.kind.keyword(),
                line.feature,
                line.seats
            ));
        }
    }
    out
}

fn refusal(outcome: Outcome) -> ServiceError {
    match outcome {
        Outcome::LicenseRefused {
            vendor,
            feature,
            in_use,
            licensed,
        } => ServiceError::Refused(format!(
            "{in_use} seats of \"{feature}\" of vendor {vendor} are in use but only {licensed} would remain licensed; check them in first"
        )),
        Outcome::NoSuchLicense => {
            ServiceError::Refused("no license by that name is imported".into())
        }
        Outcome::LicenseUnverified { reason, .. } => ServiceError::Refused(reason),
        Outcome::NoSuchKey => ServiceError::Refused("no trusted key has that id".into()),
        Outcome::KeyInUse { license } => ServiceError::Refused(format!(
            "license {license} holds lines signed by this key; remove it first"
        )),
        Outcome::BadKey { reason } => ServiceError::Refused(reason),
        other => ServiceError::Unknown(format!(
            "unexpected outcome for a license change: {other:?}"
        )),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn import_license(
        &self,
        request: Request<pb::ImportLicenseRequest>,
    ) -> Result<Response<pb::ImportLicenseReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let request = request.into_inner();
        let imported = import_license(
            &self.shared,
            &request.name,
            &request.text,
            &author,
            ImportSource::Administrator,
        )
        .await?
        .ok_or_else(|| ServiceError::Unknown("an administrator's import was skipped".into()))?;
        match imported {
            (
                Outcome::Imported {
                    name,
                    lines,
                    duplicates,
                    superseded,
                },
                term,
                notes,
            ) => Ok(Response::new(pb::ImportLicenseReply {
                term,
                name,
                lines,
                duplicates,
                superseded,
                notes,
            })),
            (other, _, _) => Err(refusal(other).into()),
        }
    }

    async fn remove_license(
        &self,
        request: Request<pb::RemoveLicenseRequest>,
    ) -> Result<Response<pb::RemoveLicenseReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let name = request.into_inner().name;
        check_license_name(&name)?;
        self.shared.serving()?;
        // A removal that cannot succeed is answered without touching the log.
        if !self.shared.state.read(|s| s.licenses().contains_key(&name)) {
            return Err(refusal(Outcome::NoSuchLicense).into());
        }
        warn!(license = %name, %author, "license removal requested");
        let (outcome, log_id) = self
            .shared
            .propose(Command::RemoveLicense { name, author })
            .await?;
        match outcome {
            Outcome::Removed { .. } => {
                let term = self.shared.confirm(log_id.leader_id.term)?;
                Ok(Response::new(pb::RemoveLicenseReply { term }))
            }
            other => Err(refusal(other).into()),
        }
    }

    async fn trust_key(
        &self,
        request: Request<pb::TrustKeyRequest>,
    ) -> Result<Response<pb::TrustKeyReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let text = request.into_inner().key_file;
        if text.len() > signature::KEY_FILE_BYTES_MAX as usize {
            return Err(ServiceError::InvalidArgument(format!(
                "a key file is at most {} bytes",
                signature::KEY_FILE_BYTES_MAX
            ))
            .into());
        }
        let key = signature::VendorPublicKey::parse("key", &text)
            .map_err(|e| ServiceError::Refused(e.to_string()))?;
        self.shared.serving()?;
        let command = Command::TrustKey {
            vendor: key.vendor().map(str::to_string),
            key: key.to_bytes(),
            author,
        };
        let (outcome, log_id) = self.shared.propose(command).await?;
        match outcome {
            Outcome::KeyTrusted { key_id } => {
                let term = self.shared.confirm(log_id.leader_id.term)?;
                info!(%key_id, "vendor key trusted");
                Ok(Response::new(pb::TrustKeyReply { term, key_id }))
            }
            other => Err(refusal(other).into()),
        }
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let node = request.into_inner().node;
        let me = self.shared.node_id;
        if node == 0 {
            // The active node: a node that is not sends the client on.
            self.shared.serving()?;
        } else if node != me {
            return Err(ServiceError::Refused(format!(
                "this is node {me}, not node {node}: ask node {node} at its own address"
            ))
            .into());
        }
        warn!(%author, "stop requested by an administrator (raftlm down)");
        // Answered first; the node stops (and an active node hands over) right after.
        self.shared.shutdown_requested.notify_one();
        let term = self.shared.raft.metrics().borrow().current_term;
        Ok(Response::new(pb::ShutdownReply { node: me, term }))
    }

    async fn reread_license_dir(
        &self,
        request: Request<pb::RereadLicenseDirRequest>,
    ) -> Result<Response<pb::RereadLicenseDirReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        self.shared.serving()?;
        let me = self.shared.node_id;
        let Some(dir) = self.shared.config.license_dir.clone() else {
            return Err(ServiceError::Refused(format!(
                "the active node (node {me}) has no license_dir: import files with raftlm license import"
            ))
            .into());
        };
        info!(%author, dir = %dir.display(), "license directory reread asked by an administrator");
        let files = import_dir(&self.shared, &dir)
            .await
            .map_err(ServiceError::Unknown)?;
        let term = self.shared.confirm(self.shared.serving()?)?;
        Ok(Response::new(pb::RereadLicenseDirReply {
            term,
            node: me,
            dir: dir.display().to_string(),
            files,
        }))
    }

    type BackupStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let author = administrator(&self.shared, &request)?;
        info!(%author, "backup asked by an administrator");
        let taken = crate::server::backup::take(&self.shared).await?;
        let total_bytes = taken.bytes.len() as u64;
        let chunks: Vec<Result<pb::BackupChunk, Status>> =
            crate::raft::backup::chunks(&taken.bytes)
                .map(|piece| {
                    Ok(pb::BackupChunk {
                        term: taken.term,
                        data: piece.to_vec(),
                        total_bytes,
                        applied_index: taken.applied_index,
                    })
                })
                .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn membership(
        &self,
        request: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        administrator(&self.shared, &request)?;
        Ok(Response::new(crate::server::membership::view(
            &self.shared,
        )?))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipChangeReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let asked = request.into_inner();
        let member = crate::raft::Member {
            address: asked.address,
            peer_address: asked.peer_address,
        };
        let warnings =
            crate::server::membership::add_learner(&self.shared, asked.id, member, &author).await?;
        self.membership_changed(warnings)
    }

    async fn change_voters(
        &self,
        request: Request<pb::ChangeVotersRequest>,
    ) -> Result<Response<pb::MembershipChangeReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let asked = request.into_inner();
        let warnings = crate::server::membership::change_voters(
            &self.shared,
            asked.voters.into_iter().collect(),
            asked.force,
            &author,
        )
        .await?;
        self.membership_changed(warnings)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipChangeReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let asked = request.into_inner();
        let warnings =
            crate::server::membership::remove_node(&self.shared, asked.id, asked.force, &author)
                .await?;
        self.membership_changed(warnings)
    }

    async fn remove_grants(
        &self,
        request: Request<pb::RemoveGrantsRequest>,
    ) -> Result<Response<pb::RemoveGrantsReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let asked = request.into_inner();
        let (removed, applied_index) =
            crate::server::remove::remove(&self.shared, &asked, &author).await?;
        Ok(Response::new(pb::RemoveGrantsReply {
            term: self.shared.serving()?,
            removed: removed
                .iter()
                .map(crate::server::remove::removed_pb)
                .collect(),
            applied_index,
        }))
    }

    async fn set_address(
        &self,
        request: Request<pb::SetAddressRequest>,
    ) -> Result<Response<pb::MembershipChangeReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let asked = request.into_inner();
        let warnings = crate::server::addresses::set_address(
            &self.shared,
            asked.id,
            &asked.address,
            &asked.peer_address,
            &author,
        )
        .await?;
        self.membership_changed(warnings)
    }

    async fn untrust_key(
        &self,
        request: Request<pb::UntrustKeyRequest>,
    ) -> Result<Response<pb::UntrustKeyReply>, Status> {
        let author = administrator(&self.shared, &request)?;
        let key_id = request.into_inner().key_id;
        // Refused without touching the log when the cluster does not trust it.
        if !self
            .shared
            .state
            .read(|s| s.trusted_keys().contains_key(&key_id))
        {
            return Err(refusal(Outcome::NoSuchKey).into());
        }
        self.shared.serving()?;
        let (outcome, log_id) = self
            .shared
            .propose(Command::UntrustKey { key_id, author })
            .await?;
        match outcome {
            Outcome::KeyUntrusted { .. } => {
                let term = self.shared.confirm(log_id.leader_id.term)?;
                Ok(Response::new(pb::UntrustKeyReply { term }))
            }
            other => Err(refusal(other).into()),
        }
    }
}
