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
