//! Processed mode: the audio of one call when it is more than a plain bridge, without I/O.
//!
//! A call whose legs only hear each other is relayed packet by packet (see `worker`). When
//! a prompt plays, the hearing matrix changes, DTMF is detected, the call is recorded or a
//! third leg joins, the worker hands that call's packets to a [`CallAudio`] instead:
//! [`CallAudio::handle_rtp`] decodes voice into each leg's jitter buffer and telephone-events
//! into its DTMF receiver, and on every 20 ms tick [`CallAudio::produce_frame`] builds each
//! leg's frame — the prompt or music playing to it, else the saturating sum of the legs it
//! hears — encodes it in the leg's codec and writes a complete RTP packet with the leg's own
//! SSRC, sequence number and timestamp. The worker only sends what [`CallAudio::packet`]
//! returns and forwards [`CallAudio::poll_event`]s.
//!
//! Why sans-IO: the tick schedule, the mixing and the DTMF rules are then tested with a fake
//! clock and made-up packets (no sockets, no sleeps), and the worker stays a thin shell. Why
//! one shared tick per worker ([`Ticker`]) rather than a timer per call: a hundred processed
//! calls cost one wake-up per 20 ms, and the deadline advances by exactly 20 ms each time, so
//! the frame clock does not drift however late a wake-up is. All buffers are allocated when
//! the call enters processed mode; producing a frame allocates nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::control::{AudioCommand, LegSet};
use super::relay::{Leg, LegSetup};
use super::rtp::RtpHeader;
use crate::audio::dtmf::{DtmfEvent, DtmfReceiver, InbandDtmfDetector};
use crate::audio::g711::{Law, decode_into, encode_into};
use crate::audio::jitter::JitterBuffer;
use crate::audio::mix::add_saturating;
use crate::audio::prompt::Player;
use crate::audio::{FRAME_SAMPLES, Frame, SILENCE};

/// The frame period.
pub const FRAME: Duration = Duration::from_millis(20);
/// Bytes of one packet zentrale sends: a 12-byte RTP header and 20 ms of G.711.
pub const PACKET_LEN: usize = 12 + FRAME_SAMPLES;
/// Playout delay of the jitter buffers of processed legs.
const JITTER_DELAY: Duration = Duration::from_millis(40);
/// A tick later than this many frames produces only this many and skips the rest: after a
/// stall, a burst of stale audio helps nobody.
const MAX_CATCH_UP: u64 = 3;
/// The largest payload decoded (samples); longer ones are cut (the jitter buffer caps at 256 ms).
const MAX_DECODE: usize = 2048;
/// Events buffered between two drains; more are dropped (a flood of key presses).
const MAX_EVENTS: usize = 64;

/// The 20 ms frame clock shared by the processed calls of one worker.
#[derive(Debug, Clone)]
pub struct Ticker {
    next: Instant,
    skipped: u64,
}

impl Ticker {
    /// A clock whose first frame is due at `first`.
    pub fn new(first: Instant) -> Ticker {
        Ticker {
            next: first,
            skipped: 0,
        }
    }

    /// When the next frame is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// How many frames are due at `now` (usually 0 or 1); the deadline advances by 20 ms per
    /// due frame, not to `now + 20 ms`, so lateness never accumulates into drift. More than
    /// three frames behind, the surplus is skipped and counted.
    pub fn handle_timeout(&mut self, now: Instant) -> u64 {
        if now < self.next {
            return 0;
        }
        let behind = (now.duration_since(self.next).as_micros() / FRAME.as_micros()) as u64 + 1;
        let due = behind.min(MAX_CATCH_UP);
        self.skipped += behind - due;
        self.next += FRAME * u32::try_from(behind).unwrap_or(u32::MAX);
        due
    }

    /// Frames skipped after stalls so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// What a processed leg needs to know: its codecs and its own RTP stream identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegParams {
    /// The law sent to the leg (until its own packets show which it uses).
    pub law: Law,
    /// The telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// The SSRC of what zentrale sends to this leg.
    pub ssrc: u32,
    /// The first sequence number sent.
    pub sequence: u16,
    /// The first RTP timestamp sent.
    pub timestamp: u32,
}

impl LegParams {
    /// Parameters from a leg's setup and a random stream identity.
    pub fn from_setup(setup: &LegSetup, ssrc: u32, sequence: u16, timestamp: u32) -> LegParams {
        LegParams {
            law: setup.send_codec(),
            telephone_event: setup.telephone_event,
            ssrc,
            sequence,
            timestamp,
        }
    }
}

/// What a processed call reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEvent {
    /// A key press on a leg with detection on.
    Dtmf {
        /// The leg.
        leg: Leg,
        /// The key.
        digit: char,
    },
    /// A play without music ended.
    PlayDone {
        /// The leg.
        leg: Leg,
        /// The play's tag.
        tag: u64,
    },
}

/// Counters of what zentrale sent to a leg, for RTCP sender reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentCounters {
    /// The SSRC.
    pub ssrc: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
    /// RTP timestamp of the last packet.
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct PlayState {
    tag: u64,
    music: bool,
}

#[derive(Debug)]
struct LegAudio {
    law: Law,
    telephone_event: Option<u8>,
    jitter: JitterBuffer,
    dtmf: DtmfReceiver,
    inband: InbandDtmfDetector,
    /// The peer sends RFC 4733 events: in-band detection is off to avoid double reports.
    saw_telephone_event: bool,
    detect: bool,
    player: Player,
    play: Option<PlayState>,
    hears: LegSet,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    first_packet: bool,
    sent_packets: u32,
    packet: [u8; PACKET_LEN],
    packet_ready: bool,
}

impl LegAudio {
    fn new(leg: Leg, p: LegParams) -> LegAudio {
        LegAudio {
            law: p.law,
            telephone_event: p.telephone_event,
            jitter: JitterBuffer::new(JITTER_DELAY),
            dtmf: DtmfReceiver::new(),
            inband: InbandDtmfDetector::new(),
            saw_telephone_event: false,
            detect: false,
            player: Player::new(),
            play: None,
            hears: default_hearing(leg),
            ssrc: p.ssrc,
            sequence: p.sequence,
            timestamp: p.timestamp,
            first_packet: true,
            sent_packets: 0,
            packet: [0; PACKET_LEN],
            packet_ready: false,
        }
    }

    fn is_plain(&self, leg: Leg) -> bool {
        !self.detect && !self.player.is_playing() && self.hears == default_hearing(leg)
    }

    fn reset(&mut self, leg: Leg) {
        self.player.interrupt();
        self.play = None;
        self.hears = default_hearing(leg);
        self.detect = false;
    }
}

/// What a leg hears in the plain bridge: A hears B, B hears A, C hears nothing.
pub fn default_hearing(leg: Leg) -> LegSet {
    match leg {
        Leg::A => LegSet::of(&[Leg::B]),
        Leg::B => LegSet::of(&[Leg::A]),
        Leg::C => LegSet::EMPTY,
    }
}

/// The processed audio of one call (see the module docs).
#[derive(Debug)]
pub struct CallAudio {
    legs: [Option<LegAudio>; 3],
    /// This tick's decoded input per leg, and whether it holds audio from the network.
    inputs: [Frame; 3],
    has_input: [bool; 3],
    out: Frame,
    /// `Some(mono)` while recording.
    recording: Option<bool>,
    record_left: Frame,
    record_right: Frame,
    record_ready: bool,
    events: VecDeque<AudioEvent>,
}

impl Default for CallAudio {
    fn default() -> Self {
        CallAudio::new()
    }
}

impl CallAudio {
    /// A call with no legs yet.
    pub fn new() -> CallAudio {
        CallAudio {
            legs: [None, None, None],
            inputs: [SILENCE; 3],
            has_input: [false; 3],
            out: SILENCE,
            recording: None,
            record_left: SILENCE,
            record_right: SILENCE,
            record_ready: false,
            events: VecDeque::with_capacity(MAX_EVENTS),
        }
    }

    /// Adds (or replaces) a leg; it starts with the plain-bridge hearing.
    pub fn add_leg(&mut self, leg: Leg, params: LegParams) {
        self.legs[leg.index()] = Some(LegAudio::new(leg, params));
    }

    /// Removes a leg (the third party hung up).
    pub fn remove_leg(&mut self, leg: Leg) {
        self.legs[leg.index()] = None;
        self.has_input[leg.index()] = false;
    }

    /// Whether the leg is part of the call.
    pub fn has_leg(&self, leg: Leg) -> bool {
        self.legs[leg.index()].is_some()
    }

    /// A re-INVITE changed the leg's codecs: send in its new preferred law. The stream
    /// identity stays (the leg sees one continuous stream from us).
    pub fn update_leg(&mut self, leg: Leg, setup: &LegSetup) {
        if let Some(l) = &mut self.legs[leg.index()] {
            l.law = setup.send_codec();
            l.telephone_event = setup.telephone_event;
        }
    }

    /// Applies a command. Recording commands only change what [`CallAudio::recorded_frame`]
    /// offers; the file side belongs to the caller.
    pub fn handle_command(&mut self, cmd: &AudioCommand) {
        match cmd {
            AudioCommand::Play {
                leg,
                items,
                music,
                tag,
            } => {
                if let Some(l) = &mut self.legs[leg.index()] {
                    l.player.interrupt();
                    l.player.play_all(items.iter().map(|p| &**p));
                    if let Some(m) = music {
                        l.player.loop_music(m);
                    }
                    l.play = Some(PlayState {
                        tag: *tag,
                        music: music.as_ref().is_some_and(|m| !m.samples().is_empty()),
                    });
                }
            }
            AudioCommand::Stop { leg } => {
                if let Some(l) = &mut self.legs[leg.index()] {
                    l.player.interrupt();
                    l.play = None;
                }
            }
            AudioCommand::Hears { leg, from } => {
                if let Some(l) = &mut self.legs[leg.index()] {
                    l.hears = *from;
                }
            }
            AudioCommand::DetectDtmf { leg, on } => {
                if let Some(l) = &mut self.legs[leg.index()] {
                    l.detect = *on;
                }
            }
            AudioCommand::Record { mono, .. } => self.recording = Some(*mono),
            AudioCommand::StopRecording => self.recording = None,
            AudioCommand::PauseRecording | AudioCommand::ResumeRecording => {}
            AudioCommand::Reset => {
                for (i, l) in self.legs.iter_mut().enumerate() {
                    if let Some(l) = l {
                        l.reset(Leg::from_index(i));
                    }
                }
            }
        }
    }

    /// Whether the call is back to a plain bridge of A and B that the worker may forward
    /// packet by packet again: no third leg, no recording, nothing playing, no detection,
    /// default hearing.
    pub fn is_plain(&self) -> bool {
        self.recording.is_none()
            && self.legs[Leg::C.index()].is_none()
            && self
                .legs
                .iter()
                .enumerate()
                .all(|(i, l)| l.as_ref().is_none_or(|l| l.is_plain(Leg::from_index(i))))
    }

    /// Whether a recording is on.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Feeds one accepted RTP packet (header and payload) from `leg`'s peer, received at `now`.
    pub fn handle_rtp(&mut self, now: Instant, leg: Leg, header: &RtpHeader, payload: &[u8]) {
        let Some(l) = &mut self.legs[leg.index()] else {
            return;
        };
        if l.telephone_event == Some(header.payload_type) {
            l.saw_telephone_event = true;
            if l.detect && l.dtmf.handle_packet(header.timestamp, payload).is_ok() {
                while let Some(ev) = l.dtmf.poll_event() {
                    if let DtmfEvent::Pressed { digit, .. } = ev
                        && self.events.len() < MAX_EVENTS
                    {
                        self.events.push_back(AudioEvent::Dtmf {
                            leg,
                            digit: digit.as_char(),
                        });
                    }
                }
            }
            return;
        }
        let Some(law) = Law::from_payload_type(header.payload_type) else {
            return;
        };
        // Symmetric codec: answer in the law the peer speaks.
        l.law = law;
        let mut pcm = [0i16; MAX_DECODE];
        let payload = &payload[..payload.len().min(MAX_DECODE)];
        let n = decode_into(law, payload, &mut pcm);
        l.jitter.handle_packet(now, header.timestamp, &pcm[..n]);
    }

    /// Builds every leg's next 20 ms: call once per [`Ticker`] frame. Afterwards
    /// [`CallAudio::packet`] holds each leg's packet, [`CallAudio::recorded_frame`] the
    /// recording's frame, and [`CallAudio::poll_event`] any new events.
    pub fn produce_frame(&mut self, now: Instant) {
        // 1. This tick's input of every leg from its jitter buffer.
        for (i, slot) in self.legs.iter_mut().enumerate() {
            self.has_input[i] = false;
            let Some(l) = slot else { continue };
            let input = &mut self.inputs[i];
            if l.jitter.poll_frame(now, input).is_some() {
                self.has_input[i] = true;
                // A backlog (after a late tick) is played out one frame per tick, but never
                // more than two frames behind: drop the oldest beyond that.
                while l
                    .jitter
                    .poll_timeout()
                    .is_some_and(|due| due + 2 * FRAME <= now)
                {
                    let _ = l.jitter.poll_frame(now, input);
                }
                if l.detect
                    && !l.saw_telephone_event
                    && let Some(d) = l.inband.handle_frame(input)
                    && self.events.len() < MAX_EVENTS
                {
                    self.events.push_back(AudioEvent::Dtmf {
                        leg: Leg::from_index(i),
                        digit: d.as_char(),
                    });
                }
            } else {
                *input = SILENCE;
            }
        }
        // 2. The recording: A on the left, B and C on the right.
        self.record_ready = false;
        if self.recording.is_some() {
            self.record_left = self.inputs[0];
            self.record_right = SILENCE;
            for i in [1, 2] {
                if self.has_input[i] {
                    add_saturating(&mut self.record_right, &self.inputs[i]);
                }
            }
            self.record_ready = true;
        }
        // 3. Every leg's output.
        for (i, slot) in self.legs.iter_mut().enumerate() {
            let Some(l) = slot else { continue };
            let out = &mut self.out;
            if l.player.is_playing() {
                l.player.next_frame(out);
            } else {
                *out = SILENCE;
                for from in l.hears.iter() {
                    let j = from.index();
                    if j != i && self.has_input[j] {
                        add_saturating(out, &self.inputs[j]);
                    }
                }
            }
            if let Some(p) = l.play
                && !p.music
                && !l.player.is_playing()
            {
                l.play = None;
                if self.events.len() < MAX_EVENTS {
                    self.events.push_back(AudioEvent::PlayDone {
                        leg: Leg::from_index(i),
                        tag: p.tag,
                    });
                }
            }
            write_packet(l, out);
        }
    }

    /// The frame clock skipped `frames` frames (a stalled worker, see [`Ticker`]): the RTP
    /// timestamps jump by as much, so the phones see a gap in time, not a speed-up.
    pub fn skip_frames(&mut self, frames: u64) {
        let step = (frames as u32).wrapping_mul(FRAME_SAMPLES as u32);
        for l in self.legs.iter_mut().flatten() {
            l.timestamp = l.timestamp.wrapping_add(step);
        }
    }

    /// The packet built for `leg` by the last [`CallAudio::produce_frame`].
    pub fn packet(&self, leg: Leg) -> Option<&[u8]> {
        self.legs[leg.index()]
            .as_ref()
            .filter(|l| l.packet_ready)
            .map(|l| &l.packet[..])
    }

    /// The recording's frame of the last tick: (left = A, right = B + C).
    pub fn recorded_frame(&self) -> Option<(&Frame, &Frame)> {
        self.record_ready
            .then_some((&self.record_left, &self.record_right))
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AudioEvent> {
        self.events.pop_front()
    }

    /// What was sent to `leg` so far (for its RTCP sender report).
    pub fn sent(&self, leg: Leg) -> Option<SentCounters> {
        self.legs[leg.index()].as_ref().map(|l| SentCounters {
            ssrc: l.ssrc,
            packets: l.sent_packets,
            octets: l.sent_packets.wrapping_mul(FRAME_SAMPLES as u32),
            timestamp: l.timestamp.wrapping_sub(FRAME_SAMPLES as u32),
        })
    }
}

fn write_packet(l: &mut LegAudio, out: &Frame) {
    let p = &mut l.packet;
    p[0] = 0x80;
    p[1] = l.law.payload_type() | if l.first_packet { 0x80 } else { 0 };
    p[2..4].copy_from_slice(&l.sequence.to_be_bytes());
    p[4..8].copy_from_slice(&l.timestamp.to_be_bytes());
    p[8..12].copy_from_slice(&l.ssrc.to_be_bytes());
    encode_into(l.law, out, &mut p[12..]);
    l.first_packet = false;
    l.sequence = l.sequence.wrapping_add(1);
    l.timestamp = l.timestamp.wrapping_add(FRAME_SAMPLES as u32);
    l.sent_packets = l.sent_packets.wrapping_add(1);
    l.packet_ready = true;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audio::dtmf::{Digit, DtmfSender};
    use crate::audio::g711::decode_into;
    use crate::audio::prompt::Prompt;
    use crate::audio::tone::{ToneGenerator, detect, mean_power};
    use crate::media::rtp::rtp_payload;
    use std::sync::Arc;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The share of the signal's power at `freq` (about 1 for a pure tone).
    fn share(x: &[i16], freq: f64) -> f64 {
        detect(x, freq) / mean_power(x).max(1e-12)
    }

    fn params(ssrc: u32) -> LegParams {
        LegParams {
            law: Law::Mu,
            telephone_event: Some(101),
            ssrc,
            sequence: 1000,
            timestamp: 50_000,
        }
    }

    fn call() -> CallAudio {
        let mut c = CallAudio::new();
        c.add_leg(Leg::A, params(1));
        c.add_leg(Leg::B, params(2));
        c
    }

    /// A peer sending a tone: one packet per 20 ms.
    struct Peer {
        tone: ToneGenerator,
        seq: u16,
        ts: u32,
    }

    impl Peer {
        fn new(freq: f64) -> Peer {
            Peer {
                tone: ToneGenerator::new(freq, 8000),
                seq: 0,
                ts: 0,
            }
        }
        fn send(&mut self, c: &mut CallAudio, now: Instant, leg: Leg) {
            let mut pcm = SILENCE;
            self.tone.fill(&mut pcm);
            let mut payload = [0u8; FRAME_SAMPLES];
            encode_into(Law::Mu, &pcm, &mut payload);
            let h = RtpHeader {
                payload_type: 0,
                sequence: self.seq,
                timestamp: self.ts,
                ssrc: 77,
            };
            c.handle_rtp(now, leg, &h, &payload);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
        }
    }

    fn decode(packet: &[u8]) -> Frame {
        let (_, payload) = rtp_payload(packet).unwrap();
        let mut f = SILENCE;
        decode_into(Law::Mu, payload, &mut f);
        f
    }

    /// Runs `frames` ticks with A sending `fa` and B sending `fb` (0 = silent), collecting
    /// what each leg receives.
    fn run(c: &mut CallAudio, t0: Instant, frames: u64, fa: f64, fb: f64) -> [Vec<i16>; 3] {
        let mut pa = Peer::new(fa);
        let mut pb = Peer::new(fb);
        let mut heard: [Vec<i16>; 3] = Default::default();
        for k in 0..frames {
            let now = t0 + ms(20 * k);
            if fa > 0.0 {
                pa.send(c, now, Leg::A);
            }
            if fb > 0.0 {
                pb.send(c, now, Leg::B);
            }
            c.produce_frame(now);
            for leg in [Leg::A, Leg::B, Leg::C] {
                if let Some(p) = c.packet(leg) {
                    heard[leg.index()].extend_from_slice(&decode(p));
                }
            }
        }
        heard
    }

    #[test]
    fn ticker_advances_by_the_period_and_never_drifts() {
        let t0 = Instant::now();
        let mut t = Ticker::new(t0 + FRAME);
        assert_eq!(t.handle_timeout(t0 + ms(19)), 0);
        // A wake-up 7 ms late produces one frame; the next deadline is still on the grid.
        assert_eq!(t.handle_timeout(t0 + ms(27)), 1);
        assert_eq!(t.poll_timeout(), t0 + ms(40));
        // 45 ms late: this frame and the next one are both due.
        assert_eq!(t.handle_timeout(t0 + ms(61)), 2);
        assert_eq!(t.poll_timeout(), t0 + ms(80));
        // A long stall: three frames catch up, the rest are skipped, the grid holds.
        assert_eq!(t.handle_timeout(t0 + ms(80 + 200)), 3);
        assert_eq!(t.skipped(), 8);
        assert_eq!(t.poll_timeout(), t0 + ms(300));
    }

    #[test]
    fn plain_hearing_mixes_the_other_leg_with_its_own_stream_identity() {
        let mut c = call();
        assert!(c.is_plain());
        let t0 = Instant::now();
        let heard = run(&mut c, t0, 50, 440.0, 1000.0);
        // Skip the jitter buffer's start.
        let a = &heard[0][800..];
        let b = &heard[1][800..];
        assert!(share(a, 1000.0) > 0.5 && share(a, 440.0) < 0.01);
        assert!(share(b, 440.0) > 0.5 && share(b, 1000.0) < 0.01);
        let p = c.packet(Leg::A).unwrap();
        let (h, payload) = rtp_payload(p).unwrap();
        assert_eq!((h.ssrc, h.payload_type, payload.len()), (1, 0, 160));
        assert_eq!(h.sequence, 1049);
        assert_eq!(h.timestamp, 50_000 + 49 * 160);
        // After a stall of 4 skipped frames the timestamp jumps, the sequence does not.
        c.skip_frames(4);
        c.produce_frame(t0 + ms(20 * 55));
        let (h, _) = rtp_payload(c.packet(Leg::A).unwrap()).unwrap();
        assert_eq!((h.sequence, h.timestamp), (1050, 50_000 + 54 * 160));
    }

    #[test]
    fn whisper_reaches_the_agent_and_not_the_caller() {
        let mut c = call();
        c.add_leg(Leg::C, params(3));
        c.handle_command(&AudioCommand::Hears {
            leg: Leg::B,
            from: LegSet::of(&[Leg::A, Leg::C]),
        });
        c.handle_command(&AudioCommand::Hears {
            leg: Leg::C,
            from: LegSet::of(&[Leg::A, Leg::B]),
        });
        let t0 = Instant::now();
        let mut pc = Peer::new(1500.0);
        let mut pa = Peer::new(440.0);
        let mut heard: [Vec<i16>; 3] = Default::default();
        for k in 0..50 {
            let now = t0 + ms(20 * k);
            pa.send(&mut c, now, Leg::A);
            pc.send(&mut c, now, Leg::C);
            c.produce_frame(now);
            for leg in [Leg::A, Leg::B, Leg::C] {
                heard[leg.index()].extend_from_slice(&decode(c.packet(leg).unwrap()));
            }
        }
        let [a, b, cc] = heard.map(|h| h[800..].to_vec());
        assert!(share(&b, 1500.0) > 0.1 && share(&b, 440.0) > 0.1);
        assert!(
            detect(&a, 1500.0) < 1e-6,
            "the caller must not hear the whisper"
        );
        assert!(share(&cc, 440.0) > 0.3);
    }

    #[test]
    fn play_then_done_then_back_to_hearing() {
        let mut c = call();
        let mut v = vec![0i16; 800];
        ToneGenerator::new(700.0, 8000).fill(&mut v);
        c.handle_command(&AudioCommand::Play {
            leg: Leg::A,
            items: vec![Arc::new(Prompt::from_samples(v))],
            music: None,
            tag: 9,
        });
        assert!(!c.is_plain());
        let t0 = Instant::now();
        let heard = run(&mut c, t0, 40, 0.0, 1000.0);
        // 100 ms of prompt = 5 frames, then B's tone.
        assert!(share(&heard[0][..800], 700.0) > 0.5);
        assert!(share(&heard[0][1600..], 1000.0) > 0.5);
        assert_eq!(
            c.poll_event(),
            Some(AudioEvent::PlayDone {
                leg: Leg::A,
                tag: 9
            })
        );
        assert_eq!(c.poll_event(), None);
        assert!(c.is_plain());
    }

    #[test]
    fn music_loops_and_stop_takes_effect_on_the_next_frame() {
        let mut c = call();
        let mut v = vec![0i16; 400];
        ToneGenerator::new(500.0, 8000).fill(&mut v);
        c.handle_command(&AudioCommand::Play {
            leg: Leg::A,
            items: vec![],
            music: Some(Arc::new(Prompt::from_samples(v))),
            tag: 1,
        });
        c.handle_command(&AudioCommand::Hears {
            leg: Leg::B,
            from: LegSet::EMPTY,
        });
        let t0 = Instant::now();
        let heard = run(&mut c, t0, 30, 440.0, 1000.0);
        assert!(share(&heard[0], 500.0) > 0.5);
        assert!(mean_power(&heard[1]) < 1e-6, "held agent hears silence");
        assert_eq!(c.poll_event(), None);
        c.handle_command(&AudioCommand::Reset);
        assert!(c.is_plain());
        let t1 = t0 + ms(600);
        c.produce_frame(t1);
        let f = decode(c.packet(Leg::A).unwrap());
        assert!(share(&f, 500.0) < 0.01);
    }

    #[test]
    fn stop_ends_a_prompt_on_the_next_frame_without_play_done() {
        let mut c = call();
        let mut v = vec![0i16; 8000];
        ToneGenerator::new(700.0, 8000).fill(&mut v);
        c.handle_command(&AudioCommand::Play {
            leg: Leg::A,
            items: vec![Arc::new(Prompt::from_samples(v))],
            music: None,
            tag: 5,
        });
        let t0 = Instant::now();
        let heard = run(&mut c, t0, 10, 0.0, 1000.0);
        assert!(share(&heard[0], 700.0) > 0.9);
        // The agent answers: the prompt stops at once, mid-clip.
        c.handle_command(&AudioCommand::Stop { leg: Leg::A });
        let mut pb = Peer::new(1000.0);
        let now = t0 + ms(200);
        pb.send(&mut c, now, Leg::B);
        c.produce_frame(now);
        let f = decode(c.packet(Leg::A).unwrap());
        assert!(detect(&f, 700.0) < 1e-6, "the prompt went on after Stop");
        assert_eq!(c.poll_event(), None, "a stopped play reports no PlayDone");
        assert!(c.is_plain());
    }

    #[test]
    fn rfc4733_digits_are_reported_once_per_press_only_while_detecting() {
        let mut c = call();
        let t0 = Instant::now();
        let press = |c: &mut CallAudio, digit: Digit, ts: u32| {
            let mut s = DtmfSender::new(digit, ts, 100, 10);
            while let Some(p) = s.poll_packet() {
                let h = RtpHeader {
                    payload_type: 101,
                    sequence: 0,
                    timestamp: p.rtp_timestamp,
                    ssrc: 5,
                };
                c.handle_rtp(t0, Leg::A, &h, &p.payload);
            }
        };
        press(&mut c, Digit::from_char('1').unwrap(), 1000);
        assert_eq!(c.poll_event(), None);
        c.handle_command(&AudioCommand::DetectDtmf {
            leg: Leg::A,
            on: true,
        });
        press(&mut c, Digit::from_char('5').unwrap(), 3000);
        press(&mut c, Digit::from_char('#').unwrap(), 6000);
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(
            events,
            [
                AudioEvent::Dtmf {
                    leg: Leg::A,
                    digit: '5'
                },
                AudioEvent::Dtmf {
                    leg: Leg::A,
                    digit: '#'
                }
            ]
        );
    }

    #[test]
    fn recording_holds_a_left_and_b_plus_c_right() {
        let mut c = call();
        c.handle_command(&AudioCommand::Record {
            path: "x.wav".into(),
            mono: false,
        });
        let t0 = Instant::now();
        let mut pa = Peer::new(440.0);
        let mut pb = Peer::new(1000.0);
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for k in 0..30 {
            let now = t0 + ms(20 * k);
            pa.send(&mut c, now, Leg::A);
            pb.send(&mut c, now, Leg::B);
            c.produce_frame(now);
            let (l, r) = c.recorded_frame().unwrap();
            left.extend_from_slice(l);
            right.extend_from_slice(r);
        }
        assert!(share(&left[800..], 440.0) > 0.5 && share(&left[800..], 1000.0) < 0.01);
        assert!(share(&right[800..], 1000.0) > 0.5 && share(&right[800..], 440.0) < 0.01);
        c.handle_command(&AudioCommand::StopRecording);
        c.produce_frame(t0 + ms(600));
        assert!(c.recorded_frame().is_none());
    }

    #[test]
    fn in_band_digits_are_reported_once_unless_the_peer_sends_telephone_events() {
        use crate::audio::tone::DualToneGenerator;
        let mut c = call();
        c.handle_command(&AudioCommand::DetectDtmf {
            leg: Leg::A,
            on: true,
        });
        let t0 = Instant::now();
        // 120 ms of '7', 100 ms of silence, 120 ms of '7' again: two presses.
        let mut seq = 0u16;
        let mut send = |c: &mut CallAudio, k: u64, pcm: &Frame| {
            let mut payload = [0u8; FRAME_SAMPLES];
            encode_into(Law::Mu, pcm, &mut payload);
            let h = RtpHeader {
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 9,
            };
            seq += 1;
            let now = t0 + ms(20 * k);
            c.handle_rtp(now, Leg::A, &h, &payload);
            c.produce_frame(now);
        };
        let mut tone = DualToneGenerator::dtmf(Digit::from_char('7').unwrap(), 6000);
        let mut k = 0;
        for part in [6, 5, 6, 8] {
            for _ in 0..part {
                let mut pcm = SILENCE;
                if k < 6 || (11..17).contains(&k) {
                    tone.fill(&mut pcm);
                }
                send(&mut c, k, &pcm);
                k += 1;
            }
        }
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        let seven = AudioEvent::Dtmf {
            leg: Leg::A,
            digit: '7',
        };
        assert_eq!(events, [seven, seven]);
        // A peer that sends RFC 4733 events has its in-band tones ignored (no double report).
        let h = RtpHeader {
            payload_type: 101,
            sequence: 500,
            timestamp: 99_000,
            ssrc: 9,
        };
        c.handle_rtp(t0 + ms(20 * k), Leg::A, &h, &[7, 0x80, 0, 160]);
        assert_eq!(c.poll_event(), Some(seven));
        for j in 0..10 {
            let mut pcm = SILENCE;
            tone.fill(&mut pcm);
            send(&mut c, k + j, &pcm);
        }
        assert_eq!(c.poll_event(), None);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let mut c = call();
        c.handle_command(&AudioCommand::DetectDtmf {
            leg: Leg::A,
            on: true,
        });
        let t0 = Instant::now();
        for (pt, len) in [
            (0u8, 0usize),
            (0, 5000),
            (8, 1),
            (101, 0),
            (101, 3),
            (101, 4000),
            (99, 10),
        ] {
            let payload = vec![0xffu8; len];
            let h = RtpHeader {
                payload_type: pt,
                sequence: 1,
                timestamp: 0xffff_fff0,
                ssrc: 1,
            };
            c.handle_rtp(t0, Leg::A, &h, &payload);
            c.handle_rtp(t0, Leg::C, &h, &payload);
        }
        c.produce_frame(t0 + ms(100));
    }
}
