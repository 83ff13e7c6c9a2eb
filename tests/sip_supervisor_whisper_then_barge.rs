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
//! - the caller hanging up releases agent and supervisor (BYE to both);
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

use common::ua::{Caller, answer, await_bye, talk, window};
use common::{Server, http};
use serde_json::Value;
use sip_gateway::audio::tone::detect;

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
    let sup_leg = answer(&sup_sip, SUP_RTP, Duration::from_secs(20));
    let whisper_from = Instant::now();
    let sup_talk = talk(
        UdpSocket::bind(("127.0.0.1", SUP_RTP)).unwrap(),
        sup_leg.relay,
        SUP_HZ,
        limit,
        stop.clone(),
    );
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

    // The audit log says who listened in.
    let (_, body) = http(&server.http, "GET", "/api/v1/audit", Some(&admin), "");
    let audit: Value = serde_json::from_str(&body).unwrap();
    let monitors: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == "call" && r["action"] == "monitor")
        .collect();
    assert_eq!(monitors.len(), 2, "{audit}");
    assert!(
        monitors
            .iter()
            .all(|r| r["actor"] == "chef" && r["entity_id"] == contact.as_str())
    );
}
