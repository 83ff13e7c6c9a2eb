//! Live calls as the control API sees them: finding a tenant's call by contact id, listing a
//! tenant's calls, and hanging one up.
//!
//! A child of `core` so it reads the call table directly; the types it answers with are in
//! [`crate::b2bua::control`]. Tenant isolation is enforced here, at the one place a contact
//! id turns into a call: a call of another tenant is "no such call", never "forbidden", so an
//! API client cannot learn that it exists.

use acd_core::{ContactId, Input};
use uuid::Uuid;

use super::{B2bua, BranchState, CallKey, CallState, MediaPort, Now};
use crate::b2bua::control::{CallInfo, CallPhase, ControlError};

impl<M: MediaPort> B2bua<M> {
    /// The call of `tenant` with this contact id.
    pub(crate) fn live_call(
        &self,
        tenant: Uuid,
        contact: ContactId,
    ) -> Result<CallKey, ControlError> {
        self.by_contact
            .get(&contact)
            .copied()
            .filter(|k| self.calls.get(k).is_some_and(|c| c.tenant == tenant))
            .ok_or(ControlError::NoSuchCall)
    }

    /// The live calls of `tenant`, oldest first.
    pub fn calls_snapshot(&self, tenant: Uuid) -> Vec<CallInfo> {
        let mut out: Vec<CallInfo> =
            self.calls
                .values()
                .filter(|c| c.tenant == tenant)
                .map(|c| {
                    let winner = c.winner.and_then(|w| c.branches.get(w));
                    let ringing =
                        c.branches.iter().rev().find(|b| {
                            matches!(b.state, BranchState::Calling | BranchState::Ringing)
                        });
                    let (phase, agent) = match (c.state, winner, ringing) {
                        (CallState::Connected, w, _) => {
                            (CallPhase::Connected, w.map(|b| b.agent.clone()))
                        }
                        (_, _, Some(b)) => (CallPhase::Ringing, Some(b.agent.clone())),
                        _ => (CallPhase::Queued, None),
                    };
                    CallInfo {
                        contact: c.contact,
                        queue: c.queue.clone(),
                        agent,
                        phase,
                        caller: c.caller_number.clone(),
                        since_ms: c.started_ms,
                        answered_ms: c.answered_ms,
                        recording: c
                            .recording
                            .as_ref()
                            .map_or(crate::b2bua::control::RecordingStatus::Off, |r| r.status()),
                        monitored_by: c.monitor.as_ref().map(|m| (m.supervisor.clone(), m.mode)),
                    }
                })
                .collect();
        out.sort_by_key(|c| (c.since_ms, c.contact.0));
        out
    }

    /// Ends a call on request: BYE to both legs of a connected call; a waiting caller gets
    /// `480` and the engine learns that the contact is gone.
    pub(crate) fn control_hangup(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        match call.state {
            CallState::Connected => self.hang_up(now, key, None),
            CallState::Queued => {
                let (tenant, contact) = (call.tenant, call.contact);
                self.routing
                    .push_back((tenant, Input::ContactAbandoned { contact }));
                self.refuse(now, contact, 480, "failed");
            }
        }
        Ok(())
    }
}
