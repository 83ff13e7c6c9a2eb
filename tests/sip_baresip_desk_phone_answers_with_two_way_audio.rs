//! End to end with a real SIP user agent: baresip is agent 1001's desk phone. It registers
//! with digest (zentrale challenges it: 401, then a REGISTER with `Authorization`), the caller
//! (the test's UA with a Rust RTP socket) dials the demo queue, baresip auto-answers and
//! sends a 600 Hz tone from a WAV file while the caller sends 1000 Hz. The caller must hear
//! 600 Hz (Goertzel, frame by frame), and what baresip received (dumped to WAV by its
//! `sndfile` module) must be 1000 Hz. The caller hangs up: baresip gets zentrale's BYE, and
//! both CDR legs land as answered by 1001.
//!
//! Ports: RTP 48600-48649 (zentrale), 48700-48719 (baresip), 48760 (caller);
//! SIP 57000-57001 (baresip, TLS on +1), 57005 (the MD5-only proxy, see
//! `common/baresip.rs`), 57006 (baresip's ctrl_tcp), 57010 (caller).
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "common/baresip.rs"]
mod baresip;
mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use baresip::{Baresip, Ports, write_tone_wav};
use common::caller_media::frame_tone;
use common::ua::{Caller, talk};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::tone::detect;

const CALLER_SIP: u16 = 57010;
const CALLER_RTP: u16 = 48760;

/// Polls `f` until it returns `Some` (bounded).
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "never saw {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn baresip_answers_a_queue_call_and_both_sides_hear_each_others_tone() {
    let server = Server::start("baresip-answer", (48600, 48649));
    let dir = server.dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone-600.wav");
    write_tone_wav(&wav, 600.0, 30_000);
    let mut phone = Baresip::start(
        &dir,
        server.sip,
        "1001",
        "demo1001",
        Ports {
            sip: 57000,
            proxy: 57005,
            ctrl: 57006,
            rtp: (48700, 48719),
        },
        &wav,
    );

    // Registered, after zentrale's digest challenge.
    phone.expect_log("[1 binding]", Duration::from_secs(20));
    let log = phone.log();
    let challenged = log.contains("SIP/2.0 401 Unauthorized")
        && log.contains("realm=\"demo.zentrale\"")
        && log.contains("Authorization: Digest username=\"1001\"");
    if !challenged || phone.challenges_seen() == 0 {
        phone.dump();
        panic!("baresip registered without a digest exchange");
    }

    // The caller dials the queue; baresip answers by itself.
    let caller = Caller::call(
        server.sip,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let heard = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(4),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .unwrap();
    let frames_600 = heard
        .iter()
        .filter(|(_, f)| frame_tone(f, &[600.0, 1000.0], 0.005) == Some(600.0))
        .count();
    eprintln!("caller: 600 Hz in {frames_600} of {} frames", heard.len());
    if frames_600 < 100 {
        phone.dump();
        panic!(
            "the caller heard baresip's 600 Hz in only {frames_600} of {} frames",
            heard.len()
        );
    }

    // Hang up: baresip gets the BYE (in its SIP trace) and ends the call.
    caller.bye();
    phone.expect_log("BYE sip:", Duration::from_secs(10));

    // What baresip received: the caller's 1000 Hz.
    let samples = phone.received_audio(Duration::from_secs(10));
    assert!(
        samples.len() >= 16_000,
        "baresip recorded only {} samples",
        samples.len()
    );
    // Skip the first half second (jitter buffer fill, the start of the stream).
    let body = &samples[4000..];
    let (p1000, p600) = (detect(body, 1000.0), detect(body, 600.0));
    assert!(
        p1000 > 0.01 && p1000 > 100.0 * p600,
        "baresip's recording: 1000 Hz {p1000}, 600 Hz {p600} ({} samples)",
        samples.len()
    );
    eprintln!(
        "baresip's recording: {} samples, 1000 Hz {p1000:.4}, 600 Hz {p600:.6}",
        samples.len()
    );

    // Both CDR legs: answered by 1001.
    let token = server.admin_token();
    let rows = poll("both CDR rows", Duration::from_secs(30), || {
        let (status, body) = http(&server.http, "GET", "/api/v1/cdrs", Some(&token), "");
        assert_eq!(status, 200, "{body}");
        let cdrs: Value = serde_json::from_str(&body).unwrap();
        let rows: Vec<Value> = cdrs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["caller"] == "+4930111222")
            .cloned()
            .collect();
        (rows.len() == 2).then_some(rows)
    });
    for leg in ["caller", "agent"] {
        let row = rows.iter().find(|r| r["leg"] == leg).unwrap();
        assert_eq!(row["result"], "answered", "{row}");
        assert_eq!(row["agent"], "1001", "{row}");
        assert_eq!(row["queue"], "support", "{row}");
        assert!(row["talk_ms"].as_i64().unwrap_or(0) >= 3000, "{row}");
    }
    assert_eq!(rows[0]["contact_id"], rows[1]["contact_id"]);
}
