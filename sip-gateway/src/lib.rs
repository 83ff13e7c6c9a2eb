//! sip-gateway — zentrale's SIP and media side.
//!
//! Transport, transactions, dialogs, registrar, trunks, the B2BUA and the RTP relay.
//!
//! Media (modules `sdp` and `media`): SDP offer/answer that rewrites every description to
//! the relay's address (media anchoring), and the RTP relay that forwards each bridged call's
//! audio between its two legs with latching for NATed peers.
//!
//! SIP (module `sip`): our own sans-IO protocol core — a strict, zero-copy parser with RFC 4475
//! validation, digest authentication, RFC 3261 transactions and the registrar — driven by
//! `handle_*(now, ..)` / `poll_*` so it is tested with a fake clock and a lossy fake network.
//!
//! Audio (module `audio`): the sans-IO toolkit for everything that looks inside the payload —
//! G.711, tones and DTMF, prompts and hold music, jitter buffer, whisper/barge mixing, stereo
//! recording and the E-model quality estimate.
//!
//! Calls (modules `transport`, `b2bua`, `gateway`): tokio UDP/TCP shells that only move bytes,
//! the sans-IO B2BUA that takes a carrier's INVITE through acd-core to an agent's registered
//! phones and bridges the legs through the relay, and [`gateway::start`], the one call the
//! binary makes to run it all.
#![forbid(unsafe_code)]

pub mod audio;
pub mod b2bua;
pub mod gateway;
pub mod media;
pub mod sdp;
pub mod sip;
pub mod transport;
pub mod trunk;
