//! `ClientError`: the client library's one error enum.
//!
//! A refusal ([`ClientError::Denied`], [`ClientError::Refused`]) is the
//! cluster's answer and is returned at once, never retried. Everything that
//! might succeed on another node or a moment later (an unavailable node, a
//! timeout, an answer from a stale term) is retried inside the call and only
//! surfaces as [`ClientError::Unreachable`] when the call's deadline passes.

use crate::license::state::DenyReason;

/// Why a client call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The cluster refused a check-out: no such feature, no seats free, more
    /// seats asked for than are licensed, …
    #[error("{message}")]
    Denied {
        /// The feature asked for.
        feature: String,
        /// Why it was refused.
        reason: DenyReason,
        /// Seats free for new check-outs when it was refused.
        available: u32,
        /// Seats licensed and unexpired.
        total: u32,
        /// The cluster's sentence, e.g. `5 seats of "cad" asked for, but only 3 are licensed`.
        message: String,
    },
    /// No node answered within the call's deadline (or, when `last` is a
    /// fenced answer, none answered from a term the client accepts).
    #[error("{}", unreachable_text(.tried, .last))]
    Unreachable {
        /// The addresses tried, in order, each once.
        tried: Vec<String>,
        /// What the last attempt ran into.
        last: String,
    },
    /// The cluster refused the request as invalid or not possible now
    /// (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, or `RESOURCE_EXHAUSTED`
    /// naming a configured limit), e.g. a license file for another cluster,
    /// or a new session from an address that has as many as it may. The
    /// cluster's sentence.
    #[error("{0}")]
    Refused(String),
    /// The session was expired by the cluster (it stopped heartbeating for
    /// longer than the session TTL); its grants are gone. Start a new session.
    #[error("the cluster expired the session after it stopped heartbeating; start a new session")]
    SessionExpired,
    /// The request is older than the session's retry window, so its first
    /// outcome is no longer known.
    #[error("the request is older than the session's retry window; its outcome is not known")]
    StaleRequest,
    /// A node answered with an error the client does not expect (for example
    /// `UNIMPLEMENTED` from a server of another version).
    #[error("the server answered {code:?}: {message}")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A node's reply broke the protocol (for example a grant without a token).
    #[error("unexpected reply from {address}: {message}")]
    Protocol {
        /// The node that answered.
        address: String,
        /// What was wrong.
        message: String,
    },
    /// The session's task has stopped (the session was closed).
    #[error("the session is closed")]
    SessionClosed,
    /// The cluster granted seats, but the lines behind the grant are not all
    /// signed by a vendor key the application trusts
    /// ([`SessionOptions::vendor_keys`](crate::client::SessionOptions::vendor_keys)):
    /// the seats were checked in again.
    #[error(
        "the license for \"{feature}\" is not signed by a vendor key this application trusts: {reason}"
    )]
    UntrustedLicense {
        /// The feature.
        feature: String,
        /// Which line failed and why.
        reason: String,
    },
}

impl ClientError {
    /// Whether this is the cluster's refusal ([`Denied`](ClientError::Denied) or
    /// [`Refused`](ClientError::Refused)), as opposed to a failure to get an answer.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Denied { .. } | ClientError::Refused(_))
    }
}

/// [`ClientError::Unreachable`]'s sentence: a call whose last answer was
/// refused by the term fence did get an answer, from a term below one seen
/// before (a deposed node, or a cluster restored or rebuilt in a lower term),
/// and says so rather than that nothing answered.
fn unreachable_text(tried: &[String], last: &str) -> String {
    let what = if last.contains(" seen before: ") {
        "no raftlm node answered from a term this client accepts"
    } else {
        "no raftlm node answered"
    };
    format!("{what} (tried {}): {last}", tried.join(", "))
}
