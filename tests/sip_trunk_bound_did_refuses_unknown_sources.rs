//! End to end: a DID bound to a trunk (`dids.<number>.trunk`) is reached only by calls from
//! that trunk's address. A carrier call from another source IP gets 403; the same call from
//! the trunk's IP (SIPp bound to 127.0.0.7) is taken into the queue.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp};

const TRUNK_PORT: u16 = 52031;
const STRANGER_PORT: u16 = 52030;

#[test]
fn a_trunk_bound_did_is_refused_from_an_unknown_source_and_served_from_the_trunk() {
    let server = Server::start("trunk-source", (44300, 44399));
    let token = server.admin_token();
    for (path, body) in [
        (
            "/api/v1/routing/trunks/carrier7".to_owned(),
            format!(r#"{{"host":"127.0.0.7","port":{TRUNK_PORT}}}"#),
        ),
        (
            "/api/v1/routing/dids/+4930777".to_owned(),
            r#"{"trunk":"carrier7","target":{"queue":"support"}}"#.to_owned(),
        ),
    ] {
        let (status, resp) = common::http(&server.http, "PUT", &path, Some(&token), &body);
        assert!(status == 200 || status == 201, "{path}: {status} {resp}");
        server.wait_for("routing configuration applied live");
    }
    server.wait_for("trunk configured");

    let mut stranger = Sipp::start(
        &server.dir,
        "stranger",
        server.sip,
        "trunk_call_forbidden.xml",
        &[
            "-p",
            &STRANGER_PORT.to_string(),
            "-mp",
            "44390",
            "-s",
            "+4930777",
            "-m",
            "1",
            "-timeout",
            "20",
        ],
    );
    stranger.expect_success(Duration::from_secs(30));
    server.wait_for("INVITE to a trunk-bound DID from another source");

    // The same DID from the trunk's own address is taken (the demo queue answers with music
    // while the caller waits); the caller hangs up after a while.
    let mut carrier = Sipp::start(
        &server.dir,
        "trunk",
        server.sip,
        "carrier_call.xml",
        &[
            "-i",
            "127.0.0.7",
            "-p",
            &TRUNK_PORT.to_string(),
            "-mp",
            "44392",
            "-s",
            "+4930777",
            "-d",
            "500",
            "-m",
            "1",
            "-timeout",
            "20",
        ],
    );
    carrier.expect_success(Duration::from_secs(30));
}
