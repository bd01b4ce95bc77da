//! The license-file parser (`raftlm::license::file::parse`), and the signing
//! tool that rewrites a parsed file (`raftlm::license::signature::sign_text`).
//!
//! Properties, for any valid UTF-8 text (files are read with
//! `read_to_string`, and the admin RPC carries a protobuf `string`):
//! - `parse` never panics;
//! - an error names the file and a 1-based line and character column that
//!   exist in the text (column at most one past the line's last character),
//!   and displays as `FILE:LINE:COLUMN: ...`;
//! - a parsed file's byte spans are on character boundaries, start with the
//!   line's keyword and hold its `SIGN=` token;
//! - signing a parsed file succeeds (the tool's self-check never fails), the
//!   result verifies with the key (or is only refused as wholly expired), keeps every
//!   field, and signing it again changes nothing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use raftlm::license::file::{self, LicenseFile};
use raftlm::license::signature::{self, VendorSigningKey, VerifyError};

const FILE_NAME: &str = "fuzz.lic";

fn key() -> &'static VendorSigningKey {
    static KEY: OnceLock<VendorSigningKey> = OnceLock::new();
    KEY.get_or_init(|| VendorSigningKey::from_seed(None, [7; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match file::parse(FILE_NAME, text) {
        Err(e) => check_error(text, &e),
        Ok(parsed) => check_parsed(text, &parsed),
    }
});

fn check_error(text: &str, e: &file::ParseError) {
    assert_eq!(e.file, FILE_NAME);
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l))
        .collect();
    assert!(e.line >= 1, "line 0 in {e}");
    assert!(e.column >= 1, "column 0 in {e}");
    let line_count = lines.len().max(1);
    assert!(
        (e.line as usize) <= line_count,
        "line {} of a {line_count}-line text in {e}",
        e.line
    );
    let chars = lines
        .get(e.line as usize - 1)
        .map_or(0, |l| l.chars().count());
    assert!(
        (e.column as usize) <= chars + 1,
        "column {} of a {chars}-character line in {e}",
        e.column
    );
    let shown = e.to_string();
    let prefix = format!("{FILE_NAME}:{}:{}: ", e.line, e.column);
    assert!(
        shown.starts_with(&prefix),
        "{shown:?} does not start with {prefix:?}"
    );
}

fn unquoted(token: &str) -> String {
    token.chars().filter(|&c| c != '"').collect()
}

fn check_parsed(text: &str, parsed: &LicenseFile) {
    for line in &parsed.lines {
        let statement = text
            .get(line.span.clone())
            .expect("span on char boundaries");
        let keyword = line.kind.keyword();
        // A token may be partly quoted (`"FEATURE"` is the keyword too).
        let first = unquoted(
            statement
                .split([' ', '\t', '\r', '\x0b', '\x0c', '\\', '\n', '#'])
                .next()
                .unwrap_or(""),
        );
        assert!(
            first.eq_ignore_ascii_case(keyword),
            "span {statement:?} does not start with {keyword}"
        );
        if let Some(sign) = &line.sign_span {
            assert!(line.span.start <= sign.start && sign.end <= line.span.end);
            let token = unquoted(
                text.get(sign.clone())
                    .expect("sign span on char boundaries"),
            );
            assert!(
                token
                    .get(..5)
                    .is_some_and(|k| k.eq_ignore_ascii_case("SIGN=")),
                "sign span {token:?} is not a SIGN= token"
            );
        }
        assert_eq!(line.to_feature_line().is_some(), line.signature.is_some());
    }

    let signed = signature::sign_text(FILE_NAME, text, key())
        .unwrap_or_else(|e| panic!("a parsed file does not sign: {e}"));
    let reparsed = file::parse(FILE_NAME, &signed)
        .unwrap_or_else(|e| panic!("the signed file does not parse: {e}"));
    assert_eq!(reparsed.server, parsed.server);
    assert_eq!(reparsed.vendors, parsed.vendors);
    assert_eq!(reparsed.lines.len(), parsed.lines.len());
    for (a, b) in reparsed.lines.iter().zip(&parsed.lines) {
        assert_eq!(
            (
                &a.kind,
                &a.feature,
                &a.vendor,
                &a.version,
                &a.expiry,
                a.seats,
                &a.attributes
            ),
            (
                &b.kind,
                &b.feature,
                &b.vendor,
                &b.version,
                &b.expiry,
                b.seats,
                &b.attributes
            ),
        );
        assert!(a.signature.is_some());
    }
    let trusted = [key().public_key()];
    match signature::verify(&reparsed, FILE_NAME, &trusted, &parsed.server.name, 0) {
        Ok(lines) => assert_eq!(lines.len(), parsed.lines.len()),
        Err(VerifyError::AllExpired { .. }) => {}
        Err(e) => panic!("the signed file does not verify: {e}"),
    }
    let again = signature::sign_text(FILE_NAME, &signed, key())
        .unwrap_or_else(|e| panic!("the signed file does not sign again: {e}"));
    assert_eq!(again, signed, "signing a signed file changed it");
}
