//! The audio toolkit of the media engine: everything that looks *inside* the RTP payload.
//!
//! The plain relay (`crate::media`) forwards packets without decoding them. The moment a call
//! needs music, an announcement, DTMF, a recording, whisper/barge or a quality estimate, the
//! media workers hand 20 ms frames to the pieces here.
//!
//! # Layout
//! - [`g711`]: µ-law / A-law encode, decode and transcode (G.191-verified via
//!   `audio-codec-algorithms`).
//! - [`tone`]: sine and dual-tone generators and a Goertzel detector; every audio-path test in
//!   the project proves "the far end heard it" with these.
//! - [`dtmf`]: RFC 4733 telephone-event payloads, a receiver that reports each digit once, and a
//!   sender that produces the packet sequence for a digit.
//! - [`wav`]: WAV read/write and resampling of 16/48 kHz uploads to 8 kHz.
//! - [`prompt`]: the prompt library (zentrale's own German and English announcements, hold
//!   music, tenant uploads) and the per-call [`prompt::Player`].
//! - [`jitter`]: a small fixed-delay reorder buffer with concealment, used only where audio is
//!   mixed, recorded or transcoded.
//! - [`mix`]: listen / whisper / barge mixing with saturation.
//! - [`record`]: the stereo call recorder (caller left, agent right) with pause/resume.
//! - [`quality`]: an ITU-T G.107 E-model MOS estimate from loss, jitter and delay (the RFC 3550
//!   receive statistics it reads are `media::rtp::ReceiveStats`, re-exported there).
//!
//! # Design
//! Everything here is sans-IO and clock-free: functions take frames and timestamps as
//! arguments and return frames, so the relay's workers, the future B2BUA, the tests and the
//! benches all drive the same code. The per-frame paths write into caller-owned buffers and do
//! not allocate; allocation happens when a prompt is loaded or a recorder is created.
//! Narrowband (8 kHz, 16-bit, mono, 20 ms frames) is the internal format because every trunk
//! leg is G.711; wider-band sources are resampled once, at load time.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod mix;
pub mod prompt;
pub mod quality;
pub mod record;
pub mod tone;
pub mod wav;

/// Internal sample rate of all call audio (G.711 narrowband).
pub const SAMPLE_RATE: u32 = 8_000;
/// Duration of one frame in milliseconds; the packetisation every SIP peer defaults to.
pub const FRAME_MS: u32 = 20;
/// Samples in one frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// One 20 ms frame of 8 kHz linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// A frame of digital silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];
