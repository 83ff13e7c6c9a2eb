//! End to end: an admin adds a trunk with `register = true` over the routing API; zentrale
//! registers at the carrier (SIPp as the carrier's registrar, which challenges with 401 and
//! verifies the digest of the second REGISTER before it answers 200) and probes it with
//! OPTIONS. The carrier sees both; zentrale logs the registration.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp};

const CARRIER_PORT: u16 = 52001;

#[test]
fn zentrale_registers_at_the_carrier_with_digest_and_probes_it_with_options() {
    let server = Server::start("trunk-register", (44000, 44099));
    let carrier_addr = format!("127.0.0.1:{CARRIER_PORT}").parse().unwrap();
    // The registrar: one REGISTER dialog (401, then 200 for valid credentials) and one
    // OPTIONS probe, so two "calls" for SIPp.
    let mut carrier = Sipp::start(
        &server.dir,
        "carrier-registrar",
        carrier_addr,
        "trunk_registrar.xml",
        &["-p", &CARRIER_PORT.to_string(), "-m", "2", "-timeout", "30"],
    );
    std::thread::sleep(Duration::from_millis(200));

    let token = server.admin_token();
    let (status, body) = common::http(
        &server.http,
        "PUT",
        "/api/v1/routing/trunks/carrier1",
        Some(&token),
        &format!(
            r#"{{"host":"127.0.0.1","port":{CARRIER_PORT},"username":"acct1","password":"secret1","register":true}}"#
        ),
    );
    assert!(status == 200 || status == 201, "{status} {body}");

    let line = server.wait_for("registered at the carrier");
    assert!(line.contains("carrier1"), "{line}");
    assert!(
        line.contains("granted=600"),
        "the carrier's expiry is used: {line}"
    );
    carrier.expect_success(Duration::from_secs(40));
    assert_eq!(
        carrier.stat("SuccessfulCall(C)"),
        Some(2),
        "REGISTER and OPTIONS"
    );
    assert_eq!(carrier.stat("FailedCall(C)"), Some(0));
}
