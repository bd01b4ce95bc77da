//! What a certificate says about its holder: role, node id, cluster, names, validity.
//!
//! Pure functions over DER (and PEM text): no file I/O and no clock, so the
//! caller passes "now" in. Parsing is done with `x509-parser`; this module
//! does not check signatures or chains (the TLS layer does that), it only
//! reads what a certificate claims so the cluster can decide what the holder
//! may do once the chain has been verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::extensions::GeneralName;

use crate::license::ClusterId;
use x509_parser::pem::Pem;

/// SAN URI that marks a node certificate.
pub const ROLE_NODE_URI: &str = "raftlm:role:node";
/// SAN URI that marks an administrator certificate.
pub const ROLE_ADMIN_URI: &str = "raftlm:role:admin";
/// SAN URI that marks a license client certificate.
pub const ROLE_CLIENT_URI: &str = "raftlm:role:client";
/// Prefix of the SAN URI with which a CA certificate records its cluster name.
pub const CLUSTER_URI_PREFIX: &str = "raftlm:cluster:";

/// Seconds in a day, for [`CertInfo::days_left`].
const SECONDS_PER_DAY: i64 = 86_400;

/// The role a certificate grants its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cluster node (may serve and join the Raft group).
    Node,
    /// An administrator (may manage licenses and the cluster).
    Admin,
    /// A license client (may check seats out and in).
    Client,
}

impl Role {
    /// The SAN URI that carries this role.
    pub fn uri(self) -> &'static str {
        match self {
            Role::Node => ROLE_NODE_URI,
            Role::Admin => ROLE_ADMIN_URI,
            Role::Client => ROLE_CLIENT_URI,
        }
    }
}

/// Why a certificate or PEM text could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Malformed(String),
    /// A certificate was followed by other bytes.
    #[error("the certificate is followed by {0} unexpected bytes")]
    TrailingBytes(usize),
    /// An extension the identity depends on could not be parsed.
    #[error("the certificate's {what} extension is malformed: {reason}")]
    BadExtension {
        /// Which extension.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// An IP address SAN that is neither 4 nor 16 bytes long.
    #[error("the certificate has an IP address SAN of {0} bytes, expected 4 or 16")]
    BadIpAddress(usize),
    /// The PEM text has a block that cannot be decoded.
    #[error("the PEM text is malformed: {0}")]
    Pem(String),
    /// The PEM text has no CERTIFICATE block.
    #[error("the PEM text has no CERTIFICATE block")]
    NoCertificate,
}

/// What a certificate claims, in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514-style display of the subject, e.g. `CN=alice`.
    pub subject: String,
    /// The subject's first common name, if it has one.
    pub common_name: Option<String>,
    /// DNS name SANs, in certificate order.
    pub dns_names: Vec<String>,
    /// IP address SANs, in certificate order.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, in certificate order (roles and the CA's cluster).
    pub uris: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// The serial number as lowercase hex without separators or leading zero bytes.
    pub serial_hex: String,
    /// Whether basic constraints say `CA:TRUE`.
    pub is_ca: bool,
}

/// Parses one DER certificate, refusing trailing bytes after it.
pub fn parse(der: &[u8]) -> Result<CertInfo, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::TrailingBytes(rest.len()));
    }
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);

    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut uris = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadExtension {
            what: "subject alternative name",
            reason: e.to_string(),
        })?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                GeneralName::URI(uri) => uris.push((*uri).to_string()),
                GeneralName::IPAddress(bytes) => ip_addresses.push(ip_from_bytes(bytes)?),
                _ => {}
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| IdentityError::BadExtension {
            what: "basic constraints",
            reason: e.to_string(),
        })?
        .is_some_and(|bc| bc.value.ca);

    let validity = cert.validity();
    Ok(CertInfo {
        subject: subject.to_string(),
        common_name,
        dns_names,
        ip_addresses,
        uris,
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
        serial_hex: serial_hex(cert.raw_serial()),
        is_ca,
    })
}

/// The DER bytes of each CERTIFICATE block in `pem`, in order; other blocks
/// (keys, for instance) and text between blocks are skipped. Text with no
/// CERTIFICATE block at all is an error.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, IdentityError> {
    let mut certs = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| IdentityError::Pem(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    if certs.is_empty() {
        return Err(IdentityError::NoCertificate);
    }
    Ok(certs)
}

/// The cluster identity a CA certificate (DER) gives: the SHA-256 of its
/// SubjectPublicKeyInfo, written `sha256:<hex>` (see
/// [`crate::license::identity`]). The certificate is not checked to be a CA.
pub fn cluster_id(der: &[u8]) -> Result<ClusterId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    Ok(ClusterId::of_public_key(cert.public_key().raw))
}

/// The identities of the CA certificates in PEM text (a CA file or bundle),
/// in file order, with the cluster each names (from its `raftlm:cluster:`
/// URI, if any). Certificates that are not CAs are skipped.
pub fn ca_cluster_ids(pem: &str) -> Result<Vec<(ClusterId, Option<String>)>, IdentityError> {
    let mut out = Vec::new();
    for der in parse_pem_certs(pem)? {
        let info = parse(&der)?;
        if info.is_ca {
            out.push((cluster_id(&der)?, info.cluster()));
        }
    }
    Ok(out)
}

/// The DNS name a node certificate carries for node `id` of `cluster`: `node-<id>.<cluster>`.
pub fn node_dns_name(id: u64, cluster: &str) -> String {
    format!("node-{id}.{cluster}")
}

impl CertInfo {
    /// Whether the certificate carries `role`'s SAN URI.
    pub fn has_role(&self, role: Role) -> bool {
        self.uris.iter().any(|uri| uri == role.uri())
    }

    /// The node id this certificate names in `cluster`: requires role node AND a DNS SAN exactly
    /// `node-<id>.<cluster>` (ASCII case ignored, as TLS name checks ignore it; id decimal, no
    /// leading zeros, non-zero). None otherwise.
    /// If it names several node ids, None (ambiguous).
    pub fn node_id(&self, cluster: &str) -> Option<u64> {
        if !self.has_role(Role::Node) {
            return None;
        }
        let mut found: Option<u64> = None;
        for name in &self.dns_names {
            let Some(id) = node_id_in(name, cluster) else {
                continue;
            };
            match found {
                Some(other) if other != id => return None,
                _ => found = Some(id),
            }
        }
        found
    }

    /// The cluster a CA certificate was made for (from the raftlm:cluster: URI).
    ///
    /// None for a certificate that is not a CA, that has no such URI, whose
    /// URI names an empty cluster, or that names several different clusters.
    pub fn cluster(&self) -> Option<String> {
        if !self.is_ca {
            return None;
        }
        let mut found: Option<&str> = None;
        for uri in &self.uris {
            let Some(name) = uri.strip_prefix(CLUSTER_URI_PREFIX) else {
                continue;
            };
            if name.is_empty() {
                return None;
            }
            match found {
                Some(other) if other != name => return None,
                _ => found = Some(name),
            }
        }
        found.map(str::to_string)
    }

    /// Days from `now_unix` until not_after (negative when expired), rounded down.
    pub fn days_left(&self, now_unix: i64) -> i64 {
        self.not_after_unix
            .saturating_sub(now_unix)
            .div_euclid(SECONDS_PER_DAY)
    }
}

/// The id in `node-<id>.<cluster>`, if `name` is exactly that with a canonical non-zero id.
///
/// Compared without regard to ASCII case, as TLS name verification compares
/// DNS names: `node-1.licsrv` names node 1 of `LICSRV` for a dialling peer, so
/// it must count as naming node 1 here too (a certificate naming two nodes is
/// then ambiguous and refused).
fn node_id_in(name: &str, cluster: &str) -> Option<u64> {
    let name = name.to_ascii_lowercase();
    let cluster = cluster.to_ascii_lowercase();
    let digits = name
        .strip_prefix("node-")?
        .strip_suffix(cluster.as_str())?
        .strip_suffix('.')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()
}

fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, IdentityError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(IdentityError::BadIpAddress(bytes.len()))
    }
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_with(uris: &[&str], dns: &[&str]) -> CertInfo {
        CertInfo {
            subject: "CN=x".to_string(),
            common_name: Some("x".to_string()),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: Vec::new(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            not_before_unix: 0,
            not_after_unix: 10 * SECONDS_PER_DAY,
            serial_hex: "01".to_string(),
            is_ca: false,
        }
    }

    // Garbage, empty input and a truncated certificate are errors, never panics.
    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(parse(b""), Err(IdentityError::Malformed(_))));
        assert!(matches!(
            parse(b"not a certificate at all"),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            parse(&[0x30, 0x82, 0xff, 0xff, 0x01]),
            Err(IdentityError::Malformed(_))
        ));
    }

    // A canonical node name is accepted (in any letter case) and every near miss is refused.
    #[test]
    fn node_id_requires_the_exact_name() {
        let node = |dns: &[&str]| info_with(&[ROLE_NODE_URI], dns).node_id("LICSRV");
        assert_eq!(node(&["node-2.LICSRV", "LICSRV"]), Some(2));
        assert_eq!(node(&["node-2.LICSRV", "node-2.LICSRV"]), Some(2));
        assert_eq!(node(&["node-02.LICSRV"]), None);
        assert_eq!(node(&["node-0.LICSRV"]), None);
        // Case is ignored, as a dialling peer's name check ignores it.
        assert_eq!(node(&["node-2.licsrv"]), Some(2));
        assert_eq!(node(&["node-2.LICSRV", "NODE-1.licsrv"]), None);
        assert_eq!(node(&["node-2LICSRV"]), None);
        assert_eq!(node(&["node-+2.LICSRV"]), None);
        assert_eq!(node(&["node-.LICSRV"]), None);
        assert_eq!(node(&["node-2.LICSRV.evil"]), None);
        assert_eq!(node(&["node-99999999999999999999.LICSRV"]), None);
        assert_eq!(node(&["node-1.LICSRV", "node-2.LICSRV"]), None);
        let admin = info_with(&[ROLE_ADMIN_URI], &["node-2.LICSRV"]);
        assert_eq!(admin.node_id("LICSRV"), None);
    }

    // The cluster comes only from a CA certificate with one consistent cluster URI.
    #[test]
    fn cluster_needs_a_ca_and_one_name() {
        let mut ca = info_with(&["raftlm:cluster:LICSRV"], &[]);
        assert_eq!(ca.cluster(), None);
        ca.is_ca = true;
        assert_eq!(ca.cluster(), Some("LICSRV".to_string()));
        ca.uris.push("raftlm:cluster:OTHER".to_string());
        assert_eq!(ca.cluster(), None);
        ca.uris = vec!["raftlm:cluster:".to_string()];
        assert_eq!(ca.cluster(), None);
    }

    // Days left round down, so a certificate one second past expiry has -1.
    #[test]
    fn days_left_rounds_down() {
        let info = info_with(&[], &[]);
        assert_eq!(info.days_left(0), 10);
        assert_eq!(info.days_left(1), 9);
        assert_eq!(info.days_left(10 * SECONDS_PER_DAY), 0);
        assert_eq!(info.days_left(10 * SECONDS_PER_DAY + 1), -1);
        assert_eq!(info.days_left(12 * SECONDS_PER_DAY), -2);
    }

    // PEM text without certificates, or with a broken block, is an error.
    #[test]
    fn pem_errors() {
        assert_eq!(parse_pem_certs(""), Err(IdentityError::NoCertificate));
        assert_eq!(
            parse_pem_certs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(IdentityError::NoCertificate)
        );
        assert!(matches!(
            parse_pem_certs("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(IdentityError::Pem(_))
        ));
        assert!(matches!(
            parse_pem_certs("-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(IdentityError::Pem(_))
        ));
    }

    // A real certificate round-trips through PEM, and bytes after it are refused.
    #[test]
    fn pem_round_trip_and_trailing_bytes() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["h.example".to_string(), "10.1.2.3".to_string()])
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).expect("sign");
        let text = format!(
            "comment\n{}{}{}",
            key.serialize_pem(),
            cert.pem(),
            cert.pem()
        );
        let ders = parse_pem_certs(&text).expect("pem");
        assert_eq!(ders.len(), 2);
        assert_eq!(ders[0], cert.der().to_vec());
        let info = parse(&ders[0]).expect("parse");
        assert_eq!(info.subject, "CN=alice");
        assert_eq!(info.common_name.as_deref(), Some("alice"));
        assert_eq!(info.dns_names, ["h.example"]);
        assert_eq!(info.ip_addresses, [IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
        assert!(!info.is_ca);
        let mut long = ders[0].clone();
        long.push(0);
        assert_eq!(parse(&long), Err(IdentityError::TrailingBytes(1)));
    }

    // Serial numbers print without the DER sign byte.
    #[test]
    fn serial_hex_strips_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f]), "7f");
    }
}
