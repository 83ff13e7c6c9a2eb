//! An admin gives a new agent a SIP password over HTTP on a running `serve --demo`; a SIPp
//! phone then registers with it (200), a wrong password is challenged again (401), and every
//! challenge names the tenant's own digest realm (`demo.zentrale`; `zentrale` for extensions no
//! tenant owns). The demo agents' seeded
//! passwords (stored as HA1 like any other) still work.
//!
//! Ports: RTP 47000-47499, SIPp sockets 55000-55099.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, Sipp, http};

const NEEDLE: &str = "SIP model updated";

/// One SIPp REGISTER transaction pair as `extension` with `password`, from `local_port`.
fn register(
    server: &Server,
    scenario: &str,
    extension: &str,
    password: &str,
    local_port: u16,
) -> Sipp {
    Sipp::start(
        &server.dir,
        &format!("{scenario}-{extension}-{local_port}"),
        server.sip,
        scenario,
        &[
            "-p",
            &local_port.to_string(),
            "-s",
            extension,
            "-au",
            extension,
            "-ap",
            password,
            "-key",
            "contact_port",
            &(local_port + 50).to_string(),
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

#[test]
fn sip_password_set_over_http_registers_and_the_realm_is_the_tenants() {
    let server = Server::start("sip-credentials", (47000, 47499));
    let token = server.admin_token();

    // A new agent in the demo tenant, then its SIP password.
    let updates = server.count_lines(NEEDLE);
    let (status, body) = http(
        &server.http,
        "PUT",
        "/api/v1/routing/agents/2001",
        Some(&token),
        r#"{"queues": ["support"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    server.wait_for_more(NEEDLE, updates);

    // Before a password is set, the phone cannot register (and its extension belongs to no
    // tenant yet, so the challenge names the node's default realm).
    let mut early = register(
        &server,
        "register_unknown_extension.xml",
        "2001",
        "e2e-secret-2001",
        55001,
    );
    early.expect_success(Duration::from_secs(30));

    let updates = server.count_lines(NEEDLE);
    let (status, body) = http(
        &server.http,
        "PUT",
        "/api/v1/routing/agents/2001/sip",
        Some(&token),
        r#"{"password": "e2e-secret-2001"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("e2e-secret-2001"), "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["extension"], "2001");
    assert_eq!(info["realm"], "demo.zentrale");
    // Live: the gateway's model is replaced without a restart.
    server.wait_for_more(NEEDLE, updates);

    let mut ok = register(
        &server,
        "register_checks_realm.xml",
        "2001",
        "e2e-secret-2001",
        55002,
    );
    ok.expect_success(Duration::from_secs(30));

    let mut wrong = register(
        &server,
        "register_wrong_password.xml",
        "2001",
        "not-the-password",
        55003,
    );
    wrong.expect_success(Duration::from_secs(30));

    // The seeded demo phone, stored as HA1 by the demo seed, registers in the same realm.
    let mut demo = register(
        &server,
        "register_checks_realm.xml",
        "1001",
        "demo1001",
        55004,
    );
    demo.expect_success(Duration::from_secs(30));

    // The audit log has the change, never the secret.
    let (status, audit) = http(
        &server.http,
        "GET",
        "/api/v1/audit?limit=200",
        Some(&token),
        "",
    );
    assert_eq!(status, 200, "{audit}");
    assert!(audit.contains("agent_sip"), "{audit}");
    assert!(!audit.contains("e2e-secret-2001"));

    // A changed password takes over at once: the old one is refused, the new one accepted.
    let updates = server.count_lines(NEEDLE);
    let (status, body) = http(
        &server.http,
        "PUT",
        "/api/v1/routing/agents/2001/sip",
        Some(&token),
        r#"{"password": "e2e-changed-2001"}"#,
    );
    assert_eq!(status, 200, "{body}");
    server.wait_for_more(NEEDLE, updates);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut old = register(
        &server,
        "register_wrong_password.xml",
        "2001",
        "e2e-secret-2001",
        55005,
    );
    old.expect_success(deadline.saturating_duration_since(Instant::now()));
    let mut new = register(
        &server,
        "register_checks_realm.xml",
        "2001",
        "e2e-changed-2001",
        55006,
    );
    new.expect_success(deadline.saturating_duration_since(Instant::now()));
}
