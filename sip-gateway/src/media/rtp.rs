//! Per-packet RTP/RTCP inspection and receive statistics, without I/O.
//!
//! The relay forwards packets untouched; it only looks at the fixed header to decide
//! whether a datagram may latch a leg (it must look like RTP with a negotiated payload
//! type) and to keep the RFC 3550 receiver statistics (loss from sequence numbers,
//! interarrival jitter per appendix A.8). Everything here takes the arrival time as an
//! argument, so it is tested with made-up clocks.

/// A set of RTP payload types (0..=127) as a bitmap, cheap to test per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadTypes(u128);

impl PayloadTypes {
    /// The empty set.
    pub const NONE: PayloadTypes = PayloadTypes(0);

    /// A set holding `pts`; values above 127 are not payload types and are ignored.
    pub fn of(pts: &[u8]) -> PayloadTypes {
        let mut set = 0u128;
        for &pt in pts {
            if pt < 128 {
                set |= 1 << pt;
            }
        }
        PayloadTypes(set)
    }

    /// Whether `pt` is in the set.
    #[inline]
    pub fn contains(self, pt: u8) -> bool {
        pt < 128 && self.0 & (1 << pt) != 0
    }
}

/// The fields of an RTP fixed header the relay needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// Reads the fixed header if `packet` looks like RTP version 2 and not RTCP: long enough
/// for the header and its CSRC list, and a payload type outside the RTCP range that RFC 5761
/// reserves (72..=95 after masking the marker bit).
#[inline]
pub fn rtp_header(packet: &[u8]) -> Option<RtpHeader> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(packet[0] & 0x0f) * 4;
    if packet.len() < 12 + csrc {
        return None;
    }
    let payload_type = packet[1] & 0x7f;
    if (72..=95).contains(&payload_type) {
        return None;
    }
    Some(RtpHeader {
        payload_type,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    })
}

/// The header and payload of an RTP packet: [`rtp_header`] plus the payload with the CSRC
/// list, a header extension (RFC 3550 5.3.1) and padding removed. `None` when the lengths
/// do not add up.
pub fn rtp_payload(packet: &[u8]) -> Option<(RtpHeader, &[u8])> {
    let header = rtp_header(packet)?;
    let mut start = 12 + usize::from(packet[0] & 0x0f) * 4;
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(start..start + 4)?;
        start += 4 + usize::from(u16::from_be_bytes([ext[2], ext[3]])) * 4;
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        let pad = usize::from(*packet.last()?);
        end = end.checked_sub(pad)?;
    }
    Some((header, packet.get(start..end)?))
}

/// Whether `packet` looks like RTCP: version 2 and a packet type of 192..=223 (RFC 5761).
#[inline]
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
}

/// A sequence jump larger than this (RFC 3550 A.1 `MAX_DROPOUT`) starts a new count instead
/// of being booked as loss, e.g. when a phone restarts its stream.
const MAX_DROPOUT: u16 = 3000;

/// Receiver statistics of one RTP stream (one leg, one direction).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    packets: u64,
    bytes: u64,
    /// Loss booked from earlier sequence runs (before an SSRC change or a large jump).
    lost_before: i64,
    run: Option<SequenceRun>,
    /// Jitter in timestamp units, scaled by 16 (the integer form of RFC 3550 A.8).
    jitter_x16: u32,
    last_transit: Option<u32>,
    /// (expected, received) at the last RTCP report, for the per-interval fraction lost.
    at_last_report: (i64, u64),
}

#[derive(Debug, Clone, Copy)]
struct SequenceRun {
    ssrc: u32,
    base: u32,
    max: u16,
    /// Sequence wraps seen, times 65536 (u64: no overflow in any call's lifetime).
    cycles: u64,
    received: u64,
}

impl SequenceRun {
    fn start(ssrc: u32, seq: u16) -> SequenceRun {
        SequenceRun {
            ssrc,
            base: u32::from(seq),
            max: seq,
            cycles: 0,
            received: 1,
        }
    }

    fn lost(&self) -> i64 {
        let extended_max = self.cycles + u64::from(self.max);
        let expected = extended_max + 1 - u64::from(self.base);
        expected as i64 - self.received as i64
    }
}

impl ReceiveStats {
    /// Books one packet that arrived at `arrival` (in the stream's timestamp units, any
    /// origin) with `header` and `len` bytes. `jitter` is false for payloads whose timestamps
    /// do not advance with time (telephone-event repeats one timestamp per event).
    #[inline]
    pub fn handle_packet(&mut self, arrival: u32, header: &RtpHeader, len: usize, jitter: bool) {
        self.packets += 1;
        self.bytes += len as u64;
        match &mut self.run {
            Some(run) if run.ssrc == header.ssrc => {
                let delta = header.sequence.wrapping_sub(run.max);
                if delta == 0 {
                    // A duplicate: received counts it, so it offsets one loss like RFC 3550.
                    run.received += 1;
                } else if delta < MAX_DROPOUT {
                    if header.sequence < run.max {
                        run.cycles += 1 << 16;
                    }
                    run.max = header.sequence;
                    run.received += 1;
                } else if delta <= u16::MAX - 100 {
                    // A big jump: close this run and start over.
                    self.lost_before += run.lost();
                    *run = SequenceRun::start(header.ssrc, header.sequence);
                    self.last_transit = None;
                } else {
                    // Late or reordered: it was counted as lost until now.
                    run.received += 1;
                }
            }
            Some(run) => {
                self.lost_before += run.lost();
                *run = SequenceRun::start(header.ssrc, header.sequence);
                self.last_transit = None;
            }
            None => self.run = Some(SequenceRun::start(header.ssrc, header.sequence)),
        }
        if jitter {
            let transit = arrival.wrapping_sub(header.timestamp);
            if let Some(last) = self.last_transit {
                let d = transit.wrapping_sub(last) as i32;
                let d = d.unsigned_abs();
                // J += (|D| - J) / 16, kept as 16·J to stay in integers (RFC 3550 A.8).
                let j = self.jitter_x16 as i64;
                self.jitter_x16 =
                    (j + i64::from(d) - ((j + 8) >> 4)).clamp(0, u32::MAX as i64) as u32;
            }
            self.last_transit = Some(transit);
        }
    }

    /// Empty statistics.
    pub fn new() -> ReceiveStats {
        ReceiveStats::default()
    }

    /// Packets received (duplicates included, as RFC 3550 counts them); the same as
    /// [`ReceiveStats::packets`].
    pub fn received(&self) -> u64 {
        self.packets
    }

    /// Packets expected from the sequence numbers seen (received + lost, never negative).
    pub fn expected(&self) -> u64 {
        (self.packets as i64 + self.lost()).max(0) as u64
    }

    /// Cumulative loss in percent (0–100; duplicates never make it negative).
    pub fn loss_percent(&self) -> f64 {
        let lost = self.lost().max(0) as f64;
        let expected = self.packets as f64 + lost;
        if expected == 0.0 {
            0.0
        } else {
            100.0 * lost / expected
        }
    }

    /// Interarrival jitter in milliseconds (8 kHz timestamps).
    pub fn jitter_ms(&self) -> f64 {
        f64::from(self.jitter_x16) / 16.0 / 8.0
    }

    /// Interarrival jitter in timestamp units, as RTCP reports carry it.
    pub fn jitter_rtcp(&self) -> u32 {
        self.jitter()
    }

    /// The SSRC of the stream being counted, once a packet arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.run.map(|r| r.ssrc)
    }

    /// The extended highest sequence number received (RFC 3550 6.4.1), for a report block.
    pub fn extended_max(&self) -> u32 {
        self.run
            .map_or(0, |r| (r.cycles as u32).wrapping_add(u32::from(r.max)))
    }

    /// The RTCP "fraction lost" (loss since the previous call, in 1/256); call once per
    /// report.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let (e, r) = (self.expected() as i64, self.packets);
        let (e0, r0) = self.at_last_report;
        self.at_last_report = (e, r);
        let expected_interval = e - e0;
        let lost_interval = expected_interval - (r - r0) as i64;
        if expected_interval <= 0 || lost_interval <= 0 {
            return 0;
        }
        u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
    }

    /// Packets received.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes received (whole datagrams).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Cumulative packets lost (may be negative with duplicates, as in RFC 3550).
    pub fn lost(&self) -> i64 {
        self.lost_before + self.run.map_or(0, |r| r.lost())
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_x16 >> 4
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_datagram_is_inspected_without_panic(p in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = is_rtcp(&p);
            if let Some(h) = rtp_header(&p) {
                prop_assert!(h.payload_type < 128);
                prop_assert!(p.len() >= 12);
            }
        }

        #[test]
        fn any_packet_sequence_keeps_sane_stats(
            packets in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u32..3, any::<u32>()), 0..300)
        ) {
            let mut s = ReceiveStats::default();
            for (seq, ts, ssrc, arrival) in packets.iter().copied() {
                let h = RtpHeader { payload_type: 0, sequence: seq, timestamp: ts, ssrc };
                s.handle_packet(arrival, &h, 172, true);
            }
            prop_assert_eq!(s.packets(), packets.len() as u64);
            let _ = (s.lost(), s.jitter());
        }

        #[test]
        fn in_order_streams_report_exactly_the_gaps(start in any::<u16>(), len in 1u16..2000, drop_every in 2u16..50) {
            let mut s = ReceiveStats::default();
            let mut dropped = 0;
            for k in 0..len {
                // Never drop the last packet: a tail loss is invisible until the next one.
                if k % drop_every == 1 && k != len - 1 {
                    dropped += 1;
                    continue;
                }
                let seq = start.wrapping_add(k);
                let h = RtpHeader { payload_type: 0, sequence: seq, timestamp: u32::from(k) * 160, ssrc: 5 };
                s.handle_packet(u32::from(k) * 160, &h, 172, true);
            }
            prop_assert_eq!(s.lost(), dropped);
            prop_assert_eq!(s.jitter(), 0);
        }
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32) -> [u8; 172] {
        let mut p = [0u8; 172];
        p[0] = 0x80;
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn recognises_rtp_and_rtcp() {
        let p = packet(0, 7, 160, 9);
        let h = rtp_header(&p).unwrap();
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (0, 7, 160, 9)
        );
        assert_eq!(rtp_header(&p[..11]), None);
        let mut v1 = p;
        v1[0] = 0x40;
        assert_eq!(rtp_header(&v1), None);
        let mut csrc = p;
        csrc[0] = 0x8f;
        assert_eq!(rtp_header(&csrc[..70]), None);
        let rr = [0x81u8, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(is_rtcp(&rr));
        assert_eq!(rtp_header(&rr), None);
        assert!(!is_rtcp(&p));
    }

    #[test]
    fn payload_type_sets() {
        let s = PayloadTypes::of(&[0, 8, 101, 200]);
        assert!(s.contains(0) && s.contains(8) && s.contains(101));
        assert!(!s.contains(9) && !s.contains(127) && !s.contains(200));
    }

    fn header(seq: u16, ts: u32, ssrc: u32) -> RtpHeader {
        rtp_header(&packet(0, seq, ts, ssrc)).unwrap()
    }

    #[test]
    fn counts_loss_across_wraparound_and_reordering() {
        let mut s = ReceiveStats::default();
        let seqs = [65533u16, 65534, 0, 1, 3, 2, 5];
        for (i, &q) in seqs.iter().enumerate() {
            s.handle_packet(i as u32 * 160, &header(q, i as u32 * 160, 1), 172, true);
        }
        // 65533..=5 is 9 packets; 7 arrived (65535 and 4 missing).
        assert_eq!(s.lost(), 2);
        assert_eq!(s.packets(), 7);
        assert_eq!(s.bytes(), 7 * 172);
    }

    #[test]
    fn ssrc_change_keeps_earlier_loss() {
        let mut s = ReceiveStats::default();
        for q in [10u16, 12] {
            s.handle_packet(0, &header(q, 0, 1), 172, false);
        }
        for q in [500u16, 501] {
            s.handle_packet(0, &header(q, 0, 2), 172, false);
        }
        assert_eq!(s.lost(), 1);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
        let mut s = ReceiveStats::default();
        for i in 0..100u32 {
            s.handle_packet(5000 + i * 160, &header(i as u16, i * 160, 1), 172, true);
        }
        assert_eq!(s.jitter(), 0);
        // Alternate arrivals on time and 8 units (1 ms at 8 kHz) late: |D| = 8 each time,
        // so J converges to 8.
        for i in 100..400u32 {
            let wobble = if i % 2 == 0 { 8 } else { 0 };
            s.handle_packet(
                5000 + i * 160 + wobble,
                &header(i as u16, i * 160, 1),
                172,
                true,
            );
        }
        assert!((6..=8).contains(&s.jitter()), "{}", s.jitter());
    }
}
