//! A relay worker: one OS thread owning the sockets of a share of the calls, driven by an
//! epoll loop (mio), forwarding RTP between the two legs of each call.
//!
//! Why threads and not a tokio task per socket: at 1,600 calls there are 6,400 sockets and
//! 160,000 packets/s; a task wake-up per packet costs more than the forward itself. A worker
//! drains each readable socket with one `recvmmsg` into buffers allocated once at start, looks
//! at the RTP header in place, and sends the same bytes on with `sendmmsg` (or `send_to` for
//! a single packet): no allocation, no lock and no copy per packet. Control commands arrive on
//! a channel with a `mio::Waker`; the port allocator's lock is taken only when a call ends.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::sync::mpsc as tmpsc;

use super::ports::{PortAllocator, PortPair};
use super::relay::{
    CallStats, Command, IoMode, Leg, LegSetup, LegStats, MediaEvent, MediaSessionId, RelayConfig,
};
use super::rtp::{ReceiveStats, is_rtcp, rtp_header};

/// The token of the command waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
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
        }
    }
}

struct LegSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

struct Call {
    id: MediaSessionId,
    ports: [PortPair; 2],
    sockets: [LegSockets; 2],
    legs: [LegState; 2],
}

impl Call {
    fn stats(&self) -> CallStats {
        CallStats {
            leg_a: self.legs[0].stats(),
            leg_b: self.legs[1].stats(),
        }
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
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        commands: mpsc::Receiver<Command>,
        events: tmpsc::UnboundedSender<MediaEvent>,
        ports: Arc<Mutex<PortAllocator>>,
        config: RelayConfig,
    ) -> Worker {
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
        }
    }

    /// The event loop; returns on [`Command::Shutdown`] or when the relay handle is gone.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_check = Instant::now() + TICK;
        let mut next_stats = self.config.stats_interval.map(|d| Instant::now() + d);
        loop {
            let wait = next_check.saturating_duration_since(Instant::now());
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
                let slot = token.0 >> 2;
                let leg = (token.0 >> 1) & 1;
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

    fn relay_rtp(&mut self, slot: usize, from_leg: usize) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
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
            if let Some(d) = dst.rtcp_destination() {
                let _ = call.sockets[1 - from_leg].rtcp.send_to(packet, d);
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        for call in self.calls.iter_mut().flatten() {
            for (i, leg) in call.legs.iter_mut().enumerate() {
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
                        && let Some(l) = call.legs.get_mut(leg.index())
                    {
                        l.update(setup, Instant::now());
                    }
                }
                Ok(Command::Remove(id)) => self.remove(id),
                // PLACEHOLDER (being implemented now, see media::control): processed mode.
                Ok(Command::Audio(id, cmd)) => {
                    tracing::warn!(?id, ?cmd, "audio processing not implemented yet");
                }
                Ok(Command::AddLeg {
                    id, port, sockets, ..
                }) => {
                    tracing::warn!(?id, "third leg not implemented yet");
                    drop(sockets);
                    let _ = self.ports.lock().map(|mut p| p.release(port));
                }
                Ok(Command::RemoveLeg(..)) => {}
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
            let base = (slot << 2) | (leg << 1);
            failed |= registry
                .register(&mut s.rtp, Token(base), Interest::READABLE)
                .is_err();
            failed |= registry
                .register(&mut s.rtcp, Token(base | 1), Interest::READABLE)
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
        for s in &mut call.sockets {
            let _ = self.poll.registry().deregister(&mut s.rtp);
            let _ = self.poll.registry().deregister(&mut s.rtcp);
        }
        let stats = call.stats();
        let ports = call.ports;
        // Close the sockets before the ports return to the pool, so a new call given the
        // same ports can bind them.
        drop(call);
        {
            // Poisoning cannot leave the allocator half-updated (see MediaRelay::lock_ports).
            let mut pool = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            for p in ports {
                if let Err(e) = pool.release(p) {
                    tracing::error!(error = %e, "port release failed");
                }
            }
        }
        let _ = self.events.send(MediaEvent::Removed { id, stats });
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
