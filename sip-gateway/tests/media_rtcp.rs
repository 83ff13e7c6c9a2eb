//! RTCP of the media relay against real UDP peers on 127.0.0.1: in processed mode zentrale
//! sends each leg its own sender report (with a report block about what it receives from that
//! leg) and computes the round trip from the leg's receiver report; in plain-bridge mode the
//! peers' reports pass through untouched while the relay learns loss, jitter and round trip
//! from them. The final statistics carry the RTT and an E-model MOS.
//!
//! Ports 43900-43999 (the media_processing tests use 43000-43899). Waits poll with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use sip_gateway::audio::prompt::Prompt;
use sip_gateway::media::rtp::{
    ReportBlock, RtcpItem, SenderInfo, ntp_middle, parse_rtcp, write_report,
};
use sip_gateway::media::{
    AudioCommand, CallStats, Leg, LegSetup, MediaEvent, MediaRelay, MediaSessionId, PayloadTypes,
    RelayConfig,
};

const WAIT: Duration = Duration::from_secs(10);

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// A phone with separate RTP and RTCP sockets.
struct Phone {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Phone {
    fn new() -> Phone {
        Phone {
            rtp: socket(),
            rtcp: socket(),
        }
    }

    fn setup(&self) -> LegSetup {
        LegSetup {
            rtcp_peer: Some(self.rtcp.local_addr().unwrap()),
            ..LegSetup::new(
                Some(self.rtp.local_addr().unwrap()),
                PayloadTypes::of(&[0, 101]),
            )
        }
    }

    /// Sends `n` µ-law silence packets, one per 20 ms.
    fn send_rtp(&self, to: SocketAddr, ssrc: u32, first: u16, n: u16) {
        for k in first..first + n {
            let mut p = [0xffu8; 172];
            p[..2].copy_from_slice(&[0x80, 0]);
            p[2..4].copy_from_slice(&k.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(k) * 160).to_be_bytes());
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            self.rtp.send_to(&p, to).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for an RTCP packet whose items satisfy `pick` (bounded by [`WAIT`]).
    fn wait_rtcp<T>(&self, mut pick: impl FnMut(&[RtcpItem]) -> Option<T>) -> (T, Instant) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 1500];
        loop {
            assert!(Instant::now() < deadline, "no such RTCP packet arrived");
            let Ok(n) = self.rtcp.recv(&mut buf) else {
                continue;
            };
            let mut items = Vec::new();
            assert!(parse_rtcp(&buf[..n], |i| items.push(i)), "malformed RTCP");
            if let Some(t) = pick(&items) {
                return (t, Instant::now());
            }
        }
    }
}

fn relay_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls the call's counters until `done` holds (bounded by [`WAIT`]).
fn wait_stats(
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
        assert!(Instant::now() < deadline, "never reached: {stats:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn processed_legs_get_sender_reports_and_their_receiver_reports_give_rtt_and_mos() {
    let rt = runtime();
    let (relay, mut events) = MediaRelay::start(
        RelayConfig::default()
            .ports(43900, 43949)
            .rtcp_interval(Duration::from_millis(200)),
    )
    .unwrap();
    let (a, b) = (Phone::new(), Phone::new());
    let call = relay.add_call(a.setup(), b.setup()).unwrap();
    relay
        .audio(
            call.id,
            AudioCommand::Play {
                leg: Leg::A,
                items: vec![],
                music: Some(std::sync::Arc::new(Prompt::from_samples(vec![100; 800]))),
                tag: 0,
            },
        )
        .unwrap();
    a.send_rtp(relay_addr(call.leg_a.rtp), 0xA, 0, 30);
    // zentrale's SR to A: its own SSRC, packets sent, and a block about A's stream.
    let ((sender, block), received_at) = a.wait_rtcp(|items| {
        let sender = items.iter().find_map(|i| match i {
            RtcpItem::Sender {
                ssrc, ntp, packets, ..
            } if *packets > 0 => Some((*ssrc, *ntp)),
            _ => None,
        })?;
        let block = items.iter().find_map(|i| match i {
            RtcpItem::Report { block, .. } if block.ssrc == 0xA && block.extended_max >= 20 => {
                Some(*block)
            }
            _ => None,
        })?;
        Some((sender, block))
    });
    assert_eq!(block.cumulative_lost, 0);
    // A answers with an RR naming that SR.
    let held = received_at.elapsed();
    let rr = ReportBlock {
        ssrc: sender.0,
        lsr: ntp_middle(sender.1),
        dlsr: (held.as_micros() * 65_536 / 1_000_000) as u32,
        cumulative_lost: 2,
        jitter: 11,
        ..ReportBlock::default()
    };
    let mut buf = [0u8; 128];
    let n = write_report(&mut buf, 0xA, None, Some(&rr));
    a.rtcp
        .send_to(&buf[..n], relay_addr(call.leg_a.rtcp()))
        .unwrap();
    let stats = wait_stats(&rt, &relay, call.id, |s| s.leg_a.rtt_ms.is_some());
    assert_eq!(stats.leg_a.remote_lost, Some(2));
    assert_eq!(stats.leg_a.remote_jitter, Some(11));
    // No loss on loopback: the E-model gives G.711's ceiling region.
    assert!(stats.leg_a.mos_x100 > 400, "{:?}", stats.leg_a);
    relay.remove_call(call.id).unwrap();
    let removed = rt.block_on(async {
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Some(MediaEvent::Removed { stats, .. })) => return stats,
                Ok(Some(_)) => continue,
                other => panic!("no Removed event: {other:?}"),
            }
        }
    });
    assert!(removed.leg_a.rtt_ms.is_some() && removed.leg_a.mos_x100 > 400);
    drop(b);
}

#[test]
fn plain_bridge_passes_reports_through_and_learns_the_round_trip() {
    let rt = runtime();
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(43950, 43999)).unwrap();
    let (a, b) = (Phone::new(), Phone::new());
    let call = relay.add_call(a.setup(), b.setup()).unwrap();
    a.send_rtp(relay_addr(call.leg_a.rtp), 0xA, 0, 5);
    b.send_rtp(relay_addr(call.leg_b.rtp), 0xB, 0, 5);
    // A's SR passes to B untouched.
    let sr = SenderInfo {
        ssrc: 0xA,
        ntp: 0xE000_0000_1234_0000,
        rtp_timestamp: 800,
        packets: 5,
        octets: 800,
    };
    let mut buf = [0u8; 128];
    let n = write_report(&mut buf, 0xA, Some(&sr), None);
    a.rtcp
        .send_to(&buf[..n], relay_addr(call.leg_a.rtcp()))
        .unwrap();
    let (ntp, got_at) = b.wait_rtcp(|items| {
        items.iter().find_map(|i| match i {
            RtcpItem::Sender { ssrc: 0xA, ntp, .. } => Some(*ntp),
            _ => None,
        })
    });
    assert_eq!(ntp, sr.ntp);
    // B's RR about A's stream, naming A's SR, goes back through the relay to A.
    let rr = ReportBlock {
        ssrc: 0xA,
        lsr: ntp_middle(ntp),
        dlsr: (got_at.elapsed().as_micros() * 65_536 / 1_000_000) as u32,
        cumulative_lost: 3,
        jitter: 17,
        ..ReportBlock::default()
    };
    let n = write_report(&mut buf, 0xB, None, Some(&rr));
    b.rtcp
        .send_to(&buf[..n], relay_addr(call.leg_b.rtcp()))
        .unwrap();
    let (block, _) = a.wait_rtcp(|items| {
        items.iter().find_map(|i| match i {
            RtcpItem::Report {
                reporter: 0xB,
                block,
            } => Some(*block),
            _ => None,
        })
    });
    assert_eq!(block, rr, "the report passes through unchanged");
    let stats = wait_stats(&rt, &relay, call.id, |s| s.leg_b.rtt_ms.is_some());
    assert_eq!(stats.leg_b.remote_lost, Some(3));
    assert_eq!(stats.leg_b.remote_jitter, Some(17));
    assert!(stats.leg_a.mos_x100 > 400 && stats.leg_b.mos_x100 > 400);
}
