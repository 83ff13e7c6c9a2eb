//! End to end: a supervisor whispers to the agent, then barges in, through the API.
//!
//! The real `zentrale serve --demo`; three real SIP/RTP peers over UDP, each a Rust UA from
//! `common::ua` sending its own tone as paced PCMU and recording what it hears (SIPp cannot
//! tell one tone from another, Goertzel can): the caller (500 Hz) dials the demo queue, agent
//! 1001's phone (1000 Hz, registered by SIPp with digest) answers, and the supervisor — a new
//! user `chef` with role supervisor and agent id 1002, whose phone (1800 Hz) is registered as
//! 1002 — asks `POST /api/v1/calls/{contact}/monitor {"mode":"whisper"}`. zentrale rings the
//! supervisor's phone and joins it as the third leg. Then:
//! - whisper: the agent hears the supervisor and the caller; the caller hears the agent and
//!   NOT the supervisor; the supervisor hears both;
//! - after `{"mode":"barge"}`: the caller hears the supervisor too;
//! - the supervisor presses 1 on the phone (RFC 4733): listen — nobody hears them any more;
//! - the supervisor hanging up (BYE) restores the plain bridge and the call goes on; monitoring
//!   again and then the caller hanging up releases agent and supervisor (BYE to both);
//! - rights: agent 1001 may not monitor (403); the admin of another tenant gets 404 for this
//!   call and sees none of this tenant's calls.
//!
//! Phases are cut at the moments the API answered (plus a margin for the worker's next frames
//! and the jitter buffer), never at guessed sleeps.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, header, is, recv_sip, respond, sdp_rtp, talk, window};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::dtmf::{Digit, DtmfSender};
use sip_gateway::audio::tone::detect;
use sip_gateway::sip::{HeaderName, Message};

// Ports of this test: SIP and the UAs' RTP in 56000-56049, the relay in 47500-47999.
const AGENT_SIP: u16 = 56000;
const AGENT_REG: u16 = 56001;
const CALLER_SIP: u16 = 56002;
const SUP_SIP: u16 = 56003;
const SUP_REG: u16 = 56004;
const CALLER_RTP: u16 = 56010;
const AGENT_RTP: u16 = 56012;
const SUP_RTP: u16 = 56014;

const CALLER_HZ: f64 = 500.0;
const AGENT_HZ: f64 = 1000.0;
const SUP_HZ: f64 = 1800.0;

fn login(server: &Server, tenant: &str, user: &str, password: &str) -> String {
    let (status, body) = http(
        &server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"tenant":"{tenant}","username":"{user}","password":"{password}"}}"#),
    );
    assert_eq!(status, 200, "login {user}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A second tenant with an admin, written into the server's database (there is no API to
/// create tenants).
fn other_tenant(server: &Server) {
    let url = format!("sqlite://{}", server.db_path().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = crm_api::Store::open(&url).await.unwrap();
        let now = chrono::Utc::now();
        let t = store.create_tenant("rival", "Rival AG", now).await.unwrap();
        crm_api::auth::create_user(
            &store,
            t,
            &crm_api::auth::NewUser {
                username: "boss".into(),
                display_name: "Boss".into(),
                password: "rival-password".into(),
                role: crm_api::auth::Role::Admin,
                agent: None,
                provider_id: None,
            },
            now,
        )
        .await
        .unwrap();
        store.close().await;
    });
}

/// A PCMU + telephone-event (101) SDP receiving at 127.0.0.1:`port`.
fn sdp_with_events(port: u16) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    )
}

/// The supervisor's phone sends BYE in the dialog zentrale's INVITE opened; waits for the 200.
fn hang_up_supervisor(sock: &UdpSocket, server: std::net::SocketAddr, invite: &Message) {
    let me = sock.local_addr().unwrap();
    let target = header(invite, &HeaderName::Contact)
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsupbye;rport\r\nMax-Forwards: 70\r\nFrom: {};tag=uaside\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header(invite, &HeaderName::To),
        header(invite, &HeaderName::From),
        header(invite, &HeaderName::CallId),
    );
    sock.send_to(bye.as_bytes(), server).unwrap();
    recv_sip(
        sock,
        Duration::from_secs(10),
        |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("BYE"),
        "the 200 to the supervisor's BYE",
    );
}

/// One key press as RFC 4733 packets (payload type 101), paced every 20 ms.
fn press(sock: &UdpSocket, to: std::net::SocketAddr, digit: Digit) {
    let mut sender = DtmfSender::new(digit, 0x4000_0000, 120, 10);
    let start = Instant::now();
    let mut seq: u16 = 0x7000;
    while let Some(p) = sender.poll_packet() {
        let at = start + Duration::from_millis(u64::from(p.send_offset_ms));
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let mut pkt = vec![0x80, if p.marker { 0x80 | 101 } else { 101 }];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&p.rtp_timestamp.to_be_bytes());
        pkt.extend_from_slice(&0x0000_d7d7u32.to_be_bytes());
        pkt.extend_from_slice(&p.payload);
        sock.send_to(&pkt, to).unwrap();
        seq = seq.wrapping_add(1);
    }
}

/// Strength of `hz` in what was heard between `from` and `to` (0 when nothing arrived).
fn heard(h: &common::ua::Heard, from: Instant, to: Instant, hz: f64) -> f64 {
    let w = window(h, from, to);
    assert!(
        w.len() >= 4000,
        "only {} samples heard in the window",
        w.len()
    );
    detect(&w, hz)
}

#[test]
fn whisper_reaches_only_the_agent_and_barge_reaches_the_caller() {
    let server = Server::start("supervisor", (47500, 47999));
    let admin = server.admin_token();
    let (status, body) = http(
        &server.http,
        "POST",
        "/api/v1/users",
        Some(&admin),
        r#"{"username":"chef","display_name":"Chefin","password":"chef-password","role":"supervisor","agent":"1002"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let chef = login(&server, "demo", "chef", "chef-password");
    let agent_token = login(&server, "demo", "1001", "demo1001");

    // Agent 1001's phone answers the caller.
    let agent_sip = UdpSocket::bind(("127.0.0.1", AGENT_SIP)).unwrap();
    common::register_from(&server, "1001", AGENT_SIP, AGENT_REG);
    let agent_phone = std::thread::spawn(move || {
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
    let (agent_sip, agent_leg) = agent_phone.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs(40);
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        CALLER_HZ,
        limit,
        stop.clone(),
    );
    let agent_talk = talk(
        UdpSocket::bind(("127.0.0.1", AGENT_RTP)).unwrap(),
        agent_leg.relay,
        AGENT_HZ,
        limit,
        stop.clone(),
    );

    // The supervisor's phone registers only now: registering logs 1002 in as an agent of the
    // demo queue, and the call must go to 1001.
    let sup_sip = UdpSocket::bind(("127.0.0.1", SUP_SIP)).unwrap();
    common::register_from(&server, "1002", SUP_SIP, SUP_REG);

    // The live call, as the supervisor sees it.
    let (status, body) = http(&server.http, "GET", "/api/v1/calls", Some(&chef), "");
    assert_eq!(status, 200, "{body}");
    let calls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
    assert_eq!(calls[0]["agent"], "1001");
    assert_eq!(calls[0]["phase"], "connected");
    let contact = calls[0]["contact"].as_str().unwrap().to_owned();
    let monitor = format!("/api/v1/calls/{contact}/monitor");

    // Rights: the agent may not monitor; another tenant does not see the call at all.
    let (status, _) = http(
        &server.http,
        "POST",
        &monitor,
        Some(&agent_token),
        r#"{"mode":"listen"}"#,
    );
    assert_eq!(status, 403, "an agent cannot monitor");
    other_tenant(&server);
    let rival = login(&server, "rival", "boss", "rival-password");
    let (status, body) = http(
        &server.http,
        "POST",
        &monitor,
        Some(&rival),
        r#"{"mode":"listen","supervisor":"1002"}"#,
    );
    assert_eq!(
        status, 404,
        "another tenant's call does not exist for it: {body}"
    );
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&rival), "");
    assert_eq!(
        body.trim(),
        "[]",
        "another tenant lists none of these calls"
    );

    // Whisper: zentrale rings the supervisor's phone, which answers and talks.
    let (status, body) = http(
        &server.http,
        "POST",
        &monitor,
        Some(&chef),
        r#"{"mode":"whisper"}"#,
    );
    assert_eq!(status, 204, "{body}");
    // The supervisor's phone offers RFC 4733 telephone-events too: its keys switch the mode.
    let (invite, from) = recv_sip(
        &sup_sip,
        Duration::from_secs(20),
        |m| is(m, "INVITE"),
        "the INVITE to the supervisor",
    );
    respond(&sup_sip, from, &invite, "180 Ringing", "");
    respond(&sup_sip, from, &invite, "200 OK", &sdp_with_events(SUP_RTP));
    recv_sip(
        &sup_sip,
        Duration::from_secs(10),
        |m| is(m, "ACK"),
        "the ACK",
    );
    let sup_relay = sdp_rtp(invite.body());
    let sup_rtp = UdpSocket::bind(("127.0.0.1", SUP_RTP)).unwrap();
    let sup_keys = sup_rtp.try_clone().unwrap();
    let whisper_from = Instant::now();
    let sup_talk = talk(sup_rtp, sup_relay, SUP_HZ, limit, stop.clone());
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&chef), "");
    let calls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(calls[0]["monitored_by"]["supervisor"], "1002", "{calls}");
    assert_eq!(calls[0]["monitored_by"]["mode"], "whisper", "{calls}");
    std::thread::sleep(Duration::from_secs(3));
    let whisper_to = Instant::now();

    // Barge: the caller hears the supervisor too.
    let (status, body) = http(
        &server.http,
        "POST",
        &monitor,
        Some(&chef),
        r#"{"mode":"barge"}"#,
    );
    assert_eq!(status, 204, "{body}");
    let barge_from = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let barge_to = Instant::now();

    // The supervisor presses 1: back to listening, nobody hears them.
    press(&sup_keys, sup_relay, Digit::from_char('1').unwrap());
    server.wait_for("supervisor switched mode by DTMF");
    let listen_from = Instant::now();
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&chef), "");
    assert!(body.contains(r#""mode":"listen""#), "{body}");
    std::thread::sleep(Duration::from_secs(3));
    let listen_to = Instant::now();

    // The supervisor hangs up: leg C goes, the plain bridge is back, the call goes on.
    hang_up_supervisor(&sup_sip, from, &invite);
    let alone_from = Instant::now();
    let (_, body) = http(&server.http, "GET", "/api/v1/calls", Some(&chef), "");
    let calls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(calls[0]["phase"], "connected", "{calls}");
    assert!(calls[0]["monitored_by"].is_null(), "{calls}");
    std::thread::sleep(Duration::from_secs(2));
    let alone_to = Instant::now();

    // Monitoring again; this time the call ends while the supervisor is on it.
    let (status, body) = http(
        &server.http,
        "POST",
        &monitor,
        Some(&chef),
        r#"{"mode":"listen"}"#,
    );
    assert_eq!(status, 204, "{body}");
    let (again, again_from) = recv_sip(
        &sup_sip,
        Duration::from_secs(20),
        |m| is(m, "INVITE"),
        "the second INVITE to the supervisor",
    );
    respond(
        &sup_sip,
        again_from,
        &again,
        "200 OK",
        &sdp_with_events(SUP_RTP + 1),
    );
    recv_sip(
        &sup_sip,
        Duration::from_secs(10),
        |m| is(m, "ACK"),
        "the second ACK",
    );

    // The caller hangs up: the agent and the supervisor are released. (The talkers are
    // joined only after that: in processed mode zentrale sends every leg a frame every 20 ms,
    // so their receivers end when the call does.)
    stop.store(true, Ordering::Relaxed);
    let agent_bye = std::thread::spawn(move || await_bye(&agent_sip, Duration::from_secs(10)));
    let sup_bye = std::thread::spawn(move || await_bye(&sup_sip, Duration::from_secs(10)));
    caller.bye();
    agent_bye.join().unwrap();
    sup_bye.join().unwrap();
    let caller_heard = caller_talk.join().unwrap();
    let agent_heard = agent_talk.join().unwrap();
    let sup_heard = sup_talk.join().unwrap();

    let margin = Duration::from_millis(600);
    let (w0, w1) = (whisper_from + margin, whisper_to);
    let (b0, b1) = (barge_from + margin, barge_to);

    // Whisper: the agent hears caller and supervisor.
    let agent_sup = heard(&agent_heard, w0, w1, SUP_HZ);
    let agent_caller = heard(&agent_heard, w0, w1, CALLER_HZ);
    assert!(agent_sup > 0.01, "the agent hears the whisper: {agent_sup}");
    assert!(
        agent_caller > 0.01,
        "the agent still hears the caller: {agent_caller}"
    );
    // The caller hears the agent, not the supervisor.
    let caller_agent = heard(&caller_heard, w0, w1, AGENT_HZ);
    let caller_sup = heard(&caller_heard, w0, w1, SUP_HZ);
    assert!(
        caller_agent > 0.01,
        "the caller hears the agent: {caller_agent}"
    );
    assert!(
        caller_sup < caller_agent / 100.0,
        "the caller must not hear the whisper: {caller_sup} (agent {caller_agent})"
    );
    // The supervisor hears both.
    let sup_caller = heard(&sup_heard, w0, w1, CALLER_HZ);
    let sup_agent = heard(&sup_heard, w0, w1, AGENT_HZ);
    assert!(
        sup_caller > 0.01 && sup_agent > 0.01,
        "supervisor hears caller {sup_caller} and agent {sup_agent}"
    );

    eprintln!(
        "whisper: agent hears sup {agent_sup:.4} caller {agent_caller:.4}; caller hears agent \
         {caller_agent:.4} sup {caller_sup:.6}; sup hears caller {sup_caller:.4} agent {sup_agent:.4}"
    );
    // Barge: now the caller hears the supervisor.
    let caller_sup_barge = heard(&caller_heard, b0, b1, SUP_HZ);
    eprintln!("barge: caller hears sup {caller_sup_barge:.4}");
    assert!(
        caller_sup_barge > 0.01,
        "in barge the caller hears the supervisor: {caller_sup_barge}"
    );
    assert!(
        heard(&caller_heard, b0, b1, AGENT_HZ) > 0.01,
        "and still the agent"
    );
    assert!(heard(&agent_heard, b0, b1, SUP_HZ) > 0.01, "the agent too");

    // Listen (switched by the key): neither party hears the supervisor, who hears both.
    let (l0, l1) = (listen_from + margin, listen_to);
    let caller_sup_listen = heard(&caller_heard, l0, l1, SUP_HZ);
    let agent_sup_listen = heard(&agent_heard, l0, l1, SUP_HZ);
    eprintln!(
        "listen: caller hears sup {caller_sup_listen:.6}, agent hears sup {agent_sup_listen:.6}"
    );
    assert!(
        caller_sup_listen < 0.0003,
        "listen: the caller does not hear the supervisor"
    );
    assert!(
        agent_sup_listen < 0.0003,
        "listen: the agent does not hear the supervisor"
    );
    assert!(
        heard(&agent_heard, l0, l1, CALLER_HZ) > 0.01,
        "the call goes on"
    );
    assert!(
        heard(&sup_heard, l0, l1, CALLER_HZ) > 0.01 && heard(&sup_heard, l0, l1, AGENT_HZ) > 0.01
    );

    // After the supervisor left: caller and agent hear each other as before.
    let (a0, a1) = (alone_from + margin, alone_to);
    assert!(
        heard(&caller_heard, a0, a1, AGENT_HZ) > 0.01,
        "the bridge is back"
    );
    assert!(heard(&agent_heard, a0, a1, CALLER_HZ) > 0.01, "both ways");
    assert!(heard(&caller_heard, a0, a1, SUP_HZ) < 0.0003);

    // The audit log says who listened in.
    let (_, body) = http(&server.http, "GET", "/api/v1/audit", Some(&admin), "");
    let audit: Value = serde_json::from_str(&body).unwrap();
    let monitors: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == "call" && r["action"] == "monitor")
        .collect();
    let modes: Vec<&Value> = monitors.iter().map(|r| &r["after"]["mode"]).collect();
    assert_eq!(modes, ["whisper", "barge", "listen"], "{audit}");
    assert!(
        monitors
            .iter()
            .all(|r| r["actor"] == "chef" && r["entity_id"] == contact.as_str())
    );
}
