//! The B2BUA: a carrier's call through acd-core to an agent's phone.
//!
//! # Layout
//! - [`model`]: the per-tenant telephony the binary hands in (DIDs → queues, agents' SIP
//!   identities), replaceable live.
//! - [`core`]: the sans-IO call state machines ([`B2bua`]): INVITE → queue → offer → fork to
//!   the agent's phones → bridge → BYE, CANCEL/abandon, refusals, RTP-timeout clearing, CDRs;
//!   what callers hear and press before an agent (early answer, music, announcements, IVR,
//!   callback request, voicemail); hold/resume by re-INVITE (core/hold.rs), blind and
//!   attended transfer by REFER with and without `Replaces` (core/transfer.rs), and calls
//!   from agents' registered phones to colleagues or queues (core/internal.rs).
//! - [`control`]: call control from the API (hold, transfer, recording, supervisor monitor,
//!   hang-up) and the list of live calls, carried to the driver on a channel.
//! - `driver`: the tokio task that feeds the core and executes its outputs.
//!
//! # Design
//! The core follows the quinn split (STYLE.md §2): the transaction layer demultiplexes, the
//! core keeps a table of calls each owning its caller leg and its branches, and acd-core sees
//! only contacts and offers. All of it is one state machine with time as an argument, so a
//! test can run a call with a fake clock; the driver is the only place with sockets and timers.

pub mod control;
pub mod core;
pub(crate) mod driver;
pub mod model;

pub use self::core::{
    B2bua, B2buaConfig, CdrRow, Counters, MediaPort, Now, RecordingSettings, RecordingSummary,
    recording_path,
};
pub use control::{
    CallControl, CallInfo, CallPhase, ControlError, ControlMessage, ControlRequest,
    RecordingStatus, SupervisorMode, TransferTarget,
};
pub use driver::GatewayIo;
pub use model::{AgentSip, GatewayModel, SipSecret, TenantModel, normalize_e164};
