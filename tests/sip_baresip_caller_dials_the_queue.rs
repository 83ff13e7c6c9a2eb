//! End to end with a real SIP user agent as the *caller*: baresip (not registered, an
//! outside number `+4930222333`, see `common/baresip.rs`) dials the demo queue over its
//! `ctrl_tcp` socket (`dial sip:100@<zentrale>`); agent 1001's phone (registered with digest by
//! SIPp, its call taken by the test's UA) answers. baresip sends 600 Hz from a WAV file, the
//! agent 1700 Hz: the agent must hear 600 Hz (Goertzel on its RTP) and what baresip received
//! (its `sndfile` dump) must be 1700 Hz. Then baresip hangs up (`hangup`): its BYE reaches
//! the agent through zentrale, and both CDR legs land as answered by 1001.
//!
//! Ports: RTP 48740-48759 (zentrale), 48764-48779 (baresip), 48790 (agent phone);
//! SIP 57040-57041 (baresip, TLS on +1), 57045 (unused proxy), 57046 (ctrl_tcp),
//! 57050 (agent phone), 57051 (its SIPp REGISTER).
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
use common::ua::{answer, await_bye, talk};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::tone::detect;

const PHONE_SIP: u16 = 57050;
const PHONE_REG: u16 = 57051;
const PHONE_RTP: u16 = 48790;

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
fn baresip_calls_the_queue_and_the_agent_hears_it_both_ways() {
    let server = Server::start("baresip-caller", (48740, 48759));
    let phone = UdpSocket::bind(("127.0.0.1", PHONE_SIP)).unwrap();
    common::register_from(&server, "1001", PHONE_SIP, PHONE_REG);

    let dir = server.dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone-600.wav");
    write_tone_wav(&wav, 600.0, 30_000);
    let mut caller = Baresip::start_account(
        &dir,
        server.sip,
        "<sip:+4930222333@127.0.0.1>;regint=0;audio_codecs=PCMU,PCMA",
        Ports {
            sip: 57040,
            proxy: 57045,
            ctrl: 57046,
            rtp: (48764, 48779),
        },
        &wav,
    );
    caller.expect_log("baresip is ready", Duration::from_secs(10));
    let reply = caller.command("dial", &format!("sip:100@{}", server.sip));

    let answered = answer(&phone, PHONE_RTP, Duration::from_secs(20));
    let heard = talk(
        UdpSocket::bind(("127.0.0.1", PHONE_RTP)).unwrap(),
        answered.relay,
        1700.0,
        Duration::from_secs(4),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .unwrap();
    let frames_600 = heard
        .iter()
        .filter(|(_, f)| frame_tone(f, &[600.0, 1700.0], 0.005) == Some(600.0))
        .count();
    eprintln!(
        "agent: 600 Hz in {frames_600} of {} frames; dial reply {reply:?}",
        heard.len()
    );
    if frames_600 < 100 {
        caller.dump();
        panic!(
            "the agent heard baresip's 600 Hz in only {frames_600} of {} frames",
            heard.len()
        );
    }

    // baresip hangs up; its BYE reaches the agent's phone through zentrale.
    caller.command("hangup", "");
    await_bye(&phone, Duration::from_secs(10));

    let samples = caller.received_audio(Duration::from_secs(10));
    assert!(
        samples.len() >= 16_000,
        "baresip recorded only {} samples",
        samples.len()
    );
    let body = &samples[4000..];
    let (p1700, p600) = (detect(body, 1700.0), detect(body, 600.0));
    eprintln!(
        "baresip's recording: {} samples, 1700 Hz {p1700:.4}, 600 Hz {p600:.6}",
        samples.len()
    );
    assert!(
        p1700 > 0.01 && p1700 > 100.0 * p600,
        "baresip's recording: 1700 Hz {p1700}, 600 Hz {p600}"
    );

    let token = server.admin_token();
    let rows = poll("both CDR rows", Duration::from_secs(30), || {
        let (status, body) = http(&server.http, "GET", "/api/v1/cdrs", Some(&token), "");
        assert_eq!(status, 200, "{body}");
        let cdrs: Value = serde_json::from_str(&body).unwrap();
        let rows: Vec<Value> = cdrs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["caller"]
                    .as_str()
                    .is_some_and(|c| c.contains("4930222333"))
            })
            .cloned()
            .collect();
        (rows.len() == 2).then_some(rows)
    });
    for leg in ["caller", "agent"] {
        let row = rows.iter().find(|r| r["leg"] == leg).unwrap();
        assert_eq!(row["result"], "answered", "{row}");
        assert_eq!(row["agent"], "1001", "{row}");
        assert_eq!(row["queue"], "support", "{row}");
    }
}
