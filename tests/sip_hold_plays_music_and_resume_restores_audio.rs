//! End to end: hold and resume from the agent's phone. A caller (the test's own UA) calls the
//! demo queue; agent 1001's phone (SIPp, `hold_agent.xml`, echoing RTP) answers, puts the
//! caller on hold with a `sendonly` re-INVITE and resumes with `sendrecv`. The caller sends a
//! 1000 Hz tone throughout and records what it hears:
//! - before the hold and after the resume it hears its own tone back (echoed by the phone
//!   through both directions of the relay): two-way audio;
//! - while held it hears music (energy) and not its own tone (the holding phone hears nothing,
//!   so it has nothing to echo).
//!
//! The phases are cut at the server's own log lines ("call on hold", "call resumed"), with a
//! margin for the relay's next frame, so nothing depends on guessed timings.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::ua::{Caller, rms, talk, window};
use common::{Server, Sipp};
use sip_gateway::audio::tone::detect;

// Ports of this test (SIP 54000-54019; the relay 46000-46199).
const PHONE_SIP: u16 = 54000;
const PHONE_REG: u16 = 54001;
const CALLER_SIP: u16 = 54002;
const PHONE_RTP: u16 = 54010;
const CALLER_RTP: u16 = 54016;

#[test]
fn held_caller_hears_music_and_two_way_audio_returns_after_resume() {
    let server = Server::start("hold", (46000, 46199));
    let mut phone = Sipp::start(
        &server.dir,
        "agent-1001-hold",
        server.sip,
        "hold_agent.xml",
        &[
            "-p",
            &PHONE_SIP.to_string(),
            "-mp",
            &PHONE_RTP.to_string(),
            "-rtp_echo",
            "-m",
            "1",
            "-timeout",
            "60",
        ],
    );
    common::register_from(&server, "1001", PHONE_SIP, PHONE_REG);

    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let rtp = UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap();
    let answered = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let talker = talk(
        rtp,
        caller.relay,
        1000.0,
        Duration::from_secs(12),
        stop.clone(),
    );

    server.wait_for("call on hold");
    let held = Instant::now();
    server.wait_for("call resumed");
    let resumed = Instant::now();
    // Two more seconds of talk after the resume, then hang up.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let heard = talker.join().unwrap();
    let ended = Instant::now();
    caller.bye();
    phone.expect_success(Duration::from_secs(20));

    let margin = Duration::from_millis(400);
    let before = window(&heard, answered + margin, held);
    let on_hold = window(&heard, held + margin, resumed);
    let after = window(&heard, resumed + margin, ended);
    for (name, part) in [
        ("before hold", &before),
        ("on hold", &on_hold),
        ("after resume", &after),
    ] {
        assert!(
            part.len() >= 4000,
            "{name}: only {} samples heard",
            part.len()
        );
    }
    let own = |s: &[i16]| detect(s, 1000.0);
    eprintln!(
        "1000 Hz before {:.4} on hold {:.4} after {:.4}; rms on hold {:.0}",
        own(&before),
        own(&on_hold),
        own(&after),
        rms(&on_hold)
    );
    assert!(
        own(&before) > 0.01,
        "before hold the caller hears its tone echoed: {}",
        own(&before)
    );
    assert!(
        own(&after) > 0.01,
        "after resume the caller hears its tone echoed again: {}",
        own(&after)
    );
    assert!(
        rms(&on_hold) > 300.0,
        "the held caller hears music (rms {})",
        rms(&on_hold)
    );
    assert!(
        own(&on_hold) < own(&before) / 20.0,
        "the held caller does not hear the agent's side (1000 Hz {} vs {} before)",
        own(&on_hold),
        own(&before)
    );
}
