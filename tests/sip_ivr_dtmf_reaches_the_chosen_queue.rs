//! End to end: a DID leads to an IVR menu. The caller is answered at once and hears the menu;
//! a key chooses the queue.
//!
//! - RFC 4733: the caller's RTP carries telephone-events for `2` → queue `sales`, whose only
//!   member (1002) is offered the call.
//! - SIP INFO: `1` sets the contact's `language = de` and requires `german >= 3`, so of the two
//!   agents of `support` only 1001 (german 3, not 1002 with german 2) is offered the call,
//!   and the queue's greeting plays in German.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Server;
use common::caller_media::{MediaCaller, classify, put_routing, tone_wav, write_prompt};
use common::ua::{self, is, recv_sip, rms};

const MENU_DID: &str = "%2B4930999";
const GERMAN: f64 = 1300.0;
const ENGLISH: f64 = 900.0;

/// Queue `sales`, agent 1002's queues, the menu, and the DID that leads to it.
fn menu_setup(server: &Server, queues_1002: &str, menu: &str) {
    let agent = format!(r#"{{"skills":{{"german":2,"english":4}},"queues":{queues_1002}}}"#);
    put_routing(
        server,
        &[
            ("queues", "sales", r#"{"strategy":"longest_idle"}"#),
            ("agents", "1002", &agent),
            ("ivr_menus", "main", menu),
            ("dids", MENU_DID, r#"{"target":{"menu":"main"}}"#),
        ],
    );
}

#[test]
fn rfc4733_key_two_reaches_the_sales_agent() {
    let server = Server::start("ivr-rtp", (45200, 45399));
    // 1001 serves support, 1002 sales.
    menu_setup(
        &server,
        r#"["sales"]"#,
        r#"{"prompt":"language_menu","timeout_s":20,"options":{"1":{"queue":"support"},"2":{"queue":"sales"}},"default":{"queue":"support"}}"#,
    );
    let agent_1001 = UdpSocket::bind("127.0.0.1:53010").unwrap();
    let agent_1002 = UdpSocket::bind("127.0.0.1:53012").unwrap();
    common::register_from(&server, "1001", 53010, 53014);
    common::register_from(&server, "1002", 53012, 53016);

    let caller = MediaCaller::call(server.sip, "+4930999", 53018, 53020);
    let heard = caller.listen(Duration::from_millis(1500));
    let samples: Vec<i16> = heard.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    assert!(
        samples.len() >= 8000 && rms(&samples) > 300.0,
        "the menu prompt plays ({} samples, rms {})",
        samples.len(),
        rms(&samples)
    );
    caller.rtp_digit('2');

    let (invite, from) = recv_sip(
        &agent_1002,
        Duration::from_secs(15),
        |m| is(m, "INVITE"),
        "the INVITE to the sales agent 1002",
    );
    ua::respond(&agent_1002, from, &invite, "486 Busy Here", "");
    agent_1001
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    if let Ok((n, _)) = agent_1001.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !text.starts_with("INVITE"),
            "the support agent was offered a sales call"
        );
    }
    caller.bye();
}

#[test]
fn info_key_one_sets_german_and_only_the_german_agent_is_offered() {
    // The queue's greeting in each language is a tone, so the test hears which one plays.
    let server = Server::start_prepared("ivr-info", (45400, 45599), "", |data| {
        write_prompt(data, "de", "welcome", &tone_wav(GERMAN, 2000));
        write_prompt(data, "en", "welcome", &tone_wav(ENGLISH, 2000));
    });
    menu_setup(
        &server,
        r#"["support"]"#,
        r#"{"prompt":"language_menu","timeout_s":20,"options":{"1":{"queue":"support"},"2":{"queue":"support"}},"set":{"1":{"language":"de"},"2":{"language":"en"}},"require":{"1":"german >= 3","2":"english >= 3"},"default":{"queue":"support"}}"#,
    );
    let agent_1001 = UdpSocket::bind("127.0.0.1:53022").unwrap();
    let agent_1002 = UdpSocket::bind("127.0.0.1:53024").unwrap();
    common::register_from(&server, "1001", 53022, 53026);
    common::register_from(&server, "1002", 53024, 53028);

    let caller = MediaCaller::call(server.sip, "+4930999", 53030, 53032);
    caller.info_digit('1');
    // The demo queue's greeting, now in German (the queue's own language is English).
    let heard = caller.listen(Duration::from_millis(1000));
    let tones = classify(&heard, &[GERMAN, ENGLISH]);
    let german = tones.iter().filter(|(_, t)| *t == Some(GERMAN)).count();
    let english = tones.iter().filter(|(_, t)| *t == Some(ENGLISH)).count();
    assert!(
        german >= 20 && english == 0,
        "greeting frames: {german} German, {english} English"
    );
    let (invite, from) = recv_sip(
        &agent_1001,
        Duration::from_secs(15),
        |m| is(m, "INVITE"),
        "the INVITE to the German-speaking agent 1001",
    );
    agent_1002
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    if let Ok((n, _)) = agent_1002.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !text.starts_with("INVITE"),
            "1002 (german 2) was offered a call that requires german >= 3"
        );
    }
    ua::respond(&agent_1001, from, &invite, "486 Busy Here", "");
    caller.bye();
}
