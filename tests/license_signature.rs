//! Signing and verification of license files (`raftlm::license::signature`):
//! a signed file verifies for its cluster, and any edit, a move to another
//! cluster, an untrusted key or a file whose every line expired is refused with a message
//! that names the file and line and says what to do.

use proptest::prelude::*;
use raftlm::license::file::{self, LicenseFile};
use raftlm::license::signature::{
    self, KeyError, SignError, VendorPublicKey, VendorSigningKey, VerifyError, canonical_form,
};
use raftlm::license::{Date, Expiry, FeatureLine, LineKind};

/// 1 December 2026, 12:00 UTC: "now" for these tests (after the sample's
/// ISSUED date: a line issued ahead of the cluster's time is refused).
fn now_ms() -> u64 {
    Date::parse("01-dec-2026").expect("date").start_ms() + 12 * 3_600_000
}

const ACME: &str = "\
# Example Corp's license, issued by acme
SERVER LICSRV ANY 27000
VENDOR acme
FEATURE cad acme 2.0 31-dec-2027 25 ISSUED=22-nov-2026 NOTICE=\"Example Corp\"
INCREMENT cad acme 2.0 permanent 5   # extra seats
";

fn acme_key() -> VendorSigningKey {
    VendorSigningKey::generate(Some("acme"))
}

fn sign(text: &str, key: &VendorSigningKey) -> String {
    signature::sign_text("acme.lic", text, key).unwrap_or_else(|e| panic!("signs: {e}"))
}

fn check(
    text: &str,
    trusted: &[VendorPublicKey],
    cluster: &str,
) -> Result<Vec<FeatureLine>, VerifyError> {
    let parsed = file::parse("acme.lic", text).unwrap_or_else(|e| panic!("parses: {e}"));
    signature::verify(&parsed, "acme.lic", trusted, cluster, now_ms())
}

fn refusal(text: &str, trusted: &[VendorPublicKey], cluster: &str) -> String {
    match check(text, trusted, cluster) {
        Ok(lines) => panic!("verified but should not have: {lines:?}"),
        Err(e) => e.to_string(),
    }
}

// Guards the basic promise: a file signed by a trusted key verifies for its
// cluster and yields its lines with their signatures, comments preserved.
#[test]
fn signed_file_verifies() {
    let key = acme_key();
    let signed = sign(ACME, &key);
    assert!(
        signed.starts_with("# Example Corp's license, issued by acme\nSERVER LICSRV ANY 27000\n")
    );
    assert!(signed.contains("INCREMENT cad acme 2.0 permanent 5 SIGN=\"ed25519:"));
    assert!(signed.ends_with("\"   # extra seats\n"));
    let lines = check(&signed, &[key.public_key()], "LICSRV").expect("verifies");
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0].kind, lines[0].seats, lines[0].line),
        (LineKind::Feature, 25, 4)
    );
    assert_eq!(
        (lines[1].kind, lines[1].seats, lines[1].line),
        (LineKind::Increment, 5, 5)
    );
    assert_eq!(
        lines[0].attributes,
        vec![
            ("ISSUED".to_string(), "22-nov-2026".to_string()),
            ("NOTICE".to_string(), "Example Corp".to_string())
        ]
    );
    let parsed = file::parse("acme.lic", &signed).expect("parses");
    for (line, parsed) in lines.iter().zip(&parsed.lines) {
        assert_eq!(Some(&line.signature), parsed.signature.as_ref());
        assert!(line.signature.starts_with("ed25519:") && line.signature.len() == 8 + 96);
    }
}

// Guards that signing is deterministic and replaces an existing signature
// instead of adding a second one (re-signing an already signed file).
#[test]
fn resigning_replaces_the_signature() {
    let key = acme_key();
    let once = sign(ACME, &key);
    assert_eq!(sign(&once, &key), once);
    let other = acme_key();
    let resigned = sign(&once, &other);
    assert_eq!(resigned.matches("SIGN=").count(), 2);
    assert!(check(&resigned, &[other.public_key()], "LICSRV").is_ok());
    assert!(check(&resigned, &[key.public_key()], "LICSRV").is_err());
}

// Guards against seat inflation: editing the count of a signed line is refused.
#[test]
fn edited_count_is_a_mismatch() {
    let key = acme_key();
    let edited = sign(ACME, &key).replace("31-dec-2027 25", "31-dec-2027 250");
    assert_eq!(
        refusal(&edited, &[key.public_key()], "LICSRV"),
        "acme.lic:4: the signature does not match this FEATURE line for \"cad\": the line was changed after it was signed (re-issue the file from the vendor)"
    );
}

// Guards against extending a license: editing the expiry is refused, while
// writing the same date differently is not an edit.
#[test]
fn edited_expiry_is_a_mismatch() {
    let key = acme_key();
    let signed = sign(ACME, &key);
    let edited = signed.replace("31-dec-2027", "31-dec-2029");
    assert_eq!(
        refusal(&edited, &[key.public_key()], "LICSRV"),
        "acme.lic:4: the signature does not match this FEATURE line for \"cad\": the line was changed after it was signed (re-issue the file from the vendor)"
    );
    let same_date = signed
        .replace("31-dec-2027", "31-DEC-2027")
        .replace("permanent", "Permanent");
    assert!(check(&same_date, &[key.public_key()], "LICSRV").is_ok());
}

// Guards against editing an attribute (here the INCREMENT line gaining one).
#[test]
fn added_attribute_is_a_mismatch() {
    let key = acme_key();
    let edited = sign(ACME, &key).replace("permanent 5 ", "permanent 5 NOTICE=x ");
    assert_eq!(
        refusal(&edited, &[key.public_key()], "LICSRV"),
        "acme.lic:5: the signature does not match this INCREMENT line for \"cad\": the line was changed after it was signed (re-issue the file from the vendor)"
    );
}

// Guards the cluster binding: a file issued for another cluster is refused
// once, for the whole file, naming both names.
#[test]
fn file_for_another_cluster_is_refused() {
    let key = acme_key();
    let signed = sign(ACME, &key);
    assert_eq!(
        refusal(&signed, &[key.public_key()], "licsrv2"),
        "acme.lic:2: the file is issued for access point \"LICSRV\" but this cluster is \"licsrv2\": rehost the file for \"licsrv2\" or rename the access point"
    );
}

// Guards that names are compared case-sensitively, with a hint saying so.
#[test]
fn cluster_name_in_another_case_is_refused_with_hint() {
    let key = acme_key();
    let signed = sign(ACME, &key);
    assert_eq!(
        refusal(&signed, &[key.public_key()], "licsrv"),
        "acme.lic:2: the file is issued for access point \"LICSRV\" but this cluster is \"licsrv\" (names are case-sensitive): rehost the file for \"licsrv\" or rename the access point"
    );
}

// Guards against moving a file: the server name is inside the signed form,
// so editing the SERVER line to this cluster's name breaks every signature.
#[test]
fn server_line_edited_after_signing_is_a_mismatch() {
    let key = acme_key();
    let moved = sign(ACME, &key).replace("SERVER LICSRV", "SERVER OTHER");
    assert_eq!(
        refusal(&moved, &[key.public_key()], "OTHER"),
        "acme.lic:4: the signature does not match this FEATURE line for \"cad\": the line was changed after it was signed (re-issue the file from the vendor)"
    );
}

// Guards that only trusted keys are accepted, and that the message tells an
// untrusted key apart from an edit.
#[test]
fn unknown_key_is_untrusted() {
    let signed = sign(ACME, &acme_key());
    let stranger = acme_key();
    assert_eq!(
        refusal(&signed, &[stranger.public_key()], "LICSRV"),
        "acme.lic:4: FEATURE \"cad\" is signed by a key this cluster does not trust (trust the vendor's public key with raftlm license trust)"
    );
    assert_eq!(
        refusal(&signed, &[], "LICSRV"),
        "acme.lic: no vendor public key is trusted, so no line can be verified (trust the vendor's public key with raftlm license trust)"
    );
}

// An expired line among valid ones is kept (it counts 0 seats; the note
// names it), a line is valid through its expiry day, and a file whose every
// line has expired is refused naming the file and the last expiry.
#[test]
fn expired_lines_are_kept_unless_every_line_expired() {
    let key = acme_key();
    let text = format!("{ACME}INCREMENT cad acme 2.0 30-nov-2026 3\n");
    let signed = sign(&text, &key);
    let lines = check(&signed, &[key.public_key()], "LICSRV").expect("verifies");
    assert_eq!(lines.len(), 3);
    assert_eq!(
        signature::expired_notes("acme.lic", &lines, now_ms()),
        ["acme.lic:6: INCREMENT \"cad\" expired on 30-nov-2026: imported, counts 0 seats"]
    );
    let last_day = sign(
        &format!("{ACME}INCREMENT cad acme 2.0 01-dec-2026 3\n"),
        &key,
    );
    let lines = check(&last_day, &[key.public_key()], "LICSRV").expect("verifies");
    assert!(signature::expired_notes("acme.lic", &lines, now_ms()).is_empty());

    let all_expired = sign(
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 31-dec-2025 5\nINCREMENT cad acme 2.0 31-may-2026 3\n",
        &key,
    );
    assert_eq!(
        refusal(&all_expired, &[key.public_key()], "LICSRV"),
        "acme.lic: every feature line has expired, the last on 31-may-2026 (line 4): the file would grant no seat (get a renewed file from the vendor)"
    );
}

// Guards that an unsigned file is refused with the command that signs it.
#[test]
fn unsigned_file_is_refused() {
    let key = acme_key();
    assert_eq!(
        refusal(ACME, &[key.public_key()], "LICSRV"),
        "acme.lic:4: FEATURE \"cad\" has no SIGN: the file is not signed (the vendor signs it with raftlm license sign --key VENDOR.key acme.lic)"
    );
}

// Guards the vendor binding of keys: a key bound to one vendor cannot sign
// or vouch for another vendor's features.
#[test]
fn key_bound_to_another_vendor_is_refused() {
    let text =
        "SERVER LICSRV ANY 27000\nVENDOR acme\nVENDOR beta\nFEATURE cad beta 1.0 permanent 1\n";
    let acme = acme_key();
    let err = signature::sign_text("acme.lic", text, &acme).expect_err("wrong vendor");
    assert!(matches!(err, SignError::WrongVendor { .. }));
    assert_eq!(
        err.to_string(),
        "acme.lic:4: FEATURE \"cad\" is for vendor \"beta\" but the key is vendor \"acme\"'s: sign it with \"beta\"'s key"
    );
    // Signed with an any-vendor key whose public half the cluster trusts for acme only.
    let seed = [42u8; 32];
    let any = VendorSigningKey::from_seed(None, seed);
    let signed = sign(text, &any);
    let acme_only = VendorSigningKey::from_seed(Some("acme"), seed).public_key();
    assert_eq!(
        refusal(&signed, &[acme_only], "LICSRV"),
        "acme.lic:4: FEATURE \"cad\" of vendor \"beta\" is signed by a key trusted only for vendor \"acme\" (ask vendor \"beta\" for a file signed with its own key)"
    );
    assert!(check(&signed, &[any.public_key()], "LICSRV").is_ok());
}

// Guards the documented canonical form byte for byte (docs/license-format.md
// shows the same bytes): changing it invalidates every issued file.
#[test]
fn canonical_form_is_stable() {
    let parsed = file::parse("acme.lic", ACME).expect("parses");
    let form = canonical_form("LICSRV", &parsed.lines[0]);
    assert_eq!(
        String::from_utf8(form).expect("utf-8"),
        "raftlm-license-v1\n\
         server 6 LICSRV\n\
         keyword 7 FEATURE\n\
         feature 3 cad\n\
         vendor 4 acme\n\
         version 3 2.0\n\
         expiry 11 31-dec-2027\n\
         count 2 25\n\
         key 6 ISSUED\n\
         value 11 22-nov-2026\n\
         key 6 NOTICE\n\
         value 12 Example Corp\n"
    );
    let increment = canonical_form("LICSRV", &parsed.lines[1]);
    assert!(increment.ends_with(b"keyword 9 INCREMENT\nfeature 3 cad\nvendor 4 acme\nversion 3 2.0\nexpiry 9 permanent\ncount 1 5\n"));
}

// Guards the known-answer signature of a fixed key and line, so an
// accidental change to the scheme (canonical form, SIGN layout) is caught.
#[test]
fn signature_known_answer() {
    let key = VendorSigningKey::from_seed(Some("acme"), [1u8; 32]);
    let signed = sign(ACME, &key);
    let parsed = file::parse("acme.lic", &signed).expect("parses");
    let sig = parsed.lines[1].signature.clone().expect("signed");
    assert_eq!(sig, KNOWN_INCREMENT_SIGNATURE);
    assert_eq!(key.public_key().key_id().to_string(), KNOWN_KEY_ID);
}

// Guards the documented SIGN layout independently of raftlm's own code:
// base64 of key id (first 8 bytes of the public key) then the Ed25519
// signature of the canonical form, checked here with ed25519-dalek directly.
#[test]
fn sign_value_layout_matches_the_documentation() {
    use base64::Engine as _;
    let key = VendorSigningKey::from_seed(Some("acme"), [1u8; 32]);
    let public = key.public_key().to_bytes();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(
            KNOWN_INCREMENT_SIGNATURE
                .strip_prefix("ed25519:")
                .expect("scheme"),
        )
        .expect("base64");
    assert_eq!(payload.len(), 72);
    assert_eq!(payload[..8], public[..8]);
    let message = "raftlm-license-v1\nserver 6 LICSRV\nkeyword 9 INCREMENT\nfeature 3 cad\nvendor 4 acme\nversion 3 2.0\nexpiry 9 permanent\ncount 1 5\n";
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("public key");
    let sig = ed25519_dalek::Signature::from_slice(&payload[8..]).expect("signature");
    assert!(verifying.verify_strict(message.as_bytes(), &sig).is_ok());
}

const KNOWN_KEY_ID: &str = "8a88e3dd7409f195";
const KNOWN_INCREMENT_SIGNATURE: &str = "ed25519:iojj3XQJ8ZW4fxlySrYTTKiZVakaqYxcMCKcnHPPPKHseJ3FrJ9aLpnRw+tsUiSZNOPpEvcuhsMkxkla8EshHRkXeKHpwVEK";

// Guards the key file format: keys round-trip through their files, and a
// wrong or damaged file is refused with a message naming it.
#[test]
fn key_files_round_trip_and_errors_name_the_file() {
    let key = VendorSigningKey::generate(Some("acme"));
    let secret_text = key.to_file_text();
    let public_text = key.public_key().to_file_text();
    assert!(secret_text.contains("\nraftlm-vendor-secret-key-v1 acme "));
    assert!(public_text.contains("\nraftlm-vendor-public-key-v1 acme "));
    let reread = VendorSigningKey::parse("acme.key", &secret_text).expect("secret parses");
    assert_eq!(reread.public_key(), key.public_key());
    let public = VendorPublicKey::parse("acme.pub", &public_text).expect("public parses");
    assert_eq!(public, key.public_key());
    assert_eq!(public.vendor(), Some("acme"));

    let err = VendorPublicKey::parse("acme.key", &secret_text).expect_err("wrong kind");
    assert!(matches!(err, KeyError::WrongKind { .. }));
    assert_eq!(
        err.to_string(),
        "acme.key:2: found \"raftlm-vendor-secret-key-v1\", expected raftlm-vendor-public-key-v1 (pass the .pub file, not the .key file)"
    );
    let err = VendorPublicKey::parse("x.pub", "raftlm-vendor-public-key-v1 acme AAAA\n")
        .expect_err("short");
    assert_eq!(
        err.to_string(),
        "x.pub:1: the key is not 32 bytes long, expected the base64 of 32 bytes as written by raftlm license keygen"
    );
    let err = VendorPublicKey::parse("x.pub", "# only a comment\n").expect_err("empty");
    assert_eq!(
        err.to_string(),
        "x.pub: no key in the file, expected a line \"raftlm-vendor-public-key-v1 VENDOR BASE64\""
    );
    let err = VendorSigningKey::parse("x.key", "hello world\n").expect_err("not a key");
    assert_eq!(
        err.to_string(),
        "x.key:1: found \"hello\", expected raftlm-vendor-secret-key-v1 (is this a raftlm vendor key file?)"
    );
    let debug = format!("{key:?}");
    assert!(
        !debug.contains(
            secret_text
                .lines()
                .nth(1)
                .and_then(|l| l.split(' ').nth(2))
                .unwrap_or("?")
        )
    );
}

// ---------------------------------------------------------------------------
// Property: random valid files round-trip parse → sign → verify, and any
// single-field change breaks verification.

#[derive(Debug, Clone)]
struct ModelLine {
    kind: LineKind,
    feature: String,
    vendor: String,
    version: String,
    expiry: Expiry,
    seats: u32,
    attributes: Vec<(String, String)>,
    /// Where SIGN goes among the attributes when rendered signed.
    sign_at: usize,
    signature: Option<String>,
    /// Separators: `true` continues the line before that token.
    breaks: Vec<bool>,
    comment: bool,
}

#[derive(Debug, Clone)]
struct Model {
    server: String,
    vendors: Vec<String>,
    lines: Vec<ModelLine>,
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn render(model: &Model) -> String {
    let mut out = String::from("# generated\nSERVER ");
    out.push_str(&model.server);
    out.push_str(" ANY 27000\n");
    for v in &model.vendors {
        out.push_str(&format!("VENDOR {v}\n\n"));
    }
    for line in &model.lines {
        let mut tokens = vec![
            line.kind.keyword().to_string(),
            line.feature.clone(),
            line.vendor.clone(),
            line.version.clone(),
            line.expiry.to_string(),
            line.seats.to_string(),
        ];
        let mut attrs: Vec<String> = line
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        if let Some(sig) = &line.signature {
            attrs.insert(line.sign_at.min(attrs.len()), format!("SIGN=\"{sig}\""));
        }
        tokens.extend(attrs);
        for (i, token) in tokens.iter().enumerate() {
            if i > 0 {
                out.push_str(if line.breaks.get(i).copied().unwrap_or(false) {
                    " \\\n\t"
                } else {
                    " "
                });
            }
            out.push_str(token);
        }
        if line.comment {
            out.push_str("  # note \\ \"");
        }
        out.push('\n');
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,10}"
}

fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        Just(Expiry::Permanent),
        (2027i64..2100, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| Expiry::On(
            Date::from_ymd(y, m, d).unwrap_or(Date { days: 30_000 })
        )),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[A-Z][A-Z0-9_]{0,6}", "[ -~é#=\\\\\"]{0,12}"), 0..4).prop_map(|pairs| {
        let mut seen: Vec<String> = vec!["SIGN".into(), "ISSUED".into()];
        pairs
            .into_iter()
            .filter(|(k, _)| {
                let upper = k.to_ascii_uppercase();
                let fresh = !seen.contains(&upper);
                seen.push(upper);
                fresh
            })
            .collect()
    })
}

fn model() -> impl Strategy<Value = Model> {
    let line = (
        any::<bool>(),
        name(),
        any::<prop::sample::Index>(),
        name(),
        expiry(),
        1u32..=u32::MAX,
        attributes(),
        0usize..4,
        prop::collection::vec(any::<bool>(), 12),
        any::<bool>(),
    );
    (
        name(),
        prop::collection::vec(name(), 1..3),
        prop::collection::vec(line, 1..5),
    )
        .prop_map(|(server, mut vendors, lines)| {
            vendors.sort();
            vendors.dedup();
            let mut features_seen = Vec::new();
            let lines = lines
                .into_iter()
                .map(
                    |(
                        inc,
                        feature,
                        vendor,
                        version,
                        expiry,
                        seats,
                        attributes,
                        sign_at,
                        breaks,
                        comment,
                    )| {
                        let vendor = vendor.get(&vendors).clone();
                        let mut kind = if inc {
                            LineKind::Increment
                        } else {
                            LineKind::Feature
                        };
                        if kind == LineKind::Feature {
                            if features_seen.contains(&(feature.clone(), vendor.clone())) {
                                kind = LineKind::Increment;
                            } else {
                                features_seen.push((feature.clone(), vendor.clone()));
                            }
                        }
                        ModelLine {
                            kind,
                            feature,
                            vendor,
                            version,
                            expiry,
                            seats,
                            attributes,
                            sign_at,
                            signature: None,
                            breaks,
                            comment,
                        }
                    },
                )
                .collect();
            Model {
                server,
                vendors,
                lines,
            }
        })
}

/// Changes exactly one field of one line (or the server name) so that the
/// line's meaning differs; returns the cluster name to verify against.
fn mutate(model: &mut Model, which: usize, line_index: prop::sample::Index) -> String {
    let i = line_index.index(model.lines.len());
    let line = &mut model.lines[i];
    match which {
        0 => {
            line.seats = if line.seats == u32::MAX {
                1
            } else {
                line.seats + 1
            }
        }
        1 => {
            line.expiry = match line.expiry {
                Expiry::Permanent => Expiry::On(Date { days: 40_000 }),
                Expiry::On(d) => Expiry::On(Date { days: d.days + 1 }),
            }
        }
        2 => line.version.push('1'),
        3 => line.feature.push('x'),
        4 => {
            let other = format!("{}x", line.vendor);
            line.vendor = other.clone();
            model.vendors.push(other);
        }
        5 => {
            line.kind = match line.kind {
                LineKind::Feature => LineKind::Increment,
                LineKind::Increment => LineKind::Feature,
            }
        }
        6 => line.attributes.push(("ADDED".to_string(), "1".to_string())),
        7 => match line.attributes.first_mut() {
            Some((_, v)) => v.push('!'),
            None => line.attributes.push(("K".to_string(), String::new())),
        },
        8 => match line.attributes.first_mut() {
            Some((k, _)) => k.push('Z'),
            None => line.attributes.push(("K".to_string(), "v".to_string())),
        },
        9 => {
            if line.attributes.is_empty() {
                line.attributes.push(("K".to_string(), "v".to_string()));
            } else {
                line.attributes.remove(0);
            }
        }
        10 if line.attributes.len() >= 2 && line.attributes[0] != line.attributes[1] => {
            line.attributes.swap(0, 1)
        }
        10 => line.seats ^= 0x8000_0000 | 1,
        _ => {
            model.server.push('x');
        }
    }
    model.server.clone()
}

proptest! {
    // 64 cases: Ed25519 is slow in unoptimised test builds, and each case signs
    // and verifies every line several times.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Guards the round trip: whatever a valid file says is what parse returns,
    // and a signed file verifies to exactly those lines.
    #[test]
    fn random_files_round_trip(model in model()) {
        let key = VendorSigningKey::from_seed(None, [9u8; 32]);
        let text = render(&model);
        let parsed = file::parse("p.lic", &text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed.server.name, &model.server);
        prop_assert_eq!(parsed.lines.len(), model.lines.len());
        for (p, m) in parsed.lines.iter().zip(&model.lines) {
            prop_assert_eq!(
                (p.kind, &p.feature, &p.vendor, &p.version, p.expiry, p.seats, &p.attributes),
                (m.kind, &m.feature, &m.vendor, &m.version, m.expiry, m.seats, &m.attributes)
            );
        }
        let signed = signature::sign_text("p.lic", &text, &key).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reparsed = file::parse("p.lic", &signed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let lines = signature::verify(&reparsed, "p.lic", &[key.public_key()], &model.server, now_ms())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (l, m) in lines.iter().zip(&model.lines) {
            prop_assert_eq!((l.kind, &l.feature, l.seats, &l.attributes), (m.kind, &m.feature, m.seats, &m.attributes));
        }
        // Removing the signed text leaves the original text (only SIGN was added).
        let mut unsigned = signed.clone();
        for line in reparsed.lines.iter().rev() {
            let span = line.sign_span.clone().expect("signed");
            unsigned.replace_range(span.start - 1..span.end, "");
        }
        prop_assert_eq!(unsigned, text);
    }

    // Guards that no single-field edit of a signed file goes unnoticed: it no
    // longer parses, or it is refused as a signature mismatch.
    #[test]
    fn any_single_field_change_breaks_verification(
        model in model(),
        which in 0usize..12,
        line_index in any::<prop::sample::Index>(),
    ) {
        let key = VendorSigningKey::from_seed(None, [9u8; 32]);
        let signed = signature::sign_text("p.lic", &render(&model), &key)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed = file::parse("p.lic", &signed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = model;
        for (m, p) in model.lines.iter_mut().zip(&parsed.lines) {
            m.signature = p.signature.clone();
        }
        // The signed model, re-rendered with SIGN anywhere, still verifies.
        let same = render(&model);
        let same = file::parse("p.lic", &same).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(signature::verify(&same, "p.lic", &[key.public_key()], &model.server, now_ms()).is_ok());

        let cluster = mutate(&mut model, which, line_index);
        let text = render(&model);
        let outcome: Result<LicenseFile, _> = file::parse("p.lic", &text);
        if let Ok(edited) = outcome {
            match signature::verify(&edited, "p.lic", &[key.public_key()], &cluster, now_ms()) {
                Err(VerifyError::Mismatch { .. }) => {}
                other => prop_assert!(false, "edit {} not refused as a mismatch: {:?}\n{}", which, other, text),
            }
        }
    }
}

// Guards that no file can move a cluster's time: a line issued more than a
// day ahead of the time it is judged at is refused, naming the file, the
// line and column of the date, the date and that time; a line issued the
// next day (a vendor east of UTC) is accepted.
#[test]
fn line_issued_ahead_is_refused() {
    let key = acme_key();
    let ahead = sign(
        &format!("{ACME}INCREMENT cad acme 2.0 permanent 3 ISSUED=03-dec-2026\n"),
        &key,
    );
    assert_eq!(
        refusal(&ahead, &[key.public_key()], "LICSRV"),
        "acme.lic:6:36: INCREMENT \"cad\" is issued 03-dec-2026 but the cluster's time is 01-dec-2026 12:00:00 UTC: ask the vendor for a corrected file (a line may be issued at most one day ahead)"
    );
    let tomorrow = sign(
        &format!("{ACME}INCREMENT cad acme 2.0 permanent 3 ISSUED=02-dec-2026\n"),
        &key,
    );
    assert!(check(&tomorrow, &[key.public_key()], "LICSRV").is_ok());
}
