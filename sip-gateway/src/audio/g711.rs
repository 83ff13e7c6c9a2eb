//! G.711 µ-law (PCMU) and A-law (PCMA): the codecs every trunk and SIP phone speaks.
//!
//! The per-sample work is delegated to `audio-codec-algorithms`, whose encoder is checked
//! against the ITU-T G.191 reference for all 65 536 inputs; a "textbook" encoder differs on
//! negative decision boundaries, and that kind of bug is invisible in listening tests.
//! This module adds what the media path needs around it: a [`Law`] chosen from the RTP payload
//! type, whole-frame helpers that write into caller-owned buffers (no allocation per frame),
//! and transcoding between the two laws without going through linear PCM twice.
//!
//! Encoding goes through look-up tables built once from the G.191-verified encoder (16 K
//! entries for µ-law, whose encoder ignores the two lowest input bits, 8 K for A-law, which
//! ignores three): the bench `audio_pipeline` measured 0.42 ns/sample for the table against
//! 2.26 ns for the encoder's bit arithmetic (see BENCHMARKS.md "Audio"), and a test checks
//! that both give the same code word for all 65 536 inputs. Decoding is the crate's own
//! 256-entry table.

use audio_codec_algorithms::{
    convert_alaw_to_ulaw, convert_ulaw_to_alaw, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw,
};
use std::sync::LazyLock;

const ULAW_BITS: u32 = 14;
const ALAW_BITS: u32 = 13;

/// µ-law encoder output for each of the 2¹⁴ inputs that differ in their top 14 bits.
static ULAW_ENCODE: LazyLock<Box<[u8; 1 << ULAW_BITS]>> = LazyLock::new(|| {
    let mut t = Box::new([0u8; 1 << ULAW_BITS]);
    for (i, code) in t.iter_mut().enumerate() {
        // i < 2¹⁴, so i << 2 fits in u16; reinterpreting it as i16 restores the sample.
        *code = encode_ulaw(((i as u16) << (16 - ULAW_BITS)) as i16);
    }
    t
});

/// A-law encoder output for each of the 2¹³ inputs that differ in their top 13 bits.
static ALAW_ENCODE: LazyLock<Box<[u8; 1 << ALAW_BITS]>> = LazyLock::new(|| {
    let mut t = Box::new([0u8; 1 << ALAW_BITS]);
    for (i, code) in t.iter_mut().enumerate() {
        *code = encode_alaw(((i as u16) << (16 - ALAW_BITS)) as i16);
    }
    t
});

#[inline]
fn ulaw_index(sample: i16) -> usize {
    usize::from((sample as u16) >> (16 - ULAW_BITS))
}

#[inline]
fn alaw_index(sample: i16) -> usize {
    usize::from((sample as u16) >> (16 - ALAW_BITS))
}

/// Which G.711 companding law a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, RTP static payload type 0 (PCMU); North America and Japan, most SIP phones' first choice.
    Mu,
    /// A-law, RTP static payload type 8 (PCMA); European carriers.
    A,
}

impl Law {
    /// The RTP static payload type (RFC 3551) of this law.
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// The law for an RTP static payload type, `None` for anything that is not G.711.
    pub const fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Mu),
            8 => Some(Law::A),
            _ => None,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` lines.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }

    /// The code word that decodes to digital silence (0); what a muted or paused leg sends.
    pub const fn silence(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }

    /// Encodes one linear sample.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ULAW_ENCODE[ulaw_index(sample)],
            Law::A => ALAW_ENCODE[alaw_index(sample)],
        }
    }

    /// Decodes one code word.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Mu => decode_ulaw(code),
            Law::A => decode_alaw(code),
        }
    }
}

/// Decodes `codes` into `out`; returns how many samples were written (the shorter length).
///
/// A short output buffer truncates rather than panics, because the payload length comes from
/// the network.
pub fn decode_into(law: Law, codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    // The match sits outside the loop so each arm is a tight table look-up the compiler can
    // unroll; matching per sample costs about a third more in the bench.
    match law {
        Law::Mu => {
            for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
                *o = decode_ulaw(c);
            }
        }
        Law::A => {
            for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
                *o = decode_alaw(c);
            }
        }
    }
    n
}

/// Encodes `samples` into `out`; returns how many code words were written (the shorter length).
pub fn encode_into(law: Law, samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    match law {
        Law::Mu => {
            let t: &[u8; 1 << ULAW_BITS] = &ULAW_ENCODE;
            for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                *o = t[ulaw_index(s)];
            }
        }
        Law::A => {
            let t: &[u8; 1 << ALAW_BITS] = &ALAW_ENCODE;
            for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                *o = t[alaw_index(s)];
            }
        }
    }
    n
}

/// Rewrites a payload from one law to the other in place, as a trunk (PCMA) to phone (PCMU)
/// bridge needs; uses G.711's own conversion tables (Annex A), which are not the same as
/// decode-then-encode for every code word.
pub fn transcode_in_place(from: Law, to: Law, payload: &mut [u8]) {
    match (from, to) {
        (Law::Mu, Law::A) => payload
            .iter_mut()
            .for_each(|c| *c = convert_ulaw_to_alaw(*c)),
        (Law::A, Law::Mu) => payload
            .iter_mut()
            .for_each(|c| *c = convert_alaw_to_ulaw(*c)),
        _ => {}
    }
}

/// Encodes with the G.191 encoder's bit arithmetic instead of the table; kept so the bench
/// can show the difference that justified the tables. Not used on the media path.
#[doc(hidden)]
pub fn encode_into_arithmetic(law: Law, samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
        *o = match law {
            Law::Mu => encode_ulaw(s),
            Law::A => encode_alaw(s),
        };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_code_words_decode_to_zero() {
        assert_eq!(Law::Mu.decode(Law::Mu.silence()), 0);
        assert_eq!(
            Law::A.decode(Law::A.silence()).abs(),
            8,
            "A-law has no exact zero; ±8 is its smallest step"
        );
        assert_eq!(Law::Mu.encode(0), 0xFF);
        assert_eq!(Law::A.encode(0), 0xD5);
    }

    #[test]
    fn payload_types_round_trip() {
        for law in [Law::Mu, Law::A] {
            assert_eq!(Law::from_payload_type(law.payload_type()), Some(law));
        }
        assert_eq!(Law::from_payload_type(18), None);
        assert_eq!(Law::Mu.encoding_name(), "PCMU");
    }

    #[test]
    fn every_code_word_survives_decode_then_encode() {
        for law in [Law::Mu, Law::A] {
            for code in 0..=255u8 {
                let back = law.encode(law.decode(code));
                // µ-law has two zeros (0x7F and 0xFF); both decode to 0 and 0 encodes to 0xFF.
                if law == Law::Mu && code == 0x7F {
                    assert_eq!(back, 0xFF);
                } else {
                    assert_eq!(back, code, "{law:?} code {code:#04x}");
                }
            }
        }
    }

    #[test]
    fn quantisation_error_stays_within_the_segment_step() {
        for law in [Law::Mu, Law::A] {
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let err = (i32::from(law.decode(law.encode(s))) - i32::from(s)).abs();
                // The largest segment step is 1024 (µ) / 1024 (A); half of it plus the
                // clipping at the top of the range bounds the error.
                assert!(err <= 1024, "{law:?} {s} -> err {err}");
            }
        }
    }

    #[test]
    fn frame_helpers_truncate_instead_of_panicking() {
        let samples: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();
        let mut codes = [0u8; 100];
        assert_eq!(encode_into(Law::A, &samples, &mut codes), 100);
        let mut back = [0i16; 160];
        assert_eq!(decode_into(Law::A, &codes, &mut back), 100);
        assert_eq!(back[100..], [0i16; 60]);
        assert!((i32::from(back[50]) - 5000).abs() < 200);
    }

    #[test]
    fn encode_tables_match_the_g191_encoder_for_every_input() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(Law::Mu.encode(s), encode_ulaw(s), "µ-law sample {s}");
            assert_eq!(Law::A.encode(s), encode_alaw(s), "A-law sample {s}");
        }
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        for law in [Law::Mu, Law::A] {
            let (mut t, mut a) = (vec![0u8; all.len()], vec![0u8; all.len()]);
            encode_into(law, &all, &mut t);
            encode_into_arithmetic(law, &all, &mut a);
            assert!(t == a, "{law:?} frame encoder differs");
        }
    }

    #[test]
    fn transcoding_keeps_the_signal() {
        let samples: Vec<i16> = (0..160)
            .map(|i| ((i as f64 * 0.3).sin() * 12000.0) as i16)
            .collect();
        let mut mu = [0u8; 160];
        encode_into(Law::Mu, &samples, &mut mu);
        let mut a = mu;
        transcode_in_place(Law::Mu, Law::A, &mut a);
        for (m, x) in mu.iter().zip(&a) {
            let dm = i32::from(Law::Mu.decode(*m));
            let da = i32::from(Law::A.decode(*x));
            assert!((dm - da).abs() <= 512, "{dm} vs {da}");
        }
        let mut same = mu;
        transcode_in_place(Law::Mu, Law::Mu, &mut same);
        assert_eq!(same, mu);
    }
}
