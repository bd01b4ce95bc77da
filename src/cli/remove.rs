//! `raftlm remove` (FlexNet's `lmremove`): frees seats a program holds, for
//! example one hung in a loop that keeps renewing. One grant by token
//! (`--grant 3.1042.7`, as `raftlm status` lists it), a session's grants
//! (`--session HANDLE`, all or `--feature F`'s), or a feature's grants held
//! by a user on a host (`--feature F --user U --host H`). Needs an
//! administrator certificate. The holder's next renewal says who removed the
//! grant; it does not check the feature out again by itself.

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, init_logging, runtime};
use crate::client::{DEFAULT_SERVER, ServerList};
use crate::proto::v1 as pb;

/// `raftlm remove`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// One grant, by its token (term.index.slot).
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["session", "user", "host"])]
    pub grant: Option<String>,
    /// A session's grants, by its handle.
    #[arg(long, value_name = "HANDLE", conflicts_with_all = ["user", "host"])]
    pub session: Option<u64>,
    /// Only this feature's grants (required with --user and --host).
    #[arg(long, value_name = "F")]
    pub feature: Option<String>,
    /// The grants held by this user (with --host and --feature).
    #[arg(long, value_name = "USER", requires_all = ["host", "feature"])]
    pub user: Option<String>,
    /// The grants held on this host (with --user and --feature).
    #[arg(long, value_name = "HOST", requires_all = ["user", "feature"])]
    pub host: Option<String>,
    /// Only this vendor's grants (needed when the match spans vendors).
    #[arg(long, value_name = "V")]
    pub vendor: Option<String>,
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
}

/// Runs `raftlm remove`.
pub fn run(args: Args) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    if args.grant.is_none() && args.session.is_none() && args.user.is_none() {
        return Err(Failure::usage(
            "name what to remove: --grant TOKEN, --session HANDLE [--feature F], or --feature F --user U --host H",
        ));
    }
    let asked = pb::RemoveGrantsRequest {
        grant: args.grant.unwrap_or_default(),
        session: args.session.unwrap_or_default(),
        feature: args.feature.unwrap_or_default(),
        user: args.user.unwrap_or_default(),
        host: args.host.unwrap_or_default(),
        vendor: args.vendor.unwrap_or_default(),
    };
    runtime()?.block_on(async move {
        let client = crate::cli::env_client(args.server)?;
        let reply = client.remove_grants(asked).await.map_err(failure)?;
        print!("{}", removed_text(&reply));
        Ok(())
    })
}

/// What `raftlm remove` prints: one line per grant freed.
pub fn removed_text(reply: &pb::RemoveGrantsReply) -> String {
    reply
        .removed
        .iter()
        .map(|g| {
            let token = g
                .token
                .as_ref()
                .map(|t| crate::wire::token_from_pb(t).to_string())
                .unwrap_or_default();
            format!(
                "removed grant {token}: {} seat(s) of {} \"{}\" held by {} on {} (session {})\n",
                g.count, g.vendor, g.feature, g.user, g.host, g.session
            )
        })
        .collect()
}
