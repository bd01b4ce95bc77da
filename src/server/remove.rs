//! `raftlm remove` (lmremove): an administrator frees seats a program holds,
//! for example one hung in a loop that keeps renewing.
//!
//! The active node resolves what was asked — one grant by token, a
//! session's grants (all, or one feature's), or a feature's grants held by
//! a user on a host — into grant tokens against its state
//! ([`select`], pure), refuses a request that matches nothing without
//! touching the log, and commits [`Command::RemoveGrants`] with the
//! administrator as author. The holder's next renewal says who removed the
//! grant and when (`RenewReply.removed`).

use std::collections::BTreeSet;

use tracing::info;

use super::Shared;
use super::error::{ServiceError, check_text};
use crate::license::removal::REMOVE_GRANTS_MAX;
use crate::license::state::{Command, GrantToken, LicenseState, Outcome, RemovedGrant, SessionId};
use crate::proto::v1 as pb;

/// The grants `asked` names in `state`, and the request as text for the
/// administrators' actions; refused when it is malformed, ambiguous, or
/// matches nothing.
pub fn select(
    state: &LicenseState,
    asked: &pb::RemoveGrantsRequest,
) -> Result<(Vec<GrantToken>, String), ServiceError> {
    let invalid = |why: &str| Err(ServiceError::InvalidArgument(why.to_string()));
    for (what, text) in [
        ("grant", &asked.grant),
        ("feature", &asked.feature),
        ("user", &asked.user),
        ("host", &asked.host),
        ("vendor", &asked.vendor),
    ] {
        check_text(what, text)?;
    }
    let by_grant = !asked.grant.is_empty();
    let by_session = asked.session != 0;
    let by_holder = !asked.user.is_empty() || !asked.host.is_empty();
    if [by_grant, by_session, by_holder]
        .iter()
        .filter(|b| **b)
        .count()
        != 1
    {
        return invalid("name exactly one of: a grant token, a session handle, or a user and host");
    }
    let matches = |vendor: &str, feature: &str| {
        (asked.feature.is_empty() || asked.feature == feature)
            && (asked.vendor.is_empty() || asked.vendor == vendor)
    };
    let (tokens, text): (Vec<GrantToken>, String) = if by_grant {
        let token: GrantToken = asked
            .grant
            .parse()
            .map_err(|e: String| ServiceError::InvalidArgument(format!("grant token: {e}")))?;
        let found = state
            .grant(&token)
            .is_some_and(|g| matches(&g.vendor, &g.feature));
        (
            if found { vec![token] } else { Vec::new() },
            format!("grant {token}"),
        )
    } else if by_session {
        let tokens = state
            .grants()
            .values()
            .filter(|g| g.session.public() == asked.session && matches(&g.vendor, &g.feature))
            .map(|g| g.token)
            .collect();
        let feature = if asked.feature.is_empty() {
            String::new()
        } else {
            format!(" feature {}", asked.feature)
        };
        (tokens, format!("session {}{feature}", asked.session))
    } else {
        if asked.user.is_empty() || asked.host.is_empty() || asked.feature.is_empty() {
            return invalid("a removal by holder names the feature, the user and the host");
        }
        let tokens = state
            .grants()
            .values()
            .filter(|g| {
                g.user == asked.user && g.host == asked.host && matches(&g.vendor, &g.feature)
            })
            .map(|g| g.token)
            .collect();
        (
            tokens,
            format!(
                "feature {} of user {} on host {}",
                asked.feature, asked.user, asked.host
            ),
        )
    };
    if tokens.is_empty() {
        return Err(ServiceError::Refused(format!(
            "no grant matches {text}{}: nothing was removed (raftlm status lists the grants)",
            if asked.vendor.is_empty() {
                String::new()
            } else {
                format!(" of vendor {}", asked.vendor)
            }
        )));
    }
    let vendors: BTreeSet<&str> = tokens
        .iter()
        .filter_map(|t| state.grant(t))
        .map(|g| g.vendor.as_str())
        .collect();
    if vendors.len() > 1 {
        return Err(ServiceError::InvalidArgument(format!(
            "{text} matches grants of {} vendors ({}): name one with --vendor",
            vendors.len(),
            vendors.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if tokens.len() > REMOVE_GRANTS_MAX {
        return Err(ServiceError::InvalidArgument(format!(
            "{text} matches {} grants; one removal frees at most {REMOVE_GRANTS_MAX}: name a feature",
            tokens.len()
        )));
    }
    Ok((tokens, text))
}

/// Removes the grants `asked` names; what was removed, and the log index.
pub async fn remove(
    shared: &Shared,
    asked: &pb::RemoveGrantsRequest,
    author: &str,
) -> Result<(Vec<RemovedGrant>, u64), ServiceError> {
    shared.serving()?;
    let (tokens, text) = shared.state.read(|state| select(state, asked))?;
    super::formats::require(
        shared,
        crate::license::formats::FORMAT_SET_ADDRESS,
        "remove",
    )?;
    let (outcome, log_id) = shared
        .propose(Command::RemoveGrants {
            tokens,
            asked: text.clone(),
            author: author.to_string(),
        })
        .await?;
    match outcome {
        Outcome::GrantsRemoved { removed } if !removed.is_empty() => {
            info!(%author, asked = %text, removed = removed.len(), %log_id, "grants removed");
            Ok((removed, log_id.index))
        }
        Outcome::GrantsRemoved { .. } => Err(ServiceError::Refused(format!(
            "the grants of {text} were returned before the removal was applied: nothing was removed"
        ))),
        other => Err(ServiceError::Refused(format!(
            "the removal was not applied: {other:?}"
        ))),
    }
}

/// A removed grant as the reply lists it.
pub fn removed_pb(g: &RemovedGrant) -> pb::RemovedGrant {
    pb::RemovedGrant {
        token: Some(crate::wire::token_to_pb(g.token)),
        vendor: g.vendor.clone(),
        feature: g.feature.clone(),
        count: g.count,
        session: SessionId::public(g.session),
        user: g.user.clone(),
        host: g.host.clone(),
    }
}
