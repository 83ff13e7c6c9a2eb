//! Processed mode of the media relay against real UDP peers on 127.0.0.1: what each party
//! hears is proven by tones sent by Rust RTP peers (G.711 µ-law, 20 ms pacing) and found —
//! or proven absent — with the Goertzel detector of `audio::tone` at the far end.
//!
//! Covered: prompt then music into the caller; PlayDone; Reset back to the zero-copy forward
//! (the caller receives the agent's own SSRC again); whisper (agent hears the supervisor, the
//! caller does not), barge and listen; hold (caller hears music, agent hears silence); RFC 4733
//! DTMF reported once per press; a stereo recording with the caller left and the agent right,
//! a pause listed and silent; a mono voicemail file; the third leg's ports freed on removal.
//!
//! No SIP: the relay is driven through its handle as the B2BUA drives it. Every test uses its
//! own 50-port slice of 43000-43899 (media_rtcp has 43900-43999) so the tests run in parallel; every wait polls a condition
//! (packets counted at a peer, an event) with a deadline, and nothing asserts on elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sip_gateway::audio::dtmf::{Digit, DtmfSender};
use sip_gateway::audio::g711::{Law, decode_into, encode_into};
use sip_gateway::audio::prompt::{Prompt, PromptLibrary};
use sip_gateway::audio::tone::{ToneGenerator, detect, mean_power};
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};
use sip_gateway::media::rtp::rtp_payload;
use sip_gateway::media::{
    AudioCommand, CallMedia, Leg, LegSet, LegSetup, MediaEvent, MediaRelay, PayloadTypes,
    RelayConfig,
};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);
/// Tone amplitude of the peers: about −12 dB below full scale, power ≈ 0.03.
const AMPLITUDE: i16 = 8000;
/// A tone "absent" at the far end carries less than this power (≈ 25 dB below the tones).
const ABSENT: f64 = 1e-4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The share of the signal's power at `freq` (about 1 for a pure tone, 0.5 for one of two
/// equal tones).
fn share(x: &[i16], freq: f64) -> f64 {
    detect(x, freq) / mean_power(x).max(1e-12)
}

/// A phone: one UDP socket for RTP, a thread sending a tone on it (or nothing), and a
/// receive side that decodes what arrives.
struct Peer {
    sock: UdpSocket,
    talker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer { sock, talker: None }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn setup(&self) -> LegSetup {
        LegSetup::new(Some(self.addr()), PayloadTypes::of(&[0, 8, 101]))
    }

    /// Starts sending `freq` Hz (µ-law, 20 ms packets, paced against a deadline) to `to`.
    fn talk(&mut self, to: SocketAddr, freq: f64, ssrc: u32) {
        self.quiet();
        let sock = self.sock.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut tone = ToneGenerator::new(freq, AMPLITUDE);
            let mut next = Instant::now();
            let mut k: u32 = 0;
            while !flag.load(Ordering::Relaxed) {
                let mut pcm = SILENCE;
                tone.fill(&mut pcm);
                let mut p = [0u8; 12 + FRAME_SAMPLES];
                p[0] = 0x80;
                p[2..4].copy_from_slice(&(k as u16).to_be_bytes());
                p[4..8].copy_from_slice(&(k * 160).to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                encode_into(Law::Mu, &pcm, &mut p[12..]);
                let _ = sock.send_to(&p, to);
                k += 1;
                next += Duration::from_millis(20);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        self.talker = Some((stop, thread));
    }

    fn quiet(&mut self) {
        if let Some((stop, t)) = self.talker.take() {
            stop.store(true, Ordering::Relaxed);
            t.join().unwrap();
        }
    }

    /// Receives `frames` audio packets (bounded by [`WAIT`]); returns the decoded samples in
    /// arrival order and the SSRCs seen.
    fn hear(&self, frames: usize) -> (Vec<i16>, Vec<u32>) {
        let mut samples = Vec::with_capacity(frames * FRAME_SAMPLES);
        let mut ssrcs = Vec::new();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + WAIT;
        let mut got = 0;
        while got < frames {
            assert!(
                Instant::now() < deadline,
                "only {got} of {frames} frames arrived"
            );
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let Some((h, payload)) = rtp_payload(&buf[..n]) else {
                continue;
            };
            let Some(law) = Law::from_payload_type(h.payload_type) else {
                continue;
            };
            let mut pcm = [0i16; 1024];
            let m = decode_into(law, &payload[..payload.len().min(1024)], &mut pcm);
            samples.extend_from_slice(&pcm[..m]);
            if !ssrcs.contains(&h.ssrc) {
                ssrcs.push(h.ssrc);
            }
            got += 1;
        }
        (samples, ssrcs)
    }

    /// Like [`Peer::hear`], but only frames zentrale produced (not forwarded peer packets,
    /// whose SSRCs are 0xA, 0xB and 0xC in these tests).
    fn hear_processed(&self, frames: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.len() < frames * FRAME_SAMPLES {
            assert!(Instant::now() < deadline, "no processed frames");
            let (f, ssrcs) = self.hear(1);
            if !ssrcs.iter().any(|s| (0xA..=0xC).contains(s)) {
                out.extend_from_slice(&f);
            }
        }
        out
    }

    /// Listens in 5-frame windows until `ready` holds for one (bounded by [`WAIT`]): the
    /// commands sent before have taken effect.
    fn hear_until(&self, ready: impl Fn(&[i16]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (f, _) = self.hear(5);
            if ready(&f) {
                return;
            }
            assert!(Instant::now() < deadline, "the expected audio never came");
        }
    }

    /// Drops what is queued (audio from before a change).
    fn flush(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while self.sock.recv(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false).unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.quiet();
    }
}

struct Call {
    rt: tokio::runtime::Runtime,
    relay: MediaRelay,
    events: UnboundedReceiver<MediaEvent>,
    media: CallMedia,
    a: Peer,
    b: Peer,
}

impl Call {
    /// A bridged call on ports `first..first + 49`, A talking `fa` Hz and B `fb` Hz (0: silent).
    fn start(first: u16, fa: f64, fb: f64) -> Call {
        let rt = runtime();
        let (relay, events) =
            MediaRelay::start(RelayConfig::default().ports(first, first + 49)).unwrap();
        let (mut a, mut b) = (Peer::new(), Peer::new());
        let media = relay.add_call(a.setup(), b.setup()).unwrap();
        if fa > 0.0 {
            a.talk(relay_addr(media.leg_a.rtp), fa, 0xA);
        }
        if fb > 0.0 {
            b.talk(relay_addr(media.leg_b.rtp), fb, 0xB);
        }
        Call {
            rt,
            relay,
            events,
            media,
            a,
            b,
        }
    }

    fn audio(&self, cmd: AudioCommand) {
        self.relay.audio(self.media.id, cmd).unwrap();
    }

    fn hears(&self, leg: Leg, from: &[Leg]) {
        self.audio(AudioCommand::Hears {
            leg,
            from: LegSet::of(from),
        });
    }

    /// The next event that `pick` accepts (others are skipped), bounded by [`WAIT`].
    fn wait_event<T>(&mut self, mut pick: impl FnMut(MediaEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.events.recv()).await })
                .expect("the awaited media event did not come")
                .expect("event channel closed");
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    }

    /// Events that arrive within `window` (used only to prove that nothing more comes).
    fn events_within(&mut self, window: Duration) -> Vec<MediaEvent> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .rt
                .block_on(async { tokio::time::timeout(left, self.events.recv()).await })
            {
                Ok(Some(ev)) => out.push(ev),
                _ => return out,
            }
        }
    }
}

fn relay_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn tone_prompt(freq: f64, ms: usize) -> Arc<Prompt> {
    let mut v = vec![0i16; ms * 8];
    ToneGenerator::new(freq, AMPLITUDE).fill(&mut v);
    Arc::new(Prompt::from_samples(v))
}

fn temp_wav(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zentrale-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn caller_hears_the_prompt_then_the_music_then_play_done_without_music() {
    let mut call = Call::start(43000, 0.0, 1000.0);
    call.audio(AudioCommand::Play {
        leg: Leg::A,
        items: vec![tone_prompt(700.0, 400)],
        music: Some(tone_prompt(500.0, 300)),
        tag: 1,
    });
    // 400 ms prompt = 20 frames, then music; B's tone is not heard while something plays.
    let heard = call.a.hear_processed(60);
    let prompt = &heard[..3200];
    let music = &heard[3200..];
    assert!(
        share(prompt, 700.0) > 0.9,
        "prompt: {}",
        share(prompt, 700.0)
    );
    assert!(share(music, 500.0) > 0.9, "music: {}", share(music, 500.0));
    assert!(detect(&heard, 1000.0) < ABSENT, "B leaked into the prompt");

    // A prompt without music ends with PlayDone, and the caller hears the agent again.
    call.audio(AudioCommand::Play {
        leg: Leg::A,
        items: vec![tone_prompt(600.0, 200)],
        music: None,
        tag: 42,
    });
    let tag = call.wait_event(|e| match e {
        MediaEvent::PlayDone {
            leg: Leg::A, tag, ..
        } => Some(tag),
        _ => None,
    });
    assert_eq!(tag, 42);
    call.a.flush();
    let (after, _) = call.a.hear(25);
    assert!(share(&after[800..], 1000.0) > 0.8);
}

#[test]
fn a_built_in_announcement_reaches_the_caller() {
    let mut call = Call::start(43100, 0.0, 0.0);
    let lib = PromptLibrary::builtin().unwrap();
    let prompt = Arc::new(lib.get("de", "caller_number").unwrap().clone());
    let frames = (prompt.duration_ms() / 20) as usize;
    call.audio(AudioCommand::Play {
        leg: Leg::A,
        items: vec![prompt],
        music: None,
        tag: 3,
    });
    let heard = call.a.hear_processed(frames.min(100));
    // Speech: clearly above G.711 idle noise (−60 dB of a full-scale sine is 5e-7).
    assert!(mean_power(&heard) > 1e-4, "power {}", mean_power(&heard));
    call.wait_event(|e| matches!(e, MediaEvent::PlayDone { tag: 3, .. }).then_some(()));
}

#[test]
fn reset_returns_to_the_zero_copy_forward_within_a_few_frames() {
    let call = Call::start(43200, 440.0, 1000.0);
    call.audio(AudioCommand::Play {
        leg: Leg::A,
        items: vec![],
        music: Some(tone_prompt(500.0, 300)),
        tag: 1,
    });
    let held = call.a.hear_processed(30);
    assert!(share(&held, 500.0) > 0.9 && detect(&held, 1000.0) < ABSENT);
    call.audio(AudioCommand::Reset);
    // Within a few frames the caller receives B's own packets again (forwarded untouched).
    let deadline = Instant::now() + WAIT;
    loop {
        let (f, ssrcs) = call.a.hear(1);
        if ssrcs == [0xB] {
            let (rest, ssrcs) = call.a.hear(10);
            assert!(ssrcs.iter().all(|&s| s == 0xB));
            assert!(share(&rest, 1000.0) > 0.9 && detect(&rest, 500.0) < ABSENT);
            break;
        }
        assert!(Instant::now() < deadline, "never back to forwarding: {f:?}");
    }
    // And B still hears A.
    call.b.flush();
    let (b, _) = call.b.hear(10);
    assert!(share(&b, 440.0) > 0.9);
}

#[test]
fn whisper_reaches_the_agent_only_barge_reaches_both_listen_hears_both() {
    let call = Call::start(43300, 440.0, 1000.0);
    let mut c = Peer::new();
    let port = call.relay.add_leg(call.media.id, c.setup()).unwrap();
    c.talk(relay_addr(port.rtp), 1500.0, 0xC);
    // Whisper: B hears A and C, C hears A and B, A hears B only.
    call.hears(Leg::B, &[Leg::A, Leg::C]);
    call.hears(Leg::C, &[Leg::A, Leg::B]);
    c.hear_until(|f| share(f, 1000.0) > 0.3);
    call.a.flush();
    call.b.flush();
    c.flush();
    let (a, _) = call.a.hear(30);
    let (b, _) = call.b.hear(30);
    let (heard_by_c, _) = c.hear(30);
    let (a, b, heard_by_c) = (&a[..], &b[..], &heard_by_c[..]);
    assert!(
        share(b, 1500.0) > 0.3 && share(b, 440.0) > 0.3,
        "agent hears whisper and caller"
    );
    assert!(
        detect(a, 1500.0) < ABSENT,
        "caller must not hear the whisper: {}",
        detect(a, 1500.0)
    );
    assert!(share(a, 1000.0) > 0.9);
    // Listen: the supervisor hears both parties.
    assert!(share(heard_by_c, 440.0) > 0.3 && share(heard_by_c, 1000.0) > 0.3);
    assert!(
        detect(heard_by_c, 1500.0) < ABSENT,
        "no echo of the supervisor"
    );

    // Barge: the caller hears the supervisor too.
    call.hears(Leg::A, &[Leg::B, Leg::C]);
    call.a.hear_until(|f| share(f, 1500.0) > 0.3);
    let (a, _) = call.a.hear(30);
    assert!(share(&a, 1500.0) > 0.3 && share(&a, 1000.0) > 0.3);

    // The third leg leaves: its ports are free again.
    let in_use = call.relay.ports_in_use();
    call.relay.remove_leg(call.media.id, Leg::C).unwrap();
    let deadline = Instant::now() + WAIT;
    while call.relay.ports_in_use() != in_use - 1 {
        assert!(Instant::now() < deadline, "leg C's ports not released");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(call.relay.ports_in_use(), 2);
}

#[test]
fn hold_plays_music_to_the_caller_and_silence_to_the_agent() {
    let call = Call::start(43400, 440.0, 1000.0);
    call.hears(Leg::A, &[]);
    call.hears(Leg::B, &[]);
    call.audio(AudioCommand::Play {
        leg: Leg::A,
        items: vec![],
        music: Some(tone_prompt(500.0, 300)),
        tag: 0,
    });
    call.a.hear_until(|f| share(f, 500.0) > 0.9);
    call.a.flush();
    call.b.flush();
    let (a, _) = call.a.hear(30);
    let (b, _) = call.b.hear(30);
    assert!(share(&a, 500.0) > 0.9 && detect(&a, 1000.0) < ABSENT);
    assert!(
        mean_power(&b) < ABSENT,
        "held agent hears {}",
        mean_power(&b)
    );
    // Resume: two-way audio again.
    call.audio(AudioCommand::Reset);
    call.a.hear_until(|f| share(f, 1000.0) > 0.9);
    call.b.hear_until(|f| share(f, 440.0) > 0.9);
    let (a, _) = call.a.hear(20);
    let (b, _) = call.b.hear(20);
    assert!(share(&a, 1000.0) > 0.9 && share(&b, 440.0) > 0.9);
}

#[test]
fn rfc4733_dtmf_from_the_caller_is_reported_once_per_press() {
    let mut call = Call::start(43500, 0.0, 0.0);
    call.audio(AudioCommand::DetectDtmf {
        leg: Leg::A,
        on: true,
    });
    let to = relay_addr(call.media.leg_a.rtp);
    let mut seq = 0u16;
    for (k, key) in ['4', '2', '#'].into_iter().enumerate() {
        let mut s = DtmfSender::new(Digit::from_char(key).unwrap(), 8000 * k as u32, 120, 10);
        let start = Instant::now();
        while let Some(p) = s.poll_packet() {
            let at = start + Duration::from_millis(u64::from(p.send_offset_ms));
            thread::sleep(at.saturating_duration_since(Instant::now()));
            let mut b = vec![0x80, 101 | if p.marker { 0x80 } else { 0 }];
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&p.rtp_timestamp.to_be_bytes());
            b.extend_from_slice(&0xAu32.to_be_bytes());
            b.extend_from_slice(&p.payload);
            call.a.sock.send_to(&b, to).unwrap();
            seq = seq.wrapping_add(1);
        }
    }
    let mut digits = String::new();
    while digits.len() < 3 {
        digits.push(call.wait_event(|e| match e {
            MediaEvent::Dtmf {
                leg: Leg::A, digit, ..
            } => Some(digit),
            _ => None,
        }));
    }
    assert_eq!(digits, "42#");
    let more: Vec<_> = call
        .events_within(Duration::from_millis(300))
        .into_iter()
        .filter(|e| matches!(e, MediaEvent::Dtmf { .. }))
        .collect();
    assert!(more.is_empty(), "a press reported twice: {more:?}");
}

#[test]
fn recording_has_the_caller_left_the_agent_right_and_a_silent_listed_pause() {
    let mut call = Call::start(43600, 440.0, 1000.0);
    let path = temp_wav("stereo.wav");
    call.audio(AudioCommand::Record {
        path: path.clone(),
        mono: false,
    });
    // The peers' received frames pace the test: 20 ms each.
    call.a.hear(40);
    call.audio(AudioCommand::PauseRecording);
    call.a.hear(25);
    call.audio(AudioCommand::ResumeRecording);
    call.a.hear(25);
    call.audio(AudioCommand::StopRecording);
    let (file, summary) = call.wait_event(|e| match e {
        MediaEvent::Recorded { path, summary, .. } => Some((path, summary)),
        _ => None,
    });
    assert_eq!(file, path);
    assert_eq!(summary.pauses.len(), 1, "{summary:?}");
    let pause = summary.pauses[0];
    assert!(pause.end_ms - pause.start_ms >= 300, "{pause:?}");

    let mut r = hound::WavReader::open(&path).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 8000));
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.len() as u64 * 1000 / 8000, summary.duration_ms);
    let ms = |t: u64| (t * 8) as usize;
    // Before the pause (after the jitter buffer filled): the caller left, the agent right.
    let (l, r_) = (
        &left[ms(200)..ms(pause.start_ms)],
        &right[ms(200)..ms(pause.start_ms)],
    );
    assert!(
        share(l, 440.0) > 0.9 && detect(l, 1000.0) < ABSENT,
        "left {}",
        share(l, 440.0)
    );
    assert!(
        share(r_, 1000.0) > 0.9 && detect(r_, 440.0) < ABSENT,
        "right"
    );
    // The pause is silence on both channels.
    let p = ms(pause.start_ms)..ms(pause.end_ms);
    assert!(mean_power(&left[p.clone()]) == 0.0 && mean_power(&right[p]) == 0.0);
    // After it, audio again.
    let after = ms(pause.end_ms + 40)..left.len();
    assert!(share(&left[after.clone()], 440.0) > 0.9);
    assert!(share(&right[after], 1000.0) > 0.9);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn voicemail_is_a_mono_file_of_the_caller_finished_when_the_call_ends() {
    let mut call = Call::start(43700, 440.0, 1000.0);
    let path = temp_wav("voicemail.wav");
    call.audio(AudioCommand::Record {
        path: path.clone(),
        mono: true,
    });
    call.a.hear(30);
    // Removing the call finishes the file.
    call.relay.remove_call(call.media.id).unwrap();
    let summary = call.wait_event(|e| match e {
        MediaEvent::Recorded { summary, .. } => Some(summary),
        _ => None,
    });
    assert!(summary.duration_ms >= 400);
    let mut r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.spec().channels, 1);
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let s = &s[1600..];
    assert!(share(s, 440.0) > 0.9 && detect(s, 1000.0) < ABSENT);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_recording_into_an_impossible_path_is_reported_not_fatal() {
    let mut call = Call::start(43800, 440.0, 1000.0);
    // A directory cannot be created below a regular file, not even by root.
    let file = temp_wav("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    call.audio(AudioCommand::Record {
        path: file.join("y.wav"),
        mono: false,
    });
    call.wait_event(|e| matches!(e, MediaEvent::RecordingFailed { .. }).then_some(()));
    // The call's audio goes on.
    call.b.hear_until(|f| share(f, 440.0) > 0.9);
}

#[test]
fn the_third_leg_follows_an_update_to_a_new_address() {
    let call = Call::start(43850, 440.0, 1000.0);
    let first = Peer::new();
    let port = call.relay.add_leg(call.media.id, first.setup()).unwrap();
    call.hears(Leg::C, &[Leg::A, Leg::B]);
    first.hear_until(|f| share(f, 440.0) > 0.3);
    // The supervisor's phone moved (a re-INVITE with a new address): C's audio follows.
    let mut moved = Peer::new();
    call.relay
        .update_leg(call.media.id, Leg::C, moved.setup())
        .unwrap();
    moved.talk(relay_addr(port.rtp), 1500.0, 0xC);
    moved.hear_until(|f| share(f, 440.0) > 0.3 && share(f, 1000.0) > 0.3);
    // And what the moved phone says reaches B once B hears C.
    call.hears(Leg::B, &[Leg::A, Leg::C]);
    call.b.hear_until(|f| share(f, 1500.0) > 0.3);
}

#[test]
fn an_a_law_caller_gets_a_law_frames() {
    let (relay, _events) = MediaRelay::start(RelayConfig::default().ports(43750, 43799)).unwrap();
    let (a, b) = (Peer::new(), Peer::new());
    let a_law = LegSetup::new(Some(a.addr()), PayloadTypes::of(&[8]));
    let media = relay.add_call(a_law, b.setup()).unwrap();
    relay
        .audio(
            media.id,
            AudioCommand::Play {
                leg: Leg::A,
                items: vec![],
                music: Some(tone_prompt(500.0, 300)),
                tag: 0,
            },
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + WAIT;
    let mut samples = Vec::new();
    while samples.len() < 20 * FRAME_SAMPLES {
        assert!(Instant::now() < deadline, "no frames");
        let Ok(n) = a.sock.recv(&mut buf) else {
            continue;
        };
        let (h, payload) = rtp_payload(&buf[..n]).unwrap();
        assert_eq!(h.payload_type, 8, "PCMA negotiated, PCMA sent");
        let mut pcm = [0i16; FRAME_SAMPLES];
        decode_into(Law::A, payload, &mut pcm);
        samples.extend_from_slice(&pcm);
    }
    assert!(share(&samples, 500.0) > 0.9);
}
