//! Golden tests for the license file parser (`raftlm::license::file`): good
//! files parse to the expected values, and every error class produces its
//! exact message, `FILE:LINE:COLUMN: found, expected`.

use std::path::Path;

use raftlm::license::file::{self, LicenseFile, ParseErrorKind, ParsedFeature};
use raftlm::license::{Date, Expiry, LineKind};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/licenses");

fn read(relative: &str) -> String {
    let path = Path::new(DATA).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_data(relative: &str) -> LicenseFile {
    let name = Path::new(relative)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(relative);
    file::parse(name, &read(relative)).unwrap_or_else(|e| panic!("{relative} should parse: {e}"))
}

fn date(text: &str) -> Date {
    Date::parse(text).unwrap_or_else(|| panic!("bad test date {text}"))
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of a feature line that do not depend on byte positions.
#[derive(Debug, PartialEq)]
struct Fields {
    kind: LineKind,
    feature: &'static str,
    vendor: &'static str,
    version: &'static str,
    expiry: Expiry,
    seats: u32,
    attributes: Vec<(String, String)>,
    issued: Option<Date>,
    line: u32,
}

impl PartialEq<Fields> for ParsedFeature {
    fn eq(&self, f: &Fields) -> bool {
        (
            self.kind,
            self.feature.as_str(),
            self.vendor.as_str(),
            self.version.as_str(),
        ) == (f.kind, f.feature, f.vendor, f.version)
            && (
                self.expiry,
                self.seats,
                &self.attributes,
                self.issued,
                self.line,
            ) == (f.expiry, f.seats, &f.attributes, f.issued, f.line)
    }
}

// Guards the promise that a FlexNet-style file with comments, continuations,
// quoted values with escapes, INCREMENT lines and case-insensitive keywords
// parses to exactly what it says.
#[test]
fn good_file_parses_to_expected_values() {
    let text = read("good.lic");
    let parsed = parse_data("good.lic");
    assert_eq!(parsed.server.name, "LICSRV");
    assert_eq!(parsed.server.hostid, "ANY");
    assert_eq!(parsed.server.port, 27000);
    assert_eq!(parsed.server.line, 4);
    assert_eq!(parsed.vendors.len(), 1);
    assert_eq!(parsed.vendors[0].name, "acme");
    assert_eq!(parsed.vendors[0].attributes, attrs(&[("PORT", "27001")]));
    assert_eq!(parsed.vendors[0].line, 5);

    let notice = r#"Example Corp, "Design" dept \ site 2"#;
    let expected = [
        Fields {
            kind: LineKind::Feature,
            feature: "cad",
            vendor: "acme",
            version: "2.0",
            expiry: Expiry::On(date("31-dec-2027")),
            seats: 25,
            attributes: attrs(&[("ISSUED", "22-nov-2026"), ("NOTICE", notice)]),
            issued: Some(date("22-nov-2026")),
            line: 7,
        },
        Fields {
            kind: LineKind::Increment,
            feature: "cad",
            vendor: "acme",
            version: "2.0",
            expiry: Expiry::Permanent,
            seats: 5,
            attributes: vec![],
            issued: None,
            line: 9,
        },
        Fields {
            kind: LineKind::Increment,
            feature: "cad",
            vendor: "acme",
            version: "2.1",
            expiry: Expiry::On(date("01-jan-2030")),
            seats: 7,
            attributes: attrs(&[("NOTICE", "")]),
            issued: None,
            line: 10,
        },
        Fields {
            kind: LineKind::Feature,
            feature: "render.gpu_x",
            vendor: "acme",
            version: "v3-beta",
            expiry: Expiry::Permanent,
            seats: u32::MAX,
            attributes: vec![],
            issued: None,
            line: 11,
        },
    ];
    assert_eq!(parsed.lines, expected);

    // Spans cover the statement from keyword to last token, continuation included.
    let spans: Vec<&str> = parsed.lines.iter().map(|l| &text[l.span.clone()]).collect();
    assert_eq!(
        spans,
        [
            "FEATURE cad acme 2.0 31-dec-2027 25 ISSUED=22-nov-2026 \\\n    NOTICE=\"Example Corp, \\\"Design\\\" dept \\\\ site 2\"",
            "INCREMENT cad acme 2.0 Permanent 5",
            "increment cad acme 2.1 1-Jan-2030 007 NOTICE=\"\"",
            "FEATURE render.gpu_x acme v3-beta PERMANENT 4294967295",
        ]
    );
    assert!(
        parsed
            .lines
            .iter()
            .all(|l| l.signature.is_none() && l.sign_span.is_none())
    );
    // Unsigned lines cannot become state-machine lines.
    assert!(parsed.lines.iter().all(|l| l.to_feature_line().is_none()));
}

// Guards that files written on Windows (CRLF) parse like Unix files, and
// that the host id is free text.
#[test]
fn crlf_file_parses() {
    let parsed = parse_data("crlf.lic");
    assert_eq!(parsed.server.name, "licsrv");
    assert_eq!(parsed.server.hostid, "00:11:22:33:44:55");
    assert_eq!(parsed.server.port, 1);
    assert_eq!(parsed.lines.len(), 1);
    let line = &parsed.lines[0];
    assert_eq!(line.attributes, attrs(&[("ISSUED", "01-jan-2026")]));
    assert_eq!(line.issued, Some(date("01-jan-2026")));
    assert_eq!(line.line, 3);
}

// Guards that a file with vendors but no feature lines is valid (a cluster
// may be set up before anything is licensed).
#[test]
fn file_without_features_parses() {
    let parsed = parse_data("no_features.lic");
    assert_eq!(parsed.server.port, 65535);
    let names: Vec<&str> = parsed.vendors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["acme", "beta"]);
    assert!(parsed.lines.is_empty());
}

// A FlexNet file brought over parses: the VENDOR lines' daemon path, options
// file and port are kept (and warned about), the node-locked (`uncounted`) line
// and the PACKAGE line are skipped one by one with file:line:column and why,
// and every other line (the expired one included: expiry is judged later,
// against a clock) is parsed as usual.
#[test]
fn flexnet_file_parses_with_skipped_lines_and_vendor_fields() {
    let parsed = parse_data("flexnet.lic");
    type Vendor<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let vendors: Vec<Vendor<'_>> = parsed
        .vendors
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.daemon_path.as_deref(),
                v.options_file.as_deref(),
                v.port.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        vendors,
        [
            (
                "acme",
                Some("/opt/acme/acmed"),
                Some("/opt/acme/acme.opt"),
                Some("27001")
            ),
            ("beta", None, Some("/etc/beta.opt"), Some("27002")),
            ("gamma", Some("/opt/gamma/gammad"), None, None),
        ]
    );
    assert!(parsed.vendors[0].attributes.is_empty());
    assert_eq!(
        parsed.vendors[1].attributes,
        attrs(&[("OPTIONS", "/etc/beta.opt"), ("PORT", "27002")])
    );

    type Row<'a> = (u32, &'a str, LineKind, u32, Expiry);
    let lines: Vec<Row<'_>> = parsed
        .lines
        .iter()
        .map(|l| (l.line, l.feature.as_str(), l.kind, l.seats, l.expiry))
        .collect();
    assert_eq!(
        lines,
        [
            (
                7,
                "cad",
                LineKind::Feature,
                25,
                Expiry::On(date("31-dec-2027"))
            ),
            (
                8,
                "cad",
                LineKind::Increment,
                10,
                Expiry::On(date("31-dec-2025"))
            ),
            (11, "cad", LineKind::Increment, 5, Expiry::Permanent),
            (12, "sim", LineKind::Feature, 4, Expiry::Permanent),
        ]
    );

    let skipped: Vec<String> = parsed.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        skipped,
        [
            "flexnet.lic:9:35: FEATURE \"viewer\" is not imported: uncounted (node-locked) licenses are not served by a floating-license server; ask the vendor for a counted line",
            "flexnet.lic:10:1: PACKAGE \"suite\" is not imported: PACKAGE lines (suites of features) are not supported; ask the vendor for FEATURE or INCREMENT lines for the package's features",
        ]
    );
    assert_eq!(
        parsed.warnings("flexnet.lic"),
        [
            "flexnet.lic:4: VENDOR acme: the daemon path, options file and port are ignored by raftlm",
            "flexnet.lic:5: VENDOR beta: the daemon path, options file and port are ignored by raftlm",
            "flexnet.lic:6: VENDOR gamma: the daemon path, options file and port are ignored by raftlm",
            skipped[0].as_str(),
            skipped[1].as_str(),
        ]
    );
}

// VENDOR's FlexNet forms: a daemon path alone, OPTIONS= then a port by
// position, and keyword attributes as before; a plain word after another
// attribute is still not an attribute.
#[test]
fn vendor_line_forms() {
    let vendor = |line: &str| {
        let text = format!("SERVER X ANY 1\n{line}\n");
        file::parse("v.lic", &text).map(|f| {
            let v = &f.vendors[0];
            (
                v.daemon_path.clone(),
                v.options_file.clone(),
                v.port.clone(),
                f.warnings("v.lic").len(),
            )
        })
    };
    assert_eq!(
        vendor("VENDOR acme /opt/acme/acmed"),
        Ok((Some("/opt/acme/acmed".into()), None, None, 1))
    );
    assert_eq!(
        vendor("VENDOR acme OPTIONS=/x.opt 27001"),
        Ok((None, Some("/x.opt".into()), Some("27001".into()), 1))
    );
    assert_eq!(vendor("VENDOR acme NOTICE=x"), Ok((None, None, None, 0)));
    assert_eq!(
        vendor("VENDOR acme NOTICE=x /opt/acmed")
            .unwrap_err()
            .to_string(),
        r#"v.lic:2:22: "/opt/acmed" is not a KEY=value attribute, expected KEY=value with a KEY of letters, digits and '_'"#
    );
    assert_eq!(
        vendor("VENDOR acme /d /o OPTIONS=/x")
            .unwrap_err()
            .to_string(),
        "v.lic:2:19: a second OPTIONS attribute, expected each key at most once per line (the first is at column 16)"
    );
}

// Dates of the right form that do not exist are named as such, wherever they are.
#[test]
fn nonexistent_dates_are_named() {
    let expiry = |date: &str| {
        let text = format!("SERVER X ANY 1\nVENDOR acme\nINCREMENT cad acme 1.0 {date} 2\n");
        file::parse("d.lic", &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for (date, why) in [
        ("31-feb-2027", "February 2027 has 28 days"),
        ("29-feb-2027", "February 2027 has 28 days"),
        ("30-feb-2028", "February 2028 has 29 days"),
        ("31-apr-2027", "April 2027 has 30 days"),
        ("00-jan-2027", "days start at 1"),
        ("32-jan-2027", "January 2027 has 31 days"),
    ] {
        assert_eq!(
            expiry(date),
            Err(format!(
                "d.lic:3:24: expiry {date} is not a date: {why} (ask the vendor for a line with the intended date)"
            ))
        );
    }
    assert_eq!(expiry("29-feb-2028"), Ok(()));
    assert!(
        expiry("29-fbr-2028")
            .unwrap_err()
            .contains("expected dd-mmm-yyyy")
    );
}

// Guards that a signed line keeps its SIGN value and where it is, and that
// SIGN is not an attribute.
#[test]
fn sign_value_is_kept_with_its_span() {
    let sig = format!("ed25519:{}", "A".repeat(96));
    let text = format!(
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 permanent 3 SIGN=\"{sig}\" X=1\n"
    );
    let parsed = file::parse("s.lic", &text).expect("parses");
    let line = &parsed.lines[0];
    assert_eq!(line.signature.as_deref(), Some(sig.as_str()));
    assert_eq!(line.attributes, attrs(&[("X", "1")]));
    let span = line.sign_span.clone().expect("has a SIGN span");
    assert_eq!(&text[span], format!("SIGN=\"{sig}\""));
    let feature_line = line.to_feature_line().expect("signed");
    assert_eq!(feature_line.signature, sig);
    assert_eq!(feature_line.seats, 3);
}

/// Every bad file and its exact message. Each error class appears at least once.
const BAD: &[(&str, &str)] = &[
    (
        "bad_count.lic",
        r#"bad_count.lic:3:34: count "many" is not a number of seats, expected a whole number from 1 to 4294967295"#,
    ),
    (
        "bad_escape.lic",
        r#"bad_escape.lic:3:46: escape "\n" inside quotes, expected \" or \\"#,
    ),
    (
        "bad_expiry.lic",
        r#"bad_expiry.lic:3:22: expiry "31-dex-2027" is not a date, expected dd-mmm-yyyy (e.g. 31-dec-2027) or "permanent""#,
    ),
    (
        "bad_hostid.lic",
        r#"bad_hostid.lic:1:25: host id "host:1234" is not a host id, expected HOSTIDS= and a comma-separated list of host ids, each host: and 32 lowercase hex digits (as raftlm hostid prints it)"#,
    ),
    (
        "bad_issued.lic",
        r#"bad_issued.lic:3:37: ISSUED date "yesterday" is not a date, expected dd-mmm-yyyy (e.g. 22-nov-2026)"#,
    ),
    (
        "bad_name.lic",
        r#"bad_name.lic:3:9: feature name "c@d" is not a name, expected letters, digits, '_', '.' or '-'"#,
    ),
    (
        "bad_port.lic",
        r#"bad_port.lic:1:19: port "70000" is not a port number, expected a whole number from 1 to 65535"#,
    ),
    (
        "bad_server_name.lic",
        r#"bad_server_name.lic:1:8: access point name "LIC SRV" is not a name, expected letters, digits, '_', '.' or '-'"#,
    ),
    (
        "bad_sign.lic",
        r#"bad_sign.lic:3:37: SIGN value "ed25519:abc" is not a signature, expected "ed25519:" and 96 base64 characters as written by raftlm license sign"#,
    ),
    (
        "bad_version.lic",
        r#"bad_version.lic:3:18: version "2/0" is not a version, expected letters, digits, '_', '.' or '-' (e.g. 2.0)"#,
    ),
    (
        "continuation_at_end.lic",
        r#"continuation_at_end.lic:3:37: the last line ends with \, expected another line to continue the statement"#,
    ),
    (
        "count_overflow.lic",
        r#"count_overflow.lic:3:34: count "4294967296" is not a number of seats, expected a whole number from 1 to 4294967295"#,
    ),
    (
        "day_32.lic",
        r#"day_32.lic:3:22: expiry 32-jan-2027 is not a date: January 2027 has 31 days (ask the vendor for a line with the intended date)"#,
    ),
    (
        "day_zero.lic",
        r#"day_zero.lic:3:22: expiry 00-jan-2027 is not a date: days start at 1 (ask the vendor for a line with the intended date)"#,
    ),
    (
        "duplicate_attribute.lic",
        r#"duplicate_attribute.lic:3:55: a second issued attribute, expected each key at most once per line (the first is at column 37)"#,
    ),
    (
        "duplicate_feature.lic",
        r#"duplicate_feature.lic:5:1: a second FEATURE line for "cad" of vendor "acme", expected INCREMENT to add seats to a feature (the first FEATURE line is line 3)"#,
    ),
    (
        "duplicate_hostid.lic",
        r#"duplicate_hostid.lic:1:25: HOSTIDS= names host:11111111111111111111111111111111 twice, expected at most 16 distinct host ids"#,
    ),
    (
        "duplicate_server.lic",
        r#"duplicate_server.lic:3:1: a second SERVER line, expected exactly one SERVER line per file (the first is line 1)"#,
    ),
    (
        "duplicate_vendor.lic",
        r#"duplicate_vendor.lic:3:8: a second VENDOR line for "acme", expected one VENDOR line per vendor (the first is line 2)"#,
    ),
    (
        "extra_token.lic",
        r#"extra_token.lic:1:25: unexpected "extra" after the port, expected the end of the SERVER line"#,
    ),
    (
        "hostids_extra.lic",
        r#"hostids_extra.lic:1:71: unexpected "extra" after the HOSTIDS= list, expected the end of the SERVER line"#,
    ),
    (
        "missing_count.lic",
        r#"missing_count.lic:3:33: the FEATURE line ends before the count, expected FEATURE <feature> <vendor> <version> <expiry> <count> [KEY=value ...]"#,
    ),
    (
        "missing_port.lic",
        r#"missing_port.lic:1:18: the SERVER line ends before the port, expected SERVER <access-point-name> <hostid> <port> [HOSTIDS=host:…,…]"#,
    ),
    (
        "no_server.lic",
        r#"no_server.lic:1:1: no SERVER line in the file, expected one SERVER line naming the access point (e.g. SERVER LICSRV ANY 27000)"#,
    ),
    (
        "no_such_day.lic",
        r#"no_such_day.lic:3:22: expiry 31-feb-2027 is not a date: February 2027 has 28 days (ask the vendor for a line with the intended date)"#,
    ),
    (
        "no_such_issued.lic",
        r#"no_such_issued.lic:3:37: ISSUED date 29-feb-2027 is not a date: February 2027 has 28 days (ask the vendor for a line with the intended date)"#,
    ),
    (
        "no_vendor.lic",
        r#"no_vendor.lic:1:1: no VENDOR line in the file, expected at least one VENDOR line declaring the vendor (e.g. VENDOR acme)"#,
    ),
    (
        "not_attribute.lic",
        r#"not_attribute.lic:3:37: "NOTICE" is not a KEY=value attribute, expected KEY=value with a KEY of letters, digits and '_'"#,
    ),
    (
        "undeclared_vendor.lic",
        r#"undeclared_vendor.lic:4:13: vendor "beta" is not declared, expected a VENDOR beta line in the file"#,
    ),
    (
        "unicode_column.lic",
        r#"unicode_column.lic:1:20: port "7x" is not a port number, expected a whole number from 1 to 65535"#,
    ),
    (
        "unknown_keyword.lic",
        r#"unknown_keyword.lic:3:1: unknown keyword "FEATUR", expected SERVER, VENDOR, FEATURE or INCREMENT"#,
    ),
    (
        "unterminated_quote.lic",
        r#"unterminated_quote.lic:3:44: a quoted value is not closed, expected a closing " on the same line"#,
    ),
    (
        "vendor_bad_port.lic",
        r#"vendor_bad_port.lic:2:38: port "7x" is not a port number, expected a whole number from 1 to 65535"#,
    ),
    (
        "vendor_extra.lic",
        r#"vendor_extra.lic:2:44: unexpected "extra" after the port, expected the end of the VENDOR line"#,
    ),
    (
        "zero_count.lic",
        r#"zero_count.lic:3:34: count "0" licenses no seats, expected at least 1 (a feature line must license at least one seat)"#,
    ),
    (
        "zero_port.lic",
        r#"zero_port.lic:1:19: port "0" is not a port number, expected a whole number from 1 to 65535"#,
    ),
];

// Guards the promise that every error names file, line and character column
// and says what was found and what was expected, word for word.
#[test]
fn every_bad_file_gives_its_exact_message() {
    let mut failures = Vec::new();
    for (name, expected) in BAD {
        let got = match file::parse(name, &read(&format!("bad/{name}"))) {
            Ok(_) => "parsed without error".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *expected {
            failures.push(format!("{name}\n  expected: {expected}\n  got:      {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Guards that no bad data file is left without an expected message.
#[test]
fn every_bad_data_file_is_listed() {
    let dir = Path::new(DATA).join("bad");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("bad/ exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".lic"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = BAD.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed);
}

// Guards that every error class has a distinct message: the bad files cover
// each `ParseErrorKind` variant except `TooLong` (tested below).
#[test]
fn bad_files_cover_every_error_class() {
    let mut kinds: Vec<String> = BAD
        .iter()
        .filter_map(|(name, _)| file::parse(name, &read(&format!("bad/{name}"))).err())
        .map(|e| {
            format!("{:?}", e.kind)
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "BadCount",
            "BadEscape",
            "BadExpiry",
            "BadHostId",
            "BadHostIds",
            "BadIssued",
            "BadName",
            "BadPort",
            "BadSignatureValue",
            "BadVersion",
            "ContinuationAtEnd",
            "DuplicateAttribute",
            "DuplicateFeature",
            "DuplicateServer",
            "DuplicateVendor",
            "ExtraToken",
            "MissingField",
            "NoServer",
            "NoSuchDate",
            "NoVendor",
            "NotAttribute",
            "UndeclaredVendor",
            "UnknownKeyword",
            "UnterminatedQuote",
            "ZeroCount",
        ]
    );
}

// Guards the size limit: an oversized text is refused before any work.
#[test]
fn oversized_file_is_refused() {
    let text = "#".repeat(file::LICENSE_FILE_BYTES_MAX + 1);
    let err = file::parse("big.lic", &text).expect_err("too long");
    assert_eq!(
        err.to_string(),
        format!(
            "big.lic:1:1: the file is {} bytes long, expected at most {} bytes",
            file::LICENSE_FILE_BYTES_MAX + 1,
            file::LICENSE_FILE_BYTES_MAX
        )
    );
    assert!(matches!(err.kind, ParseErrorKind::TooLong { .. }));
}

// Guards small grammar points: `\` before a comment continues, a quote may
// sit inside a token, a VENDOR may be declared after its first use, the
// missing-field error points just past the last token of a continued line.
#[test]
fn grammar_details() {
    let text = "VENDOR acme\nFEATURE cad acme \\ # comment after the continuation\n 1.0 permanent 2 N=\"a b\"c\nSERVER X ANY 1\n";
    let parsed = file::parse("g.lic", text).expect("parses");
    assert_eq!(parsed.lines[0].attributes, attrs(&[("N", "a bc")]));
    assert_eq!(parsed.lines[0].line, 2);

    let err = file::parse(
        "g.lic",
        "SERVER X ANY 1\nVENDOR acme\nINCREMENT cad \\\n   acme 1.0\n",
    )
    .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "g.lic:4:12: the INCREMENT line ends before the expiry, expected INCREMENT <feature> <vendor> <version> <expiry> <count> [KEY=value ...]"
    );

    // A backslash that is not last on the line is an ordinary character.
    let err = file::parse("g.lic", "SERVER X\\Y ANY 1\n").expect_err("bad name");
    assert_eq!(
        err.to_string(),
        r#"g.lic:1:8: access point name "X\\Y" is not a name, expected letters, digits, '_', '.' or '-'"#
    );

    // An empty file has no SERVER line.
    let err = file::parse("empty.lic", "").expect_err("empty");
    assert_eq!(err.kind, ParseErrorKind::NoServer);
}

/// How many lines `text` has, as the parser numbers them.
fn line_count(text: &str) -> usize {
    text.split_inclusive('\n').count().max(1)
}

proptest::proptest! {
    // Guards "no panic on any input": arbitrary text heavy in the characters
    // the lexer treats specially either parses or gives an error whose
    // position lies inside the file.
    #[test]
    fn any_text_parses_or_points_inside_the_file(
        body in "[ \t\r\n\\\\\"#=a-zA-Z0-9_.é-]{0,200}",
        header in proptest::bool::ANY,
    ) {
        let text = if header { format!("SERVER X ANY 1\nVENDOR v\nFEATURE f v 1 permanent 1 {body}") } else { body };
        if let Err(e) = file::parse("fuzz.lic", &text) {
            let line = usize::try_from(e.line).unwrap_or(usize::MAX);
            proptest::prop_assert!(line >= 1 && line <= line_count(&text), "{e}");
            let width = text.split_inclusive('\n').nth(line - 1).map_or(0, |l| l.trim_end_matches('\n').chars().count());
            proptest::prop_assert!(e.column >= 1 && e.column as usize <= width + 1, "{e}");
        }
    }
}

// Guards against inputs that would make the parser quadratic (an import
// request is untrusted input): a line of backslashes, a line of attributes,
// many vendors. They must simply finish.
#[test]
fn worst_case_inputs_finish() {
    let budget = file::LICENSE_FILE_BYTES_MAX - 100;
    let backslashes = format!("SERVER X ANY 1 {}\n", "\\a".repeat(budget / 2));
    let err = file::parse("b.lic", &backslashes).expect_err("extra token");
    assert!(matches!(err.kind, ParseErrorKind::ExtraToken { .. }));

    let attributes = format!(
        "SERVER X ANY 1\nVENDOR v{}\n",
        (0..budget / 10)
            .map(|i| format!(" K{i}=1"))
            .collect::<String>()
    );
    assert!(file::parse("a.lic", &attributes).is_ok());

    let vendors: String = (0..budget / 16).map(|i| format!("VENDOR v{i}\n")).collect();
    let parsed = file::parse("v.lic", &format!("SERVER X ANY 1\n{vendors}")).expect("parses");
    assert_eq!(parsed.vendors.len(), budget / 16);
}

// Guards that positions on continuation lines name the line the token is on,
// not the line where the statement starts.
#[test]
fn whole_file_errors_point_at_continued_tokens() {
    let err = file::parse(
        "c.lic",
        "SERVER X ANY 1\nVENDOR acme\nFEATURE cad \\\n  beta 1 permanent 1\n",
    )
    .expect_err("undeclared");
    assert_eq!(
        err.to_string(),
        "c.lic:4:3: vendor \"beta\" is not declared, expected a VENDOR beta line in the file"
    );
    let err =
        file::parse("c.lic", "SERVER X ANY 1\nVENDOR acme\nVENDOR \\\n acme\n").expect_err("twice");
    assert_eq!(
        err.to_string(),
        "c.lic:4:2: a second VENDOR line for \"acme\", expected one VENDOR line per vendor (the first is line 2)"
    );
}
