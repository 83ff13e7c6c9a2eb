//! End to end: a queue whose escalation overflows to an external number. No agent is there,
//! so after a second the engine overflows the waiting call; zentrale dials the number through
//! trunk `1-primary` (a SIPp carrier that answers 503), fails over to `2-backup` (a SIPp
//! carrier that challenges the INVITE with 407, checks our Proxy-Authorization, and answers),
//! and bridges the caller to it. The caller (SIPp) hangs up; zentrale sends BYE to the carrier.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp};

const PRIMARY: u16 = 52011;
const BACKUP: u16 = 52012;
const CALLER: u16 = 52020;

#[test]
fn overflow_to_a_number_fails_over_from_a_503_trunk_to_one_that_demands_auth() {
    let server = Server::start("trunk-overflow", (44100, 44299));
    let local = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    let mut primary = Sipp::start(
        &server.dir,
        "primary",
        local(PRIMARY),
        "trunk_unavailable.xml",
        &["-p", &PRIMARY.to_string(), "-m", "2", "-timeout", "40"],
    );
    let mut backup = Sipp::start(
        &server.dir,
        "backup",
        local(BACKUP),
        "trunk_auth_answer.xml",
        &[
            "-p",
            &BACKUP.to_string(),
            "-mp",
            "44900",
            "-s",
            "4930999",
            "-m",
            "2",
            "-timeout",
            "40",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));

    let token = server.admin_token();
    for (name, body) in [
        (
            "1-primary",
            format!(r#"{{"host":"127.0.0.1","port":{PRIMARY}}}"#),
        ),
        (
            "2-backup",
            format!(
                r#"{{"host":"127.0.0.1","port":{BACKUP},"username":"acct2","password":"secret2"}}"#
            ),
        ),
    ] {
        let (status, resp) = common::http(
            &server.http,
            "PUT",
            &format!("/api/v1/routing/trunks/{name}"),
            Some(&token),
            &body,
        );
        assert!(status == 200 || status == 201, "{status} {resp}");
    }
    server.set_support_queue(
        r#"{"escalation":[{"after_s":1,"action":{"overflow_number":"+4930999"}}]}"#,
    );

    let mut caller = Sipp::start(
        &server.dir,
        "caller",
        server.sip,
        "carrier_call.xml",
        &[
            "-p",
            &CALLER.to_string(),
            "-mp",
            "44910",
            "-s",
            "100",
            "-d",
            "1500",
            "-m",
            "1",
            "-timeout",
            "40",
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    caller.expect_success(Duration::from_secs(50));
    server.wait_for("failing over to the next trunk");
    primary.expect_success(Duration::from_secs(50));
    backup.expect_success(Duration::from_secs(50));
    assert_eq!(
        primary.stat("SuccessfulCall(C)"),
        Some(2),
        "OPTIONS and the 503'd INVITE"
    );
    assert_eq!(
        backup.stat("SuccessfulCall(C)"),
        Some(2),
        "OPTIONS and the answered call"
    );
}
