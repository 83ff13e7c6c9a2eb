//! Cost of the audio toolkit per 20 ms frame, for the "100 calls with music, announcements and
//! recording at once" target of the media engine.
//!
//! Simulated audio, no sockets: each tick (20 ms of call time) every *bridged* call decodes a
//! PCMA packet from the caller and a PCMU packet from the agent, feeds both through a jitter
//! buffer and RTP receive statistics, mixes them (every tenth call with a whispering
//! supervisor, whose leg costs one more decode + jitter buffer), writes the stereo recording
//! (to buffered files in the temp dir, or discarded with `--record-discard`) and encodes the two outgoing frames. Every
//! *queued* caller gets the next frame of its player (hold music with a position announcement
//! every 30 s) encoded to PCMA. The tick is timed as a whole and per call.
//!
//! It also compares the G.191 encoder's arithmetic with a 16 K-entry look-up table, which
//! decides whether `g711` should use a table.
//!
//! Run: `cargo bench -p sip-gateway --bench audio_pipeline -- [--calls 100] [--queued 100]
//! [--seconds 60] [--record-discard] [--paced]`. `--paced` runs in real time (one tick per
//! 20 ms, as a media worker would) instead of as fast as possible; the per-tick cost is then
//! measured under the real recording write rate rather than 50× of it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hdrhistogram::Histogram;
use sip_gateway::audio::g711::{Law, decode_into, encode_into, encode_into_arithmetic};
use sip_gateway::audio::jitter::JitterBuffer;
use sip_gateway::audio::mix::{MixOutput, SupervisorMode, mix_call};
use sip_gateway::audio::prompt::{Player, PromptLibrary};
use sip_gateway::audio::quality::{EModelInput, ReceiveStats, mos};
use sip_gateway::audio::record::Recorder;
use sip_gateway::audio::tone::ToneGenerator;
use sip_gateway::audio::{FRAME_SAMPLES, Frame, SILENCE};
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sip_gateway::media::rtp::RtpHeader;

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

struct Leg {
    law: Law,
    payload: [u8; FRAME_SAMPLES],
    jb: JitterBuffer,
    stats: ReceiveStats,
    seq: u16,
    ts: u32,
}

impl Leg {
    fn new(law: Law, freq: f64) -> Leg {
        // A fixed 20 ms of tone as the "packet" every tick; the cost does not depend on content.
        let mut pcm = SILENCE;
        ToneGenerator::new(freq, 8000).fill(&mut pcm);
        let mut payload = [0u8; FRAME_SAMPLES];
        encode_into(law, &pcm, &mut payload);
        Leg {
            law,
            payload,
            jb: JitterBuffer::new(Duration::from_millis(40)),
            stats: ReceiveStats::new(),
            seq: 0,
            ts: 0,
        }
    }

    fn receive(&mut self, now: Instant, out: &mut Frame) {
        let mut pcm = SILENCE;
        decode_into(self.law, &self.payload, &mut pcm);
        let header = RtpHeader {
            payload_type: self.law.payload_type(),
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: 1,
        };
        // Arrival in 8 kHz units since the bench's epoch.
        let arrival = (now
            .saturating_duration_since(*EPOCH.get_or_init(Instant::now))
            .as_micros()
            / 125) as u32;
        self.stats.handle_packet(arrival, &header, 172, true);
        self.jb.handle_packet(now, self.ts, &pcm);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        *out = SILENCE;
        self.jb.poll_frame(now, out);
    }
}

struct BridgedCall {
    caller: Leg,
    agent: Leg,
    supervisor: Option<Leg>,
    recorder: Recorder<Sink>,
    mix: MixOutput,
    to_caller: [u8; FRAME_SAMPLES],
    to_agent: [u8; FRAME_SAMPLES],
}

/// Where recordings go: real files (the default, as in production: buffered writes into the
/// page cache) or nowhere (to see the recorder's own CPU cost).
enum Sink {
    Discard { pos: u64, len: u64 },
    File(BufWriter<File>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Discard { pos, len } => {
                *pos += buf.len() as u64;
                *len = (*len).max(*pos);
                Ok(buf.len())
            }
            Sink::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Discard { .. } => Ok(()),
            Sink::File(f) => f.flush(),
        }
    }
}

impl Seek for Sink {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match self {
            Sink::Discard { pos, len } => {
                *pos = match to {
                    SeekFrom::Start(p) => p,
                    SeekFrom::End(d) => len.saturating_add_signed(d),
                    SeekFrom::Current(d) => pos.saturating_add_signed(d),
                };
                Ok(*pos)
            }
            Sink::File(f) => f.seek(to),
        }
    }
}

struct QueuedCall {
    player: Player,
    position: u32,
    out: [u8; FRAME_SAMPLES],
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() {
    let calls = arg("--calls", 100) as usize;
    let queued = arg("--queued", 100) as usize;
    let seconds = arg("--seconds", 60);
    let ticks = seconds * 50;
    let args: Vec<String> = std::env::args().collect();
    let to_disk = !args.iter().any(|a| a == "--record-discard");
    let paced = args.iter().any(|a| a == "--paced");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("zentrale-audio-bench-{}", std::process::id()));
    if to_disk {
        std::fs::create_dir_all(&dir).expect("temp dir for recordings");
    }

    g711_table_vs_arithmetic();

    let rss_start = rss_kib();
    let lib = PromptLibrary::builtin().expect("built-in prompts decode");
    let rss_prompts = rss_kib();
    let music = lib.get("de", "hold_music").expect("hold music").clone();
    let mut bridged: Vec<BridgedCall> = (0..calls)
        .map(|i| BridgedCall {
            caller: Leg::new(Law::A, 600.0),
            agent: Leg::new(Law::Mu, 1400.0),
            supervisor: (i % 10 == 0).then(|| Leg::new(Law::Mu, 1700.0)),
            recorder: Recorder::new(if to_disk {
                Sink::File(BufWriter::new(
                    File::create(dir.join(format!("call-{i}.wav"))).expect("recording file"),
                ))
            } else {
                Sink::Discard { pos: 0, len: 0 }
            })
            .expect("WAV header"),
            mix: MixOutput::default(),
            to_caller: [0; FRAME_SAMPLES],
            to_agent: [0; FRAME_SAMPLES],
        })
        .collect();
    let mut waiting: Vec<QueuedCall> = (0..queued)
        .map(|i| {
            let mut player = Player::new();
            player.play(lib.get("de", "welcome").expect("welcome"));
            player.loop_music(&music);
            QueuedCall {
                player,
                position: 1 + (i as u32 % 20),
                out: [0; FRAME_SAMPLES],
            }
        })
        .collect();

    let rss_calls = rss_kib();
    let mut tick_hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    let mut bridged_hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    let mut queued_hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    // Call time is simulated: the jitter buffers see a 20 ms clock regardless of how fast the
    // bench runs, so "now" advances by exactly one tick per loop.
    let t0 = Instant::now();
    let run_start = Instant::now();
    let mut busy = Duration::ZERO;
    for tick in 0..ticks {
        let now = t0 + Duration::from_millis(20 * tick);
        let tick_start = Instant::now();
        for call in &mut bridged {
            let s = Instant::now();
            let (mut c, mut a, mut v) = (SILENCE, SILENCE, SILENCE);
            call.caller.receive(now, &mut c);
            call.agent.receive(now, &mut a);
            let sup = call.supervisor.as_mut().map(|leg| {
                leg.receive(now, &mut v);
                (SupervisorMode::Whisper, &v)
            });
            mix_call(&c, &a, sup, &mut call.mix);
            call.recorder.write_frame(&c, &a).expect("in-memory write");
            encode_into(Law::A, &call.mix.to_caller, &mut call.to_caller);
            encode_into(Law::Mu, &call.mix.to_agent, &mut call.to_agent);
            black_box((&call.to_caller, &call.to_agent));
            bridged_hist.record(s.elapsed().as_nanos() as u64).unwrap();
        }
        for q in &mut waiting {
            let s = Instant::now();
            if tick % 1500 == 1499 {
                // Every 30 s: "you are caller number N" over the music.
                let a = lib
                    .position_announcement("de", q.position)
                    .expect("position 1-20");
                q.player.announce(&a);
            }
            let mut f = SILENCE;
            q.player.next_frame(&mut f);
            encode_into(Law::A, &f, &mut q.out);
            black_box(&q.out);
            queued_hist.record(s.elapsed().as_nanos() as u64).unwrap();
        }
        let spent = tick_start.elapsed();
        busy += spent;
        tick_hist.record(spent.as_nanos() as u64).unwrap();
        if paced {
            // Real time: the next tick starts when it is due, as a media worker's timer
            // would start it.
            let next = run_start + Duration::from_millis(20 * (tick + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    let wall = run_start.elapsed();
    let rss_end = rss_kib();

    let mut recorded_bytes = 0;
    let mut call_mos = 0.0;
    for call in bridged {
        let st = &call.caller.stats;
        call_mos = mos(&EModelInput::g711(0.0, st.loss_percent(), st.jitter_ms()));
        let summary = call.recorder.finish().expect("finalize");
        recorded_bytes += summary.duration_ms * 32; // 8 kHz × 2 ch × 2 bytes per ms
    }

    if to_disk {
        std::fs::remove_dir_all(&dir).expect("remove recordings");
    }
    let call_frames = ticks * (calls + queued) as u64;
    println!(
        "audio_pipeline: {calls} bridged calls (jitter + mix + record + codec, 1 in 10 with whisper) + {queued} queued callers (music + announcements), {seconds} s of call time = {ticks} ticks"
    );
    println!(
        "  mode: {}; wall time {:.3} s for {seconds} s of audio; busy {:.3} s ({:.2} % of one core)",
        if paced {
            "paced (real time)"
        } else {
            "as fast as possible"
        },
        wall.as_secs_f64(),
        busy.as_secs_f64(),
        busy.as_secs_f64() / seconds as f64 * 100.0
    );
    println!(
        "  throughput {:.0} call-frames per busy second (a call needs 50/s), i.e. ~{:.0} such calls per core",
        call_frames as f64 / busy.as_secs_f64(),
        call_frames as f64 / busy.as_secs_f64() / 50.0
    );
    println!(
        "  memory: built-in prompts {} KiB RSS; {} calls' state {} KiB RSS after setup, {} KiB after the run ({:.1} KiB per call incl. the recorder's write buffer)",
        rss_prompts.saturating_sub(rss_start),
        calls + queued,
        rss_calls.saturating_sub(rss_prompts),
        rss_end.saturating_sub(rss_prompts),
        rss_end.saturating_sub(rss_prompts) as f64 / (calls + queued).max(1) as f64
    );
    let pr = |name: &str, h: &Histogram<u64>, unit: &str, div: f64| {
        println!(
            "  {name}: mean {:.2} p50 {:.2} p99 {:.2} p999 {:.2} max {:.2} {unit}",
            h.mean() / div,
            h.value_at_quantile(0.5) as f64 / div,
            h.value_at_quantile(0.99) as f64 / div,
            h.value_at_quantile(0.999) as f64 / div,
            h.max() as f64 / div
        );
    };
    pr("whole tick (all calls)", &tick_hist, "µs", 1000.0);
    pr("bridged call, per frame", &bridged_hist, "µs", 1000.0);
    pr("queued caller, per frame", &queued_hist, "µs", 1000.0);
    println!(
        "  tick p99 uses {:.2} % of the 20 ms budget of one core",
        tick_hist.value_at_quantile(0.99) as f64 / 20_000_000.0 * 100.0
    );
    println!(
        "  recorded {:.1} MB of stereo WAV; MOS estimate of a clean call {:.2}",
        recorded_bytes as f64 / 1e6,
        call_mos
    );
}

/// Resident set size of this process in KiB, from /proc (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn g711_table_vs_arithmetic() {
    let samples: Vec<i16> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 16) as i16)
        .collect();
    let mut out = vec![0u8; samples.len()];
    let mut pcm = vec![0i16; samples.len()];
    for law in [Law::Mu, Law::A] {
        let mut best = [f64::MAX; 3];
        for _ in 0..20 {
            let s = Instant::now();
            encode_into_arithmetic(law, black_box(&samples), &mut out);
            black_box(&out);
            best[0] = best[0].min(s.elapsed().as_secs_f64());
            let s = Instant::now();
            encode_into(law, black_box(&samples), &mut out);
            black_box(&out);
            best[1] = best[1].min(s.elapsed().as_secs_f64());
            let s = Instant::now();
            decode_into(law, black_box(&out), &mut pcm);
            black_box(&pcm);
            best[2] = best[2].min(s.elapsed().as_secs_f64());
        }
        let ns = |t: f64| t * 1e9 / samples.len() as f64;
        println!(
            "g711 {}, best of 20 runs over 1 M samples: encode (G.191 arithmetic) {:.2} ns/sample, encode (table, used) {:.2} ns/sample, decode (table) {:.2} ns/sample",
            law.encoding_name(),
            ns(best[0]),
            ns(best[1]),
            ns(best[2])
        );
    }
}
