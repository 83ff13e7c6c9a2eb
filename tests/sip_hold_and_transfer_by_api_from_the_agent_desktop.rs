//! End to end: hold, resume and blind transfer asked by the agent desktop over HTTP
//! (`POST /api/v1/calls/{contact}/hold`, `/resume`, `/transfer {"agent":"1002"}`) with agent
//! 1001's own login, against the real binary. The caller sends 1000 Hz, 1001's phone 1300 Hz
//! and, after the transfer, 1002's phone 1700 Hz (all the test's UAs):
//! - before the hold the caller hears 1001; while held it hears music and not 1001 (no
//!   re-INVITE is sent to anyone: zentrale plays the music itself); after the resume it hears
//!   1001 again;
//! - the transfer rings 1002, which answers; the caller hears 1002 and 1002 hears the caller;
//!   1001's phone gets a BYE.
//!
//! Phases are cut at the moments the HTTP calls returned (204), with a margin for the relay's
//! next frame.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, rms, talk, window};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::tone::detect;

// Ports of this test (SIP 54080-54094; the relay 46800-46899).
const PHONE1_SIP: u16 = 54080;
const PHONE1_REG: u16 = 54081;
const CALLER_SIP: u16 = 54082;
const PHONE2_SIP: u16 = 54084;
const PHONE2_REG: u16 = 54085;
const PHONE1_RTP: u16 = 54090;
const CALLER_RTP: u16 = 54092;
const PHONE2_RTP: u16 = 54094;

fn login(server: &Server, user: &str, password: &str) -> String {
    let (status, body) = http(
        &server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"tenant":"demo","username":"{user}","password":"{password}"}}"#),
    );
    assert_eq!(status, 200, "login {user}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Polls the agent's call list until its call is connected; returns the contact id.
fn connected_call(server: &Server, token: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http(&server.http, "GET", "/api/v1/calls", Some(token), "");
        assert_eq!(status, 200, "{body}");
        let calls: Value = serde_json::from_str(&body).unwrap();
        if let Some(c) = calls
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["phase"] == "connected" && c["agent"] == "1001")
        {
            return c["contact"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < until,
            "the call never showed connected: {calls}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn post(server: &Server, token: &str, path: &str, body: &str) -> Instant {
    let (status, resp) = http(&server.http, "POST", path, Some(token), body);
    assert_eq!(status, 204, "POST {path}: {resp}");
    Instant::now()
}

#[test]
fn agent_desktop_holds_resumes_and_transfers_to_a_colleague() {
    let server = Server::start("hold-api", (46800, 46899));
    let token = login(&server, "1001", "demo1001");

    let phone1 = UdpSocket::bind(("127.0.0.1", PHONE1_SIP)).unwrap();
    common::register_from(&server, "1001", PHONE1_SIP, PHONE1_REG);
    let agent1 = thread::spawn(move || {
        let call = answer(&phone1, PHONE1_RTP, Duration::from_secs(30));
        (phone1, call)
    });
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let (phone1, leg1) = agent1.join().unwrap();
    let stop1 = Arc::new(AtomicBool::new(false));
    let talk1 = talk(
        UdpSocket::bind(("127.0.0.1", PHONE1_RTP)).unwrap(),
        leg1.relay,
        1300.0,
        Duration::from_secs(30),
        stop1.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(30),
        stop.clone(),
    );
    let contact = connected_call(&server, &token);
    let t_connected = Instant::now();

    // Two seconds of talk, two on hold, two after the resume (durations of speech, not waits
    // for a condition).
    thread::sleep(Duration::from_secs(2));
    let t_hold = post(
        &server,
        &token,
        &format!("/api/v1/calls/{contact}/hold"),
        "",
    );
    thread::sleep(Duration::from_secs(2));
    let t_resume = post(
        &server,
        &token,
        &format!("/api/v1/calls/{contact}/resume"),
        "",
    );
    thread::sleep(Duration::from_secs(2));

    // 1002 comes online and the desktop transfers the caller to it.
    let phone2 = UdpSocket::bind(("127.0.0.1", PHONE2_SIP)).unwrap();
    common::register_from(&server, "1002", PHONE2_SIP, PHONE2_REG);
    let agent2 = thread::spawn(move || {
        let call = answer(&phone2, PHONE2_RTP, Duration::from_secs(30));
        let heard = talk(
            UdpSocket::bind(("127.0.0.1", PHONE2_RTP)).unwrap(),
            call.relay,
            1700.0,
            Duration::from_secs(3),
            Arc::new(AtomicBool::new(false)),
        )
        .join()
        .unwrap();
        (phone2, heard)
    });
    let t_transfer = post(
        &server,
        &token,
        &format!("/api/v1/calls/{contact}/transfer"),
        r#"{"agent":"1002"}"#,
    );
    server.wait_for("transfer connected");
    let t_moved = Instant::now();
    await_bye(&phone1, Duration::from_secs(10));
    stop1.store(true, Ordering::Relaxed);
    let heard_by_1001 = talk1.join().unwrap();
    let (phone2, heard_by_1002) = agent2.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let heard = caller_talk.join().unwrap();
    caller.bye();
    await_bye(&phone2, Duration::from_secs(10));

    let m = Duration::from_millis(400);
    let before = window(&heard, t_connected + m, t_hold);
    let held = window(&heard, t_hold + m, t_resume);
    let resumed = window(&heard, t_resume + m, t_transfer);
    let after = window(&heard, t_moved + m, Instant::now());
    let to_1002: Vec<i16> = heard_by_1002
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    let agent_heard_on_hold = window(&heard_by_1001, t_hold + m, t_resume);
    eprintln!(
        "caller hears 1300 Hz: before {:.4}, held {:.4} (rms {:.0}), resumed {:.4}; 1700 Hz after transfer {:.4}; 1002 hears 1000 Hz {:.4}; 1001 hears 1000 Hz on hold {:.5}",
        detect(&before, 1300.0),
        detect(&held, 1300.0),
        rms(&held),
        detect(&resumed, 1300.0),
        detect(&after, 1700.0),
        detect(&to_1002, 1000.0),
        detect(&agent_heard_on_hold, 1000.0),
    );
    for (name, part) in [
        ("before", &before),
        ("held", &held),
        ("resumed", &resumed),
        ("after", &after),
    ] {
        assert!(part.len() >= 4000, "{name}: only {} samples", part.len());
    }
    assert!(
        detect(&before, 1300.0) > 0.01,
        "the caller hears 1001 before the hold"
    );
    assert!(rms(&held) > 300.0, "the held caller hears music");
    assert!(
        detect(&held, 1300.0) < detect(&before, 1300.0) / 20.0,
        "the held caller does not hear 1001"
    );
    assert!(
        detect(&agent_heard_on_hold, 1000.0) < 0.001,
        "1001 does not hear the held caller"
    );
    assert!(
        detect(&resumed, 1300.0) > 0.01,
        "the caller hears 1001 after the resume"
    );
    assert!(
        detect(&after, 1700.0) > 0.01,
        "the caller hears 1002 after the transfer"
    );
    assert!(detect(&to_1002, 1000.0) > 0.01, "1002 hears the caller");

    // The CDR: 1001's leg ended as transferred to 1002, the call then went on with 1002.
    let rows = server.wait_cdrs(&contact, |rows| {
        rows.iter()
            .any(|r| r.0 == "caller" && r.2.as_deref() == Some("1002"))
    });
    assert!(
        rows.iter().any(|r| r.1 == "transferred"
            && r.2.as_deref() == Some("1001")
            && r.3.as_deref() == Some("blind:1002")),
        "{rows:?}"
    );
}
