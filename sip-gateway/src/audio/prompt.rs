//! Prompts and hold music in memory, and the per-call [`Player`] that plays them frame by frame.
//!
//! zentrale ships its own announcements in German and English (generated from text with
//! espeak-ng by `scripts/gen-prompts.sh`) and its own hold music (a sox-synthesised chord loop).
//! They are compiled into the binary, so a fresh install speaks without any files on disk;
//! tenants add or override prompts with their own WAV uploads, converted to 8 kHz mono once at
//! load time. A [`Prompt`] is an `Arc` of samples: a thousand callers on hold share one copy of
//! the music.
//!
//! The [`Player`] is one call's playlist: a queue of clips, pauses and at most one endless
//! music loop. [`Player::next_frame`] copies the next 20 ms into the caller's buffer and never
//! allocates or blocks. [`Player::interrupt`] empties the playlist at once — an agent's answer
//! must never wait for an announcement to finish (the anti-example is FreeSWITCH issue #1148,
//! where a bridge waited for the playing file). [`Player::announce`] puts an announcement in
//! front of the music and lets the music continue where it stopped, which is how position and
//! waiting-time announcements sound natural.
//!
//! Built-in prompt names (in `de` and `en`): `welcome`, `please_hold`, `caller_number`,
//! `number_1` … `number_20`, `ewt_intro`, `minutes`, `one_minute`, `less_than_one_minute`,
//! `press_1_callback`, `callback_confirmed`, `closed`, `leave_message`, `invalid_input`,
//! `goodbye`; language-neutral (`common`): `language_menu` ("Für Deutsch drücken Sie die 1,
//! for English press 2") and `hold_music`.

use super::wav::{WavError, read_as_8k_mono};
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// The pseudo-language of prompts every language shares (hold music, the bilingual menu).
pub const COMMON: &str = "common";

/// The highest number the built-in number prompts can say.
pub const MAX_SPOKEN_NUMBER: u32 = 20;

/// Errors of the prompt library.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PromptError {
    /// No prompt with this name in this language, nor in [`COMMON`].
    #[error("no prompt {name:?} for language {lang:?}")]
    Missing {
        /// The language asked for.
        lang: String,
        /// The prompt name asked for.
        name: String,
    },
    /// The number is outside what the number prompts can say (1–[`MAX_SPOKEN_NUMBER`]).
    #[error("cannot say {0}: number prompts cover 1-{MAX_SPOKEN_NUMBER}")]
    NumberOutOfRange(u32),
    /// A prompt name or language code that is empty, longer than 64 bytes, or not `[a-z0-9_-]`.
    #[error("invalid prompt or language name {0:?}")]
    InvalidName(String),
    /// The uploaded audio could not be read or converted.
    #[error(transparent)]
    Wav(#[from] WavError),
    /// A prompt directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One prompt or music clip: 8 kHz mono samples, shared by every call that plays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

impl Prompt {
    /// A prompt from 8 kHz mono samples.
    pub fn from_samples(samples: Vec<i16>) -> Prompt {
        Prompt {
            samples: samples.into(),
        }
    }

    /// A prompt from a WAV file of any supported rate and format (see [`super::wav`]).
    pub fn from_wav<R: Read>(reader: R) -> Result<Prompt, PromptError> {
        Ok(Prompt::from_samples(read_as_8k_mono(reader)?))
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

const BUILTIN: &[(&str, &str, &[u8])] = &[
    (
        "de",
        "callback_confirmed",
        include_bytes!("../../prompts/de/callback_confirmed.wav"),
    ),
    (
        "de",
        "caller_number",
        include_bytes!("../../prompts/de/caller_number.wav"),
    ),
    (
        "de",
        "closed",
        include_bytes!("../../prompts/de/closed.wav"),
    ),
    (
        "de",
        "ewt_intro",
        include_bytes!("../../prompts/de/ewt_intro.wav"),
    ),
    (
        "de",
        "goodbye",
        include_bytes!("../../prompts/de/goodbye.wav"),
    ),
    (
        "de",
        "invalid_input",
        include_bytes!("../../prompts/de/invalid_input.wav"),
    ),
    (
        "de",
        "leave_message",
        include_bytes!("../../prompts/de/leave_message.wav"),
    ),
    (
        "de",
        "less_than_one_minute",
        include_bytes!("../../prompts/de/less_than_one_minute.wav"),
    ),
    (
        "de",
        "minutes",
        include_bytes!("../../prompts/de/minutes.wav"),
    ),
    (
        "de",
        "number_1",
        include_bytes!("../../prompts/de/number_1.wav"),
    ),
    (
        "de",
        "number_10",
        include_bytes!("../../prompts/de/number_10.wav"),
    ),
    (
        "de",
        "number_11",
        include_bytes!("../../prompts/de/number_11.wav"),
    ),
    (
        "de",
        "number_12",
        include_bytes!("../../prompts/de/number_12.wav"),
    ),
    (
        "de",
        "number_13",
        include_bytes!("../../prompts/de/number_13.wav"),
    ),
    (
        "de",
        "number_14",
        include_bytes!("../../prompts/de/number_14.wav"),
    ),
    (
        "de",
        "number_15",
        include_bytes!("../../prompts/de/number_15.wav"),
    ),
    (
        "de",
        "number_16",
        include_bytes!("../../prompts/de/number_16.wav"),
    ),
    (
        "de",
        "number_17",
        include_bytes!("../../prompts/de/number_17.wav"),
    ),
    (
        "de",
        "number_18",
        include_bytes!("../../prompts/de/number_18.wav"),
    ),
    (
        "de",
        "number_19",
        include_bytes!("../../prompts/de/number_19.wav"),
    ),
    (
        "de",
        "number_2",
        include_bytes!("../../prompts/de/number_2.wav"),
    ),
    (
        "de",
        "number_20",
        include_bytes!("../../prompts/de/number_20.wav"),
    ),
    (
        "de",
        "number_3",
        include_bytes!("../../prompts/de/number_3.wav"),
    ),
    (
        "de",
        "number_4",
        include_bytes!("../../prompts/de/number_4.wav"),
    ),
    (
        "de",
        "number_5",
        include_bytes!("../../prompts/de/number_5.wav"),
    ),
    (
        "de",
        "number_6",
        include_bytes!("../../prompts/de/number_6.wav"),
    ),
    (
        "de",
        "number_7",
        include_bytes!("../../prompts/de/number_7.wav"),
    ),
    (
        "de",
        "number_8",
        include_bytes!("../../prompts/de/number_8.wav"),
    ),
    (
        "de",
        "number_9",
        include_bytes!("../../prompts/de/number_9.wav"),
    ),
    (
        "de",
        "one_minute",
        include_bytes!("../../prompts/de/one_minute.wav"),
    ),
    (
        "de",
        "please_hold",
        include_bytes!("../../prompts/de/please_hold.wav"),
    ),
    (
        "de",
        "press_1_callback",
        include_bytes!("../../prompts/de/press_1_callback.wav"),
    ),
    (
        "de",
        "welcome",
        include_bytes!("../../prompts/de/welcome.wav"),
    ),
    (
        "en",
        "callback_confirmed",
        include_bytes!("../../prompts/en/callback_confirmed.wav"),
    ),
    (
        "en",
        "caller_number",
        include_bytes!("../../prompts/en/caller_number.wav"),
    ),
    (
        "en",
        "closed",
        include_bytes!("../../prompts/en/closed.wav"),
    ),
    (
        "en",
        "ewt_intro",
        include_bytes!("../../prompts/en/ewt_intro.wav"),
    ),
    (
        "en",
        "goodbye",
        include_bytes!("../../prompts/en/goodbye.wav"),
    ),
    (
        "en",
        "invalid_input",
        include_bytes!("../../prompts/en/invalid_input.wav"),
    ),
    (
        "en",
        "leave_message",
        include_bytes!("../../prompts/en/leave_message.wav"),
    ),
    (
        "en",
        "less_than_one_minute",
        include_bytes!("../../prompts/en/less_than_one_minute.wav"),
    ),
    (
        "en",
        "minutes",
        include_bytes!("../../prompts/en/minutes.wav"),
    ),
    (
        "en",
        "number_1",
        include_bytes!("../../prompts/en/number_1.wav"),
    ),
    (
        "en",
        "number_10",
        include_bytes!("../../prompts/en/number_10.wav"),
    ),
    (
        "en",
        "number_11",
        include_bytes!("../../prompts/en/number_11.wav"),
    ),
    (
        "en",
        "number_12",
        include_bytes!("../../prompts/en/number_12.wav"),
    ),
    (
        "en",
        "number_13",
        include_bytes!("../../prompts/en/number_13.wav"),
    ),
    (
        "en",
        "number_14",
        include_bytes!("../../prompts/en/number_14.wav"),
    ),
    (
        "en",
        "number_15",
        include_bytes!("../../prompts/en/number_15.wav"),
    ),
    (
        "en",
        "number_16",
        include_bytes!("../../prompts/en/number_16.wav"),
    ),
    (
        "en",
        "number_17",
        include_bytes!("../../prompts/en/number_17.wav"),
    ),
    (
        "en",
        "number_18",
        include_bytes!("../../prompts/en/number_18.wav"),
    ),
    (
        "en",
        "number_19",
        include_bytes!("../../prompts/en/number_19.wav"),
    ),
    (
        "en",
        "number_2",
        include_bytes!("../../prompts/en/number_2.wav"),
    ),
    (
        "en",
        "number_20",
        include_bytes!("../../prompts/en/number_20.wav"),
    ),
    (
        "en",
        "number_3",
        include_bytes!("../../prompts/en/number_3.wav"),
    ),
    (
        "en",
        "number_4",
        include_bytes!("../../prompts/en/number_4.wav"),
    ),
    (
        "en",
        "number_5",
        include_bytes!("../../prompts/en/number_5.wav"),
    ),
    (
        "en",
        "number_6",
        include_bytes!("../../prompts/en/number_6.wav"),
    ),
    (
        "en",
        "number_7",
        include_bytes!("../../prompts/en/number_7.wav"),
    ),
    (
        "en",
        "number_8",
        include_bytes!("../../prompts/en/number_8.wav"),
    ),
    (
        "en",
        "number_9",
        include_bytes!("../../prompts/en/number_9.wav"),
    ),
    (
        "en",
        "one_minute",
        include_bytes!("../../prompts/en/one_minute.wav"),
    ),
    (
        "en",
        "please_hold",
        include_bytes!("../../prompts/en/please_hold.wav"),
    ),
    (
        "en",
        "press_1_callback",
        include_bytes!("../../prompts/en/press_1_callback.wav"),
    ),
    (
        "en",
        "welcome",
        include_bytes!("../../prompts/en/welcome.wav"),
    ),
    (
        "common",
        "hold_music",
        include_bytes!("../../prompts/common/hold_music.wav"),
    ),
    (
        "common",
        "language_menu",
        include_bytes!("../../prompts/common/language_menu.wav"),
    ),
];

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Prompts by language and name. Clone it to layer a tenant's uploads over the built-ins:
/// the clone shares every sample buffer.
#[derive(Clone, Debug, Default)]
pub struct PromptLibrary {
    by_lang: HashMap<String, HashMap<String, Prompt>>,
}

impl PromptLibrary {
    /// An empty library.
    pub fn new() -> PromptLibrary {
        PromptLibrary::default()
    }

    /// zentrale's own prompts (German, English, common), decoded from the copies compiled into
    /// the binary. Fails only if a committed asset is broken, which a test rules out.
    pub fn builtin() -> Result<PromptLibrary, PromptError> {
        let mut lib = PromptLibrary::new();
        for (lang, name, bytes) in BUILTIN {
            lib.insert(lang, name, Prompt::from_wav(*bytes)?)?;
        }
        Ok(lib)
    }

    /// Adds or replaces a prompt.
    pub fn insert(&mut self, lang: &str, name: &str, prompt: Prompt) -> Result<(), PromptError> {
        for s in [lang, name] {
            if !valid_name(s) {
                return Err(PromptError::InvalidName(s.to_owned()));
            }
        }
        self.by_lang
            .entry(lang.to_owned())
            .or_default()
            .insert(name.to_owned(), prompt);
        Ok(())
    }

    /// Adds or replaces a prompt from a WAV upload (8–48 kHz, converted to 8 kHz mono).
    pub fn insert_wav<R: Read>(
        &mut self,
        lang: &str,
        name: &str,
        wav: R,
    ) -> Result<(), PromptError> {
        let prompt = Prompt::from_wav(wav)?;
        self.insert(lang, name, prompt)
    }

    /// Loads every `<dir>/<lang>/<name>.wav` (a tenant's prompt directory, or the repository's
    /// `prompts/`); returns how many were loaded. Start-up I/O, not for the media path.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, PromptError> {
        let io = |path: &Path, source| PromptError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut count = 0;
        for lang_entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let lang_path = lang_entry.map_err(|e| io(dir, e))?.path();
            let Some(lang) = lang_path
                .file_name()
                .and_then(|s| s.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if !lang_path.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&lang_path).map_err(|e| io(&lang_path, e))? {
                let path = file.map_err(|e| io(&lang_path, e))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("wav") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let f = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
                self.insert_wav(&lang, name, std::io::BufReader::new(f))?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The prompt `name` in `lang`, falling back to the language-neutral [`COMMON`] set.
    pub fn get(&self, lang: &str, name: &str) -> Result<&Prompt, PromptError> {
        [lang, COMMON]
            .iter()
            .find_map(|l| self.by_lang.get(*l).and_then(|m| m.get(name)))
            .ok_or_else(|| PromptError::Missing {
                lang: lang.to_owned(),
                name: name.to_owned(),
            })
    }

    /// The languages that have prompts (excluding [`COMMON`]).
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.by_lang
            .keys()
            .map(String::as_str)
            .filter(|l| *l != COMMON)
    }

    /// How many prompts the library holds in all languages.
    pub fn len(&self) -> usize {
        self.by_lang.values().map(HashMap::len).sum()
    }

    /// Whether the library is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// "You are caller number N", as a sequence of prompts.
    pub fn position_announcement(
        &self,
        lang: &str,
        position: u32,
    ) -> Result<Vec<Prompt>, PromptError> {
        Ok(vec![
            self.get(lang, "caller_number")?.clone(),
            self.number(lang, position)?,
        ])
    }

    /// "Your expected waiting time is about …": less than one minute for 0, "one minute" for 1,
    /// otherwise "N minutes" (N up to [`MAX_SPOKEN_NUMBER`]).
    pub fn waiting_time_announcement(
        &self,
        lang: &str,
        minutes: u32,
    ) -> Result<Vec<Prompt>, PromptError> {
        let intro = self.get(lang, "ewt_intro")?.clone();
        Ok(match minutes {
            0 => vec![intro, self.get(lang, "less_than_one_minute")?.clone()],
            1 => vec![intro, self.get(lang, "one_minute")?.clone()],
            n => vec![
                intro,
                self.number(lang, n)?,
                self.get(lang, "minutes")?.clone(),
            ],
        })
    }

    fn number(&self, lang: &str, n: u32) -> Result<Prompt, PromptError> {
        if !(1..=MAX_SPOKEN_NUMBER).contains(&n) {
            return Err(PromptError::NumberOutOfRange(n));
        }
        Ok(self.get(lang, &format!("number_{n}"))?.clone())
    }
}

#[derive(Clone, Debug)]
enum Item {
    Clip(Prompt),
    Loop(Prompt),
    Silence(usize),
}

#[derive(Clone, Debug)]
struct Cursor {
    item: Item,
    pos: usize,
}

/// One call's playlist. The front of the queue is what is playing now.
#[derive(Clone, Debug, Default)]
pub struct Player {
    queue: VecDeque<Cursor>,
}

impl Player {
    /// An idle player.
    pub fn new() -> Player {
        Player::default()
    }

    /// Appends a prompt to the playlist. Empty prompts are skipped.
    pub fn play(&mut self, prompt: &Prompt) {
        if !prompt.samples.is_empty() {
            self.queue.push_back(Cursor {
                item: Item::Clip(prompt.clone()),
                pos: 0,
            });
        }
    }

    /// Appends several prompts, played back to back.
    pub fn play_all<'a>(&mut self, prompts: impl IntoIterator<Item = &'a Prompt>) {
        for p in prompts {
            self.play(p);
        }
    }

    /// Appends a pause.
    pub fn pause_ms(&mut self, ms: u32) {
        let samples = (u64::from(ms) * u64::from(SAMPLE_RATE) / 1000) as usize;
        if samples > 0 {
            self.queue.push_back(Cursor {
                item: Item::Silence(samples),
                pos: 0,
            });
        }
    }

    /// Appends music that loops until [`Player::interrupt`]; anything queued after it only
    /// plays once the loop is interrupted, so it is normally the last item. Empty music is skipped.
    pub fn loop_music(&mut self, music: &Prompt) {
        if !music.samples.is_empty() {
            self.queue.push_back(Cursor {
                item: Item::Loop(music.clone()),
                pos: 0,
            });
        }
    }

    /// Plays `prompts` now, in front of whatever is playing, which then continues where it
    /// stopped (music resumes mid-phrase rather than from the start).
    pub fn announce<'a>(&mut self, prompts: impl IntoIterator<Item = &'a Prompt>) {
        let items: Vec<Cursor> = prompts
            .into_iter()
            .filter(|p| !p.samples.is_empty())
            .map(|p| Cursor {
                item: Item::Clip(p.clone()),
                pos: 0,
            })
            .collect();
        for c in items.into_iter().rev() {
            self.queue.push_front(c);
        }
    }

    /// Stops everything at once: the next frame is silence. For an agent answering, a caller
    /// hanging up, or a DTMF key that barges into a menu prompt.
    pub fn interrupt(&mut self) {
        self.queue.clear();
    }

    /// Whether anything is queued or playing.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the player is on the music loop (announcements done).
    pub fn is_on_music(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Cursor {
                item: Item::Loop(_),
                ..
            })
        )
    }

    /// Writes the next 20 ms into `out`. Returns `false` when the playlist is empty (then `out`
    /// is silence). A clip ending mid-frame is followed by the next item in the same frame,
    /// so composed sentences have no 20 ms holes.
    pub fn next_frame(&mut self, out: &mut Frame) -> bool {
        let mut filled = 0;
        let mut played = false;
        while filled < FRAME_SAMPLES {
            let Some(cur) = self.queue.front_mut() else {
                break;
            };
            played = true;
            let want = FRAME_SAMPLES - filled;
            let done = match &cur.item {
                Item::Clip(p) => {
                    let rest = &p.samples[cur.pos..];
                    let n = rest.len().min(want);
                    out[filled..filled + n].copy_from_slice(&rest[..n]);
                    filled += n;
                    cur.pos += n;
                    cur.pos >= p.samples.len()
                }
                Item::Loop(p) => {
                    // Non-empty by construction (loop_music skips empty music), so this
                    // makes progress on every turn.
                    let rest = &p.samples[cur.pos..];
                    let n = rest.len().min(want);
                    out[filled..filled + n].copy_from_slice(&rest[..n]);
                    filled += n;
                    cur.pos = (cur.pos + n) % p.samples.len();
                    false
                }
                Item::Silence(len) => {
                    let n = (len - cur.pos).min(want);
                    out[filled..filled + n].fill(0);
                    filled += n;
                    cur.pos += n;
                    cur.pos >= *len
                }
            };
            if done {
                self.queue.pop_front();
            }
        }
        out[filled..].fill(0);
        played
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::SILENCE;
    use crate::audio::tone::{ToneGenerator, dominant_frequency};

    fn tone_prompt(freq: f64, ms: usize) -> Prompt {
        let mut v = vec![0i16; ms * 8];
        ToneGenerator::new(freq, 8000).fill(&mut v);
        Prompt::from_samples(v)
    }

    fn heard(player: &mut Player, frames: usize) -> Vec<Option<f64>> {
        let cands = [500.0, 1000.0, 1500.0, 2000.0];
        (0..frames)
            .map(|_| {
                let mut f = SILENCE;
                player.next_frame(&mut f);
                dominant_frequency(&f, &cands, 0.8).map(|(f, _)| f)
            })
            .collect()
    }

    #[test]
    fn clips_play_in_order_without_gaps_then_silence() {
        let mut p = Player::new();
        p.play_all([&tone_prompt(500.0, 60), &tone_prompt(1000.0, 40)]);
        assert_eq!(
            heard(&mut p, 6),
            [
                Some(500.0),
                Some(500.0),
                Some(500.0),
                Some(1000.0),
                Some(1000.0),
                None
            ]
        );
        assert!(!p.is_playing());
    }

    #[test]
    fn a_clip_ending_mid_frame_is_followed_in_the_same_frame() {
        let a = Prompt::from_samples(vec![1; 100]);
        let b = Prompt::from_samples(vec![2; 100]);
        let mut p = Player::new();
        p.play_all([&a, &b]);
        let mut f = SILENCE;
        assert!(p.next_frame(&mut f));
        assert!(f[..100].iter().all(|&s| s == 1) && f[100..].iter().all(|&s| s == 2));
        assert!(p.next_frame(&mut f));
        assert!(f[..40].iter().all(|&s| s == 2) && f[40..].iter().all(|&s| s == 0));
        assert!(!p.next_frame(&mut f));
    }

    #[test]
    fn music_loops_seamlessly_and_interrupt_stops_at_once() {
        // 70 samples: not a divisor of the frame, so the wrap happens inside frames.
        let music = Prompt::from_samples((0..70).collect());
        let mut p = Player::new();
        p.loop_music(&music);
        let mut all = Vec::new();
        for _ in 0..10 {
            let mut f = SILENCE;
            assert!(p.next_frame(&mut f));
            all.extend_from_slice(&f);
        }
        assert!(all.iter().enumerate().all(|(i, &s)| s == (i % 70) as i16));
        p.interrupt();
        let mut f = [7i16; FRAME_SAMPLES];
        assert!(!p.next_frame(&mut f));
        assert_eq!(f, SILENCE);
    }

    #[test]
    fn announcement_over_music_resumes_the_music_where_it_stopped() {
        let music = Prompt::from_samples((0..1000).collect());
        let mut p = Player::new();
        p.loop_music(&music);
        let mut f = SILENCE;
        p.next_frame(&mut f);
        p.announce([&Prompt::from_samples(vec![-5; 160])]);
        assert!(!p.is_on_music());
        p.next_frame(&mut f);
        assert!(f.iter().all(|&s| s == -5));
        p.next_frame(&mut f);
        assert_eq!(f[0], 160, "music continues at sample 160");
        assert!(p.is_on_music());
    }

    #[test]
    fn pauses_are_silent_but_count_as_playing() {
        let mut p = Player::new();
        p.pause_ms(40);
        p.play(&tone_prompt(2000.0, 20));
        assert_eq!(heard(&mut p, 4), [None, None, Some(2000.0), None]);
    }

    #[test]
    fn empty_prompts_and_bad_names_are_refused_gracefully() {
        let mut p = Player::new();
        p.loop_music(&Prompt::from_samples(vec![]));
        p.play(&Prompt::from_samples(vec![]));
        assert!(!p.is_playing());
        let mut lib = PromptLibrary::new();
        assert!(matches!(
            lib.insert("de", "../etc/passwd", Prompt::from_samples(vec![1])),
            Err(PromptError::InvalidName(_))
        ));
        assert!(matches!(
            lib.insert("", "x", Prompt::from_samples(vec![1])),
            Err(PromptError::InvalidName(_))
        ));
        assert!(matches!(
            lib.get("de", "welcome"),
            Err(PromptError::Missing { .. })
        ));
    }
}
