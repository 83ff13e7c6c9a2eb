//! Errors returned by the engine's inputs.
//!
//! An input that refers to something the engine does not know (an agent not in the
//! configuration, a contact that already left) is an error value, never a panic: the
//! shell's view can lag the engine's by a message, so such races are normal.

use crate::ids::{AgentId, ContactId, OfferId, QueueId};

/// Why the engine did not apply an input. The engine's state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The queue is not in the configuration.
    #[error("unknown queue `{0}`")]
    UnknownQueue(QueueId),
    /// The agent is not in the configuration.
    #[error("unknown agent `{0}`")]
    UnknownAgent(AgentId),
    /// No such contact (never arrived, or already left the engine).
    #[error("unknown contact {0}")]
    UnknownContact(ContactId),
    /// A contact with this id is already in the engine.
    #[error("contact {0} is already in the engine")]
    DuplicateContact(ContactId),
    /// No such pending offer (already answered, timed out or cancelled).
    #[error("unknown or expired offer {0}")]
    UnknownOffer(OfferId),
    /// The contact's requirement names a skill the configuration does not have.
    #[error("requirement of contact {contact} names unknown skill `{skill}`")]
    UnknownSkill {
        /// The contact.
        contact: ContactId,
        /// The unknown skill.
        skill: String,
    },
    /// The input does not fit the contact's or agent's current state.
    #[error("{what}: not possible while {state}")]
    WrongState {
        /// The input.
        what: &'static str,
        /// The state that forbids it.
        state: &'static str,
    },
}
