//! The administrator's service: license import (`lmreread`) and removal.
//!
//! A license file is parsed and verified — signatures against the trusted
//! vendor keys, the `SERVER` line against the cluster name — on the node that
//! receives it, before it is proposed; the log carries only verified lines.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use tracing::info;

use crate::license::file;
use crate::license::signature;
use crate::license::state::{Command, Outcome};
use crate::proto::v1 as pb;
use crate::proto::v1::admin_server::Admin;
use crate::server::{ServiceError, Shared};

pub use crate::license::file::LICENSE_FILE_BYTES_MAX;

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Verifies a license file's text and imports it under `name` through the log.
/// Returns the outcome and the term it was committed in.
pub async fn import_license(
    shared: &Shared,
    name: &str,
    text: &str,
) -> Result<(Outcome, u64), ServiceError> {
    if name.is_empty() || name.len() > 255 || name.contains(['/', '\\']) {
        return Err(ServiceError::InvalidArgument(format!(
            "\"{name}\" is not a license name: use the file name, without directories"
        )));
    }
    if text.len() > LICENSE_FILE_BYTES_MAX {
        return Err(ServiceError::InvalidArgument(format!(
            "{name} is larger than {LICENSE_FILE_BYTES_MAX} bytes"
        )));
    }
    let parsed = file::parse(name, text).map_err(|e| ServiceError::Refused(e.to_string()))?;
    let lines = signature::verify(
        &parsed,
        name,
        &shared.trusted,
        &shared.config.cluster_name,
        now_ms(),
    )
    .map_err(|e| ServiceError::Refused(e.to_string()))?;
    shared.serving()?;
    let command = Command::ImportLicense {
        name: name.to_string(),
        lines,
    };
    let (outcome, log_id) = shared
        .batcher
        .submit(command)
        .await
        .map_err(|e| shared.batch_error(e))?;
    info!(license = name, %log_id, ?outcome, "license import applied");
    let term = shared.confirm(log_id.leader_id.term)?;
    Ok((outcome, term))
}

fn refusal(outcome: Outcome) -> ServiceError {
    match outcome {
        Outcome::LicenseRefused {
            feature,
            in_use,
            licensed,
        } => ServiceError::Refused(format!(
            "{in_use} seats of \"{feature}\" are in use but only {licensed} would remain licensed; check them in first"
        )),
        Outcome::NoSuchLicense => {
            ServiceError::Refused("no license by that name is imported".into())
        }
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
        let request = request.into_inner();
        match import_license(&self.shared, &request.name, &request.text).await? {
            (
                Outcome::Imported {
                    name,
                    lines,
                    duplicates,
                },
                term,
            ) => Ok(Response::new(pb::ImportLicenseReply {
                term,
                name,
                lines,
                duplicates,
            })),
            (other, _) => Err(refusal(other).into()),
        }
    }

    async fn remove_license(
        &self,
        request: Request<pb::RemoveLicenseRequest>,
    ) -> Result<Response<pb::RemoveLicenseReply>, Status> {
        let name = request.into_inner().name;
        self.shared.serving()?;
        let (outcome, log_id) = self
            .shared
            .batcher
            .submit(Command::RemoveLicense { name })
            .await
            .map_err(|e| self.shared.batch_error(e))?;
        match outcome {
            Outcome::Removed { .. } => {
                let term = self.shared.confirm(log_id.leader_id.term)?;
                Ok(Response::new(pb::RemoveLicenseReply { term }))
            }
            other => Err(refusal(other).into()),
        }
    }
}
