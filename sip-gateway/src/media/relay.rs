//! The anchored RTP relay's control side: configuration, the handle async code uses, the
//! commands it sends to the workers and the events that come back.
//!
//! The packet path lives in `super::worker`: a few OS threads, each owning the sockets of
//! a share of the calls and an epoll loop. Async code never touches those sockets; it talks
//! to the workers over channels (a `mio::Waker` wakes a worker for a command) so that the
//! per-packet path takes no lock and no allocation. Sockets are bound here, in the caller's
//! thread, so that a bind failure is reported synchronously to the B2BUA that asked.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc as tmpsc, oneshot};

use super::control::AudioCommand;
use super::ports::{PortAllocator, PortError, PortPair};
use super::recording;
use super::rtp::PayloadTypes;
use super::worker::{self, Worker};
use crate::audio::g711::Law;
use crate::sdp::{Codec, SessionDescription};

/// Identifies one bridged call in the relay. Process-local: media stays on the node that
/// holds the call, so a counter is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaSessionId(pub u64);

/// One side of a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The first leg (by convention the caller's).
    A,
    /// The second leg (by convention the agent's).
    B,
    /// A third party added with [`MediaRelay::add_leg`]: a supervisor listening, whispering
    /// or barging, or a consultation call during an attended transfer.
    C,
}

impl Leg {
    pub(crate) fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
            Leg::C => 2,
        }
    }

    pub(crate) fn from_index(i: usize) -> Leg {
        match i {
            0 => Leg::A,
            1 => Leg::B,
            _ => Leg::C,
        }
    }
}

/// How a worker moves datagrams; both are kept so the benchmark can compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// `recvmmsg`/`sendmmsg` through nix: one system call per readable socket and per
    /// forwarded batch.
    #[default]
    Batched,
    /// One `recv_from`/`send_to` per packet, plus the final `EAGAIN` read per socket.
    PerPacket,
}

/// Relay configuration (builder-style setters on a `Clone` struct).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The address the relay's sockets bind to.
    pub bind_address: IpAddr,
    /// First port of the RTP range (inclusive).
    pub port_start: u16,
    /// Last port of the RTP range (inclusive).
    pub port_end: u16,
    /// Worker threads; each owns a share of the calls.
    pub workers: usize,
    /// No RTP on a leg for this long raises [`MediaEvent::RtpTimeout`].
    pub rtp_timeout: Duration,
    /// A latched leg accepts a new source only after its latched source has been silent
    /// this long (a NAT rebinding or a phone restarting its stream).
    pub relatch_after: Duration,
    /// The datagram I/O technique.
    pub io_mode: IoMode,
    /// When set, every call's counters are reported this often as [`MediaEvent::Stats`]
    /// (for live quality views); `None` reports them only on request and on removal.
    pub stats_interval: Option<Duration>,
    /// Interrupt-coalescing for the workers: after a wake-up that found only a few readable
    /// sockets, a worker sleeps this long before polling again, so the next wake-up finds
    /// more packets and the per-wake-up cost (epoll, context switch) is shared. Adds up to
    /// this much delay to a packet; zero (the default) turns it off.
    pub coalesce: Duration,
    /// How often zentrale sends its own RTCP report to each leg of a processed call (RFC 3550
    /// suggests 5 s). Plain bridges pass the peers' reports through instead.
    pub rtcp_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_start: 30000,
            port_end: 39999,
            workers: 1,
            rtp_timeout: Duration::from_secs(30),
            relatch_after: Duration::from_millis(500),
            io_mode: IoMode::Batched,
            stats_interval: None,
            coalesce: Duration::ZERO,
            rtcp_interval: Duration::from_secs(5),
        }
    }
}

impl RelayConfig {
    /// Sets the bind address.
    pub fn bind_address(mut self, a: IpAddr) -> Self {
        self.bind_address = a;
        self
    }
    /// Sets the RTP port range (inclusive).
    pub fn ports(mut self, start: u16, end: u16) -> Self {
        self.port_start = start;
        self.port_end = end;
        self
    }
    /// Sets the number of worker threads (at least one is used).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Sets the RTP timeout.
    pub fn rtp_timeout(mut self, d: Duration) -> Self {
        self.rtp_timeout = d;
        self
    }
    /// Sets the silence after which a latched leg may re-latch.
    pub fn relatch_after(mut self, d: Duration) -> Self {
        self.relatch_after = d;
        self
    }
    /// Sets the I/O technique.
    pub fn io_mode(mut self, m: IoMode) -> Self {
        self.io_mode = m;
        self
    }
    /// Sets the coalescing delay (see [`RelayConfig::coalesce`]).
    pub fn coalesce(mut self, d: Duration) -> Self {
        self.coalesce = d;
        self
    }
    /// Sets the RTCP report interval of processed calls.
    pub fn rtcp_interval(mut self, d: Duration) -> Self {
        self.rtcp_interval = d;
        self
    }
    /// Sets the periodic stats report interval.
    pub fn stats_interval(mut self, every: Option<Duration>) -> Self {
        self.stats_interval = every;
        self
    }
}

/// What the signalling knows about one leg's peer (from its SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSetup {
    /// Where the peer said it receives RTP; `None` until known or while on hold. Latching
    /// overrides it with the address packets actually come from.
    pub peer: Option<SocketAddr>,
    /// Where the peer receives RTCP; `None` means the RTP address with port + 1.
    pub rtcp_peer: Option<SocketAddr>,
    /// Payload types negotiated for this leg; only these may latch or be forwarded.
    pub payload_types: PayloadTypes,
    /// The telephone-event (RFC 4733) payload type, if negotiated: its packets carry DTMF.
    pub telephone_event: Option<u8>,
    /// The voice codec the peer listed first; what zentrale sends in processed mode until the
    /// peer's own packets show which one it uses. `None`: PCMU if negotiated, else PCMA.
    pub codec: Option<Law>,
}

impl LegSetup {
    /// The setup for a leg described by `sdp` (an offer or answer from that leg's peer):
    /// its first relayed audio stream's RTP and RTCP addresses, and the payload types of it
    /// that we relay (PCMU, PCMA, telephone-event). `None` when it has no such stream.
    pub fn from_sdp(sdp: &SessionDescription) -> Option<LegSetup> {
        let index = sdp.audio_index()?;
        let media = &sdp.media[index];
        let relayed: Vec<u8> = media
            .payload_types()
            .filter(|&pt| media.codec_of(pt).is_some())
            .collect();
        let codec = relayed.iter().find_map(|&pt| match media.codec_of(pt) {
            Some(Codec::Pcmu) => Some(Law::Mu),
            Some(Codec::Pcma) => Some(Law::A),
            _ => None,
        });
        let telephone_event = relayed
            .iter()
            .copied()
            .find(|&pt| media.codec_of(pt) == Some(Codec::TelephoneEvent));
        Some(LegSetup {
            peer: sdp.rtp_destination(index),
            rtcp_peer: sdp.rtcp_destination(index),
            payload_types: PayloadTypes::of(&relayed),
            telephone_event,
            codec,
        })
    }

    /// A setup from an address and payload types alone (a leg whose SDP is not known yet):
    /// the first dynamic payload type counts as telephone-event (the only dynamic one the relay
    /// negotiates) and the codec is chosen by [`LegSetup::send_codec`].
    pub fn new(peer: Option<SocketAddr>, payload_types: PayloadTypes) -> LegSetup {
        LegSetup {
            peer,
            rtcp_peer: None,
            payload_types,
            telephone_event: (96..128).find(|&pt| payload_types.contains(pt)),
            codec: None,
        }
    }

    /// The law zentrale sends to this leg in processed mode: [`LegSetup::codec`], else PCMU
    /// if negotiated, else PCMA if negotiated, else PCMU (what every SIP phone decodes).
    pub fn send_codec(&self) -> Law {
        self.codec.unwrap_or(
            if self.payload_types.contains(8) && !self.payload_types.contains(0) {
                Law::A
            } else {
                Law::Mu
            },
        )
    }
}

/// What [`MediaRelay::add_call`] reserved: the relay's ports to write into each leg's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallMedia {
    /// The call's id in the relay.
    pub id: MediaSessionId,
    /// The relay address (the one bound; write the public one into SDP when behind NAT).
    pub address: IpAddr,
    /// Port pair facing leg A (its peer sends here).
    pub leg_a: PortPair,
    /// Port pair facing leg B.
    pub leg_b: PortPair,
}

/// Counters of one leg, as seen by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    /// RTP packets received from this leg's peer and accepted.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Packets lost on the way from the peer to us, from sequence gaps (RFC 3550).
    pub lost: i64,
    /// Interarrival jitter in 8 kHz timestamp units (RFC 3550 A.8).
    pub jitter: u32,
    /// Packets forwarded to the other leg.
    pub forwarded: u64,
    /// Datagrams dropped: not RTP, a payload type not negotiated, or a foreign source.
    pub rejected: u64,
    /// Packets dropped because the other leg had no destination yet or sending failed.
    pub undeliverable: u64,
    /// RTCP packets passed through from this leg to the other.
    pub rtcp_packets: u64,
    /// The peer address latched, if any.
    pub latched: Option<SocketAddr>,
    /// Round-trip time to this leg's peer from the last RTCP report that allowed computing it
    /// (RFC 3550 6.4.1: arrival − LSR − DLSR).
    pub rtt_ms: Option<u32>,
    /// The E-model MOS estimate ×100 (e.g. 441 = 4.41) of what this leg's peer sends us, from
    /// loss, jitter and RTT (see [`crate::audio::quality`]); 0 before any packet.
    pub mos_x100: u16,
    /// Loss reported by the peer in its RTCP receiver reports about what it receives from us
    /// (cumulative packets lost), if it sent any.
    pub remote_lost: Option<i64>,
    /// Interarrival jitter (8 kHz units) reported by the peer about what it receives.
    pub remote_jitter: Option<u32>,
}

/// Counters of both legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallStats {
    /// Leg A.
    pub leg_a: LegStats,
    /// Leg B.
    pub leg_b: LegStats,
    /// The third leg while it exists (see [`MediaRelay::add_leg`]).
    pub leg_c: Option<LegStats>,
}

/// What the relay reports to the B2BUA.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A leg latched (or re-latched) to the source its packets really come from.
    Latched {
        /// The call.
        id: MediaSessionId,
        /// The leg.
        leg: Leg,
        /// The learned peer address.
        peer: SocketAddr,
    },
    /// No RTP from this leg for the configured timeout: the call is probably dead. Raised
    /// once per silence; raised again only after packets resumed and stopped again.
    RtpTimeout {
        /// The call.
        id: MediaSessionId,
        /// The silent leg.
        leg: Leg,
    },
    /// Periodic counters of a call (see [`RelayConfig::stats_interval`]).
    Stats {
        /// The call.
        id: MediaSessionId,
        /// Counters so far.
        stats: CallStats,
    },
    /// A DTMF digit from a leg with detection on (see [`AudioCommand::DetectDtmf`]), reported
    /// once per key press.
    Dtmf {
        /// The call.
        id: MediaSessionId,
        /// The leg that pressed it.
        leg: Leg,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// The prompts of an [`AudioCommand::Play`] without music have been played to the end
    /// (not reported when stopped or replaced).
    PlayDone {
        /// The call.
        id: MediaSessionId,
        /// The leg.
        leg: Leg,
        /// The tag of the play.
        tag: u64,
    },
    /// A recording was finished (stopped, or the call removed) and its file is complete.
    Recorded {
        /// The call.
        id: MediaSessionId,
        /// The file.
        path: std::path::PathBuf,
        /// Length and pauses, for the CDR.
        summary: crate::audio::record::RecordingSummary,
    },
    /// A recording could not be created or written; it has stopped (the call goes on).
    RecordingFailed {
        /// The call.
        id: MediaSessionId,
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The call was removed; its ports are free again. A recording still running is finished
    /// by the recording thread and its [`MediaEvent::Recorded`] may come just after this.
    Removed {
        /// The call.
        id: MediaSessionId,
        /// Final counters.
        stats: CallStats,
    },
}

/// Why a relay operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The port range is unusable or exhausted.
    #[error(transparent)]
    Ports(#[from] PortError),
    /// Binding or configuring a socket, or starting a worker, failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The relay's workers have stopped.
    #[error("the media relay is shut down")]
    Stopped,
    /// No call with this id.
    #[error("unknown media session {0:?}")]
    UnknownSession(MediaSessionId),
}

/// A command for a worker.
pub(crate) enum Command {
    Add(Box<worker::NewCall>),
    Update {
        id: MediaSessionId,
        leg: Leg,
        setup: LegSetup,
    },
    Remove(MediaSessionId),
    Audio(MediaSessionId, AudioCommand),
    AddLeg {
        id: MediaSessionId,
        port: PortPair,
        sockets: (UdpSocket, UdpSocket),
        setup: LegSetup,
    },
    RemoveLeg(MediaSessionId, Leg),
    Stats(MediaSessionId, oneshot::Sender<Option<CallStats>>),
    Shutdown,
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The relay: cheap to share behind an `Arc`; all methods take `&self`.
pub struct MediaRelay {
    config: RelayConfig,
    ports: Arc<Mutex<PortAllocator>>,
    workers: Vec<WorkerHandle>,
    next_id: AtomicU64,
    recordings: recording::RecordingQueue,
    recorder: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MediaRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRelay")
            .field("config", &self.config)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl MediaRelay {
    /// Starts the worker threads (named `media-worker-<n>`). Events arrive on the returned
    /// receiver; if it is dropped, events are discarded.
    pub fn start(
        config: RelayConfig,
    ) -> Result<(MediaRelay, tmpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let ports = Arc::new(Mutex::new(PortAllocator::new(
            config.port_start,
            config.port_end,
        )?));
        let (events_tx, events_rx) = tmpsc::unbounded_channel();
        let (recordings, recorder) = recording::start(events_tx.clone())?;
        let mut workers = Vec::new();
        for n in 0..config.workers.max(1) {
            let (tx, rx) = mpsc::channel();
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), worker::WAKER)?);
            let (events, pool, cfg) = (events_tx.clone(), Arc::clone(&ports), config.clone());
            let rec = recordings.clone();
            // The worker is built on its own thread: nix's batch headers hold raw pointers
            // and are not `Send`.
            let thread = std::thread::Builder::new()
                .name(format!("media-worker-{n}"))
                .spawn(move || Worker::new(poll, rx, events, pool, cfg, rec).run())?;
            workers.push(WorkerHandle {
                commands: tx,
                waker,
                thread: Some(thread),
            });
        }
        Ok((
            MediaRelay {
                config,
                ports,
                workers,
                next_id: AtomicU64::new(1),
                recordings,
                recorder: Some(recorder),
            },
            events_rx,
        ))
    }

    fn worker_for(&self, id: MediaSessionId) -> &WorkerHandle {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        // `workers` is never empty: start() creates at least one.
        &self.workers[(h.finish() % self.workers.len() as u64) as usize]
    }

    fn send(&self, id: MediaSessionId, cmd: Command) -> Result<(), MediaError> {
        let w = self.worker_for(id);
        w.commands.send(cmd).map_err(|_| MediaError::Stopped)?;
        w.waker.wake()?;
        Ok(())
    }

    fn bind_pair(&self) -> Result<(PortPair, UdpSocket, UdpSocket), MediaError> {
        let mut last_err = None;
        // A port of the range may be held by another program; try a few pairs before
        // giving up, returning each failed pair to the back of the rotation.
        for _ in 0..16 {
            let pair = self.lock_ports().allocate()?;
            let bind = |port| {
                let s = UdpSocket::bind(SocketAddr::new(self.config.bind_address, port))?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            };
            match (bind(pair.rtp), bind(pair.rtcp())) {
                (Ok(rtp), Ok(rtcp)) => return Ok((pair, rtp, rtcp)),
                (Err(e), _) | (_, Err(e)) => {
                    let _ = self.lock_ports().release(pair);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.map_or(MediaError::Ports(PortError::Exhausted), MediaError::Io))
    }

    fn lock_ports(&self) -> std::sync::MutexGuard<'_, PortAllocator> {
        // The allocator has no invariant a panicking holder could break halfway
        // (allocate/release are single pushes and pops), so a poisoned lock is still usable.
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves ports for a new bridged call and starts relaying between the legs.
    pub fn add_call(&self, a: LegSetup, b: LegSetup) -> Result<CallMedia, MediaError> {
        let id = MediaSessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (pa, rtp_a, rtcp_a) = self.bind_pair()?;
        let (pb, rtp_b, rtcp_b) = match self.bind_pair() {
            Ok(x) => x,
            Err(e) => {
                drop((rtp_a, rtcp_a));
                let _ = self.lock_ports().release(pa);
                return Err(e);
            }
        };
        let call = worker::NewCall {
            id,
            ports: [pa, pb],
            sockets: [(rtp_a, rtcp_a), (rtp_b, rtcp_b)],
            setups: [a, b],
        };
        self.send(id, Command::Add(Box::new(call)))?;
        Ok(CallMedia {
            id,
            address: self.config.bind_address,
            leg_a: pa,
            leg_b: pb,
        })
    }

    /// Updates a leg after a re-INVITE (new address, hold, new codecs). The leg forgets its
    /// latched source and latches again.
    pub fn update_leg(
        &self,
        id: MediaSessionId,
        leg: Leg,
        setup: LegSetup,
    ) -> Result<(), MediaError> {
        self.send(id, Command::Update { id, leg, setup })
    }

    /// Stops relaying, closes the sockets and frees the ports; [`MediaEvent::Removed`]
    /// follows with the final counters.
    pub fn remove_call(&self, id: MediaSessionId) -> Result<(), MediaError> {
        self.send(id, Command::Remove(id))
    }

    /// Changes what a call's legs hear and what is played, detected or recorded (see
    /// [`AudioCommand`]).
    pub fn audio(&self, id: MediaSessionId, cmd: AudioCommand) -> Result<(), MediaError> {
        self.send(id, Command::Audio(id, cmd))
    }

    /// Adds the third leg ([`Leg::C`]) to a call: binds a port pair for it and returns it
    /// (for the SDP towards that party). It hears nothing until told with
    /// [`AudioCommand::Hears`].
    pub fn add_leg(&self, id: MediaSessionId, setup: LegSetup) -> Result<PortPair, MediaError> {
        let (port, rtp, rtcp) = self.bind_pair()?;
        self.send(
            id,
            Command::AddLeg {
                id,
                port,
                sockets: (rtp, rtcp),
                setup,
            },
        )?;
        Ok(port)
    }

    /// Removes the third leg and frees its ports.
    pub fn remove_leg(&self, id: MediaSessionId, leg: Leg) -> Result<(), MediaError> {
        self.send(id, Command::RemoveLeg(id, leg))
    }

    /// The current counters of a call.
    pub async fn stats(&self, id: MediaSessionId) -> Result<CallStats, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.send(id, Command::Stats(id, tx))?;
        rx.await
            .map_err(|_| MediaError::Stopped)?
            .ok_or(MediaError::UnknownSession(id))
    }

    /// Port pairs in use (two per call).
    pub fn ports_in_use(&self) -> usize {
        self.lock_ports().in_use()
    }
}

/// Dropping the relay stops its workers, closes every call's sockets and waits for the
/// threads to end (briefly blocking; do it at shutdown, not on a hot async path).
impl Drop for MediaRelay {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(Command::Shutdown);
            let _ = w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        // The workers are gone (their removals queued the final stops): finish the files.
        self.recordings.send_control(recording::RecordMsg::Shutdown);
        if let Some(t) = self.recorder.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_handle_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<MediaRelay>();
        shareable::<MediaEvent>();
    }

    #[test]
    fn leg_setup_from_sdp_knows_the_preferred_law_and_the_telephone_event_type() {
        let sdp = |m: &str| {
            SessionDescription::parse(
                format!(
                    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     {m}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                     a=rtpmap:96 telephone-event/8000\r\n"
                )
                .as_bytes(),
            )
            .expect("valid SDP")
        };
        let s = LegSetup::from_sdp(&sdp("m=audio 4000 RTP/AVP 8 0 96")).expect("audio");
        assert_eq!((s.codec, s.telephone_event), (Some(Law::A), Some(96)));
        assert_eq!(s.send_codec(), Law::A);
        let s = LegSetup::from_sdp(&sdp("m=audio 4000 RTP/AVP 0")).expect("audio");
        assert_eq!((s.codec, s.telephone_event), (Some(Law::Mu), None));
        let s = LegSetup::new(None, PayloadTypes::of(&[8, 101]));
        assert_eq!((s.send_codec(), s.telephone_event), (Law::A, Some(101)));
        assert_eq!(
            LegSetup::new(None, PayloadTypes::NONE).send_codec(),
            Law::Mu
        );
    }

    #[test]
    fn legs_map_to_indices_and_back() {
        for leg in [Leg::A, Leg::B] {
            assert_eq!(Leg::from_index(leg.index()), leg);
        }
    }
}
