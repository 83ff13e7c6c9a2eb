//! The contract between the B2BUA and the media workers for everything beyond the plain relay:
//! playing prompts and music into a leg, who hears whom (hold, whisper, barge), DTMF
//! detection, recording, and a third leg (a supervisor or a consultation party).
//!
//! A call starts as a plain bridge (A hears B, B hears A, nothing else): the worker forwards
//! packets without decoding them. The first command that needs the audio (a play, a hearing
//! matrix other than the plain bridge, DTMF detection or a recording) switches the call to
//! processed mode: each leg's packets are decoded into a jitter buffer, and every 20 ms the
//! worker builds each leg's frame — the prompt/music playing to it, else the sum of the legs
//! it hears — encodes it in the leg's codec and sends it with the leg's own SSRC, sequence and
//! timestamp. [`AudioCommand::Reset`] returns to the zero-copy bridge.
//!
//! "An agent's answer is never blocked by a prompt": [`AudioCommand::Stop`] and
//! [`AudioCommand::Reset`] take effect on the next 20 ms frame, whatever is playing.

use std::path::PathBuf;
use std::sync::Arc;

use super::relay::Leg;
use crate::audio::prompt::Prompt;

/// A set of legs (what one leg hears).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LegSet(u8);

impl LegSet {
    /// No leg: silence (or only what is playing).
    pub const EMPTY: LegSet = LegSet(0);

    /// The set of these legs.
    pub fn of(legs: &[Leg]) -> LegSet {
        LegSet(legs.iter().fold(0, |m, l| m | (1 << l.index())))
    }

    /// Whether `leg` is in the set.
    pub fn contains(self, leg: Leg) -> bool {
        self.0 & (1 << leg.index()) != 0
    }

    /// The legs in the set, A first.
    pub fn iter(self) -> impl Iterator<Item = Leg> {
        [Leg::A, Leg::B, Leg::C]
            .into_iter()
            .filter(move |l| self.contains(*l))
    }
}

/// What the B2BUA asks the media workers to do with a call's audio.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AudioCommand {
    /// Plays `items` in order into `leg`, then loops `music` if given (hold music, queue
    /// music). Replaces whatever was playing to that leg. While something plays, the leg hears
    /// only that; when `items` end without music, [`MediaEvent::PlayDone`] reports `tag` and the
    /// leg hears what its [`AudioCommand::Hears`] says again.
    ///
    /// [`MediaEvent::PlayDone`]: super::MediaEvent::PlayDone
    Play {
        /// The leg that hears it.
        leg: Leg,
        /// Prompts in order (may be empty: music only).
        items: Vec<Arc<Prompt>>,
        /// Looped after the items, until stopped.
        music: Option<Arc<Prompt>>,
        /// Echoed in `PlayDone`.
        tag: u64,
    },
    /// Stops what plays into `leg` on the next frame.
    Stop {
        /// The leg.
        leg: Leg,
    },
    /// Sets what `leg` hears of the other legs (the default is the plain bridge: A hears B,
    /// B hears A, C hears nothing). Hold: `A hears {}` plus music; whisper: `B hears {A, C}`,
    /// `A hears {B}`, `C hears {A, B}`; barge: everyone hears everyone.
    Hears {
        /// The listening leg.
        leg: Leg,
        /// Whom it hears.
        from: LegSet,
    },
    /// Reports the leg's DTMF (RFC 4733 telephone-events, and in-band tones) as
    /// `MediaEvent::Dtmf` while on.
    DetectDtmf {
        /// The leg.
        leg: Leg,
        /// On or off.
        on: bool,
    },
    /// Starts recording into `path` (a WAV file, created): stereo with leg A on the left and
    /// legs B and C on the right, or mono of leg A alone when `mono` (voicemail).
    Record {
        /// The file to create.
        path: PathBuf,
        /// Leg A only, one channel.
        mono: bool,
    },
    /// Writes silence instead of audio until resumed (payment card numbers); the pause is
    /// listed in the recording's summary.
    PauseRecording,
    /// Ends a pause.
    ResumeRecording,
    /// Finishes the file; `MediaEvent::Recorded` follows.
    StopRecording,
    /// Back to the plain zero-copy bridge: plays stopped, default hearing, DTMF off. A
    /// recording in progress continues (the call stays processed while it records).
    Reset,
}
