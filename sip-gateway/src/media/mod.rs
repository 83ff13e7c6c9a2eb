//! Media: the anchored RTP relay that carries the audio of bridged calls.
//!
//! Every call's RTP passes through zentrale (DESIGN.md, "Media is anchored") so that
//! music, recording, whisper and quality statistics are always possible. For a plain
//! bridged call the relay is a zero-copy forward between two sockets per call.
//!
//! # Layout
//! - [`ports`]: the even/odd RTP/RTCP port pairs of the configured range.
//! - [`rtp`]: RTP/RTCP header checks, RFC 3550 receive statistics, RTCP SR/RR parsing and
//!   writing and round-trip bookkeeping, without I/O.
//! - [`relay`]: configuration, the [`MediaRelay`] handle, commands and [`MediaEvent`]s.
//! - [`control`]: the commands for audio beyond the relay (prompts, music, hearing matrix,
//!   DTMF, recording, a third leg).
//! - [`process`]: processed mode without I/O — decoding, mixing, prompts, DTMF and the 20 ms
//!   frame clock of calls that are more than a plain bridge.
//! - `recording`: the thread that writes recordings, off the packet loop.
//! - `worker`: the per-thread epoll loops that move the packets.
//!
//! # Design
//! A few worker threads, each owning the sockets of a share of the calls, drain readable
//! sockets with batched `recvmmsg`/`sendmmsg` into buffers allocated once: no allocation,
//! lock or copy per packet. Signalling code (async) controls the relay through a command
//! channel and receives events (latching, RTP timeout, removal) on a tokio channel.
//! Latching (symmetric RTP) makes NATed phones work: a leg sends to wherever its peer's
//! packets come from, but only packets that look like RTP with a negotiated payload type
//! may latch, and an active source cannot be displaced until it has been silent.
//!
//! A call becomes *processed* only when it needs its audio (a prompt, a hearing matrix other
//! than the plain bridge, DTMF detection, a recording, a third leg): then a boxed
//! [`process::CallAudio`] decodes its packets into jitter buffers and a worker-wide, drift-free
//! 20 ms tick sends every leg its own stream (own SSRC, sequence, timestamp) and zentrale's
//! own RTCP reports. When the call is a plain bridge again it returns to the forward. Files are
//! written by a separate recording thread so that a slow disk never stalls a worker. Plain
//! bridges pass RTCP through and the relay reads loss, jitter and round trip from it; every
//! leg's final counters carry an E-model MOS estimate for the CDR.

pub mod control;
pub mod ports;
pub mod process;
mod recording;
pub mod relay;
pub mod rtp;
mod worker;

pub use control::{AudioCommand, LegSet};
pub use ports::{PortAllocator, PortError, PortPair};
pub use relay::{
    CallMedia, CallStats, IoMode, Leg, LegSetup, LegStats, MediaError, MediaEvent, MediaRelay,
    MediaSessionId, RelayConfig,
};
pub use rtp::PayloadTypes;
