//! A second tenant next to the demo one: provisioned with `zentrale provision --create-tenant
//! --sip-passwords` before the server starts, loaded at start (no routing change needed), and
//! its agent's phone (SIPp) is challenged in that tenant's realm `beta.zentrale` and registers
//! with the provisioned password; the demo tenant's password for the same phone is refused.
//!
//! Ports: RTP 47400-47449, SIPp sockets 55020-55029.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, Sipp};

/// The realm-checking REGISTER scenario, for another realm (written next to the server).
fn scenario_for(server: &Server, base: &str, realm: &str) -> String {
    let text = std::fs::read_to_string(common::scenario(base)).unwrap();
    let text = text.replace("demo\\.zentrale", &realm.replace('.', "\\."));
    let path = server.dir.join(format!("{realm}-{base}"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn register(server: &Server, scenario: &str, ext: &str, password: &str, port: u16) -> Sipp {
    Sipp::start(
        &server.dir,
        &format!("reg-{ext}-{port}"),
        server.sip,
        scenario,
        &[
            "-p",
            &port.to_string(),
            "-s",
            ext,
            "-au",
            ext,
            "-ap",
            password,
            "-key",
            "contact_port",
            &(port + 5).to_string(),
            "-key",
            "expires",
            "600",
            "-m",
            "1",
            "-timeout",
            "20",
        ],
    )
}

fn provision_beta(data: &Path) {
    let dir = data.parent().unwrap();
    let config = dir.join("provision.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", data.display())).unwrap();
    let routing = dir.join("beta-routing.toml");
    std::fs::write(
        &routing,
        "[queues.sales]\n[agents.7001]\nqueues = [\"sales\"]\n",
    )
    .unwrap();
    let passwords = dir.join("beta-sip.toml");
    std::fs::write(
        &passwords,
        "[agents.7001]\npassword = \"beta-phone-7001\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zentrale"))
        .arg("provision")
        .arg(&routing)
        .args(["--tenant", "beta", "--create-tenant", "--config"])
        .arg(&config)
        .arg("--sip-passwords")
        .arg(&passwords)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_provisioned_tenants_phone_registers_in_that_tenants_realm() {
    let server = Server::start_prepared("sip-credentials-beta", (47400, 47449), "", provision_beta);
    let beta_ok = scenario_for(&server, "register_checks_realm.xml", "beta.zentrale");
    let beta_wrong = scenario_for(&server, "register_wrong_password.xml", "beta.zentrale");

    register(&server, &beta_ok, "7001", "beta-phone-7001", 55020)
        .expect_success(Duration::from_secs(30));
    // The right password for the wrong tenant's realm is no password here.
    register(&server, &beta_wrong, "7001", "demo1001", 55021)
        .expect_success(Duration::from_secs(30));
    // The demo tenant is unaffected and keeps its own realm.
    register(
        &server,
        "register_checks_realm.xml",
        "1001",
        "demo1001",
        55022,
    )
    .expect_success(Duration::from_secs(30));
}
