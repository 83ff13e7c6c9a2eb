//! Per-packet RTP/RTCP inspection, receive statistics and RTCP reports, without I/O.
//!
//! The relay forwards packets untouched; it only looks at the fixed header to decide
//! whether a datagram may latch a leg (it must look like RTP with a negotiated payload
//! type) and to keep the RFC 3550 receiver statistics (loss from sequence numbers,
//! interarrival jitter per appendix A.8). RTCP sender and receiver reports are parsed
//! ([`parse_rtcp`], callback-based so nothing allocates) and written ([`write_report`]), and
//! [`RtcpState`] turns them into round-trip times. Everything here takes the arrival time as
//! an argument, so it is tested with made-up clocks.

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

/// One RTCP reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The SSRC of the stream reported on.
    pub ssrc: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_max: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    /// The block describing `rx` (the stream received from a peer), with `take_fraction_lost`
    /// consumed and LSR/DLSR from the peer's last sender report.
    pub fn from_stats(rx: &mut ReceiveStats, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        let ssrc = rx.ssrc()?;
        Some(ReportBlock {
            ssrc,
            fraction_lost: rx.take_fraction_lost(),
            cumulative_lost: rx.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_max: rx.extended_max(),
            jitter: rx.jitter(),
            lsr,
            dlsr,
        })
    }

    fn parse(b: &[u8]) -> ReportBlock {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // Sign-extend the 24-bit cumulative loss.
        let lost = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
        ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost: lost,
            extended_max: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        b[4] = self.fraction_lost;
        b[5..8].copy_from_slice(&self.cumulative_lost.to_be_bytes()[1..4]);
        b[8..12].copy_from_slice(&self.extended_max.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        b[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// What a compound RTCP packet says, item by item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpItem {
    /// A sender report's sender info.
    Sender {
        /// The sender.
        ssrc: u32,
        /// Its 64-bit NTP timestamp.
        ntp: u64,
        /// The matching RTP timestamp.
        rtp_timestamp: u32,
        /// Packets sent.
        packets: u32,
        /// Payload octets sent.
        octets: u32,
    },
    /// A reception report block of an SR or RR.
    Report {
        /// Who reports.
        reporter: u32,
        /// The block.
        block: ReportBlock,
    },
}

/// Walks a compound RTCP packet, calling `f` for each sender info and report block (other
/// packet types are skipped). Stops at the first malformed part; never panics, never
/// allocates. Returns false if something was malformed.
pub fn parse_rtcp(packet: &[u8], mut f: impl FnMut(RtcpItem)) -> bool {
    let mut rest = packet;
    while !rest.is_empty() {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return false;
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let size = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(p) = rest.get(..size) else {
            return false;
        };
        rest = &rest[size..];
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let blocks_at = match pt {
            200 if size >= 28 => {
                f(RtcpItem::Sender {
                    ssrc: word(4),
                    ntp: (u64::from(word(8)) << 32) | u64::from(word(12)),
                    rtp_timestamp: word(16),
                    packets: word(20),
                    octets: word(24),
                });
                28
            }
            201 if size >= 8 => 8,
            200 | 201 => return false,
            _ => continue,
        };
        let reporter = word(4);
        for k in 0..count {
            let at = blocks_at + 24 * k;
            let Some(b) = p.get(at..at + 24) else {
                return false;
            };
            f(RtcpItem::Report {
                reporter,
                block: ReportBlock::parse(b),
            });
        }
    }
    true
}

/// The sender info of an SR that zentrale sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Our SSRC towards this leg.
    pub ssrc: u32,
    /// NTP time of the report.
    pub ntp: u64,
    /// The RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// The CNAME zentrale puts into its SDES items (RFC 3550 requires one per compound packet).
const CNAME: &[u8] = b"zentrale";

/// Writes a compound RTCP packet — an SR when `sender` is given, else an RR from `ssrc` —
/// with up to one report block, followed by an SDES CNAME. Returns its length; `buf` must
/// hold 128 bytes.
pub fn write_report(
    buf: &mut [u8],
    ssrc: u32,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
) -> usize {
    let rc = u8::from(block.is_some());
    let mut n = 8;
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        buf[8..16].copy_from_slice(&s.ntp.to_be_bytes());
        buf[16..20].copy_from_slice(&s.rtp_timestamp.to_be_bytes());
        buf[20..24].copy_from_slice(&s.packets.to_be_bytes());
        buf[24..28].copy_from_slice(&s.octets.to_be_bytes());
        n = 28;
    }
    if let Some(b) = block {
        b.write(&mut buf[n..n + 24]);
        n += 24;
    }
    buf[0] = 0x80 | rc;
    buf[1] = if sender.is_some() { 200 } else { 201 };
    buf[2..4].copy_from_slice(&((n / 4 - 1) as u16).to_be_bytes());
    // SDES: one chunk, CNAME item, END, padded to 32 bits.
    let sdes = n;
    buf[sdes] = 0x81;
    buf[sdes + 1] = 202;
    buf[sdes + 4..sdes + 8].copy_from_slice(&ssrc.to_be_bytes());
    buf[sdes + 8] = 1;
    buf[sdes + 9] = CNAME.len() as u8;
    buf[sdes + 10..sdes + 10 + CNAME.len()].copy_from_slice(CNAME);
    let mut end = sdes + 10 + CNAME.len();
    // At least one zero octet ends the item list, then pad to a multiple of 4.
    buf[end] = 0;
    end += 1;
    while !end.is_multiple_of(4) {
        buf[end] = 0;
        end += 1;
    }
    buf[sdes + 2..sdes + 4].copy_from_slice(&(((end - sdes) / 4 - 1) as u16).to_be_bytes());
    end
}

/// The middle 32 bits of an NTP timestamp (the "NTP short format" of LSR).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip and remote-reception bookkeeping of one leg, without I/O (RFC 3550 6.4.1).
///
/// The relay sees sender reports pass towards a leg's peer (its own in processed mode, the
/// other peer's in plain mode) and notes when; a reception report from that peer naming one
/// of them in LSR then gives the round trip relay → peer → relay as arrival − sent − DLSR,
/// with no wall clock involved.
#[derive(Debug, Clone, Default)]
pub struct RtcpState {
    /// Sender reports that went towards the peer: (NTP middle 32 bits, when).
    sr_towards: [Option<(u32, std::time::Instant)>; 4],
    next: usize,
    /// The peer's last sender report: (NTP middle 32 bits, when it arrived).
    last_sr_from_peer: Option<(u32, std::time::Instant)>,
    rtt: Option<std::time::Duration>,
    remote_lost: Option<i64>,
    remote_jitter: Option<u32>,
}

impl RtcpState {
    /// A sender report with this NTP timestamp went towards the peer at `at`.
    pub fn note_sr_towards(&mut self, ntp: u64, at: std::time::Instant) {
        self.sr_towards[self.next] = Some((ntp_middle(ntp), at));
        self.next = (self.next + 1) % self.sr_towards.len();
    }

    /// Handles a compound RTCP packet from the peer at `now`. Returns the NTP timestamp of
    /// its sender report, if it had one (in plain mode the caller notes it on the other leg).
    pub fn handle_from_peer(&mut self, packet: &[u8], now: std::time::Instant) -> Option<u64> {
        let mut sr = None;
        let mut report = None;
        parse_rtcp(packet, |item| match item {
            RtcpItem::Sender { ntp, .. } => sr = Some(ntp),
            RtcpItem::Report { block, .. } => {
                report.get_or_insert(block);
            }
        });
        if let Some(ntp) = sr {
            self.last_sr_from_peer = Some((ntp_middle(ntp), now));
        }
        if let Some(b) = report {
            self.remote_lost = Some(i64::from(b.cumulative_lost));
            self.remote_jitter = Some(b.jitter);
            if b.lsr != 0
                && let Some((_, sent)) = self.sr_towards.iter().flatten().find(|(m, _)| *m == b.lsr)
            {
                let dlsr = std::time::Duration::from_micros(u64::from(b.dlsr) * 1_000_000 / 65_536);
                if let Some(rtt) = now.saturating_duration_since(*sent).checked_sub(dlsr) {
                    self.rtt = Some(rtt);
                }
            }
        }
        sr
    }

    /// LSR and DLSR for a report block about the peer's stream, at `now`.
    pub fn lsr_dlsr(&self, now: std::time::Instant) -> (u32, u32) {
        match self.last_sr_from_peer {
            None => (0, 0),
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                let dlsr = (d.as_micros() * 65_536 / 1_000_000).min(u128::from(u32::MAX)) as u32;
                (lsr, dlsr)
            }
        }
    }

    /// The last round-trip time measured, in ms.
    pub fn rtt_ms(&self) -> Option<u32> {
        self.rtt
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }

    /// Cumulative loss the peer reported about what it receives.
    pub fn remote_lost(&self) -> Option<i64> {
        self.remote_lost
    }

    /// Jitter the peer reported about what it receives.
    pub fn remote_jitter(&self) -> Option<u32> {
        self.remote_jitter
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

    #[test]
    fn reports_round_trip_through_writer_and_parser() {
        let block = ReportBlock {
            ssrc: 0xdead_beef,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_max: 70_000,
            jitter: 42,
            lsr: 0x1234_5678,
            dlsr: 65_536,
        };
        let sender = SenderInfo {
            ssrc: 7,
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 160,
            packets: 10,
            octets: 1600,
        };
        let mut buf = [0u8; 128];
        let n = write_report(&mut buf, 7, Some(&sender), Some(&block));
        assert!(n.is_multiple_of(4));
        assert!(is_rtcp(&buf[..n]));
        let mut items = Vec::new();
        assert!(parse_rtcp(&buf[..n], |i| items.push(i)));
        assert_eq!(
            items,
            [
                RtcpItem::Sender {
                    ssrc: 7,
                    ntp: sender.ntp,
                    rtp_timestamp: 160,
                    packets: 10,
                    octets: 1600
                },
                RtcpItem::Report { reporter: 7, block }
            ]
        );
        let n = write_report(&mut buf, 9, None, None);
        let mut items = Vec::new();
        assert!(parse_rtcp(&buf[..n], |i| items.push(i)));
        assert!(items.is_empty());
    }

    #[test]
    fn rtt_is_arrival_minus_sr_time_minus_dlsr() {
        let t0 = std::time::Instant::now();
        let mut st = RtcpState::default();
        let ntp = 0xaaaa_bbbb_cccc_dddd;
        st.note_sr_towards(ntp, t0);
        // The peer held the SR for 0.5 s before reporting; the report arrives 0.53 s later.
        let block = ReportBlock {
            ssrc: 1,
            lsr: ntp_middle(ntp),
            dlsr: 32_768,
            cumulative_lost: 4,
            jitter: 9,
            ..ReportBlock::default()
        };
        let mut buf = [0u8; 128];
        let n = write_report(&mut buf, 2, None, Some(&block));
        let now = t0 + std::time::Duration::from_millis(530);
        assert_eq!(st.handle_from_peer(&buf[..n], now), None);
        assert_eq!(st.rtt_ms(), Some(30));
        assert_eq!((st.remote_lost(), st.remote_jitter()), (Some(4), Some(9)));
        // The peer's own SR is remembered for our LSR/DLSR.
        let sender = SenderInfo {
            ssrc: 2,
            ntp: 0x1111_2222_3333_4444,
            rtp_timestamp: 0,
            packets: 0,
            octets: 0,
        };
        let n = write_report(&mut buf, 2, Some(&sender), None);
        assert_eq!(st.handle_from_peer(&buf[..n], now), Some(sender.ntp));
        let (lsr, dlsr) = st.lsr_dlsr(now + std::time::Duration::from_millis(250));
        assert_eq!((lsr, dlsr), (0x2222_3333, 16_384));
    }

    proptest! {
        #[test]
        fn any_bytes_as_rtcp_never_panic(p in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rtcp(&p, |_| {});
            let mut st = RtcpState::default();
            let _ = st.handle_from_peer(&p, std::time::Instant::now());
        }
    }
}
