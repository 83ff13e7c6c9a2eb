//! sip-gateway — zentrale's SIP and media side.
//!
//! Transport, transactions, dialogs, registrar, trunks, the B2BUA and the RTP relay.
//!
//! Audio (module `audio`): the sans-IO toolkit for everything that looks inside the payload —
//! G.711, tones and DTMF, prompts and hold music, jitter buffer, whisper/barge mixing, stereo
//! recording and the E-model quality estimate.
//!
//! SIP (module `sip`): our own sans-IO protocol core — a strict, zero-copy parser with RFC 4475
//! validation, digest authentication, RFC 3261 transactions and the registrar — driven by
//! `handle_*(now, ..)` / `poll_*` so it is tested with a fake clock and a lossy fake network.
#![forbid(unsafe_code)]

pub mod audio;
pub mod sip;
