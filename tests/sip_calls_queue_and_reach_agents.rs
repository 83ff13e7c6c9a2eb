//! End to end: a carrier probes with OPTIONS (200); two SIP desk phones (SIPp) register the demo agents 1001 and 1002 with digest;
//! a carrier (SIPp) places 200 calls to the demo queue, more at once than there are agents, so
//! calls wait in the queue and are answered one after another. Zero failed calls, and the
//! queue log shows every call connected.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp, agent_phone};

#[test]
fn two_hundred_queued_calls_are_all_answered_by_registered_agents() {
    let server = Server::start("calls", (40000, 40999));
    // A carrier's health probes first: OPTIONS gets 200.
    let port = common::free_udp_port().to_string();
    Sipp::start(
        &server.dir,
        "options",
        server.sip,
        "options.xml",
        &["-p", &port, "-m", "20", "-r", "20", "-timeout", "20"],
    )
    .expect_success(Duration::from_secs(30));
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":0}"#);
    let _a1 = agent_phone(&server, "1001", "agent_answer.xml", 1000);
    let _a2 = agent_phone(&server, "1002", "agent_answer.xml", 1000);
    std::thread::sleep(Duration::from_millis(300));

    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut carrier = Sipp::start(
        &server.dir,
        "carrier",
        server.sip,
        "carrier_call.xml",
        &[
            "-p",
            &port,
            "-mp",
            &media,
            "-s",
            "+4930123456",
            "-d",
            "100",
            "-m",
            "200",
            "-r",
            "40",
            "-l",
            "8",
            "-timeout",
            "120",
        ],
    );
    carrier.expect_success(Duration::from_secs(150));
    assert_eq!(carrier.stat("SuccessfulCall(C)"), Some(200));
    assert_eq!(carrier.stat("FailedCall(C)"), Some(0));

    let log = server.wait_queue_log("200 completed calls", |log| {
        log.iter().filter(|(e, _)| e == "complete").count() >= 200
    });
    let connects = log.iter().filter(|(e, _)| e == "connect").count();
    assert_eq!(connects, 200, "{log:?}");
    for agent in ["1001", "1002"] {
        assert!(
            log.iter()
                .any(|(e, a)| e == "connect" && a.as_deref() == Some(agent)),
            "agent {agent} took no call"
        );
    }
}
