//! Load benchmark of the anchored RTP relay: N bridged G.711 calls on 127.0.0.1.
//!
//! Each call has two phones (UDP sockets of this process) that send 172-byte RTP packets
//! (20 ms of G.711) every 20 ms, i.e. at the real 50 packets/s pacing, to the relay, which
//! forwards them to the other phone. One generator thread plays all phones; the relay runs
//! its own worker threads, so both share this machine's cores as they would in production
//! with a load generator next to it.
//!
//! Measured:
//! - loss: packets sent vs packets received by the far phones (after a 1 s drain);
//! - transit time phone → relay → phone, from the send time written into each packet to the
//!   kernel's receive timestamp (`SO_TIMESTAMPNS`) so the generator's own scheduling does
//!   not count;
//! - added jitter: per stream, |D| of RFC 3550 (the change in transit time between two
//!   consecutive packets), which is exactly the jitter the path adds to the sender's pacing;
//! - relay CPU from `/proc/self/task/<tid>/stat` of the `media-worker-*` threads, and RSS
//!   growth per call.
//!
//! Run: `cargo bench -p sip-gateway --bench media_relay -- --calls 1600 --seconds 20
//! [--workers 1] [--io batched|per-packet] [--coalesce-us 0] [--phone-sockets 0]
//! [--rt-worker 10]`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use sip_gateway::media::{IoMode, LegSetup, MediaRelay, PayloadTypes, RelayConfig};

const PERIOD: Duration = Duration::from_millis(20);
const PACKET: usize = 172;
const BATCH: usize = 32;
const WARMUP: Duration = Duration::from_secs(2);
/// A packet more than this late is skipped instead of sent.
const MAX_LAG: Duration = Duration::from_millis(60);

struct Args {
    calls: usize,
    seconds: u64,
    workers: usize,
    io: IoMode,
    /// Generator sockets; 0 means one per phone (every phone its own address, as in
    /// production). Fewer sockets let the generator batch with sendmmsg/recvmmsg, so that
    /// less of the shared CPU goes to the load generator.
    phone_sockets: usize,
    /// The relay's coalescing delay in µs (0 = off).
    coalesce_us: u64,
    /// Puts the relay's worker threads into SCHED_FIFO at this priority (`chrt`, needs
    /// CAP_SYS_NICE) — what a deployment can do with the systemd unit's scheduling settings.
    rt_worker: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        calls: 100,
        seconds: 20,
        workers: 1,
        io: IoMode::Batched,
        phone_sockets: 0,
        coalesce_us: 0,
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
            "--coalesce-us" => a.coalesce_us = value.parse().expect("--coalesce-us N"),
            "--rt-worker" => a.rt_worker = Some(value.parse().expect("--rt-worker PRIORITY")),
            "--phone-sockets" => a.phone_sockets = value.parse().expect("--phone-sockets K"),
            "--io" => {
                a.io = match value.as_str() {
                    "batched" => IoMode::Batched,
                    "per-packet" => IoMode::PerPacket,
                    other => panic!("--io batched|per-packet, not {other}"),
                }
            }
            _ => {
                // cargo passes --bench; ignore anything else unknown.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
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
        // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split(' ').collect();
        total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    total
}

fn to_std(a: &SockaddrStorage) -> SocketAddr {
    let v4 = a.as_sockaddr_in().expect("the bench runs on 127.0.0.1");
    SocketAddr::V4((*v4).into())
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// System-wide UDP receive-buffer and send-buffer drop counters (`/proc/net/snmp`).
fn udp_buffer_errors() -> (u64, u64) {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return (0, 0);
    };
    let field = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RcvbufErrors"), field("SndbufErrors"))
}

fn udp_kernel_pages() -> String {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("UDP:"))
        .unwrap_or("")
        .to_owned()
}

fn main() {
    let a = args();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "media relay bench: {} calls, {} s, {} worker(s), io {:?}, coalesce {} µs, phone sockets {}; loadavg before: {}",
        a.calls,
        a.seconds,
        a.workers,
        a.io,
        a.coalesce_us,
        if a.phone_sockets == 0 {
            "one per phone".to_owned()
        } else {
            a.phone_sockets.to_string()
        },
        load.trim()
    );

    let cfg = RelayConfig::default()
        .ports(20000, 29999)
        .workers(a.workers)
        .io_mode(a.io)
        .coalesce(Duration::from_micros(a.coalesce_us))
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
    let rss_before = rss_kib();

    let nphones = a.calls * 2;
    let nsockets = if a.phone_sockets == 0 {
        nphones
    } else {
        a.phone_sockets.min(nphones)
    };
    let mut phones = Vec::with_capacity(nsockets);
    for _ in 0..nsockets {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        setsockopt(&s, sockopt::ReceiveTimestampns, &true).unwrap();
        if a.phone_sockets > 0 {
            // A shared generator socket receives for many phones: give it room for bursts
            // while the generator waits for a CPU (capped by net.core.rmem_max).
            let _ = setsockopt(&s, sockopt::RcvBuf, &(4 << 20));
        }
        phones.push(mio::net::UdpSocket::from_std(s));
    }
    let mut targets: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 0)); nphones];
    let mut ids = Vec::new();
    let pts = PayloadTypes::of(&[0]);
    for c in 0..a.calls {
        let setup = |p: &mio::net::UdpSocket| LegSetup {
            peer: Some(p.local_addr().unwrap()),
            rtcp_peer: None,
            payload_types: pts,
            telephone_event: None,
            codec: None,
        };
        let call = relay
            .add_call(
                setup(&phones[(2 * c) % nsockets]),
                setup(&phones[(2 * c + 1) % nsockets]),
            )
            .unwrap();
        targets[2 * c] = SocketAddr::new(call.address, call.leg_a.rtp);
        targets[2 * c + 1] = SocketAddr::new(call.address, call.leg_b.rtp);
        ids.push(call.id);
    }
    let rss_after = rss_kib();

    let mut poll = Poll::new().unwrap();
    for (i, p) in phones.iter_mut().enumerate() {
        poll.registry()
            .register(p, Token(i), Interest::READABLE)
            .unwrap();
    }
    let mut events = Events::with_capacity(4096);

    let mut transit = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut jitter = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut received = 0u64;
    let mut misrouted = 0u64;
    let mut seq = vec![0u16; nphones];
    let mut last: Vec<Option<(u64, u64)>> = vec![None; nphones];

    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut headers: MultiHeaders<SockaddrStorage> =
        MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec)));
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80;
    // Per generator socket: packets waiting to go out in one sendmmsg.
    let mut pending: Vec<Vec<([u8; PACKET], SockaddrStorage)>> =
        (0..nsockets).map(|_| Vec::with_capacity(BATCH)).collect();
    let mut dirty: Vec<usize> = Vec::with_capacity(nsockets);
    let mut send_headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut flush = |sock: &mio::net::UdpSocket,
                     batch: &mut Vec<([u8; PACKET], SockaddrStorage)>| {
        // The send time is stamped here, just before the system call: packets wait in
        // `pending` while the generator builds the rest of a due batch (many ms' worth when it
        // was starved of CPU), and that wait is the generator's, not the relay's.
        let stamp = realtime_ns().to_be_bytes();
        for (p, _) in batch.iter_mut() {
            p[12..20].copy_from_slice(&stamp);
        }
        let n = if batch.len() == 1 {
            usize::from(sock.send_to(&batch[0].0, to_std(&batch[0].1)).is_ok())
        } else {
            let iovs: Vec<[IoSlice<'_>; 1]> =
                batch.iter().map(|(p, _)| [IoSlice::new(p)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, a)| Some(*a)).collect();
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            sendmmsg(
                sock.as_raw_fd(),
                &mut send_headers,
                iovs.iter(),
                &addrs,
                no_cmsgs,
                MsgFlags::empty(),
            )
            .map(|r| r.count())
            .unwrap_or(0)
        };
        batch.clear();
        n as u64
    };

    let buffer_errors_before = udp_buffer_errors();
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = realtime_ns() + 200_000_000 + WARMUP.as_nanos() as u64;
    let stop_sending = start + Duration::from_secs(a.seconds);
    let stop = stop_sending + Duration::from_secs(1);
    let mut next = 0u64; // the k-th send overall: phone k % nphones in period k / nphones
    let due = |k: u64| {
        let period = k / nphones as u64;
        let phone = k % nphones as u64;
        start + PERIOD * period as u32 + PERIOD * phone as u32 / nphones as u32
    };
    let mut cpu_start = None;
    let mut cpu_end = None;

    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        if cpu_start.is_none() && now >= start + WARMUP {
            cpu_start = Some((
                Instant::now(),
                thread_ticks("media-worker"),
                thread_ticks("media_relay"),
            ));
        }
        if now >= stop_sending && cpu_end.is_none() {
            cpu_end = Some((
                now,
                thread_ticks("media-worker"),
                thread_ticks("media_relay"),
            ));
        }
        if now < stop_sending {
            while due(next) <= now && due(next) < stop_sending {
                let i = (next % nphones as u64) as usize;
                if now - due(next) > MAX_LAG {
                    // The generator is starved of CPU: skip rather than burst, so the
                    // offered load stays at most the real pacing. Reported as "offered".
                    skipped += 1;
                    next += 1;
                    continue;
                }
                let s = seq[i];
                seq[i] = s.wrapping_add(1);
                packet[2..4].copy_from_slice(&s.to_be_bytes());
                packet[4..8].copy_from_slice(&(u32::from(s) * 160).to_be_bytes());
                packet[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                let k = i % nsockets;
                if pending[k].is_empty() {
                    dirty.push(k);
                }
                pending[k].push((packet, SockaddrStorage::from(targets[i])));
                if pending[k].len() == BATCH {
                    sent += flush(&phones[k], &mut pending[k]);
                }
                next += 1;
            }
            for k in dirty.drain(..) {
                if !pending[k].is_empty() {
                    sent += flush(&phones[k], &mut pending[k]);
                }
            }
        }
        let wake = if now < stop_sending { due(next) } else { stop };
        let timeout = wake.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(timeout)).unwrap();
        for ev in events.iter() {
            let i = ev.token().0;
            let fd = phones[i].as_raw_fd();
            loop {
                let mut it = bufs.iter_mut();
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(it.next().unwrap())]);
                let Ok(msgs) = recvmmsg(
                    fd,
                    &mut headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) else {
                    break;
                };
                let mut n = 0;
                let mut got: [(usize, u64); BATCH] = [(0, 0); BATCH];
                for m in msgs {
                    let mut ts = 0u64;
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmTimestampns(t) = c {
                                ts = t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64;
                            }
                        }
                    }
                    got[n] = (m.bytes, ts);
                    n += 1;
                }
                for (k, &(len, recv_ns)) in got[..n].iter().enumerate() {
                    let b = &bufs[k];
                    let from = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
                    let phone = from ^ 1;
                    if len != PACKET || phone >= nphones || phone % nsockets != i {
                        misrouted += 1;
                        continue;
                    }
                    received += 1;
                    let send_ns = u64::from_be_bytes(b[12..20].try_into().unwrap());
                    if send_ns >= measure_from && recv_ns >= send_ns {
                        transit.saturating_record((recv_ns - send_ns) / 1000);
                        if let Some((ls, lr)) = last[phone] {
                            let d = (recv_ns as i64 - lr as i64) - (send_ns as i64 - ls as i64);
                            jitter.saturating_record(d.unsigned_abs() / 1000);
                        }
                    }
                    last[phone] = Some((send_ns, recv_ns));
                }
                if n < BATCH {
                    break;
                }
            }
        }
    }

    let (t0, relay0, gen0) = cpu_start.expect("ran past warm-up");
    let (t1, relay1, gen1) = cpu_end.expect("ran to the end of sending");
    let secs = (t1 - t0).as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    let relay_cpu = (relay1 - relay0) as f64 / hz / secs * 100.0;
    let gen_cpu = (gen1 - gen0) as f64 / hz / secs * 100.0;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut accepted = 0;
    let mut forwarded = 0;
    let mut undeliverable = 0;
    let mut rejected = 0;
    let mut lost_on_ingress = 0;
    for id in &ids {
        let s = rt.block_on(relay.stats(*id)).unwrap();
        for l in [s.leg_a, s.leg_b] {
            accepted += l.packets;
            forwarded += l.forwarded;
            undeliverable += l.undeliverable;
            rejected += l.rejected;
            lost_on_ingress += l.lost.max(0) as u64;
        }
    }
    let mut event_counts: HashMap<&'static str, u64> = HashMap::new();
    while let Ok(e) = relay_events.try_recv() {
        let k = match e {
            sip_gateway::media::MediaEvent::Latched { .. } => "latched",
            sip_gateway::media::MediaEvent::RtpTimeout { .. } => "timeout",
            _ => "other",
        };
        *event_counts.entry(k).or_default() += 1;
    }

    let buffer_errors_after = udp_buffer_errors();
    let loss = sent.saturating_sub(received);
    let pps = forwarded as f64 / (a.seconds as f64);
    let planned = (a.seconds * 50) as f64 * nphones as f64;
    println!(
        "generator: sent {:.1} % of the planned packets ({:.0} packets/s offered, {skipped} skipped as > {} ms late)",
        sent as f64 * 100.0 / planned,
        sent as f64 / a.seconds as f64,
        MAX_LAG.as_millis()
    );
    println!(
        "sent {sent} received {received} lost {loss} ({:.4} %) misrouted {misrouted}",
        loss as f64 * 100.0 / sent.max(1) as f64
    );
    println!(
        "where: sent {sent} -> relay accepted {accepted} (lost before the relay {}) -> forwarded {forwarded} -> far phones received {received} (lost after the relay {})",
        sent.saturating_sub(accepted),
        forwarded.saturating_sub(received)
    );
    println!(
        "relay: forwarded {forwarded} (~{pps:.0} packets/s), undeliverable {undeliverable}, rejected {rejected}, ingress seq loss {lost_on_ingress}, events {event_counts:?}"
    );
    println!(
        "kernel UDP drops during the run (system-wide): receive buffer full {}, send buffer full {}",
        buffer_errors_after.0 - buffer_errors_before.0,
        buffer_errors_after.1 - buffer_errors_before.1
    );
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    println!(
        "transit µs (after {} s warm-up, {} samples): p50 {} p99 {} p999 {} max {}",
        WARMUP.as_secs(),
        transit.len(),
        q(&transit, 0.5),
        q(&transit, 0.99),
        q(&transit, 0.999),
        transit.max()
    );
    println!(
        "added jitter |D| µs: p50 {} p99 {} p999 {} max {}",
        q(&jitter, 0.5),
        q(&jitter, 0.99),
        q(&jitter, 0.999),
        jitter.max()
    );
    // Packets the relay moved in the CPU window: those sent after the warm-up.
    let per_packet_us = (relay1 - relay0) as f64 / hz * 1e6 / transit.len().max(1) as f64;
    println!(
        "cpu over {secs:.1} s: relay workers {relay_cpu:.1} % of one core ({:.2} % per 100 calls, {per_packet_us:.2} µs CPU per relayed packet), generator {gen_cpu:.1} %",
        relay_cpu / a.calls as f64 * 100.0
    );
    println!(
        "memory: RSS +{} KiB for {} calls ({:.2} KiB per call incl. the phones' bookkeeping); kernel {}",
        rss_after.saturating_sub(rss_before),
        a.calls,
        rss_after.saturating_sub(rss_before) as f64 / a.calls as f64,
        udp_kernel_pages()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg after: {}", load.trim());
}
