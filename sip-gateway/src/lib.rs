//! sip-gateway — zentrale's SIP and media side.
//!
//! Transport, transactions, dialogs, registrar, trunks, the B2BUA and the RTP relay.
//!
//! Audio (module `audio`): the sans-IO toolkit for everything that looks inside the payload —
//! G.711, tones and DTMF, prompts and hold music, jitter buffer, whisper/barge mixing, stereo
//! recording and the E-model quality estimate.
#![forbid(unsafe_code)]

pub mod audio;
