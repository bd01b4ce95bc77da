//! The license tools as a user runs them: the real `raftlm` binary, in a
//! temporary directory (`raftlm license keygen | sign | verify`), checking
//! exit codes (0 ok, 1 refused, 2 usage) and what is printed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const UNSIGNED: &str = "\
# Example Corp's license
SERVER LICSRV ANY 27000
VENDOR acme
FEATURE cad acme 2.0 31-dec-2099 25 ISSUED=22-nov-2026
INCREMENT cad acme 2.0 permanent 5   # extra seats
";

fn raftlm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftlm"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run raftlm: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory with a key pair (`acme.key`, `acme.pub`) and `acme.lic` signed with it.
fn signed_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = raftlm(
        dir.path(),
        &["license", "keygen", "--out", "acme", "--vendor", "acme"],
    );
    assert_eq!(out.status.code(), Some(0), "keygen: {}", text(&out.stderr));
    std::fs::write(dir.path().join("unsigned.lic"), UNSIGNED).expect("write");
    let out = raftlm(
        dir.path(),
        &[
            "license",
            "sign",
            "--key",
            "acme.key",
            "unsigned.lic",
            "--out",
            "acme.lic",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "sign: {}", text(&out.stderr));
    dir
}

fn verify(dir: &Path, cluster: &str, file: &str) -> Output {
    raftlm(
        dir,
        &[
            "license",
            "verify",
            "--pubkey",
            "acme.pub",
            "--cluster-name",
            cluster,
            file,
        ],
    )
}

/// Asserts a refusal: the exit code, and exactly one line on stderr equal to `message`.
fn assert_fails(out: &Output, code: i32, message: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr, got: {stderr}"
    );
    assert_eq!(stderr.trim_end(), format!("raftlm: {message}"));
}

// Guards the vendor-to-admin workflow: keygen, sign, verify succeed and
// verify lists every feature line.
#[test]
fn keygen_sign_verify_round_trip() {
    let dir = signed_setup();
    let signed = std::fs::read_to_string(dir.path().join("acme.lic")).expect("signed file");
    assert!(signed.starts_with("# Example Corp's license\n"));
    assert_eq!(signed.matches("SIGN=\"ed25519:").count(), 2);

    let out = verify(dir.path(), "LICSRV", "acme.lic");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "acme.lic: 2 feature lines verified for cluster \"LICSRV\", bound to cluster name LICSRV"
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "FEATURE", "VENDOR", "VERSION", "EXPIRY", "SEATS", "KIND", "COUNTS"
            ],
            vec![
                "cad",
                "acme",
                "2.0",
                "31-dec-2099",
                "25",
                "FEATURE",
                "counts"
            ],
            vec![
                "cad",
                "acme",
                "2.0",
                "permanent",
                "5",
                "INCREMENT",
                "counts"
            ],
        ]
    );

    // Without --out, sign writes the same signed text to stdout.
    let out = raftlm(
        dir.path(),
        &["license", "sign", "--key", "acme.key", "unsigned.lic"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), signed);
}

// Guards the secrecy of the vendor key: it is created readable by its owner
// only, and keygen never overwrites an existing key.
#[test]
fn secret_key_is_private_and_never_overwritten() {
    let dir = signed_setup();
    let key = dir.path().join("acme.key");
    let mode = std::fs::metadata(&key)
        .expect("key exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(&key).expect("key");
    let out = raftlm(
        dir.path(),
        &["license", "keygen", "--out", "acme", "--vendor", "acme"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&key).expect("key"), before);
}

// A key is bound to one vendor unless the vendor asks for a key of any vendor explicitly.
#[test]
fn keygen_binds_a_key_to_one_vendor_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = raftlm(dir.path(), &["license", "keygen", "--out", "k"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--vendor"),
        "{}",
        text(&out.stderr)
    );
    let out = raftlm(
        dir.path(),
        &["license", "keygen", "--out", "k", "--any-vendor"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let public = std::fs::read_to_string(dir.path().join("k.pub")).expect("pub");
    assert!(public.contains('*'), "{public}");
    let out = raftlm(
        dir.path(),
        &["license", "keygen", "--out", "j", "--vendor", "acme"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

// Guards against seat inflation from the command line: one count changed is
// refused with a one-line reason naming the file and line.
#[test]
fn changed_seat_count_is_refused() {
    let dir = signed_setup();
    let path = dir.path().join("acme.lic");
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("permanent 5", "permanent 50");
    std::fs::write(&path, edited).expect("write");
    assert_fails(
        &verify(dir.path(), "LICSRV", "acme.lic"),
        1,
        "acme.lic:5: the signature does not match this INCREMENT line for \"cad\": the line was changed after it was signed (re-issue the file from the vendor)",
    );
}

// Guards the exact cluster binding: the same name in another case is refused.
#[test]
fn cluster_name_in_another_case_is_refused() {
    let dir = signed_setup();
    assert_fails(
        &verify(dir.path(), "licsrv", "acme.lic"),
        1,
        "acme.lic:2: the file is issued for access point \"LICSRV\" but this cluster is \"licsrv\" (names are case-sensitive): rehost the file for \"licsrv\" or rename the access point",
    );
}

// Guards that a typo is reported with file:line:column and what was expected.
#[test]
fn typo_is_refused_with_its_position() {
    let dir = signed_setup();
    let path = dir.path().join("acme.lic");
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("31-dec-2099", "31-dex-2099");
    std::fs::write(&path, edited).expect("write");
    assert_fails(
        &verify(dir.path(), "LICSRV", "acme.lic"),
        1,
        "acme.lic:4:22: expiry \"31-dex-2099\" is not a date, expected dd-mmm-yyyy (e.g. 31-dec-2027) or \"permanent\"",
    );
}

// Guards the exit code for a file that cannot be read: a usage error (2), not a refusal.
#[test]
fn missing_file_is_a_usage_error() {
    let dir = signed_setup();
    assert_fails(
        &verify(dir.path(), "LICSRV", "missing.lic"),
        2,
        "cannot read license file missing.lic: No such file or directory (os error 2)",
    );
    let out = raftlm(
        dir.path(),
        &[
            "license",
            "verify",
            "--pubkey",
            "nope.pub",
            "--cluster-name",
            "LICSRV",
            "acme.lic",
        ],
    );
    assert_fails(
        &out,
        2,
        "cannot read key file nope.pub: No such file or directory (os error 2)",
    );
}

// `license verify` given an old and a renewed file shows which lines a cluster would
// count: the renewal's, with the old line marked superseded by it.
#[test]
fn verify_shows_which_lines_count() {
    let dir = signed_setup();
    let sign = |name: &str, body: &str| {
        std::fs::write(dir.path().join(format!("{name}.unsigned")), body).expect("write");
        let out = raftlm(
            dir.path(),
            &[
                "license",
                "sign",
                "--key",
                "acme.key",
                &format!("{name}.unsigned"),
                "--out",
                name,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "sign: {}", text(&out.stderr));
    };
    sign(
        "old.lic",
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 31-dec-2099 25 ISSUED=01-jan-2026\n",
    );
    sign(
        "new.lic",
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 31-dec-2099 10 ISSUED=01-dec-2026\n",
    );
    let out = raftlm(
        dir.path(),
        &[
            "license",
            "verify",
            "--pubkey",
            "acme.pub",
            "--cluster-name",
            "LICSRV",
            "old.lic",
            "new.lic",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |file: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("no row for {file}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("new.lic:3").last(), Some(&"counts"), "{stdout}");
    assert_eq!(
        row("old.lic:3")[7..],
        ["superseded", "by", "new.lic:3"],
        "{stdout}"
    );
}

// A line issued decades ahead (a year typed wrong) is refused by `sign`,
// naming the file, line and column of the date and this machine's time; a
// file that was signed anyway is flagged by `verify`, as every cluster would
// refuse it.
#[test]
fn a_line_issued_in_the_future_is_refused_by_sign_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = raftlm(
        dir.path(),
        &["license", "keygen", "--out", "acme", "--vendor", "acme"],
    );
    assert_eq!(out.status.code(), Some(0), "keygen: {}", text(&out.stderr));
    let typo = UNSIGNED.replace("ISSUED=22-nov-2026", "ISSUED=07-dec-2062");
    std::fs::write(dir.path().join("typo.lic"), &typo).expect("write");
    let out = raftlm(
        dir.path(),
        &["license", "sign", "--key", "acme.key", "typo.lic"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "raftlm: typo.lic:4:37: FEATURE \"cad\" is issued 07-dec-2062 but this machine's clock says "
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing signed");

    // Signed by other means, the file is still refused by verify.
    let key = raftlm::license::signature::VendorSigningKey::from_seed(Some("acme"), [3; 32]);
    let signed = raftlm::license::signature::sign_text("typo.lic", &typo, &key).expect("sign");
    std::fs::write(dir.path().join("typo.lic"), signed).expect("write");
    std::fs::write(dir.path().join("acme.pub"), key.public_key().to_file_text()).expect("write");
    let out = verify(dir.path(), "LICSRV", "typo.lic");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "typo.lic:4:37: FEATURE \"cad\" is issued 07-dec-2062 but the cluster's time is "
        ) && stderr.contains("ask the vendor for a corrected file"),
        "{stderr}"
    );
}

/// A FlexNet file brought over: a VENDOR line with daemon path, options file
/// and port, an expired INCREMENT, a node-locked line and a PACKAGE line.
const FLEXNET: &str = "\
SERVER LICSRV ANY 27000
VENDOR acme /opt/acme/acmed /opt/acme/acme.opt 27001
FEATURE cad acme 2.0 31-dec-2099 25 ISSUED=22-nov-2026
INCREMENT cad acme 2.0 31-dec-2025 10 SN=7
FEATURE viewer acme 1.0 permanent uncounted HOSTID=0011223344aa
PACKAGE suite acme 1.0 COMPONENTS=\"cad viewer\"
INCREMENT cad acme 2.0 permanent 5
";

/// Signs `body` as `name` in `dir` with acme.key; returns sign's stderr.
fn sign_file(dir: &Path, name: &str, body: &str) -> String {
    std::fs::write(dir.join(format!("{name}.unsigned")), body).expect("write");
    let out = raftlm(
        dir,
        &[
            "license",
            "sign",
            "--key",
            "acme.key",
            &format!("{name}.unsigned"),
            "--out",
            name,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "sign: {}", text(&out.stderr));
    text(&out.stderr)
}

// `sign` signs a FlexNet file's usable lines and warns on stderr about the line
// that has already expired, the lines a cluster will not import and the VENDOR
// fields it ignores; `verify` accepts the file, flags the expired line in its
// table and on stderr, and names the skipped lines with file:line:column.
#[test]
fn flexnet_file_signs_and_verifies_with_warnings() {
    let dir = signed_setup();
    let warnings = sign_file(dir.path(), "flex.lic", FLEXNET);
    let name = "flex.lic.unsigned";
    assert_eq!(
        warnings.lines().collect::<Vec<_>>(),
        [
            format!(
                "warning: {name}:2: VENDOR acme: the daemon path, options file and port are ignored by raftlm"
            ),
            format!(
                "warning: {name}:5:35: FEATURE \"viewer\" is not imported: uncounted (node-locked) licenses are not served by a floating-license server; ask the vendor for a counted line"
            ),
            format!(
                "warning: {name}:6:1: PACKAGE \"suite\" is not imported: PACKAGE lines (suites of features) are not supported; ask the vendor for FEATURE or INCREMENT lines for the package's features"
            ),
            format!(
                "warning: {name}:4: INCREMENT \"cad\" has already expired on 31-dec-2025 by this machine's clock: signed anyway, a cluster counts it 0 seats"
            ),
        ]
    );
    let signed = std::fs::read_to_string(dir.path().join("flex.lic")).expect("signed");
    assert_eq!(signed.matches("SIGN=\"ed25519:").count(), 3, "{signed}");

    let out = verify(dir.path(), "LICSRV", "flex.lic");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "warning: flex.lic:4: INCREMENT \"cad\" expired on 31-dec-2025: imported, counts 0 seats\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: flex.lic:5:35: FEATURE \"viewer\" is not imported: uncounted (node-locked)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: flex.lic:6:1: PACKAGE \"suite\" is not imported"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: flex.lic:2: VENDOR acme: the daemon path, options file and port are ignored by raftlm"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "flex.lic: 3 feature lines verified for cluster \"LICSRV\", bound to cluster name LICSRV\n"
        ),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "cad",
                "acme",
                "2.0",
                "31-dec-2099",
                "25",
                "FEATURE",
                "counts"
            ],
            vec![
                "cad",
                "acme",
                "2.0",
                "31-dec-2025",
                "10",
                "INCREMENT",
                "expired,",
                "0",
                "seats"
            ],
            vec![
                "cad",
                "acme",
                "2.0",
                "permanent",
                "5",
                "INCREMENT",
                "counts"
            ],
        ]
    );
}

// A file whose every line has expired: `sign` warns (and signs), `verify`
// refuses it naming the file and the last expiry.
#[test]
fn wholly_expired_file_is_refused_by_verify() {
    let dir = signed_setup();
    let warnings = sign_file(
        dir.path(),
        "old.lic",
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 31-dec-2025 5\n",
    );
    assert!(
        warnings.contains("warning: old.lic.unsigned: every feature line has expired: a cluster refuses the file (give the lines later expiry dates)"),
        "{warnings}"
    );
    assert_fails(
        &verify(dir.path(), "LICSRV", "old.lic"),
        1,
        "old.lic: every feature line has expired, the last on 31-dec-2025 (line 3): the file would grant no seat (get a renewed file from the vendor)",
    );
}

// A date that does not exist is named as such, with its position.
#[test]
fn nonexistent_date_is_named() {
    let dir = signed_setup();
    let path = dir.path().join("acme.lic");
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("31-dec-2099", "29-feb-2027");
    std::fs::write(&path, edited).expect("write");
    assert_fails(
        &verify(dir.path(), "LICSRV", "acme.lic"),
        1,
        "acme.lic:4:22: expiry 29-feb-2027 is not a date: February 2027 has 28 days (ask the vendor for a line with the intended date)",
    );
}
