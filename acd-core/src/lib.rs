//! acd-core — zentrale's routing engine.
//!
//! A sans-IO state machine (no tokio, no sockets, no clock of its own): events go in
//! through `handle_*`, actions come out of `poll_*`, and time is always an argument.
//! See the crate layout below once the modules land.
#![forbid(unsafe_code)]
pub mod erlang;
