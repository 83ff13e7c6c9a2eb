//! End to end: a caller hangs up while waiting in the queue (no agent logged in) and another
//! while the agent's phone rings. Both abandons are in the queue log, the ringing phone gets a
//! CANCEL, the agent is not left reserved, and the next call is answered by that agent.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp, agent_phone};

fn abandoning_caller(server: &Server, name: &str, wait_ms: &str) -> Sipp {
    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    Sipp::start(
        &server.dir,
        name,
        server.sip,
        "carrier_abandon.xml",
        &[
            "-p", &port, "-mp", &media, "-s", "100", "-d", wait_ms, "-m", "1", "-timeout", "30",
        ],
    )
}

#[test]
fn abandon_in_queue_and_while_ringing_is_recorded_and_frees_the_agent() {
    let server = Server::start("abandon", (41000, 41199));
    // A queue without media: callers hear ringback and abandon with CANCEL (the demo queue
    // answers at once with music; abandoning it is a BYE, see sip-gateway's queue_media tests).
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":10,"service_level_s":20}"#);

    // Nobody logged in: the call waits, then the caller gives up.
    abandoning_caller(&server, "abandon-queued", "1000").expect_success(Duration::from_secs(40));
    server.wait_queue_log("the first abandon", |log| {
        log.iter().filter(|(e, _)| e == "abandon").count() == 1
    });

    // Agent 1001's phone rings and is not picked up; the caller gives up meanwhile.
    let mut ringing = agent_phone(&server, "1001", "agent_no_answer.xml", 1);
    std::thread::sleep(Duration::from_millis(300));
    abandoning_caller(&server, "abandon-ringing", "1500").expect_success(Duration::from_secs(40));
    // The phone saw INVITE, then CANCEL, and acknowledged the 487.
    ringing.expect_success(Duration::from_secs(20));
    let log = server.wait_queue_log("the second abandon", |log| {
        log.iter().filter(|(e, _)| e == "abandon").count() == 2
    });
    assert!(
        log.iter()
            .any(|(e, a)| e == "offer" && a.as_deref() == Some("1001")),
        "{log:?}"
    );

    // The same agent, now answering (same extension, new phone process), takes the next call.
    drop(ringing);
    let _answering = agent_phone(&server, "1001", "agent_answer.xml", 10);
    std::thread::sleep(Duration::from_millis(300));
    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut caller = Sipp::start(
        &server.dir,
        "caller-after",
        server.sip,
        "carrier_call.xml",
        &[
            "-p", &port, "-mp", &media, "-s", "100", "-d", "200", "-m", "1", "-timeout", "40",
        ],
    );
    caller.expect_success(Duration::from_secs(60));
    let log = server.wait_queue_log("the answered call", |log| {
        log.iter()
            .any(|(e, a)| e == "connect" && a.as_deref() == Some("1001"))
    });
    assert_eq!(
        log.iter().filter(|(e, _)| e == "connect").count(),
        1,
        "{log:?}"
    );
}
