//! End to end with a real SIP user agent: baresip (agent 1001's desk phone, see
//! `common/baresip.rs`) answers a queue call, then puts the caller on hold and resumes,
//! commanded over its `ctrl_tcp` socket — so the re-INVITEs (`a=sendonly`, then
//! `a=sendrecv`) are baresip's own, not a scripted SIPp scenario. The caller sends 1000 Hz
//! throughout and records what it hears; baresip sends 600 Hz from a WAV file:
//! - before the hold and after the resume the caller hears 600 Hz (two-way audio through the
//!   relay, Goertzel);
//! - while held it hears music (energy) and not baresip's 600 Hz.
//!
//! The phases are cut at the server's own log lines ("call on hold", "call resumed") with a
//! margin for the relay's next frame.
//!
//! Ports: RTP 48650-48699 (zentrale), 48720-48739 (baresip), 48762 (caller);
//! SIP 57020-57021 (baresip, TLS on +1), 57025 (the MD5-only proxy), 57026 (ctrl_tcp),
//! 57030 (caller).
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "common/baresip.rs"]
mod baresip;
mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baresip::{Baresip, Ports, write_tone_wav};
use common::Server;
use common::ua::{Caller, rms, talk, window};
use sip_gateway::audio::tone::detect;

const CALLER_SIP: u16 = 57030;
const CALLER_RTP: u16 = 48762;

#[test]
fn baresip_holds_the_caller_who_hears_music_then_resumes_two_way_audio() {
    let server = Server::start("baresip-hold", (48650, 48699));
    let dir = server.dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone-600.wav");
    write_tone_wav(&wav, 600.0, 40_000);
    let phone = Baresip::start(
        &dir,
        server.sip,
        "1001",
        "demo1001",
        Ports {
            sip: 57020,
            proxy: 57025,
            ctrl: 57026,
            rtp: (48720, 48739),
        },
        &wav,
    );
    phone.expect_log("[1 binding]", Duration::from_secs(20));

    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let answered = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let talker = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(20),
        stop.clone(),
    );

    std::thread::sleep(Duration::from_secs(2));
    let reply = phone.command("hold", "");
    if !phone.wait_log("a=sendonly", Duration::from_secs(5)) {
        phone.dump();
        panic!("baresip sent no sendonly re-INVITE; ctrl_tcp replied {reply:?}");
    }
    server.wait_for("call on hold");
    let held = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let reply = phone.command("resume", "");
    server.wait_for("call resumed");
    let resumed = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let heard = talker.join().unwrap();
    let ended = Instant::now();
    caller.bye();
    phone.expect_log("BYE sip:", Duration::from_secs(10));

    let margin = Duration::from_millis(400);
    let before = window(&heard, answered + margin, held);
    let on_hold = window(&heard, held + margin, resumed);
    let after = window(&heard, resumed + margin, ended);
    for (name, part) in [
        ("before hold", &before),
        ("on hold", &on_hold),
        ("after resume", &after),
    ] {
        if part.len() < 4000 {
            phone.dump();
            panic!("{name}: only {} samples heard", part.len());
        }
    }
    let agent = |s: &[i16]| detect(s, 600.0);
    eprintln!(
        "600 Hz before {:.4} on hold {:.4} after {:.4}; rms on hold {:.0}; resume reply {reply:?}",
        agent(&before),
        agent(&on_hold),
        agent(&after),
        rms(&on_hold)
    );
    assert!(
        agent(&before) > 0.01 && agent(&before) > 100.0 * detect(&before, 1000.0),
        "before hold the caller hears baresip's 600 Hz: {}",
        agent(&before)
    );
    assert!(
        agent(&after) > 0.01 && agent(&after) > 100.0 * detect(&after, 1000.0),
        "after resume the caller hears baresip's 600 Hz again: {}",
        agent(&after)
    );
    assert!(
        rms(&on_hold) > 300.0,
        "the held caller hears music (rms {})",
        rms(&on_hold)
    );
    assert!(
        agent(&on_hold) < agent(&before) / 20.0,
        "the held caller does not hear baresip (600 Hz {} vs {} before)",
        agent(&on_hold),
        agent(&before)
    );
    // After the hold's `sendonly`, baresip's resume re-INVITE offers `sendrecv` again.
    let log = phone.log();
    let hold_at = log.find("a=sendonly").unwrap();
    assert!(
        log[hold_at..].contains("a=sendrecv") && log.matches("INVITE sip:").count() >= 3,
        "baresip's trace shows the resume re-INVITE"
    );
}
