//! The what-if simulator: a discrete-event simulation of callers and agents driving the real
//! routing engine, so an admin can try a routing change on a day of synthetic traffic before
//! going live.
//!
//! # Layout
//! - [`config`]: the `[simulation]` table of a routing file (traffic, talk times, patience,
//!   ring delay, shifts) and file/line/field error reporting.
//! - [`simulation`]: [`Simulation`], the discrete-event loop around the engine.
//! - [`report`]: [`Report`], observed statistics next to Erlang C and Erlang A, as text or
//!   CSV.
//!
//! # Design
//! The simulator is sans-IO like the engine: it owns a fake clock and a seeded random
//! generator, so the same file and seed always give the same report, and a simulated day
//! runs in milliseconds.

pub mod config;
pub mod report;
pub mod simulation;

pub use config::{ConfigError as SimConfigError, SimDocument, SimulationConfig, parse_simulation};
pub use report::Report;
pub use simulation::{SimError, Simulation};
