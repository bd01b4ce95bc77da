//! Certificate parsing (`raftlm::tls::identity`): `parse` of a DER
//! certificate, which checks every peer and administrator certificate a TLS
//! handshake presents, and `parse_pem_certs` of the PEM files the CLI reads.
//!
//! Properties: neither panics on any bytes; for a certificate that parses,
//! what the access checks ask of it (`node_id`, `cluster`, `has_role`,
//! `days_left`) does not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlm::tls::identity::{self, Role};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = identity::parse(data) {
        let _ = info.node_id("LICSRV");
        let _ = info.cluster();
        for role in [Role::Node, Role::Admin, Role::Client] {
            let _ = info.has_role(role);
        }
        for now in [0, 1_795_000_000, i64::MIN, i64::MAX] {
            let _ = info.days_left(now);
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(certs) = identity::parse_pem_certs(text)
    {
        for der in certs {
            let _ = identity::parse(&der);
        }
    }
});
