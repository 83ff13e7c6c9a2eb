//! Call quality numbers for the CDR: RFC 3550 interarrival jitter and packet loss per stream,
//! and an ITU-T G.107 E-model estimate of the R-factor and MOS.
//!
//! [`ReceiveStats`] (defined in `media::rtp`, re-exported here) follows RFC 3550 Appendix A.1,
//! A.3 and A.8 (extended sequence numbers across wrap-around, expected − received for loss,
//! the 1/16 jitter filter in timestamp units), so the numbers agree with what the phones report
//! in their RTCP RRs.
//!
//! The E-model keeps G.107's default values for everything a server cannot measure (loudness
//! ratings, room noise, sidetone, TELR 65 dB, WEPL 110 dB) and varies what it can: the
//! codec's equipment impairment `Ie` and packet-loss robustness `Bpl` (ITU-T G.113 Appendix I),
//! packet loss and burstiness, and the delay. With the defaults and no delay,
//! R = Ro − Is − Id = 94.77 − 1.42 − 0.15 = 93.2, which maps to MOS 4.41 — the published
//! figure for G.711. The mouth-to-ear delay is the given one-way delay plus the jitter-buffer
//! delay, taken as twice the interarrival jitter.

/// The receive statistics live with the RTP code that feeds them (one type for the relay and
/// the audio path); re-exported here because quality reporting reads them.
pub use crate::media::rtp::ReceiveStats;

/// A codec's E-model parameters (ITU-T G.113 Appendix I).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment (G.711 Appendix I or equivalent): Ie 0, Bpl 25.1.
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without concealment (silence or repetition only): Ie 0, Bpl 4.3.
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
}

/// What the E-model is given for one call direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EModelInput {
    /// The codec's impairment factors.
    pub codec: CodecImpairment,
    /// One-way network delay in ms (e.g. half the RTCP round-trip time).
    pub one_way_delay_ms: f64,
    /// Packet loss in percent (0–100).
    pub loss_percent: f64,
    /// Burst ratio (1 = random loss; > 1 = bursty), G.107 BurstR.
    pub burst_ratio: f64,
    /// Interarrival jitter in ms.
    pub jitter_ms: f64,
}

impl EModelInput {
    /// G.711 with concealment, random loss. Assumes the listening side conceals losses (most
    /// SIP phones do; zentrale's own jitter buffer only repeats and fades, closer to
    /// [`CodecImpairment::G711`]) — pick the codec explicitly when that matters.
    pub fn g711(one_way_delay_ms: f64, loss_percent: f64, jitter_ms: f64) -> EModelInput {
        EModelInput {
            codec: CodecImpairment::G711_PLC,
            one_way_delay_ms,
            loss_percent,
            burst_ratio: 1.0,
            jitter_ms,
        }
    }

    /// Mouth-to-ear delay Ta in ms: the one-way delay plus the jitter buffer (2 × jitter).
    /// Packetisation and codec delay belong in `one_way_delay_ms` when the caller knows them.
    pub fn mouth_to_ear_ms(&self) -> f64 {
        finite_or_zero(self.one_way_delay_ms).max(0.0)
            + 2.0 * finite_or_zero(self.jitter_ms).max(0.0)
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// G.107 default basic signal-to-noise ratio Ro (No = −61.18 dBm0p, SLR 8, RLR 2).
const RO: f64 = 94.77;
/// G.107 default simultaneous impairment Is.
const IS: f64 = 1.42;
/// G.107 default talker echo loudness rating.
const TELR: f64 = 65.0;
/// G.107 default weighted echo path loss.
const WEPL: f64 = 110.0;

/// Delay impairment Id = Idte + Idle + Idd (G.107 §7.4) for a mouth-to-ear delay `ta` in ms,
/// taking the echo path delays as T = Ta and Tr = 2T.
pub fn delay_impairment(ta: f64) -> f64 {
    let t = ta.max(0.0);
    // Talker echo.
    let terv =
        TELR - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10() + 6.0 * (-0.3 * t * t).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let roe = RO; // −1.5 (No − RLR) with the defaults
    let h = (roe - re) / 2.0;
    let idte = (h + (h * h + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());
    // Listener echo.
    let tr = 2.0 * t;
    let rle = 10.5 * (WEPL + 7.0) * (tr + 1.0).powf(-0.25);
    let hl = (RO - rle) / 2.0;
    let idle = hl + (hl * hl + 169.0).sqrt();
    // Absolute delay.
    let idd = if t <= 100.0 {
        0.0
    } else {
        let x = (t / 100.0).log2();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
            + 2.0)
    };
    idte.max(0.0) + idle + idd
}

/// Effective equipment impairment Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl).
pub fn effective_equipment_impairment(
    codec: CodecImpairment,
    loss_percent: f64,
    burst_ratio: f64,
) -> f64 {
    let ppl = finite_or_zero(loss_percent).clamp(0.0, 100.0);
    let burst = if burst_ratio.is_finite() && burst_ratio >= 1.0 {
        burst_ratio
    } else {
        1.0
    };
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)
}

/// The transmission rating R (advantage factor A = 0: wired callers expect wired quality).
pub fn r_factor(input: &EModelInput) -> f64 {
    let id = delay_impairment(input.mouth_to_ear_ms());
    let ie_eff = effective_equipment_impairment(input.codec, input.loss_percent, input.burst_ratio);
    RO - IS - id - ie_eff
}

/// MOS (conversational quality estimate) from R, G.107 Annex B.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// MOS for an input: `mos_from_r(r_factor(input))`.
pub fn mos(input: &EModelInput) -> f64 {
    mos_from_r(r_factor(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn g711_without_loss_or_delay_is_the_published_r_93_2_and_mos_4_41() {
        let r = r_factor(&EModelInput::g711(0.0, 0.0, 0.0));
        assert!(close(r, 93.2, 0.05), "R = {r}");
        assert!(close(mos_from_r(r), 4.41, 0.005), "MOS = {}", mos_from_r(r));
    }

    #[test]
    fn mos_mapping_matches_g107_annex_b_at_known_points() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert!(close(mos_from_r(50.0), 2.575, 1e-9));
        assert!(close(mos_from_r(80.0), 4.024, 1e-9));
    }

    #[test]
    fn loss_impairment_follows_the_ie_eff_formula() {
        // 1 % random loss: with PLC 95·1/(1 + 25.1) = 3.64, without 95·1/(1 + 4.3) = 17.92.
        assert!(close(
            effective_equipment_impairment(CodecImpairment::G711_PLC, 1.0, 1.0),
            3.640,
            1e-3
        ));
        assert!(close(
            effective_equipment_impairment(CodecImpairment::G711, 1.0, 1.0),
            17.925,
            1e-3
        ));
        // Bursty loss hurts more than random loss at the same rate.
        let bursty = effective_equipment_impairment(CodecImpairment::G711_PLC, 2.0, 2.0);
        let random = effective_equipment_impairment(CodecImpairment::G711_PLC, 2.0, 1.0);
        assert!(bursty > random);
        // Garbage input is clamped, not propagated.
        assert_eq!(
            effective_equipment_impairment(CodecImpairment::G711, f64::NAN, 1.0),
            0.0
        );
    }

    #[test]
    fn delay_impairment_grows_with_delay_and_idd_starts_at_100_ms() {
        assert!(close(delay_impairment(0.0), 0.15, 0.01));
        let mut last = delay_impairment(0.0);
        for ta in (10..=600).step_by(10) {
            let id = delay_impairment(f64::from(ta));
            assert!(id >= last - 1e-9, "Id must not fall: {ta} ms");
            last = id;
        }
        // Idd alone at 200 ms is 25((2)^(1/6) − 3(1 + 1/729)^(1/6) + 2) = 3.04.
        let idd_200 =
            25.0 * (2f64.powf(1.0 / 6.0) - 3.0 * (1.0 + 1.0 / 729.0f64).powf(1.0 / 6.0) + 2.0);
        assert!(close(idd_200, 3.04, 0.01));
        // The usual planning rule: at 150 ms one way, quality is still "satisfied" (R > 80).
        assert!(r_factor(&EModelInput::g711(150.0, 0.0, 0.0)) > 80.0);
        assert!(r_factor(&EModelInput::g711(400.0, 0.0, 0.0)) < 70.0);
    }

    #[test]
    fn jitter_counts_as_buffer_delay() {
        let a = EModelInput::g711(50.0, 0.0, 20.0);
        assert_eq!(a.mouth_to_ear_ms(), 90.0);
        assert!(r_factor(&a) < r_factor(&EModelInput::g711(50.0, 0.0, 0.0)));
    }

    fn header(seq: u16, ts: u32) -> crate::media::rtp::RtpHeader {
        crate::media::rtp::RtpHeader {
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc: 1,
        }
    }

    /// Arrival `ms` milliseconds after the start, in 8 kHz units.
    fn at(ms: u64) -> u32 {
        (ms * 8) as u32
    }

    #[test]
    fn perfectly_paced_stream_has_zero_jitter_and_loss() {
        let mut s = ReceiveStats::new();
        for k in 0..100u16 {
            s.handle_packet(
                at(20 * u64::from(k)),
                &header(500 + k, 160 * u32::from(k)),
                172,
                true,
            );
        }
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 100, 0));
        assert_eq!(s.jitter_ms(), 0.0);
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn alternating_delay_converges_to_the_rfc3550_jitter() {
        // Every other packet 10 ms late: |D| = 10 ms = 80 units on every packet, so J → 80.
        let mut s = ReceiveStats::new();
        for k in 0..400u16 {
            let late = if k % 2 == 1 { 10 } else { 0 };
            s.handle_packet(
                at(20 * u64::from(k) + late),
                &header(k, 160 * u32::from(k)),
                172,
                true,
            );
        }
        assert!(close(s.jitter_ms(), 10.0, 0.1), "{}", s.jitter_ms());
        assert!((79..=80).contains(&s.jitter_rtcp()));
    }

    #[test]
    fn loss_counts_across_sequence_wraparound_and_ignores_reordering() {
        let mut s = ReceiveStats::new();
        let mut seqs: Vec<u16> = (0..200u16).map(|k| 65_500u16.wrapping_add(k)).collect();
        // Lose every packet whose sequence number ends in 7 (the last one, 163, is kept), and
        // swap a pair.
        seqs.retain(|q| q % 10 != 7);
        let lost = 200 - seqs.len() as i64;
        assert_eq!(lost, 19);
        seqs.swap(50, 51);
        for (i, q) in seqs.iter().enumerate() {
            s.handle_packet(at(20 * i as u64), &header(*q, 160 * i as u32), 172, true);
        }
        assert_eq!(s.expected(), 200);
        assert_eq!(s.lost(), lost);
        assert!(close(s.loss_percent(), 9.5, 1e-9));
        assert_eq!(s.take_fraction_lost(), 24); // 19/200 · 256 = 24.3, truncated
        // Next interval: no new packets, nothing lost.
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn duplicates_never_make_loss_percent_negative() {
        let mut s = ReceiveStats::new();
        for k in 0..10u16 {
            s.handle_packet(
                at(20 * u64::from(k)),
                &header(k, 160 * u32::from(k)),
                172,
                true,
            );
            s.handle_packet(
                at(20 * u64::from(k)),
                &header(k, 160 * u32::from(k)),
                172,
                true,
            );
        }
        assert!(s.lost() <= 0);
        assert_eq!(s.loss_percent(), 0.0);
        assert_eq!(s.take_fraction_lost(), 0);
    }
}
