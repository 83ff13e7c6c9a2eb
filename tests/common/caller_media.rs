//! Helpers for the caller-experience tests (queue media, IVR, callback, voicemail): a caller
//! that offers telephone-event and can press keys by RFC 4733 or SIP INFO, tone prompts
//! written as WAV overrides, routing changes over HTTP, and frame-wise tone classification of
//! what a caller heard. Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use sip_gateway::audio::dtmf::{Digit, DtmfSender};
use sip_gateway::audio::g711::{Law, decode_into};
use sip_gateway::audio::tone::{ToneGenerator, detect};
use sip_gateway::sip::HeaderName;

use super::Server;
use super::ua::{Heard, header, recv_sip, respond, sdp_rtp};

/// A WAV prompt of a pure tone (8 kHz mono), `ms` long.
pub fn tone_wav(freq: f64, ms: u32) -> Vec<u8> {
    let mut samples = vec![0i16; (ms * 8) as usize];
    ToneGenerator::new(freq, 10_000).fill(&mut samples);
    let mut out = std::io::Cursor::new(Vec::new());
    sip_gateway::audio::wav::write_8k_mono(&mut out, &samples).unwrap();
    out.into_inner()
}

/// Writes `prompts/<lang>/<name>.wav` under a data directory.
pub fn write_prompt(data: &Path, lang: &str, name: &str, wav: &[u8]) {
    let dir = data.join("prompts").join(lang);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.wav")), wav).unwrap();
}

/// How many log lines so far contain `needle` (reads what is pending, without waiting).
fn count_lines(server: &Server, needle: &str) -> usize {
    while let Ok(line) = server.lines.try_recv() {
        server.seen.borrow_mut().push(line);
    }
    server
        .seen
        .borrow()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// PUTs routing objects as the demo admin (`(kind, name, json)`), then waits until the engine
/// has applied every change.
pub fn put_routing(server: &Server, objects: &[(&str, &str, &str)]) {
    let token = server.admin_token();
    let before = count_lines(server, "routing configuration applied live");
    for (kind, name, body) in objects {
        let (status, resp) = super::http(
            &server.http,
            "PUT",
            &format!("/api/v1/routing/{kind}/{name}"),
            Some(&token),
            body,
        );
        assert!(
            status == 200 || status == 201,
            "PUT {kind}/{name}: {status} {resp}"
        );
    }
    let until = Instant::now() + Duration::from_secs(20);
    while count_lines(server, "routing configuration applied live") < before + objects.len() {
        assert!(Instant::now() < until, "routing changes never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The gateway's model follows the same update on its own channel.
    std::thread::sleep(Duration::from_millis(200));
}

/// A PCMU + telephone-event SDP offer receiving at 127.0.0.1:`port`.
pub fn sdp_dtmf(port: u16) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    )
}

/// A caller answered by zentrale (before any agent: music, IVR, voicemail).
pub struct MediaCaller {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub server: SocketAddr,
    /// Where the relay receives our RTP.
    pub relay: SocketAddr,
    /// When our INVITE went out.
    pub dialled_at: Instant,
    to_hdr: String,
    call_id: String,
    cseq: std::cell::Cell<u32>,
    seq: std::cell::Cell<u16>,
}

impl MediaCaller {
    /// Dials `did` from 127.0.0.1:`sip_port` (RTP on `rtp_port`) and ACKs the 200.
    pub fn call(server: SocketAddr, did: &str, sip_port: u16, rtp_port: u16) -> MediaCaller {
        let sip = UdpSocket::bind(("127.0.0.1", sip_port)).unwrap();
        let rtp = UdpSocket::bind(("127.0.0.1", rtp_port)).unwrap();
        let me = sip.local_addr().unwrap();
        let offer = sdp_dtmf(rtp_port);
        let call_id = format!("cm-{sip_port}-{}@test", std::process::id());
        let invite = format!(
            "INVITE sip:{did}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcm1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930555666@{me}>;tag=caller\r\nTo: <sip:{did}@{server}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:+4930555666@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        let dialled_at = Instant::now();
        sip.send_to(invite.as_bytes(), server).unwrap();
        let (ok, _) = recv_sip(
            &sip,
            Duration::from_secs(20),
            |m| m.status() == Some(200) && header(m, &HeaderName::CSeq).contains("INVITE"),
            "the 200 to the caller",
        );
        let to_hdr = header(&ok, &HeaderName::To);
        let ack = format!(
            "ACK sip:zentrale@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcm2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930555666@{me}>;tag=caller\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sip.send_to(ack.as_bytes(), server).unwrap();
        MediaCaller {
            relay: sdp_rtp(ok.body()),
            sip,
            rtp,
            server,
            dialled_at,
            to_hdr,
            call_id,
            cseq: std::cell::Cell::new(1),
            seq: std::cell::Cell::new(0),
        }
    }

    fn request(&self, method: &str, extra: &str, body: &str) -> u32 {
        let me = self.sip.local_addr().unwrap();
        let cseq = self.cseq.get() + 1;
        self.cseq.set(cseq);
        let text = format!(
            "{method} sip:zentrale@{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcm{method}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930555666@{me}>;tag=caller\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            self.server,
            self.to_hdr,
            self.call_id,
            body.len()
        );
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
        cseq
    }

    /// Presses `digit` by SIP INFO (`application/dtmf-relay`) and waits for the 200.
    pub fn info_digit(&self, digit: char) {
        let cseq = self.request(
            "INFO",
            "Content-Type: application/dtmf-relay\r\n",
            &format!("Signal={digit}\r\nDuration=160\r\n"),
        );
        recv_sip(
            &self.sip,
            Duration::from_secs(10),
            |m| m.status() == Some(200) && header(m, &HeaderName::CSeq) == format!("{cseq} INFO"),
            "the 200 to INFO",
        );
    }

    /// Presses `digit` as RFC 4733 telephone-events (PT 101), paced every 20 ms.
    pub fn rtp_digit(&self, digit: char) {
        let mut sender = DtmfSender::new(Digit::from_char(digit).unwrap(), 8000 * 7, 120, 10);
        let start = Instant::now();
        while let Some(p) = sender.poll_packet() {
            let at = start + Duration::from_millis(u64::from(p.send_offset_ms));
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let seq = self.seq.get();
            self.seq.set(seq.wrapping_add(1));
            let mut pkt = vec![0x80, 101 | if p.marker { 0x80 } else { 0 }];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&p.rtp_timestamp.to_be_bytes());
            pkt.extend_from_slice(&0x7777_0001u32.to_be_bytes());
            pkt.extend_from_slice(&p.payload);
            self.rtp.send_to(&pkt, self.relay).unwrap();
        }
    }

    /// Sends `freq` as paced PCMU for `dur` (what arrives meanwhile stays in the socket).
    pub fn send_tone(&self, freq: f64, dur: Duration) {
        let mut tone = ToneGenerator::new(freq, 8000);
        let start = Instant::now();
        let mut n: u32 = 0;
        while start.elapsed() < dur {
            let mut pcm = [0i16; 160];
            tone.fill(&mut pcm);
            let seq = self.seq.get();
            self.seq.set(seq.wrapping_add(1));
            let mut pkt = vec![0x80, 0];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&(n * 160).to_be_bytes());
            pkt.extend_from_slice(&0x7777_0002u32.to_be_bytes());
            let mut payload = [0u8; 160];
            sip_gateway::audio::g711::encode_into(Law::Mu, &pcm, &mut payload);
            pkt.extend_from_slice(&payload);
            self.rtp.send_to(&pkt, self.relay).unwrap();
            n += 1;
            let next = start + Duration::from_millis(20 * u64::from(n));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    /// Collects the PCMU audio arriving for `dur` (sending nothing).
    pub fn listen(&self, dur: Duration) -> Heard {
        let mut heard = Vec::new();
        let mut buf = [0u8; 2048];
        let until = Instant::now() + dur;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return heard;
            }
            self.rtp.set_read_timeout(Some(left)).unwrap();
            if let Ok((n, _)) = self.rtp.recv_from(&mut buf)
                && n > 12
                && buf[0] >> 6 == 2
                && buf[1] & 0x7f == 0
            {
                let mut pcm = vec![0i16; n - 12];
                decode_into(Law::Mu, &buf[12..n], &mut pcm);
                heard.push((Instant::now(), pcm));
            }
        }
    }

    /// Waits for zentrale's BYE and answers it.
    pub fn await_bye(&self, limit: Duration) {
        let (bye, from) = recv_sip(
            &self.sip,
            limit,
            |m| m.method().is_some_and(|x| x.as_bytes() == b"BYE"),
            "zentrale's BYE to the caller",
        );
        respond(&self.sip, from, &bye, "200 OK", "");
    }

    /// Hangs up and waits for the 200.
    pub fn bye(&self) {
        let cseq = self.request("BYE", "", "");
        recv_sip(
            &self.sip,
            Duration::from_secs(10),
            |m| m.status() == Some(200) && header(m, &HeaderName::CSeq) == format!("{cseq} BYE"),
            "the 200 to BYE",
        );
    }
}

/// Which of `freqs` dominates a 20 ms frame (power above `floor` and four times any other);
/// `None` for silence or a mixture.
pub fn frame_tone(frame: &[i16], freqs: &[f64], floor: f64) -> Option<f64> {
    let powers: Vec<f64> = freqs.iter().map(|f| detect(frame, *f)).collect();
    let (i, best) = powers
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let others = powers
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .all(|(_, p)| *best > 4.0 * p);
    (*best > floor && others).then_some(freqs[i])
}

/// The tone of each frame heard, with its arrival time.
pub fn classify(heard: &Heard, freqs: &[f64]) -> Vec<(Instant, Option<f64>)> {
    heard
        .iter()
        .map(|(t, f)| (*t, frame_tone(f, freqs, 0.005)))
        .collect()
}

/// Prints what the server logged so far (for a failing test's output).
pub fn dump_log(server: &Server, filter: &str) {
    count_lines(server, "");
    for l in server.seen.borrow().iter().filter(|l| l.contains(filter)) {
        println!("server: {l}");
    }
}
