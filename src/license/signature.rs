//! Vendor keys, and Ed25519 signing and verification of license files.
//!
//! A vendor signs each `FEATURE`/`INCREMENT` line of a license file with its
//! secret key; a cluster accepts a line only if it is signed by a key it
//! trusts. What is signed is the line's **canonical form** ([`canonical_form`]),
//! a byte string that holds every field that gives the line its meaning *and
//! the access point name of the file's `SERVER` line*. Editing any field
//! breaks the signature, and so does moving the file to another cluster.
//!
//! # Canonical form
//!
//! ```text
//! raftlm-license-v1 LF
//! server    SP len SP <SERVER name>                 LF
//! cluster-id SP len SP sha256:<hex>                 LF   (only in files bound to an identity)
//! host-ids  SP len SP host:<hex>,host:<hex>,…       LF   (only in files bound to host ids)
//! keyword   SP len SP FEATURE | INCREMENT           LF
//! feature   SP len SP <feature>                     LF
//! vendor    SP len SP <vendor>                      LF
//! version   SP len SP <version>                     LF
//! expiry    SP len SP <dd-mmm-yyyy | permanent>     LF   (lowercase, two-digit day)
//! count     SP len SP <seats, decimal, no zeros in front> LF
//! then, for every attribute except SIGN, in file order:
//! key       SP len SP <KEY as written>              LF
//! value     SP len SP <value, unquoted>             LF
//! ```
//!
//! The `cluster-id` field is present exactly when the `SERVER` line's host id
//! is `ID=sha256:<hex>` ([`crate::license::identity`]): a file bound to a
//! cluster identity signs it, and a file bound by name only has the same
//! canonical form (and signatures) as before identities existed. The
//! `host-ids` field is present exactly when the `SERVER` line has a
//! `HOSTIDS=` list ([`crate::license::host`]), in file order.
//!
//! `len` is the decimal byte length of the field that follows it, so a field
//! may hold any byte (even a line feed) and no two different lines share a
//! canonical form. Not covered: comments, spacing, quoting, continuation,
//! the order of lines, the `SERVER` host id when it is not an identity, the
//! port, and `VENDOR` lines —
//! none of them changes what is licensed.
//!
//! # SIGN values
//!
//! `SIGN="ed25519:" base64(key id ‖ signature)` (the syntax is the file
//! format's, `license/file.rs`): standard base64 with padding
//! of 72 bytes (96 characters), the 8-byte [`KeyId`] of the signing key (the
//! first 8 bytes of its public key) followed by the 64-byte Ed25519 signature
//! of the canonical form. The key id only lets a cluster tell "signed by a key
//! I do not trust" apart from "changed after signing"; the signature is always
//! checked against the full trusted public key (strict verification, so a
//! signature has exactly one valid encoding).
//!
//! # Key files
//!
//! One key per file, on one line; blank lines and lines starting with `#` are
//! ignored:
//!
//! ```text
//! PREFIX.key: raftlm-vendor-secret-key-v1 <vendor or *> <base64 of the 32-byte seed>
//! PREFIX.pub: raftlm-vendor-public-key-v1 <vendor or *> <base64 of the 32-byte public key>
//! ```
//!
//! The vendor field binds a key to one vendor name: a cluster that trusts
//! `acme`'s key accepts it only on lines of vendor `acme`, so one vendor
//! cannot issue seats of another's features. `*` means any vendor.
//!
//! Left out: the clock (the caller passes `now_ms`), the filesystem (key
//! files are read at the edge, `src/keys.rs`, and their text parsed here),
//! key storage policy (the CLI writes the files), revocation and key rotation beyond trusting several
//! keys.

use std::fmt;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;

use crate::license::feature::{Date, Expiry, FeatureLine};
use crate::license::file::{self, LicenseFile, ParseError, ParsedFeature};
use crate::license::host::HostId;
use crate::license::identity::ClusterId;

/// The first bytes of every canonical form: the scheme and its version, so a
/// signature made for anything else can never verify as a license line.
pub const CANONICAL_PREFIX: &[u8] = b"raftlm-license-v1\n";

/// The first word of a secret key file.
pub const SECRET_KEY_MAGIC: &str = "raftlm-vendor-secret-key-v1";

/// The first word of a public key file.
pub const PUBLIC_KEY_MAGIC: &str = "raftlm-vendor-public-key-v1";

/// The vendor field of a key that may sign for any vendor.
pub const ANY_VENDOR: &str = "*";

/// The largest key file accepted, in bytes (a key file is one short line).
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Bytes of a key id: as many as a `SIGN=` value carries.
const KEY_ID_LEN: usize = file::SIGN_KEY_ID_LEN;

/// A short name for a vendor key: the first 8 bytes of its public key,
/// shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A vendor's public key, as a cluster trusts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPublicKey {
    /// `None`: any vendor.
    vendor: Option<String>,
    key: VerifyingKey,
}

/// A vendor's secret signing key. Its `Debug` output shows only the key id.
#[derive(Clone)]
pub struct VendorSigningKey {
    /// `None`: any vendor.
    vendor: Option<String>,
    key: SigningKey,
}

impl fmt::Debug for VendorSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorSigningKey")
            .field("vendor", &self.vendor)
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

/// A key file that could not be read or understood. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: io::Error,
    },
    /// The file is larger than [`KEY_FILE_BYTES_MAX`].
    #[error("{file}: the key file is larger than {max} bytes, expected one line")]
    TooLong {
        /// The file.
        file: String,
        /// The limit.
        max: u64,
    },
    /// The file holds no key line.
    #[error("{file}: no key in the file, expected a line \"{magic} VENDOR BASE64\"")]
    Empty {
        /// The file.
        file: String,
        /// The expected first word.
        magic: &'static str,
    },
    /// The key line does not start with the expected word.
    #[error("{file}:{line}: found {found:?}, expected {magic} ({hint})")]
    WrongKind {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// The first word found.
        found: String,
        /// The expected first word.
        magic: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// The key line does not have three words.
    #[error("{file}:{line}: the key line has {words} words, expected \"{magic} VENDOR BASE64\"")]
    WrongShape {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// How many words it has.
        words: usize,
        /// The expected first word.
        magic: &'static str,
    },
    /// More than one key line.
    #[error("{file}:{line}: a second key line, expected one key per file")]
    SecondKey {
        /// The file.
        file: String,
        /// 1-based line of the second key.
        line: u32,
    },
    /// The vendor field is neither a name nor `*`.
    #[error("{file}:{line}: vendor {found:?} is not a vendor name, expected a name or *")]
    BadVendor {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// The field.
        found: String,
    },
    /// The key is not base64 of 32 bytes, or not a valid Ed25519 public key.
    #[error(
        "{file}:{line}: the key is not {what}, expected the base64 of 32 bytes as written by raftlm license keygen"
    )]
    BadKey {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// What is wrong, e.g. `valid base64`.
        what: &'static str,
    },
}

/// Why a license file could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The file does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The key is bound to another vendor than a line's.
    #[error(
        "{file}:{line}: {keyword} {feature:?} is for vendor {vendor:?} but the key is vendor {key_vendor:?}'s: sign it with {vendor:?}'s key"
    )]
    WrongVendor {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
        /// The line's vendor.
        vendor: String,
        /// The key's vendor.
        key_vendor: String,
    },
    /// The signed text did not verify: a bug in raftlm, never the user's fault.
    #[error(
        "{file}: the signed file does not verify ({reason}); this is a bug in raftlm, please report it"
    )]
    SelfCheck {
        /// The file.
        file: String,
        /// The check that failed.
        reason: String,
    },
}

/// Why a license file is refused by a cluster. Messages name the file and
/// line, say why and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `SERVER` name is not this cluster's name.
    #[error(
        "{file}:{line}: the file is issued for access point {issued_for:?} but this cluster is {cluster:?}{hint}: rehost the file for {cluster:?} or rename the access point",
        hint = case_hint(.issued_for, .cluster)
    )]
    WrongCluster {
        /// The file.
        file: String,
        /// The line of `SERVER`.
        line: u32,
        /// The name on the `SERVER` line.
        issued_for: String,
        /// This cluster's name.
        cluster: String,
    },
    /// The file (or a held line) is bound to another cluster identity than
    /// this cluster's.
    #[error(
        "{file}:{line}: this file is bound to cluster {bound} but this cluster is {cluster}: ask the vendor for a file bound to {cluster} (raftlm status shows it)"
    )]
    WrongClusterId {
        /// The file.
        file: String,
        /// The line of `SERVER` (or of the held line).
        line: u32,
        /// The identity the file names.
        bound: ClusterId,
        /// This cluster's identity.
        cluster: ClusterId,
    },
    /// The file is bound to a cluster identity, but this cluster has none.
    #[error(
        "{file}:{line}: this file is bound to cluster {bound} but this cluster has no identity (it runs without TLS, or no node has been active with TLS yet): run the cluster with TLS, or ask the vendor for a file bound by name only"
    )]
    NoClusterId {
        /// The file.
        file: String,
        /// The line of `SERVER` (or of the held line).
        line: u32,
        /// The identity the file names.
        bound: ClusterId,
    },
    /// No public key is trusted, so no line can be verified.
    #[error(
        "{file}: no vendor public key is trusted, so no line can be verified (trust the vendor's public key with raftlm license trust)"
    )]
    NoTrustedKeys {
        /// The file.
        file: String,
    },
    /// A feature line has no `SIGN=` attribute.
    #[error(
        "{file}:{line}: {keyword} {feature:?} has no SIGN: the file is not signed (the vendor signs it with raftlm license sign --key VENDOR.key {file})"
    )]
    NotSigned {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
    },
    /// The `SIGN=` value is not a well-formed signature.
    #[error(
        "{file}:{line}: the SIGN value of {keyword} {feature:?} is not an ed25519 signature (re-issue the file from the vendor)"
    )]
    MalformedSignature {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
    },
    /// The signing key is not among the trusted keys.
    #[error(
        "{file}:{line}: {keyword} {feature:?} is signed by a key this cluster does not trust (trust the vendor's public key with raftlm license trust)"
    )]
    Untrusted {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
        /// The id of the key that signed it.
        key_id: KeyId,
    },
    /// The signing key is trusted, but only for another vendor.
    #[error(
        "{file}:{line}: {keyword} {feature:?} of vendor {vendor:?} is signed by a key trusted only for vendor {key_vendor:?} (ask vendor {vendor:?} for a file signed with its own key)"
    )]
    WrongVendor {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
        /// The line's vendor.
        vendor: String,
        /// The vendor the key is trusted for.
        key_vendor: String,
    },
    /// The signature does not match the line: it was edited after signing
    /// (or the `SERVER` name was).
    #[error(
        "{file}:{line}: the signature does not match this {keyword} line for {feature:?}: the line was changed after it was signed (re-issue the file from the vendor)"
    )]
    Mismatch {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
    },
    /// Every feature line of the file has expired: it would grant nothing.
    /// (A file with some lines still valid is imported; its expired lines
    /// count 0 seats, see [`expired_notes`].)
    #[error(
        "{file}: every feature line has expired, the last on {last} (line {line}): the file would grant no seat (get a renewed file from the vendor)"
    )]
    AllExpired {
        /// The file.
        file: String,
        /// The line that expired last.
        line: u32,
        /// The last day any line was valid.
        last: Date,
    },
    /// The line's `ISSUED` date is further ahead of the cluster's time than
    /// [`crate::license::pool::ISSUED_AHEAD_MAX_MS`]: refused, so that no
    /// file moves the cluster's time.
    #[error(
        "{file}:{line}:{column}: {keyword} {feature:?} is issued {issued} but the cluster's time is {}: ask the vendor for a corrected file (a line may be issued at most one day ahead)",
        crate::license::feature::time_text(*now_ms)
    )]
    IssuedAhead {
        /// The file.
        file: String,
        /// 1-based line of the `ISSUED=` attribute.
        line: u32,
        /// 1-based column of the `ISSUED=` attribute.
        column: u32,
        /// `FEATURE` or `INCREMENT`.
        keyword: &'static str,
        /// The feature.
        feature: String,
        /// The `ISSUED` date.
        issued: Date,
        /// The time it was judged at (ms since the epoch).
        now_ms: u64,
    },
}

/// The note for a line that has expired: it is imported and counts 0 seats.
pub fn expired_note(file_name: &str, line: &FeatureLine) -> String {
    format!(
        "{file_name}:{}: {} {:?} expired on {}: imported, counts 0 seats",
        line.line,
        line.kind.keyword(),
        line.feature,
        line.expiry
    )
}

/// One note per line of `lines` that has expired at `now_ms`, in order.
pub fn expired_notes(file_name: &str, lines: &[FeatureLine], now_ms: u64) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.expiry.is_valid_at(now_ms))
        .map(|l| expired_note(file_name, l))
        .collect()
}

/// [`VerifyError::AllExpired`] if `lines` is not empty and every one of them
/// has expired at `now_ms`. Deterministic: the caller passes the time.
pub fn all_expired(file_name: &str, lines: &[FeatureLine], now_ms: u64) -> Option<VerifyError> {
    let mut last: Option<(Date, u32)> = None;
    for line in lines {
        match line.expiry {
            Expiry::On(date) if !line.expiry.is_valid_at(now_ms) => {
                if last.is_none_or(|(d, _)| date > d) {
                    last = Some((date, line.line));
                }
            }
            _ => return None,
        }
    }
    last.map(|(last, line)| VerifyError::AllExpired {
        file: file_name.to_string(),
        line,
        last,
    })
}

impl VendorSigningKey {
    /// A new random key from the operating system's generator, bound to
    /// `vendor` (`None`: any vendor). The caller checks that `vendor` is a name.
    pub fn generate(vendor: Option<&str>) -> VendorSigningKey {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        VendorSigningKey::from_seed(vendor, seed)
    }

    /// The key with this 32-byte seed (the secret), bound to `vendor`.
    pub fn from_seed(vendor: Option<&str>, seed: [u8; 32]) -> VendorSigningKey {
        VendorSigningKey {
            vendor: vendor.map(str::to_string),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The vendor this key signs for (`None`: any vendor).
    pub fn vendor(&self) -> Option<&str> {
        self.vendor.as_deref()
    }

    /// The matching public key, to give to the clusters.
    pub fn public_key(&self) -> VendorPublicKey {
        VendorPublicKey {
            vendor: self.vendor.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Parses the text of a secret key file; `file_name` is used in messages.
    pub fn parse(file_name: &str, text: &str) -> Result<VendorSigningKey, KeyError> {
        let (vendor, seed) = parse_key_file(
            file_name,
            text,
            SECRET_KEY_MAGIC,
            "pass the .key file, not the .pub file",
        )?;
        Ok(VendorSigningKey::from_seed(vendor.as_deref(), seed))
    }

    /// The text of a secret key file holding this key.
    pub fn to_file_text(&self) -> String {
        format!(
            "# raftlm vendor secret key {}: keep this file private, it signs license files\n{} {} {}\n",
            self.public_key().key_id(),
            SECRET_KEY_MAGIC,
            self.vendor.as_deref().unwrap_or(ANY_VENDOR),
            BASE64.encode(self.key.to_bytes()),
        )
    }

    /// The `SIGN=` value (`ed25519:<base64>`) of `line` in a file issued for
    /// the access point `server_name`, bound to `cluster_id` when given and
    /// to `host_ids` when not empty.
    pub fn sign_line(
        &self,
        server_name: &str,
        cluster_id: Option<&ClusterId>,
        host_ids: &[HostId],
        line: &ParsedFeature,
    ) -> String {
        let signature = self.key.sign(&canonical_form_hosts(
            server_name,
            cluster_id,
            host_ids,
            line,
        ));
        file::encode_sign_value(&self.public_key().key_id().0, &signature.to_bytes())
    }
}

impl VendorPublicKey {
    /// The vendor this key is trusted for (`None`: any vendor).
    pub fn vendor(&self) -> Option<&str> {
        self.vendor.as_deref()
    }

    /// The key's short id.
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&self.key.as_bytes()[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// The 32 bytes of the Ed25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether this key may sign lines of `vendor`.
    pub fn allows_vendor(&self, vendor: &str) -> bool {
        self.vendor.as_deref().is_none_or(|v| v == vendor)
    }

    /// Parses the text of a public key file; `file_name` is used in messages.
    pub fn parse(file_name: &str, text: &str) -> Result<VendorPublicKey, KeyError> {
        let (vendor, bytes) = parse_key_file(
            file_name,
            text,
            PUBLIC_KEY_MAGIC,
            "pass the .pub file, not the .key file",
        )?;
        let key = VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or_else(|| KeyError::BadKey {
                file: file_name.to_string(),
                line: key_line_number(text),
                what: "a valid Ed25519 public key",
            })?;
        Ok(VendorPublicKey { vendor, key })
    }

    /// A key from its parts as the replicated state holds them; `None` if the
    /// bytes are not a usable Ed25519 public key.
    pub fn from_parts(vendor: Option<String>, bytes: [u8; 32]) -> Option<VendorPublicKey> {
        let key = VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|k| !k.is_weak())?;
        Some(VendorPublicKey { vendor, key })
    }

    /// The text of a public key file holding this key.
    pub fn to_file_text(&self) -> String {
        format!(
            "# raftlm vendor public key {}: give it to the clusters that accept your license files\n{} {} {}\n",
            self.key_id(),
            PUBLIC_KEY_MAGIC,
            self.vendor.as_deref().unwrap_or(ANY_VENDOR),
            BASE64.encode(self.key.to_bytes()),
        )
    }
}

/// The 1-based number of the first key line (for messages after parsing).
fn key_line_number(text: &str) -> u32 {
    key_lines(text).next().map_or(1, |(n, _)| n)
}

/// The lines of a key file that are neither blank nor comments, numbered from 1.
fn key_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.lines()
        .zip(1u32..)
        .map(|(line, n)| (n, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Parses `MAGIC VENDOR BASE64` (the only key line) into the vendor and 32 bytes.
fn parse_key_file(
    file_name: &str,
    text: &str,
    magic: &'static str,
    hint: &'static str,
) -> Result<(Option<String>, [u8; 32]), KeyError> {
    let file = || file_name.to_string();
    if text.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(KeyError::TooLong {
            file: file(),
            max: KEY_FILE_BYTES_MAX,
        });
    }
    let mut lines = key_lines(text);
    let Some((line, content)) = lines.next() else {
        return Err(KeyError::Empty {
            file: file(),
            magic,
        });
    };
    if let Some((second, _)) = lines.next() {
        return Err(KeyError::SecondKey {
            file: file(),
            line: second,
        });
    }
    let words: Vec<&str> = content.split_whitespace().collect();
    if words.first() != Some(&magic) {
        return Err(KeyError::WrongKind {
            file: file(),
            line,
            found: words.first().map_or_else(String::new, |w| w.to_string()),
            magic,
            hint: if words
                .first()
                .is_some_and(|w| w.starts_with("raftlm-vendor-"))
            {
                hint
            } else {
                "is this a raftlm vendor key file?"
            },
        });
    }
    let [_, vendor, key] = words[..] else {
        return Err(KeyError::WrongShape {
            file: file(),
            line,
            words: words.len(),
            magic,
        });
    };
    let vendor = if vendor == ANY_VENDOR {
        None
    } else if crate::text::is_name(vendor, usize::MAX) {
        Some(vendor.to_string())
    } else {
        return Err(KeyError::BadVendor {
            file: file(),
            line,
            found: vendor.to_string(),
        });
    };
    let bad_key = |what| KeyError::BadKey {
        file: file(),
        line,
        what,
    };
    let bytes = BASE64.decode(key).map_err(|_| bad_key("valid base64"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad_key("32 bytes long"))?;
    Ok((vendor, bytes))
}

/// The canonical form of `line` in a file issued for `server_name` and bound
/// by name only: the bytes that are signed (see the module documentation).
pub fn canonical_form(server_name: &str, line: &ParsedFeature) -> Vec<u8> {
    canonical_form_bound(server_name, None, line)
}

/// The canonical form of `line` in a file issued for `server_name` and, when
/// `cluster_id` is given, bound to that cluster identity.
pub fn canonical_form_bound(
    server_name: &str,
    cluster_id: Option<&ClusterId>,
    line: &ParsedFeature,
) -> Vec<u8> {
    canonical_form_hosts(server_name, cluster_id, &[], line)
}

/// The canonical form of `line` in a file issued for `server_name`, bound to
/// `cluster_id` when given and to the machines `host_ids` when not empty.
pub fn canonical_form_hosts(
    server_name: &str,
    cluster_id: Option<&ClusterId>,
    host_ids: &[HostId],
    line: &ParsedFeature,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(CANONICAL_PREFIX);
    let mut field = |label: &str, value: &[u8]| {
        out.extend_from_slice(label.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value.len().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(value);
        out.push(b'\n');
    };
    field("server", server_name.as_bytes());
    if let Some(id) = cluster_id {
        field("cluster-id", id.to_string().as_bytes());
    }
    if !host_ids.is_empty() {
        let list: Vec<String> = host_ids.iter().map(HostId::to_string).collect();
        field("host-ids", list.join(",").as_bytes());
    }
    field("keyword", line.kind.keyword().as_bytes());
    field("feature", line.feature.as_bytes());
    field("vendor", line.vendor.as_bytes());
    field("version", line.version.as_bytes());
    field("expiry", canonical_expiry(line.expiry).as_bytes());
    field("count", line.seats.to_string().as_bytes());
    for (key, value) in &line.attributes {
        field("key", key.as_bytes());
        field("value", value.as_bytes());
    }
    out
}

/// The hint added when two names differ only in case.
fn case_hint(issued_for: &str, cluster: &str) -> &'static str {
    if issued_for.eq_ignore_ascii_case(cluster) {
        " (names are case-sensitive)"
    } else {
        ""
    }
}

/// The expiry as the canonical form writes it: `permanent` or
/// `dd-mmm-yyyy` with a two-digit day and a lowercase month. Spelled out here
/// rather than borrowed from `Display`, so that a change to how dates are
/// shown can never change what is signed.
fn canonical_expiry(expiry: Expiry) -> String {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    match expiry {
        Expiry::Permanent => "permanent".to_string(),
        Expiry::On(date) => {
            let (year, month, day) = date.ymd();
            let month = month
                .checked_sub(1)
                .and_then(|m| MONTHS.get(m as usize))
                .copied()
                .unwrap_or("???");
            format!("{day:02}-{month}-{year:04}")
        }
    }
}

/// Signs every feature line of a license file with `key`, and returns the
/// text with `SIGN="ed25519:..."` added to or replaced on each of them.
/// Everything else (comments, other lines, spacing) is kept as it was.
///
/// The signed text is parsed and verified again before it is returned.
pub fn sign_text(file_name: &str, text: &str, key: &VendorSigningKey) -> Result<String, SignError> {
    let parsed = file::parse(file_name, text)?;
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::with_capacity(parsed.lines.len());
    for line in &parsed.lines {
        if let Some(key_vendor) = key.vendor()
            && key_vendor != line.vendor
        {
            return Err(SignError::WrongVendor {
                file: file_name.to_string(),
                line: line.line,
                keyword: line.kind.keyword(),
                feature: line.feature.clone(),
                vendor: line.vendor.clone(),
                key_vendor: key_vendor.to_string(),
            });
        }
        let token = format!(
            "SIGN=\"{}\"",
            key.sign_line(
                &parsed.server.name,
                parsed.server.cluster_id.as_ref(),
                &parsed.server.host_ids,
                line
            )
        );
        match &line.sign_span {
            Some(span) => edits.push((span.clone(), token)),
            None => edits.push((line.span.end..line.span.end, format!(" {token}"))),
        }
    }
    // Spans are in file order and do not overlap: copy the text between them.
    let mut out = String::with_capacity(text.len() + edits.len() * 112);
    let mut copied = 0;
    for (span, replacement) in edits {
        let Some(before) = text.get(copied..span.start) else {
            return Err(SignError::SelfCheck {
                file: file_name.to_string(),
                reason: format!("span {span:?} is not in the text"),
            });
        };
        out.push_str(before);
        out.push_str(&replacement);
        copied = span.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());

    // Check data after writing it: the result must parse to the same lines
    // and verify with the key's own public key.
    let self_check = |reason: String| SignError::SelfCheck {
        file: file_name.to_string(),
        reason,
    };
    let reparsed = file::parse(file_name, &out).map_err(|e| self_check(e.to_string()))?;
    let unchanged = reparsed.lines.len() == parsed.lines.len()
        && reparsed.server == parsed.server
        && reparsed.lines.iter().zip(&parsed.lines).all(|(a, b)| {
            (
                &a.kind,
                &a.feature,
                &a.vendor,
                &a.version,
                &a.expiry,
                a.seats,
                &a.attributes,
            ) == (
                &b.kind,
                &b.feature,
                &b.vendor,
                &b.version,
                &b.expiry,
                b.seats,
                &b.attributes,
            )
        });
    if !unchanged {
        return Err(self_check("a line changed while it was signed".to_string()));
    }
    for line in &reparsed.lines {
        check_signature(
            file_name,
            &reparsed,
            line,
            std::slice::from_ref(&key.public_key()),
        )
        .map_err(|e| self_check(e.to_string()))?;
    }
    Ok(out)
}

/// Checks a parsed license file for this cluster at `now_ms` (milliseconds
/// since the epoch, UTC) and returns its lines as the state machine holds them.
///
/// Checks, in order: the `SERVER` name equals `cluster_name` exactly (one
/// error for the whole file rather than a failing signature on every line);
/// then for each line in file order: it is signed, by a key in `trusted` that
/// is trusted for its vendor, the signature matches its canonical form, and
/// its `ISSUED` date is at most [`crate::license::pool::ISSUED_AHEAD_MAX_MS`]
/// ahead of `now_ms`. The first failure is returned. Lines that have expired
/// at `now_ms` are returned like the others (they count 0 seats;
/// [`expired_notes`] names them), unless every line has expired
/// ([`VerifyError::AllExpired`]).
pub fn verify(
    file: &LicenseFile,
    file_name: &str,
    trusted: &[VendorPublicKey],
    cluster_name: &str,
    now_ms: u64,
) -> Result<Vec<FeatureLine>, VerifyError> {
    if file.server.name != cluster_name {
        return Err(VerifyError::WrongCluster {
            file: file_name.to_string(),
            line: file.server.line,
            issued_for: file.server.name.clone(),
            cluster: cluster_name.to_string(),
        });
    }
    if trusted.is_empty() && !file.lines.is_empty() {
        return Err(VerifyError::NoTrustedKeys {
            file: file_name.to_string(),
        });
    }
    let mut out = Vec::with_capacity(file.lines.len());
    for line in &file.lines {
        let signature = check_signature(file_name, file, line, trusted)?;
        if let Some(issued) = line.issued
            && crate::license::pool::issued_too_far(issued, now_ms)
        {
            let (at_line, column) = line.issued_at.unwrap_or((line.line, 1));
            return Err(VerifyError::IssuedAhead {
                file: file_name.to_string(),
                line: at_line,
                column,
                keyword: line.kind.keyword(),
                feature: line.feature.clone(),
                issued,
                now_ms,
            });
        }
        out.push(FeatureLine {
            kind: line.kind,
            feature: line.feature.clone(),
            vendor: line.vendor.clone(),
            version: line.version.clone(),
            expiry: line.expiry,
            seats: line.seats,
            attributes: line.attributes.clone(),
            cluster_id: file.server.cluster_id,
            host_ids: file.server.host_ids.clone(),
            signature,
            line: line.line,
        });
    }
    if let Some(error) = all_expired(file_name, &out, now_ms) {
        return Err(error);
    }
    Ok(out)
}

/// [`verify`], and then the identity binding: a file bound to a cluster
/// identity (`SERVER … ID=sha256:…`) is accepted only by the cluster whose
/// identity it names. `cluster_id` is this cluster's identity (`None`: it has
/// none, so bound files are refused). Files bound by name only pass this step.
pub fn verify_bound(
    file: &LicenseFile,
    file_name: &str,
    trusted: &[VendorPublicKey],
    cluster_name: &str,
    cluster_id: Option<&ClusterId>,
    now_ms: u64,
) -> Result<Vec<FeatureLine>, VerifyError> {
    let lines = verify(file, file_name, trusted, cluster_name, now_ms)?;
    check_binding(
        file_name,
        file.server.line,
        file.server.cluster_id.as_ref(),
        cluster_id,
    )?;
    Ok(lines)
}

/// Checks that a file or line bound to `bound` (`None`: by name only) may be
/// held by a cluster whose identity is `cluster_id`.
pub fn check_binding(
    file_name: &str,
    line: u32,
    bound: Option<&ClusterId>,
    cluster_id: Option<&ClusterId>,
) -> Result<(), VerifyError> {
    match (bound, cluster_id) {
        (None, _) => Ok(()),
        (Some(bound), Some(cluster)) if bound == cluster => Ok(()),
        (Some(bound), Some(cluster)) => Err(VerifyError::WrongClusterId {
            file: file_name.to_string(),
            line,
            bound: *bound,
            cluster: *cluster,
        }),
        (Some(bound), None) => Err(VerifyError::NoClusterId {
            file: file_name.to_string(),
            line,
            bound: *bound,
        }),
    }
}

/// A sentence saying what a line is bound to: `bound to cluster name LICSRV`
/// or `bound to cluster LICSRV sha256:…`, followed by `and hosts host:…,
/// host:…` when the file lists host ids.
pub fn binding_text(
    server_name: &str,
    cluster_id: Option<&ClusterId>,
    host_ids: &[HostId],
) -> String {
    let cluster = match cluster_id {
        None => format!("bound to cluster name {server_name}"),
        Some(id) => format!("bound to cluster {server_name} {id}"),
    };
    if host_ids.is_empty() {
        return cluster;
    }
    let hosts: Vec<String> = host_ids.iter().map(HostId::to_string).collect();
    format!("{cluster} and hosts {}", hosts.join(", "))
}

/// Checks a line the cluster holds (or is about to apply) against `trusted`
/// and the cluster name `server_name`: the same signature check as
/// [`verify`], on the line's own fields (its cluster identity included, so a
/// line's binding cannot be changed or dropped). Whether that identity is
/// this cluster's is [`check_binding`]. Deterministic: no clock.
pub fn verify_held(
    file_name: &str,
    line: &FeatureLine,
    server_name: &str,
    trusted: &[VendorPublicKey],
) -> Result<(), VerifyError> {
    let parsed = parsed_of(line);
    let file = LicenseFile {
        server: crate::license::file::ServerLine {
            name: server_name.to_string(),
            hostid: String::new(),
            cluster_id: line.cluster_id,
            port: 0,
            host_ids: line.host_ids.clone(),
            line: 0,
        },
        vendors: Vec::new(),
        lines: Vec::new(),
        skipped: Vec::new(),
    };
    check_signature(file_name, &file, &parsed, trusted).map(|_| ())
}

/// Signs a held line for `server_name` with `key`, replacing its signature
/// (for tools and tests that build lines without a file).
pub fn sign_held(key: &VendorSigningKey, server_name: &str, line: &mut FeatureLine) {
    line.signature = key.sign_line(
        server_name,
        line.cluster_id.as_ref(),
        &line.host_ids,
        &parsed_of(line),
    );
}

/// A held line as the parser would have produced it (spans empty).
fn parsed_of(line: &FeatureLine) -> ParsedFeature {
    ParsedFeature {
        kind: line.kind,
        feature: line.feature.clone(),
        vendor: line.vendor.clone(),
        version: line.version.clone(),
        expiry: line.expiry,
        seats: line.seats,
        attributes: line.attributes.clone(),
        issued: None,
        issued_at: None,
        signature: Some(line.signature.clone()),
        line: line.line,
        span: 0..0,
        sign_span: None,
    }
}

/// Checks one line's signature against the trusted keys; returns the `SIGN` value.
fn check_signature(
    file_name: &str,
    file: &LicenseFile,
    line: &ParsedFeature,
    trusted: &[VendorPublicKey],
) -> Result<String, VerifyError> {
    let keyword: &'static str = line.kind.keyword();
    let (file_s, feature) = (file_name.to_string(), line.feature.clone());
    let Some(sign) = &line.signature else {
        return Err(VerifyError::NotSigned {
            file: file_s,
            line: line.line,
            keyword,
            feature,
        });
    };
    let Some((key_id, signature)) = file::decode_sign_value(sign)
        .map(|(id, signature)| (KeyId(id), Signature::from_bytes(&signature)))
    else {
        return Err(VerifyError::MalformedSignature {
            file: file_s,
            line: line.line,
            keyword,
            feature,
        });
    };
    let candidates: Vec<&VendorPublicKey> =
        trusted.iter().filter(|k| k.key_id() == key_id).collect();
    if candidates.is_empty() {
        return Err(VerifyError::Untrusted {
            file: file_s,
            line: line.line,
            keyword,
            feature,
            key_id,
        });
    }
    let for_vendor: Vec<&VendorPublicKey> = candidates
        .iter()
        .copied()
        .filter(|k| k.allows_vendor(&line.vendor))
        .collect();
    if for_vendor.is_empty() {
        let key_vendor = candidates
            .iter()
            .find_map(|k| k.vendor())
            .unwrap_or(ANY_VENDOR)
            .to_string();
        return Err(VerifyError::WrongVendor {
            file: file_s,
            line: line.line,
            keyword,
            feature,
            vendor: line.vendor.clone(),
            key_vendor,
        });
    }
    let message = canonical_form_hosts(
        &file.server.name,
        file.server.cluster_id.as_ref(),
        &file.server.host_ids,
        line,
    );
    if for_vendor
        .iter()
        .any(|k| k.key.verify_strict(&message, &signature).is_ok())
    {
        Ok(sign.clone())
    } else {
        Err(VerifyError::Mismatch {
            file: file_s,
            line: line.line,
            keyword,
            feature,
        })
    }
}
