//! The call recorder: a stereo WAV with the caller on the left and the agent on the right, or
//! a mono WAV of the caller alone (voicemail).
//!
//! Two channels rather than a mix, because quality monitoring and speech analytics need to know
//! who said what, and a mix cannot be separated again. Pausing (while the caller reads out a
//! payment card number) writes silence instead of stopping the file, so the recording stays
//! aligned with the call's timeline and the CDR's timestamps; the pauses are listed in the
//! [`RecordingSummary`] for the CDR.
//!
//! The recorder writes to any `Write + Seek` the caller gives it (a buffered file in
//! production, memory in tests); the WAV header's lengths are patched by
//! [`Recorder::finish`].

use super::wav::WavError;
use super::{FRAME_MS, FRAME_SAMPLES, Frame, SAMPLE_RATE};
use std::io::{Seek, Write};

/// A pause in the recording, in milliseconds from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    /// When the pause began.
    pub start_ms: u64,
    /// When it ended (the end of the recording if it was never resumed).
    pub end_ms: u64,
}

/// What the CDR keeps about a finished recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Total length in milliseconds, pauses included.
    pub duration_ms: u64,
    /// The paused intervals.
    pub pauses: Vec<Pause>,
}

/// A stereo call recording in progress.
pub struct Recorder<W: Write + Seek> {
    wav: hound::WavWriter<W>,
    frames: u64,
    paused_since: Option<u64>,
    pauses: Vec<Pause>,
    mono: bool,
}

impl<W: Write + Seek> std::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("frames", &self.frames)
            .field("paused_since", &self.paused_since)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> Recorder<W> {
    /// Starts a recording into `writer` (8 kHz, 16-bit, 2 channels).
    pub fn new(writer: W) -> Result<Recorder<W>, WavError> {
        Recorder::with_channels(writer, false)
    }

    /// Starts a mono recording of the caller alone (voicemail): [`Recorder::write_frame`]
    /// ignores its `agent` argument.
    pub fn new_mono(writer: W) -> Result<Recorder<W>, WavError> {
        Recorder::with_channels(writer, true)
    }

    fn with_channels(writer: W, mono: bool) -> Result<Recorder<W>, WavError> {
        let spec = hound::WavSpec {
            channels: if mono { 1 } else { 2 },
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Recorder {
            wav: hound::WavWriter::new(writer, spec)?,
            frames: 0,
            paused_since: None,
            pauses: Vec::new(),
            mono,
        })
    }

    /// Appends one 20 ms tick: what the caller said (left) and what the agent said (right).
    /// While paused, silence is written instead.
    pub fn write_frame(&mut self, caller: &Frame, agent: &Frame) -> Result<(), WavError> {
        let paused = self.paused_since.is_some();
        let channels = if self.mono { 1 } else { 2 };
        let mut w = self.wav.get_i16_writer(channels * FRAME_SAMPLES as u32);
        for (&l, &r) in caller.iter().zip(agent) {
            let (l, r) = if paused { (0, 0) } else { (l, r) };
            w.write_sample(l);
            if !self.mono {
                w.write_sample(r);
            }
        }
        w.flush()?;
        self.frames += 1;
        Ok(())
    }

    /// Stops capturing audio (silence is written from the next frame on); idempotent.
    pub fn pause(&mut self) {
        if self.paused_since.is_none() {
            self.paused_since = Some(self.duration_ms());
        }
    }

    /// Captures audio again from the next frame on; idempotent.
    pub fn resume(&mut self) {
        if let Some(start_ms) = self.paused_since.take() {
            self.pauses.push(Pause {
                start_ms,
                end_ms: self.duration_ms(),
            });
        }
    }

    /// Whether the recorder is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Length so far in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.frames * u64::from(FRAME_MS)
    }

    /// Completes the WAV header and returns the summary for the CDR.
    pub fn finish(mut self) -> Result<RecordingSummary, WavError> {
        self.resume();
        let duration_ms = self.duration_ms();
        self.wav.finalize()?;
        Ok(RecordingSummary {
            duration_ms,
            pauses: self.pauses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn channels_are_interleaved_caller_left_agent_right_and_pause_writes_silence() {
        let mut buf = Cursor::new(Vec::new());
        let mut rec = Recorder::new(&mut buf).expect("header");
        rec.write_frame(&[1; FRAME_SAMPLES], &[2; FRAME_SAMPLES])
            .expect("write");
        rec.pause();
        rec.pause();
        rec.write_frame(&[3; FRAME_SAMPLES], &[4; FRAME_SAMPLES])
            .expect("write");
        rec.resume();
        assert!(!rec.is_paused());
        rec.write_frame(&[5; FRAME_SAMPLES], &[6; FRAME_SAMPLES])
            .expect("write");
        let summary = rec.finish().expect("finalize");
        assert_eq!(
            summary,
            RecordingSummary {
                duration_ms: 60,
                pauses: vec![Pause {
                    start_ms: 20,
                    end_ms: 40
                }]
            }
        );
        let mut r = hound::WavReader::new(Cursor::new(buf.into_inner())).expect("valid WAV");
        assert_eq!(r.spec().channels, 2);
        let s: Vec<i16> = r
            .samples::<i16>()
            .collect::<Result<_, _>>()
            .expect("samples");
        assert_eq!(s.len(), 3 * 2 * FRAME_SAMPLES);
        assert_eq!(&s[..4], [1, 2, 1, 2]);
        assert!(s[320..640].iter().all(|&x| x == 0));
        assert_eq!(&s[640..644], [5, 6, 5, 6]);
    }

    #[test]
    fn mono_recording_holds_the_caller_only() {
        let mut buf = Cursor::new(Vec::new());
        let mut rec = Recorder::new_mono(&mut buf).expect("header");
        rec.write_frame(&[7; FRAME_SAMPLES], &[9; FRAME_SAMPLES])
            .expect("write");
        assert_eq!(rec.finish().expect("finalize").duration_ms, 20);
        let mut r = hound::WavReader::new(Cursor::new(buf.into_inner())).expect("valid WAV");
        assert_eq!(r.spec().channels, 1);
        let s: Vec<i16> = r
            .samples::<i16>()
            .collect::<Result<_, _>>()
            .expect("samples");
        assert_eq!(s, vec![7; FRAME_SAMPLES]);
    }

    #[test]
    fn a_recording_left_paused_is_closed_at_its_end() {
        let mut rec = Recorder::new(Cursor::new(Vec::new())).expect("header");
        rec.write_frame(&[1; FRAME_SAMPLES], &[1; FRAME_SAMPLES])
            .expect("write");
        rec.pause();
        rec.write_frame(&[1; FRAME_SAMPLES], &[1; FRAME_SAMPLES])
            .expect("write");
        let s = rec.finish().expect("finalize");
        assert_eq!(
            s.pauses,
            [Pause {
                start_ms: 20,
                end_ms: 40
            }]
        );
    }
}
