//! sip-gateway — zentrale's SIP and media side.
//!
//! Transport, transactions, dialogs, registrar, trunks, the B2BUA and the RTP relay.
#![forbid(unsafe_code)]
