//! A small fixed-delay jitter buffer with reordering and loss concealment.
//!
//! Used only where audio is mixed, recorded or transcoded: the plain relay forwards packets
//! untouched and lets the phones de-jitter. Here a call's audio must be aligned on our own
//! 20 ms tick, so packets are placed by RTP timestamp into a ring of samples and played out a
//! fixed delay (default 40 ms) after the first packet's arrival. Placing by timestamp rather
//! than by sequence number makes reordering, duplicates and any packetisation (10/20/30 ms)
//! the same problem: a sample is either there when its playout time comes, or it is concealed.
//!
//! Sans-IO: [`JitterBuffer::handle_packet`] takes the arrival time as an argument,
//! [`JitterBuffer::poll_frame`] releases a frame once its playout time has come, and
//! [`JitterBuffer::poll_timeout`] says when that will be. No clock, no allocation after
//! construction.
//!
//! The delay is fixed on purpose: adaptive playout (NetEQ-style time stretching) is much more
//! code and the `neteq` crate is an early preview; 40–60 ms on a LAN/carrier path is enough.
//! Sender clock drift and timestamp jumps are handled crudely but safely: a packet far ahead
//! of the ring (silence suppression, hold), or a run of three far behind it (a sender that
//! restarted its timestamps), re-anchors the read position while the playout clock keeps
//! ticking, so the output is always exactly one frame per 20 ms; a buffer that runs dry
//! conceals.

use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use std::time::{Duration, Instant};

/// Ring size in samples (≈ 1 s at 8 kHz); a power of two so RTP timestamp wrap-around
/// (2³²) maps onto it continuously.
const RING: usize = 8192;

/// The longest packet accepted, in samples (256 ms).
const MAX_PACKET: usize = RING / 4;

/// Consecutive far-behind packets that make the buffer follow a sender's timestamp restart.
const FAR_BEHIND_RESYNC: u32 = 3;

/// Consecutive concealed frames after which the buffer plays silence instead of echoes of the
/// last frame (60 ms: longer repetitions sound like a stuck record).
const MAX_CONCEALED_RUN: u32 = 3;

/// What [`JitterBuffer::poll_frame`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Every sample came from the network.
    Audio,
    /// Some or all samples were missing and have been concealed.
    Concealed,
}

/// Counters for quality reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub accepted: u64,
    /// Packets whose samples were all already buffered (network or sender duplicates).
    pub duplicates: u64,
    /// Packets that arrived after their playout time and were dropped.
    pub late: u64,
    /// Frames played out with concealed samples.
    pub concealed_frames: u64,
    /// Times the buffer re-anchored on a timestamp jump.
    pub resyncs: u64,
}

/// The jitter buffer of one incoming stream (one RTP SSRC).
#[derive(Clone, Debug)]
pub struct JitterBuffer {
    delay: Duration,
    samples: Box<[i16]>,
    valid: Box<[bool]>,
    anchor: Option<Anchor>,
    last_frame: Frame,
    concealed_run: u32,
    far_behind_run: u32,
    stats: JitterStats,
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// Arrival time of the first packet plus the delay: when `start_ts` plays.
    start: Instant,
    /// RTP timestamp of the next sample to play.
    read_ts: u32,
    /// Samples played since `start`.
    played: u64,
}

impl JitterBuffer {
    /// A buffer with the given playout delay, clamped to 20–500 ms.
    pub fn new(delay: Duration) -> JitterBuffer {
        JitterBuffer {
            delay: delay.clamp(Duration::from_millis(20), Duration::from_millis(500)),
            samples: vec![0; RING].into_boxed_slice(),
            valid: vec![false; RING].into_boxed_slice(),
            anchor: None,
            last_frame: [0; FRAME_SAMPLES],
            concealed_run: 0,
            far_behind_run: 0,
            stats: JitterStats::default(),
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Feeds one packet's decoded samples (8 kHz) with its RTP timestamp, received at `now`.
    /// Late and duplicate packets are dropped and counted.
    pub fn handle_packet(&mut self, now: Instant, rtp_timestamp: u32, pcm: &[i16]) {
        if pcm.is_empty() {
            return;
        }
        // No real packetisation exceeds 120 ms; capping at 256 ms keeps every accepted packet
        // inside the ring together with the largest delay (500 ms).
        let pcm = &pcm[..pcm.len().min(MAX_PACKET)];
        let anchor = match self.anchor {
            Some(a) => a,
            None => self.reanchor(now, rtp_timestamp),
        };
        let mut offset = i64::from(rtp_timestamp.wrapping_sub(anchor.read_ts) as i32);
        let ahead = offset + pcm.len() as i64 > (RING - FRAME_SAMPLES) as i64;
        let far_behind = offset < -(RING as i64 / 2);
        if far_behind {
            // One stray packet from long ago is just late; a run of them means the sender
            // restarted its timestamps lower (a re-INVITE, a transfer) and we must follow.
            self.far_behind_run += 1;
        } else {
            self.far_behind_run = 0;
        }
        if ahead || self.far_behind_run >= FAR_BEHIND_RESYNC {
            // The sender skipped ahead (silence suppression, hold) or restarted: play this
            // packet after the configured delay, keeping the playout clock running.
            self.stats.resyncs += 1;
            self.far_behind_run = 0;
            let a = self.reanchor(now, rtp_timestamp);
            offset = i64::from(rtp_timestamp.wrapping_sub(a.read_ts) as i32);
        }
        if offset + pcm.len() as i64 <= 0 {
            self.stats.late += 1;
            return;
        }
        // Samples before the read position are late; keep the part still in time.
        let skip = usize::try_from(-offset).unwrap_or(0);
        let mut fresh = false;
        for (i, &s) in pcm.iter().enumerate().skip(skip) {
            let idx = (rtp_timestamp.wrapping_add(i as u32) as usize) & (RING - 1);
            fresh |= !self.valid[idx];
            self.samples[idx] = s;
            self.valid[idx] = true;
        }
        if fresh {
            self.stats.accepted += 1;
        } else {
            self.stats.duplicates += 1;
        }
    }

    /// Places `rtp_timestamp` so that it plays `delay` after `now`. The first time this
    /// starts the playout clock; later it only moves the read position, so the output keeps
    /// exactly one frame per 20 ms across a resync (the gap is concealed).
    fn reanchor(&mut self, now: Instant, rtp_timestamp: u32) -> Anchor {
        self.valid.fill(false);
        let target = now + self.delay;
        let a = match self.anchor {
            None => Anchor {
                start: target,
                read_ts: rtp_timestamp,
                played: 0,
            },
            Some(old) => {
                let due = old.start + samples_to_duration(old.played);
                let lead = target.saturating_duration_since(due);
                let lead_samples = (lead.as_micros() as u64 * u64::from(SAMPLE_RATE) / 1_000_000)
                    .min(RING as u64 / 2) as u32;
                Anchor {
                    read_ts: rtp_timestamp.wrapping_sub(lead_samples),
                    ..old
                }
            }
        };
        self.anchor = Some(a);
        a
    }

    /// When the next frame is due; `None` before the first packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.anchor.map(|a| a.start + samples_to_duration(a.played))
    }

    /// If the next frame's playout time has come by `now`, writes it to `out` and says whether
    /// it was complete or concealed. Call until it returns `None` (a late tick catches up).
    pub fn poll_frame(&mut self, now: Instant, out: &mut Frame) -> Option<FrameKind> {
        let due = self.poll_timeout()?;
        if now < due {
            return None;
        }
        let anchor = self.anchor.as_mut()?;
        let mut missing = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let idx = (anchor.read_ts.wrapping_add(i as u32) as usize) & (RING - 1);
            if self.valid[idx] {
                *o = self.samples[idx];
                self.valid[idx] = false;
            } else {
                missing += 1;
                *o = conceal(&self.last_frame, i, self.concealed_run);
            }
        }
        anchor.read_ts = anchor.read_ts.wrapping_add(FRAME_SAMPLES as u32);
        anchor.played += FRAME_SAMPLES as u64;
        self.last_frame = *out;
        if missing == 0 {
            self.concealed_run = 0;
            Some(FrameKind::Audio)
        } else {
            self.concealed_run += 1;
            self.stats.concealed_frames += 1;
            Some(FrameKind::Concealed)
        }
    }
}

/// Concealment: the previous frame again, each repetition 6 dB quieter, then silence. Crude
/// next to G.711 Appendix I, but a 20 ms gap filled this way is far less audible than a click.
fn conceal(last: &Frame, i: usize, run: u32) -> i16 {
    if run >= MAX_CONCEALED_RUN {
        return 0;
    }
    last[i] >> 1
}

fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Frame k of the test stream: a ramp that encodes k, so every output sample says where it
    /// came from.
    fn frame(k: u32) -> Frame {
        std::array::from_fn(|i| (k as i16).wrapping_mul(200).wrapping_add(i as i16 + 1))
    }

    struct Run {
        jb: JitterBuffer,
        t0: Instant,
        out: Vec<(Frame, FrameKind)>,
    }

    impl Run {
        fn new(delay_ms: u64) -> Run {
            Run {
                jb: JitterBuffer::new(ms(delay_ms)),
                t0: Instant::now(),
                out: Vec::new(),
            }
        }
        /// Delivers frame k (timestamp base + 160k) at t0 + at_ms.
        fn arrive(&mut self, at_ms: u64, base: u32, k: u32) {
            self.tick(at_ms);
            self.jb
                .handle_packet(self.t0 + ms(at_ms), base.wrapping_add(160 * k), &frame(k));
        }
        /// Lets the playout clock run to t0 + at_ms.
        fn tick(&mut self, at_ms: u64) {
            let mut f = [0; FRAME_SAMPLES];
            while let Some(kind) = self.jb.poll_frame(self.t0 + ms(at_ms), &mut f) {
                self.out.push((f, kind));
            }
        }
    }

    #[test]
    fn in_order_stream_plays_unchanged_after_the_fixed_delay() {
        let mut r = Run::new(40);
        assert_eq!(r.jb.poll_timeout(), None);
        for k in 0..10 {
            r.arrive(20 * u64::from(k), 1000, k);
        }
        assert_eq!(r.jb.poll_timeout(), Some(r.t0 + ms(200)));
        // At t = 180 ms the frames due at 40, 60, … 180 have played: 8 of them.
        assert_eq!(r.out.len(), 8);
        r.tick(220);
        assert_eq!(r.out.len(), 10);
        for (k, (f, kind)) in r.out.iter().enumerate() {
            assert_eq!((*f, *kind), (frame(k as u32), FrameKind::Audio));
        }
    }

    #[test]
    fn reordered_packets_within_the_delay_are_put_back_in_order() {
        let mut r = Run::new(40);
        for k in (0..20).step_by(2) {
            // Each pair arrives swapped, the second one 15 ms late.
            r.arrive(20 * u64::from(k) + 15, 7, k + 1);
            r.arrive(20 * u64::from(k) + 16, 7, k);
        }
        r.tick(500);
        let played: Vec<Frame> = r.out.iter().take(20).map(|x| x.0).collect();
        // The buffer anchors on the first arrival, frame 1; frame 0 is then already late.
        assert_eq!(played[0], frame(1));
        assert_eq!(r.jb.stats().late, 1);
        assert!(
            r.out
                .iter()
                .skip(1)
                .take(18)
                .all(|x| x.1 == FrameKind::Audio)
        );
        assert_eq!(played[1..19], (2..20).map(frame).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_packet_is_concealed_and_the_stream_continues() {
        let mut r = Run::new(40);
        for k in (0..10).filter(|&k| k != 4) {
            r.arrive(20 * u64::from(k), 0, k);
        }
        r.tick(300);
        let kinds: Vec<FrameKind> = r.out.iter().take(10).map(|x| x.1).collect();
        assert_eq!(kinds[4], FrameKind::Concealed);
        assert!(
            kinds
                .iter()
                .enumerate()
                .all(|(i, k)| i == 4 || *k == FrameKind::Audio)
        );
        // The concealed frame is the previous one at half level.
        assert_eq!(r.out[4].0[10], frame(3)[10] >> 1);
        assert_eq!(r.out[5].0, frame(5));
        assert_eq!(r.jb.stats().concealed_frames, 1 + (r.out.len() as u64 - 10));
    }

    #[test]
    fn long_loss_fades_to_silence() {
        let mut r = Run::new(40);
        r.arrive(0, 0, 0);
        r.tick(200);
        let last = r.out.last().expect("frames played").0;
        assert_eq!(last, [0; FRAME_SAMPLES]);
        assert_eq!(r.out.len(), 9);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut r = Run::new(40);
        for k in 0..5 {
            r.arrive(20 * u64::from(k), 0, k);
            r.arrive(20 * u64::from(k) + 1, 0, k);
        }
        r.tick(200);
        assert_eq!(r.jb.stats().duplicates, 5);
        assert_eq!(r.jb.stats().accepted, 5);
        assert_eq!(
            r.out[..5].iter().map(|x| x.0).collect::<Vec<_>>(),
            (0..5).map(frame).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_packet_after_its_playout_time_is_dropped_without_disturbing_later_audio() {
        let mut r = Run::new(40);
        for k in [0, 1, 2, 4, 5] {
            r.arrive(20 * u64::from(k), 0, k);
        }
        // Frame 3 was due at 40 + 60 = 100 ms; it arrives at 130 ms.
        r.arrive(130, 0, 3);
        r.tick(200);
        assert_eq!(r.jb.stats().late, 1);
        assert_eq!(r.out[3].1, FrameKind::Concealed);
        assert_eq!(r.out[4], (frame(4), FrameKind::Audio));
    }

    #[test]
    fn timestamps_wrapping_past_u32_max_play_continuously() {
        let mut r = Run::new(40);
        let base = u32::MAX - 500;
        for k in 0..10 {
            r.arrive(20 * u64::from(k), base, k);
        }
        r.tick(300);
        assert!(
            r.out[..10]
                .iter()
                .enumerate()
                .all(|(k, x)| *x == (frame(k as u32), FrameKind::Audio))
        );
        assert_eq!(r.jb.stats().resyncs, 0);
    }

    #[test]
    fn a_timestamp_jump_re_anchors_without_stopping_the_playout_clock() {
        let mut r = Run::new(40);
        for k in 0..3 {
            r.arrive(20 * u64::from(k), 0, k);
        }
        r.tick(100);
        // Frames due at 40, 60, 80, 100 ms have played.
        let before = r.out.len();
        assert_eq!(before, 4);
        for k in 0..3 {
            r.arrive(100 + 20 * u64::from(k), 5_000_000, k);
        }
        assert_eq!(r.jb.stats().resyncs, 1);
        r.tick(181);
        // The tick at 120 ms is concealed; the new stream starts 40 ms after its first packet.
        assert_eq!(r.out.len(), before + 4);
        assert_eq!(r.out[before].1, FrameKind::Concealed);
        let resumed: Vec<Frame> = r.out[before + 1..].iter().map(|x| x.0).collect();
        assert_eq!(resumed, (0..3).map(frame).collect::<Vec<_>>());
    }

    #[test]
    fn one_stray_old_packet_is_late_but_a_restarted_lower_stream_is_followed() {
        let mut r = Run::new(40);
        let high = 3_000_000_000u32;
        for k in 0..5 {
            r.arrive(20 * u64::from(k), high, k);
        }
        // A single packet from a much older timestamp range (behind in RTP's serial number
        // arithmetic): dropped, nothing else changes.
        r.arrive(100, high - 100_000, 0);
        assert_eq!((r.jb.stats().late, r.jb.stats().resyncs), (1, 0));
        for k in 5..8 {
            r.arrive(20 * u64::from(k), high, k);
        }
        // The sender restarts at a lower timestamp and keeps sending: followed on the third.
        for k in 0..6 {
            r.arrive(160 + 20 * u64::from(k), high - 1_000_000, k);
        }
        assert_eq!(r.jb.stats().resyncs, 1);
        r.tick(400);
        let last: Vec<Frame> = r.out.iter().rev().take(12).map(|x| x.0).collect();
        assert!(last.contains(&frame(5)), "the restarted stream is heard");
    }

    #[test]
    fn thirty_ms_packets_fill_twenty_ms_frames_without_gaps() {
        let mut jb = JitterBuffer::new(ms(60));
        let t0 = Instant::now();
        let stream: Vec<i16> = (0..2400).map(|i| (i % 3000) as i16).collect();
        let mut out = Vec::new();
        let mut f = [0; FRAME_SAMPLES];
        for (k, chunk) in stream.chunks(240).enumerate() {
            let now = t0 + ms(30 * k as u64);
            while jb.poll_frame(now, &mut f).is_some() {
                out.extend_from_slice(&f);
            }
            jb.handle_packet(now, (240 * k) as u32, chunk);
        }
        assert_eq!(out, stream[..out.len()]);
        assert!(out.len() >= 1600);
        assert_eq!(jb.stats().concealed_frames, 0);
    }

    #[test]
    fn jitter_below_the_delay_loses_nothing_and_above_it_loses_some() {
        let run = |max_jitter_ms: u64| {
            let mut r = Run::new(40);
            let mut x = 99u64;
            // Arrival = send time + pseudo-random network delay in [0, max_jitter_ms).
            let mut arrivals: Vec<(u64, u32)> = (0..500)
                .map(|k| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (20 * u64::from(k) + (x >> 33) % max_jitter_ms, k)
                })
                .collect();
            // The first packet anchors the playout; give it the minimum delay.
            arrivals[0].0 = 0;
            arrivals.sort();
            for (at, k) in arrivals {
                r.arrive(at, 0, k);
            }
            r.tick(20 * 500 + 100);
            r.jb.stats()
        };
        let calm = run(35);
        assert_eq!((calm.late, calm.accepted), (0, 500));
        let stormy = run(120);
        assert!(stormy.late > 50, "{stormy:?}");
        assert_eq!(stormy.late + stormy.accepted, 500);
    }
}
