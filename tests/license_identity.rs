//! License files bound to a cluster identity (`SERVER LICSRV ID=sha256:… 27000`):
//! the parser reads the identity, every line's signature covers it, and a
//! cluster with another identity (or none) refuses the file, naming both.
//! Files bound by name only keep the canonical form and signatures they had.

use raftlm::license::file;
use raftlm::license::signature::{
    self, VendorSigningKey, VerifyError, canonical_form, canonical_form_bound,
};
use raftlm::license::{ClusterId, Date};

const ID_A: &str = "sha256:4fa5d61aaaf51880cec6df16755bc09cccf3db0d69ce96ed4ddd7e206576a0f7";
const ID_B: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn now_ms() -> u64 {
    Date::parse("01-dec-2026").expect("date").start_ms()
}

fn bound_file(id: &str) -> String {
    format!(
        "SERVER LICSRV ID={id} 27000\nVENDOR acme\n\
         FEATURE cad acme 2.0 31-dec-2027 25 ISSUED=22-nov-2026\n\
         INCREMENT cad acme 2.0 permanent 5 SN=7\n"
    )
}

const NAME_ONLY: &str = "SERVER LICSRV ANY 27000\nVENDOR acme\n\
     FEATURE cad acme 2.0 31-dec-2027 25 ISSUED=22-nov-2026\n";

fn id(text: &str) -> ClusterId {
    ClusterId::parse(text).expect("identity")
}

// The ID= host id is parsed into the file's binding; other host ids are not.
#[test]
fn server_line_with_identity_parses() {
    let parsed = file::parse("a.lic", &bound_file(ID_A)).expect("parses");
    assert_eq!(parsed.server.name, "LICSRV");
    assert_eq!(parsed.server.cluster_id, Some(id(ID_A)));
    assert_eq!(parsed.server.port, 27000);
    // The key is case-insensitive like other keys; the value is not.
    let lower = bound_file(ID_A).replace("ID=", "id=");
    assert_eq!(
        file::parse("a.lic", &lower)
            .expect("parses")
            .server
            .cluster_id,
        Some(id(ID_A))
    );
    let plain = file::parse("n.lic", NAME_ONLY).expect("parses");
    assert_eq!(plain.server.cluster_id, None);
    assert_eq!(plain.server.hostid, "ANY");
}

// A malformed identity is a parse error that says what is expected.
#[test]
fn malformed_identity_is_refused_with_its_column() {
    for bad in [
        "ID=sha256:abc",
        "ID=sha1:4fa5d61aaaf51880cec6df16755bc09cccf3db0d",
        "ID=",
        &format!("ID={}", ID_A.to_uppercase().replace("SHA256", "sha256")),
    ] {
        let text = format!("SERVER LICSRV {bad} 27000\nVENDOR acme\n");
        let error = file::parse("bad.lic", &text).expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!(
                "bad.lic:1:15: cluster identity {bad:?} is not an identity, expected ID=sha256: and 64 lowercase hex digits (as raftlm tls identity prints it)"
            )
        );
    }
}

// The documented canonical form of a bound line: the identity follows the
// server name; a name-only line's form has no such field (old signatures stay valid).
#[test]
fn canonical_form_carries_the_identity() {
    let parsed = file::parse("a.lic", &bound_file(ID_A)).expect("parses");
    let form = canonical_form_bound(
        "LICSRV",
        parsed.server.cluster_id.as_ref(),
        &parsed.lines[0],
    );
    assert_eq!(
        String::from_utf8(form).expect("utf-8"),
        format!(
            "raftlm-license-v1\n\
             server 6 LICSRV\n\
             cluster-id 71 {ID_A}\n\
             keyword 7 FEATURE\n\
             feature 3 cad\n\
             vendor 4 acme\n\
             version 3 2.0\n\
             expiry 11 31-dec-2027\n\
             count 2 25\n\
             key 6 ISSUED\n\
             value 11 22-nov-2026\n"
        )
    );
    assert_eq!(
        canonical_form_bound("LICSRV", None, &parsed.lines[0]),
        canonical_form("LICSRV", &parsed.lines[0])
    );
    assert!(
        !String::from_utf8(canonical_form("LICSRV", &parsed.lines[0]))
            .expect("utf-8")
            .contains("cluster-id")
    );
}

// A signed bound file verifies for its identity and carries the binding
// into the held lines; another identity or none is refused naming both.
#[test]
fn bound_file_verifies_only_for_its_identity() {
    let key = VendorSigningKey::generate(Some("acme"));
    let signed = signature::sign_text("a.lic", &bound_file(ID_A), &key).expect("signs");
    let parsed = file::parse("a.lic", &signed).expect("parses");
    let trusted = [key.public_key()];
    let lines = signature::verify_bound(
        &parsed,
        "a.lic",
        &trusted,
        "LICSRV",
        Some(&id(ID_A)),
        now_ms(),
    )
    .expect("verifies for its identity");
    assert!(lines.iter().all(|l| l.cluster_id == Some(id(ID_A))));
    for line in &lines {
        signature::verify_held("a.lic", line, "LICSRV", &trusted).expect("held line verifies");
    }

    let refused = signature::verify_bound(
        &parsed,
        "a.lic",
        &trusted,
        "LICSRV",
        Some(&id(ID_B)),
        now_ms(),
    )
    .expect_err("another identity");
    assert!(matches!(refused, VerifyError::WrongClusterId { .. }));
    assert_eq!(
        refused.to_string(),
        format!(
            "a.lic:1: this file is bound to cluster {ID_A} but this cluster is {ID_B}: ask the vendor for a file bound to {ID_B} (raftlm status shows it)"
        )
    );
    let none = signature::verify_bound(&parsed, "a.lic", &trusted, "LICSRV", None, now_ms())
        .expect_err("no identity");
    assert!(none.to_string().starts_with(&format!(
        "a.lic:1: this file is bound to cluster {ID_A} but this cluster has no identity"
    )));
    // The name still matters: a bound file is issued for a name too.
    assert!(matches!(
        signature::verify_bound(
            &parsed,
            "a.lic",
            &trusted,
            "OTHER",
            Some(&id(ID_A)),
            now_ms()
        ),
        Err(VerifyError::WrongCluster { .. })
    ));
}

// Editing the identity, dropping it, or adding one to a name-only file breaks
// every signature: the binding cannot be moved to another cluster.
#[test]
fn the_binding_cannot_be_edited() {
    let key = VendorSigningKey::generate(Some("acme"));
    let trusted = [key.public_key()];
    let signed = signature::sign_text("a.lic", &bound_file(ID_A), &key).expect("signs");
    for edited in [
        signed.replace(ID_A, ID_B),
        signed.replace(&format!("ID={ID_A}"), "ANY"),
    ] {
        let parsed = file::parse("a.lic", &edited).expect("parses");
        let cluster = parsed.server.cluster_id;
        let error = signature::verify_bound(
            &parsed,
            "a.lic",
            &trusted,
            "LICSRV",
            cluster.as_ref(),
            now_ms(),
        )
        .expect_err("edited");
        assert!(matches!(error, VerifyError::Mismatch { .. }), "{error}");
    }
    let name_only = signature::sign_text("n.lic", NAME_ONLY, &key).expect("signs");
    let added = name_only.replace("ANY", &format!("ID={ID_A}"));
    let parsed = file::parse("n.lic", &added).expect("parses");
    assert!(matches!(
        signature::verify_bound(
            &parsed,
            "n.lic",
            &trusted,
            "LICSRV",
            Some(&id(ID_A)),
            now_ms()
        ),
        Err(VerifyError::Mismatch { .. })
    ));
    // A held line whose binding is changed no longer verifies either.
    let parsed = file::parse("a.lic", &signed).expect("parses");
    let mut lines = signature::verify_bound(
        &parsed,
        "a.lic",
        &trusted,
        "LICSRV",
        Some(&id(ID_A)),
        now_ms(),
    )
    .expect("verifies");
    lines[0].cluster_id = Some(id(ID_B));
    assert!(signature::verify_held("a.lic", &lines[0], "LICSRV", &trusted).is_err());
    lines[0].cluster_id = None;
    assert!(signature::verify_held("a.lic", &lines[0], "LICSRV", &trusted).is_err());
}

// Files bound by name only verify on any cluster of that name, with or
// without an identity, exactly as before.
#[test]
fn name_only_files_verify_whatever_the_identity() {
    let key = VendorSigningKey::generate(Some("acme"));
    let trusted = [key.public_key()];
    let signed = signature::sign_text("n.lic", NAME_ONLY, &key).expect("signs");
    let parsed = file::parse("n.lic", &signed).expect("parses");
    for cluster in [None, Some(id(ID_A)), Some(id(ID_B))] {
        let lines = signature::verify_bound(
            &parsed,
            "n.lic",
            &trusted,
            "LICSRV",
            cluster.as_ref(),
            now_ms(),
        )
        .expect("verifies");
        assert!(lines.iter().all(|l| l.cluster_id.is_none()));
    }
    assert_eq!(
        signature::binding_text("LICSRV", None, &[]),
        "bound to cluster name LICSRV"
    );
    assert_eq!(
        signature::binding_text("LICSRV", Some(&id(ID_A)), &[]),
        format!("bound to cluster LICSRV {ID_A}")
    );
}

fn raftlm(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_raftlm"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run raftlm: {e}"))
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// The administrator's and vendor's workflow: `tls init` prints the identity,
// `tls identity` prints it again from ca.crt, the vendor signs a file bound
// to it, and `license verify --cluster-id` accepts it for that identity only
// and says which binding the file has.
#[test]
fn cli_prints_the_identity_and_checks_bound_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let init = ok_stdout(&raftlm(
        path,
        &["tls", "init", "--dir", "ca", "--cluster", "LICSRV"],
    ));
    let printed = init
        .lines()
        .find_map(|l| l.strip_prefix("cluster identity "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("tls init prints the identity")
        .to_string();
    let shown = ok_stdout(&raftlm(path, &["tls", "identity", "--ca", "ca/ca.crt"]));
    assert_eq!(shown, format!("{printed}  cluster LICSRV\n"));
    let other = ok_stdout(&raftlm(
        path,
        &["tls", "init", "--dir", "ca2", "--cluster", "LICSRV"],
    ));
    assert!(!other.contains(&printed), "two CAs, two identities");

    ok_stdout(&raftlm(
        path,
        &["license", "keygen", "--out", "acme", "--vendor", "acme"],
    ));
    std::fs::write(path.join("bound.unsigned"), bound_file(&printed)).expect("write");
    ok_stdout(&raftlm(
        path,
        &[
            "license",
            "sign",
            "--key",
            "acme.key",
            "bound.unsigned",
            "--out",
            "bound.lic",
        ],
    ));
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "license",
            "verify",
            "--pubkey",
            "acme.pub",
            "--cluster-name",
            "LICSRV",
        ];
        args.extend_from_slice(extra);
        args.push("bound.lic");
        raftlm(path, &args)
    };
    let out = ok_stdout(&verify(&["--cluster-id", &printed]));
    assert_eq!(
        out.lines().next(),
        Some(
            format!(
                "bound.lic: 2 feature lines verified for cluster \"LICSRV\", bound to cluster LICSRV {printed}"
            )
            .as_str()
        )
    );
    let out = ok_stdout(&verify(&[]));
    assert!(
        out.lines()
            .next()
            .expect("summary")
            .ends_with("(the identity is not checked: give --cluster-id to check it)")
    );
    let refused = verify(&["--cluster-id", ID_B]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim_end(),
        format!(
            "raftlm: bound.lic:1: this file is bound to cluster {printed} but this cluster is {ID_B}: ask the vendor for a file bound to {ID_B} (raftlm status shows it)"
        )
    );
    let bad = verify(&["--cluster-id", "sha256:12"]);
    assert_eq!(bad.status.code(), Some(2));
}

mod state {
    use super::*;
    use raftlm::license::state::{
        Batch, Command, LicenseState, LogIndex, LogPosition, NodeId, Outcome, Term,
    };

    fn activate(term: u64, cluster_id: Option<ClusterId>) -> Command {
        Command::Activate {
            term: Term(term),
            node: NodeId(term),
            cluster_name: "LICSRV".into(),
            cluster_id,
            lease_ms: 250,
            wait_ms: 350,
        }
    }

    fn apply(state: &mut LicenseState, index: u64, command: Command) -> Outcome {
        let batch = Batch {
            now_ms: now_ms(),
            commands: vec![command],
        };
        state
            .apply_batch(
                LogPosition {
                    term: Term(1),
                    index: LogIndex(index),
                },
                &batch,
            )
            .remove(0)
    }

    fn import(key: &VendorSigningKey, id: &str, name: &str) -> Command {
        let signed = signature::sign_text(name, &bound_file(id), key).expect("signs");
        let parsed = file::parse(name, &signed).expect("parses");
        let lines = signature::verify(&parsed, name, &[key.public_key()], "LICSRV", now_ms())
            .expect("verifies");
        Command::ImportLicense {
            name: name.into(),
            lines,
            author: "CN=test".into(),
        }
    }

    // Every replica checks the binding on apply against the identity the
    // first activation recorded: a forged or stale import bound to another
    // identity changes nothing, on every node alike. A later activation
    // with another CA (a re-issued CA) does not move the recorded identity.
    #[test]
    fn apply_refuses_lines_bound_to_another_identity() {
        let key = VendorSigningKey::from_seed(Some("acme"), [7; 32]);
        let mut state = LicenseState::new();
        assert_eq!(apply(&mut state, 1, activate(1, None)), Outcome::Activated);
        assert_eq!(state.cluster_id(), None);
        // No identity recorded yet: bound lines are refused.
        match apply(
            &mut state,
            2,
            Command::TrustKey {
                vendor: Some("acme".into()),
                key: key.public_key().to_bytes(),
                author: "CN=test".into(),
            },
        ) {
            Outcome::KeyTrusted { .. } => {}
            other => panic!("{other:?}"),
        }
        match apply(&mut state, 3, import(&key, ID_A, "a.lic")) {
            Outcome::LicenseUnverified { reason, .. } => assert!(
                reason.contains(&format!(
                    "this file is bound to cluster {ID_A} but this cluster has no identity"
                )),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // The first activation with TLS records the identity; a later one does not change it.
        assert_eq!(
            apply(&mut state, 4, activate(2, Some(id(ID_A)))),
            Outcome::Activated
        );
        assert_eq!(
            apply(&mut state, 5, activate(3, Some(id(ID_B)))),
            Outcome::Activated
        );
        assert_eq!(state.cluster_id(), Some(&id(ID_A)));

        match apply(&mut state, 6, import(&key, ID_B, "b.lic")) {
            Outcome::LicenseUnverified { reason, .. } => assert!(
                reason.contains(&format!(
                    "this file is bound to cluster {ID_B} but this cluster is {ID_A}"
                )),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            apply(&mut state, 7, import(&key, ID_A, "a.lic")),
            Outcome::Imported { .. }
        ));
        // What a snapshot install checks: every held line, binding included.
        state.verify_lines().expect("held lines verify");
        let bytes = raftlm::codec::encode(&state).expect("encodes");
        let copy: LicenseState = raftlm::codec::decode(&bytes).expect("decodes");
        assert_eq!(copy.cluster_id(), Some(&id(ID_A)));
        copy.verify_lines().expect("the copy's lines verify");
    }
}

// A file bound to host ids (`SERVER … HOSTIDS=…`): the ids are parsed in file
// order, every signature covers them (after the identity), and a file whose
// list is edited, dropped or added after signing does not verify. Lines keep
// their host ids, and a held line whose ids are changed fails too.
#[test]
fn host_ids_are_parsed_and_signed() {
    use raftlm::license::HostId;
    let host = |n: u8| HostId([n; 16]);
    let list = format!("{},{},{}", host(1), host(2), host(3));
    let text = bound_file(ID_A).replace(" 27000\n", &format!(" 27000 HOSTIDS={list}\n"));
    let parsed = file::parse("h.lic", &text).expect("parses");
    assert_eq!(parsed.server.host_ids, [host(1), host(2), host(3)]);
    assert_eq!(parsed.server.cluster_id, Some(id(ID_A)));
    let lower = text.replace("HOSTIDS=", "hostids=");
    assert_eq!(
        file::parse("h.lic", &lower)
            .expect("parses")
            .server
            .host_ids,
        [host(1), host(2), host(3)]
    );
    let form = String::from_utf8(signature::canonical_form_hosts(
        "LICSRV",
        Some(&id(ID_A)),
        &parsed.server.host_ids,
        &parsed.lines[0],
    ))
    .expect("utf-8");
    assert!(
        form.contains(&format!(
            "\ncluster-id 71 {ID_A}\nhost-ids {} {list}\nkeyword ",
            list.len()
        )),
        "{form}"
    );

    let key = VendorSigningKey::generate(Some("acme"));
    let trusted = [key.public_key()];
    let signed = signature::sign_text("h.lic", &text, &key).expect("signs");
    let parsed = file::parse("h.lic", &signed).expect("parses");
    let lines = signature::verify_bound(
        &parsed,
        "h.lic",
        &trusted,
        "LICSRV",
        Some(&id(ID_A)),
        now_ms(),
    )
    .expect("verifies");
    assert!(
        lines
            .iter()
            .all(|l| l.host_ids == [host(1), host(2), host(3)])
    );
    assert_eq!(
        signature::binding_text("LICSRV", Some(&id(ID_A)), &lines[0].host_ids),
        format!(
            "bound to cluster LICSRV {ID_A} and hosts {}, {}, {}",
            host(1),
            host(2),
            host(3)
        )
    );
    let other = format!("{},{},{}", host(1), host(2), host(9));
    for edited in [
        signed.replace(&list, &other),
        signed.replace(&format!(" HOSTIDS={list}"), ""),
    ] {
        let parsed = file::parse("h.lic", &edited).expect("parses");
        let error = signature::verify_bound(
            &parsed,
            "h.lic",
            &trusted,
            "LICSRV",
            Some(&id(ID_A)),
            now_ms(),
        )
        .expect_err("edited");
        assert!(matches!(error, VerifyError::Mismatch { .. }), "{error}");
    }
    let unbound = signature::sign_text("a.lic", &bound_file(ID_A), &key).expect("signs");
    let added = unbound.replace(" 27000\n", &format!(" 27000 HOSTIDS={list}\n"));
    let parsed = file::parse("a.lic", &added).expect("parses");
    assert!(matches!(
        signature::verify_bound(
            &parsed,
            "a.lic",
            &trusted,
            "LICSRV",
            Some(&id(ID_A)),
            now_ms()
        ),
        Err(VerifyError::Mismatch { .. })
    ));
    let mut held = lines[0].clone();
    assert!(signature::verify_held("h.lic", &held, "LICSRV", &trusted).is_ok());
    held.host_ids.pop();
    assert!(signature::verify_held("h.lic", &held, "LICSRV", &trusted).is_err());
}
