//! End to end: SIGTERM during a call. zentrale stops taking new calls (503), lets the call in
//! progress finish normally, and then exits successfully.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, Sipp, agent_phone};

#[test]
fn sigterm_refuses_new_calls_and_waits_for_calls_in_progress() {
    let mut server = Server::start("shutdown", (41800, 41999));
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":0}"#);
    let _phone = agent_phone(&server, "1001", "agent_answer.xml", 5);
    std::thread::sleep(Duration::from_millis(300));

    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut long_call = Sipp::start(
        &server.dir,
        "long-call",
        server.sip,
        "carrier_call.xml",
        &[
            "-p", &port, "-mp", &media, "-s", "100", "-d", "4000", "-m", "1", "-timeout", "40",
        ],
    );
    server.wait_queue_log("the call connected", |log| {
        log.iter().any(|(e, _)| e == "connect")
    });

    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_for("no new calls");

    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut refused = Sipp::start(
        &server.dir,
        "refused",
        server.sip,
        "carrier_refused.xml",
        &[
            "-p", &port, "-mp", &media, "-s", "100", "-m", "1", "-timeout", "20",
        ],
    );
    refused.expect_success(Duration::from_secs(30));
    assert!(
        server.alive(),
        "the server must wait for the call in progress"
    );

    long_call.expect_success(Duration::from_secs(30));
    let exit = server.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "exit status {exit:?}");
}
