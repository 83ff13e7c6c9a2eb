//! End to end: blind transfer to an external number. A caller (the test's UA) calls the demo
//! queue; 1001's phone (SIPp, `transfer_refer.xml`) answers and REFERs the caller to
//! `sip:+4930888@zentrale`. zentrale answers 202, dials the number through the tenant's carrier
//! trunk (the test's own UA answers as the far end), NOTIFYs 200 and releases 1001 with a BYE.
//! The caller (1000 Hz) and the far end (1500 Hz) hear each other (Goertzel); the caller's
//! hang-up reaches the far end.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, talk, window};
use common::{Server, Sipp};
use sip_gateway::audio::tone::detect;

// Ports of this test (SIP 54095-54098, phone media 54017, far end 54039, caller 54059; the
// relay 46900-46999).
const PHONE1_SIP: u16 = 54095;
const PHONE1_REG: u16 = 54096;
const TRUNK_SIP: u16 = 54097;
const CALLER_SIP: u16 = 54098;
const PHONE1_RTP: u16 = 54017;
const TRUNK_RTP: u16 = 54039;
const CALLER_RTP: u16 = 54059;

#[test]
fn refer_to_a_number_bridges_the_caller_to_the_far_end_through_the_trunk() {
    let server = Server::start("xfer-number", (46900, 46999));
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

    let mut phone1 = Sipp::start(
        &server.dir,
        "agent-1001-refer-number",
        server.sip,
        "transfer_refer.xml",
        &[
            "-p",
            &PHONE1_SIP.to_string(),
            "-mp",
            &PHONE1_RTP.to_string(),
            "-key",
            "target",
            "+4930888",
            "-m",
            "1",
            "-timeout",
            "60",
        ],
    );
    common::register_from(&server, "1001", PHONE1_SIP, PHONE1_REG);

    // The far end answers zentrale's INVITE (OPTIONS probes on the same socket are ignored).
    let far_sip = trunk_sip.try_clone().unwrap();
    let far = std::thread::spawn(move || answer(&far_sip, TRUNK_RTP, Duration::from_secs(30)));
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(30),
        stop.clone(),
    );
    let answered = far.join().unwrap();
    let bridged = Instant::now();
    let ruri =
        String::from_utf8_lossy(&answered.invite.request_line().unwrap().uri_raw).into_owned();
    assert!(ruri.starts_with("sip:+4930888@"), "{ruri}");
    phone1.expect_success(Duration::from_secs(20));
    let heard_far = talk(
        UdpSocket::bind(("127.0.0.1", TRUNK_RTP)).unwrap(),
        answered.relay,
        1500.0,
        Duration::from_secs(3),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let heard_by_caller = caller_talk.join().unwrap();
    let ended = Instant::now();
    caller.bye();
    await_bye(&trunk_sip, Duration::from_secs(10));

    let far: Vec<i16> = heard_far
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    let caller_after = window(
        &heard_by_caller,
        bridged + Duration::from_millis(400),
        ended,
    );
    eprintln!(
        "far end hears 1000 Hz {:.4}; caller hears 1500 Hz {:.4}",
        detect(&far, 1000.0),
        detect(&caller_after, 1500.0)
    );
    assert!(far.len() >= 8000, "far end heard {} samples", far.len());
    assert!(detect(&far, 1000.0) > 0.01, "the far end hears the caller");
    assert!(
        detect(&caller_after, 1500.0) > 0.01,
        "the caller hears the far end"
    );
}
