//! The license file format: a parser that turns text into a [`LicenseFile`].
//!
//! A license file is what a vendor issues for one cluster. It looks like a
//! FlexNet file, one statement per line:
//!
//! ```text
//! # issued to Example Corp
//! SERVER LICSRV ANY 27000
//! VENDOR acme
//! FEATURE cad acme 2.0 31-dec-2027 25 ISSUED=22-nov-2026 \
//!     NOTICE="Example Corp" SIGN="ed25519:..."
//! INCREMENT cad acme 2.0 permanent 5 SIGN="ed25519:..."
//! ```
//!
//! Lexical rules: `#` starts a comment that runs to the end of the line
//! (outside quotes); a `\` that is the last thing on a line (before any
//! comment) continues the statement on the next line, and the line break then
//! separates tokens like a space; blank lines are ignored; tokens are separated
//! by spaces or tabs (a trailing `\r` is ignored, so CRLF files work); a token
//! may contain double-quoted parts (`NOTICE="two words"`), inside which `\"`
//! and `\\` are the only escapes. Keywords are case-insensitive.
//!
//! Statements: exactly one `SERVER <access-point-name> <hostid> <port>
//! [HOSTIDS=host:…,host:…]`, where a host id `ID=sha256:<hex>` binds the file
//! to a cluster identity and `HOSTIDS=` to the members' machines
//! ([`crate::license::host`]); at
//! least one `VENDOR <name> [daemon_path] [[OPTIONS=]file] [[PORT=]port]
//! [KEY=value ...]` (FlexNet's daemon path, options file and port are parsed
//! and ignored, see [`LicenseFile::warnings`]); any number of
//! `FEATURE|INCREMENT <feature> <vendor> <version> <expiry> <count> [KEY=value ...]`.
//! Every feature line's vendor must be declared by a `VENDOR` line somewhere in
//! the file, and a file may hold only one `FEATURE` line per feature and vendor
//! (further seats come from `INCREMENT` lines). `docs/license-format.md` has
//! the full grammar and a table of every error.
//!
//! Two FlexNet statements are refused one by one rather than failing the
//! file: a feature line whose count is `uncounted` (a node-locked license)
//! and a `PACKAGE` line. They land in [`LicenseFile::skipped`] with the
//! reason, and the rest of the file is parsed as usual.
//!
//! Why a hand-written parser: the messages are part of the product. Every
//! error is a [`ParseError`] that names the file, the 1-based line and
//! character column of the offending token, what was found and what was
//! expected, so an administrator can fix a typo without reading this code.
//! Parsing stops at the first error. A date of the right form that does not
//! exist (`31-feb-2027`) is named as such.
//!
//! The parser keeps the byte span of every feature statement and of its
//! `SIGN=` token, so the signing tool can rewrite a file while keeping its
//! comments and layout (see [`crate::license::signature::sign_text`]).
//!
//! Left out on purpose: signature checking and the binding to the cluster name
//! (that is [`crate::license::signature`]), expiry against the clock, and the
//! FlexNet statements raftlm has no use for (`USE_SERVER`, `UPGRADE`: unknown
//! keywords; host ids with meaning). The parser does no I/O: it is given the
//! text and the name to use in messages.

use std::collections::HashMap;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::license::feature::{Date, DateError, Expiry, FeatureLine, LineKind};
use crate::license::host::{HOST_IDS_MAX, HostId};
use crate::license::identity::ClusterId;
use crate::text::is_name;

/// The largest license file accepted, in bytes. A real file has a few dozen
/// lines; the limit keeps line and column numbers small and bounds the work
/// an import request can cause.
pub const LICENSE_FILE_BYTES_MAX: usize = 1 << 20;

/// The prefix of every `SIGN=` value: the signature scheme.
pub const SIGN_SCHEME_PREFIX: &str = "ed25519:";
/// Bytes of the key id that opens a decoded `SIGN=` value.
pub const SIGN_KEY_ID_LEN: usize = 8;
/// Bytes of the Ed25519 signature that follows the key id.
pub const SIGN_SIGNATURE_LEN: usize = 64;
/// Bytes of a decoded `SIGN=` value: key id then signature.
const SIGN_PAYLOAD_LEN: usize = SIGN_KEY_ID_LEN + SIGN_SIGNATURE_LEN;

/// A `SIGN=` value: [`SIGN_SCHEME_PREFIX`], then the standard base64 (with
/// padding) of the key id followed by the signature. What the bytes mean is
/// `license/signature.rs`'s business.
pub fn encode_sign_value(
    key_id: &[u8; SIGN_KEY_ID_LEN],
    signature: &[u8; SIGN_SIGNATURE_LEN],
) -> String {
    let mut payload = Vec::with_capacity(SIGN_PAYLOAD_LEN);
    payload.extend_from_slice(key_id);
    payload.extend_from_slice(signature);
    format!("{SIGN_SCHEME_PREFIX}{}", BASE64.encode(payload))
}

/// The key id and signature bytes of a `SIGN=` value, if it has the shape
/// [`SIGN_SCHEME_PREFIX`] + base64 of [`SIGN_KEY_ID_LEN`] +
/// [`SIGN_SIGNATURE_LEN`] bytes.
pub fn decode_sign_value(value: &str) -> Option<([u8; SIGN_KEY_ID_LEN], [u8; SIGN_SIGNATURE_LEN])> {
    let bytes = BASE64
        .decode(value.strip_prefix(SIGN_SCHEME_PREFIX)?)
        .ok()?;
    if bytes.len() != SIGN_PAYLOAD_LEN {
        return None;
    }
    let (id, signature) = bytes.split_at(SIGN_KEY_ID_LEN);
    Some((id.try_into().ok()?, signature.try_into().ok()?))
}

/// A parsed license file: its server binding, vendors and feature lines, in
/// file order. Signatures are carried but not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFile {
    /// The `SERVER` line: the access point the file is issued for.
    pub server: ServerLine,
    /// The `VENDOR` lines, in file order.
    pub vendors: Vec<VendorLine>,
    /// The `FEATURE` and `INCREMENT` lines, in file order.
    pub lines: Vec<ParsedFeature>,
    /// Lines that are well formed but not imported (`uncounted` feature
    /// lines, `PACKAGE` lines), in file order, each with the reason. The
    /// rest of the file is imported without them.
    pub skipped: Vec<SkippedLine>,
}

impl LicenseFile {
    /// Warnings about what the file holds but raftlm does not use, in file
    /// order: every skipped line, and every `VENDOR` line with a daemon path,
    /// options file or port. Each names the file and line.
    pub fn warnings(&self, file_name: &str) -> Vec<String> {
        let mut out: Vec<(u32, String)> = self
            .skipped
            .iter()
            .map(|s| (s.line, s.to_string()))
            .chain(
                self.vendors
                    .iter()
                    .filter_map(|v| v.ignored_note(file_name).map(|n| (v.line, n))),
            )
            .collect();
        out.sort_by_key(|(line, _)| *line);
        out.into_iter().map(|(_, text)| text).collect()
    }
}

/// A line of the file that is not imported, and why. Displays as
/// `FILE:LINE:COLUMN: KEYWORD "name" is not imported: <why and what to do>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {keyword} {name:?} is not imported: {reason}")]
pub struct SkippedLine {
    /// The file name given to [`parse`].
    pub file: String,
    /// 1-based line of the keyword.
    pub line: u32,
    /// 1-based character column of the token that makes the line unusable.
    pub column: u32,
    /// The keyword, upper case (`FEATURE`, `INCREMENT`, `PACKAGE`).
    pub keyword: String,
    /// The feature or package name (empty if the line ends before it).
    pub name: String,
    /// Why it is not imported.
    pub reason: SkipReason,
}

/// Why a well-formed line is not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The count is `uncounted`: a node-locked license.
    #[error(
        "uncounted (node-locked) licenses are not served by a floating-license server; ask the vendor for a counted line"
    )]
    Uncounted,
    /// A `PACKAGE` line: a suite of features.
    #[error(
        "PACKAGE lines (suites of features) are not supported; ask the vendor for FEATURE or INCREMENT lines for the package's features"
    )]
    Package,
}

/// `SERVER <access-point-name> <hostid> <port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The access point (cluster) name the file is issued for, e.g. `LICSRV`.
    /// Compared case-sensitively with the cluster name.
    pub name: String,
    /// The host id as written (free text such as `ANY`, or `ID=sha256:…`).
    pub hostid: String,
    /// The cluster identity the file is bound to, when the host id field is
    /// `ID=sha256:<hex>` (see [`crate::license::identity`]); `None`: bound
    /// to the access point name only. Covered by every line's signature.
    pub cluster_id: Option<ClusterId>,
    /// The TCP port clients use, 1–65535.
    pub port: u16,
    /// The members' host ids (`HOSTIDS=host:…,…`), in file order; empty when
    /// the file is not bound to machines. Covered by every line's signature.
    pub host_ids: Vec<HostId>,
    /// The 1-based line of the `SERVER` keyword.
    pub line: u32,
}

/// `VENDOR <name> [daemon_path] [[OPTIONS=]file] [[PORT=]port] [KEY=value ...]`.
///
/// FlexNet's vendor daemon path, options file and port are parsed and kept,
/// but raftlm has no vendor daemon and uses none of them; they are not signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorLine {
    /// The vendor name, e.g. `acme`.
    pub name: String,
    /// `KEY=value` attributes, in file order, keys as written (`OPTIONS=`
    /// and `PORT=` included).
    pub attributes: Vec<(String, String)>,
    /// The vendor daemon path, if given (`/opt/acme/acmed`).
    pub daemon_path: Option<String>,
    /// The options file, given by position or as `OPTIONS=`.
    pub options_file: Option<String>,
    /// The vendor daemon port, given by position or as `PORT=` (kept as
    /// written: a `PORT=` value is not checked).
    pub port: Option<String>,
    /// The 1-based line of the `VENDOR` keyword.
    pub line: u32,
}

impl VendorLine {
    /// The warning that this line's daemon path, options file or port are
    /// ignored, if it has any of them.
    pub fn ignored_note(&self, file_name: &str) -> Option<String> {
        (self.daemon_path.is_some() || self.options_file.is_some() || self.port.is_some()).then(
            || {
                format!(
                    "{file_name}:{}: VENDOR {}: the daemon path, options file and port are ignored by raftlm",
                    self.line, self.name
                )
            },
        )
    }
}

/// A `FEATURE` or `INCREMENT` line as written in the file: the fields of a
/// [`FeatureLine`], a signature that may be missing, and the positions needed
/// for messages and for rewriting the line when it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFeature {
    /// `FEATURE` or `INCREMENT`.
    pub kind: LineKind,
    /// The feature name, e.g. `cad`.
    pub feature: String,
    /// The vendor name; declared by a `VENDOR` line of the same file.
    pub vendor: String,
    /// The version as written, e.g. `2.0`.
    pub version: String,
    /// When the line stops granting seats.
    pub expiry: Expiry,
    /// Seats this line licenses (at least 1).
    pub seats: u32,
    /// Every `KEY=value` attribute except `SIGN`, in file order, keys and
    /// values as written (unquoted). `ISSUED` is included.
    pub attributes: Vec<(String, String)>,
    /// The `ISSUED=` date, if the line has one (it is also in `attributes`).
    pub issued: Option<Date>,
    /// Where the `ISSUED=` attribute starts: 1-based line and column.
    pub issued_at: Option<(u32, u32)>,
    /// The `SIGN=` value (`ed25519:<base64>`), if the line is signed. Its
    /// shape is checked by the parser; whether it is valid is not.
    pub signature: Option<String>,
    /// The 1-based line of the keyword.
    pub line: u32,
    /// Byte range of the statement in the text, from the first character of
    /// the keyword to the last character of its last token (comments and a
    /// trailing `\` excluded).
    pub span: Range<usize>,
    /// Byte range of the whole `SIGN=...` token, if the line has one.
    pub sign_span: Option<Range<usize>>,
}

impl ParsedFeature {
    /// The line as the state machine holds it, or `None` if it is unsigned.
    /// The line does not know its file's `SERVER` line, so it is returned
    /// bound by name only; [`crate::license::signature::verify`] returns
    /// lines with their file's binding.
    ///
    /// This does not check the signature: call
    /// [`crate::license::signature::verify`] for lines from an untrusted source.
    pub fn to_feature_line(&self) -> Option<FeatureLine> {
        Some(FeatureLine {
            kind: self.kind,
            feature: self.feature.clone(),
            vendor: self.vendor.clone(),
            version: self.version.clone(),
            expiry: self.expiry,
            seats: self.seats,
            attributes: self.attributes.clone(),
            cluster_id: None,
            host_ids: Vec::new(),
            signature: self.signature.clone()?,
            line: self.line,
        })
    }
}

/// A license file that could not be parsed. Displays as
/// `FILE:LINE:COLUMN: <what was found>, expected <what was expected>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct ParseError {
    /// The file name given to [`parse`].
    pub file: String,
    /// 1-based line of the offending token.
    pub line: u32,
    /// 1-based character (not byte) column of the offending token.
    pub column: u32,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong in a license file. Each variant's message reads
/// "what was found, expected what".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The text is longer than [`LICENSE_FILE_BYTES_MAX`].
    #[error("the file is {bytes} bytes long, expected at most {max} bytes")]
    TooLong {
        /// The length of the text.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A `"` opens a quoted value that the line does not close.
    #[error("a quoted value is not closed, expected a closing \" on the same line")]
    UnterminatedQuote,
    /// A backslash inside quotes is followed by something other than `"` or `\`.
    #[error("escape \"\\{found}\" inside quotes, expected \\\" or \\\\")]
    BadEscape {
        /// The character after the backslash.
        found: char,
    },
    /// The last line of the file ends with a continuation backslash.
    #[error("the last line ends with \\, expected another line to continue the statement")]
    ContinuationAtEnd,
    /// A statement starts with a word that is not a keyword.
    #[error("unknown keyword {found:?}, expected SERVER, VENDOR, FEATURE or INCREMENT")]
    UnknownKeyword {
        /// The first token of the statement.
        found: String,
    },
    /// A statement ends before one of its fields.
    #[error("the {keyword} line ends before the {field}, expected {usage}")]
    MissingField {
        /// The statement's keyword, e.g. `FEATURE`.
        keyword: &'static str,
        /// The missing field, e.g. `count`.
        field: &'static str,
        /// The statement's syntax.
        usage: &'static str,
    },
    /// A statement that takes no attributes has a token after its last field.
    #[error("unexpected {found:?} after the {after}, expected the end of the {keyword} line")]
    ExtraToken {
        /// The statement's keyword.
        keyword: &'static str,
        /// The last field of the statement.
        after: &'static str,
        /// The extra token.
        found: String,
    },
    /// A feature, vendor or access point name has characters outside `[A-Za-z0-9_.-]`.
    #[error("{what} name {found:?} is not a name, expected letters, digits, '_', '.' or '-'")]
    BadName {
        /// Which name: `access point`, `vendor` or `feature`.
        what: &'static str,
        /// The token.
        found: String,
    },
    /// A version has characters outside `[A-Za-z0-9_.-]`.
    #[error(
        "version {found:?} is not a version, expected letters, digits, '_', '.' or '-' (e.g. 2.0)"
    )]
    BadVersion {
        /// The token.
        found: String,
    },
    /// The `SERVER` host id field is `ID=...` but not a cluster identity.
    #[error(
        "cluster identity {found:?} is not an identity, expected ID=sha256: and 64 lowercase hex digits (as raftlm tls identity prints it)"
    )]
    BadClusterId {
        /// The token.
        found: String,
    },
    /// A `HOSTIDS=` value that is not a list of host ids.
    #[error(
        "host id {found:?} is not a host id, expected HOSTIDS= and a comma-separated list of host ids, each host: and 32 lowercase hex digits (as raftlm hostid prints it)"
    )]
    BadHostId {
        /// The offending entry.
        found: String,
    },
    /// A `HOSTIDS=` list that names one id twice, or too many.
    #[error("HOSTIDS= {problem}, expected at most {max} distinct host ids")]
    BadHostIds {
        /// What is wrong with the list.
        problem: String,
        /// [`HOST_IDS_MAX`].
        max: usize,
    },
    /// The `SERVER` port is not a number from 1 to 65535.
    #[error("port {found:?} is not a port number, expected a whole number from 1 to 65535")]
    BadPort {
        /// The token.
        found: String,
    },
    /// A date of the form `dd-mmm-yyyy` whose day does not exist.
    #[error(
        "{what} {found} is not a date: {why} (ask the vendor for a line with the intended date)"
    )]
    NoSuchDate {
        /// Which date: `expiry` or `ISSUED date`.
        what: &'static str,
        /// The value as written.
        found: String,
        /// Why it does not exist.
        why: DateError,
    },
    /// The expiry is neither a date nor `permanent`.
    #[error(
        "expiry {found:?} is not a date, expected dd-mmm-yyyy (e.g. 31-dec-2027) or \"permanent\""
    )]
    BadExpiry {
        /// The token.
        found: String,
    },
    /// The count is not a whole number that fits in 32 bits.
    #[error(
        "count {found:?} is not a number of seats, expected a whole number from 1 to 4294967295"
    )]
    BadCount {
        /// The token.
        found: String,
    },
    /// The count is zero.
    #[error(
        "count {found:?} licenses no seats, expected at least 1 (a feature line must license at least one seat)"
    )]
    ZeroCount {
        /// The token as written (`0`, `000`, ...).
        found: String,
    },
    /// A token after the fixed fields is not `KEY=value`.
    #[error(
        "{found:?} is not a KEY=value attribute, expected KEY=value with a KEY of letters, digits and '_'"
    )]
    NotAttribute {
        /// The token.
        found: String,
    },
    /// The same attribute key (compared case-insensitively) appears twice on a line.
    #[error(
        "a second {key} attribute, expected each key at most once per line (the first is at column {first_column})"
    )]
    DuplicateAttribute {
        /// The key as written the second time.
        key: String,
        /// Column of the first occurrence.
        first_column: u32,
    },
    /// The `ISSUED=` value is not a date.
    #[error("ISSUED date {found:?} is not a date, expected dd-mmm-yyyy (e.g. 22-nov-2026)")]
    BadIssued {
        /// The value.
        found: String,
    },
    /// The `SIGN=` value is not `ed25519:` followed by the base64 of 72 bytes.
    #[error(
        "SIGN value {found:?} is not a signature, expected \"ed25519:\" and 96 base64 characters as written by raftlm license sign"
    )]
    BadSignatureValue {
        /// The value.
        found: String,
    },
    /// A second `SERVER` line.
    #[error(
        "a second SERVER line, expected exactly one SERVER line per file (the first is line {first_line})"
    )]
    DuplicateServer {
        /// The line of the first `SERVER`.
        first_line: u32,
    },
    /// The file has no `SERVER` line.
    #[error(
        "no SERVER line in the file, expected one SERVER line naming the access point (e.g. SERVER LICSRV ANY 27000)"
    )]
    NoServer,
    /// A second `VENDOR` line for the same vendor.
    #[error(
        "a second VENDOR line for {name:?}, expected one VENDOR line per vendor (the first is line {first_line})"
    )]
    DuplicateVendor {
        /// The vendor name.
        name: String,
        /// The line of the first declaration.
        first_line: u32,
    },
    /// The file has no `VENDOR` line.
    #[error(
        "no VENDOR line in the file, expected at least one VENDOR line declaring the vendor (e.g. VENDOR acme)"
    )]
    NoVendor,
    /// A feature line names a vendor that no `VENDOR` line declares.
    #[error("vendor {name:?} is not declared, expected a VENDOR {name} line in the file")]
    UndeclaredVendor {
        /// The vendor name on the feature line.
        name: String,
    },
    /// A second `FEATURE` line for the same feature and vendor.
    #[error(
        "a second FEATURE line for {feature:?} of vendor {vendor:?}, expected INCREMENT to add seats to a feature (the first FEATURE line is line {first_line})"
    )]
    DuplicateFeature {
        /// The feature name.
        feature: String,
        /// The vendor name.
        vendor: String,
        /// The line of the first `FEATURE` line.
        first_line: u32,
    },
}

const SERVER_USAGE: &str = "SERVER <access-point-name> <hostid> <port> [HOSTIDS=host:…,…]";
const VENDOR_USAGE: &str =
    "VENDOR <name> [daemon_path] [[OPTIONS=]options_file] [[PORT=]port] [KEY=value ...]";
const FEATURE_USAGE: &str = "FEATURE <feature> <vendor> <version> <expiry> <count> [KEY=value ...]";
const INCREMENT_USAGE: &str =
    "INCREMENT <feature> <vendor> <version> <expiry> <count> [KEY=value ...]";

/// Parses the text of a license file. `file_name` is only used in messages.
///
/// Returns the first error found, in file order; checks that need the whole
/// file (a `SERVER` and a `VENDOR` line exist, every feature's vendor is
/// declared) come after the line-by-line checks.
pub fn parse(file_name: &str, text: &str) -> Result<LicenseFile, ParseError> {
    let fail = |line: u32, column: u32, kind: ParseErrorKind| ParseError {
        file: file_name.to_string(),
        line,
        column,
        kind,
    };
    if text.len() > LICENSE_FILE_BYTES_MAX {
        return Err(fail(
            1,
            1,
            ParseErrorKind::TooLong {
                bytes: text.len(),
                max: LICENSE_FILE_BYTES_MAX,
            },
        ));
    }
    let statements =
        split_statements(text).map_err(|(line, column, kind)| fail(line, column, kind))?;

    let mut server: Option<ServerLine> = None;
    let mut vendors: Vec<VendorLine> = Vec::new();
    let mut lines: Vec<ParsedFeature> = Vec::new();
    let mut skipped: Vec<SkippedLine> = Vec::new();
    // Where each feature line's vendor token is, for the undeclared-vendor check.
    let mut vendor_positions: Vec<(u32, u32)> = Vec::new();
    let mut first_feature: HashMap<(String, String), u32> = HashMap::new();
    // Vendor name → line of its declaration.
    let mut declared: HashMap<String, u32> = HashMap::new();

    for tokens in &statements {
        let result = parse_statement(tokens);
        let statement = result.map_err(|(line, column, kind)| fail(line, column, kind))?;
        match statement {
            Statement::Server(s, column) => {
                if let Some(first) = &server {
                    return Err(fail(
                        s.line,
                        column,
                        ParseErrorKind::DuplicateServer {
                            first_line: first.line,
                        },
                    ));
                }
                server = Some(s);
            }
            Statement::Vendor(v, (name_line, name_column)) => {
                if let Some(&first_line) = declared.get(&v.name) {
                    return Err(fail(
                        name_line,
                        name_column,
                        ParseErrorKind::DuplicateVendor {
                            name: v.name.clone(),
                            first_line,
                        },
                    ));
                }
                declared.insert(v.name.clone(), v.line);
                vendors.push(v);
            }
            Statement::Feature(f, keyword_column, vendor_position) => {
                if f.kind == LineKind::Feature {
                    let key = (f.feature.clone(), f.vendor.clone());
                    if let Some(&first_line) = first_feature.get(&key) {
                        return Err(fail(
                            f.line,
                            keyword_column,
                            ParseErrorKind::DuplicateFeature {
                                feature: f.feature.clone(),
                                vendor: f.vendor.clone(),
                                first_line,
                            },
                        ));
                    }
                    first_feature.insert(key, f.line);
                }
                vendor_positions.push(vendor_position);
                lines.push(f);
            }
            Statement::Skipped(skip) => skipped.push(SkippedLine {
                file: file_name.to_string(),
                line: skip.line,
                column: skip.column,
                keyword: skip.keyword,
                name: skip.name,
                reason: skip.reason,
            }),
        }
    }

    let Some(server) = server else {
        return Err(fail(1, 1, ParseErrorKind::NoServer));
    };
    if vendors.is_empty() {
        return Err(fail(1, 1, ParseErrorKind::NoVendor));
    }
    for (f, &(line, column)) in lines.iter().zip(&vendor_positions) {
        if !declared.contains_key(&f.vendor) {
            return Err(fail(
                line,
                column,
                ParseErrorKind::UndeclaredVendor {
                    name: f.vendor.clone(),
                },
            ));
        }
    }
    Ok(LicenseFile {
        server,
        vendors,
        lines,
        skipped,
    })
}

/// An error before the file name is attached: line, column, kind.
type Located = (u32, u32, ParseErrorKind);

/// One token of a statement.
#[derive(Debug, Clone)]
struct Token {
    /// The text with quotes removed and escapes resolved.
    value: String,
    /// Byte range of the token as written.
    span: Range<usize>,
    /// 1-based line.
    line: u32,
    /// 1-based character column of the first character.
    column: u32,
    /// 1-based character column just after the last character.
    end_column: u32,
    /// Byte index in `value` of the first `=` written outside quotes.
    eq: Option<usize>,
}

/// Splits the text into statements (lists of tokens), joining continued lines.
fn split_statements(text: &str) -> Result<Vec<Vec<Token>>, Located> {
    let mut statements = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    // Where the pending continuation backslash is, if the statement continues.
    let mut continuation: Option<(u32, u32)> = None;
    let mut line_start = 0usize;
    let mut line_no = 0u32;
    for raw in text.split_inclusive('\n') {
        line_no += 1;
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let (tokens, continues) = lex_line(line, line_start, line_no)?;
        line_start += raw.len();
        current.extend(tokens);
        continuation = continues.map(|column| (line_no, column));
        if continuation.is_none() && !current.is_empty() {
            statements.push(std::mem::take(&mut current));
        }
    }
    if let Some((line, column)) = continuation {
        return Err((line, column, ParseErrorKind::ContinuationAtEnd));
    }
    Ok(statements)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r' || c == '\x0b' || c == '\x0c'
}

/// Lexes one physical line (without its `\n`). Returns its tokens and, if it
/// ends with a continuation backslash, that backslash's column.
fn lex_line(
    line: &str,
    line_start: usize,
    line_no: u32,
) -> Result<(Vec<Token>, Option<u32>), Located> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(line.len(), |&(b, _)| b);
    // Column numbers are char indices + 1; a line is at most
    // LICENSE_FILE_BYTES_MAX bytes, so they fit in u32.
    let column = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
    // `rest_ends[i]`: whether `chars[i..]` is only blanks, then the end of
    // the line or a comment. A `\` at `i` is a continuation if `rest_ends[i + 1]`.
    // Computed once per line, so a line full of backslashes stays linear.
    let mut rest_ends = vec![true; chars.len() + 1];
    for i in (0..chars.len()).rev() {
        let c = chars[i].1;
        rest_ends[i] = c == '#' || (is_blank(c) && rest_ends[i + 1]);
    }
    let is_continuation = |i: usize| rest_ends.get(i + 1).copied().unwrap_or(true);

    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_blank(chars[i].1) {
            i += 1;
        }
        if i == chars.len() || chars[i].1 == '#' {
            return Ok((tokens, None));
        }
        if chars[i].1 == '\\' && is_continuation(i) {
            return Ok((tokens, Some(column(i))));
        }
        let start = i;
        let mut value = String::new();
        let mut eq = None;
        while i < chars.len() {
            let c = chars[i].1;
            if is_blank(c) || c == '#' || (c == '\\' && is_continuation(i)) {
                break;
            }
            if c == '"' {
                let quote = i;
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err((line_no, column(quote), ParseErrorKind::UnterminatedQuote));
                    };
                    match c {
                        '"' => {
                            i += 1;
                            break;
                        }
                        '\\' => match chars.get(i + 1) {
                            Some(&(_, next @ ('"' | '\\'))) => {
                                value.push(next);
                                i += 2;
                            }
                            Some(&(_, next)) => {
                                return Err((
                                    line_no,
                                    column(i),
                                    ParseErrorKind::BadEscape { found: next },
                                ));
                            }
                            None => {
                                return Err((
                                    line_no,
                                    column(quote),
                                    ParseErrorKind::UnterminatedQuote,
                                ));
                            }
                        },
                        _ => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                continue;
            }
            if c == '=' && eq.is_none() {
                eq = Some(value.len());
            }
            value.push(c);
            i += 1;
        }
        tokens.push(Token {
            value,
            span: line_start + byte_at(start)..line_start + byte_at(i),
            line: line_no,
            column: column(start),
            end_column: column(i),
            eq,
        });
    }
}

/// A parsed statement, with the columns later whole-file checks point at.
enum Statement {
    /// The server line and the column of its keyword.
    Server(ServerLine, u32),
    /// The vendor line and the line and column of its name.
    Vendor(VendorLine, (u32, u32)),
    /// The feature line, the column of its keyword, and the line and column
    /// of its vendor token (which may be on a continuation line).
    Feature(ParsedFeature, u32, (u32, u32)),
    /// A well-formed line that is not imported.
    Skipped(Skip),
}

/// A skipped line before the file name is attached.
struct Skip {
    line: u32,
    column: u32,
    keyword: String,
    name: String,
    reason: SkipReason,
}

/// Fixed fields of a statement, taken one at a time with a clear error when missing.
struct Fields<'a> {
    tokens: &'a [Token],
    next: usize,
    keyword: &'static str,
    usage: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, field: &'static str) -> Result<&'a Token, Located> {
        if let Some(token) = self.tokens.get(self.next) {
            self.next += 1;
            return Ok(token);
        }
        // Point just after the last token of the statement.
        let (line, column) = self
            .tokens
            .last()
            .map_or((1, 1), |t| (t.line, t.end_column));
        Err((
            line,
            column,
            ParseErrorKind::MissingField {
                keyword: self.keyword,
                field,
                usage: self.usage,
            },
        ))
    }

    fn rest(&self) -> &'a [Token] {
        self.tokens.get(self.next..).unwrap_or(&[])
    }
}

fn parse_statement(tokens: &[Token]) -> Result<Statement, Located> {
    let Some(keyword) = tokens.first() else {
        // split_statements never yields an empty statement.
        return Err((
            1,
            1,
            ParseErrorKind::UnknownKeyword {
                found: String::new(),
            },
        ));
    };
    match keyword.value.to_ascii_uppercase().as_str() {
        "SERVER" => parse_server(tokens),
        "VENDOR" => parse_vendor(tokens),
        "FEATURE" => parse_feature(tokens, LineKind::Feature),
        "INCREMENT" => parse_feature(tokens, LineKind::Increment),
        // A suite of features: refused on its own, the rest of the file imports.
        "PACKAGE" => Ok(Statement::Skipped(Skip {
            line: keyword.line,
            column: keyword.column,
            keyword: "PACKAGE".to_string(),
            name: tokens.get(1).map(|t| t.value.clone()).unwrap_or_default(),
            reason: SkipReason::Package,
        })),
        _ => Err((
            keyword.line,
            keyword.column,
            ParseErrorKind::UnknownKeyword {
                found: keyword.value.clone(),
            },
        )),
    }
}

fn parse_server(tokens: &[Token]) -> Result<Statement, Located> {
    let mut fields = Fields {
        tokens,
        next: 0,
        keyword: "SERVER",
        usage: SERVER_USAGE,
    };
    let keyword = fields.take("keyword")?;
    let name = name(fields.take("access point name")?, "access point")?;
    let hostid_token = fields.take("hostid")?;
    let hostid = hostid_token.value.clone();
    let cluster_id = match hostid.get(..3) {
        Some(key) if key.eq_ignore_ascii_case("ID=") => {
            Some(ClusterId::parse(&hostid[3..]).ok_or_else(|| {
                at(
                    hostid_token,
                    ParseErrorKind::BadClusterId {
                        found: hostid.clone(),
                    },
                )
            })?)
        }
        _ => None,
    };
    let port_token = fields.take("port")?;
    let port = parse_port(&port_token.value).ok_or_else(|| {
        at(
            port_token,
            ParseErrorKind::BadPort {
                found: port_token.value.clone(),
            },
        )
    })?;
    let mut rest = fields.rest().iter();
    let mut host_ids = Vec::new();
    if let Some(token) = rest.clone().next()
        && let Some(list) = strip_key(&token.value, "HOSTIDS=")
    {
        rest.next();
        host_ids = parse_host_ids(token, list)?;
    }
    if let Some(extra) = rest.next() {
        return Err(at(
            extra,
            ParseErrorKind::ExtraToken {
                keyword: "SERVER",
                after: if host_ids.is_empty() {
                    "port"
                } else {
                    "HOSTIDS= list"
                },
                found: extra.value.clone(),
            },
        ));
    }
    Ok(Statement::Server(
        ServerLine {
            name,
            hostid,
            cluster_id,
            port,
            host_ids,
            line: keyword.line,
        },
        keyword.column,
    ))
}

/// `text` without its case-insensitive prefix `key`, if it has it.
fn strip_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.get(..key.len())
        .filter(|k| k.eq_ignore_ascii_case(key))
        .map(|_| &text[key.len()..])
}

/// The host ids of a `HOSTIDS=` value: comma-separated, distinct, at most
/// [`HOST_IDS_MAX`].
fn parse_host_ids(token: &Token, list: &str) -> Result<Vec<HostId>, Located> {
    let mut ids = Vec::new();
    for entry in list.split(',') {
        let id = HostId::parse(entry).ok_or_else(|| {
            at(
                token,
                ParseErrorKind::BadHostId {
                    found: entry.to_string(),
                },
            )
        })?;
        if ids.contains(&id) {
            return Err(at(
                token,
                ParseErrorKind::BadHostIds {
                    problem: format!("names {id} twice"),
                    max: HOST_IDS_MAX,
                },
            ));
        }
        ids.push(id);
    }
    if ids.len() > HOST_IDS_MAX {
        return Err(at(
            token,
            ParseErrorKind::BadHostIds {
                problem: format!("names {} host ids", ids.len()),
                max: HOST_IDS_MAX,
            },
        ));
    }
    Ok(ids)
}

fn parse_vendor(tokens: &[Token]) -> Result<Statement, Located> {
    let mut fields = Fields {
        tokens,
        next: 0,
        keyword: "VENDOR",
        usage: VENDOR_USAGE,
    };
    let keyword = fields.take("keyword")?;
    let name_token = fields.take("vendor name")?;
    let name = name(name_token, "vendor")?;
    // FlexNet's positional fields come first, in this order; `OPTIONS=` and
    // `PORT=` name theirs, and a positional field after them is a later one.
    const POSITIONAL: [&str; 3] = ["daemon path", "options file", "port"];
    let mut positional: [Option<&Token>; 3] = [None; 3];
    let mut next_slot = 0usize;
    let mut attribute_tokens: Vec<Token> = Vec::new();
    for token in fields.rest() {
        if is_attribute_token(token) {
            let key = token.value.get(..token.eq.unwrap_or(0)).unwrap_or_default();
            let slot = if key.eq_ignore_ascii_case("OPTIONS") {
                Some(1)
            } else if key.eq_ignore_ascii_case("PORT") {
                Some(2)
            } else {
                None
            };
            if let Some(slot) = slot {
                if let Some(first) = positional[slot] {
                    return Err(at(
                        token,
                        ParseErrorKind::DuplicateAttribute {
                            key: key.to_string(),
                            first_column: first.column,
                        },
                    ));
                }
                next_slot = next_slot.max(slot + 1);
            }
            attribute_tokens.push(token.clone());
            continue;
        }
        if !attribute_tokens.is_empty() && next_slot == 0 {
            // A plain word after attributes other than OPTIONS= and PORT=.
            return Err(at(
                token,
                ParseErrorKind::NotAttribute {
                    found: token.value.clone(),
                },
            ));
        }
        let Some(slot) = positional.get_mut(next_slot) else {
            return Err(at(
                token,
                ParseErrorKind::ExtraToken {
                    keyword: "VENDOR",
                    after: POSITIONAL[2],
                    found: token.value.clone(),
                },
            ));
        };
        if next_slot == 2 && parse_port(&token.value).is_none() {
            return Err(at(
                token,
                ParseErrorKind::BadPort {
                    found: token.value.clone(),
                },
            ));
        }
        *slot = Some(token);
        next_slot += 1;
    }
    let attributes: Vec<(String, String)> = attributes(&attribute_tokens)?
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect();
    let named = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let [daemon, options, port] = positional.map(|t| t.map(|t| t.value.clone()));
    Ok(Statement::Vendor(
        VendorLine {
            name,
            daemon_path: daemon,
            options_file: options.or_else(|| named("OPTIONS")),
            port: port.or_else(|| named("PORT")),
            attributes,
            line: keyword.line,
        },
        (name_token.line, name_token.column),
    ))
}

fn parse_feature(tokens: &[Token], kind: LineKind) -> Result<Statement, Located> {
    let mut fields = Fields {
        tokens,
        next: 0,
        keyword: kind.keyword(),
        usage: match kind {
            LineKind::Feature => FEATURE_USAGE,
            LineKind::Increment => INCREMENT_USAGE,
        },
    };
    let keyword = fields.take("keyword")?;
    let feature = name(fields.take("feature name")?, "feature")?;
    let vendor_token = fields.take("vendor name")?;
    let vendor = name(vendor_token, "vendor")?;
    let version_token = fields.take("version")?;
    if !is_name(&version_token.value, usize::MAX) {
        return Err(at(
            version_token,
            ParseErrorKind::BadVersion {
                found: version_token.value.clone(),
            },
        ));
    }
    let expiry_token = fields.take("expiry")?;
    let expiry = parse_expiry(&expiry_token.value).map_err(|e| {
        at(
            expiry_token,
            match e {
                DateError::Format => ParseErrorKind::BadExpiry {
                    found: expiry_token.value.clone(),
                },
                why => ParseErrorKind::NoSuchDate {
                    what: "expiry",
                    found: expiry_token.value.clone(),
                    why,
                },
            },
        )
    })?;
    let count_token = fields.take("count")?;
    if count_token.value.eq_ignore_ascii_case("uncounted") {
        // A node-locked line: refused on its own, the rest of the file imports.
        return Ok(Statement::Skipped(Skip {
            line: keyword.line,
            column: count_token.column,
            keyword: kind.keyword().to_string(),
            name: feature,
            reason: SkipReason::Uncounted,
        }));
    }
    let seats = match parse_digits(&count_token.value).map(u32::try_from) {
        Some(Ok(0)) => {
            return Err(at(
                count_token,
                ParseErrorKind::ZeroCount {
                    found: count_token.value.clone(),
                },
            ));
        }
        Some(Ok(seats)) => seats,
        _ => {
            return Err(at(
                count_token,
                ParseErrorKind::BadCount {
                    found: count_token.value.clone(),
                },
            ));
        }
    };

    let mut attrs = Vec::new();
    let mut issued = None;
    let mut issued_at = None;
    let mut signature = None;
    let mut sign_span = None;
    for attribute in attributes(fields.rest())? {
        if attribute.key.eq_ignore_ascii_case("SIGN") {
            if !is_sign_value(&attribute.value) {
                return Err(at(
                    attribute.token,
                    ParseErrorKind::BadSignatureValue {
                        found: attribute.value,
                    },
                ));
            }
            signature = Some(attribute.value);
            sign_span = Some(attribute.token.span.clone());
            continue;
        }
        if attribute.key.eq_ignore_ascii_case("ISSUED") {
            match Date::parse_checked(&attribute.value) {
                Ok(date) => {
                    issued = Some(date);
                    issued_at = Some((attribute.token.line, attribute.token.column));
                }
                Err(DateError::Format) => {
                    return Err(at(
                        attribute.token,
                        ParseErrorKind::BadIssued {
                            found: attribute.value,
                        },
                    ));
                }
                Err(why) => {
                    return Err(at(
                        attribute.token,
                        ParseErrorKind::NoSuchDate {
                            what: "ISSUED date",
                            found: attribute.value,
                            why,
                        },
                    ));
                }
            }
        }
        attrs.push((attribute.key, attribute.value));
    }
    let last = tokens.last().unwrap_or(keyword);
    Ok(Statement::Feature(
        ParsedFeature {
            kind,
            feature,
            vendor,
            version: version_token.value.clone(),
            expiry,
            seats,
            attributes: attrs,
            issued,
            issued_at,
            signature,
            line: keyword.line,
            span: keyword.span.start..last.span.end,
            sign_span,
        },
        keyword.column,
        (vendor_token.line, vendor_token.column),
    ))
}

fn at(token: &Token, kind: ParseErrorKind) -> Located {
    (token.line, token.column, kind)
}

fn name(token: &Token, what: &'static str) -> Result<String, Located> {
    if is_name(&token.value, usize::MAX) {
        Ok(token.value.clone())
    } else {
        Err(at(
            token,
            ParseErrorKind::BadName {
                what,
                found: token.value.clone(),
            },
        ))
    }
}

/// A non-empty string of ASCII digits as a number (`None` if not digits or too large).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_expiry(text: &str) -> Result<Expiry, DateError> {
    if text.eq_ignore_ascii_case("permanent") {
        Ok(Expiry::Permanent)
    } else {
        Date::parse_checked(text).map(Expiry::On)
    }
}

/// A port number, 1–65535.
fn parse_port(text: &str) -> Option<u16> {
    parse_digits(text)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// Whether a `SIGN=` value has the shape `ed25519:` + base64 of 72 bytes.
fn is_sign_value(value: &str) -> bool {
    decode_sign_value(value).is_some()
}

/// One `KEY=value` token.
struct Attribute<'a> {
    key: String,
    value: String,
    token: &'a Token,
}

fn is_key(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a token has the shape `KEY=value`.
fn is_attribute_token(token: &Token) -> bool {
    token
        .eq
        .and_then(|i| token.value.get(..i))
        .is_some_and(is_key)
}

/// Parses trailing `KEY=value` tokens, refusing anything else and repeated keys.
fn attributes(tokens: &[Token]) -> Result<Vec<Attribute<'_>>, Located> {
    let mut out: Vec<Attribute<'_>> = Vec::with_capacity(tokens.len());
    // Upper-cased key → column of its first occurrence.
    let mut seen: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for token in tokens {
        let split = token
            .eq
            .and_then(|i| Some((token.value.get(..i)?, token.value.get(i + 1..)?)));
        let Some((key, value)) = split.filter(|(key, _)| is_key(key)) else {
            return Err(at(
                token,
                ParseErrorKind::NotAttribute {
                    found: token.value.clone(),
                },
            ));
        };
        if let Some(&first_column) = seen.get(&key.to_ascii_uppercase()) {
            return Err(at(
                token,
                ParseErrorKind::DuplicateAttribute {
                    key: key.to_string(),
                    first_column,
                },
            ));
        }
        seen.insert(key.to_ascii_uppercase(), token.column);
        out.push(Attribute {
            key: key.to_string(),
            value: value.to_string(),
            token,
        });
    }
    Ok(out)
}
