//! Read-only getters: agent and contact views, waiting lists and real-time statistics.
//!
//! Getters are for wallboards and reports, not for the routing path, so they may walk a
//! queue's members or waiting list; nothing here scans every contact of the engine.

use super::{ContactPhase, ContactView, Engine, Phase};
use crate::ids::{AgentId, ContactId, QueueId, Timestamp};
use crate::io::AgentState;
use crate::stats::{AgentStats, AgentsByState, QueueStats, estimated_wait_ms};

impl Engine {
    /// An agent's summary state.
    pub fn agent_state(&self, agent: &AgentId) -> Option<AgentState> {
        let a = self.agent_index.get(agent)?;
        Some(self.a(*a).summary_state())
    }

    /// A contact's view (also while its agent is in wrap-up for it).
    pub fn contact(&self, contact: ContactId) -> Option<ContactView> {
        if let Some(c) = self.contacts.get(&contact) {
            let phase = match c.phase {
                Phase::Waiting if c.callback => ContactPhase::WaitingCallback,
                Phase::Waiting => ContactPhase::Waiting,
                Phase::Offered => ContactPhase::Offered,
                Phase::Connected => ContactPhase::Connected,
            };
            let agents = match c.phase {
                Phase::Offered => c
                    .offers
                    .iter()
                    .filter_map(|o| self.offers.get(o))
                    .map(|o| self.a(o.agent).id.clone())
                    .collect(),
                Phase::Connected => c.agent.map(|a| self.a(a).id.clone()).into_iter().collect(),
                Phase::Waiting => Vec::new(),
            };
            return Some(ContactView {
                id: contact,
                queue: self.q(c.queue).id.clone(),
                priority: c.priority,
                phase,
                entered_at: c.entered,
                agents,
                channel: c.channel,
            });
        }
        let w = self.wrapups.get(&contact)?.first()?;
        Some(ContactView {
            id: contact,
            queue: self.q(w.queue).id.clone(),
            priority: 0,
            phase: ContactPhase::WrapUp,
            entered_at: w.started,
            agents: vec![self.a(w.agent).id.clone()],
            channel: w.channel,
        })
    }

    /// The waiting contacts of a queue in service order (priority, then entry time),
    /// including contacts of other queues shown here by an escalation step.
    pub fn waiting_contacts(&self, queue: &QueueId) -> Option<Vec<ContactId>> {
        let q = self.queue_index.get(queue)?;
        Some(self.q(*q).waiting.values().copied().collect())
    }

    /// Number of contacts in the engine (waiting, ringing or connected; not wrap-up).
    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// Real-time statistics of a queue at `now`.
    pub fn queue_stats(&self, now: Timestamp, queue: &QueueId) -> Option<QueueStats> {
        let q = *self.queue_index.get(queue)?;
        let qu = self.q(q);
        let mut agents = AgentsByState::default();
        for &a in &qu.members {
            agents.add(&self.a(a).summary_state());
        }
        let longest_wait_ms = qu
            .waiting
            .values()
            .filter_map(|id| self.contacts.get(id))
            .filter(|c| c.queue == q)
            .map(|c| now.ms_since(c.entered))
            .max()
            .unwrap_or(0);
        Some(QueueStats {
            queue: qu.id.clone(),
            waiting: qu.home_waiting,
            ringing: qu.home_ringing,
            longest_wait_ms,
            agents,
            serving_agents: qu.serving_members,
            counters: qu.counters,
            service_level_threshold_ms: qu.sl_ms,
            recent_aht_ms: qu.recent_aht_ms,
        })
    }

    /// Real-time statistics of an agent at `now` (the current state counted up to `now`).
    pub fn agent_stats(&self, now: Timestamp, agent: &AgentId) -> Option<AgentStats> {
        let a = self.a(*self.agent_index.get(agent)?);
        let mut time = a.time;
        time.add(&a.state, now.ms_since(a.state_since));
        Some(AgentStats {
            agent: a.id.clone(),
            state: a.summary_state(),
            handled: a.handled,
            time,
            active_contacts: a.total_active(),
            no_answer_streak: a.no_answer_streak,
        })
    }

    /// EWT (ms) for a contact at 1-based `position` in `queue` (see [`crate::stats`]).
    pub fn estimated_wait_ms(&self, queue: &QueueId, position: u32) -> Option<u64> {
        let qu = self.q(*self.queue_index.get(queue)?);
        Some(estimated_wait_ms(
            position,
            qu.recent_aht_ms,
            qu.serving_members,
        ))
    }
}
