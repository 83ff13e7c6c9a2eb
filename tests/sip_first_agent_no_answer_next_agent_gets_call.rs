//! End to end: the agent idle longest (1001) lets the phone ring; when acd-core's offer times
//! out, zentrale cancels the ringing phone and the next agent (1002) gets the call and answers.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Server, Sipp, agent_phone};

#[test]
fn unanswered_offer_moves_on_to_the_next_agent() {
    let server = Server::start("noanswer", (41200, 41399));
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":0,"offer_timeout_s":2}"#);
    // 1001 logs in first, so it has been idle longest and is offered first.
    let mut silent = agent_phone(&server, "1001", "agent_no_answer.xml", 1);
    std::thread::sleep(Duration::from_millis(500));
    let _answering = agent_phone(&server, "1002", "agent_answer.xml", 10);
    std::thread::sleep(Duration::from_millis(300));

    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut caller = Sipp::start(
        &server.dir,
        "caller",
        server.sip,
        "carrier_call.xml",
        &[
            "-p", &port, "-mp", &media, "-s", "100", "-d", "300", "-m", "1", "-timeout", "40",
        ],
    );
    caller.expect_success(Duration::from_secs(60));
    // 1001's phone rang and was cancelled.
    silent.expect_success(Duration::from_secs(20));
    let log = server.wait_queue_log("the connect", |log| log.iter().any(|(e, _)| e == "connect"));
    let offers: Vec<_> = log
        .iter()
        .filter(|(e, _)| e == "offer")
        .map(|(_, a)| a.clone().unwrap_or_default())
        .collect();
    assert_eq!(offers.first().map(String::as_str), Some("1001"), "{log:?}");
    let connected: Vec<_> = log.iter().filter(|(e, _)| e == "connect").collect();
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0].1.as_deref(), Some("1002"), "{log:?}");
}
