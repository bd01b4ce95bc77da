//! `raftlm cluster set-address`: a member moves to new machine addresses
//! through the log, keeping its id (its data directory moves with it).
//!
//! The moved addresses live in the license state (`ClusterFormats::addresses`,
//! format 7), not in openraft's membership: rewriting a member's entry there
//! takes openraft's `SetNodes`, which its documentation warns can split the
//! brain. Every reader of an address asks the state first: the transport
//! (`Network::set_moved`, fed by `formats::watch`), leader hints
//! (`Shared::client_address`), `status` and `cluster members`.

use tracing::info;

use super::Shared;
use super::error::{ServiceError, check_text};
use crate::license::formats::{ADDRESS_TEXT_MAX, FORMAT_SET_ADDRESS};
use crate::license::state::{Command, NodeId, Outcome};

/// Checks that `address` is `host:port`, within [`ADDRESS_TEXT_MAX`].
fn check_address(what: &str, address: &str) -> Result<(), ServiceError> {
    check_text(what, address)?;
    let bad = |why: &str| {
        Err(ServiceError::InvalidArgument(format!(
            "{what} {address:?} {why}"
        )))
    };
    if address.len() > ADDRESS_TEXT_MAX {
        return bad(&format!("is longer than {ADDRESS_TEXT_MAX} bytes"));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => bad("is not host:port"),
    }
}

/// Moves member `id` to `address` (client plane) and `peer_address`.
pub async fn set_address(
    shared: &Shared,
    id: u64,
    address: &str,
    peer_address: &str,
    author: &str,
) -> Result<Vec<String>, ServiceError> {
    check_address("address", address)?;
    check_address("peer address", peer_address)?;
    if address == peer_address {
        return Err(ServiceError::InvalidArgument(
            "the client and peer addresses must differ".into(),
        ));
    }
    let view = super::membership::view(shared)?;
    let Some(member) = view.members.iter().find(|m| m.id == id) else {
        return Err(ServiceError::Refused(format!(
            "node {id} is not a member of this cluster (raftlm cluster members lists them)"
        )));
    };
    if member.address == address && member.peer_address == peer_address {
        return Ok(vec![format!(
            "node {id} is at {address} (peer {peer_address}) already"
        )]);
    }
    let taken = [address, peer_address];
    if let Some(other) = view.members.iter().find(|m| {
        m.id != id
            && (taken.contains(&m.address.as_str()) || taken.contains(&m.peer_address.as_str()))
    }) {
        return Err(ServiceError::Refused(format!(
            "node {} uses that address already ({}, peer {})",
            other.id, other.address, other.peer_address
        )));
    }
    super::formats::require(shared, FORMAT_SET_ADDRESS, "set-address")?;
    info!(%author, node = id, %address, %peer_address, "moving a member's addresses");
    let (outcome, log_id) = shared
        .propose(Command::SetAddress {
            node: NodeId(id),
            address: address.to_string(),
            peer_address: peer_address.to_string(),
            author: author.to_string(),
        })
        .await?;
    match outcome {
        Outcome::AddressSet { .. } => {
            info!(%log_id, node = id, "member moved");
            Ok(vec![format!(
                "node {id} is listed at {address} (peer {peer_address}); start it there with its config's addresses changed to match (the others' configs may keep the old ones: the cluster's record wins)"
            )])
        }
        Outcome::FormatsRefused { reason } => Err(ServiceError::Refused(reason)),
        other => Err(ServiceError::Refused(format!(
            "set-address was not applied: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert!(check_address("address", "127.0.0.9:27000").is_ok());
        assert!(check_address("address", "lic2.example.com:27000").is_ok());
        for bad in [
            "",
            "127.0.0.9",
            ":27000",
            "127.0.0.9:0",
            "127.0.0.9:x",
            "a\nb:1",
        ] {
            assert!(check_address("address", bad).is_err(), "{bad:?} passed");
        }
        assert!(check_address("address", &format!("{}:1", "a".repeat(ADDRESS_TEXT_MAX))).is_err());
    }
}
