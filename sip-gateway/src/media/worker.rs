//! A relay worker: one OS thread owning the sockets of a share of the calls, driven by an
//! epoll loop (mio), forwarding RTP between the two legs of each call.
//!
//! Why threads and not a tokio task per socket: at 1,600 calls there are 6,400 sockets and
//! 160,000 packets/s; a task wake-up per packet costs more than the forward itself. A worker
//! drains each readable socket with one `recvmmsg` into buffers allocated once at start, looks
//! at the RTP header in place, and sends the same bytes on with `sendmmsg` (or `send_to` for
//! a single packet): no allocation, no lock and no copy per packet. Control commands arrive on
//! a channel with a `mio::Waker`; the port allocator's lock is taken only when a call ends.
//!
//! Processed mode: a call that plays prompts, changes who hears whom, detects DTMF, records
//! or has a third leg gets a boxed [`CallAudio`] (allocated by the first audio command, not
//! per packet). Its packets are then decoded into the `CallAudio` instead of forwarded, and
//! one worker-wide 20 ms [`Ticker`] makes every processed call produce and send a frame per
//! leg. The poll timeout is the earlier of the next frame and the next timeout check.
//! Recording frames go to the recording thread (`super::recording`) without blocking.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::sync::mpsc as tmpsc;

use super::control::AudioCommand;
use super::ports::{PortAllocator, PortPair};
use super::process::{AudioEvent, CallAudio, FRAME, LegParams, Ticker};
use super::recording::{RecordMsg, RecordingQueue};
use super::relay::{
    CallStats, Command, IoMode, Leg, LegSetup, LegStats, MediaEvent, MediaSessionId, RelayConfig,
};
use super::rtp::{
    ReceiveStats, ReportBlock, RtcpState, SenderInfo, is_rtcp, rtp_header, rtp_payload,
    write_report,
};
use crate::audio::quality::{EModelInput, mos};

/// The token of the command waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// The token of the frame timer (processed mode's 20 ms tick).
const FRAME_TIMER: Token = Token(usize::MAX - 1);
/// Datagrams moved per system call at most.
const BATCH: usize = 32;
/// Receive buffer per datagram; larger datagrams are dropped as truncated (RTP on a
/// telephone call is far below the Ethernet MTU).
const BUF: usize = 2048;
/// With coalescing on, a wake-up that found fewer readable sockets than this is followed
/// by the coalescing sleep.
const COALESCE_BELOW: usize = 64;
/// How often legs are checked for RTP timeouts.
const TICK: Duration = Duration::from_millis(100);
/// Bits of a socket token below the call's slot: two for the leg (A, B, C), one for RTCP.
const SLOT_SHIFT: usize = 3;

fn token(slot: usize, leg: usize, rtcp: bool) -> Token {
    Token((slot << SLOT_SHIFT) | (leg << 1) | usize::from(rtcp))
}

/// A call handed to a worker by [`super::relay::MediaRelay::add_call`].
pub(crate) struct NewCall {
    pub(crate) id: MediaSessionId,
    pub(crate) ports: [PortPair; 2],
    pub(crate) sockets: [(StdUdpSocket, StdUdpSocket); 2],
    pub(crate) setups: [LegSetup; 2],
}

/// How a leg treats a datagram from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acceptance {
    /// From the latched source.
    Known,
    /// Latched (or re-latched) just now.
    Latched,
    /// From another source while the latched one is active: dropped.
    Foreign,
}

/// The relay's state of one leg, with its latching and timeout rules as plain methods.
#[derive(Debug)]
struct LegState {
    setup: LegSetup,
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// When the last accepted RTP packet arrived (or when the leg was set up).
    last_rx: Instant,
    timed_out: bool,
    rx: ReceiveStats,
    forwarded: u64,
    rejected: u64,
    undeliverable: u64,
    rtcp_packets: u64,
    /// Packets zentrale sent to this leg in processed mode.
    sent: u64,
    rtcp: RtcpState,
    /// When zentrale sends its next RTCP report to this leg (processed mode).
    next_report: Option<Instant>,
}

impl LegState {
    fn new(setup: LegSetup, now: Instant) -> LegState {
        LegState {
            setup,
            latched: None,
            latched_rtcp: None,
            last_rx: now,
            timed_out: false,
            rx: ReceiveStats::default(),
            forwarded: 0,
            rejected: 0,
            undeliverable: 0,
            rtcp_packets: 0,
            sent: 0,
            rtcp: RtcpState::default(),
            next_report: None,
        }
    }

    /// Where this leg's peer receives RTP: where its packets come from once latched
    /// (symmetric RTP gets through NAT), else what its SDP said.
    #[inline]
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.setup.peer)
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtcp.or(self.setup.rtcp_peer).or_else(|| {
            let d = self.destination()?;
            Some(SocketAddr::new(d.ip(), d.port().checked_add(1)?))
        })
    }

    /// The latching rule: the first valid RTP packet latches; another source replaces the
    /// latched one only after it has been silent for `relatch_after` (a NAT rebinding or a
    /// restarted phone), so a stray or injected stream cannot hijack an active call.
    #[inline]
    fn accept(&mut self, from: SocketAddr, now: Instant, relatch_after: Duration) -> Acceptance {
        match self.latched {
            Some(l) if l == from => Acceptance::Known,
            Some(_) if now.saturating_duration_since(self.last_rx) < relatch_after => {
                Acceptance::Foreign
            }
            _ => {
                self.latched = Some(from);
                Acceptance::Latched
            }
        }
    }

    /// RTCP latches to any source on the latched RTP source's host (NAT often maps the
    /// RTCP port unpredictably), or to the first source before RTP latched.
    fn accept_rtcp(&mut self, from: SocketAddr) -> bool {
        match self.latched {
            Some(l) if l.ip() != from.ip() => false,
            _ => {
                self.latched_rtcp = Some(from);
                true
            }
        }
    }

    /// True once per silence longer than `timeout`.
    fn check_timeout(&mut self, now: Instant, timeout: Duration) -> bool {
        if !self.timed_out && now.saturating_duration_since(self.last_rx) >= timeout {
            self.timed_out = true;
            return true;
        }
        false
    }

    fn update(&mut self, setup: LegSetup, now: Instant) {
        self.setup = setup;
        self.latched = None;
        self.latched_rtcp = None;
        self.last_rx = now;
        self.timed_out = false;
    }

    fn stats(&self) -> LegStats {
        LegStats {
            packets: self.rx.packets(),
            bytes: self.rx.bytes(),
            lost: self.rx.lost(),
            jitter: self.rx.jitter(),
            forwarded: self.forwarded,
            rejected: self.rejected,
            undeliverable: self.undeliverable,
            rtcp_packets: self.rtcp_packets,
            latched: self.latched,
            rtt_ms: self.rtcp.rtt_ms(),
            mos_x100: self.mos_x100(),
            remote_lost: self.rtcp.remote_lost(),
            remote_jitter: self.rtcp.remote_jitter(),
        }
    }

    /// The E-model estimate of what this leg's peer sends us: loss and jitter as received,
    /// half the RTCP round trip as the one-way delay (0 while unknown).
    fn mos_x100(&self) -> u16 {
        if self.rx.packets() == 0 {
            return 0;
        }
        let one_way = self.rtcp.rtt_ms().map_or(0.0, |r| f64::from(r) / 2.0);
        let m = mos(&EModelInput::g711(
            one_way,
            self.rx.loss_percent(),
            self.rx.jitter_ms(),
        ));
        (m * 100.0).round().clamp(0.0, 500.0) as u16
    }
}

struct LegSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

/// The third leg (supervisor, consultation): always processed.
struct ThirdLeg {
    port: PortPair,
    sockets: LegSockets,
    state: LegState,
}

struct Call {
    id: MediaSessionId,
    ports: [PortPair; 2],
    sockets: [LegSockets; 2],
    legs: [LegState; 2],
    third: Option<Box<ThirdLeg>>,
    /// Present in processed mode.
    audio: Option<Box<CallAudio>>,
    /// A recording was started and not yet stopped.
    recording: bool,
}

impl Call {
    fn stats(&self) -> CallStats {
        CallStats {
            leg_a: self.legs[0].stats(),
            leg_b: self.legs[1].stats(),
            leg_c: self.third.as_ref().map(|t| t.state.stats()),
        }
    }

    /// A leg's state and the sockets facing it.
    fn leg_mut(&mut self, leg: usize) -> Option<(&mut LegState, &LegSockets)> {
        match leg {
            0 | 1 => Some((&mut self.legs[leg], &self.sockets[leg])),
            _ => self
                .third
                .as_deref_mut()
                .map(|t| (&mut t.state, &t.sockets)),
        }
    }

    /// A new processing state for the call's current legs, each with a fresh random stream
    /// identity (RFC 3550 wants random SSRC, sequence and timestamp starts).
    fn new_audio(&self) -> Box<CallAudio> {
        let mut audio = Box::new(CallAudio::new());
        let params = |setup: &LegSetup| {
            LegParams::from_setup(setup, rand::random(), rand::random(), rand::random())
        };
        audio.add_leg(Leg::A, params(&self.legs[0].setup));
        audio.add_leg(Leg::B, params(&self.legs[1].setup));
        if let Some(t) = &self.third {
            audio.add_leg(Leg::C, params(&t.state.setup));
        }
        audio
    }
}

/// Buffers for one batch, allocated once per worker.
struct IoBuffers {
    bufs: Box<[[u8; BUF]; BATCH]>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    /// Indices of the packets of the batch to forward.
    forward: [usize; BATCH],
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    send_addrs: Box<[Option<SockaddrStorage>; BATCH]>,
}

impl IoBuffers {
    fn new() -> IoBuffers {
        IoBuffers {
            bufs: Box::new([[0; BUF]; BATCH]),
            lens: [0; BATCH],
            from: [None; BATCH],
            forward: [0; BATCH],
            // Separate headers for receiving and sending: sendmmsg points the shared
            // headers' address fields at our array, which recvmmsg would otherwise reuse.
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            send_addrs: Box::new([None; BATCH]),
        }
    }
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Receives up to [`BATCH`] datagrams into `io`; returns how many (0 when none are queued).
fn recv_batched(socket: &UdpSocket, io: &mut IoBuffers) -> usize {
    let mut bufs = io.bufs.iter_mut();
    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
        // `bufs` has exactly BATCH elements, one per slot of this array.
        #[allow(clippy::expect_used)]
        let b = bufs.next().expect("one buffer per batch slot");
        [IoSliceMut::new(b)]
    });
    let result = recvmmsg(
        socket.as_raw_fd(),
        &mut io.recv_headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    );
    let mut n = 0;
    if let Ok(msgs) = result {
        for m in msgs {
            // A truncated datagram must not be forwarded cut short; without an address it
            // cannot be latched or answered.
            let ok = !m.flags.contains(MsgFlags::MSG_TRUNC);
            io.lens[n] = m.bytes;
            io.from[n] = if ok {
                m.address.as_ref().and_then(to_socket_addr)
            } else {
                None
            };
            n += 1;
        }
    }
    n
}

/// Receives datagrams one `recv_from` at a time, up to [`BATCH`].
fn recv_per_packet(socket: &UdpSocket, io: &mut IoBuffers) -> usize {
    let mut n = 0;
    while n < BATCH {
        match socket.recv_from(&mut io.bufs[n]) {
            Ok((len, from)) => {
                io.lens[n] = len;
                io.from[n] = (len < BUF).then_some(from);
                n += 1;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    n
}

/// Sends the packets `io.forward[..count]` to `dest`; returns how many went out.
fn send_batch(
    socket: &UdpSocket,
    io: &mut IoBuffers,
    count: usize,
    dest: SocketAddr,
    mode: IoMode,
) -> usize {
    if count == 1 || mode == IoMode::PerPacket {
        let mut sent = 0;
        for k in 0..count {
            let i = io.forward[k];
            if socket.send_to(&io.bufs[i][..io.lens[i]], dest).is_ok() {
                sent += 1;
            }
        }
        return sent;
    }
    let addr = SockaddrStorage::from(dest);
    for a in io.send_addrs[..count].iter_mut() {
        *a = Some(addr);
    }
    let bufs = &io.bufs;
    let lens = &io.lens;
    let forward = &io.forward;
    let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| {
        let i = forward[k];
        [IoSlice::new(&bufs[i][..lens[i]])]
    });
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    match sendmmsg(
        socket.as_raw_fd(),
        &mut io.send_headers,
        iovs[..count].iter(),
        &io.send_addrs[..count],
        no_cmsgs,
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(results) => results.count(),
        Err(_) => 0,
    }
}

/// A worker thread's state.
pub(crate) struct Worker {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: tmpsc::UnboundedSender<MediaEvent>,
    ports: Arc<Mutex<PortAllocator>>,
    config: RelayConfig,
    calls: Vec<Option<Call>>,
    free_slots: Vec<usize>,
    by_id: HashMap<MediaSessionId, usize>,
    io: IoBuffers,
    epoch: Instant,
    recordings: RecordingQueue,
    /// The frame clock, while any call is processed.
    ticker: Option<Ticker>,
    /// Recording frames dropped because the recording thread fell behind.
    dropped_record_frames: u64,
    /// The NTP time (RFC 3550 64-bit format) at `epoch`, for sender reports.
    ntp_at_epoch: u64,
    /// A timerfd that wakes the loop at the frame deadline with microsecond precision
    /// (`epoll_wait`'s own timeout is whole milliseconds, rounded up by mio); `None` if it
    /// could not be created, and the poll timeout does the job coarsely.
    frame_timer: Option<TimerFd>,
    /// The deadline the frame timer is armed for.
    armed_for: Option<Instant>,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        commands: mpsc::Receiver<Command>,
        events: tmpsc::UnboundedSender<MediaEvent>,
        ports: Arc<Mutex<PortAllocator>>,
        config: RelayConfig,
        recordings: RecordingQueue,
    ) -> Worker {
        let frame_timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .and_then(|t| {
            use std::os::fd::AsFd;
            let fd = t.as_fd().as_raw_fd();
            poll.registry()
                .register(&mut SourceFd(&fd), FRAME_TIMER, Interest::READABLE)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
            Ok(t)
        })
        .map_err(|e| tracing::warn!(error = %e, "no frame timer; ticks use the poll timeout"))
        .ok();
        Worker {
            poll,
            commands,
            events,
            ports,
            config,
            calls: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            io: IoBuffers::new(),
            epoch: Instant::now(),
            recordings,
            ticker: None,
            dropped_record_frames: 0,
            ntp_at_epoch: ntp_now(),
            frame_timer,
            armed_for: None,
        }
    }

    /// The event loop; returns on [`Command::Shutdown`] or when the relay handle is gone.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_check = Instant::now() + TICK;
        let mut next_stats = self.config.stats_interval.map(|d| Instant::now() + d);
        loop {
            self.arm_frame_timer();
            let deadline = match &self.ticker {
                // The frame timer wakes the loop on time; the poll timeout is only a net.
                Some(t) if self.frame_timer.is_some() => {
                    (t.poll_timeout() + Duration::from_millis(2)).min(next_check)
                }
                Some(t) => t.poll_timeout().min(next_check),
                None => next_check,
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media worker poll failed; worker stops");
                return;
            }
            let mut readable = 0;
            for ev in events.iter() {
                readable += 1;
                let token = ev.token();
                if token == WAKER {
                    if !self.handle_commands() {
                        return;
                    }
                    continue;
                }
                if token == FRAME_TIMER {
                    if let Some(t) = &self.frame_timer {
                        // Consume the expiry so the next one raises a new edge; EAGAIN
                        // (already consumed) is fine.
                        let _ = t.wait();
                    }
                    self.armed_for = None;
                    continue;
                }
                let slot = token.0 >> SLOT_SHIFT;
                let leg = (token.0 >> 1) & 3;
                if token.0 & 1 == 1 {
                    self.relay_rtcp(slot, leg);
                } else {
                    self.relay_rtp(slot, leg);
                }
            }
            if !self.config.coalesce.is_zero() && readable > 0 && readable < COALESCE_BELOW {
                std::thread::sleep(self.config.coalesce);
            }
            let now = Instant::now();
            if let Some(t) = &mut self.ticker {
                let skipped_before = t.skipped();
                let due = t.handle_timeout(now);
                let skipped = t.skipped() - skipped_before;
                if skipped > 0 {
                    tracing::warn!(skipped, "media worker stalled: processed frames skipped");
                    for audio in self
                        .calls
                        .iter_mut()
                        .flatten()
                        .filter_map(|c| c.audio.as_deref_mut())
                    {
                        audio.skip_frames(skipped);
                    }
                }
                for _ in 0..due {
                    self.tick_audio(now);
                }
            }
            if now >= next_check {
                self.check_timeouts(now);
                next_check = now + TICK;
                if let (Some(at), Some(every)) = (next_stats, self.config.stats_interval)
                    && now >= at
                {
                    for call in self.calls.iter().flatten() {
                        let _ = self.events.send(MediaEvent::Stats {
                            id: call.id,
                            stats: call.stats(),
                        });
                    }
                    next_stats = Some(now + every);
                }
            }
        }
    }

    /// Arms the frame timer for the ticker's next deadline (one system call per frame, not
    /// per wake-up), or disarms it when no call is processed.
    fn arm_frame_timer(&mut self) {
        let Some(timer) = &self.frame_timer else {
            return;
        };
        let want = self.ticker.as_ref().map(Ticker::poll_timeout);
        if want == self.armed_for {
            return;
        }
        let _ = match want {
            Some(at) => {
                // A zero expiry would disarm the timer: a due deadline fires in 10 µs.
                let d = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(10));
                timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(d)),
                    TimerSetTimeFlags::empty(),
                )
            }
            None => timer.unset(),
        };
        self.armed_for = want;
    }

    fn relay_rtp(&mut self, slot: usize, from_leg: usize) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        if from_leg > 1 || call.audio.is_some() {
            self.receive_processed(slot, from_leg);
            return;
        }
        let io = &mut self.io;
        let relatch_after = self.config.relatch_after;
        let mode = self.config.io_mode;
        let [la, lb] = &mut call.legs;
        let (src, dst) = if from_leg == 0 { (la, lb) } else { (lb, la) };
        let src_socket = &call.sockets[from_leg].rtp;
        let dst_socket = &call.sockets[1 - from_leg].rtp;
        loop {
            let n = match mode {
                IoMode::Batched => recv_batched(src_socket, io),
                IoMode::PerPacket => recv_per_packet(src_socket, io),
            };
            if n == 0 {
                return;
            }
            let now = Instant::now();
            // Arrival in 8 kHz units, the clock of every codec this relay negotiates.
            let arrival = (now.saturating_duration_since(self.epoch).as_micros() / 125) as u32;
            let dest = dst.destination();
            let mut out = 0;
            for i in 0..n {
                let Some(from) = io.from[i] else {
                    src.rejected += 1;
                    continue;
                };
                let packet = &io.bufs[i][..io.lens[i]];
                let header = match rtp_header(packet) {
                    Some(h) if src.setup.payload_types.contains(h.payload_type) => h,
                    _ => {
                        src.rejected += 1;
                        continue;
                    }
                };
                match src.accept(from, now, relatch_after) {
                    Acceptance::Known => {}
                    Acceptance::Latched => {
                        let _ = self.events.send(MediaEvent::Latched {
                            id: call.id,
                            leg: Leg::from_index(from_leg),
                            peer: from,
                        });
                    }
                    Acceptance::Foreign => {
                        src.rejected += 1;
                        continue;
                    }
                }
                // Static payload types are the voice codecs; dynamic ones here are
                // telephone-event, whose timestamps stand still during an event.
                src.rx
                    .handle_packet(arrival, &header, packet.len(), header.payload_type < 96);
                src.last_rx = now;
                src.timed_out = false;
                io.forward[out] = i;
                out += 1;
            }
            if out > 0 {
                match dest {
                    Some(d) => {
                        let sent = send_batch(dst_socket, io, out, d, mode);
                        src.forwarded += sent as u64;
                        src.undeliverable += (out - sent) as u64;
                    }
                    None => src.undeliverable += out as u64,
                }
            }
            // A short batch means recvmmsg hit an empty queue; a datagram arriving after
            // that raises a new edge, so there is nothing left to read now.
            if n < BATCH && mode == IoMode::Batched {
                return;
            }
        }
    }

    fn relay_rtcp(&mut self, slot: usize, from_leg: usize) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        if from_leg > 1 || call.audio.is_some() {
            // In processed mode zentrale is each leg's RTP peer: the other leg's reports
            // describe a different stream and are not passed on.
            let buf = &mut self.io.bufs[0];
            if let Some((state, sockets)) = call.leg_mut(from_leg) {
                while let Ok((len, from)) = sockets.rtcp.recv_from(buf) {
                    if len < BUF && is_rtcp(&buf[..len]) && state.accept_rtcp(from) {
                        state.rtcp_packets += 1;
                        let _ = state.rtcp.handle_from_peer(&buf[..len], Instant::now());
                    } else {
                        state.rejected += 1;
                    }
                }
            }
            return;
        }
        let buf = &mut self.io.bufs[0];
        let [la, lb] = &mut call.legs;
        let (src, dst) = if from_leg == 0 { (la, lb) } else { (lb, la) };
        loop {
            let (len, from) = match call.sockets[from_leg].rtcp.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let packet = &buf[..len];
            if len >= BUF || !is_rtcp(packet) || !src.accept_rtcp(from) {
                src.rejected += 1;
                continue;
            }
            src.rtcp_packets += 1;
            // Learn loss, jitter and round trip from the passing reports; an SR going to the
            // other peer is what that peer's LSR will name.
            let now = Instant::now();
            if let Some(ntp) = src.rtcp.handle_from_peer(packet, now) {
                dst.rtcp.note_sr_towards(ntp, now);
            }
            if let Some(d) = dst.rtcp_destination() {
                let _ = call.sockets[1 - from_leg].rtcp.send_to(packet, d);
            }
        }
    }

    /// Receives a processed leg's packets into its call's audio state.
    fn receive_processed(&mut self, slot: usize, from_leg: usize) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        let io = &mut self.io;
        let relatch_after = self.config.relatch_after;
        let mode = self.config.io_mode;
        let id = call.id;
        let leg = Leg::from_index(from_leg);
        let Call {
            legs,
            third,
            sockets,
            audio,
            ..
        } = call;
        let (src, socket) = match from_leg {
            0 | 1 => (&mut legs[from_leg], &sockets[from_leg]),
            _ => match third.as_deref_mut() {
                Some(t) => (&mut t.state, &t.sockets),
                None => return,
            },
        };
        loop {
            let n = match mode {
                IoMode::Batched => recv_batched(&socket.rtp, io),
                IoMode::PerPacket => recv_per_packet(&socket.rtp, io),
            };
            if n == 0 {
                break;
            }
            let now = Instant::now();
            let arrival = (now.saturating_duration_since(self.epoch).as_micros() / 125) as u32;
            for i in 0..n {
                let Some(from) = io.from[i] else {
                    src.rejected += 1;
                    continue;
                };
                let packet = &io.bufs[i][..io.lens[i]];
                let (header, payload) = match rtp_payload(packet) {
                    Some((h, p)) if src.setup.payload_types.contains(h.payload_type) => (h, p),
                    _ => {
                        src.rejected += 1;
                        continue;
                    }
                };
                match src.accept(from, now, relatch_after) {
                    Acceptance::Known => {}
                    Acceptance::Latched => {
                        let _ = self.events.send(MediaEvent::Latched {
                            id,
                            leg,
                            peer: from,
                        });
                    }
                    Acceptance::Foreign => {
                        src.rejected += 1;
                        continue;
                    }
                }
                src.rx
                    .handle_packet(arrival, &header, packet.len(), header.payload_type < 96);
                src.last_rx = now;
                src.timed_out = false;
                if let Some(a) = audio.as_deref_mut() {
                    a.handle_rtp(now, leg, &header, payload);
                }
            }
            if n < BATCH && mode == IoMode::Batched {
                break;
            }
        }
        if let Some(a) = audio.as_deref_mut() {
            while let Some(ev) = a.poll_event() {
                let _ = self.events.send(media_event(id, ev));
            }
        }
    }

    /// One 20 ms frame for every processed call.
    fn tick_audio(&mut self, now: Instant) {
        let mut processed = 0;
        for call in self.calls.iter_mut().flatten() {
            let id = call.id;
            let Some(mut audio) = call.audio.take() else {
                continue;
            };
            processed += 1;
            audio.produce_frame(now);
            for i in 0..3 {
                let Some(packet) = audio.packet(Leg::from_index(i)) else {
                    continue;
                };
                let Some((state, sockets)) = call.leg_mut(i) else {
                    continue;
                };
                match state.destination() {
                    Some(d) if sockets.rtp.send_to(packet, d).is_ok() => state.sent += 1,
                    _ => state.undeliverable += 1,
                }
            }
            if let Some((left, right)) = audio.recorded_frame()
                && call.recording
                && !self.recordings.send(RecordMsg::Frame {
                    id,
                    left: *left,
                    right: *right,
                })
            {
                if self.dropped_record_frames.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.dropped_record_frames + 1,
                        "recording thread behind: recording frames dropped"
                    );
                }
                self.dropped_record_frames += 1;
            }
            while let Some(ev) = audio.poll_event() {
                let _ = self.events.send(media_event(id, ev));
            }
            if !audio.is_plain() {
                call.audio = Some(audio);
            }
        }
        if processed == 0 {
            self.ticker = None;
        }
    }

    /// Applies an audio command, entering processed mode if it needs the audio.
    fn audio_command(&mut self, id: MediaSessionId, cmd: AudioCommand) {
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        if call.audio.is_none() {
            // Commands that only undo processing change nothing on a plain bridge.
            let undoes = matches!(
                cmd,
                AudioCommand::Reset
                    | AudioCommand::Stop { .. }
                    | AudioCommand::StopRecording
                    | AudioCommand::PauseRecording
                    | AudioCommand::ResumeRecording
                    | AudioCommand::DetectDtmf { on: false, .. }
            );
            if undoes {
                return;
            }
            call.audio = Some(call.new_audio());
        }
        match &cmd {
            AudioCommand::Record { path, mono } => {
                if call.recording {
                    self.recordings.send_control(RecordMsg::Stop(id));
                }
                self.recordings.send_control(RecordMsg::Start {
                    id,
                    path: path.clone(),
                    mono: *mono,
                });
                call.recording = true;
            }
            AudioCommand::StopRecording if call.recording => {
                self.recordings.send_control(RecordMsg::Stop(id));
                call.recording = false;
            }
            AudioCommand::PauseRecording if call.recording => {
                self.recordings.send_control(RecordMsg::Pause(id));
            }
            AudioCommand::ResumeRecording if call.recording => {
                self.recordings.send_control(RecordMsg::Resume(id));
            }
            _ => {}
        }
        if let Some(audio) = call.audio.as_deref_mut() {
            audio.handle_command(&cmd);
            if audio.is_plain() {
                call.audio = None;
            }
        }
        if call.audio.is_some() && self.ticker.is_none() {
            self.ticker = Some(Ticker::new(Instant::now() + FRAME));
        }
    }

    /// Binds the third leg into a call.
    fn add_third(
        &mut self,
        id: MediaSessionId,
        port: PortPair,
        sockets: (StdUdpSocket, StdUdpSocket),
        setup: LegSetup,
    ) {
        let slot = match self.by_id.get(&id) {
            Some(&slot) if matches!(self.calls.get(slot), Some(Some(_))) => slot,
            _ => {
                drop(sockets);
                self.release_ports(&[port]);
                return;
            }
        };
        self.remove_third(id);
        let (rtp, rtcp) = sockets;
        let mut s = LegSockets {
            rtp: UdpSocket::from_std(rtp),
            rtcp: UdpSocket::from_std(rtcp),
        };
        let registry = self.poll.registry();
        let failed = registry
            .register(&mut s.rtp, token(slot, 2, false), Interest::READABLE)
            .is_err()
            | registry
                .register(&mut s.rtcp, token(slot, 2, true), Interest::READABLE)
                .is_err();
        if failed {
            tracing::error!(
                ?id,
                "could not register the third leg's sockets; it has no media"
            );
        }
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        call.third = Some(Box::new(ThirdLeg {
            port,
            sockets: s,
            state: LegState::new(setup, Instant::now()),
        }));
        match call.audio.as_deref_mut() {
            Some(audio) => audio.add_leg(
                Leg::C,
                LegParams::from_setup(&setup, rand::random(), rand::random(), rand::random()),
            ),
            None => call.audio = Some(call.new_audio()),
        }
        if self.ticker.is_none() {
            self.ticker = Some(Ticker::new(Instant::now() + FRAME));
        }
    }

    /// Removes the third leg of a call, if any, and frees its ports.
    fn remove_third(&mut self, id: MediaSessionId) {
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        let Some(mut third) = call.third.take() else {
            return;
        };
        if let Some(audio) = call.audio.as_deref_mut() {
            audio.remove_leg(Leg::C);
            if audio.is_plain() {
                call.audio = None;
            }
        }
        let _ = self.poll.registry().deregister(&mut third.sockets.rtp);
        let _ = self.poll.registry().deregister(&mut third.sockets.rtcp);
        let port = third.port;
        drop(third);
        self.release_ports(&[port]);
    }

    fn release_ports(&self, ports: &[PortPair]) {
        // Poisoning cannot leave the allocator half-updated (see MediaRelay::lock_ports).
        let mut pool = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        for &p in ports {
            if let Err(e) = pool.release(p) {
                tracing::error!(error = %e, "port release failed");
            }
        }
    }

    /// Sends the RTCP reports that are due for processed calls: to each leg an SR about what
    /// zentrale sends it (an RR before anything was sent) with a report block about what it
    /// receives from it. Plain bridges pass the peers' own reports through instead.
    fn send_reports(&mut self, now: Instant) {
        let interval = self.config.rtcp_interval;
        let ntp = self
            .ntp_at_epoch
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.epoch)));
        let mut buf = [0u8; 128];
        for call in self.calls.iter_mut().flatten() {
            let Some(audio) = call.audio.as_deref() else {
                continue;
            };
            let sent_all = [Leg::A, Leg::B, Leg::C].map(|l| audio.sent(l));
            for (i, sent) in sent_all.into_iter().enumerate() {
                let Some(sent) = sent else {
                    continue;
                };
                let Some((state, sockets)) = call.leg_mut(i) else {
                    continue;
                };
                let due = *state.next_report.get_or_insert(now + interval);
                if now < due {
                    continue;
                }
                state.next_report = Some(now + interval);
                let (lsr, dlsr) = state.rtcp.lsr_dlsr(now);
                let block = ReportBlock::from_stats(&mut state.rx, lsr, dlsr);
                let sender = (sent.packets > 0).then_some(SenderInfo {
                    ssrc: sent.ssrc,
                    ntp,
                    rtp_timestamp: sent.timestamp,
                    packets: sent.packets,
                    octets: sent.octets,
                });
                let n = write_report(&mut buf, sent.ssrc, sender.as_ref(), block.as_ref());
                if let Some(d) = state.rtcp_destination()
                    && sockets.rtcp.send_to(&buf[..n], d).is_ok()
                    && sender.is_some()
                {
                    state.rtcp.note_sr_towards(ntp, now);
                }
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        self.send_reports(now);
        for call in self.calls.iter_mut().flatten() {
            let third = call.third.as_deref_mut().map(|t| &mut t.state);
            for (i, leg) in call.legs.iter_mut().chain(third).enumerate() {
                if leg.check_timeout(now, self.config.rtp_timeout) {
                    let _ = self.events.send(MediaEvent::RtpTimeout {
                        id: call.id,
                        leg: Leg::from_index(i),
                    });
                }
            }
        }
    }

    /// Applies queued commands; false when the worker must stop.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(call)) => self.add(*call),
                Ok(Command::Update { id, leg, setup }) => {
                    if let Some(&slot) = self.by_id.get(&id)
                        && let Some(Some(call)) = self.calls.get_mut(slot)
                    {
                        if let Some((l, _)) = call.leg_mut(leg.index()) {
                            l.update(setup, Instant::now());
                        }
                        if let Some(audio) = call.audio.as_deref_mut() {
                            audio.update_leg(leg, &setup);
                        }
                    }
                }
                Ok(Command::Remove(id)) => self.remove(id),
                Ok(Command::Audio(id, cmd)) => self.audio_command(id, cmd),
                Ok(Command::AddLeg {
                    id,
                    port,
                    sockets,
                    setup,
                }) => self.add_third(id, port, sockets, setup),
                Ok(Command::RemoveLeg(id, Leg::C)) => self.remove_third(id),
                Ok(Command::RemoveLeg(id, leg)) => {
                    tracing::warn!(?id, ?leg, "legs A and B end with the call, not alone");
                }
                Ok(Command::Stats(id, reply)) => {
                    let stats = self
                        .by_id
                        .get(&id)
                        .and_then(|&slot| self.calls.get(slot))
                        .and_then(|c| c.as_ref())
                        .map(Call::stats);
                    let _ = reply.send(stats);
                }
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                    for id in self.by_id.keys().copied().collect::<Vec<_>>() {
                        self.remove(id);
                    }
                    return false;
                }
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, new: NewCall) {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let now = Instant::now();
        let [(rtp_a, rtcp_a), (rtp_b, rtcp_b)] = new.sockets;
        let mut sockets = [
            LegSockets {
                rtp: UdpSocket::from_std(rtp_a),
                rtcp: UdpSocket::from_std(rtcp_a),
            },
            LegSockets {
                rtp: UdpSocket::from_std(rtp_b),
                rtcp: UdpSocket::from_std(rtcp_b),
            },
        ];
        let registry = self.poll.registry();
        let mut failed = false;
        for (leg, s) in sockets.iter_mut().enumerate() {
            failed |= registry
                .register(&mut s.rtp, token(slot, leg, false), Interest::READABLE)
                .is_err();
            failed |= registry
                .register(&mut s.rtcp, token(slot, leg, true), Interest::READABLE)
                .is_err();
        }
        if failed {
            tracing::error!(id = ?new.id, "could not register media sockets; call has no media");
        }
        self.calls[slot] = Some(Call {
            id: new.id,
            ports: new.ports,
            sockets,
            legs: [
                LegState::new(new.setups[0], now),
                LegState::new(new.setups[1], now),
            ],
            third: None,
            audio: None,
            recording: false,
        });
        self.by_id.insert(new.id, slot);
    }

    fn remove(&mut self, id: MediaSessionId) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        for s in call
            .sockets
            .iter_mut()
            .chain(call.third.as_deref_mut().map(|t| &mut t.sockets))
        {
            let _ = self.poll.registry().deregister(&mut s.rtp);
            let _ = self.poll.registry().deregister(&mut s.rtcp);
        }
        if call.recording {
            self.recordings.send_control(RecordMsg::Stop(id));
        }
        let stats = call.stats();
        let ports = call.ports;
        let third_port = call.third.as_ref().map(|t| t.port);
        // Close the sockets before the ports return to the pool, so a new call given the
        // same ports can bind them.
        drop(call);
        self.release_ports(&ports);
        if let Some(p) = third_port {
            self.release_ports(&[p]);
        }
        let _ = self.events.send(MediaEvent::Removed { id, stats });
    }
}

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn duration_to_ntp(d: Duration) -> u64 {
    (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// The wall clock as a 64-bit NTP timestamp, read once per worker: later times are derived
/// from the monotonic clock so a wall-clock step cannot make reports go backwards.
fn ntp_now() -> u64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    duration_to_ntp(since_unix).wrapping_add(NTP_UNIX_OFFSET << 32)
}

fn media_event(id: MediaSessionId, ev: AudioEvent) -> MediaEvent {
    match ev {
        AudioEvent::Dtmf { leg, digit } => MediaEvent::Dtmf { id, leg, digit },
        AudioEvent::PlayDone { leg, tag } => MediaEvent::PlayDone { id, leg, tag },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::media::rtp::PayloadTypes;

    fn leg(now: Instant) -> LegState {
        LegState::new(
            LegSetup {
                peer: Some("10.0.0.1:4000".parse().unwrap()),
                rtcp_peer: None,
                payload_types: PayloadTypes::of(&[0]),
                telephone_event: None,
                codec: None,
            },
            now,
        )
    }

    #[test]
    fn first_packet_latches_and_overrides_the_signalled_address() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        assert_eq!(l.destination(), Some("10.0.0.1:4000".parse().unwrap()));
        assert_eq!(l.rtcp_destination(), Some("10.0.0.1:4001".parse().unwrap()));
        let nat: SocketAddr = "198.51.100.7:61000".parse().unwrap();
        assert_eq!(
            l.accept(nat, t0, Duration::from_millis(500)),
            Acceptance::Latched
        );
        assert_eq!(l.destination(), Some(nat));
        assert_eq!(
            l.accept(nat, t0, Duration::from_millis(500)),
            Acceptance::Known
        );
    }

    #[test]
    fn another_source_relatches_only_after_silence() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let a: SocketAddr = "198.51.100.7:61000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:61002".parse().unwrap();
        let gap = Duration::from_millis(500);
        l.accept(a, t0, gap);
        l.last_rx = t0;
        assert_eq!(
            l.accept(b, t0 + Duration::from_millis(499), gap),
            Acceptance::Foreign
        );
        assert_eq!(l.destination(), Some(a));
        assert_eq!(l.accept(b, t0 + gap, gap), Acceptance::Latched);
        assert_eq!(l.destination(), Some(b));
    }

    #[test]
    fn update_forgets_the_latch() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.accept("198.51.100.7:61000".parse().unwrap(), t0, Duration::ZERO);
        let new = LegSetup {
            peer: Some("10.0.0.2:5000".parse().unwrap()),
            rtcp_peer: Some("10.0.0.2:5009".parse().unwrap()),
            payload_types: PayloadTypes::of(&[8]),
            telephone_event: None,
            codec: None,
        };
        l.update(new, t0);
        assert_eq!(l.destination(), new.peer);
        assert_eq!(l.rtcp_destination(), new.rtcp_peer);
    }

    #[test]
    fn rtcp_latches_only_to_the_rtp_host() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.accept("198.51.100.7:61000".parse().unwrap(), t0, Duration::ZERO);
        assert!(!l.accept_rtcp("203.0.113.9:61001".parse().unwrap()));
        assert!(l.accept_rtcp("198.51.100.7:62001".parse().unwrap()));
        assert_eq!(
            l.rtcp_destination(),
            Some("198.51.100.7:62001".parse().unwrap())
        );
    }

    #[test]
    fn timeout_fires_once_per_silence() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let timeout = Duration::from_secs(5);
        assert!(!l.check_timeout(t0 + Duration::from_secs(4), timeout));
        assert!(l.check_timeout(t0 + Duration::from_secs(5), timeout));
        assert!(!l.check_timeout(t0 + Duration::from_secs(9), timeout));
        // Packets resume, then stop again.
        l.last_rx = t0 + Duration::from_secs(10);
        l.timed_out = false;
        assert!(l.check_timeout(t0 + Duration::from_secs(15), timeout));
    }
}
