//! `zentrale provision --sip-passwords`: agents' SIP passwords from a file (kept out of version
//! control) land as digest HA1 for the tenant's realm; a bad entry is refused naming the agent
//! and the field, and the password never appears in the output.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crm_api::sip_credentials::{Ha1, load_credentials};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "zentrale-sip-provision-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("zentrale.toml"),
        format!("data_dir = \"{}\"\n", dir.join("data").display()),
    )
    .unwrap();
    dir
}

fn provision(dir: &Path, passwords: &str) -> Output {
    let file = dir.join("sip-passwords.toml");
    std::fs::write(&file, passwords).unwrap();
    Command::new(env!("CARGO_BIN_EXE_zentrale"))
        .arg("provision")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/helpdesk.toml"))
        .arg("--config")
        .arg(dir.join("zentrale.toml"))
        .args(["--tenant", "acme", "--create-tenant", "--sip-passwords"])
        .arg(&file)
        .output()
        .unwrap()
}

fn credentials(dir: &Path) -> Vec<crm_api::sip_credentials::SipCredential> {
    let url = format!(
        "sqlite://{}?mode=ro",
        dir.join("data/zentrale.db").display()
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = crm_api::Store::open(&url).await.unwrap();
            let t = store.tenant_by_slug("acme").await.unwrap().unwrap();
            let t = crm_api::ids::TenantId::parse(&t.id).unwrap();
            let c = load_credentials(&store, t).await.unwrap();
            store.close().await;
            c
        })
}

#[test]
fn sip_passwords_from_a_file_are_stored_as_ha1_of_the_tenant_realm() {
    let dir = temp_dir("ok");
    let out = provision(
        &dir,
        "[agents.anna]\npassword = \"anna-desk-phone\"\nextension = \"3001\"\n\n[agents.ben]\npassword = \"ben-desk-phone\"\nextension = \"3002\"\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("SIP passwords set for 2 agents"),
        "{stdout}"
    );
    assert!(!stdout.contains("anna-desk-phone") && !stderr.contains("anna-desk-phone"));
    let creds = credentials(&dir);
    assert_eq!(creds.len(), 2);
    let anna = creds.iter().find(|c| c.agent == "anna").unwrap();
    assert_eq!(anna.extension, "3001");
    assert_eq!(anna.realm, "acme.zentrale");
    assert_eq!(
        anna.ha1,
        Ha1::derive("3001", "acme.zentrale", "anna-desk-phone")
    );
}

#[test]
fn a_bad_entry_is_refused_naming_the_agent_and_the_field() {
    for (file, needle) in [
        (
            "[agents.anna]\npassword = \"short\"\nextension = \"3001\"\n",
            "agents.anna.password",
        ),
        (
            "[agents.anna]\npassword = \"long-enough-pw\"\n",
            "agents.anna.extension",
        ),
        (
            "[agents.nobody]\npassword = \"long-enough-pw\"\nextension = \"3009\"\n",
            "agents.nobody",
        ),
        ("[agents.anna]\npasword = \"typo\"\n", "pasword"),
    ] {
        let dir = temp_dir("bad");
        let out = provision(&dir, file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(stderr.contains(needle), "{file}: {stderr}");
        assert!(!stderr.contains("long-enough-pw"), "{stderr}");
    }
}
