//! G.711 µ-law (PCMU) and A-law (PCMA): the codecs every trunk and SIP phone speaks.
//!
//! The per-sample work is delegated to `audio-codec-algorithms`, whose encoder is checked
//! against the ITU-T G.191 reference for all 65 536 inputs; a "textbook" encoder differs on
//! negative decision boundaries, and that kind of bug is invisible in listening tests.
//! This module adds what the media path needs around it: a [`Law`] chosen from the RTP payload
//! type, whole-frame helpers that write into caller-owned buffers (no allocation per frame),
//! and transcoding between the two laws without going through linear PCM twice.
//!
//! Encoding uses the crate's branch-light bit arithmetic rather than a 16 K-entry table: the
//! bench `audio_pipeline` measures both (see BENCHMARKS.md "Audio"), and the table did not win
//! enough to be worth 32 KiB of cache per law.

use audio_codec_algorithms::{
    convert_alaw_to_ulaw, convert_ulaw_to_alaw, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw,
};

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
            Law::Mu => encode_ulaw(sample),
            Law::A => encode_alaw(sample),
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
            for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                *o = encode_ulaw(s);
            }
        }
        Law::A => {
            for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                *o = encode_alaw(s);
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

/// A 16 K-entry µ-law encode table (the encoder ignores the two lowest bits), kept so the bench
/// can compare it with the arithmetic encoder; not used on the media path.
#[doc(hidden)]
pub fn ulaw_encode_table() -> Box<[u8]> {
    (0..1u32 << 14)
        .map(|i| {
            // i is a 14-bit index; shifting it back up gives the i16 bit pattern it stands for.
            let sample = ((i << 2) as u16) as i16;
            encode_ulaw(sample)
        })
        .collect()
}

/// Encodes with a table from [`ulaw_encode_table`]; for the bench's comparison only.
#[doc(hidden)]
#[inline]
pub fn encode_ulaw_with_table(table: &[u8], sample: i16) -> u8 {
    let idx = ((sample as u16) >> 2) as usize;
    table.get(idx).copied().unwrap_or(0xFF)
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
    fn encode_table_matches_the_g191_encoder_for_every_input() {
        let table = ulaw_encode_table();
        for s in i16::MIN..=i16::MAX {
            assert_eq!(
                encode_ulaw_with_table(&table, s),
                encode_ulaw(s),
                "sample {s}"
            );
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
