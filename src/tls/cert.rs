//! Issuing the cluster's certificates: the CA itself, then node, admin and client certificates.
//!
//! Keys are ECDSA P-256 and are written as PKCS#8 PEM with mode 0600;
//! certificates are PEM with mode 0644. Every file is written to a temporary
//! file in the same directory, synced, and then moved into place (linked when
//! it must not replace anything, renamed when it may), so a reader never sees
//! a half-written file and an existing CA is never overwritten.
//!
//! Issuing reads the CA back from its directory: the cluster name for node
//! certificates comes from the CA certificate's `raftlm:cluster:` URI, and the
//! CA key must belong to the CA certificate.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

use super::identity::{self, CLUSTER_URI_PREFIX, CertInfo, Role};

/// File name of the CA certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Default validity of a CA certificate, in days (about ten years).
pub const CA_DAYS_DEFAULT: u32 = 3650;
/// Default validity of a node, admin or client certificate, in days (the
/// longest that common TLS clients accept).
pub const CERT_DAYS_DEFAULT: u32 = 825;

/// Seconds a new CA's validity starts before `now`, to allow for clock skew.
const CLOCK_SKEW_SECS: i64 = 60;
/// Seconds in a day.
const SECONDS_PER_DAY: i64 = 86_400;
/// Longest DNS name, in bytes.
const DNS_NAME_BYTES_MAX: usize = 253;
/// Longest admin or client name, in bytes.
const NAME_BYTES_MAX: usize = 64;
/// Latest time a certificate may name: 9999-12-31T23:59:59Z.
const UNIX_MAX: i64 = 253_402_300_799;
/// Random bytes in a serial number.
const SERIAL_BYTES: usize = 16;

/// Why a CA or certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The cluster name cannot be used in certificate names.
    #[error(
        "cluster name {0:?} is not valid: use letters, digits, '_', '.' and '-', short enough that node names stay within 253 bytes"
    )]
    BadCluster(String),
    /// An admin or client name cannot be used as a certificate and file name.
    #[error(
        "name {0:?} is not valid: use 1 to 64 letters, digits, '_', '.' and '-', not starting with '.' or '-', and not \"ca\""
    )]
    BadName(String),
    /// Node id 0 was asked for.
    #[error("node id 0 is not valid: node ids start at 1")]
    BadNodeId,
    /// An extra SAN is neither an IP address nor an acceptable host name.
    #[error("SAN {san:?} is not valid: {reason}")]
    BadSan {
        /// The SAN as given.
        san: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The validity period is empty or out of range.
    #[error("the validity period is not valid: {0}")]
    BadValidity(String),
    /// A file that must not be replaced already exists.
    #[error("{} already exists: {hint}", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
    },
    /// A file or directory could not be read.
    #[error("cannot read {what} {}: {source}; {hint}", path.display())]
    Read {
        /// What the file is ("CA key", "CA certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The CA certificate was read but cannot be issued from.
    #[error("CA certificate {} cannot be used: {reason}; point --dir at a directory made by `raftlm tls init`", path.display())]
    BadCaCert {
        /// The CA certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key was read but is not a usable private key.
    #[error("CA key {} cannot be used: {reason}; restore the key that `raftlm tls init` wrote", path.display())]
    BadCaKey {
        /// The CA key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("CA key {} does not belong to CA certificate {}: restore the matching pair", key.display(), cert.display())]
    KeyMismatch {
        /// The CA key file.
        key: PathBuf,
        /// The CA certificate file.
        cert: PathBuf,
    },
    /// The CA certificate has expired (or expires before the new certificate would start).
    #[error("CA certificate {} has expired: make a new CA with `raftlm tls init` in another directory", path.display())]
    CaExpired {
        /// The CA certificate file.
        path: PathBuf,
    },
    /// Key generation, signing or the self-check of the result failed.
    #[error("cannot make the certificate: {0}")]
    Generate(String),
}

/// Whom a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Cluster node `id` (1 or more); files `node-<id>.crt` and `node-<id>.key`.
    Node {
        /// The node id.
        id: u64,
    },
    /// An administrator; files `<name>.crt` and `<name>.key`.
    Admin {
        /// The administrator's name (the certificate's CN).
        name: String,
    },
    /// A license client; files `<name>.crt` and `<name>.key`.
    Client {
        /// The client's name (the certificate's CN).
        name: String,
    },
}

/// What to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// Whom the certificate is for.
    pub subject: Subject,
    /// Extra SANs: each is an IP address if it parses as one, else a DNS name
    /// (at most 253 bytes of letters, digits, '-', '.' and '_').
    pub extra_sans: Vec<String>,
    /// Start of validity, seconds since the Unix epoch (the CLI uses now - 60 s).
    pub not_before_unix: i64,
    /// End of validity, seconds since the Unix epoch (the CLI uses now + days);
    /// cut to the CA's own end of validity if later.
    pub not_after_unix: i64,
}

/// Files written and what the new certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate file (PEM).
    pub cert: PathBuf,
    /// The private key file (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// The new certificate, parsed back.
    pub info: CertInfo,
}

/// Creates `ca.crt` and `ca.key` (mode 0600) for `cluster` in `dir`, which is
/// created with mode 0700 if missing.
///
/// An existing CA is never overwritten: the files are placed with an
/// exclusive create (a hard link that fails if the name exists), and the
/// error names the file that is in the way. The CA is valid from
/// `now_unix` - 60 s until `days` days after `now_unix`.
pub fn init_ca(dir: &Path, cluster: &str, days: u32, now_unix: i64) -> Result<Issued, CertError> {
    if !is_cluster_name(cluster) {
        return Err(CertError::BadCluster(cluster.to_string()));
    }
    if days == 0 {
        return Err(CertError::BadValidity(
            "a CA must be valid for at least one day".into(),
        ));
    }
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for path in [&key_path, &cert_path] {
        refuse_existing(
            path,
            "an existing CA is never overwritten; move it away or choose another directory",
        )?;
    }

    let mut params = ca_params(cluster);
    set_validity(
        &mut params,
        now_unix.saturating_sub(CLOCK_SKEW_SECS),
        now_unix.saturating_add(i64::from(days) * SECONDS_PER_DAY),
    )?;
    params.serial_number = Some(random_serial()?);
    params.subject_alt_names = vec![SanType::URI(ia5(&format!(
        "{CLUSTER_URI_PREFIX}{cluster}"
    ))?)];
    let key = new_key()?;
    let cert = params.self_signed(&key).map_err(generate)?;
    let info = identity::parse(cert.der()).map_err(generate)?;

    create_dir(dir)?;
    write_pair(
        &key_path,
        &key.serialize_pem(),
        &cert_path,
        &cert.pem(),
        false,
    )?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
        info,
    })
}

/// Issues a certificate signed by the CA in `ca_dir`, writing `<name>.crt` and
/// `<name>.key` (mode 0600) into `out_dir`, where name is `node-<id>` for a
/// node and the (validated) name itself for an admin or client.
///
/// Refuses to overwrite unless `overwrite` is true (rotation). Each file is
/// written to a temporary file in `out_dir` and synced, then moved into
/// place, key first, then certificate, so a reader never sees a half-written
/// file. `out_dir` is created (mode 0700) if missing. The cluster name for a
/// node certificate comes from the CA certificate.
pub fn issue(
    ca_dir: &Path,
    out_dir: &Path,
    request: &IssueRequest,
    overwrite: bool,
) -> Result<Issued, CertError> {
    // Everything about the request that can be checked without the CA first.
    let shape = Shape::of(&request.subject)?;
    let extra = request
        .extra_sans
        .iter()
        .map(|s| extra_san(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cert_path = out_dir.join(format!("{}.crt", shape.file_name));
    let key_path = out_dir.join(format!("{}.key", shape.file_name));
    if !overwrite {
        for path in [&key_path, &cert_path] {
            refuse_existing(
                path,
                "pass --force to replace it (rotation) or move it away",
            )?;
        }
    }

    let ca = Ca::load(ca_dir)?;
    if request.not_before_unix >= ca.info.not_after_unix {
        return Err(CertError::CaExpired { path: ca.cert_path });
    }
    let not_after = request.not_after_unix.min(ca.info.not_after_unix);

    let mut params = CertificateParams::default();
    set_validity(&mut params, request.not_before_unix, not_after)?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;

    let mut sans: Vec<SanType> = Vec::new();
    let common_name = match &request.subject {
        Subject::Node { id } => {
            let dns = identity::node_dns_name(*id, &ca.cluster);
            if dns.len() > DNS_NAME_BYTES_MAX {
                return Err(CertError::BadCluster(ca.cluster));
            }
            sans.push(SanType::DnsName(ia5(&dns)?));
            sans.push(SanType::DnsName(ia5(&ca.cluster)?));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            dns
        }
        Subject::Admin { name } | Subject::Client { name } => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            name.clone()
        }
    };
    sans.push(SanType::URI(ia5(shape.role.uri())?));
    for extra in extra {
        let san = extra.to_san()?;
        if sans.contains(&san) {
            continue;
        }
        if let Extra::Dns(name) = &extra
            && name_is_node(name, &ca.cluster)
        {
            return Err(CertError::BadSan {
                san: name.clone(),
                reason: "it names a cluster node; node names are only added for the node itself",
            });
        }
        sans.push(san);
    }
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;

    let key = new_key()?;
    let issuer = Issuer::new(ca_params(&ca.cluster), &ca.key);
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    let info = check_issued(cert.der(), &ca)?;

    create_dir(out_dir)?;
    write_pair(
        &key_path,
        &key.serialize_pem(),
        &cert_path,
        &cert.pem(),
        overwrite,
    )?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
        info,
    })
}

/// The file name and role a subject gets, after validating it.
struct Shape {
    file_name: String,
    role: Role,
}

impl Shape {
    fn of(subject: &Subject) -> Result<Shape, CertError> {
        match subject {
            Subject::Node { id: 0 } => Err(CertError::BadNodeId),
            Subject::Node { id } => Ok(Shape {
                file_name: format!("node-{id}"),
                role: Role::Node,
            }),
            Subject::Admin { name } | Subject::Client { name } => {
                if !is_file_name(name) {
                    return Err(CertError::BadName(name.clone()));
                }
                Ok(Shape {
                    file_name: name.clone(),
                    role: if matches!(subject, Subject::Admin { .. }) {
                        Role::Admin
                    } else {
                        Role::Client
                    },
                })
            }
        }
    }
}

/// An extra SAN, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Extra {
    Ip(IpAddr),
    Dns(String),
}

impl Extra {
    fn to_san(&self) -> Result<SanType, CertError> {
        Ok(match self {
            Extra::Ip(ip) => SanType::IpAddress(*ip),
            Extra::Dns(name) => SanType::DnsName(ia5(name)?),
        })
    }
}

fn extra_san(text: &str) -> Result<Extra, CertError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Extra::Ip(ip));
    }
    let bad = |reason| CertError::BadSan {
        san: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.len() > DNS_NAME_BYTES_MAX {
        return Err(bad("a host name is at most 253 bytes long"));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad(
            "it is not an IP address, and a host name has only letters, digits, '-', '.' and '_'",
        ));
    }
    if text.split('.').any(str::is_empty) {
        return Err(bad(
            "a host name has no empty labels (no leading, trailing or double '.')",
        ));
    }
    Ok(Extra::Dns(text.to_string()))
}

/// Whether `name` is `node-<id>.<cluster>` for some node id.
fn name_is_node(name: &str, cluster: &str) -> bool {
    let probe = CertInfo {
        subject: String::new(),
        common_name: None,
        dns_names: vec![name.to_string()],
        ip_addresses: Vec::new(),
        uris: vec![identity::ROLE_NODE_URI.to_string()],
        not_before_unix: 0,
        not_after_unix: 0,
        serial_hex: String::new(),
        is_ca: false,
    };
    probe.node_id(cluster).is_some()
}

/// The CA as read back from its directory.
struct Ca {
    cert_path: PathBuf,
    info: CertInfo,
    cluster: String,
    key: KeyPair,
    /// The CA certificate's subject, DER, to check issued certificates against.
    subject_der: Vec<u8>,
}

impl Ca {
    fn load(dir: &Path) -> Result<Ca, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let hint = "run `raftlm tls init` first, or point --dir at the CA directory";
        let cert_text = fs::read_to_string(&cert_path).map_err(|source| CertError::Read {
            what: "CA certificate",
            path: cert_path.clone(),
            source,
            hint,
        })?;
        let key_text = fs::read_to_string(&key_path).map_err(|source| CertError::Read {
            what: "CA key",
            path: key_path.clone(),
            source,
            hint,
        })?;
        let bad_cert = |reason: String| CertError::BadCaCert {
            path: cert_path.clone(),
            reason,
        };
        let ders = identity::parse_pem_certs(&cert_text).map_err(|e| bad_cert(e.to_string()))?;
        let [der] = ders.as_slice() else {
            return Err(bad_cert(format!(
                "it holds {} certificates, expected one",
                ders.len()
            )));
        };
        let info = identity::parse(der).map_err(|e| bad_cert(e.to_string()))?;
        if !info.is_ca {
            return Err(bad_cert("it is not a CA certificate".into()));
        }
        let cluster = info.cluster().ok_or_else(|| {
            bad_cert(format!(
                "it has no single {CLUSTER_URI_PREFIX}<cluster> URI naming its cluster"
            ))
        })?;
        if !is_cluster_name(&cluster) {
            return Err(bad_cert(format!(
                "its cluster name {cluster:?} is not valid"
            )));
        }
        let (_, parsed) =
            x509_parser::parse_x509_certificate(der).map_err(|e| bad_cert(e.to_string()))?;
        let subject_der = parsed.subject().as_raw().to_vec();
        let key = KeyPair::from_pem(&key_text).map_err(|e| CertError::BadCaKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(CertError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        Ok(Ca {
            cert_path,
            info,
            cluster,
            key,
            subject_der,
        })
    }
}

/// The CA's parameters: what `init_ca` signs, and what `issue` names as issuer.
fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("raftlm CA {cluster}"));
    dn.push(DnType::OrganizationName, "raftlm");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Parses an issued certificate back and checks that it names the CA as its issuer.
fn check_issued(der: &[u8], ca: &Ca) -> Result<CertInfo, CertError> {
    let info = identity::parse(der).map_err(generate)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der).map_err(generate)?;
    if parsed.issuer().as_raw() != ca.subject_der.as_slice() {
        return Err(CertError::BadCaCert {
            path: ca.cert_path.clone(),
            reason: "its subject is not the one `raftlm tls init` writes".into(),
        });
    }
    Ok(info)
}

fn set_validity(
    params: &mut CertificateParams,
    not_before: i64,
    not_after: i64,
) -> Result<(), CertError> {
    for t in [not_before, not_after] {
        if !(0..=UNIX_MAX).contains(&t) {
            return Err(CertError::BadValidity(format!(
                "time {t} is outside 1970-01-01 to 9999-12-31"
            )));
        }
    }
    if not_before >= not_after {
        return Err(CertError::BadValidity(format!(
            "it ends (unix time {not_after}) before it starts (unix time {not_before})"
        )));
    }
    // Both are in 0..=UNIX_MAX, checked above, so the conversions cannot fail.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before.unsigned_abs());
    params.not_after = epoch + Duration::from_secs(not_after.unsigned_abs());
    Ok(())
}

fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; SERIAL_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| CertError::Generate(format!("the OS random source failed: {e}")))?;
    // Positive (top bit clear) and with a non-zero first byte, so DER keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn new_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)
}

fn ia5(text: &str) -> Result<rcgen::string::Ia5String, CertError> {
    rcgen::string::Ia5String::try_from(text).map_err(generate)
}

fn generate(e: impl std::fmt::Display) -> CertError {
    CertError::Generate(e.to_string())
}

/// Whether `cluster` is an access-point name whose node DNS names fit in 253 bytes.
fn is_cluster_name(cluster: &str) -> bool {
    crate::text::is_name(cluster, crate::config::CLUSTER_NAME_BYTES_MAX)
        && identity::node_dns_name(u64::MAX, cluster).len() <= DNS_NAME_BYTES_MAX
}

/// Whether `name` may be an admin or client name and so a file name.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && !name.starts_with(['.', '-'])
        && !name.eq_ignore_ascii_case("ca")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn refuse_existing(path: &Path, hint: &'static str) -> Result<(), CertError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(CertError::Exists {
            path: path.to_path_buf(),
            hint,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CertError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes a key and its certificate: both to synced temporary files first,
/// then into place, key first. Without `overwrite`, an existing file is
/// refused (and a key already placed is removed again).
fn write_pair(
    key_path: &Path,
    key_pem: &str,
    cert_path: &Path,
    cert_pem: &str,
    overwrite: bool,
) -> Result<(), CertError> {
    let key_tmp = TempFile::write(key_path, key_pem, 0o600)?;
    let cert_tmp = TempFile::write(cert_path, cert_pem, 0o644)?;
    key_tmp.place(overwrite)?;
    if let Err(e) = cert_tmp.place(overwrite) {
        if !overwrite {
            // The key was ours alone: do not leave it without its certificate.
            let _ = fs::remove_file(key_path);
        }
        return Err(e);
    }
    sync_dir(key_path)
}

/// A synced temporary file beside its destination; removed if never placed.
struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
}

impl TempFile {
    fn write(dest: &Path, text: &str, mode: u32) -> Result<TempFile, CertError> {
        let dir = parent(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fail = |source| CertError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let mut attempt = 0;
        let (tmp, mut file): (PathBuf, File) = loop {
            let tmp = dir.join(format!(
                ".{name}.tmp-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
            {
                Ok(file) => break (tmp, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(fail(e)),
            }
        };
        let temp = TempFile {
            tmp,
            dest: dest.to_path_buf(),
        };
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        Ok(temp)
    }

    /// Moves the file into place: rename (replacing) with `overwrite`, else a
    /// hard link that fails if the destination exists.
    fn place(self, overwrite: bool) -> Result<(), CertError> {
        let result = if overwrite {
            fs::rename(&self.tmp, &self.dest)
        } else {
            fs::hard_link(&self.tmp, &self.dest)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CertError::Exists {
                path: self.dest.clone(),
                hint: "it appeared while writing; move it away and try again",
            }),
            Err(source) => Err(CertError::Write {
                path: self.dest.clone(),
                source,
            }),
        }
        // Drop removes the temporary name (after a link; after a rename it is gone already).
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Syncs the directory holding `path`, so the new names survive a crash.
fn sync_dir(path: &Path) -> Result<(), CertError> {
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn request(subject: Subject, sans: &[&str]) -> IssueRequest {
        IssueRequest {
            subject,
            extra_sans: sans.iter().map(|s| s.to_string()).collect(),
            not_before_unix: NOW - 60,
            not_after_unix: NOW + i64::from(CERT_DAYS_DEFAULT) * SECONDS_PER_DAY,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    fn read_info(path: &Path) -> CertInfo {
        let text = fs::read_to_string(path).expect("read cert");
        let ders = identity::parse_pem_certs(&text).expect("pem");
        assert_eq!(ders.len(), 1);
        identity::parse(&ders[0]).expect("parse")
    }

    // A new CA records its cluster, is a CA, and keeps its key private in a private directory.
    #[test]
    fn init_ca_writes_a_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        let ca = init_ca(&dir, "LICSRV", CA_DAYS_DEFAULT, NOW).expect("init");
        assert_eq!(ca.cert, dir.join(CA_CERT_FILE));
        assert_eq!(ca.key, dir.join(CA_KEY_FILE));
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let info = read_info(&ca.cert);
        assert_eq!(info, ca.info);
        assert!(info.is_ca);
        assert_eq!(info.cluster(), Some("LICSRV".to_string()));
        assert_eq!(info.common_name.as_deref(), Some("raftlm CA LICSRV"));
        assert!(info.subject.contains("O=raftlm"), "{}", info.subject);
        assert_eq!(info.not_before_unix, NOW - 60);
        assert_eq!(info.days_left(NOW), i64::from(CA_DAYS_DEFAULT));
        assert_eq!(info.serial_hex.len(), 2 * SERIAL_BYTES);
        assert!(!info.has_role(Role::Node));
    }

    // An existing CA is never overwritten, and the error names the file.
    #[test]
    fn init_ca_refuses_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = init_ca(tmp.path(), "LICSRV", 30, NOW).expect("init");
        let before = fs::read(&first.key).expect("read key");
        let err = init_ca(tmp.path(), "LICSRV", 30, NOW).expect_err("second init");
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
        assert_eq!(fs::read(&first.key).expect("read key"), before);
        // Only the certificate left over is refused just as well.
        fs::remove_file(&first.key).expect("rm");
        let err = init_ca(tmp.path(), "LICSRV", 30, NOW).expect_err("third init");
        assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
        assert!(!first.key.exists());
    }

    // Bad cluster names and zero days are refused before anything is written.
    #[test]
    fn init_ca_validates() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        for bad in ["", "lic srv", "a/b", &"x".repeat(240)] {
            assert!(matches!(
                init_ca(&dir, bad, 30, NOW),
                Err(CertError::BadCluster(_))
            ));
        }
        assert!(matches!(
            init_ca(&dir, "LICSRV", 0, NOW),
            Err(CertError::BadValidity(_))
        ));
        assert!(!dir.exists());
    }

    // A node certificate carries its node name, the access point name, its role, extra SANs and both EKUs.
    #[test]
    fn issue_node() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init_ca(tmp.path(), "LICSRV", CA_DAYS_DEFAULT, NOW).expect("init");
        let out = tmp.path().join("out");
        let req = request(
            Subject::Node { id: 2 },
            &["10.0.0.2", "::1", "lic2.example.com", "LICSRV"],
        );
        let node = issue(tmp.path(), &out, &req, false).expect("issue");
        assert_eq!(node.cert, out.join("node-2.crt"));
        assert_eq!(node.key, out.join("node-2.key"));
        assert_eq!(mode(&node.key), 0o600);
        let info = read_info(&node.cert);
        assert_eq!(info, node.info);
        assert_eq!(info.common_name.as_deref(), Some("node-2.LICSRV"));
        assert_eq!(
            info.dns_names,
            ["node-2.LICSRV", "LICSRV", "lic2.example.com"]
        );
        assert_eq!(
            info.ip_addresses,
            [
                "10.0.0.2".parse::<IpAddr>().expect("ip"),
                "::1".parse().expect("ip")
            ]
        );
        assert_eq!(info.uris, [identity::ROLE_NODE_URI]);
        assert!(info.has_role(Role::Node));
        assert!(!info.has_role(Role::Admin));
        assert!(!info.is_ca);
        assert_eq!(info.node_id("LICSRV"), Some(2));
        assert_eq!(info.node_id("OTHER"), None);
        assert_eq!(info.days_left(NOW), i64::from(CERT_DAYS_DEFAULT));

        let der = identity::parse_pem_certs(&fs::read_to_string(&node.cert).expect("read"))
            .expect("pem")
            .remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let eku = parsed
            .extended_key_usage()
            .expect("eku")
            .expect("has eku")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = parsed.key_usage().expect("ku").expect("has ku").value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        // The key file holds the key the certificate was made for.
        let key = KeyPair::from_pem(&fs::read_to_string(&node.key).expect("key")).expect("pem key");
        assert_eq!(
            key.public_key_raw(),
            parsed.public_key().subject_public_key.data.as_ref()
        );
    }

    // Admin and client certificates carry their name and role, client auth only, and no node id.
    #[test]
    fn issue_admin_and_client() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init_ca(tmp.path(), "LICSRV", CA_DAYS_DEFAULT, NOW).expect("init");
        let admin = issue(
            tmp.path(),
            tmp.path(),
            &request(
                Subject::Admin {
                    name: "alice".into(),
                },
                &[],
            ),
            false,
        )
        .expect("admin");
        assert_eq!(admin.cert, tmp.path().join("alice.crt"));
        assert_eq!(mode(&admin.key), 0o600);
        assert_eq!(admin.info.subject, "CN=alice");
        assert!(admin.info.has_role(Role::Admin));
        assert!(!admin.info.has_role(Role::Node));
        assert!(!admin.info.has_role(Role::Client));
        assert_eq!(admin.info.node_id("LICSRV"), None);

        let client = issue(
            tmp.path(),
            tmp.path(),
            &request(
                Subject::Client {
                    name: "build-farm_1".into(),
                },
                &[],
            ),
            false,
        )
        .expect("client");
        assert_eq!(client.info.common_name.as_deref(), Some("build-farm_1"));
        assert_eq!(client.info.uris, [identity::ROLE_CLIENT_URI]);
        assert!(client.info.dns_names.is_empty());
        assert_ne!(client.info.serial_hex, admin.info.serial_hex);

        let der = identity::parse_pem_certs(&fs::read_to_string(&client.cert).expect("read"))
            .expect("pem")
            .remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let eku = parsed
            .extended_key_usage()
            .expect("eku")
            .expect("has eku")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    // Issuing again is refused without overwrite and replaces both files with it (rotation).
    #[test]
    fn issue_refuses_overwrite_without_force() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init_ca(tmp.path(), "LICSRV", CA_DAYS_DEFAULT, NOW).expect("init");
        let req = request(Subject::Node { id: 1 }, &[]);
        let first = issue(tmp.path(), tmp.path(), &req, false).expect("first");
        let key_before = fs::read(&first.key).expect("key");
        let err = issue(tmp.path(), tmp.path(), &req, false).expect_err("second");
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("node-1.key"), "{err}");
        assert_eq!(fs::read(&first.key).expect("key"), key_before);

        let rotated = issue(tmp.path(), tmp.path(), &req, true).expect("rotate");
        assert_ne!(fs::read(&rotated.key).expect("key"), key_before);
        assert_ne!(rotated.info.serial_hex, first.info.serial_hex);
        assert_eq!(read_info(&rotated.cert), rotated.info);
        assert_eq!(mode(&rotated.key), 0o600);
        // No temporary files are left behind.
        let stray: Vec<_> = fs::read_dir(tmp.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    // A certificate whose not_after is in the past parses and reports negative days left.
    #[test]
    fn expired_certificate_has_negative_days_left() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init_ca(
            tmp.path(),
            "LICSRV",
            CA_DAYS_DEFAULT,
            NOW - 10 * SECONDS_PER_DAY,
        )
        .expect("init");
        let req = IssueRequest {
            subject: Subject::Client { name: "old".into() },
            extra_sans: Vec::new(),
            not_before_unix: NOW - 5 * SECONDS_PER_DAY,
            not_after_unix: NOW - 2 * SECONDS_PER_DAY,
        };
        let old = issue(tmp.path(), tmp.path(), &req, false).expect("issue");
        assert_eq!(old.info.days_left(NOW), -2);
        assert!(old.info.days_left(NOW + 1) < 0);
    }

    // Issuing without a CA names the missing key or certificate and says to run init.
    #[test]
    fn issue_without_ca_says_what_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = issue(
            tmp.path(),
            tmp.path(),
            &request(Subject::Node { id: 1 }, &[]),
            false,
        )
        .expect_err("no CA");
        let text = err.to_string();
        assert!(
            text.contains("ca.crt") && text.contains("raftlm tls init"),
            "{text}"
        );
        assert!(!tmp.path().join("node-1.key").exists());
    }

    // A CA key that belongs to another CA is refused instead of signing unverifiable certificates.
    #[test]
    fn issue_refuses_mismatched_ca_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        init_ca(&a, "LICSRV", 30, NOW).expect("init a");
        init_ca(&b, "LICSRV", 30, NOW).expect("init b");
        fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("copy");
        let err =
            issue(&a, &a, &request(Subject::Node { id: 1 }, &[]), false).expect_err("mismatch");
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    }

    // Bad node ids, names and SANs are refused and write nothing.
    #[test]
    fn issue_validates_the_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init_ca(tmp.path(), "LICSRV", 30, NOW).expect("init");
        let refuse = |subject: Subject, sans: &[&str]| {
            issue(tmp.path(), tmp.path(), &request(subject, sans), false).expect_err("refused")
        };
        assert!(matches!(
            refuse(Subject::Node { id: 0 }, &[]),
            CertError::BadNodeId
        ));
        for name in [
            "",
            "ca",
            "CA",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            &"n".repeat(65),
        ] {
            let err = refuse(Subject::Admin { name: name.into() }, &[]);
            assert!(matches!(err, CertError::BadName(_)), "{name:?}: {err}");
        }
        for san in [
            "",
            "a b",
            "a..b",
            "host.",
            "*.example.com",
            &"h".repeat(254),
            "node-3.LICSRV",
        ] {
            let err = refuse(Subject::Node { id: 2 }, &[san]);
            assert!(matches!(err, CertError::BadSan { .. }), "{san:?}: {err}");
        }
        // The node's own name as an extra SAN is merely a duplicate.
        let ok = issue(
            tmp.path(),
            tmp.path(),
            &request(Subject::Node { id: 2 }, &["node-2.LICSRV"]),
            false,
        )
        .expect("own name");
        assert_eq!(ok.info.dns_names, ["node-2.LICSRV", "LICSRV"]);
        let mut req = request(Subject::Client { name: "c".into() }, &[]);
        req.not_after_unix = req.not_before_unix;
        assert!(matches!(
            issue(tmp.path(), tmp.path(), &req, false),
            Err(CertError::BadValidity(_))
        ));
        let names: Vec<_> = fs::read_dir(tmp.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["ca.crt", "ca.key", "node-2.crt", "node-2.key"]);
    }

    // A certificate never outlives the CA that signed it.
    #[test]
    fn validity_is_cut_to_the_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = init_ca(tmp.path(), "LICSRV", 10, NOW).expect("init");
        let node = issue(
            tmp.path(),
            tmp.path(),
            &request(Subject::Node { id: 1 }, &[]),
            false,
        )
        .expect("issue");
        assert_eq!(node.info.not_after_unix, ca.info.not_after_unix);
    }
}
