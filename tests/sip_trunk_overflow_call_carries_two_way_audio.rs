//! End to end: two-way audio on an outbound leg. The demo queue overflows its waiting caller
//! to an external number after a second; the carrier trunk is the test's own UA, which answers
//! zentrale's INVITE. The caller sends a 1000 Hz tone, the far end 1500 Hz; each side must hear
//! the other's tone (Goertzel) once the overflow call is bridged through the relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use common::ua::{Caller, answer, await_bye, talk, window};
use sip_gateway::audio::tone::detect;

// Ports of this test (SIP 52050-52059; RTP 44400-44599, the relay's part 44400-44579).
const TRUNK_SIP: u16 = 52050;
const CALLER_SIP: u16 = 52051;
const TRUNK_RTP: u16 = 44590;
const CALLER_RTP: u16 = 44592;

#[test]
fn overflowed_caller_and_the_external_number_hear_each_other() {
    let server = Server::start("trunk-audio", (44400, 44579));
    let trunk_sip = UdpSocket::bind(("127.0.0.1", TRUNK_SIP)).unwrap();
    let token = server.admin_token();
    let (status, resp) = common::http(
        &server.http,
        "PUT",
        "/api/v1/routing/trunks/carrier",
        Some(&token),
        &format!(r#"{{"host":"127.0.0.1","port":{TRUNK_SIP}}}"#),
    );
    assert!(status == 200 || status == 201, "{status} {resp}");
    server.wait_for("trunk configured");
    server.set_support_queue(
        r#"{"escalation":[{"after_s":1,"action":{"overflow_number":"+4930888"}}]}"#,
    );

    // The far end answers zentrale's INVITE (OPTIONS probes on the same socket are ignored).
    let far_sip = trunk_sip.try_clone().unwrap();
    let far = std::thread::spawn(move || {
        let answered = answer(&far_sip, TRUNK_RTP, Duration::from_secs(30));
        (answered, Instant::now())
    });
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(30),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(20),
        stop.clone(),
    );
    let (answered, bridged) = far.join().unwrap();
    let ruri =
        String::from_utf8_lossy(&answered.invite.request_line().unwrap().uri_raw).into_owned();
    assert!(ruri.starts_with("sip:+4930888@"), "{ruri}");
    let far_talk = talk(
        UdpSocket::bind(("127.0.0.1", TRUNK_RTP)).unwrap(),
        answered.relay,
        1500.0,
        Duration::from_secs(20),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let heard_by_caller = caller_talk.join().unwrap();
    let heard_far = far_talk.join().unwrap();
    let ended = Instant::now();
    caller.bye();
    await_bye(&trunk_sip, Duration::from_secs(10));

    let margin = Duration::from_millis(400);
    let at_caller = window(&heard_by_caller, bridged + margin, ended);
    let at_far = window(&heard_far, bridged + margin, ended);
    assert!(
        at_caller.len() >= 8000,
        "caller heard {} samples",
        at_caller.len()
    );
    assert!(
        at_far.len() >= 8000,
        "far end heard {} samples",
        at_far.len()
    );
    eprintln!(
        "caller: 1500 Hz {:.4} (own 1000 Hz {:.4}); far end: 1000 Hz {:.4} (own 1500 Hz {:.4})",
        detect(&at_caller, 1500.0),
        detect(&at_caller, 1000.0),
        detect(&at_far, 1000.0),
        detect(&at_far, 1500.0)
    );
    assert!(
        detect(&at_caller, 1500.0) > 0.01,
        "the caller hears the far end's tone"
    );
    assert!(
        detect(&at_far, 1000.0) > 0.01,
        "the far end hears the caller's tone"
    );
}
