//! WAV in and out, and conversion of any upload to the internal 8 kHz mono format.
//!
//! Tenants upload prompts and music as WAV at 8, 16 or 48 kHz (and whatever else their audio
//! tool wrote: 44.1 kHz, stereo, 24-bit, float). They are converted once, when loaded, to 8 kHz
//! mono i16 so that playing them on a call is a copy, never a resample. Parsing is `hound`'s;
//! resampling is `rubato`'s synchronous FFT resampler, whose anti-alias filter matters when
//! going down to 8 kHz (naive decimation folds everything above 4 kHz back into the voice band).
//! `rubato`'s `process_all` trims its start-up delay but leaves a lag of half an output sample;
//! that is inaudible and irrelevant for telephony, and the tests allow for it.

use super::SAMPLE_RATE;
use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::io::{Read, Seek, Write};
use thiserror::Error;

/// The longest upload accepted, in seconds: keeps a hostile or mistaken upload from filling
/// memory (all prompts are held in RAM).
pub const MAX_SECONDS: u32 = 15 * 60;

/// Errors when reading, converting or writing WAV audio.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WavError {
    /// The bytes are not a WAV file hound can read, or writing failed.
    #[error("WAV: {0}")]
    Format(#[from] hound::Error),
    /// The sample rate is outside 8–48 kHz.
    #[error("unsupported sample rate {0} Hz (8000-48000 accepted)")]
    UnsupportedRate(u32),
    /// The file has no channels or more than two.
    #[error("unsupported channel count {0} (mono or stereo accepted)")]
    UnsupportedChannels(u16),
    /// The file is longer than [`MAX_SECONDS`].
    #[error("audio is {0} s long; at most {MAX_SECONDS} s accepted")]
    TooLong(u32),
    /// The file holds no samples.
    #[error("audio is empty")]
    Empty,
    /// The resampler refused the conversion.
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Reads a WAV file of any common PCM/float format and returns 8 kHz mono i16 samples.
pub fn read_as_8k_mono<R: Read>(reader: R) -> Result<Vec<i16>, WavError> {
    let mut wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    if !(8_000..=48_000).contains(&spec.sample_rate) {
        return Err(WavError::UnsupportedRate(spec.sample_rate));
    }
    if !(1..=2).contains(&spec.channels) {
        return Err(WavError::UnsupportedChannels(spec.channels));
    }
    let seconds = wav.duration() / spec.sample_rate;
    if seconds > MAX_SECONDS {
        return Err(WavError::TooLong(seconds));
    }
    // Everything becomes f32 in [-1, 1) first: one resampling path for every input format.
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, _) => wav.samples::<f32>().collect::<Result<_, _>>()?,
        (hound::SampleFormat::Int, bits) => {
            let scale = 1.0 / (1u64 << (bits.clamp(1, 32) - 1)) as f32;
            wav.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<f32> = if spec.channels == 2 {
        interleaved
            .chunks_exact(2)
            .map(|c| 0.5 * (c[0] + c[1]))
            .collect()
    } else {
        interleaved
    };
    if mono.is_empty() {
        return Err(WavError::Empty);
    }
    let at_8k = resample(&mono, spec.sample_rate, SAMPLE_RATE)?;
    Ok(at_8k.iter().map(|&x| to_i16(x)).collect())
}

/// Resamples mono f32 audio between two rates; a copy when they are equal.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, WavError> {
    if from_hz == to_hz || input.is_empty() {
        return Ok(input.to_vec());
    }
    let mut resampler =
        Fft::<f32>::new(from_hz as usize, to_hz as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| WavError::Resample(e.to_string()))?;
    let adapter = InterleavedSlice::new(input, 1, input.len())
        .map_err(|e| WavError::Resample(e.to_string()))?;
    let out = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| WavError::Resample(e.to_string()))?;
    Ok(out.take_data())
}

fn to_i16(x: f32) -> i16 {
    // `as` saturates out-of-range floats, which is the clipping we want for overshoot from the
    // resampler's filter on full-scale input.
    (x * 32768.0).round() as i16
}

/// Writes 8 kHz mono 16-bit samples as a WAV file.
pub fn write_8k_mono<W: Write + Seek>(writer: W, samples: &[i16]) -> Result<(), WavError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(writer, spec)?;
    let mut i16w = w.get_i16_writer(samples.len() as u32);
    for &s in samples {
        i16w.write_sample(s);
    }
    i16w.flush()?;
    w.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tone::{ToneGenerator, detect, mean_power};
    use std::io::Cursor;

    fn wav_bytes(
        rate: u32,
        channels: u16,
        bits: u16,
        float: bool,
        seconds: f32,
        freq: f64,
    ) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut buf = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).expect("spec is valid");
        let mut g = ToneGenerator::with_rate(freq, 16000, rate);
        for _ in 0..(rate as f32 * seconds) as usize {
            let s = g.next_sample();
            for _ in 0..channels {
                if float {
                    w.write_sample(f32::from(s) / 32768.0).expect("write");
                } else if bits == 24 {
                    w.write_sample(i32::from(s) << 8).expect("write");
                } else {
                    w.write_sample(s).expect("write");
                }
            }
        }
        w.finalize().expect("finalize");
        buf.into_inner()
    }

    #[test]
    fn uploads_at_8_16_48_khz_arrive_as_the_same_8khz_tone() {
        for rate in [8_000, 16_000, 44_100, 48_000] {
            let bytes = wav_bytes(rate, 1, 16, false, 1.0, 1000.0);
            let out = read_as_8k_mono(Cursor::new(bytes)).expect("readable");
            assert!(
                (out.len() as i64 - 8000).abs() <= 2,
                "{rate}: {} samples",
                out.len()
            );
            // Skip the edges, where the resampler's filter rings in and out.
            let mid = &out[800..7200];
            let share = detect(mid, 1000.0) / mean_power(mid);
            assert!(share > 0.99, "{rate} Hz: tone share {share}");
            let level = (mean_power(mid) * 2.0).sqrt() * 32768.0;
            assert!(
                (level - 16000.0).abs() < 400.0,
                "{rate} Hz: amplitude {level}"
            );
        }
    }

    #[test]
    fn tones_above_the_telephone_band_are_filtered_not_folded() {
        // A 5 kHz tone at 16 kHz would alias to 3 kHz with naive decimation.
        let bytes = wav_bytes(16_000, 1, 16, false, 1.0, 5000.0);
        let out = read_as_8k_mono(Cursor::new(bytes)).expect("readable");
        let mid = &out[800..7200];
        assert!(
            detect(mid, 3000.0) < 1e-5,
            "aliased: {}",
            detect(mid, 3000.0)
        );
        assert!(mean_power(mid) < 1e-4);
    }

    #[test]
    fn stereo_24_bit_and_float_uploads_are_accepted() {
        for (channels, bits, float) in [(2, 16, false), (1, 24, false), (2, 32, true)] {
            let bytes = wav_bytes(48_000, channels, bits, float, 0.5, 440.0);
            let out = read_as_8k_mono(Cursor::new(bytes)).expect("readable");
            let mid = &out[400..3600];
            assert!(
                detect(mid, 440.0) / mean_power(mid) > 0.99,
                "{channels} ch {bits} bit"
            );
        }
    }

    #[test]
    fn bad_uploads_are_errors_not_panics() {
        assert!(matches!(
            read_as_8k_mono(Cursor::new(b"RIFF nonsense".to_vec())),
            Err(WavError::Format(_))
        ));
        assert!(matches!(
            read_as_8k_mono(Cursor::new(Vec::new())),
            Err(WavError::Format(_))
        ));
        let low = wav_bytes(4_000, 1, 16, false, 0.1, 440.0);
        assert!(matches!(
            read_as_8k_mono(Cursor::new(low)),
            Err(WavError::UnsupportedRate(4000))
        ));
        let empty = wav_bytes(8_000, 1, 16, false, 0.0, 440.0);
        assert!(matches!(
            read_as_8k_mono(Cursor::new(empty)),
            Err(WavError::Empty)
        ));
        let mut trunc = wav_bytes(8_000, 1, 16, false, 0.5, 440.0);
        trunc.truncate(100);
        assert!(read_as_8k_mono(Cursor::new(trunc)).is_err());
    }

    #[test]
    fn write_then_read_is_lossless_at_8khz() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let mut buf = Cursor::new(Vec::new());
        write_8k_mono(&mut buf, &samples).expect("write");
        let back = read_as_8k_mono(Cursor::new(buf.into_inner())).expect("read");
        assert_eq!(back, samples);
    }
}
