//! A tiny SIP user agent and RTP tone talker for end-to-end tests that need to hear audio:
//! a caller that dials a DID, an agent phone that answers one INVITE, and a talker that sends
//! a tone as paced G.711 µ-law RTP while recording what comes back with arrival times, so a
//! test can cut what it heard into phases (before hold, on hold, after resume) and look for
//! tones with the Goertzel detector. Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sip_gateway::audio::g711::{Law, decode_into, encode_into};
use sip_gateway::audio::tone::ToneGenerator;
use sip_gateway::sip::{HeaderName, Limits, Message};

/// Waits (up to `limit`) for a SIP message on `sock` for which `want` holds.
pub fn recv_sip(
    sock: &UdpSocket,
    limit: Duration,
    want: impl Fn(&Message) -> bool,
    what: &str,
) -> (Message, SocketAddr) {
    let until = Instant::now() + limit;
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

/// Whether `m` is a request with this method.
pub fn is(m: &Message, method: &str) -> bool {
    m.method()
        .is_some_and(|x| x.as_bytes() == method.as_bytes())
}

/// The first value of a header, as text.
pub fn header(m: &Message, name: &HeaderName) -> String {
    m.headers_named(name)
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// The RTP address in an SDP body (`c=` and `m=audio`).
pub fn sdp_rtp(body: &[u8]) -> SocketAddr {
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

/// A PCMU-only SDP receiving at 127.0.0.1:`port`.
pub fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Responds to `req` with `code` (e.g. `200 OK`), adding our To tag and an SDP body if given.
pub fn respond(sock: &UdpSocket, to: SocketAddr, req: &Message, code: &str, body: &str) {
    let mut out = format!("SIP/2.0 {code}\r\n");
    for v in req.headers_named(&HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
    }
    let to_hdr = header(req, &HeaderName::To);
    let to_hdr = if to_hdr.contains("tag=") {
        to_hdr
    } else {
        format!("{to_hdr};tag=uaside")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to_hdr}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:ua@{}>\r\n",
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

/// A caller's established call.
pub struct Caller {
    pub sip: UdpSocket,
    pub server: SocketAddr,
    /// Where the relay receives our RTP.
    pub relay: SocketAddr,
    to_hdr: String,
    call_id: String,
}

impl Caller {
    /// Dials `did` from 127.0.0.1:`sip_port` with RTP at `rtp_port`; returns once answered and
    /// ACKed (bounded by `limit`).
    pub fn call(
        server: SocketAddr,
        did: &str,
        sip_port: u16,
        rtp_port: u16,
        limit: Duration,
    ) -> Caller {
        let sip = UdpSocket::bind(("127.0.0.1", sip_port)).unwrap();
        let me = sip.local_addr().unwrap();
        let offer = sdp(rtp_port);
        let call_id = format!("ua-{sip_port}-{}@test", std::process::id());
        let invite = format!(
            "INVITE sip:{did}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKua1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: <sip:{did}@{server}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:+4930111222@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        sip.send_to(invite.as_bytes(), server).unwrap();
        let (ok, _) = recv_sip(
            &sip,
            limit,
            |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("INVITE"),
            "the 200 to the caller",
        );
        let to_hdr = header(&ok, &HeaderName::To);
        let ack = format!(
            "ACK sip:zentrale@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKua2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sip.send_to(ack.as_bytes(), server).unwrap();
        Caller {
            relay: sdp_rtp(ok.body()),
            sip,
            server,
            to_hdr,
            call_id,
        }
    }

    /// Hangs up and waits for the 200.
    pub fn bye(&self) {
        let me = self.sip.local_addr().unwrap();
        let bye = format!(
            "BYE sip:zentrale@{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKua3;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{me}>;tag=caller\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            self.server, self.to_hdr, self.call_id
        );
        self.sip.send_to(bye.as_bytes(), self.server).unwrap();
        recv_sip(
            &self.sip,
            Duration::from_secs(10),
            |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("BYE"),
            "the 200 to BYE",
        );
    }
}

/// An agent phone's answered call: the relay's leg towards it.
pub struct Answered {
    pub invite: Message,
    pub from: SocketAddr,
    pub relay: SocketAddr,
}

/// Waits for an INVITE on `sip`, answers 180 + 200 with RTP at `rtp_port`, waits for the ACK.
pub fn answer(sip: &UdpSocket, rtp_port: u16, limit: Duration) -> Answered {
    let (invite, from) = recv_sip(sip, limit, |m| is(m, "INVITE"), "the INVITE to the phone");
    respond(sip, from, &invite, "180 Ringing", "");
    respond(sip, from, &invite, "200 OK", &sdp(rtp_port));
    recv_sip(sip, Duration::from_secs(10), |m| is(m, "ACK"), "the ACK");
    Answered {
        relay: sdp_rtp(invite.body()),
        invite,
        from,
    }
}

/// Waits for a BYE on `sip` and answers 200.
pub fn await_bye(sip: &UdpSocket, limit: Duration) {
    let (bye, from) = recv_sip(sip, limit, |m| is(m, "BYE"), "the BYE");
    respond(sip, from, &bye, "200 OK", "");
}

/// What a talker heard: PCM of each received packet with its arrival time.
pub type Heard = Vec<(Instant, Vec<i16>)>;

/// The samples heard between `from` and `to`.
pub fn window(heard: &Heard, from: Instant, to: Instant) -> Vec<i16> {
    heard
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .flat_map(|(_, s)| s.iter().copied())
        .collect()
}

/// Root mean square of samples (0 for none).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// Sends `freq` as PCMU RTP from `rtp` to `to` every 20 ms for `duration` (or until `stop`),
/// while recording what arrives. Runs on its own threads; join the handle for what was heard.
pub fn talk(
    rtp: UdpSocket,
    to: SocketAddr,
    freq: f64,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Heard> {
    thread::spawn(move || {
        let rx = rtp.try_clone().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let rx_done = done.clone();
        let receiver = thread::spawn(move || {
            let mut heard = Vec::new();
            let mut buf = [0u8; 2048];
            rx.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while !rx_done.load(Ordering::Relaxed) {
                match rx.recv_from(&mut buf) {
                    Ok((n, _)) if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 => {
                        let mut pcm = vec![0i16; n - 12];
                        decode_into(Law::Mu, &buf[12..n], &mut pcm);
                        heard.push((Instant::now(), pcm));
                    }
                    Ok(_) | Err(_) => {}
                }
            }
            heard
        });
        let mut tone = ToneGenerator::new(freq, 8000);
        let ssrc: u32 = 0x5000 + freq as u32;
        let start = Instant::now();
        let mut seq: u16 = 0;
        while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            let mut pkt = vec![0x80, 0];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            let mut payload = [0u8; 160];
            encode_into(Law::Mu, &pcm, &mut payload);
            pkt.extend_from_slice(&payload);
            let _ = rtp.send_to(&pkt, to);
            seq = seq.wrapping_add(1);
            // Paced like a phone so the relay sees a real stream.
            let next = start + Duration::from_millis(20 * u64::from(seq));
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::Relaxed);
        receiver.join().unwrap()
    })
}

/// A request from a phone inside the dialog that `invite` (zentrale's INVITE to the phone,
/// answered with [`respond`], so our tag is `uaside`) created: From/To swapped, sent to
/// zentrale's Contact. Returns what was sent.
pub fn in_dialog(
    sip: &UdpSocket,
    server: SocketAddr,
    invite: &Message,
    method: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    let me = sip.local_addr().unwrap();
    let target = header(invite, &HeaderName::Contact)
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let mut out = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{method}{cseq}{};rport\r\nMax-Forwards: 70\r\nFrom: {};tag=uaside\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:ua@{me}>\r\n{extra}",
        std::process::id(),
        header(invite, &HeaderName::To),
        header(invite, &HeaderName::From),
        header(invite, &HeaderName::CallId),
    );
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    sip.send_to(out.as_bytes(), server).unwrap();
    out
}
