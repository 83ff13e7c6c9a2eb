//! The SIP core against a real peer: SIPp (Debian `sip-tester`) places calls and registers
//! over UDP on 127.0.0.1 to a small blocking UDP loop that runs the parser, the validator, the
//! transaction layer and the registrar exactly as the gateway's shell will. SIPp counts a call
//! as failed on any unexpected message, missing response or timeout; its exit status 0 means
//! every call succeeded. One run loses 5 % of SIPp's packets so both sides' retransmission
//! timers have to do their job.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sip_gateway::sip::auth::{Algorithm, DigestServer};
use sip_gateway::sip::message::{Limits, Message, response_to_source};
use sip_gateway::sip::registrar::{RegisterAction, Registrar, RegistrarConfig};
use sip_gateway::sip::transaction::{Event, Peer, TimerConfig, TransactionLayer, TransportKind};
use sip_gateway::sip::{Method, Policy, Verdict, validate};

struct Stats {
    invites: usize,
    byes: usize,
    registers_ok: usize,
    rejected: usize,
    bindings_1001: usize,
}

/// The UAS loop: what the gateway's UDP shell does, minus the B2BUA.
fn serve(sock: UdpSocket, stop: Arc<AtomicBool>) -> Stats {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut registrar = Registrar::new(
        RegistrarConfig {
            // SIPp 3.6 computes MD5 digests only.
            algorithms: vec![Algorithm::Md5],
            ..RegistrarConfig::default()
        },
        DigestServer::new("zentrale", b"interop key", 300),
    );
    let limits = Limits::default();
    let policy = Policy::default();
    let mut stats = Stats {
        invites: 0,
        byes: 0,
        registers_ok: 0,
        rejected: 0,
        bindings_1001: 0,
    };
    let mut buf = vec![0u8; 65_536];
    let local = sock.local_addr().unwrap();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = local.ip()
    );
    let mut tag = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = layer
            .poll_timeout()
            .map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let now = Instant::now();
            let peer = Peer {
                addr: from,
                transport: TransportKind::Udp,
            };
            if let Ok(msg) = Message::parse_datagram(Bytes::copy_from_slice(&buf[..n]), &limits) {
                match validate(&msg, &policy) {
                    Verdict::Accept => layer.handle_message(now, msg, peer),
                    Verdict::Reject(r) => {
                        stats.rejected += 1;
                        sock.send_to(&r.response(&msg, b"rej"), from).unwrap();
                    }
                    Verdict::Drop(_) => {}
                }
            }
        }
        let now = Instant::now();
        layer.handle_timeout(now);
        while let Some(ev) = layer.poll_event() {
            if let Event::Request {
                tx,
                request,
                source,
                ..
            } = ev
            {
                tag += 1;
                let to_tag = format!("uas{tag}");
                let reply = |code, reason: &str| {
                    response_to_source(
                        &request,
                        Some(source.addr),
                        code,
                        reason,
                        Some(to_tag.as_bytes()),
                    )
                };
                match request.method() {
                    Some(Method::Invite) => {
                        stats.invites += 1;
                        layer
                            .respond(now, tx, reply(180, "Ringing").finish())
                            .unwrap();
                        let ok = reply(200, "OK")
                            .header(b"Contact", format!("<sip:uas@{local}>").as_bytes())
                            .header(b"Content-Type", b"application/sdp")
                            .body(sdp.as_bytes());
                        layer.respond(now, tx, ok).unwrap();
                    }
                    Some(Method::Register) => {
                        let wall = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let pw = |u: &str| (u == "1001").then(|| "demo1001".to_string());
                        if let RegisterAction::Respond { status, bytes } =
                            registrar.handle_register(now, wall, &request, source, pw)
                        {
                            if status == 200 {
                                stats.registers_ok += 1;
                            }
                            layer.respond(now, tx, bytes).unwrap();
                        }
                    }
                    Some(Method::Bye) => {
                        stats.byes += 1;
                        layer.respond(now, tx, reply(200, "OK").finish()).unwrap();
                    }
                    _ => {
                        layer.respond(now, tx, reply(200, "OK").finish()).unwrap();
                    }
                }
            }
        }
        while let Some(t) = layer.poll_transmit() {
            let _ = sock.send_to(&t.bytes, t.peer.addr);
        }
    }
    stats.bindings_1001 = registrar.bindings("1001", Instant::now()).len();
    stats
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs SIPp against a fresh UAS loop; returns SIPp's exit status and the UAS's counters.
fn run_sipp(args: &[&str]) -> (i32, Stats, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let server = thread::spawn(move || serve(sock, s2));
    let port = free_port().to_string();
    let target = addr.to_string();
    let mut cmd = Command::new("timeout");
    cmd.args([
        "120",
        "sipp",
        &target,
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-nostdin",
        "-timeout",
        "90s",
    ]);
    cmd.args(args);
    let out = cmd
        .output()
        .expect("SIPp must be installed: apt-get install sip-tester");
    stop.store(true, Ordering::Relaxed);
    let stats = server.join().unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stats, log)
}

#[test]
fn sipp_calls_complete_through_our_transactions() {
    let (code, stats, log) = run_sipp(&[
        "-sn",
        "uac",
        "-m",
        "200",
        "-r",
        "100",
        "-d",
        "10",
        "-recv_timeout",
        "10000",
    ]);
    assert_eq!(code, 0, "SIPp reported failed calls:\n{log}");
    assert_eq!(stats.invites, 200);
    assert_eq!(stats.byes, 200);
    assert_eq!(stats.rejected, 0);
}

#[test]
fn sipp_calls_complete_when_5_percent_of_packets_are_lost() {
    let (code, stats, log) = run_sipp(&[
        "-sn",
        "uac",
        "-m",
        "100",
        "-r",
        "50",
        "-d",
        "10",
        "-lost",
        "5",
        "-recv_timeout",
        "40000",
    ]);
    assert_eq!(code, 0, "SIPp reported failed calls under loss:\n{log}");
    // Each call created exactly one server transaction however often SIPp retransmitted.
    assert!(
        stats.invites <= 100 && stats.invites >= 90,
        "invites {}",
        stats.invites
    );
    // BYEs reach us only after SIPp got our 200 and ACKed it.
    assert!(stats.byes >= 90, "byes {}", stats.byes);
}

#[test]
fn sipp_registers_with_digest() {
    let dir = std::env::temp_dir().join(format!("zentrale-sipp-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("register.xml");
    std::fs::write(&scenario, REGISTER_XML).unwrap();
    let (code, stats, log) = run_sipp(&[
        "-sf",
        scenario.to_str().unwrap(),
        "-m",
        "5",
        "-r",
        "5",
        "-recv_timeout",
        "10000",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 0, "SIPp REGISTER with digest failed:\n{log}");
    assert_eq!(stats.registers_ok, 5);
    // Five registrations of the same contact are one binding.
    assert_eq!(stats.bindings_1001, 1);
}

const REGISTER_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="REGISTER with digest">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:1001@[remote_ip]>;tag=[call_number]
      To: <sip:1001@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:1001@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:1001@[remote_ip]>;tag=[call_number]
      To: <sip:1001@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:1001@[local_ip]:[local_port]>
      [authentication username=1001 password=demo1001]
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;
