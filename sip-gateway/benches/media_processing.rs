//! Load benchmark of the relay's processed mode: N calls that each have music and
//! announcements playing to the caller, a stereo recording running, and the agent bridged.
//!
//! Every call has two phones (UDP sockets of this process): the caller (leg A) and the agent
//! (leg B) both send 20 ms G.711 tone packets at the real pacing. Each call is told to
//! record (stereo WAV into a temporary directory, deleted afterwards) and to play a built-in
//! announcement followed by looping music to A; every 5 s a fresh announcement interrupts the
//! music (as queue position announcements do). B keeps hearing A through the mixer.
//!
//! Measured:
//! - worker and recording-thread CPU (utime+stime from `/proc/self/task/*/stat`);
//! - memory per call: RSS growth from before the calls to after all of them are processed;
//! - frame-tick lateness: for each stream zentrale sends, the kernel receive timestamp
//!   (`SO_TIMESTAMPNS`) of frame k minus (the stream's earliest-arriving frame time + k · 20 ms,
//!   k from the RTP timestamp) — how late the drift-free 20 ms tick delivered it, transit
//!   included;
//! - loss: sequence gaps in the streams zentrale sends, and the ingress loss the relay saw;
//! - recorded length: the WAVs' total duration against the time the recordings ran.
//!
//! Run: `cargo bench -p sip-gateway --bench media_processing -- --calls 100 --seconds 20
//! [--workers 1] [--rt-worker 10]`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use sip_gateway::audio::g711::{Law, encode_into};
use sip_gateway::audio::prompt::{Prompt, PromptLibrary};
use sip_gateway::audio::tone::ToneGenerator;
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};
use sip_gateway::media::{
    AudioCommand, Leg, LegSetup, MediaEvent, MediaRelay, PayloadTypes, RelayConfig,
};

const PERIOD: Duration = Duration::from_millis(20);
const WARMUP: Duration = Duration::from_secs(2);
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

struct Args {
    calls: usize,
    seconds: u64,
    workers: usize,
    /// SCHED_FIFO priority for the worker threads (`chrt`, needs CAP_SYS_NICE).
    rt_worker: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        calls: 100,
        seconds: 20,
        workers: 1,
        rt_worker: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--calls" => a.calls = value.parse().expect("--calls N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--workers" => a.workers = value.parse().expect("--workers W"),
            "--rt-worker" => a.rt_worker = Some(value.parse().expect("--rt-worker PRIORITY")),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Thread ids of this process's threads whose name starts with `prefix`.
fn thread_ids(prefix: &str) -> Vec<u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .unwrap_or_default()
                .trim_end()
                .starts_with(prefix)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// utime + stime in clock ticks of the threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split(' ').collect();
        total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    total
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// What one phone saw of the stream zentrale sends it.
#[derive(Default)]
struct StreamSeen {
    /// The SSRC of zentrale's stream (packets forwarded before the call was processed carry
    /// the other phone's SSRC and are not counted).
    ssrc: Option<u32>,
    /// (RTP timestamp, kernel receive time in ns) of the first frame.
    first: Option<(u32, u64)>,
    /// Lateness samples (ns) relative to the first frame's schedule; normalised later by the
    /// stream's minimum so that the earliest frame counts as on time.
    lateness: Vec<i64>,
    max_seq: Option<u16>,
    received: u64,
    gaps: u64,
}

fn main() {
    let a = args();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "media processing bench: {} calls (music + announcements to A, stereo recording, B bridged), {} s, {} worker(s); loadavg before: {}",
        a.calls,
        a.seconds,
        a.workers,
        load.trim()
    );
    let lib = PromptLibrary::builtin().unwrap();
    let announcement: Vec<Arc<Prompt>> = ["caller_number", "number_3"]
        .iter()
        .map(|n| Arc::new(lib.get("de", n).unwrap().clone()))
        .collect();
    let mut music = vec![0i16; 8000 * 4];
    ToneGenerator::new(523.0, 6000).fill(&mut music);
    let music = Arc::new(Prompt::from_samples(music));
    let dir = std::env::temp_dir().join(format!("zentrale-bench-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let rss_before = rss_kib();
    let cfg = RelayConfig::default()
        .ports(20000, 29999)
        .workers(a.workers)
        .rtp_timeout(Duration::from_secs(3600));
    let (relay, mut relay_events) = MediaRelay::start(cfg).unwrap();

    if let Some(prio) = a.rt_worker {
        // A thread names itself once it runs: wait for the workers' names to appear.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut tids = thread_ids("media-worker");
        while tids.len() < a.workers && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            tids = thread_ids("media-worker");
        }
        assert_eq!(tids.len(), a.workers, "worker threads not found");
        for tid in tids {
            let ok = std::process::Command::new("chrt")
                .args(["-f", "-p", &prio.to_string(), &tid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            println!(
                "worker thread {tid}: SCHED_FIFO {prio} {}",
                if ok { "set" } else { "NOT set" }
            );
        }
    }
    let nphones = a.calls * 2;
    let mut phones = Vec::with_capacity(nphones);
    for _ in 0..nphones {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        setsockopt(&s, sockopt::ReceiveTimestampns, &true).unwrap();
        phones.push(mio::net::UdpSocket::from_std(s));
    }
    let mut targets = vec![SocketAddr::from(([0, 0, 0, 0], 0)); nphones];
    let mut ids = Vec::new();
    let pts = PayloadTypes::of(&[0, 101]);
    for c in 0..a.calls {
        let setup = |p: &mio::net::UdpSocket| LegSetup::new(Some(p.local_addr().unwrap()), pts);
        let call = relay
            .add_call(setup(&phones[2 * c]), setup(&phones[2 * c + 1]))
            .unwrap();
        targets[2 * c] = SocketAddr::new(call.address, call.leg_a.rtp);
        targets[2 * c + 1] = SocketAddr::new(call.address, call.leg_b.rtp);
        relay
            .audio(
                call.id,
                AudioCommand::Record {
                    path: dir.join(format!("{c}.wav")),
                    mono: false,
                },
            )
            .unwrap();
        relay
            .audio(
                call.id,
                AudioCommand::Play {
                    leg: Leg::A,
                    items: announcement.clone(),
                    music: Some(Arc::clone(&music)),
                    tag: 0,
                },
            )
            .unwrap();
        ids.push(call.id);
    }

    let mut poll = Poll::new().unwrap();
    for (i, p) in phones.iter_mut().enumerate() {
        poll.registry()
            .register(p, Token(i), Interest::READABLE)
            .unwrap();
    }
    let mut events = Events::with_capacity(1024);
    // Each phone sends its own tone (A 440 Hz, B 1000 Hz), pre-encoded once.
    let frame_of = |freq: f64| {
        let mut pcm = SILENCE;
        ToneGenerator::new(freq, 8000).fill(&mut pcm);
        let mut p = [0u8; 12 + FRAME_SAMPLES];
        p[0] = 0x80;
        encode_into(Law::Mu, &pcm, &mut p[12..]);
        p
    };
    let (frame_a, frame_b) = (frame_of(440.0), frame_of(1000.0));
    let mut seq = vec![0u16; nphones];
    let mut seen: Vec<StreamSeen> = (0..nphones).map(|_| StreamSeen::default()).collect();
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(TimeSpec);

    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + WARMUP;
    let stop = start + Duration::from_secs(a.seconds);
    let mut next_period = 0u64;
    let mut next_announce = start + ANNOUNCE_EVERY;
    let mut cpu_start = None;
    let mut rss_processed = None;
    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        if cpu_start.is_none() && now >= measure_from {
            rss_processed = Some(rss_kib());
            cpu_start = Some((
                now,
                thread_ticks("media-worker"),
                thread_ticks("media-recorder"),
            ));
            for s in &mut seen {
                s.lateness.clear();
            }
        }
        // Send every phone's frame of each due period (one period = one packet per phone).
        while start + PERIOD * next_period as u32 <= now {
            for (i, p) in phones.iter().enumerate() {
                let mut pkt = if i % 2 == 0 { frame_a } else { frame_b };
                let s = seq[i];
                seq[i] = s.wrapping_add(1);
                pkt[2..4].copy_from_slice(&s.to_be_bytes());
                pkt[4..8].copy_from_slice(&(u32::from(s) * 160).to_be_bytes());
                pkt[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                let _ = p.send_to(&pkt, targets[i]);
            }
            next_period += 1;
        }
        if now >= next_announce {
            for id in &ids {
                let _ = relay.audio(
                    *id,
                    AudioCommand::Play {
                        leg: Leg::A,
                        items: announcement.clone(),
                        music: Some(Arc::clone(&music)),
                        tag: 1,
                    },
                );
            }
            next_announce += ANNOUNCE_EVERY;
        }
        let wake = (start + PERIOD * next_period as u32).min(stop);
        poll.poll(
            &mut events,
            Some(wake.saturating_duration_since(Instant::now())),
        )
        .unwrap();
        for ev in events.iter() {
            let i = ev.token().0;
            let fd = phones[i].as_raw_fd();
            loop {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let Ok(msg) = recvmsg::<SockaddrStorage>(
                    fd,
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) else {
                    break;
                };
                let mut recv_ns = 0u64;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmTimestampns(t) = c {
                            recv_ns = t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64;
                        }
                    }
                }
                let len = msg.bytes;
                if len < 12 {
                    continue;
                }
                let b = &buf[..len];
                let sq = u16::from_be_bytes([b[2], b[3]]);
                let ts = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                if (ssrc as usize) < nphones {
                    // A phone's own packet forwarded before processing began.
                    continue;
                }
                let st = &mut seen[i];
                if st.ssrc != Some(ssrc) {
                    *st = StreamSeen {
                        ssrc: Some(ssrc),
                        ..StreamSeen::default()
                    };
                }
                st.received += 1;
                if let Some(m) = st.max_seq {
                    let d = sq.wrapping_sub(m);
                    if d > 0 && d < 3000 {
                        st.gaps += u64::from(d - 1);
                        st.max_seq = Some(sq);
                    }
                } else {
                    st.max_seq = Some(sq);
                }
                let (ts0, t0) = *st.first.get_or_insert((ts, recv_ns));
                let frames = u64::from(ts.wrapping_sub(ts0)) / 160;
                let due = t0 + frames * 20_000_000;
                if Instant::now() >= measure_from {
                    st.lateness.push(recv_ns as i64 - due as i64);
                }
            }
        }
    }
    let (t0, w0, r0) = cpu_start.expect("ran past warm-up");
    let secs = t0.elapsed().as_secs_f64();
    let (w1, r1) = (thread_ticks("media-worker"), thread_ticks("media-recorder"));
    let worker_cpu = (w1 - w0) as f64 / 100.0 / secs * 100.0;
    let recorder_cpu = (r1 - r0) as f64 / 100.0 / secs * 100.0;
    let rss_processed = rss_processed.unwrap();

    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut received, mut gaps) = (0u64, 0u64);
    for s in &seen {
        received += s.received;
        gaps += s.gaps;
        let Some(min) = s.lateness.iter().copied().min() else {
            continue;
        };
        for &l in &s.lateness {
            lateness.saturating_record(((l - min) / 1000) as u64);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ingress_lost = 0i64;
    let mut accepted = 0u64;
    let mut mos_min = u16::MAX;
    for id in &ids {
        let s = rt.block_on(relay.stats(*id)).unwrap();
        for l in [s.leg_a, s.leg_b] {
            ingress_lost += l.lost.max(0);
            accepted += l.packets;
            mos_min = mos_min.min(l.mos_x100);
        }
    }
    let recording_secs = t0.elapsed().as_secs_f64() + WARMUP.as_secs_f64();
    for id in &ids {
        relay.remove_call(*id).unwrap();
    }
    let mut recorded_ms = 0u64;
    let mut recordings = 0;
    let mut other: HashMap<&'static str, u64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while recordings < a.calls && Instant::now() < deadline {
        match relay_events.try_recv() {
            Ok(MediaEvent::Recorded { summary, .. }) => {
                recorded_ms += summary.duration_ms;
                recordings += 1;
            }
            Ok(MediaEvent::RecordingFailed { error, .. }) => panic!("recording failed: {error}"),
            Ok(_) => *other.entry("other").or_default() += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "worker CPU: {worker_cpu:.1} % of one core ({:.1} µs per call per 20 ms frame); recording thread: {recorder_cpu:.1} %",
        worker_cpu / 100.0 * 20_000.0 / a.calls as f64
    );
    println!(
        "memory: {:.1} KiB RSS per processed call ({} KiB before, {} KiB with all calls processed)",
        (rss_processed.saturating_sub(rss_before)) as f64 / a.calls as f64,
        rss_before,
        rss_processed
    );
    println!(
        "frame-tick lateness (µs, vs each stream's earliest frame): p50 {} / p99 {} / p999 {} / max {} over {} frames",
        lateness.value_at_quantile(0.5),
        lateness.value_at_quantile(0.99),
        lateness.value_at_quantile(0.999),
        lateness.max(),
        lateness.len()
    );
    println!(
        "loss: {gaps} sequence gaps in {received} frames zentrale sent ({:.4} %); relay ingress loss {ingress_lost} of {accepted}; lowest MOS ×100 {mos_min}",
        gaps as f64 * 100.0 / (received + gaps).max(1) as f64
    );
    println!(
        "recordings: {recordings} finished, {:.1} s recorded on average for ~{:.1} s of recording each",
        recorded_ms as f64 / 1000.0 / recordings.max(1) as f64,
        recording_secs
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg after: {}", load.trim());
}
