//! End to end, the CDR side of a real call: a caller (the test's UA, number +4930111222, a
//! demo customer) calls the demo queue, agent 1001's phone (registered with the password the
//! demo seed stored as HA1) answers, both sides send a tone through the relay for two
//! seconds, the caller hangs up. Then, polled with a deadline from the API:
//! - both legs' CDR rows land (written by the batching writer) with answer, talk and wait;
//! - each row carries its leg's MOS x100 from the relay's final counters;
//! - the agent's wrap-up end (1 s here) is written into `wrap_ms` afterwards;
//! - the call is on the customer's timeline, with the wrap-up too.
//!
//! And a call that ends while the server shuts down (SIGTERM) still leaves its CDR rows in
//! the database after the process has exited: the batching writer commits before close.
//!
//! Ports: RTP 47000-47499 (servers 47000-47199 and 47200-47399, the test's phones
//! 47450-47457), SIP 55010-55019.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::ua::{Caller, answer, await_bye, talk};
use common::{Server, http};
use serde_json::Value;

const PHONE_SIP: u16 = 55010;
const CALLER_SIP: u16 = 55011;
const PHONE_REG: u16 = 55012;
const PHONE_RTP: u16 = 47450;
const CALLER_RTP: u16 = 47452;
const PHONE2_SIP: u16 = 55013;
const CALLER2_SIP: u16 = 55014;
const PHONE2_REG: u16 = 55015;
const PHONE2_RTP: u16 = 47454;
const CALLER2_RTP: u16 = 47456;

fn get(server: &Server, token: &str, path: &str) -> Value {
    let (status, body) = http(&server.http, "GET", path, Some(token), "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

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
fn an_answered_call_leaves_both_legs_with_quality_wrap_up_and_a_timeline_item() {
    let server = Server::start("sip-credentials-cdr", (47000, 47199));
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":1}"#);
    let token = server.admin_token();
    let phone = UdpSocket::bind(("127.0.0.1", PHONE_SIP)).unwrap();
    common::register_from(&server, "1001", PHONE_SIP, PHONE_REG);

    let dial = std::thread::spawn(move || {
        let srv = server.sip;
        (
            Caller::call(srv, "100", CALLER_SIP, CALLER_RTP, Duration::from_secs(20)),
            server,
        )
    });
    let answered = answer(&phone, PHONE_RTP, Duration::from_secs(20));
    let (caller, server) = dial.join().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        700.0,
        Duration::from_secs(2),
        stop.clone(),
    );
    let agent_talk = talk(
        UdpSocket::bind(("127.0.0.1", PHONE_RTP)).unwrap(),
        answered.relay,
        1300.0,
        Duration::from_secs(2),
        stop,
    );
    let heard_by_caller = caller_talk.join().unwrap();
    let heard_by_agent = agent_talk.join().unwrap();
    assert!(
        heard_by_caller.len() > 50 && heard_by_agent.len() > 50,
        "audio flowed both ways ({} / {} packets)",
        heard_by_caller.len(),
        heard_by_agent.len()
    );
    let bye_seen = std::thread::spawn(move || await_bye(&phone, Duration::from_secs(10)));
    caller.bye();
    bye_seen.join().unwrap();

    // Both legs, with quality and (after the 1 s wrap-up) the wrap-up time.
    let rows = poll(
        "both CDR rows with the wrap-up",
        Duration::from_secs(30),
        || {
            let cdrs = get(&server, &token, "/api/v1/cdrs");
            let rows: Vec<Value> = cdrs
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["caller"] == "+4930111222")
                .cloned()
                .collect();
            (rows.len() == 2 && rows.iter().all(|r| r["wrap_ms"].as_i64().unwrap_or(0) > 0))
                .then_some(rows)
        },
    );
    let leg = |name: &str| rows.iter().find(|r| r["leg"] == name).unwrap().clone();
    let (caller_row, agent_row) = (leg("caller"), leg("agent"));
    assert_eq!(caller_row["contact_id"], agent_row["contact_id"]);
    for row in [&caller_row, &agent_row] {
        assert_eq!(row["result"], "answered", "{row}");
        assert_eq!(row["agent"], "1001", "{row}");
        assert_eq!(row["queue"], "support", "{row}");
        assert!(row["answered_at"].is_string(), "{row}");
        assert!(row["talk_ms"].as_i64().unwrap() >= 1500, "{row}");
        // A clean local stream: the E-model gives a good score (x100).
        let mos = row["mos_x100"].as_i64().unwrap_or(0);
        assert!((300..=450).contains(&mos), "MOS x100 {mos}: {row}");
        let wrap = row["wrap_ms"].as_i64().unwrap();
        assert!((900..=10_000).contains(&wrap), "wrap-up {wrap}: {row}");
        assert!(row["transfer"].is_null() && row["voicemail"].is_null());
    }

    // The call is on the customer's timeline, with its wrap-up.
    let customer = get(
        &server,
        &token,
        "/api/v1/customers/lookup?phone=%2B4930111222",
    );
    let id = customer["id"].as_str().unwrap();
    let item = poll("the call on the timeline", Duration::from_secs(10), || {
        let tl = get(&server, &token, &format!("/api/v1/customers/{id}/timeline"));
        tl["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "call" && i["contact_id"] == caller_row["contact_id"])
            .cloned()
    });
    assert_eq!(item["agent"], "1001");
    assert_eq!(
        item["wrap_s"],
        caller_row["wrap_ms"].as_i64().unwrap() / 1000
    );
    assert!(item["quality"].as_f64().unwrap() >= 3.0, "{item}");
}

#[test]
fn a_call_ending_during_shutdown_still_leaves_its_cdr_rows() {
    let mut server = Server::start("sip-credentials-cdr-shutdown", (47200, 47399));
    server.set_support_queue(r#"{"strategy":"longest_idle","wrap_up_s":0}"#);
    let db = server.db_path();
    let phone = UdpSocket::bind(("127.0.0.1", PHONE2_SIP)).unwrap();
    common::register_from(&server, "1001", PHONE2_SIP, PHONE2_REG);
    let srv = server.sip;
    let dial = std::thread::spawn(move || {
        Caller::call(
            srv,
            "100",
            CALLER2_SIP,
            CALLER2_RTP,
            Duration::from_secs(20),
        )
    });
    let _answered = answer(&phone, PHONE2_RTP, Duration::from_secs(20));
    let caller = dial.join().unwrap();

    // SIGTERM while the call is up: the server waits for it, the caller hangs up, it exits.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_for("waiting for calls in progress");
    let bye_seen = std::thread::spawn(move || await_bye(&phone, Duration::from_secs(10)));
    caller.bye();
    bye_seen.join().unwrap();
    let exit = server.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "exit: {exit:?}");

    // The process is gone; its database has both legs of that call.
    let url = format!("sqlite://{}?mode=ro", db.display());
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = crm_api::Store::open(&url).await.unwrap();
            let t = store.tenant_by_slug("demo").await.unwrap().unwrap();
            let t = crm_api::ids::TenantId::parse(&t.id).unwrap();
            let n = store.cdr_count(t).await.unwrap();
            store.close().await;
            n
        });
    assert_eq!(
        rows, 2,
        "caller and agent leg of the call ended during shutdown"
    );
}
