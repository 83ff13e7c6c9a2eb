//! End to end: attended transfer. A caller (the test's UA) calls the demo queue; agent 1001's
//! phone (the test's UA, speaking raw SIP) answers, puts the caller on hold (`sendonly`
//! re-INVITE), calls colleague 1002 from the phone (an INVITE to the extension, challenged
//! with 407 and answered with digest), and after 1002 answered sends
//! `REFER` with `Refer-To: <sip:1002@…?Replaces=<consultation Call-ID;to-tag;from-tag>>`.
//! zentrale answers 202, NOTIFYs 100 and 200, re-INVITEs 1002's phone onto the caller's call
//! and releases both of 1001's dialogs with BYE. Then the caller and 1002 talk: 1002 hears the
//! caller's 1000 Hz tone and the caller hears 1002's 1700 Hz tone (Goertzel), and the caller's
//! hang-up reaches 1002. The queue log shows the engine following: 1001's `complete`, the
//! `assign` to 1002, 1002's `complete` at the end.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use common::ua::{
    Caller, answer, await_bye, header, in_dialog, is, recv_sip, respond, sdp, sdp_rtp, talk, window,
};
use sip_gateway::audio::tone::detect;
use sip_gateway::sip::HeaderName;
use sip_gateway::sip::auth::{ClientCredentials, answer_challenge};

// Ports of this test (SIP 54060-54079; the relay 46600-46799).
const PHONE1_SIP: u16 = 54060;
const PHONE1_REG: u16 = 54061;
const CALLER_SIP: u16 = 54062;
const PHONE2_SIP: u16 = 54064;
const PHONE2_REG: u16 = 54065;
const PHONE1_RTP: u16 = 54070;
const CONSULT_RTP: u16 = 54072;
const CALLER_RTP: u16 = 54074;
const PHONE2_RTP: u16 = 54076;

#[test]
fn refer_with_replaces_connects_the_held_caller_with_the_consulted_colleague() {
    let server = Server::start("xfer-attended", (46600, 46799));
    let zentrale = server.sip;
    let phone1 = UdpSocket::bind(("127.0.0.1", PHONE1_SIP)).unwrap();
    common::register_from(&server, "1001", PHONE1_SIP, PHONE1_REG);

    // 1001's phone answers the caller's call (X).
    let x_answer = thread::spawn(move || {
        let call = answer(&phone1, PHONE1_RTP, Duration::from_secs(30));
        (phone1, call)
    });
    let caller = Caller::call(
        zentrale,
        "100",
        CALLER_SIP,
        CALLER_RTP,
        Duration::from_secs(20),
    );
    let (phone1, x) = x_answer.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let caller_talk = talk(
        UdpSocket::bind(("127.0.0.1", CALLER_RTP)).unwrap(),
        caller.relay,
        1000.0,
        Duration::from_secs(30),
        stop.clone(),
    );

    // 1002 comes online; its phone answers the consultation and later the re-INVITE.
    let phone2 = UdpSocket::bind(("127.0.0.1", PHONE2_SIP)).unwrap();
    common::register_from(&server, "1002", PHONE2_SIP, PHONE2_REG);
    let colleague = thread::spawn(move || {
        let y = answer(&phone2, PHONE2_RTP, Duration::from_secs(30));
        assert!(header(&y.invite, &HeaderName::From).contains("sip:1001@"));
        let (reinvite, from) = recv_sip(
            &phone2,
            Duration::from_secs(30),
            |m| is(m, "INVITE"),
            "the re-INVITE that moves 1002 to the caller",
        );
        assert_eq!(
            header(&reinvite, &HeaderName::CallId),
            header(&y.invite, &HeaderName::CallId),
            "in 1002's own dialog"
        );
        respond(&phone2, from, &reinvite, "200 OK", &sdp(PHONE2_RTP));
        recv_sip(
            &phone2,
            Duration::from_secs(10),
            |m| is(m, "ACK"),
            "the ACK",
        );
        let moved_to = sdp_rtp(reinvite.body());
        let heard = talk(
            UdpSocket::bind(("127.0.0.1", PHONE2_RTP)).unwrap(),
            moved_to,
            1700.0,
            Duration::from_secs(3),
            Arc::new(AtomicBool::new(false)),
        )
        .join()
        .unwrap();
        (phone2, heard)
    });

    // Hold: a sendonly re-INVITE in X.
    let hold = format!("{}a=sendonly\r\n", sdp(PHONE1_RTP));
    in_dialog(&phone1, zentrale, &x.invite, "INVITE", 2, "", &hold);
    let (ok, _) = recv_sip(
        &phone1,
        Duration::from_secs(10),
        |m| m.status() == Some(200),
        "the 200 to the hold",
    );
    assert!(String::from_utf8_lossy(ok.body()).contains("a=recvonly"));
    in_dialog(&phone1, zentrale, &x.invite, "ACK", 2, "", "");
    server.wait_for("call on hold");

    // The consultation call Y from 1001's phone to 1002, with digest.
    let me = phone1.local_addr().unwrap();
    let consult_id = format!("consult-{}@test", std::process::id());
    let offer = sdp(CONSULT_RTP);
    let consult = |cseq: u32, auth: &str| {
        format!(
            "INVITE sip:1002@{zentrale} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcons{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=cons1\r\nTo: <sip:1002@{zentrale}>\r\nCall-ID: {consult_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:1001@{me}>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        )
    };
    phone1.send_to(consult(1, "").as_bytes(), zentrale).unwrap();
    let (challenge, _) = recv_sip(
        &phone1,
        Duration::from_secs(10),
        |m| m.status() == Some(407),
        "the 407 to the consultation INVITE",
    );
    let ack407 = format!(
        "ACK sip:1002@{zentrale} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcons1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=cons1\r\nTo: {}\r\nCall-ID: {consult_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&challenge, &HeaderName::To)
    );
    phone1.send_to(ack407.as_bytes(), zentrale).unwrap();
    let auth = answer_challenge(
        challenge
            .headers_named(&HeaderName::ProxyAuthenticate)
            .next()
            .unwrap(),
        &ClientCredentials {
            username: "1001",
            password: "demo1001",
        },
        "INVITE",
        &format!("sip:1002@{zentrale}"),
        "cn1",
        1,
    )
    .unwrap();
    phone1
        .send_to(
            consult(2, &format!("Proxy-Authorization: {auth}\r\n")).as_bytes(),
            zentrale,
        )
        .unwrap();
    let (y_ok, _) = recv_sip(
        &phone1,
        Duration::from_secs(30),
        |m| m.status() == Some(200) && header(m, &HeaderName::CallId) == consult_id,
        "1002 answering the consultation",
    );
    let y_to = header(&y_ok, &HeaderName::To);
    let y_tag = y_to.split("tag=").nth(1).unwrap().to_owned();
    let ack = format!(
        "ACK sip:zentrale@{zentrale} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKconsack;rport\r\nMax-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=cons1\r\nTo: {y_to}\r\nCall-ID: {consult_id}\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    phone1.send_to(ack.as_bytes(), zentrale).unwrap();

    // The REFER with Replaces in X.
    let replaces = format!(
        "{}%3Bto-tag%3D{y_tag}%3Bfrom-tag%3Dcons1",
        consult_id.replace('@', "%40")
    );
    in_dialog(
        &phone1,
        zentrale,
        &x.invite,
        "REFER",
        3,
        &format!("Refer-To: <sip:1002@{zentrale}?Replaces={replaces}>\r\n"),
        "",
    );
    // 202, NOTIFY 100 and 200, and BYE for both of 1001's dialogs, answered as they come.
    let until = Instant::now() + Duration::from_secs(20);
    let (mut accepted, mut notified, mut byes) = (false, Vec::new(), 0);
    while !(accepted && notified.iter().any(|f: &String| f.contains("200 OK")) && byes == 2) {
        let left = until.saturating_duration_since(Instant::now());
        let (m, from) = recv_sip(&phone1, left, |_| true, "the transfer's outcome at 1001");
        if m.status() == Some(202) {
            accepted = true;
        } else if is(&m, "NOTIFY") {
            notified.push(String::from_utf8_lossy(m.body()).into_owned());
            respond(&phone1, from, &m, "200 OK", "");
        } else if is(&m, "BYE") {
            byes += 1;
            respond(&phone1, from, &m, "200 OK", "");
        }
    }
    assert!(notified[0].contains("100 Trying"), "{notified:?}");
    let connected = Instant::now();
    server.wait_for("attended transfer connected");

    let (phone2, heard_by_1002) = colleague.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let heard_by_caller = caller_talk.join().unwrap();
    caller.bye();
    await_bye(&phone2, Duration::from_secs(10));
    // The routing engine follows: 1001's conversation completes (wrap-up), the contact is
    // assigned to 1002, and the caller's hang-up completes 1002's conversation.
    server.wait_queue_log("1001's complete, 1002's assign and complete", |log| {
        let at = |ev: &str, who: &str| {
            log.iter()
                .position(|(e, a)| e == ev && a.as_deref() == Some(who))
        };
        matches!(
            (at("complete", "1001"), at("assign", "1002"), at("complete", "1002")),
            (Some(a), Some(b), Some(c)) if a < b && b < c
        )
    });

    let to_1002: Vec<i16> = heard_by_1002
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    let after = window(
        &heard_by_caller,
        connected + Duration::from_millis(400),
        Instant::now(),
    );
    eprintln!(
        "1002 hears 1000 Hz {:.4} (1700 Hz {:.4}); caller hears 1700 Hz {:.4}",
        detect(&to_1002, 1000.0),
        detect(&to_1002, 1700.0),
        detect(&after, 1700.0)
    );
    assert!(
        to_1002.len() >= 8000,
        "1002 heard {} samples",
        to_1002.len()
    );
    assert!(
        detect(&to_1002, 1000.0) > 0.01
            && detect(&to_1002, 1000.0) > 100.0 * detect(&to_1002, 1700.0),
        "1002 hears the caller"
    );
    assert!(
        after.len() >= 8000,
        "caller heard {} samples after",
        after.len()
    );
    assert!(detect(&after, 1700.0) > 0.01, "the caller hears 1002");
}
