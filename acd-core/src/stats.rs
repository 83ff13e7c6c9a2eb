//! Statistics: real-time per queue and per agent, EWT, and 15-minute interval aggregates.
//!
//! Definitions follow GLOSSARY.md exactly:
//! - *offered* counts at queue entry; *answered* at connect;
//! - *service level* = answered within the queue's threshold ÷ (contacts that ended − short
//!   abandons), where a contact "ends" in a queue when it is answered, abandoned or
//!   overflowed there;
//! - *ASA* = sum of waits of answered contacts ÷ answered;
//! - *AHT* = (talk + wrap-up) ÷ handled (hold is part of talk: the engine does not see it);
//! - *abandon rate* = abandoned (excluding short) ÷ offered;
//! - *occupancy* = (busy + wrap-up) ÷ (busy + wrap-up + available + reserved), per agent;
//!   ringing counts as idle, because the agent is not yet working the contact.
//!
//! *Overflowed* in zentrale counts every exit without answer or abandon: escalation
//! overflow, refusal at entry (closed, full, no agents) and a transfer to another queue
//! while waiting. So, per queue and at every moment:
//! `offered = answered + abandoned + overflowed + waiting + ringing`.
//!
//! **EWT model.** For a contact at 1-based position `p` in a queue with `n` serving agents
//! (logged in, not paused) and a recent handle time `aht` (exponentially smoothed over the
//! queue's completed contacts, seeded with the queue's `default_aht_s`):
//! `ewt = p × aht ÷ max(n, 1)`. Position `p` is the `p`-th agent release the caller waits
//! for, and with `n` agents releases come about every `aht ÷ n`. The simulator measures its
//! error against actual waits.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::RoutingConfig;
use crate::ids::{AgentId, ContactId, QueueId, Timestamp};
use crate::io::{AgentState, QueueLogEvent, QueueLogKind};

/// Number of agents per summary state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentsByState {
    /// Logged out.
    pub logged_out: u32,
    /// Available.
    pub available: u32,
    /// Reserved (ringing).
    pub reserved: u32,
    /// Busy.
    pub busy: u32,
    /// Wrap-up.
    pub wrap_up: u32,
    /// Paused.
    pub paused: u32,
}

impl AgentsByState {
    /// Counts one agent in `state`.
    pub fn add(&mut self, state: &AgentState) {
        match state {
            AgentState::LoggedOut => self.logged_out += 1,
            AgentState::Available => self.available += 1,
            AgentState::Reserved => self.reserved += 1,
            AgentState::Busy => self.busy += 1,
            AgentState::WrapUp => self.wrap_up += 1,
            AgentState::Paused { .. } => self.paused += 1,
        }
    }
}

/// Cumulative counters of one queue (since engine start), the base of every rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Entered the queue (including refused ones).
    pub offered: u64,
    /// Connected to an agent.
    pub answered: u64,
    /// Answered within the queue's service-level threshold.
    pub answered_within_sl: u64,
    /// Gave up while waiting or ringing (including short abandons).
    pub abandoned: u64,
    /// Abandons shorter than `settings.short_abandon_ms`.
    pub short_abandoned: u64,
    /// Left without answer or abandon (escalation, refusal, transfer while waiting).
    pub overflowed: u64,
    /// Of `overflowed`: refused at entry.
    pub refused: u64,
    /// Of `overflowed`: transferred to another queue while waiting.
    pub transferred_out: u64,
    /// Sum of queue waits of answered contacts, ms.
    pub answered_wait_ms: u64,
    /// Contacts whose handling (talk + wrap-up) completed.
    pub handled: u64,
    /// Sum of talk + wrap-up of handled contacts, ms.
    pub handle_ms: u64,
}

impl QueueCounters {
    /// Service level in 0..=1, `None` before any contact ended.
    pub fn service_level(&self) -> Option<f64> {
        let ended =
            (self.answered + self.abandoned + self.overflowed).saturating_sub(self.short_abandoned);
        (ended > 0).then(|| self.answered_within_sl as f64 / ended as f64)
    }

    /// Average speed of answer in ms.
    pub fn asa_ms(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.answered_wait_ms as f64 / self.answered as f64)
    }

    /// Average handle time in ms.
    pub fn aht_ms(&self) -> Option<f64> {
        (self.handled > 0).then(|| self.handle_ms as f64 / self.handled as f64)
    }

    /// Abandoned (excluding short) ÷ offered.
    pub fn abandon_rate(&self) -> Option<f64> {
        (self.offered > 0)
            .then(|| (self.abandoned - self.short_abandoned) as f64 / self.offered as f64)
    }
}

/// Real-time statistics of one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueId,
    /// Contacts waiting (including callbacks), not ringing.
    pub waiting: u32,
    /// Contacts whose offer is ringing.
    pub ringing: u32,
    /// Longest current wait among waiting and ringing contacts, ms.
    pub longest_wait_ms: u64,
    /// Member agents by summary state.
    pub agents: AgentsByState,
    /// Members logged in and not paused (the `n` of the EWT model).
    pub serving_agents: u32,
    /// Cumulative counters.
    pub counters: QueueCounters,
    /// Service-level threshold, ms.
    pub service_level_threshold_ms: u64,
    /// The recent handle-time estimate used for EWT, ms.
    pub recent_aht_ms: f64,
}

/// Time spent per summary state, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimePerState {
    /// Logged out (since engine start).
    pub logged_out: u64,
    /// Available.
    pub available: u64,
    /// Reserved.
    pub reserved: u64,
    /// Busy.
    pub busy: u64,
    /// Wrap-up.
    pub wrap_up: u64,
    /// Paused.
    pub paused: u64,
}

impl TimePerState {
    /// Adds `ms` to `state`'s total.
    pub fn add(&mut self, state: &AgentState, ms: u64) {
        let slot = match state {
            AgentState::LoggedOut => &mut self.logged_out,
            AgentState::Available => &mut self.available,
            AgentState::Reserved => &mut self.reserved,
            AgentState::Busy => &mut self.busy,
            AgentState::WrapUp => &mut self.wrap_up,
            AgentState::Paused { .. } => &mut self.paused,
        };
        *slot = slot.saturating_add(ms);
    }
}

/// Real-time statistics of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    /// The agent.
    pub agent: AgentId,
    /// Current summary state.
    pub state: AgentState,
    /// Contacts connected (answered).
    pub handled: u64,
    /// Time per summary state up to `now`.
    pub time: TimePerState,
    /// Contacts in progress (ringing, talking or in wrap-up), all channels.
    pub active_contacts: u32,
    /// Consecutive unanswered offers (reset by an answer or unpause).
    pub no_answer_streak: u32,
}

impl AgentStats {
    /// (busy + wrap-up) ÷ (busy + wrap-up + available + reserved).
    pub fn occupancy(&self) -> Option<f64> {
        let working = self.time.busy + self.time.wrap_up;
        let total = working + self.time.available + self.time.reserved;
        (total > 0).then(|| working as f64 / total as f64)
    }
}

/// The EWT model (see the module docs): `position × aht ÷ max(serving, 1)`.
pub fn estimated_wait_ms(position: u32, recent_aht_ms: f64, serving_agents: u32) -> u64 {
    let ewt = f64::from(position) * recent_aht_ms / f64::from(serving_agents.max(1));
    // Saturating float-to-int cast is the intent: a huge estimate is "very long".
    ewt.max(0.0) as u64
}

/// Length of a reporting interval: 15 minutes.
pub const INTERVAL_MS: u64 = 15 * 60 * 1000;

/// Aggregates of one queue over one 15-minute interval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntervalStats {
    /// The queue.
    pub queue: Option<QueueId>,
    /// Interval start (a multiple of 15 minutes since the epoch).
    pub start: Timestamp,
    /// Counters; events are counted in the interval in which they happened (offered at
    /// entry, answered at connect, handled at the end of wrap-up).
    pub counters: QueueCounters,
}

/// Builds 15-minute interval aggregates from queue-log events, so reports can be
/// recomputed from the persisted log. Feed events in time order.
#[derive(Debug, Clone, Default)]
pub struct IntervalAggregator {
    thresholds_ms: HashMap<QueueId, u64>,
    default_threshold_ms: u64,
    short_abandon_ms: u64,
    buckets: BTreeMap<(QueueId, Timestamp), QueueCounters>,
    /// Talk time of contacts in wrap-up, by (contact, agent): a transferred contact can be
    /// in wrap-up with two agents at once.
    talk_ms: HashMap<(ContactId, Option<AgentId>), u64>,
}

impl IntervalAggregator {
    /// An aggregator using `config`'s service-level thresholds and short-abandon limit.
    pub fn new(config: &RoutingConfig) -> Self {
        IntervalAggregator {
            thresholds_ms: config
                .queues
                .iter()
                .map(|(id, q)| (id.clone(), q.service_level_s.saturating_mul(1000)))
                .collect(),
            default_threshold_ms: 20_000,
            short_abandon_ms: config.settings.short_abandon_ms,
            buckets: BTreeMap::new(),
            talk_ms: HashMap::new(),
        }
    }

    fn bucket(&mut self, queue: &QueueId, at: Timestamp) -> &mut QueueCounters {
        let start = Timestamp(at.0 - at.0 % INTERVAL_MS);
        self.buckets.entry((queue.clone(), start)).or_default()
    }

    /// Adds one queue-log event.
    pub fn record(&mut self, event: &QueueLogEvent) {
        let Some(queue) = &event.queue else {
            return;
        };
        let threshold = self
            .thresholds_ms
            .get(queue)
            .copied()
            .unwrap_or(self.default_threshold_ms);
        let short = self.short_abandon_ms;
        match &event.kind {
            QueueLogKind::Enter { .. } => self.bucket(queue, event.at).offered += 1,
            QueueLogKind::Refused { .. } => {
                let b = self.bucket(queue, event.at);
                b.offered += 1;
                b.overflowed += 1;
                b.refused += 1;
            }
            QueueLogKind::Connect { wait_ms, .. } => {
                let b = self.bucket(queue, event.at);
                b.answered += 1;
                b.answered_wait_ms += wait_ms;
                if *wait_ms <= threshold {
                    b.answered_within_sl += 1;
                }
            }
            QueueLogKind::Assign {
                from: None,
                wait_ms,
            } => {
                let b = self.bucket(queue, event.at);
                b.answered += 1;
                b.answered_wait_ms += wait_ms;
                if *wait_ms <= threshold {
                    b.answered_within_sl += 1;
                }
            }
            QueueLogKind::Abandon { wait_ms, .. } => {
                let b = self.bucket(queue, event.at);
                b.abandoned += 1;
                if *wait_ms < short {
                    b.short_abandoned += 1;
                }
            }
            QueueLogKind::Overflow { .. } => self.bucket(queue, event.at).overflowed += 1,
            QueueLogKind::Transfer { wait_ms: _, .. } if event.agent.is_none() => {
                let b = self.bucket(queue, event.at);
                b.overflowed += 1;
                b.transferred_out += 1;
            }
            QueueLogKind::Complete { talk_ms } => {
                if let Some(c) = event.contact {
                    self.talk_ms.insert((c, event.agent.clone()), *talk_ms);
                }
            }
            QueueLogKind::WrapUpEnd { wrap_up_ms } => {
                let talk = event
                    .contact
                    .and_then(|c| self.talk_ms.remove(&(c, event.agent.clone())))
                    .unwrap_or(0);
                let b = self.bucket(queue, event.at);
                b.handled += 1;
                b.handle_ms += talk + wrap_up_ms;
            }
            _ => {}
        }
    }

    /// The intervals so far, ordered by queue then start.
    pub fn intervals(&self) -> Vec<IntervalStats> {
        self.buckets
            .iter()
            .map(|((q, start), c)| IntervalStats {
                queue: Some(q.clone()),
                start: *start,
                counters: *c,
            })
            .collect()
    }
}
