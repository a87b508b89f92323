//! End-to-end: `quiver check-config` as an admin runs it before deploying a change.

use std::process::Command;

use quiver_e2e::quiver_bin;

fn check_config(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiver.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = Command::new(quiver_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn a_valid_file_with_interpolation_passes() {
    let yaml = "server:\n  flight_listen: ${BIND:-127.0.0.1}:6001\nauth:\n  bootstrap_admin:\n    email: ${ADMIN}\n    password: ${PASS:?set PASS}\nquery:\n  timeout: 30s\n";
    let (ok, text) = check_config(
        yaml,
        &[("ADMIN", "ops@example.com"), ("PASS", "long enough pw")],
    );
    assert!(ok, "{text}");
    assert!(text.contains(": ok"), "{text}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let yaml = "server:\n  flight_listen: nowhere\n  colour: blue\nauth:\n  jwt_secret: short\n  token_lifetime: ${MISSING:?token lifetime please}\nquery:\n  batch_size: 0\nstorage:\n  object_store: ftp://files\n";
    let (ok, text) = check_config(yaml, &[]);
    assert!(!ok, "{text}");
    // Interpolation problems come first (the file cannot be parsed without them) ...
    assert!(
        text.contains("line 6: environment variable `MISSING` is required: token lifetime please"),
        "{text}"
    );
    let (ok, text) = check_config(
        &yaml.replace("${MISSING:?token lifetime please}", "1h"),
        &[],
    );
    assert!(!ok);
    // ... then every other problem, each with its key path.
    for needle in [
        "`server.flight_listen`: invalid socket address",
        "`server.colour`: unknown key",
        "`auth.jwt_secret`: is 5 characters long",
        "`query.batch_size`: 0 is out of range",
        "`storage.object_store`: `ftp://files` is not a supported object store URL",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn connector_problems_are_reported_with_the_config_level_ones() {
    let yaml = "query:\n  batch_size: 0\ntables:\n  - name: ops.kv\n    connector: files\n    options:\n      path: /x.csv\n      colour: red\n";
    let (ok, text) = check_config(yaml, &[]);
    assert!(!ok, "{text}");
    for needle in [
        "`query.batch_size`: 0 is out of range",
        "`tables[0].options.colour`: unknown field",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
