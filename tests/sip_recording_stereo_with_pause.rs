//! End to end: a queue that records every call writes a stereo WAV — the caller on the left,
//! the agent on the right — and a pause asked for by the agent over the API (a card number
//! being read) is a silent stretch of the file and a pause in the CDR.
//!
//! The real `zentrale serve --demo` with the demo queue switched to `media.record = true`
//! over the routing API; the caller (500 Hz) and agent 1001's phone (1000 Hz, registered by
//! SIPp with digest) are Rust UAs from `common::ua` sending paced PCMU. The file is found
//! through the CDR (`recording`, `recording_ms`, `quality.recording_pauses_ms`) and read back
//! sample by sample: Goertzel per channel before and after the pause, energy inside it.
//! Also: agent 1002 cannot pause 1001's call (404: not theirs to see), and an agent cannot
//! start or stop recordings (403). A second test records one call of a queue that does not
//! record, started and stopped by a supervisor's API request.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, talk};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::tone::detect;

// Ports of these tests: SIP and the UAs' RTP in 56050-56099, the relay in 48000-48499 (split
// between the two tests, which run side by side).
const AGENT_SIP: u16 = 56050;
const AGENT_REG: u16 = 56051;
const CALLER_SIP: u16 = 56052;
const CALLER_RTP: u16 = 56060;
const AGENT_RTP: u16 = 56062;

const CALLER_HZ: f64 = 500.0;
const AGENT_HZ: f64 = 1000.0;

fn login(server: &Server, user: &str, password: &str) -> String {
    let (status, body) = http(
        &server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"tenant":"demo","username":"{user}","password":"{password}"}}"#),
    );
    assert_eq!(status, 200, "login {user}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A 16-bit PCM WAV file: (channels, sample rate, interleaved samples).
fn read_wav(bytes: &[u8]) -> Option<(u16, u32, Vec<i16>)> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let (mut fmt, mut data) = (None, None);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                let bits = u16::from_le_bytes([body[14], body[15]]);
                fmt = Some((channels, rate, bits));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    let (channels, rate, bits) = fmt?;
    if bits != 16 {
        return None;
    }
    let samples = data?
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some((channels, rate, samples))
}

fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

#[test]
fn recording_has_caller_left_agent_right_and_a_silent_pause() {
    let server = Server::start("recording", (48000, 48249));
    server.set_support_queue(
        r#"{"strategy":"longest_idle","media":{"record":true,"recording_retention_days":30}}"#,
    );
    let agent = login(&server, "1001", "demo1001");
    let colleague = login(&server, "1002", "demo1002");
    let admin = server.admin_token();

    let agent_sip = UdpSocket::bind(("127.0.0.1", AGENT_SIP)).unwrap();
    common::register_from(&server, "1001", AGENT_SIP, AGENT_REG);
    let phone = std::thread::spawn(move || {
        let a = answer(&agent_sip, AGENT_RTP, Duration::from_secs(30));
        (agent_sip, a)
    });
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(30),
    );
    let (agent_sip, agent_leg) = phone.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        CALLER_HZ,
        Duration::from_secs(40),
        stop.clone(),
    );
    let agent_talk = talk(
        UdpSocket::bind(("127.0.0.1", AGENT_RTP)).unwrap(),
        agent_leg.relay,
        AGENT_HZ,
        Duration::from_secs(40),
        stop.clone(),
    );

    // The agent sees their call, recorded since the answer.
    let (status, body) = http(&server.http, "GET", "/api/v1/calls", Some(&agent), "");
    assert_eq!(status, 200, "{body}");
    let calls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(calls[0]["recording"], "on", "{calls}");
    let contact = calls[0]["contact"].as_str().unwrap().to_owned();
    let rec = |what: &str, token: &str| {
        http(
            &server.http,
            "POST",
            &format!("/api/v1/calls/{contact}/recording/{what}"),
            Some(token),
            "",
        )
    };
    assert_eq!(rec("pause", &colleague).0, 404, "not the colleague's call");
    assert_eq!(rec("stop", &agent).0, 403, "agents cannot stop recordings");
    assert_eq!(rec("start", &agent).0, 403, "nor start them");
    let (status, body) = rec("start", &admin);
    assert_eq!(status, 409, "already recording: {body}");
    assert!(body.contains("already being recorded"), "{body}");

    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = rec("pause", &agent);
    assert_eq!(status, 204, "{body}");
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&agent), "");
    assert!(body.contains(r#""recording":"paused""#), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = rec("resume", &agent);
    assert_eq!(status, 204, "{body}");
    std::thread::sleep(Duration::from_secs(2));

    stop.store(true, Ordering::Relaxed);
    let agent_bye = std::thread::spawn(move || await_bye(&agent_sip, Duration::from_secs(10)));
    caller.bye();
    agent_bye.join().unwrap();
    caller_talk.join().unwrap();
    agent_talk.join().unwrap();

    // The CDR names the file, its length and the pause.
    let until = Instant::now() + Duration::from_secs(20);
    let cdr = loop {
        let (status, body) = http(&server.http, "GET", "/api/v1/cdrs", Some(&admin), "");
        assert_eq!(status, 200, "{body}");
        let rows: Value = serde_json::from_str(&body).unwrap();
        let row = rows.as_array().unwrap().iter().find(|r| {
            r["contact_id"] == contact.as_str()
                && r["leg"] == "caller"
                && r["recording"].is_string()
        });
        if let Some(row) = row {
            break row.clone();
        }
        assert!(Instant::now() < until, "no CDR with a recording: {rows}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let path = cdr["recording"].as_str().unwrap().to_owned();
    assert!(
        path.contains("/recordings/") && path.ends_with(&format!("{contact}.wav")),
        "{path}"
    );
    let recorded_ms = cdr["recording_ms"].as_i64().unwrap();
    let pauses = cdr["quality"]["recording_pauses_ms"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{cdr}");
    let (p0, p1) = (
        pauses[0][0].as_i64().unwrap(),
        pauses[0][1].as_i64().unwrap(),
    );
    assert!((1_500..3_500).contains(&p0), "pause starts ~2 s in: {p0}");
    assert!(
        (1_500..2_600).contains(&(p1 - p0)),
        "the pause lasts ~2 s: {p0}..{p1}"
    );
    assert!(recorded_ms >= 5_500, "{recorded_ms}");

    // The file: complete once the recording thread has finished it.
    let until = Instant::now() + Duration::from_secs(20);
    let (channels, rate, samples) = loop {
        if let Ok(bytes) = std::fs::read(&path)
            && let Some(wav) = read_wav(&bytes)
            && wav.2.len() >= 2 * 8000 * 5
        {
            break wav;
        }
        assert!(Instant::now() < until, "no complete WAV at {path}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((channels, rate), (2, 8000));
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let ms = |t: i64| usize::try_from(t.max(0)).unwrap() * 8;
    let cut =
        |ch: &[i16], from: i64, to: i64| ch[ms(from).min(ch.len())..ms(to).min(ch.len())].to_vec();
    let end = i64::try_from(left.len() / 8).unwrap();

    // Before and after the pause: caller left, agent right, not mixed.
    for (name, from, to) in [("before", 400, p0 - 300), ("after", p1 + 300, end - 300)] {
        let (l, r) = (cut(&left, from, to), cut(&right, from, to));
        assert!(l.len() >= 4000 && r.len() >= 4000, "{name}: too short");
        let (l_caller, l_agent) = (detect(&l, CALLER_HZ), detect(&l, AGENT_HZ));
        let (r_caller, r_agent) = (detect(&r, CALLER_HZ), detect(&r, AGENT_HZ));
        eprintln!(
            "{name}: left 500 Hz {l_caller:.4} 1000 Hz {l_agent:.6}; right 500 Hz {r_caller:.6} 1000 Hz {r_agent:.4}"
        );
        assert!(
            l_caller > 0.01,
            "{name}: the caller is on the left ({l_caller})"
        );
        assert!(
            r_agent > 0.01,
            "{name}: the agent is on the right ({r_agent})"
        );
        assert!(
            l_agent < l_caller / 100.0,
            "{name}: no agent on the left ({l_agent})"
        );
        assert!(
            r_caller < r_agent / 100.0,
            "{name}: no caller on the right ({r_caller})"
        );
    }
    // Inside the pause: silence on both channels.
    let (l, r) = (
        cut(&left, p0 + 200, p1 - 200),
        cut(&right, p0 + 200, p1 - 200),
    );
    assert!(l.len() >= 8000, "pause window too short");
    eprintln!("pause: rms left {:.1} right {:.1}", rms(&l), rms(&r));
    assert!(rms(&l) < 50.0 && rms(&r) < 50.0, "the pause is silent");

    // The audit log records who paused and resumed.
    let (_, body) = http(&server.http, "GET", "/api/v1/audit", Some(&admin), "");
    let audit: Value = serde_json::from_str(&body).unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == "call" && r["actor"] == "1001")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["recording_pause", "recording_resume"], "{audit}");
}

/// A supervisor (here the admin) records one call of a queue that does not record: the
/// file holds exactly the stretch between start and stop, caller left, agent right.
#[test]
fn a_call_of_a_queue_that_does_not_record_is_recorded_on_request() {
    const AGENT_SIP: u16 = 56070;
    const AGENT_REG: u16 = 56071;
    const CALLER_SIP: u16 = 56072;
    const CALLER_RTP: u16 = 56080;
    const AGENT_RTP: u16 = 56082;
    let server = Server::start("recording-api", (48250, 48499));
    server.set_support_queue(r#"{"strategy":"longest_idle"}"#);
    let admin = server.admin_token();
    let agent_sip = UdpSocket::bind(("127.0.0.1", AGENT_SIP)).unwrap();
    common::register_from(&server, "1001", AGENT_SIP, AGENT_REG);
    let phone = std::thread::spawn(move || {
        let a = answer(&agent_sip, AGENT_RTP, Duration::from_secs(30));
        (agent_sip, a)
    });
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(30),
    );
    let (agent_sip, agent_leg) = phone.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        CALLER_HZ,
        Duration::from_secs(40),
        stop.clone(),
    );
    let agent_talk = talk(
        UdpSocket::bind(("127.0.0.1", AGENT_RTP)).unwrap(),
        agent_leg.relay,
        AGENT_HZ,
        Duration::from_secs(40),
        stop.clone(),
    );

    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&admin), "");
    let calls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        calls[0]["recording"], "off",
        "this queue does not record: {calls}"
    );
    let contact = calls[0]["contact"].as_str().unwrap().to_owned();
    let rec = |what: &str| {
        http(
            &server.http,
            "POST",
            &format!("/api/v1/calls/{contact}/recording/{what}"),
            Some(&admin),
            "",
        )
    };
    let (status, body) = rec("stop");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not being recorded"), "{body}");
    let (status, body) = rec("start");
    assert_eq!(status, 204, "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = rec("stop");
    assert_eq!(status, 204, "{body}");
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&admin), "");
    assert!(body.contains(r#""recording":"off""#), "{body}");
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::Relaxed);
    let agent_bye = std::thread::spawn(move || await_bye(&agent_sip, Duration::from_secs(10)));
    caller.bye();
    agent_bye.join().unwrap();
    caller_talk.join().unwrap();
    agent_talk.join().unwrap();

    let until = Instant::now() + Duration::from_secs(20);
    let cdr = loop {
        let (_, body) = http(&server.http, "GET", "/api/v1/cdrs", Some(&admin), "");
        let rows: Value = serde_json::from_str(&body).unwrap();
        let row = rows.as_array().unwrap().iter().find(|r| {
            r["contact_id"] == contact.as_str()
                && r["leg"] == "caller"
                && r["recording"].is_string()
        });
        if let Some(row) = row {
            break row.clone();
        }
        assert!(Instant::now() < until, "no CDR with a recording: {rows}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let recorded_ms = cdr["recording_ms"].as_i64().unwrap();
    assert!(
        (1_500..3_000).contains(&recorded_ms),
        "about 2 s recorded: {recorded_ms}"
    );
    assert!(
        cdr["quality"]["recording_pauses_ms"].is_null(),
        "no pause: {cdr}"
    );
    let path = cdr["recording"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(20);
    let (channels, _, samples) = loop {
        if let Ok(bytes) = std::fs::read(&path)
            && let Some(wav) = read_wav(&bytes)
            && wav.2.len() >= 2 * 8000
        {
            break wav;
        }
        assert!(Instant::now() < until, "no complete WAV at {path}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(channels, 2);
    let seconds = samples.len() as f64 / 2.0 / 8000.0;
    assert!(
        (1.5..3.0).contains(&seconds),
        "the file holds what was asked: {seconds} s"
    );
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let (l, r) = (
        &left[3200..left.len() - 1600],
        &right[3200..right.len() - 1600],
    );
    assert!(detect(l, CALLER_HZ) > 0.01 && detect(l, AGENT_HZ) < detect(l, CALLER_HZ) / 100.0);
    assert!(detect(r, AGENT_HZ) > 0.01 && detect(r, CALLER_HZ) < detect(r, AGENT_HZ) / 100.0);
}
