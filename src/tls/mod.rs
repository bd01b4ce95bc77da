//! TLS for both planes of a node, and the cluster's own certificate authority.
//!
//! Trust model: each cluster has its own CA, made once with `raftlm tls init`
//! and kept offline by the administrator; nodes, administrators and clients
//! trust that CA. Every certificate it issues carries the holder's role as a
//! SAN URI: `raftlm:role:node`, `raftlm:role:admin` or `raftlm:role:client`.
//!
//! A node certificate names its node by the DNS SAN `node-<id>.<cluster>`
//! (for example `node-2.LICSRV`), and also carries the DNS SAN `<cluster>`,
//! the access point's name clients dial, plus any extra SANs given (IP
//! addresses or host names the node is reached at). It is good for both
//! server and client authentication, since nodes dial one another.
//! Administrator and client certificates carry their name as the common name
//! and are good for client authentication only.
//!
//! - [`cert`] makes the CA and issues certificates (`raftlm tls init|issue`);
//! - [`identity`] reads what a certificate says: role, node id, names, validity (pure);
//! - [`acceptor`] accepts TLS connections for the peer and client planes and
//!   reloads certificates;
//! - [`client`] is how applications, the CLI and nodes dial.
//!
//! See docs/security.md for what each plane requires.

pub mod acceptor;
pub mod cert;
pub mod client;
pub mod identity;
