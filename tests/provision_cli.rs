//! `zentrale provision`: a routing file from version control lands in a tenant's database,
//! bad files are refused with the place of the error, and nothing is created by accident.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("zentrale-provision-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("zentrale.toml"),
        format!("data_dir = \"{}\"\n", dir.join("data").display()),
    )
    .unwrap();
    dir
}

fn provision(dir: &Path, file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zentrale"))
        .arg("provision")
        .arg(file)
        .arg("--config")
        .arg(dir.join("zentrale.toml"))
        .args(extra)
        .output()
        .unwrap()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn provisioning_an_example_creates_the_tenant_and_its_queues() {
    let dir = temp_dir("ok");
    let out = provision(
        &dir,
        &example("helpdesk.toml"),
        &["--tenant", "acme", "--create-tenant"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("provisioned tenant 'acme'"), "{stdout}");
    assert!(stdout.contains("2 queues"), "{stdout}");
    // Applying the same file again is an idempotent replace, not an error.
    let again = provision(&dir, &example("helpdesk.toml"), &["--tenant", "acme"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_tenant_is_not_created_without_being_asked() {
    let dir = temp_dir("unknown");
    let out = provision(&dir, &example("helpdesk.toml"), &["--tenant", "nobody"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no tenant 'nobody'"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_routing_file_is_refused_with_its_name() {
    let dir = temp_dir("bad");
    let file = dir.join("routing.toml");
    std::fs::write(&file, "[queues.support]\nstrategy = \"fastest_finger\"\n").unwrap();
    let out = provision(&dir, &file, &["--tenant", "acme", "--create-tenant"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routing.toml"), "{stderr}");
    assert!(
        stderr.contains("fastest_finger") || stderr.contains("strategy"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
