//! End to end: two-way audio. A caller (a small UA in this test, speaking raw SIP and RTP over
//! UDP) calls the demo queue; agent 1001's phone (registered with digest by SIPp, its calls
//! taken by the test's own UA) answers. The caller sends a 1000 Hz tone and the agent a 1700 Hz
//! tone, as G.711 µ-law RTP through zentrale's relay; each side finds the other's tone (and not
//! its own) by frequency analysis of what it received. Then the caller hangs up.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use sip_gateway::audio::g711::{Law, decode_into, encode_into};
use sip_gateway::audio::tone::{ToneGenerator, detect};
use sip_gateway::sip::{HeaderName, Limits, Message};

fn recv_sip(
    sock: &UdpSocket,
    want: impl Fn(&Message) -> bool,
    what: &str,
) -> (Message, SocketAddr) {
    let until = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "never received {what}");
        sock.set_read_timeout(Some(left)).unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(m) = Message::parse_datagram(buf[..n].to_vec().into(), &Limits::default())
            && want(&m)
        {
            return (m, from);
        }
    }
}

fn header(m: &Message, name: &HeaderName) -> String {
    m.headers_named(name)
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// The RTP address in an SDP body (`c=` and `m=audio`).
fn sdp_rtp(body: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(body);
    let ip = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim()
        .to_owned();
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_owned();
    format!("{ip}:{port}").parse().unwrap()
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Responds to `req` with `code`, echoing the dialog headers, adding our To tag and a body.
fn respond(sock: &UdpSocket, to: SocketAddr, req: &Message, code: &str, body: &str) {
    let mut out = format!("SIP/2.0 {code}\r\n");
    for v in req.headers_named(&HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
    }
    let to_hdr = header(req, &HeaderName::To);
    let to_hdr = if to_hdr.contains("tag=") {
        to_hdr
    } else {
        format!("{to_hdr};tag=agentside")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to_hdr}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:1001@{}>\r\n",
        header(req, &HeaderName::From),
        header(req, &HeaderName::CallId),
        header(req, &HeaderName::CSeq),
        sock.local_addr().unwrap()
    ));
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    sock.send_to(out.as_bytes(), to).unwrap();
}

/// Sends `freq` as PCMU for `packets` × 20 ms to `to` while collecting what arrives; returns
/// the decoded samples received.
fn talk(rtp: UdpSocket, to: SocketAddr, freq: f64, packets: u16) -> Vec<i16> {
    let rx = rtp.try_clone().unwrap();
    let receiver = thread::spawn(move || {
        let mut samples = Vec::new();
        let mut buf = [0u8; 2048];
        rx.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 {
                let mut pcm = vec![0i16; n - 12];
                decode_into(Law::Mu, &buf[12..n], &mut pcm);
                samples.extend_from_slice(&pcm);
            }
        }
        samples
    });
    let mut tone = ToneGenerator::new(freq, 8000);
    let ssrc: u32 = if freq < 1200.0 { 0x1111 } else { 0x2222 };
    let start = Instant::now();
    for seq in 0..packets {
        let mut pcm = [0i16; 160];
        tone.fill(&mut pcm);
        let mut pkt = vec![0x80, 0];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend_from_slice(&ssrc.to_be_bytes());
        let mut payload = [0u8; 160];
        encode_into(Law::Mu, &pcm, &mut payload);
        pkt.extend_from_slice(&payload);
        rtp.send_to(&pkt, to).unwrap();
        // Paced like a phone so the relay sees a real stream.
        let next = start + Duration::from_millis(20 * (u64::from(seq) + 1));
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    receiver.join().unwrap()
}

#[test]
fn caller_and_agent_hear_each_others_tone() {
    let server = Server::start("audio", (41600, 41799));
    let agent_sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    common::register(&server, "1001", agent_sip.local_addr().unwrap().port());
    thread::sleep(Duration::from_millis(300));

    let agent_rtp_port = agent_rtp.local_addr().unwrap().port();
    let agent = thread::spawn(move || {
        let (invite, from) = recv_sip(
            &agent_sip,
            |m| m.method().is_some_and(|x| x.as_bytes() == b"INVITE"),
            "the INVITE to the agent",
        );
        let relay_b = sdp_rtp(invite.body());
        respond(&agent_sip, from, &invite, "180 Ringing", "");
        respond(&agent_sip, from, &invite, "200 OK", &sdp(agent_rtp_port));
        recv_sip(
            &agent_sip,
            |m| m.method().is_some_and(|x| x.as_bytes() == b"ACK"),
            "the ACK",
        );
        let heard = talk(agent_rtp, relay_b, 1700.0, 75);
        let (bye, from) = recv_sip(
            &agent_sip,
            |m| m.method().is_some_and(|x| x.as_bytes() == b"BYE"),
            "the BYE",
        );
        respond(&agent_sip, from, &bye, "200 OK", "");
        heard
    });

    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = caller.local_addr().unwrap();
    let offer = sdp(caller_rtp.local_addr().unwrap().port());
    let to = server.sip;
    let invite = format!(
        "INVITE sip:100@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKaudio1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: <sip:100@{to}>\r\nCall-ID: audio-call@test\r\nCSeq: 1 INVITE\r\nContact: <sip:+4930111222@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    caller.send_to(invite.as_bytes(), to).unwrap();
    let (ok, _) = recv_sip(
        &caller,
        |m| m.status() == Some(200),
        "the 200 to the caller",
    );
    let relay_a = sdp_rtp(ok.body());
    let to_hdr = header(&ok, &HeaderName::To);
    let ack = format!(
        "ACK sip:zentrale@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKaudio2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: {to_hdr}\r\nCall-ID: audio-call@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(ack.as_bytes(), to).unwrap();
    let heard_by_caller = talk(caller_rtp, relay_a, 1000.0, 75);
    let bye = format!(
        "BYE sip:zentrale@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKaudio3;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: {to_hdr}\r\nCall-ID: audio-call@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(bye.as_bytes(), to).unwrap();
    recv_sip(
        &caller,
        |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("BYE"),
        "the 200 to BYE",
    );
    let heard_by_agent = agent.join().unwrap();

    // At least a second of audio each way, dominated by the other side's tone.
    assert!(
        heard_by_agent.len() >= 8000,
        "agent got {} samples",
        heard_by_agent.len()
    );
    assert!(
        heard_by_caller.len() >= 8000,
        "caller got {} samples",
        heard_by_caller.len()
    );
    let (a_other, a_own) = (
        detect(&heard_by_agent, 1000.0),
        detect(&heard_by_agent, 1700.0),
    );
    let (c_other, c_own) = (
        detect(&heard_by_caller, 1700.0),
        detect(&heard_by_caller, 1000.0),
    );
    assert!(
        a_other > 0.01 && a_other > 100.0 * a_own,
        "agent: 1000 Hz {a_other}, 1700 Hz {a_own}"
    );
    assert!(
        c_other > 0.01 && c_other > 100.0 * c_own,
        "caller: 1700 Hz {c_other}, 1000 Hz {c_own}"
    );
}
