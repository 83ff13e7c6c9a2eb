//! End to end: the dial-out half of a callback. A caller waiting in the demo queue is offered
//! a callback (escalation after a second), presses 1 and is hung up; the contact keeps its
//! place. When agent 1001's phone (SIPp, echoing RTP) registers, the engine reserves the agent
//! and emits DialCallback: zentrale dials the caller's number through the tenant's trunk (the
//! test's own UA as the carrier/customer), and once the customer answers it rings the agent.
//! The customer's 1000 Hz tone comes back through the agent's echo (two-way audio through the
//! relay), the queue log shows the agent connected, and the customer's BYE ends the agent leg.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::caller_media::{MediaCaller, classify, put_routing, tone_wav, write_prompt};
use common::ua::{answer, header, in_dialog, recv_sip, talk, window};
use common::{Server, Sipp};
use sip_gateway::audio::tone::detect;
use sip_gateway::sip::HeaderName;

// Ports of this test (SIP 52060-52069; RTP 44600-44799, the relay's part 44600-44779).
const TRUNK_SIP: u16 = 52060;
const CALLER_SIP: u16 = 52061;
const AGENT_SIP: u16 = 52062;
const AGENT_REG: u16 = 52063;
const CALLER_RTP: u16 = 44780;
const AGENT_RTP: u16 = 44790;
const CUSTOMER_RTP: u16 = 44796;
const OFFER_PROMPT: f64 = 1300.0;

#[test]
fn callback_dials_the_customer_through_the_trunk_then_rings_the_reserved_agent() {
    let server = Server::start_prepared("trunk-callback", (44600, 44779), "", |data| {
        write_prompt(
            data,
            "en",
            "press_1_callback",
            &tone_wav(OFFER_PROMPT, 1500),
        );
    });
    let trunk_sip = UdpSocket::bind(("127.0.0.1", TRUNK_SIP)).unwrap();
    put_routing(
        &server,
        &[
            (
                "trunks",
                "carrier",
                &format!(r#"{{"host":"127.0.0.1","port":{TRUNK_SIP}}}"#),
            ),
            (
                "queues",
                "support",
                r#"{"strategy":"longest_idle","wrap_up_s":0,"escalation":[{"after_s":1,"action":"offer_callback"}],"media":{"music":"hold_music","language":"en"}}"#,
            ),
        ],
    );

    // The caller asks for a callback and is hung up.
    let caller = MediaCaller::call(server.sip, "100", CALLER_SIP, CALLER_RTP);
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    while classify(&heard, &[OFFER_PROMPT])
        .iter()
        .filter(|(_, t)| t.is_some())
        .count()
        < 10
    {
        assert!(Instant::now() < until, "the callback offer never played");
        heard.extend(caller.listen(Duration::from_millis(200)));
    }
    caller.rtp_digit('1');
    caller.await_bye(Duration::from_secs(15));

    // An agent comes: its phone answers and echoes what it hears.
    let mut agent = Sipp::start(
        &server.dir,
        "agent-1001",
        server.sip,
        "agent_answer.xml",
        &[
            "-p",
            &AGENT_SIP.to_string(),
            "-mp",
            &AGENT_RTP.to_string(),
            "-rtp_echo",
            "-m",
            "1",
            "-timeout",
            "60",
        ],
    );
    common::register_from(&server, "1001", AGENT_SIP, AGENT_REG);

    // zentrale calls the customer back through the trunk.
    std::thread::sleep(Duration::from_secs(3));
    common::caller_media::dump_log(&server, "");
    let customer = answer(&trunk_sip, CUSTOMER_RTP, Duration::from_secs(30));
    let ruri =
        String::from_utf8_lossy(&customer.invite.request_line().unwrap().uri_raw).into_owned();
    assert!(ruri.starts_with("sip:+4930555666@"), "dialled {ruri}");
    let stop = Arc::new(AtomicBool::new(false));
    let talker = talk(
        UdpSocket::bind(("127.0.0.1", CUSTOMER_RTP)).unwrap(),
        customer.relay,
        1000.0,
        Duration::from_secs(20),
        stop.clone(),
    );
    server.wait_queue_log("the agent connected to the callback", |log| {
        log.iter()
            .any(|(e, a)| e == "connect" && a.as_deref() == Some("1001"))
    });
    let connected = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let heard = talker.join().unwrap();
    let ended = Instant::now();

    // The customer hangs up; the agent's phone gets BYE and ends its scenario.
    in_dialog(&trunk_sip, server.sip, &customer.invite, "BYE", 2, "", "");
    recv_sip(
        &trunk_sip,
        Duration::from_secs(10),
        |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("BYE"),
        "the 200 to the customer's BYE",
    );
    agent.expect_success(Duration::from_secs(20));

    let talk_part = window(&heard, connected + Duration::from_millis(400), ended);
    assert!(
        talk_part.len() >= 4000,
        "customer heard {} samples",
        talk_part.len()
    );
    let echo = detect(&talk_part, 1000.0);
    eprintln!("customer hears its tone through the agent's echo: {echo:.4}");
    assert!(echo > 0.01, "two-way audio customer ↔ agent: {echo}");
}
