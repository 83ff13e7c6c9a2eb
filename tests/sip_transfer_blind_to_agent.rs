//! End to end: blind transfer from agent 1001 to agent 1002 by REFER. A caller (the test's
//! UA) calls the demo queue; 1001's phone (SIPp, `transfer_refer.xml`) answers and, three
//! seconds later, sends `REFER` with `Refer-To: <sip:1002@zentrale>`; it must see `202`,
//! `NOTIFY` 100 Trying and 200 OK, and zentrale's BYE. 1002's phone (the test's UA, registered
//! with digest only after the call reached 1001 so the first offer cannot go to it) gets the
//! INVITE, answers, and the two talk: 1002 hears the caller's 1000 Hz tone and the caller
//! hears 1002's 1700 Hz tone. The caller's hang-up reaches 1002 as a BYE. The queue log shows
//! the engine following: 1001's `complete`, the `assign` to 1002, 1002's `complete` at the end.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, talk, window};
use common::{Server, Sipp};
use sip_gateway::audio::tone::detect;

// Ports of this test (SIP 54020-54039; the relay 46200-46399).
const PHONE1_SIP: u16 = 54020;
const PHONE1_REG: u16 = 54021;
const PHONE2_SIP: u16 = 54022;
const PHONE2_REG: u16 = 54023;
const CALLER_SIP: u16 = 54024;
const PHONE1_RTP: u16 = 54030;
const PHONE2_RTP: u16 = 54036;
const CALLER_RTP: u16 = 54038;

#[test]
fn refer_to_an_extension_connects_the_caller_with_that_agent() {
    let server = Server::start("xfer-agent", (46200, 46399));
    let mut phone1 = Sipp::start(
        &server.dir,
        "agent-1001-refer",
        server.sip,
        "transfer_refer.xml",
        &[
            "-p",
            &PHONE1_SIP.to_string(),
            "-mp",
            &PHONE1_RTP.to_string(),
            "-rtp_echo",
            "-key",
            "target",
            "1002",
            "-m",
            "1",
            "-timeout",
            "60",
        ],
    );
    common::register_from(&server, "1001", PHONE1_SIP, PHONE1_REG);

    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let answered = Instant::now();
    // 1002 comes online now; 1001's phone refers to it 3 s after answering.
    let phone2_sip = UdpSocket::bind(("127.0.0.1", PHONE2_SIP)).unwrap();
    common::register_from(&server, "1002", PHONE2_SIP, PHONE2_REG);
    let phone2 = thread::spawn(move || {
        let call = answer(&phone2_sip, PHONE2_RTP, Duration::from_secs(30));
        let rtp = UdpSocket::bind(("127.0.0.1", PHONE2_RTP)).unwrap();
        let heard = talk(
            rtp,
            call.relay,
            1700.0,
            Duration::from_secs(3),
            Arc::new(AtomicBool::new(false)),
        )
        .join()
        .unwrap();
        await_bye(&phone2_sip, Duration::from_secs(20));
        (Instant::now(), heard)
    });

    let rtp = UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let talker = talk(
        rtp,
        caller.relay,
        1000.0,
        Duration::from_secs(20),
        stop.clone(),
    );
    server.wait_for("transfer connected");
    let connected = Instant::now();
    phone1.expect_success(Duration::from_secs(20));
    // Let the new pair talk (1002 talks 3 s), then hang up.
    thread::sleep(Duration::from_millis(2500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let heard_by_caller = talker.join().unwrap();
    caller.bye();
    let (_, heard_by_1002) = phone2.join().unwrap();
    // The routing engine follows: 1001's conversation completes (wrap-up), the contact is
    // assigned to 1002, and the caller's hang-up completes 1002's conversation.
    server.wait_queue_log("1001's complete, 1002's assign and complete", |log| {
        let at = |ev: &str, who: &str| {
            log.iter()
                .position(|(e, a)| e == ev && a.as_deref() == Some(who))
        };
        matches!(
            (at("complete", "1001"), at("assign", "1002"), at("complete", "1002")),
            (Some(a), Some(b), Some(c)) if a < b && b < c
        )
    });

    let margin = Duration::from_millis(400);
    let after = window(&heard_by_caller, connected + margin, Instant::now());
    let before = window(&heard_by_caller, answered + margin, connected);
    let to_1002: Vec<i16> = heard_by_1002
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    eprintln!(
        "1002 hears 1000 Hz {:.4} (1700 Hz {:.4}); caller hears 1700 Hz {:.4} after, {:.5} before",
        detect(&to_1002, 1000.0),
        detect(&to_1002, 1700.0),
        detect(&after, 1700.0),
        detect(&before, 1700.0)
    );
    assert!(
        after.len() >= 8000,
        "caller heard {} samples after the transfer",
        after.len()
    );
    assert!(
        to_1002.len() >= 8000,
        "1002 heard {} samples",
        to_1002.len()
    );
    assert!(
        detect(&to_1002, 1000.0) > 0.01
            && detect(&to_1002, 1000.0) > 100.0 * detect(&to_1002, 1700.0),
        "1002 hears the caller: 1000 Hz {}, 1700 Hz {}",
        detect(&to_1002, 1000.0),
        detect(&to_1002, 1700.0)
    );
    assert!(
        detect(&after, 1700.0) > 0.01,
        "the caller hears 1002 after the transfer: {}",
        detect(&after, 1700.0)
    );
    assert!(
        detect(&before, 1700.0) < 0.001,
        "the caller did not hear 1002 before: {}",
        detect(&before, 1700.0)
    );
}
