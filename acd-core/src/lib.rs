//! acd-core — zentrale's routing engine.
//!
//! A sans-IO state machine (no tokio, no sockets, no clock of its own): events go in
//! through `handle_*`, actions come out of [`Engine::poll_action`], and time is always an
//! argument. The same engine runs behind sip-gateway and crm-api, in the what-if
//! simulator, in property tests and in benchmarks.
//!
//! # Layout
//!
//! - [`ids`] — newtype ids (`QueueId`, `AgentId`, `SkillId`, `ContactId`, `OfferId`),
//!   [`Timestamp`] and [`Channel`].
//! - [`config`] — [`RoutingConfig`]: queues, skills, agents, business hours, settings;
//!   TOML loading with file/line/field errors and cross-reference validation.
//! - [`skill_expr`] — the requirement language (`german >= 3 && (billing >= 2 || vip)`)
//!   and its compiled evaluator.
//! - [`hours`] — business hours and holidays in an IANA time zone.
//! - [`io`] — inputs ([`Input`], [`NewContact`]) and outputs ([`Action`],
//!   [`QueueLogEvent`], [`AgentState`]).
//! - [`engine`] — [`Engine`]: the state machine itself (internal tables in `engine/state.rs`,
//!   getters in `engine/query.rs`, live reconfiguration in `engine/reconfig.rs`, behaviour
//!   tests and property tests next to them).
//! - [`stats`] — real-time queue and agent statistics, EWT, and the 15-minute
//!   [`stats::IntervalAggregator`] that recomputes reports from the queue log.
//! - [`error`] — [`EngineError`].
//! - [`erlang`] — Erlang C / Erlang A staffing formulas.
//! - [`sim`] — the discrete-event what-if simulator that drives the engine
//!   (`zentrale simulate`).
//!
//! # Design
//!
//! Inputs are `handle_*(now, ..)` calls; after every input the caller drains
//! [`Engine::poll_action`] until it returns `None`, then asks [`Engine::poll_timeout`]
//! when to call [`Engine::handle_timeout`] next (calling it early or often is harmless).
//! This is str0m's and quinn-proto's shape: it makes the engine deterministic (same seed,
//! same inputs, same actions), testable with a fake clock, and fast, because nothing in it
//! waits or locks.
//!
//! Routing is event-driven and never scans all agents: every string key is interned to a
//! dense index, each queue keeps its waiting contacts ordered by (priority desc, entry
//! time, sequence) and an ordered index of its available members keyed by its strategy
//! (idle-since, order, random key…). A contact arriving looks at its queue's agent index;
//! an agent becoming free looks at the heads of its own queues' waiting lists. Those lists
//! are split so the freed agent's look stays short in deep queues: *plain* contacts (no
//! requirement of their own, unrelaxed, in their home queue) per channel, where only the
//! head can matter because the member's fit for the queue's requirement is precomputed,
//! and *special* ones, checked one by one.
//!
//! Each input marks the agents and contacts it changed as dirty; before returning, the
//! engine settles: dirty agents first (a freed agent takes the best waiting contact of its
//! queues, so a contact that just re-entered cannot overtake earlier ones), then dirty
//! contacts (they look for agents still free). Every change that can make an agent and a
//! contact matchable marks one of them dirty, which is why no contact is left waiting while
//! an eligible agent is available — the property tests check exactly that after every step.
//!
//! Rules worth knowing: a contact whose offer fails goes back to its place (same key); a
//! contact transferred by an agent is not offered back to that agent while the agent is
//! still in wrap-up for it; deadlines live in a heap with lazy deletion (each is checked
//! against current state when it fires). Business hours and the no-agents action apply to
//! waiting contacts too: when a queue's open range ends (a timer per queue while contacts
//! wait) or its last agent logs out, its waiting contacts leave with `Action::Overflow` to
//! the closed or no-agents action.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod erlang;
pub mod error;
pub mod hours;
pub mod ids;
pub mod io;
pub mod sim;
pub mod skill_expr;
pub mod stats;

pub use config::{ConfigError, Disposition, RoutingConfig, Strategy};
pub use engine::Engine;
pub use error::EngineError;
pub use ids::{AgentId, Channel, ContactId, OfferId, QueueId, SkillId, Timestamp};
pub use io::{
    Action, AgentState, CancelReason, Input, NewContact, OverflowTarget, QueueLogEvent,
    QueueLogKind, RefusalReason, RejectKind,
};
pub use skill_expr::SkillExpr;
