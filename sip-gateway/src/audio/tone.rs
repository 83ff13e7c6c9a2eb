//! Tone generation and detection: sine and dual-tone generators, a Goertzel detector, and
//! in-band DTMF on top of them.
//!
//! These are the project's ears. Every audio-path test (music reaches the caller, whisper is
//! heard by the agent and not by the caller, the recording has the caller on the left) works
//! the same way: one party sends a tone of a known frequency, the far end checks with
//! [`detect`] / [`dominant_frequency`] that it arrived and that the others did not. Goertzel is
//! used instead of an FFT because the tests ask about a handful of known frequencies, and for
//! each of them Goertzel is one multiply-add per sample with no buffers.
//!
//! Powers are reported on one scale so they can be compared with each other: the mean square of
//! the signal relative to a full-scale (±32 768) square wave. A sine of amplitude `A` has power
//! `(A/32768)² / 2`; [`detect`] returns the power of one frequency component on that scale and
//! [`mean_power`] the total, so `detect / mean_power` is the share of the signal in that tone.

use super::SAMPLE_RATE;
use super::dtmf::Digit;
use std::f64::consts::TAU;

/// A phase-continuous sine generator: consecutive calls to [`ToneGenerator::fill`] produce one
/// unbroken tone, however the caller slices it into frames.
#[derive(Clone, Debug)]
pub struct ToneGenerator {
    phase: f64,
    step: f64,
    amplitude: f64,
}

impl ToneGenerator {
    /// A tone of `freq_hz` at 8 kHz with peak `amplitude` (0..=32767).
    pub fn new(freq_hz: f64, amplitude: i16) -> ToneGenerator {
        ToneGenerator::with_rate(freq_hz, amplitude, SAMPLE_RATE)
    }

    /// A tone at another sample rate (for resampler tests and wideband uploads).
    pub fn with_rate(freq_hz: f64, amplitude: i16, sample_rate: u32) -> ToneGenerator {
        ToneGenerator {
            phase: 0.0,
            step: TAU * freq_hz / f64::from(sample_rate),
            amplitude: f64::from(amplitude.max(0)),
        }
    }

    /// The next sample.
    #[inline]
    pub fn next_sample(&mut self) -> i16 {
        let v = self.phase.sin() * self.amplitude;
        self.phase += self.step;
        if self.phase >= TAU {
            self.phase -= TAU;
        }
        // amplitude ≤ i16::MAX, so the cast cannot overflow; `as` saturates anyway.
        v.round() as i16
    }

    /// Overwrites `out` with the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = self.next_sample();
        }
    }

    /// Adds the next `out.len()` samples to `out`, saturating; for building multi-tone signals.
    pub fn add_to(&mut self, out: &mut [i16]) {
        for s in out {
            *s = s.saturating_add(self.next_sample());
        }
    }
}

/// Two simultaneous tones (DTMF, call-progress tones such as the 350+440 Hz dial tone).
#[derive(Clone, Debug)]
pub struct DualToneGenerator {
    low: ToneGenerator,
    high: ToneGenerator,
}

impl DualToneGenerator {
    /// Two tones, each with peak `amplitude_each`.
    pub fn new(low_hz: f64, high_hz: f64, amplitude_each: i16) -> DualToneGenerator {
        DualToneGenerator {
            low: ToneGenerator::new(low_hz, amplitude_each),
            high: ToneGenerator::new(high_hz, amplitude_each),
        }
    }

    /// The DTMF tone pair for `digit` (Q.23), each at `amplitude_each`.
    pub fn dtmf(digit: Digit, amplitude_each: i16) -> DualToneGenerator {
        let (lo, hi) = digit.frequencies();
        DualToneGenerator::new(lo, hi, amplitude_each)
    }

    /// Overwrites `out` with the next samples of both tones.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out.iter_mut() {
            *s = self
                .low
                .next_sample()
                .saturating_add(self.high.next_sample());
        }
    }
}

/// Power of the `freq_hz` component of 8 kHz `samples`, on the scale described in the module
/// docs (a full-scale sine gives 0.5). Empty input gives 0.
pub fn detect(samples: &[i16], freq_hz: f64) -> f64 {
    detect_at_rate(samples, freq_hz, SAMPLE_RATE)
}

/// [`detect`] for another sample rate.
pub fn detect_at_rate(samples: &[i16], freq_hz: f64, sample_rate: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    // Generalised Goertzel: the frequency need not sit on an FFT bin, which matters for DTMF's
    // irregular frequencies and for 20 ms frames (50 Hz bins).
    let w = TAU * freq_hz / f64::from(sample_rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let mag2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len() as f64;
    // |X|² = (A·N/2)² for a sine of amplitude A; its power A²/2 is therefore 2|X|²/N².
    2.0 * mag2.max(0.0) / (n * n)
}

/// Mean square of `samples` relative to full scale (a full-scale sine gives 0.5).
pub fn mean_power(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| {
            let x = f64::from(s) / 32768.0;
            x * x
        })
        .sum();
    sum / samples.len() as f64
}

/// Converts a power on this module's scale to dB relative to a full-scale sine (dBov-like).
pub fn power_db(power: f64) -> f64 {
    10.0 * (power.max(1e-20) / 0.5).log10()
}

/// The loudest of `candidates` in `samples`, with its power, if it carries at least
/// `min_share` of the signal's total power (e.g. 0.5 for "clearly this tone"; use a lower
/// share when several parties are mixed). Silence returns `None`.
pub fn dominant_frequency(
    samples: &[i16],
    candidates: &[f64],
    min_share: f64,
) -> Option<(f64, f64)> {
    let total = mean_power(samples);
    // Below −60 dB of a full-scale sine nothing is "dominant": that is G.711 idle noise.
    if total < 0.5e-6 {
        return None;
    }
    let (freq, power) = candidates
        .iter()
        .map(|&f| (f, detect(samples, f)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (power >= min_share * total).then_some((freq, power))
}

/// DTMF row (low group) frequencies, Q.23.
pub const DTMF_LOW: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// DTMF column (high group) frequencies, Q.23.
pub const DTMF_HIGH: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Detects an in-band DTMF digit in one block of 8 kHz samples (a 20 ms frame or longer).
///
/// Checks, in the spirit of Q.24: both groups present, the two tones together carry most of
/// the signal (speech and music do not), each tone clearly beats the others of its group, and
/// the twist (level difference) is under 8 dB. Returns `None` for anything else.
pub fn detect_dtmf(samples: &[i16]) -> Option<Digit> {
    let total = mean_power(samples);
    if total < 1e-5 {
        return None;
    }
    let low: [f64; 4] = DTMF_LOW.map(|f| detect(samples, f));
    let high: [f64; 4] = DTMF_HIGH.map(|f| detect(samples, f));
    let (li, lp) = strongest(&low);
    let (hi, hp) = strongest(&high);
    if lp + hp < 0.6 * total {
        return None;
    }
    let twist_db = 10.0 * (lp.max(1e-20) / hp.max(1e-20)).log10();
    if twist_db.abs() > 8.0 {
        return None;
    }
    let clear = |powers: &[f64; 4], best: usize, bp: f64| {
        powers
            .iter()
            .enumerate()
            .all(|(i, &p)| i == best || p * 4.0 < bp)
    };
    if !clear(&low, li, lp) || !clear(&high, hi, hp) {
        return None;
    }
    Digit::from_grid(li, hi)
}

fn strongest(p: &[f64; 4]) -> (usize, f64) {
    let mut best = (0, p[0]);
    for (i, &v) in p.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::FRAME_SAMPLES;
    use crate::audio::g711::{Law, decode_into, encode_into};

    fn tone(freq: f64, amp: i16, n: usize) -> Vec<i16> {
        let mut v = vec![0i16; n];
        ToneGenerator::new(freq, amp).fill(&mut v);
        v
    }

    #[test]
    fn a_full_scale_sine_has_power_one_half_at_its_frequency() {
        let s = tone(1000.0, 32767, 800);
        assert!(
            (detect(&s, 1000.0) - 0.5).abs() < 0.01,
            "{}",
            detect(&s, 1000.0)
        );
        assert!((mean_power(&s) - 0.5).abs() < 0.01);
        assert!(detect(&s, 1400.0) < 0.001);
        assert!(power_db(detect(&s, 1000.0)).abs() < 0.1);
    }

    #[test]
    fn generator_is_phase_continuous_across_frames() {
        let whole = tone(440.0, 10000, 480);
        let mut g = ToneGenerator::new(440.0, 10000);
        let mut pieces = vec![0i16; 480];
        for chunk in pieces.chunks_mut(160) {
            g.fill(chunk);
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn dominant_frequency_picks_the_sent_tone_after_g711() {
        let s = tone(1200.0, 8000, FRAME_SAMPLES);
        let mut codes = [0u8; FRAME_SAMPLES];
        encode_into(Law::A, &s, &mut codes);
        let mut heard = [0i16; FRAME_SAMPLES];
        decode_into(Law::A, &codes, &mut heard);
        let cands = [400.0, 800.0, 1200.0, 1600.0];
        let (f, p) = dominant_frequency(&heard, &cands, 0.8).expect("tone present");
        assert_eq!(f, 1200.0);
        assert!(p > 0.02);
    }

    #[test]
    fn silence_and_noise_have_no_dominant_frequency() {
        assert_eq!(dominant_frequency(&[0i16; 160], &[1000.0], 0.5), None);
        // A deterministic pseudo-random noise: spread over all frequencies, no tone dominates.
        let mut x = 12345u32;
        let noise: Vec<i16> = (0..800)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        assert_eq!(
            dominant_frequency(&noise, &[500.0, 1000.0, 2000.0], 0.5),
            None
        );
        assert_eq!(detect_dtmf(&noise), None);
    }

    #[test]
    fn two_mixed_parties_are_both_detectable() {
        let mut s = tone(600.0, 6000, 800);
        ToneGenerator::new(1500.0, 6000).add_to(&mut s);
        let total = mean_power(&s);
        assert!(detect(&s, 600.0) > 0.4 * total);
        assert!(detect(&s, 1500.0) > 0.4 * total);
        assert!(detect(&s, 1000.0) < 0.01 * total);
    }

    #[test]
    fn every_dtmf_digit_is_detected_in_one_frame_after_g711() {
        for digit in Digit::ALL {
            let mut s = [0i16; FRAME_SAMPLES];
            DualToneGenerator::dtmf(digit, 7000).fill(&mut s);
            let mut codes = [0u8; FRAME_SAMPLES];
            encode_into(Law::Mu, &s, &mut codes);
            decode_into(Law::Mu, &codes, &mut s);
            assert_eq!(detect_dtmf(&s), Some(digit), "{digit:?}");
        }
    }

    #[test]
    fn a_single_tone_or_speech_band_tone_is_not_dtmf() {
        assert_eq!(detect_dtmf(&tone(697.0, 10000, 160)), None);
        assert_eq!(detect_dtmf(&tone(1000.0, 10000, 160)), None);
        assert_eq!(detect_dtmf(&[0i16; 160]), None);
        // Too much twist: one tone 12 dB below the other.
        let mut s = vec![0i16; 160];
        DualToneGenerator::new(770.0, 1336.0, 0).fill(&mut s);
        ToneGenerator::new(770.0, 8000).add_to(&mut s);
        ToneGenerator::new(1336.0, 2000).add_to(&mut s);
        assert_eq!(detect_dtmf(&s), None);
    }

    #[test]
    fn empty_input_is_harmless() {
        assert_eq!(detect(&[], 1000.0), 0.0);
        assert_eq!(mean_power(&[]), 0.0);
        assert_eq!(detect_dtmf(&[]), None);
    }
}
