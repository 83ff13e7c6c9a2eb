//! The relay's packet path does not allocate: after the legs have latched, relaying a
//! thousand packets both ways performs (next to) no heap allocations in the whole process.
//!
//! The global allocator counts every allocation of every thread (the relay worker's
//! included), so this file holds a single test and builds all its packets beforehand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sip_gateway::media::{LegSetup, MediaRelay, PayloadTypes, RelayConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xff; 160]);
    p
}

/// Sends each packet from `from` to `to` and receives it at `at`.
fn relay_through(packets: &[Vec<u8>], from: &UdpSocket, to: SocketAddr, at: &UdpSocket) -> usize {
    let mut buf = [0u8; 512];
    let mut got = 0;
    for p in packets {
        from.send_to(p, to).unwrap();
        if let Ok((n, _)) = at.recv_from(&mut buf)
            && buf[..n] == p[..]
        {
            got += 1;
        }
    }
    got
}

#[test]
fn relaying_packets_allocates_nothing() {
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(41600, 41699)).unwrap();
    let phone = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let (caller, agent) = (phone(), phone());
    let setup = |s: &UdpSocket| LegSetup {
        peer: Some(s.local_addr().unwrap()),
        rtcp_peer: None,
        payload_types: PayloadTypes::of(&[0]),
        telephone_event: None,
        codec: None,
    };
    let call = relay.add_call(setup(&caller), setup(&agent)).unwrap();
    let to_a = SocketAddr::new(call.address, call.leg_a.rtp);
    let to_b = SocketAddr::new(call.address, call.leg_b.rtp);
    let a_to_b: Vec<Vec<u8>> = (0..510).map(|i| packet(i, 1)).collect();
    let b_to_a: Vec<Vec<u8>> = (0..510).map(|i| packet(i, 2)).collect();

    // Warm-up: both legs latch (which sends events, and may allocate).
    assert_eq!(relay_through(&a_to_b[..10], &caller, to_a, &agent), 10);
    assert_eq!(relay_through(&b_to_a[..10], &agent, to_b, &caller), 10);

    let region = Region::new(GLOBAL);
    let there = relay_through(&a_to_b[10..], &caller, to_a, &agent);
    let back = relay_through(&b_to_a[10..], &agent, to_b, &caller);
    let change = region.change();

    assert_eq!((there, back), (500, 500));
    // 1,000 packets relayed: an allocation per packet would show as >= 1,000. A handful
    // of one-time allocations elsewhere in the process (the test harness, lazily
    // initialised thread-locals on a loaded machine) are tolerated; the relay's own path
    // measured zero in quiet runs.
    assert!(
        change.allocations + change.reallocations < 10,
        "the packet path allocates: {change:?}"
    );
}
