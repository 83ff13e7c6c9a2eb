//! The routing engine: queues, agents, offers and timers as one sans-IO state machine.

use crate::config::{ConfigError, RoutingConfig};
use crate::error::EngineError;
use crate::ids::{AgentId, ContactId, OfferId, QueueId, Timestamp};
use crate::io::{Action, AgentState, Input, NewContact, RejectKind};
use crate::stats::{AgentStats, QueueStats};

/// Where a contact is in its life inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactPhase {
    /// In the waiting list.
    Waiting,
    /// In the waiting list as a callback (the customer hung up and will be called back).
    WaitingCallback,
    /// One or more offers ringing (several only under ring-all).
    Offered,
    /// Connected to an agent.
    Connected,
    /// Conversation over; the agent is in wrap-up for it.
    WrapUp,
}

/// A read-only view of a contact.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContactView {
    /// The contact.
    pub id: ContactId,
    /// The queue it is in (or was served from).
    pub queue: QueueId,
    /// Current priority.
    pub priority: u16,
    /// Phase.
    pub phase: ContactPhase,
    /// When it entered the current queue.
    pub entered_at: Timestamp,
    /// Agents it is offered to or connected with.
    pub agents: Vec<AgentId>,
}

/// The routing engine. See the crate docs for the input/output contract.
#[derive(Debug)]
pub struct Engine {
    _todo: (),
}

impl Engine {
    /// Builds an engine from a configuration (validated here) and a seed for the random
    /// strategies and offer ids. All agents start logged out.
    pub fn new(config: RoutingConfig, seed: u64) -> Result<Engine, ConfigError> {
        let _ = (config, seed);
        todo!()
    }

    /// Live reconfiguration: waiting contacts keep their place, contacts in progress and
    /// agent states are kept. Refused (and nothing changed) when the new configuration
    /// removes a queue that holds contacts or an agent that is logged in.
    pub fn apply_config(&mut self, now: Timestamp, config: RoutingConfig) -> Result<(), ConfigError> {
        let _ = (now, config);
        todo!()
    }

    /// The configuration in force.
    pub fn config(&self) -> &RoutingConfig {
        todo!()
    }

    /// Dispatches an [`Input`] to the matching `handle_*` method.
    pub fn handle_input(&mut self, now: Timestamp, input: Input) -> Result<(), EngineError> {
        let _ = (now, input);
        todo!()
    }

    /// A contact arrives at a queue. It is refused (closed, full, no agents) or queued, and
    /// offered at once if an eligible agent is available.
    pub fn handle_new_contact(&mut self, now: Timestamp, contact: NewContact) -> Result<(), EngineError> {
        let _ = (now, contact);
        todo!()
    }

    /// A waiting contact's priority changes (re-sorted; keeps its entry time).
    pub fn handle_priority_changed(&mut self, now: Timestamp, contact: ContactId, priority: u16) -> Result<(), EngineError> {
        let _ = (now, contact, priority);
        todo!()
    }

    /// A waiting voice contact becomes a callback and keeps its position; at the head,
    /// with an agent reserved, the engine emits [`Action::DialCallback`].
    pub fn handle_callback_requested(&mut self, now: Timestamp, contact: ContactId) -> Result<(), EngineError> {
        let _ = (now, contact);
        todo!()
    }

    /// The customer hung up while waiting or ringing; ringing offers are cancelled.
    pub fn handle_contact_abandoned(&mut self, now: Timestamp, contact: ContactId) -> Result<(), EngineError> {
        let _ = (now, contact);
        todo!()
    }

    /// The agent logs in and becomes available.
    pub fn handle_agent_login(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), EngineError> {
        let _ = (now, agent);
        todo!()
    }

    /// The agent logs out: ringing offers are cancelled (their contacts go back to their
    /// place); contacts in progress stay until they end.
    pub fn handle_agent_logout(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), EngineError> {
        let _ = (now, agent);
        todo!()
    }

    /// The agent says they are ready: ends a pause (like unpause) and any reject/busy delay.
    pub fn handle_agent_ready(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), EngineError> {
        let _ = (now, agent);
        todo!()
    }

    /// The agent pauses with a reason code; contacts in progress continue.
    pub fn handle_agent_pause(&mut self, now: Timestamp, agent: &AgentId, reason: &str) -> Result<(), EngineError> {
        let _ = (now, agent, reason);
        todo!()
    }

    /// The agent ends a pause.
    pub fn handle_agent_unpause(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), EngineError> {
        let _ = (now, agent);
        todo!()
    }

    /// The agent answered the offer: the contact is connected (ring-all: others cancelled).
    pub fn handle_offer_accepted(&mut self, now: Timestamp, offer: OfferId) -> Result<(), EngineError> {
        let _ = (now, offer);
        todo!()
    }

    /// The agent declined, was busy, or could not be reached: the contact goes back to its
    /// place and the agent gets the matching delay.
    pub fn handle_offer_rejected(&mut self, now: Timestamp, offer: OfferId, kind: RejectKind) -> Result<(), EngineError> {
        let _ = (now, offer, kind);
        todo!()
    }

    /// The conversation ended: the agent enters the queue's wrap-up for this contact.
    pub fn handle_contact_ended(&mut self, now: Timestamp, contact: ContactId) -> Result<(), EngineError> {
        let _ = (now, contact);
        todo!()
    }

    /// The agent ends the contact's wrap-up early.
    pub fn handle_wrap_up_ended(&mut self, now: Timestamp, contact: ContactId) -> Result<(), EngineError> {
        let _ = (now, contact);
        todo!()
    }

    /// Moves a contact to another queue with its priority: a waiting one leaves its queue;
    /// a connected one ends for its agent (wrap-up starts) and re-enters.
    pub fn handle_transfer(&mut self, now: Timestamp, contact: ContactId, queue: &QueueId) -> Result<(), EngineError> {
        let _ = (now, contact, queue);
        todo!()
    }

    /// Fires every deadline at or before `now` (offer timeouts, wrap-up ends, delays,
    /// escalation steps, announcements). Harmless to call early or often.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let _ = now;
        todo!()
    }

    /// The next action for the shell; drain until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    /// When to call [`Engine::handle_timeout`] next (`None` = nothing scheduled).
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Timestamp> {
        todo!()
    }

    /// An agent's summary state.
    pub fn agent_state(&self, agent: &AgentId) -> Option<AgentState> {
        let _ = agent;
        todo!()
    }

    /// A contact's view.
    pub fn contact(&self, contact: ContactId) -> Option<ContactView> {
        let _ = contact;
        todo!()
    }

    /// The waiting contacts of a queue in service order (priority, then entry time).
    pub fn waiting_contacts(&self, queue: &QueueId) -> Option<Vec<ContactId>> {
        let _ = queue;
        todo!()
    }

    /// Real-time statistics of a queue at `now`.
    pub fn queue_stats(&self, now: Timestamp, queue: &QueueId) -> Option<QueueStats> {
        let _ = (now, queue);
        todo!()
    }

    /// Real-time statistics of an agent at `now`.
    pub fn agent_stats(&self, now: Timestamp, agent: &AgentId) -> Option<AgentStats> {
        let _ = (now, agent);
        todo!()
    }

    /// EWT (ms) for a contact at 1-based `position` in `queue` (see [`crate::stats`]).
    pub fn estimated_wait_ms(&self, queue: &QueueId, position: u32) -> Option<u64> {
        let _ = (queue, position);
        todo!()
    }
}
