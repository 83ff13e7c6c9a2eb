//! The anchored RTP relay against real UDP peers on 127.0.0.1: two-way audio proven by
//! tones (G.711 µ-law from `audio-codec-algorithms`, detected with the Goertzel algorithm),
//! latching to a NAT-changed source, the RTP timeout event, port release on hangup, and
//! loss-free carriage of more than 100 kbit/s per channel.
//!
//! Each test runs its own relay on its own port range so the tests can run in parallel.
//! Waits are bounded (a test that hangs fails), and nothing asserts on elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use audio_codec_algorithms::{decode_ulaw, encode_ulaw};
use sip_gateway::media::{
    CallStats, IoMode, Leg, LegSetup, MediaError, MediaEvent, MediaRelay, MediaSessionId,
    PayloadTypes, PortError, RelayConfig,
};
use sip_gateway::sdp::{Codec, LocalMedia, SessionDescription};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A phone: a UDP socket on 127.0.0.1 with a receive timeout so no test can hang.
fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn setup(peer: Option<SocketAddr>) -> LegSetup {
    LegSetup {
        peer,
        rtcp_peer: None,
        payload_types: PayloadTypes::of(&[0, 101]),
        telephone_event: Some(101),
        codec: None,
    }
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.extend_from_slice(&[0x80, pt]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// 20 ms of a sine tone at 8 kHz, µ-law encoded, starting at sample `start`.
fn tone_frame(freq: f64, start: u32) -> Vec<u8> {
    (0..160u32)
        .map(|i| {
            let t = f64::from(start + i) / 8000.0;
            let s = (0.5 * f64::from(i16::MAX) * (2.0 * PI * freq * t).sin()) as i16;
            encode_ulaw(s)
        })
        .collect()
}

/// Goertzel power of `freq` in `samples`, normalised by the signal energy: close to 1 for a
/// pure tone at `freq`, close to 0 for anything else.
fn tone_share(samples: &[f64], freq: f64) -> f64 {
    let n = samples.len() as f64;
    let coeff = 2.0 * (2.0 * PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f64 = samples.iter().map(|x| x * x).sum();
    if energy == 0.0 {
        return 0.0;
    }
    power / (energy * n / 2.0)
}

/// Sends `frames` 20 ms tone frames from `from` to `to`, paced at 20 ms.
fn send_tone(from: &UdpSocket, to: SocketAddr, freq: f64, frames: u16, ssrc: u32) {
    for k in 0..frames {
        let ts = u32::from(k) * 160;
        let p = rtp_packet(0, k, ts, ssrc, &tone_frame(freq, ts));
        from.send_to(&p, to).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
}

/// Receives RTP on `sock` until `want` packets arrived or reads time out for a while;
/// returns the decoded samples in sequence order and the packet count.
fn receive_audio(sock: &UdpSocket, want: usize) -> (Vec<f64>, usize) {
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + WAIT;
    while frames.len() < want && Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            frames.push((seq, buf[12..n].to_vec()));
        }
    }
    frames.sort_by_key(|f| f.0);
    let count = frames.len();
    let samples = frames
        .into_iter()
        .flat_map(|(_, p)| p.into_iter().map(|b| f64::from(decode_ulaw(b))))
        .collect();
    (samples, count)
}

/// Polls the call's counters until `done` holds (bounded by [`WAIT`]).
fn wait_for(
    rt: &tokio::runtime::Runtime,
    relay: &MediaRelay,
    id: MediaSessionId,
    done: impl Fn(&CallStats) -> bool,
) -> CallStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = rt.block_on(relay.stats(id)).unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "relay never reached the state: {stats:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn next_event(
    rt: &tokio::runtime::Runtime,
    events: &mut UnboundedReceiver<MediaEvent>,
) -> MediaEvent {
    rt.block_on(async { tokio::time::timeout(WAIT, events.recv()).await })
        .expect("no media event in time")
        .expect("relay event channel closed")
}

/// Sets up a call the way the B2BUA does, from SDP: the caller's offer creates the call,
/// the anchored offer goes to the agent, the agent's answer updates leg B, and the anchored
/// answer goes back to the caller. Then both send tones to where the SDP told them.
fn tones_cross_the_relay_both_ways(io_mode: IoMode, first_port: u16) {
    let rt = runtime();
    let cfg = RelayConfig::default()
        .ports(first_port, first_port + 99)
        .io_mode(io_mode);
    let (relay, _events) = MediaRelay::start(cfg).unwrap();
    let (caller, agent) = (phone(), phone());
    let offer = SessionDescription::parse(
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n",
            caller.local_addr().unwrap().port()
        )
        .as_bytes(),
    )
    .unwrap();
    let leg_a = LegSetup::from_sdp(&offer).unwrap();
    let call = relay
        .add_call(
            leg_a,
            LegSetup {
                peer: None,
                ..leg_a
            },
        )
        .unwrap();
    let mut to_agent = offer.clone();
    to_agent.anchor(LocalMedia {
        address: call.address,
        port: call.leg_b.rtp,
    });
    let agent_answer = to_agent
        .answer(
            &[Codec::Pcmu, Codec::TelephoneEvent],
            LocalMedia {
                address: agent.local_addr().unwrap().ip(),
                port: agent.local_addr().unwrap().port(),
            },
            2,
        )
        .unwrap();
    assert_eq!(agent_answer.audio.codec, Codec::Pcmu);
    relay
        .update_leg(
            call.id,
            Leg::B,
            LegSetup::from_sdp(&agent_answer.sdp).unwrap(),
        )
        .unwrap();
    rt.block_on(relay.stats(call.id)).unwrap();
    let mut to_caller = agent_answer.sdp.clone();
    to_caller.anchor(LocalMedia {
        address: call.address,
        port: call.leg_a.rtp,
    });
    let to_a = to_caller.rtp_destination(0).unwrap();
    let to_b = agent_answer.remote_rtp.unwrap();
    assert_eq!(to_a, SocketAddr::new(call.address, call.leg_a.rtp));
    assert_eq!(to_b, SocketAddr::new(call.address, call.leg_b.rtp));

    thread::scope(|s| {
        let c = &caller;
        let a = &agent;
        s.spawn(move || send_tone(c, to_a, 1000.0, 50, 0x1111));
        s.spawn(move || send_tone(a, to_b, 440.0, 50, 0x2222));
        let at_agent = s.spawn(move || receive_audio(a, 50));
        let at_caller = s.spawn(move || receive_audio(c, 50));
        let (agent_heard, n_agent) = at_agent.join().unwrap();
        let (caller_heard, n_caller) = at_caller.join().unwrap();
        assert_eq!((n_agent, n_caller), (50, 50));
        let at_1k = tone_share(&agent_heard, 1000.0);
        assert!(at_1k > 0.9, "agent: 1 kHz share {at_1k}");
        assert!(tone_share(&agent_heard, 440.0) < 0.01);
        let at_440 = tone_share(&caller_heard, 440.0);
        assert!(at_440 > 0.9, "caller: 440 Hz share {at_440}");
        assert!(tone_share(&caller_heard, 1000.0) < 0.01);
    });

    let stats = rt.block_on(relay.stats(call.id)).unwrap();
    assert_eq!(stats.leg_a.packets, 50);
    assert_eq!(stats.leg_a.forwarded, 50);
    assert_eq!(stats.leg_a.lost, 0);
    assert_eq!(stats.leg_b.forwarded, 50);
    assert_eq!(stats.leg_a.latched, Some(caller.local_addr().unwrap()));
}

#[test]
fn tones_cross_the_relay_both_ways_batched_io() {
    tones_cross_the_relay_both_ways(IoMode::Batched, 41000);
}

#[test]
fn tones_cross_the_relay_both_ways_per_packet_io() {
    tones_cross_the_relay_both_ways(IoMode::PerPacket, 41700);
}

#[test]
fn hold_and_resume_through_update_leg() {
    let rt = runtime();
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(41800, 41899)).unwrap();
    let (caller, agent) = (phone(), phone());
    let agent_setup = setup(Some(agent.local_addr().unwrap()));
    let call = relay
        .add_call(setup(Some(caller.local_addr().unwrap())), agent_setup)
        .unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    // The agent puts the caller on hold (re-INVITE with c=0.0.0.0 / no address):
    // the caller's audio has nowhere to go and is counted, not sent.
    relay.update_leg(call.id, Leg::B, setup(None)).unwrap();
    // Commands are applied in order, so a stats reply proves the update is in effect.
    rt.block_on(relay.stats(call.id)).unwrap();
    send_tone(&caller, to_a, 1000.0, 5, 1);
    wait_for(&rt, &relay, call.id, |s| s.leg_a.undeliverable == 5);
    let mut buf = [0u8; 512];
    assert!(
        agent.recv_from(&mut buf).is_err(),
        "audio leaked to a held agent"
    );
    // Resume: audio flows again.
    relay.update_leg(call.id, Leg::B, agent_setup).unwrap();
    rt.block_on(relay.stats(call.id)).unwrap();
    thread::scope(|s| {
        s.spawn(|| send_tone(&caller, to_a, 1000.0, 25, 1));
        let (heard, n) = receive_audio(&agent, 25);
        assert_eq!(n, 25);
        assert!(tone_share(&heard, 1000.0) > 0.9);
    });
}

#[test]
fn latching_follows_a_nat_changed_source_port() {
    let rt = runtime();
    let cfg = RelayConfig::default()
        .ports(41100, 41199)
        .relatch_after(Duration::from_secs(1));
    let (relay, mut events) = MediaRelay::start(cfg).unwrap();
    let agent = phone();
    // The caller's SDP names an address it will never receive on (it is behind NAT).
    let signalled: SocketAddr = phone().local_addr().unwrap();
    let call = relay
        .add_call(
            setup(Some(signalled)),
            setup(Some(agent.local_addr().unwrap())),
        )
        .unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    let to_b = SocketAddr::new(call.address, call.leg_b.rtp);

    // Junk and a payload type that was not negotiated must not latch.
    let intruder = phone();
    intruder.send_to(b"not rtp at all", to_a).unwrap();
    intruder
        .send_to(&rtp_packet(8, 1, 0, 9, &[0xd5; 160]), to_a)
        .unwrap();

    // The caller's real (NATed) source.
    let nat1 = phone();
    nat1.send_to(&rtp_packet(0, 1, 0, 7, &tone_frame(1000.0, 0)), to_a)
        .unwrap();
    match next_event(&rt, &mut events) {
        MediaEvent::Latched { id, leg, peer } => {
            assert_eq!(
                (id, leg, peer),
                (call.id, Leg::A, nat1.local_addr().unwrap())
            );
        }
        other => panic!("expected a latch, got {other:?}"),
    }
    // The agent's audio now reaches the NATed source, not the signalled address.
    send_tone(&agent, to_b, 440.0, 5, 0x2222);
    let (heard, n) = receive_audio(&nat1, 5);
    assert_eq!(n, 5);
    assert!(tone_share(&heard, 440.0) > 0.9);

    // The NAT rebinds the caller to a new port while the old one is active: refused.
    nat1.send_to(&rtp_packet(0, 2, 160, 7, &tone_frame(1000.0, 160)), to_a)
        .unwrap();
    wait_for(&rt, &relay, call.id, |s| s.leg_a.packets == 2);
    let nat2 = phone();
    nat2.send_to(&rtp_packet(0, 3, 320, 7, &tone_frame(1000.0, 320)), to_a)
        .unwrap();
    let stats = wait_for(&rt, &relay, call.id, |s| s.leg_a.rejected == 3);
    assert_eq!(stats.leg_a.latched, Some(nat1.local_addr().unwrap()));

    // After the old mapping has been silent for longer than relatch_after: re-latched.
    thread::sleep(Duration::from_millis(1200));
    nat2.send_to(&rtp_packet(0, 4, 480, 7, &tone_frame(1000.0, 320)), to_a)
        .unwrap();
    loop {
        match next_event(&rt, &mut events) {
            MediaEvent::Latched { leg: Leg::B, .. } => continue,
            MediaEvent::Latched { leg, peer, .. } => {
                assert_eq!((leg, peer), (Leg::A, nat2.local_addr().unwrap()));
                break;
            }
            other => panic!("expected a re-latch, got {other:?}"),
        }
    }
    send_tone(&agent, to_b, 440.0, 5, 0x2222);
    let (heard, n) = receive_audio(&nat2, 5);
    assert_eq!(n, 5);
    assert!(tone_share(&heard, 440.0) > 0.9);
}

#[test]
fn silent_leg_raises_rtp_timeout() {
    let rt = runtime();
    let cfg = RelayConfig::default()
        .ports(41200, 41299)
        .rtp_timeout(Duration::from_millis(400));
    let (relay, mut events) = MediaRelay::start(cfg).unwrap();
    let (caller, agent) = (phone(), phone());
    let call = relay
        .add_call(
            setup(Some(caller.local_addr().unwrap())),
            setup(Some(agent.local_addr().unwrap())),
        )
        .unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    let to_b = SocketAddr::new(call.address, call.leg_b.rtp);
    // The agent keeps talking for 1.2 s; the caller sends one packet and dies.
    caller
        .send_to(&rtp_packet(0, 0, 0, 1, &tone_frame(1000.0, 0)), to_a)
        .unwrap();
    let talker = thread::spawn({
        let agent = agent.try_clone().unwrap();
        move || send_tone(&agent, to_b, 440.0, 60, 2)
    });
    let mut timeouts = Vec::new();
    while timeouts.is_empty() {
        if let MediaEvent::RtpTimeout { id, leg } = next_event(&rt, &mut events) {
            timeouts.push((id, leg));
        }
    }
    talker.join().unwrap();
    // The dead caller times out first; the agent only after it stops talking.
    assert_eq!(timeouts, [(call.id, Leg::A)]);
    loop {
        if let MediaEvent::RtpTimeout { id, leg } = next_event(&rt, &mut events) {
            assert_eq!((id, leg), (call.id, Leg::B));
            break;
        }
    }
}

#[test]
fn ports_are_released_on_hangup() {
    let rt = runtime();
    // Four port pairs: room for exactly two calls.
    let (relay, mut events) =
        MediaRelay::start(RelayConfig::default().ports(41300, 41307)).unwrap();
    let first = relay.add_call(setup(None), setup(None)).unwrap();
    let _second = relay.add_call(setup(None), setup(None)).unwrap();
    assert_eq!(relay.ports_in_use(), 4);
    assert!(matches!(
        relay.add_call(setup(None), setup(None)),
        Err(MediaError::Ports(PortError::Exhausted))
    ));
    // The failed attempt must not leak the pair it had taken.
    assert_eq!(relay.ports_in_use(), 4);

    relay.remove_call(first.id).unwrap();
    loop {
        if let MediaEvent::Removed { id, .. } = next_event(&rt, &mut events) {
            assert_eq!(id, first.id);
            break;
        }
    }
    assert_eq!(relay.ports_in_use(), 2);
    // The freed pairs are bindable again: the relay binds them for the next call.
    let third = relay.add_call(setup(None), setup(None)).unwrap();
    let mut reused = [third.leg_a.rtp, third.leg_b.rtp];
    reused.sort();
    let mut freed = [first.leg_a.rtp, first.leg_b.rtp];
    freed.sort();
    assert_eq!(reused, freed);
    assert!(matches!(
        rt.block_on(relay.stats(first.id)),
        Err(MediaError::UnknownSession(_))
    ));
}

#[test]
fn each_channel_carries_over_100_kbit_per_second_without_loss() {
    let rt = runtime();
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(41400, 41499)).unwrap();
    let (caller, agent) = (phone(), phone());
    let call = relay
        .add_call(
            setup(Some(caller.local_addr().unwrap())),
            setup(Some(agent.local_addr().unwrap())),
        )
        .unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    let to_b = SocketAddr::new(call.address, call.leg_b.rtp);
    // 1,000-byte packets every 5 ms: 1.6 Mbit/s per direction by construction, 16x the
    // requirement, for 400 packets (2 s).
    const PACKETS: u16 = 400;
    const SIZE: usize = 1000;
    let send = |from: &UdpSocket, to: SocketAddr, ssrc: u32| {
        for seq in 0..PACKETS {
            let payload: Vec<u8> = (0..SIZE - 12).map(|i| (i as u16 ^ seq) as u8).collect();
            from.send_to(&rtp_packet(0, seq, u32::from(seq) * 40, ssrc, &payload), to)
                .unwrap();
            thread::sleep(Duration::from_millis(5));
        }
    };
    let receive = |sock: &UdpSocket| {
        let mut seen = vec![false; usize::from(PACKETS)];
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + WAIT;
        while seen.iter().any(|s| !s) && Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                assert_eq!(n, SIZE, "packet size changed in transit");
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let intact = buf[12..n]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i as u16 ^ seq) as u8);
                assert!(intact, "payload of packet {seq} changed in transit");
                seen[usize::from(seq)] = true;
            }
        }
        seen.iter().filter(|s| **s).count()
    };
    thread::scope(|s| {
        let (c, a) = (&caller, &agent);
        s.spawn(move || send(c, to_a, 1));
        s.spawn(move || send(a, to_b, 2));
        let at_agent = s.spawn(move || receive(a));
        let at_caller = s.spawn(move || receive(c));
        assert_eq!(at_agent.join().unwrap(), usize::from(PACKETS));
        assert_eq!(at_caller.join().unwrap(), usize::from(PACKETS));
    });
    let stats = rt.block_on(relay.stats(call.id)).unwrap();
    let total_bits = 2 * u64::from(PACKETS) * SIZE as u64 * 8;
    eprintln!("carried {total_bits} bits in both directions without loss");
    for leg in [stats.leg_a, stats.leg_b] {
        assert_eq!(leg.packets, u64::from(PACKETS));
        assert_eq!(leg.bytes, u64::from(PACKETS) * SIZE as u64);
        assert_eq!((leg.lost, leg.undeliverable, leg.rejected), (0, 0, 0));
    }
}

#[test]
fn rtcp_passes_through_on_the_next_port() {
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(41500, 41599)).unwrap();
    let (caller_rtp, agent_rtp) = (phone(), phone());
    let agent_rtcp = phone();
    agent_rtcp.set_read_timeout(Some(WAIT)).unwrap();
    let call = relay
        .add_call(
            setup(Some(caller_rtp.local_addr().unwrap())),
            LegSetup {
                rtcp_peer: Some(agent_rtcp.local_addr().unwrap()),
                ..setup(Some(agent_rtp.local_addr().unwrap()))
            },
        )
        .unwrap();
    let caller_rtcp = phone();
    let rr = [
        0x81u8, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0,
    ];
    caller_rtcp
        .send_to(&rr, SocketAddr::new(call.address, call.leg_a.rtcp()))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = agent_rtcp.recv_from(&mut buf).expect("RTCP relayed");
    assert_eq!(&buf[..n], &rr);
    assert_eq!(from, SocketAddr::new(call.address, call.leg_b.rtcp()));
}

#[test]
fn periodic_stats_events_report_counters() {
    let rt = runtime();
    let cfg = RelayConfig::default()
        .ports(41900, 41999)
        .stats_interval(Some(Duration::from_millis(200)));
    let (relay, mut events) = MediaRelay::start(cfg).unwrap();
    let (caller, agent) = (phone(), phone());
    let call = relay
        .add_call(
            setup(Some(caller.local_addr().unwrap())),
            setup(Some(agent.local_addr().unwrap())),
        )
        .unwrap();
    send_tone(
        &caller,
        SocketAddr::new(call.address, call.leg_a.rtp),
        1000.0,
        3,
        1,
    );
    wait_for(&rt, &relay, call.id, |s| s.leg_a.packets == 3);
    loop {
        if let MediaEvent::Stats { id, stats } = next_event(&rt, &mut events)
            && stats.leg_a.packets == 3
        {
            assert_eq!(id, call.id);
            assert_eq!(stats.leg_a.forwarded, 3);
            break;
        }
    }
}

#[test]
fn relays_over_ipv6() {
    // Hosts without IPv6 on loopback cannot run this; say so instead of failing.
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let rt = runtime();
    let cfg = RelayConfig::default()
        .bind_address("::1".parse().unwrap())
        .ports(42000, 42099);
    let (relay, _events) = MediaRelay::start(cfg).unwrap();
    let phone6 = || {
        let s = UdpSocket::bind("[::1]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };
    let (caller, agent) = (phone6(), phone6());
    let call = relay
        .add_call(
            setup(Some(caller.local_addr().unwrap())),
            setup(Some(agent.local_addr().unwrap())),
        )
        .unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    assert!(to_a.is_ipv6());
    thread::scope(|s| {
        s.spawn(|| send_tone(&caller, to_a, 1000.0, 25, 1));
        let (heard, n) = receive_audio(&agent, 25);
        assert_eq!(n, 25);
        assert!(tone_share(&heard, 1000.0) > 0.9);
    });
    let stats = rt.block_on(relay.stats(call.id)).unwrap();
    assert_eq!(stats.leg_a.latched, Some(caller.local_addr().unwrap()));
}
