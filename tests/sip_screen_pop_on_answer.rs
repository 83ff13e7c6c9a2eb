//! End to end: the agent's desktop gets the screen pop the moment its phone answers. Agent 1001
//! is logged in to the API with a WebSocket on `/api/v1/events`; its SIP phone (SIPp) is
//! registered; a known customer of the demo tenant calls the demo queue from a carrier (SIPp). When the phone
//! answers, the socket receives `screen_pop` with the caller's number, the customer card and
//! the call's contact id — and agent 1002's socket receives nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, Sipp, agent_phone, http};

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn login(server: &Server, user: &str, password: &str) -> String {
    let (status, body) = http(
        &server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"tenant":"demo","username":"{user}","password":"{password}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn events(server: &Server, token: &str) -> Ws {
    let (mut ws, _) = tungstenite::connect(format!(
        "ws://{}/api/v1/events?access_token={token}",
        server.http
    ))
    .unwrap();
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    ws
}

/// The next `screen_pop` event within `limit`, or `None`.
fn screen_pop(ws: &mut Ws, limit: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "screen_pop" {
                    return Some(v);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("event socket failed: {e}"),
        }
    }
    None
}

#[test]
fn the_answering_agent_gets_the_customer_card_on_its_event_socket() {
    let server = Server::start("screenpop", (48500, 48599));
    // The demo tenant knows the carrier scenario's caller, +4930111222: Erika Mustermann.
    let mut ws1001 = events(&server, &login(&server, "1001", "demo1001"));
    let mut ws1002 = events(&server, &login(&server, "1002", "demo1002"));

    // Only 1001 has a phone, so only 1001 can be offered the call.
    let _phone = agent_phone(&server, "1001", "agent_answer.xml", 1);
    std::thread::sleep(Duration::from_millis(300));
    let port = common::free_udp_port().to_string();
    let media = common::free_udp_port().to_string();
    let mut carrier = Sipp::start(
        &server.dir,
        "carrier",
        server.sip,
        "carrier_call.xml",
        &[
            "-p",
            &port,
            "-mp",
            &media,
            "-s",
            "+4930123456",
            "-d",
            "1000",
            "-m",
            "1",
            "-timeout",
            "40",
        ],
    );
    let pop = screen_pop(&mut ws1001, Duration::from_secs(30)).expect("a screen pop for 1001");
    assert_eq!(pop["caller_number"], "+4930111222", "{pop}");
    assert_eq!(pop["customer"]["name"], "Erika Mustermann", "{pop}");
    assert!(!pop["contact_id"].as_str().unwrap().is_empty(), "{pop}");
    assert_eq!(pop["attributes"]["dialled"], "+4930123456", "{pop}");
    carrier.expect_success(Duration::from_secs(45));
    // The pop went to the answering agent only.
    assert!(
        screen_pop(&mut ws1002, Duration::from_millis(500)).is_none(),
        "1002 must not see 1001's caller"
    );
    // The CDR of that contact exists: the pop named the real call.
    let contact = pop["contact_id"].as_str().unwrap().to_owned();
    let rows = server.wait_cdrs(&contact, |rows| rows.len() == 2);
    assert!(rows.iter().any(|r| r.0 == "agent"), "{rows:?}");
}
