//! Callbacks: the number a caller left, and dialling it when the engine says so.
//!
//! acd-core keeps a callback contact in its queue like any other; when it reaches the head and
//! an agent is free, the engine reserves the agent and emits `Action::DialCallback`. The number
//! to dial is not the engine's business: the side that takes the caller's request (IVR / DTMF,
//! another module) stores it in [`B2bua::pending_callbacks`] keyed by the contact, and the dial
//! side (core/outbound.rs) takes it from there.

use acd_core::QueueId;
use uuid::Uuid;

/// A callback a caller asked for, stored until the engine emits `Action::DialCallback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallbackInfo {
    /// Tenant of the contact.
    pub(crate) tenant: Uuid,
    /// The number to call back, as the caller left it (E.164 preferred; dialled through the
    /// tenant's trunks).
    pub(crate) number: String,
    /// The queue the callback waits in.
    pub(crate) queue: QueueId,
    /// When the caller asked, ms since the epoch (for the CDR's wait time).
    pub(crate) requested_ms: u64,
}
