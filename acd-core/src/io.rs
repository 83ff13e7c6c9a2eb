//! What goes into the engine ([`Input`], [`NewContact`]) and what comes out ([`Action`],
//! [`QueueLogEvent`], [`AgentState`]).
//!
//! All of it is plain serialisable data so that inputs and decisions can travel between
//! cluster nodes unchanged (DESIGN.md, "Scaling out"), and so the shell can persist
//! queue-log rows as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Disposition;
use crate::ids::{AgentId, Channel, ContactId, OfferId, QueueId, Timestamp};
use crate::skill_expr::SkillExpr;

/// Highest contact priority.
pub const MAX_PRIORITY: u16 = 999;

/// A contact arriving at a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContact {
    /// Globally unique id (the shell makes it, UUIDv7).
    pub id: ContactId,
    /// The queue it enters.
    pub queue: QueueId,
    /// Its medium.
    pub channel: Channel,
    /// 0..=999, higher first; larger values are capped at 999.
    pub priority: u16,
    /// Extra skill requirement on top of the queue's own.
    pub requirement: Option<SkillExpr>,
    /// Caller number, language, customer tier, digits entered…: carried for the shell,
    /// not interpreted by the engine.
    pub attributes: BTreeMap<String, String>,
}

impl NewContact {
    /// A contact with priority 0, no extra requirement and no attributes.
    pub fn new(id: ContactId, queue: QueueId, channel: Channel) -> Self {
        NewContact {
            id,
            queue,
            channel,
            priority: 0,
            requirement: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// Why an agent did not take an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The agent declined (reject delay applies).
    Declined,
    /// The agent's device was busy (busy delay applies).
    Busy,
    /// The offer could not be delivered (device unreachable); treated like no answer.
    Failed,
}

/// Every input, as data (for replay, fuzzing and forwarding between nodes). The engine's
/// `handle_*` methods are the same inputs as calls; [`crate::Engine::handle_input`]
/// dispatches this enum to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "input")]
#[non_exhaustive]
pub enum Input {
    /// See [`crate::Engine::handle_new_contact`].
    NewContact(NewContact),
    /// See [`crate::Engine::handle_priority_changed`].
    PriorityChanged {
        /// The contact.
        contact: ContactId,
        /// Its new priority.
        priority: u16,
    },
    /// See [`crate::Engine::handle_callback_requested`].
    CallbackRequested {
        /// The contact.
        contact: ContactId,
    },
    /// See [`crate::Engine::handle_contact_abandoned`].
    ContactAbandoned {
        /// The contact.
        contact: ContactId,
    },
    /// See [`crate::Engine::handle_agent_login`].
    AgentLogin {
        /// The agent.
        agent: AgentId,
    },
    /// See [`crate::Engine::handle_agent_logout`].
    AgentLogout {
        /// The agent.
        agent: AgentId,
    },
    /// See [`crate::Engine::handle_agent_ready`].
    AgentReady {
        /// The agent.
        agent: AgentId,
    },
    /// See [`crate::Engine::handle_agent_pause`].
    AgentPause {
        /// The agent.
        agent: AgentId,
        /// Reason code.
        reason: String,
    },
    /// See [`crate::Engine::handle_agent_unpause`].
    AgentUnpause {
        /// The agent.
        agent: AgentId,
    },
    /// See [`crate::Engine::handle_offer_accepted`].
    OfferAccepted {
        /// The offer.
        offer: OfferId,
    },
    /// See [`crate::Engine::handle_offer_rejected`].
    OfferRejected {
        /// The offer.
        offer: OfferId,
        /// Declined, busy or failed.
        kind: RejectKind,
    },
    /// See [`crate::Engine::handle_contact_ended`].
    ContactEnded {
        /// The contact.
        contact: ContactId,
    },
    /// See [`crate::Engine::handle_wrap_up_ended`].
    WrapUpEnded {
        /// The contact whose wrap-up the agent ends.
        contact: ContactId,
    },
    /// See [`crate::Engine::handle_transfer`].
    Transfer {
        /// The contact.
        contact: ContactId,
        /// The target queue.
        queue: QueueId,
    },
    /// See [`crate::Engine::handle_assign_to_agent`].
    AssignToAgent {
        /// The contact.
        contact: ContactId,
        /// The agent who has it now.
        agent: AgentId,
    },
    /// See [`crate::Engine::handle_agent_busy`].
    AgentBusy {
        /// The agent.
        agent: AgentId,
        /// Whether the agent is on a call outside the queues.
        busy: bool,
    },
    /// See [`crate::Engine::handle_timeout`].
    Timeout,
}

/// An agent's summary state (for wallboards and time-per-state statistics).
///
/// With several channels an agent can hold several contacts; the summary is the first
/// that applies of: logged out, reserved (an offer is ringing), busy (a contact is in
/// progress), wrap-up, paused, available.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AgentState {
    /// Not logged in.
    LoggedOut,
    /// Logged in and waiting for contacts.
    Available,
    /// An offer is ringing at the agent.
    Reserved,
    /// Handling at least one contact.
    Busy,
    /// After-contact work; the agent gets no new contact of a blocked channel until it ends.
    WrapUp,
    /// Logged in but taking no new contacts.
    Paused {
        /// Reason code (`no-answer` when the engine paused the agent).
        reason: String,
    },
}

impl AgentState {
    /// Dense index for per-state arrays: logged-out, available, reserved, busy, wrap-up, paused.
    pub fn index(&self) -> usize {
        match self {
            AgentState::LoggedOut => 0,
            AgentState::Available => 1,
            AgentState::Reserved => 2,
            AgentState::Busy => 3,
            AgentState::WrapUp => 4,
            AgentState::Paused { .. } => 5,
        }
    }
}

/// Why an offer was withdrawn by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Another agent accepted the same ring-all contact.
    AnsweredElsewhere,
    /// The customer hung up.
    Abandoned,
    /// The offer rang past its timeout.
    Timeout,
    /// The contact left the queue (overflow, transfer, reconfiguration).
    Withdrawn,
    /// The agent logged out while it rang.
    AgentLoggedOut,
}

/// Why a contact was refused at entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Outside business hours or on a holiday.
    Closed,
    /// `max_waiting` reached.
    QueueFull,
    /// No member of the queue is logged in.
    NoAgents,
}

/// Where an escalation or refusal sends a contact.
pub type OverflowTarget = Disposition;

/// An instruction for the shell. Drain with [`crate::Engine::poll_action`] after every input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[non_exhaustive]
pub enum Action {
    /// Ring `agent` with `contact`; answer with accepted/rejected before `expires_at`.
    Offer {
        /// The offer's id.
        offer: OfferId,
        /// The contact.
        contact: ContactId,
        /// The agent.
        agent: AgentId,
        /// The queue the contact is served from.
        queue: QueueId,
        /// The contact's channel.
        channel: Channel,
        /// When the engine will time the offer out.
        expires_at: Timestamp,
    },
    /// A callback contact reached the head with `agent` reserved: connect the agent and
    /// dial the customer. Answer with accepted (connected) or rejected like an offer.
    DialCallback {
        /// The offer's id.
        offer: OfferId,
        /// The contact.
        contact: ContactId,
        /// The reserved agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
        /// When the engine will time the attempt out.
        expires_at: Timestamp,
    },
    /// Stop ringing this offer.
    CancelOffer {
        /// The offer.
        offer: OfferId,
        /// The contact.
        contact: ContactId,
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: CancelReason,
    },
    /// Tell a waiting caller their position and estimated wait.
    Announce {
        /// The contact.
        contact: ContactId,
        /// The queue.
        queue: QueueId,
        /// 1-based position among waiting contacts.
        position: u32,
        /// Estimated wait in ms (see the `stats` module for the model).
        ewt_ms: u64,
    },
    /// Ask the caller whether they want a callback instead of waiting.
    OfferCallback {
        /// The contact.
        contact: ContactId,
        /// The queue.
        queue: QueueId,
    },
    /// The contact left `queue` by escalation for `target`, or while waiting because the
    /// queue closed (`target` = its closed action) or its last agent logged out (`target`
    /// = its no-agents action). When the target is another queue, the engine has already
    /// queued it there; otherwise it has left the engine.
    Overflow {
        /// The contact.
        contact: ContactId,
        /// The queue it left.
        queue: QueueId,
        /// Where it goes.
        target: OverflowTarget,
    },
    /// The contact was refused at entry; `then` says what to do with it. When `then` is
    /// another queue the engine has already queued it there.
    Refused {
        /// The contact.
        contact: ContactId,
        /// The queue that refused.
        queue: QueueId,
        /// Why.
        reason: RefusalReason,
        /// What to do instead.
        then: Disposition,
    },
    /// An agent's summary state changed.
    AgentStateChanged {
        /// The agent.
        agent: AgentId,
        /// The new state.
        state: AgentState,
    },
    /// The contact was assigned to `agent` by [`crate::Engine::handle_assign_to_agent`]
    /// (a transfer straight to that agent's phone, already connected by the shell): the
    /// engine counts the agent busy with it from now on. The shell's cue for the agent's
    /// screen pop, like an accepted `Offer`.
    Assigned {
        /// The contact.
        contact: ContactId,
        /// The agent who has it now.
        agent: AgentId,
        /// The contact's queue.
        queue: QueueId,
        /// The contact's channel.
        channel: Channel,
        /// The agent who had it before (now in wrap-up for it), if it was connected.
        from: Option<AgentId>,
    },
    /// A queue-log row to persist.
    QueueLog(QueueLogEvent),
}

/// One queue-log row: an event in a contact's or agent's life, what reports are
/// recomputed from (see [`crate::stats::IntervalAggregator`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLogEvent {
    /// When.
    pub at: Timestamp,
    /// The queue (`None` for agent events that concern no queue: login, logout, pause).
    pub queue: Option<QueueId>,
    /// The contact, if any.
    pub contact: Option<ContactId>,
    /// The agent, if any.
    pub agent: Option<AgentId>,
    /// What happened.
    pub kind: QueueLogKind,
}

/// The kinds of queue-log rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum QueueLogKind {
    /// Entered the queue (counted as offered).
    Enter {
        /// Channel.
        channel: Channel,
        /// Priority at entry.
        priority: u16,
    },
    /// Refused at entry (counted as offered and as overflowed).
    Refused {
        /// Why.
        reason: RefusalReason,
    },
    /// Offered to an agent.
    Offer {
        /// The offer.
        offer: OfferId,
    },
    /// Connected to an agent (answered).
    Connect {
        /// Time in queue until connect, ms.
        wait_ms: u64,
        /// Time the offer rang, ms.
        ring_ms: u64,
    },
    /// The offer rang unanswered.
    RingNoAnswer {
        /// How long it rang, ms.
        ring_ms: u64,
    },
    /// The agent declined or was busy.
    Reject {
        /// Declined, busy or failed.
        kind: RejectKind,
    },
    /// The customer gave up while waiting or ringing.
    Abandon {
        /// Time in queue, ms.
        wait_ms: u64,
        /// Position when they gave up (1-based; 0 if ringing).
        position: u32,
    },
    /// Left by escalation, or by closing / losing the last agent while waiting (counted as
    /// overflowed).
    Overflow {
        /// Where to.
        target: OverflowTarget,
        /// Time in queue, ms.
        wait_ms: u64,
    },
    /// Moved to another queue while waiting (counted as overflowed in the old queue),
    /// or by the agent after connect (the old queue already counted it as answered).
    Transfer {
        /// The target queue.
        to: QueueId,
        /// Time in queue, ms (0 when transferred after connect).
        wait_ms: u64,
    },
    /// Assigned straight to an agent (the row's agent) by the shell: a direct or attended
    /// transfer to that agent's phone. When the contact was connected, the previous
    /// agent's `complete` row precedes this one; when it was waiting or ringing, this row
    /// counts as answered (like `connect`).
    Assign {
        /// The agent who had it before, if it was connected.
        from: Option<AgentId>,
        /// Time in queue until the assignment, ms (0 when it was connected).
        wait_ms: u64,
    },
    /// Became a callback (keeps its position).
    Callback,
    /// The conversation ended; wrap-up starts.
    Complete {
        /// Connect to end, ms.
        talk_ms: u64,
    },
    /// Wrap-up ended (the contact's handle time is complete).
    WrapUpEnd {
        /// Wrap-up duration, ms.
        wrap_up_ms: u64,
    },
    /// The agent paused.
    Pause {
        /// Reason code.
        reason: String,
    },
    /// The agent unpaused.
    Unpause,
    /// The agent logged in.
    Login,
    /// The agent logged out.
    Logout,
}
