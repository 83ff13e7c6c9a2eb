//! The routing engine: queues, agents, offers and timers as one sans-IO state machine.
//!
//! Every input mutates state and marks the contacts and agents it touched as *dirty*;
//! before returning, `Engine::settle` routes each dirty contact (looking for an agent in
//! its queues' available-agent indexes) and each dirty agent (looking at the heads of its
//! queues' waiting lists) until nothing is left to match. Because every change that can
//! make a pair matchable marks one side dirty, no contact is left waiting while an
//! eligible agent is available, and no input ever scans all agents or all contacts.

mod query;
mod reconfig;
mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::{
    ConfigError, Disposition, EscalationAction, RoutingConfig, Settings, Strategy,
};
use crate::error::EngineError;
use crate::hours::CompiledHours;
use crate::ids::{AgentId, Channel, ContactId, OfferId, QueueId, SkillId, Timestamp};
use crate::io::{
    Action, AgentState, CancelReason, Input, MAX_PRIORITY, NewContact, QueueLogEvent, QueueLogKind,
    RefusalReason, RejectKind,
};
use crate::skill_expr::{CompiledExpr, SkillExpr};
use crate::stats::{TimePerState, estimated_wait_ms};

use state::{
    Agent, AvailEntry, Contact, FastMap, Member, Offer, Phase, Queue, Step, Timer, WaitKey, WrapUp,
};

/// How often a refused or overflowed contact may be sent on to another queue in one go;
/// stops configuration cycles (A closed → B, B closed → A) from looping.
const MAX_REDIRECTS: u32 = 8;

/// When an escalation step falls due while the contact rings, look again this much later.
const ESCALATION_RETRY_MS: u64 = 1_000;

/// Where a contact is in its life inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The channel.
    pub channel: Channel,
}

/// The routing engine. See the crate docs for the input/output contract.
#[derive(Debug)]
pub struct Engine {
    config: RoutingConfig,
    settings: Settings,
    seed: u64,
    rng: SmallRng,
    offer_counter: u64,
    seq: u64,
    skill_index: FastMap<SkillId, u32>,
    queue_index: FastMap<QueueId, u32>,
    agent_index: FastMap<AgentId, u32>,
    queues: Vec<Queue>,
    agents: Vec<Agent>,
    contacts: FastMap<ContactId, Contact>,
    wrapups: FastMap<ContactId, Vec<WrapUp>>,
    offers: FastMap<OfferId, Offer>,
    timers: BinaryHeap<Reverse<(Timestamp, u64, Timer)>>,
    timer_seq: u64,
    actions: VecDeque<Action>,
    dirty_contacts: Vec<ContactId>,
    dirty_agents: Vec<u32>,
}

fn compile_expr(expr: &SkillExpr, skills: &FastMap<SkillId, u32>) -> CompiledExpr {
    // An unknown skill compiles to an index no agent has, so the requirement is simply
    // unsatisfiable instead of an error (used after reconfiguration removed a skill).
    expr.compile(&|s: &SkillId| Some(skills.get(s).copied().unwrap_or(u32::MAX)))
        .unwrap_or(CompiledExpr::Or(Vec::new()))
}

impl Engine {
    /// Builds an engine from a configuration (validated here) and a seed for the random
    /// strategies and offer ids. All agents start logged out.
    pub fn new(config: RoutingConfig, seed: u64) -> Result<Engine, ConfigError> {
        config.validate()?;
        let mut skill_index = FastMap::default();
        for (i, id) in config.skills.keys().enumerate() {
            skill_index.insert(id.clone(), i as u32);
        }
        let mut queue_index = FastMap::default();
        for (i, id) in config.queues.keys().enumerate() {
            queue_index.insert(id.clone(), i as u32);
        }
        let q_idx = |q: &QueueId| -> Result<u32, ConfigError> {
            queue_index
                .get(q)
                .copied()
                .ok_or_else(|| ConfigError::Invalid {
                    field: "queues".into(),
                    message: format!("unknown queue `{q}`"),
                })
        };
        let mut queues = Vec::with_capacity(config.queues.len());
        for (id, q) in &config.queues {
            let hours =
                match &q.hours {
                    Some(name) => {
                        let h = config.business_hours.get(name).ok_or_else(|| {
                            ConfigError::Invalid {
                                field: format!("queues.{id}.hours"),
                                message: format!("unknown business_hours `{name}`"),
                            }
                        })?;
                        Some(
                            CompiledHours::compile(h).map_err(|message| ConfigError::Invalid {
                                field: format!("business_hours.{name}"),
                                message,
                            })?,
                        )
                    }
                    None => None,
                };
            let mut escalation = Vec::new();
            for step in &q.escalation {
                let compiled = match &step.action {
                    EscalationAction::RelaxProficiency(n) => Step::Relax(*n),
                    EscalationAction::AddQueueAgents(qs) => {
                        Step::AddQueues(qs.iter().map(q_idx).collect::<Result<_, _>>()?)
                    }
                    EscalationAction::RaisePriority(p) => Step::RaisePriority(*p),
                    EscalationAction::OverflowQueue(other) => {
                        Step::Overflow(Disposition::Queue(other.clone()))
                    }
                    EscalationAction::OverflowNumber(n) => {
                        Step::Overflow(Disposition::Number(n.clone()))
                    }
                    EscalationAction::OfferCallback => Step::OfferCallback,
                    EscalationAction::Voicemail => Step::Overflow(Disposition::Voicemail),
                };
                escalation.push((step.after_s.saturating_mul(1000), compiled));
            }
            escalation.sort_by_key(|(after, _)| *after);
            queues.push(Queue {
                id: id.clone(),
                strategy: q.strategy,
                requirement: q.skills.as_ref().map(|e| compile_expr(e, &skill_index)),
                weight: q.weight.max(1),
                wrap_up_ms: q.wrap_up_s.saturating_mul(1000),
                offer_timeout_ms: q.offer_timeout_s.saturating_mul(1000).max(1),
                max_waiting: q.max_waiting,
                full_action: q.full_action.clone(),
                no_agents_action: q.no_agents_action.clone(),
                sl_ms: q.service_level_s.saturating_mul(1000),
                hours,
                closed_action: q.closed_action.clone(),
                escalation,
                announce: q.announce.clone(),
                waiting: Default::default(),
                plain: Default::default(),
                special: Default::default(),
                available: Default::default(),
                members: Vec::new(),
                home_waiting: 0,
                home_ringing: 0,
                logged_in_members: 0,
                serving_members: 0,
                rr_last: None,
                counters: Default::default(),
                recent_aht_ms: q.default_aht_s as f64 * 1000.0,
                announce_at: None,
                hours_check_at: None,
            });
        }
        let mut agent_index = FastMap::default();
        let mut agents = Vec::with_capacity(config.agents.len());
        for (i, (id, a)) in config.agents.iter().enumerate() {
            agent_index.insert(id.clone(), i as u32);
            let mut levels = vec![0u8; config.skills.len()];
            for (skill, level) in &a.skills {
                if let Some(&s) = skill_index.get(skill) {
                    levels[s as usize] = *level;
                }
            }
            let mut members = Vec::new();
            for m in &a.queues {
                let q = q_idx(&m.queue)?;
                let queue = &mut queues[q as usize];
                queue.members.push(i as u32);
                let fits = queue
                    .requirement
                    .as_ref()
                    .is_none_or(|r| r.eval(&levels, 0));
                let score = queue.requirement.as_ref().map_or(0, |r| r.score(&levels));
                members.push(Member {
                    queue: q,
                    order: m.order,
                    weight: m.weight,
                    fits,
                    score,
                    key: None,
                    handled: 0,
                    talk_ms: 0,
                });
            }
            let c = &a.capacity;
            agents.push(Agent {
                id: id.clone(),
                levels,
                capacity: [c.voice, c.chat, c.email, c.task],
                voice_exclusive: c.voice_exclusive,
                members,
                logged_in: false,
                paused: None,
                delay_until: Timestamp::ZERO,
                idle_since: Timestamp::ZERO,
                active: [0; 4],
                ringing: 0,
                busy: 0,
                wrapping: 0,
                no_answer_streak: 0,
                handled: 0,
                external_call: false,
                state: AgentState::LoggedOut,
                state_since: Timestamp::ZERO,
                time: TimePerState::default(),
                indexed: false,
                indexed_load: 0,
                dirty: false,
            });
        }
        Ok(Engine {
            settings: config.settings.clone(),
            config,
            seed,
            rng: SmallRng::seed_from_u64(seed),
            offer_counter: 0,
            seq: 0,
            skill_index,
            queue_index,
            agent_index,
            queues,
            agents,
            contacts: FastMap::default(),
            wrapups: FastMap::default(),
            offers: FastMap::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            actions: VecDeque::new(),
            dirty_contacts: Vec::new(),
            dirty_agents: Vec::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    // ----- small helpers -------------------------------------------------------------

    fn queue_idx(&self, q: &QueueId) -> Result<u32, EngineError> {
        self.queue_index
            .get(q)
            .copied()
            .ok_or_else(|| EngineError::UnknownQueue(q.clone()))
    }

    fn agent_idx(&self, a: &AgentId) -> Result<u32, EngineError> {
        self.agent_index
            .get(a)
            .copied()
            .ok_or_else(|| EngineError::UnknownAgent(a.clone()))
    }

    fn q(&self, q: u32) -> &Queue {
        &self.queues[q as usize]
    }

    fn qm(&mut self, q: u32) -> &mut Queue {
        &mut self.queues[q as usize]
    }

    fn a(&self, a: u32) -> &Agent {
        &self.agents[a as usize]
    }

    fn am(&mut self, a: u32) -> &mut Agent {
        &mut self.agents[a as usize]
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn next_offer_id(&mut self) -> OfferId {
        self.offer_counter += 1;
        // Two rounds of splitmix64 over (seed, counter): distinct for distinct counters,
        // reproducible for a replay with the same seed, and spread over the UUID space.
        let hi = splitmix64(self.seed ^ self.offer_counter.rotate_left(32));
        let lo = splitmix64(hi ^ self.offer_counter);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        OfferId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    fn push_timer(&mut self, at: Timestamp, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, timer)));
    }

    fn log(
        &mut self,
        at: Timestamp,
        queue: Option<u32>,
        contact: Option<ContactId>,
        agent: Option<u32>,
        kind: QueueLogKind,
    ) {
        let event = QueueLogEvent {
            at,
            queue: queue.map(|q| self.q(q).id.clone()),
            contact,
            agent: agent.map(|a| self.a(a).id.clone()),
            kind,
        };
        self.actions.push_back(Action::QueueLog(event));
    }

    fn mark_contact(&mut self, c: ContactId) {
        if let Some(contact) = self.contacts.get_mut(&c)
            && !contact.dirty
        {
            contact.dirty = true;
            self.dirty_contacts.push(c);
        }
    }

    fn mark_agent(&mut self, a: u32) {
        let agent = self.am(a);
        if !agent.dirty {
            agent.dirty = true;
            self.dirty_agents.push(a);
        }
    }

    fn routable(&self, a: u32, now: Timestamp) -> bool {
        let agent = self.a(a);
        agent.logged_in
            && agent.paused.is_none()
            && now >= agent.delay_until
            && agent.has_room_any()
    }

    /// The agent's position in a queue's available set under its strategy (lower first).
    fn member_key(&mut self, a: u32, m: usize) -> u128 {
        let agent = &self.agents[a as usize];
        let member = &agent.members[m];
        let queue = &self.queues[member.queue as usize];
        let idle = u128::from(agent.idle_since.0);
        let load = u128::from(agent.total_active());
        let least_loaded_longest_idle = (load << 64) | idle;
        match queue.strategy {
            Strategy::LongestIdle | Strategy::RingAll => least_loaded_longest_idle,
            Strategy::RoundRobin | Strategy::Linear => {
                (u128::from(member.order) << 32) | u128::from(a)
            }
            Strategy::FewestContacts => (u128::from(member.handled) << 64) | idle,
            Strategy::LeastTalkTime => (u128::from(member.talk_ms) << 64) | idle,
            Strategy::BestSkillMatch => {
                (u128::from(u32::MAX - member.score) << 96) | least_loaded_longest_idle
            }
            Strategy::Random => u128::from(self.rng.random::<u64>()) << 64,
            Strategy::WeightedRandom => {
                // Efraimidis–Spirakis: the smallest Exp(weight) draw wins with probability
                // weight ÷ Σweights; draws stay valid while agents come and go because the
                // exponential is memoryless.
                let weight = member.weight;
                if weight == 0 {
                    u128::MAX >> 1
                } else {
                    let u: f64 = self.rng.random::<f64>();
                    let e = -(1.0 - u).ln() / f64::from(weight);
                    u128::from(e.to_bits()) << 64
                }
            }
        }
    }

    fn index_agent(&mut self, a: u32) {
        for m in 0..self.a(a).members.len() {
            let key = self.member_key(a, m);
            let q = self.a(a).members[m].queue;
            self.qm(q).available.insert((key, a, m as u32));
            self.am(a).members[m].key = Some(key);
        }
        let agent = self.am(a);
        agent.indexed = true;
        agent.indexed_load = agent.total_active();
    }

    fn unindex_agent(&mut self, a: u32) {
        for m in 0..self.a(a).members.len() {
            let member = &mut self.agents[a as usize].members[m];
            if let Some(key) = member.key.take() {
                let q = member.queue;
                self.qm(q).available.remove(&(key, a, m as u32));
            }
        }
        self.am(a).indexed = false;
    }

    fn eligible(&self, a: u32, c: &Contact) -> bool {
        let agent = self.a(a);
        if !agent.has_room(c.channel) {
            return false;
        }
        if c.transferred
            && self
                .wrapups
                .get(&c.id)
                .is_some_and(|l| l.iter().any(|w| w.agent == a))
        {
            return false;
        }
        if let Some(r) = &self.q(c.queue).requirement
            && !r.eval(&agent.levels, c.relax)
        {
            return false;
        }
        if let Some(r) = &c.requirement
            && !r.eval(&agent.levels, c.relax)
        {
            return false;
        }
        true
    }

    fn set_presence(&mut self, a: u32, logged_in: bool, paused: Option<String>) {
        let agent = self.a(a);
        let (was_in, was_serving) = (agent.logged_in, agent.logged_in && agent.paused.is_none());
        let now_serving = logged_in && paused.is_none();
        let members: Vec<u32> = agent.members.iter().map(|m| m.queue).collect();
        for q in members {
            let queue = self.qm(q);
            if was_in && !logged_in {
                queue.logged_in_members -= 1;
            } else if !was_in && logged_in {
                queue.logged_in_members += 1;
            }
            if was_serving && !now_serving {
                queue.serving_members -= 1;
            } else if !was_serving && now_serving {
                queue.serving_members += 1;
            }
        }
        let agent = self.am(a);
        agent.logged_in = logged_in;
        agent.paused = paused;
        self.mark_agent(a);
    }

    // ----- waiting lists ---------------------------------------------------------------

    fn list_contact(&mut self, c: ContactId) {
        let Some(contact) = self.contacts.get_mut(&c) else {
            return;
        };
        contact.phase = Phase::Waiting;
        let home = contact.queue;
        for &q in &contact.listed_in {
            self.queues[q as usize].insert_waiting(q, contact);
        }
        self.qm(home).home_waiting += 1;
        self.mark_contact(c);
    }

    fn unlist_contact(&mut self, c: ContactId) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        if contact.phase != Phase::Waiting {
            return;
        }
        let home = contact.queue;
        for &q in &contact.listed_in {
            self.queues[q as usize].remove_waiting(q, contact);
        }
        self.qm(home).home_waiting -= 1;
    }

    /// 1-based position of a waiting contact among its home queue's waiting contacts.
    ///
    /// Costs O(position): it counts the entries ahead in the B-tree. Only announcements
    /// (one per contact on entry and per `every_s` period) and abandon rows ask for it,
    /// never the routing path, and `max_waiting` bounds it where a queue sets one; at
    /// 10,000 waiting that is ~10 µs per call. An order-statistic tree would make it
    /// O(log n) if queues ever hold far more.
    fn position(&self, c: &Contact) -> u32 {
        let queue = self.q(c.queue);
        let ahead = queue
            .waiting
            .range(..c.key)
            .filter(|(_, id)| self.contacts.get(id).is_some_and(|o| o.queue == c.queue))
            .count();
        u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1)
    }

    // ----- inputs ----------------------------------------------------------------------

    /// Dispatches an [`Input`] to the matching `handle_*` method.
    pub fn handle_input(&mut self, now: Timestamp, input: Input) -> Result<(), EngineError> {
        match input {
            Input::NewContact(c) => self.handle_new_contact(now, c),
            Input::PriorityChanged { contact, priority } => {
                self.handle_priority_changed(now, contact, priority)
            }
            Input::CallbackRequested { contact } => self.handle_callback_requested(now, contact),
            Input::ContactAbandoned { contact } => self.handle_contact_abandoned(now, contact),
            Input::AgentLogin { agent } => self.handle_agent_login(now, &agent),
            Input::AgentLogout { agent } => self.handle_agent_logout(now, &agent),
            Input::AgentReady { agent } => self.handle_agent_ready(now, &agent),
            Input::AgentPause { agent, reason } => self.handle_agent_pause(now, &agent, &reason),
            Input::AgentUnpause { agent } => self.handle_agent_unpause(now, &agent),
            Input::OfferAccepted { offer } => self.handle_offer_accepted(now, offer),
            Input::OfferRejected { offer, kind } => self.handle_offer_rejected(now, offer, kind),
            Input::ContactEnded { contact } => self.handle_contact_ended(now, contact),
            Input::WrapUpEnded { contact } => self.handle_wrap_up_ended(now, contact),
            Input::Transfer { contact, queue } => self.handle_transfer(now, contact, &queue),
            Input::AssignToAgent { contact, agent } => {
                self.handle_assign_to_agent(now, contact, &agent)
            }
            Input::AgentBusy { agent, busy } => self.handle_agent_busy(now, &agent, busy),
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
        }
    }

    /// A contact arrives at a queue. It is refused (closed, full, no agents) or queued, and
    /// offered at once if an eligible agent is available.
    pub fn handle_new_contact(
        &mut self,
        now: Timestamp,
        contact: NewContact,
    ) -> Result<(), EngineError> {
        let q = self.queue_idx(&contact.queue)?;
        if self.contacts.contains_key(&contact.id) {
            return Err(EngineError::DuplicateContact(contact.id));
        }
        if let Some(expr) = &contact.requirement {
            for skill in expr.skills() {
                if !self.skill_index.contains_key(skill) {
                    return Err(EngineError::UnknownSkill {
                        contact: contact.id,
                        skill: skill.to_string(),
                    });
                }
            }
        }
        let requirement = contact
            .requirement
            .as_ref()
            .map(|e| compile_expr(e, &self.skill_index));
        let record = Contact {
            id: contact.id,
            queue: q,
            channel: contact.channel,
            priority: contact.priority.min(MAX_PRIORITY),
            entered: now,
            key: WaitKey {
                prio_rev: 0,
                entered: 0,
                seq: 0,
            },
            requirement_text: contact.requirement,
            requirement,
            relax: 0,
            listed_in: Vec::new(),
            phase: Phase::Waiting,
            callback: false,
            offers: Vec::new(),
            agent: None,
            queue_served: q,
            connected_at: now,
            next_step: 0,
            episode: 0,
            transferred: false,
            dirty: false,
        };
        self.enter_queue(now, record, q, 0);
        self.settle(now);
        Ok(())
    }

    /// Queues (or refuses) a contact that is not in `contacts`.
    fn enter_queue(&mut self, now: Timestamp, mut c: Contact, q: u32, redirects: u32) {
        self.qm(q).counters.offered += 1;
        let queue = self.q(q);
        let refusal = if queue.hours.as_ref().is_some_and(|h| !h.is_open(now)) {
            Some((RefusalReason::Closed, queue.closed_action.clone()))
        } else if let (Some(action), 0) = (&queue.no_agents_action, queue.logged_in_members) {
            Some((RefusalReason::NoAgents, action.clone()))
        } else if queue.max_waiting.is_some_and(|m| queue.home_waiting >= m) {
            Some((RefusalReason::QueueFull, queue.full_action.clone()))
        } else {
            None
        };
        if let Some((reason, then)) = refusal {
            let counters = &mut self.qm(q).counters;
            counters.overflowed += 1;
            counters.refused += 1;
            self.log(
                now,
                Some(q),
                Some(c.id),
                None,
                QueueLogKind::Refused { reason },
            );
            let queue_id = self.q(q).id.clone();
            self.actions.push_back(Action::Refused {
                contact: c.id,
                queue: queue_id,
                reason,
                then: then.clone(),
            });
            self.redirect(now, c, then, redirects);
            return;
        }
        c.queue = q;
        c.entered = now;
        c.key = WaitKey {
            prio_rev: MAX_PRIORITY - c.priority,
            entered: now.0,
            seq: self.next_seq(),
        };
        c.listed_in = vec![q];
        c.relax = 0;
        c.next_step = 0;
        c.episode = c.episode.wrapping_add(1);
        c.offers.clear();
        c.agent = None;
        c.dirty = false;
        let (id, channel, priority, episode) = (c.id, c.channel, c.priority, c.episode);
        self.contacts.insert(id, c);
        self.log(
            now,
            Some(q),
            Some(id),
            None,
            QueueLogKind::Enter { channel, priority },
        );
        self.list_contact(id);
        self.ensure_hours_check(now, q);
        if let Some(&(after, _)) = self.q(q).escalation.first() {
            self.push_timer(now.plus_ms(after), Timer::Escalation(id, episode, 0));
        }
        if let Some(announce) = self.q(q).announce.clone() {
            if announce.on_entry {
                self.announce_entry(id);
            }
            if announce.every_s > 0 && self.q(q).announce_at.is_none() {
                let at = now.plus_ms(announce.every_s.saturating_mul(1000));
                self.qm(q).announce_at = Some(at);
                self.push_timer(at, Timer::Announce(q));
            }
        }
    }

    /// Sends a contact that left a queue on to `then`; only `Queue` keeps it in the engine.
    fn redirect(&mut self, now: Timestamp, c: Contact, then: Disposition, redirects: u32) {
        if let Disposition::Queue(target) = then
            && let Some(&q2) = self.queue_index.get(&target)
            && redirects < MAX_REDIRECTS
        {
            self.enter_queue(now, c, q2, redirects + 1);
        }
    }

    /// Makes sure a queue with business hours and waiting home contacts has a check
    /// scheduled for the end of its open range (at `now` if it is closed already).
    fn ensure_hours_check(&mut self, now: Timestamp, q: u32) {
        let queue = self.q(q);
        if queue.hours_check_at.is_some() || queue.home_waiting == 0 {
            return;
        }
        let Some(hours) = &queue.hours else {
            return;
        };
        let at = hours.open_until(now).unwrap_or(now).max(now);
        self.qm(q).hours_check_at = Some(at);
        self.push_timer(at, Timer::HoursCheck(q));
    }

    /// Sends every contact waiting in its home queue `q` on to `then`: the queue closed or
    /// lost its last logged-in agent. Logged and counted like an escalation overflow
    /// (`Action::Overflow`), since the contacts had been queued. Ringing contacts stay:
    /// an agent is about to answer; should the offer fail they are checked again.
    fn evict_waiting(&mut self, now: Timestamp, q: u32, then: Disposition) {
        let queue = self.q(q);
        let victims: Vec<ContactId> = queue
            .waiting
            .values()
            .filter(|id| {
                self.contacts
                    .get(id)
                    .is_some_and(|c| c.queue == q && c.phase == Phase::Waiting)
            })
            .copied()
            .collect();
        for contact in victims {
            self.evict_one(now, q, contact, then.clone());
        }
    }

    fn evict_one(&mut self, now: Timestamp, q: u32, contact: ContactId, then: Disposition) {
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        let wait_ms = now.ms_since(c.entered);
        self.withdraw(now, contact, CancelReason::Withdrawn);
        self.qm(q).counters.overflowed += 1;
        self.log(
            now,
            Some(q),
            Some(contact),
            None,
            QueueLogKind::Overflow {
                target: then.clone(),
                wait_ms,
            },
        );
        let queue = self.q(q).id.clone();
        self.actions.push_back(Action::Overflow {
            contact,
            queue,
            target: then.clone(),
        });
        if let Some(record) = self.contacts.remove(&contact) {
            self.redirect(now, record, then, 0);
        }
    }

    /// The no-agents action for waiting contacts once nobody is logged in to `q`.
    fn evict_if_unstaffed(&mut self, now: Timestamp, q: u32) {
        let queue = self.q(q);
        if queue.logged_in_members == 0
            && queue.home_waiting > 0
            && let Some(then) = queue.no_agents_action.clone()
        {
            self.evict_waiting(now, q, then);
        }
    }

    fn announce_entry(&mut self, c: ContactId) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        if contact.phase != Phase::Waiting || contact.callback {
            return;
        }
        let position = self.position(contact);
        let queue = self.q(contact.queue);
        let ewt_ms = estimated_wait_ms(position, queue.recent_aht_ms, queue.serving_members);
        self.actions.push_back(Action::Announce {
            contact: c,
            queue: queue.id.clone(),
            position,
            ewt_ms,
        });
    }

    /// A waiting contact's priority changes (re-sorted; keeps its entry time).
    pub fn handle_priority_changed(
        &mut self,
        now: Timestamp,
        contact: ContactId,
        priority: u16,
    ) -> Result<(), EngineError> {
        if !self.contacts.contains_key(&contact) {
            return Err(EngineError::UnknownContact(contact));
        }
        self.set_priority(contact, priority.min(MAX_PRIORITY));
        self.settle(now);
        Ok(())
    }

    fn set_priority(&mut self, c: ContactId, priority: u16) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        let waiting = contact.phase == Phase::Waiting;
        if waiting {
            self.unlist_contact(c);
        }
        if let Some(contact) = self.contacts.get_mut(&c) {
            contact.priority = priority;
            contact.key.prio_rev = MAX_PRIORITY - priority;
        }
        if waiting {
            self.list_contact(c);
        }
    }

    /// A waiting contact becomes a callback and keeps its position; at the head, with an
    /// agent reserved, the engine emits [`Action::DialCallback`].
    pub fn handle_callback_requested(
        &mut self,
        now: Timestamp,
        contact: ContactId,
    ) -> Result<(), EngineError> {
        let c = self
            .contacts
            .get_mut(&contact)
            .ok_or(EngineError::UnknownContact(contact))?;
        if c.phase != Phase::Waiting {
            return Err(EngineError::WrongState {
                what: "callback request",
                state: "not waiting",
            });
        }
        if c.callback {
            return Ok(());
        }
        c.callback = true;
        let q = c.queue;
        self.log(now, Some(q), Some(contact), None, QueueLogKind::Callback);
        self.settle(now);
        Ok(())
    }

    /// The customer hung up while waiting or ringing; ringing offers are cancelled.
    pub fn handle_contact_abandoned(
        &mut self,
        now: Timestamp,
        contact: ContactId,
    ) -> Result<(), EngineError> {
        let c = self
            .contacts
            .get(&contact)
            .ok_or(EngineError::UnknownContact(contact))?;
        if c.phase == Phase::Connected {
            return Err(EngineError::WrongState {
                what: "abandon",
                state: "connected (use contact ended)",
            });
        }
        let position = if c.phase == Phase::Waiting {
            self.position(c)
        } else {
            0
        };
        let wait_ms = now.ms_since(c.entered);
        let q = c.queue;
        self.withdraw(now, contact, CancelReason::Abandoned);
        let short = wait_ms < self.settings.short_abandon_ms;
        let counters = &mut self.qm(q).counters;
        counters.abandoned += 1;
        if short {
            counters.short_abandoned += 1;
        }
        self.log(
            now,
            Some(q),
            Some(contact),
            None,
            QueueLogKind::Abandon { wait_ms, position },
        );
        self.contacts.remove(&contact);
        self.settle(now);
        Ok(())
    }

    /// Takes a waiting or ringing contact out of its lists and cancels its offers; the
    /// record stays in `contacts` (the caller removes or re-queues it).
    fn withdraw(&mut self, now: Timestamp, c: ContactId, reason: CancelReason) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        match contact.phase {
            Phase::Waiting => self.unlist_contact(c),
            Phase::Offered => {
                let offers = contact.offers.clone();
                let home = contact.queue;
                for offer in offers {
                    self.cancel_offer(now, offer, reason);
                }
                self.qm(home).home_ringing -= 1;
            }
            Phase::Connected => {}
        }
        if let Some(contact) = self.contacts.get_mut(&c) {
            contact.offers.clear();
            contact.phase = Phase::Waiting;
        }
    }

    /// Cancels one ringing offer: frees the agent's slot and tells the shell.
    fn cancel_offer(&mut self, _now: Timestamp, offer: OfferId, reason: CancelReason) {
        let Some(o) = self.release_offer(offer) else {
            return;
        };
        let agent = self.a(o.agent).id.clone();
        self.actions.push_back(Action::CancelOffer {
            offer,
            contact: o.contact,
            agent,
            reason,
        });
    }

    /// Forgets an offer and frees the agent's slot; the contact's offer list is updated.
    fn release_offer(&mut self, offer: OfferId) -> Option<Offer> {
        let o = self.offers.remove(&offer)?;
        let agent = self.am(o.agent);
        agent.active[o.channel.index()] -= 1;
        agent.ringing -= 1;
        self.mark_agent(o.agent);
        if let Some(c) = self.contacts.get_mut(&o.contact) {
            c.offers.retain(|x| *x != offer);
        }
        Some(o)
    }

    /// The agent logs in and becomes available.
    pub fn handle_agent_login(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        if self.a(a).logged_in {
            return Err(EngineError::WrongState {
                what: "login",
                state: "logged in",
            });
        }
        self.set_presence(a, true, None);
        let agent = self.am(a);
        agent.no_answer_streak = 0;
        agent.delay_until = now;
        if agent.total_active() == 0 {
            agent.idle_since = now;
        }
        self.log(now, None, None, Some(a), QueueLogKind::Login);
        self.settle(now);
        Ok(())
    }

    /// The agent logs out: ringing offers are cancelled (their contacts go back to their
    /// place); contacts in progress stay until they end.
    pub fn handle_agent_logout(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        if !self.a(a).logged_in {
            return Err(EngineError::WrongState {
                what: "logout",
                state: "logged out",
            });
        }
        self.set_presence(a, false, None);
        self.unindex_agent(a);
        self.cancel_agent_offers(now, a, CancelReason::AgentLoggedOut);
        self.log(now, None, None, Some(a), QueueLogKind::Logout);
        for m in 0..self.a(a).members.len() {
            let q = self.a(a).members[m].queue;
            self.evict_if_unstaffed(now, q);
        }
        self.settle(now);
        Ok(())
    }

    fn cancel_agent_offers(&mut self, now: Timestamp, a: u32, reason: CancelReason) {
        // The scan below walks every ringing offer; most agents logging out ring nothing,
        // so skip it then (a shift change logs out thousands of agents at once).
        if self.a(a).ringing == 0 {
            return;
        }
        let mut ringing: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent == a)
            .map(|(id, _)| *id)
            .collect();
        ringing.sort();
        for offer in ringing {
            if let Some(o) = self.offers.get(&offer) {
                let c = o.contact;
                self.cancel_offer(now, offer, reason);
                self.requeue_if_unoffered(now, c);
            }
        }
    }

    /// After an offer ended without answer: if no other offer rings, back to its place.
    /// A contact back in a queue that closed or lost its agents meanwhile gets the
    /// queue's closed or no-agents action.
    fn requeue_if_unoffered(&mut self, now: Timestamp, c: ContactId) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        if contact.phase == Phase::Offered && contact.offers.is_empty() {
            let home = contact.queue;
            self.qm(home).home_ringing -= 1;
            self.list_contact(c);
            let queue = self.q(home);
            if queue.hours.as_ref().is_some_and(|h| !h.is_open(now)) {
                let then = queue.closed_action.clone();
                self.evict_one(now, home, c, then);
            } else if let (Some(then), 0) = (&queue.no_agents_action, queue.logged_in_members) {
                let then = then.clone();
                self.evict_one(now, home, c, then);
            } else {
                self.ensure_hours_check(now, home);
            }
        }
    }

    /// The agent says they are ready: ends a pause (like unpause) and any reject/busy delay.
    pub fn handle_agent_ready(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        if !self.a(a).logged_in {
            return Err(EngineError::WrongState {
                what: "ready",
                state: "logged out",
            });
        }
        self.am(a).delay_until = now;
        self.unpause(now, a);
        self.mark_agent(a);
        self.settle(now);
        Ok(())
    }

    fn unpause(&mut self, now: Timestamp, a: u32) {
        if self.a(a).paused.is_some() {
            self.set_presence(a, true, None);
            let agent = self.am(a);
            agent.no_answer_streak = 0;
            if agent.total_active() == 0 {
                agent.idle_since = now;
            }
            self.log(now, None, None, Some(a), QueueLogKind::Unpause);
        }
    }

    /// The agent pauses with a reason code; contacts in progress continue.
    pub fn handle_agent_pause(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        reason: &str,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        if !self.a(a).logged_in {
            return Err(EngineError::WrongState {
                what: "pause",
                state: "logged out",
            });
        }
        self.pause(now, a, reason);
        self.settle(now);
        Ok(())
    }

    fn pause(&mut self, now: Timestamp, a: u32, reason: &str) {
        self.set_presence(a, true, Some(reason.to_owned()));
        self.unindex_agent(a);
        self.log(
            now,
            None,
            None,
            Some(a),
            QueueLogKind::Pause {
                reason: reason.to_owned(),
            },
        );
    }

    /// The agent ends a pause.
    pub fn handle_agent_unpause(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        if !self.a(a).logged_in {
            return Err(EngineError::WrongState {
                what: "unpause",
                state: "logged out",
            });
        }
        self.unpause(now, a);
        self.settle(now);
        Ok(())
    }

    /// The agent answered the offer: the contact is connected (ring-all: others cancelled).
    pub fn handle_offer_accepted(
        &mut self,
        now: Timestamp,
        offer: OfferId,
    ) -> Result<(), EngineError> {
        let o = self
            .offers
            .get(&offer)
            .ok_or(EngineError::UnknownOffer(offer))?
            .clone();
        let others: Vec<OfferId> = self
            .contacts
            .get(&o.contact)
            .map(|c| c.offers.iter().copied().filter(|x| *x != offer).collect())
            .unwrap_or_default();
        for other in others {
            self.cancel_offer(now, other, CancelReason::AnsweredElsewhere);
        }
        self.offers.remove(&offer);
        let agent = self.am(o.agent);
        agent.ringing -= 1;
        agent.busy += 1;
        agent.handled += 1;
        agent.no_answer_streak = 0;
        if let Some(m) = agent.members.iter_mut().find(|m| m.queue == o.queue) {
            m.handled += 1;
        }
        self.mark_agent(o.agent);
        let Some(c) = self.contacts.get_mut(&o.contact) else {
            return Ok(());
        };
        c.offers.clear();
        c.phase = Phase::Connected;
        c.agent = Some(o.agent);
        c.connected_at = now;
        c.queue_served = o.queue;
        let (home, wait_ms) = (c.queue, now.ms_since(c.entered));
        let queue = self.qm(home);
        queue.home_ringing -= 1;
        queue.counters.answered += 1;
        queue.counters.answered_wait_ms += wait_ms;
        if wait_ms <= queue.sl_ms {
            queue.counters.answered_within_sl += 1;
        }
        let ring_ms = now.ms_since(o.created);
        self.log(
            now,
            Some(home),
            Some(o.contact),
            Some(o.agent),
            QueueLogKind::Connect { wait_ms, ring_ms },
        );
        self.settle(now);
        Ok(())
    }

    /// The agent declined, was busy, or could not be reached: the contact goes back to its
    /// place and the agent gets the matching delay.
    pub fn handle_offer_rejected(
        &mut self,
        now: Timestamp,
        offer: OfferId,
        kind: RejectKind,
    ) -> Result<(), EngineError> {
        let o = self
            .release_offer(offer)
            .ok_or(EngineError::UnknownOffer(offer))?;
        let home = self.contacts.get(&o.contact).map_or(o.queue, |c| c.queue);
        self.log(
            now,
            Some(home),
            Some(o.contact),
            Some(o.agent),
            QueueLogKind::Reject { kind },
        );
        let delay = match kind {
            RejectKind::Declined => self.settings.reject_delay_ms,
            RejectKind::Busy => self.settings.busy_delay_ms,
            RejectKind::Failed => self.settings.no_answer_delay_ms,
        };
        self.delay_agent(now, o.agent, delay);
        if kind == RejectKind::Failed {
            self.count_no_answer(now, o.agent);
        }
        self.requeue_if_unoffered(now, o.contact);
        self.settle(now);
        Ok(())
    }

    fn delay_agent(&mut self, now: Timestamp, a: u32, delay_ms: u64) {
        if delay_ms == 0 {
            return;
        }
        let until = now.plus_ms(delay_ms);
        let agent = self.am(a);
        if until > agent.delay_until {
            agent.delay_until = until;
            self.unindex_agent(a);
            self.push_timer(until, Timer::AgentDelayEnd(a));
        }
        self.mark_agent(a);
    }

    fn count_no_answer(&mut self, now: Timestamp, a: u32) {
        let max = self.settings.max_no_answer;
        let agent = self.am(a);
        agent.no_answer_streak += 1;
        if max > 0 && agent.no_answer_streak >= max && agent.logged_in && agent.paused.is_none() {
            self.pause(now, a, "no-answer");
        }
    }

    /// The conversation ended: the agent enters the queue's wrap-up for this contact.
    pub fn handle_contact_ended(
        &mut self,
        now: Timestamp,
        contact: ContactId,
    ) -> Result<(), EngineError> {
        let c = self
            .contacts
            .get(&contact)
            .ok_or(EngineError::UnknownContact(contact))?;
        if c.phase != Phase::Connected {
            return Err(EngineError::WrongState {
                what: "contact ended",
                state: "not connected",
            });
        }
        self.end_conversation(now, contact);
        self.contacts.remove(&contact);
        self.settle(now);
        Ok(())
    }

    /// Moves a connected contact's agent into wrap-up (the record stays in `contacts`).
    fn end_conversation(&mut self, now: Timestamp, contact: ContactId) {
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        let Some(a) = c.agent else {
            return;
        };
        let (home, served, channel, talk_ms) = (
            c.queue,
            c.queue_served,
            c.channel,
            now.ms_since(c.connected_at),
        );
        self.log(
            now,
            Some(home),
            Some(contact),
            Some(a),
            QueueLogKind::Complete { talk_ms },
        );
        let agent = self.am(a);
        agent.busy -= 1;
        agent.wrapping += 1;
        let wrap_ms = self.q(home).wrap_up_ms;
        let until = now.plus_ms(wrap_ms);
        let wrap = WrapUp {
            agent: a,
            queue: home,
            served,
            channel,
            talk_ms,
            started: now,
            until,
        };
        if wrap_ms == 0 {
            // No after-contact work: finish at once without the wrap-up table round trip.
            self.complete_wrap_up(now, contact, wrap);
        } else {
            self.wrapups.entry(contact).or_default().push(wrap);
            self.mark_agent(a);
            self.push_timer(until, Timer::WrapUpEnd(contact, a));
        }
    }

    fn finish_wrap_up(&mut self, now: Timestamp, contact: ContactId, a: u32) {
        let Some(list) = self.wrapups.get_mut(&contact) else {
            return;
        };
        let Some(i) = list.iter().position(|w| w.agent == a) else {
            return;
        };
        let w = list.swap_remove(i);
        if list.is_empty() {
            self.wrapups.remove(&contact);
        }
        self.complete_wrap_up(now, contact, w);
    }

    /// Frees the agent's slot held by a finished wrap-up and books the handled contact.
    fn complete_wrap_up(&mut self, now: Timestamp, contact: ContactId, w: WrapUp) {
        let a = w.agent;
        let wrap_up_ms = now.ms_since(w.started);
        let agent = self.am(a);
        agent.wrapping -= 1;
        agent.active[w.channel.index()] -= 1;
        if agent.total_active() == 0 {
            agent.idle_since = now;
        }
        if let Some(m) = agent.members.iter_mut().find(|m| m.queue == w.served) {
            m.talk_ms += w.talk_ms;
        }
        let alpha = self.settings.aht_smoothing;
        let queue = self.qm(w.queue);
        let handle = w.talk_ms + wrap_up_ms;
        queue.counters.handled += 1;
        queue.counters.handle_ms += handle;
        queue.recent_aht_ms = (1.0 - alpha) * queue.recent_aht_ms + alpha * handle as f64;
        self.log(
            now,
            Some(w.queue),
            Some(contact),
            Some(a),
            QueueLogKind::WrapUpEnd { wrap_up_ms },
        );
        self.mark_agent(a);
    }

    /// The agent ends the contact's wrap-up early.
    pub fn handle_wrap_up_ended(
        &mut self,
        now: Timestamp,
        contact: ContactId,
    ) -> Result<(), EngineError> {
        let agents: Vec<u32> = self
            .wrapups
            .get(&contact)
            .ok_or(EngineError::UnknownContact(contact))?
            .iter()
            .map(|w| w.agent)
            .collect();
        for a in agents {
            self.finish_wrap_up(now, contact, a);
        }
        self.settle(now);
        Ok(())
    }

    /// Moves a contact to another queue with its priority: a waiting one leaves its queue;
    /// a connected one ends for its agent (wrap-up starts) and re-enters.
    pub fn handle_transfer(
        &mut self,
        now: Timestamp,
        contact: ContactId,
        queue: &QueueId,
    ) -> Result<(), EngineError> {
        let target = self.queue_idx(queue)?;
        let c = self
            .contacts
            .get(&contact)
            .ok_or(EngineError::UnknownContact(contact))?;
        let home = c.queue;
        if c.phase == Phase::Connected {
            let a = c.agent;
            self.end_conversation(now, contact);
            if let Some(c) = self.contacts.get_mut(&contact) {
                c.transferred = true;
            }
            self.log(
                now,
                Some(home),
                Some(contact),
                a,
                QueueLogKind::Transfer {
                    to: queue.clone(),
                    wait_ms: 0,
                },
            );
        } else {
            let wait_ms = now.ms_since(c.entered);
            self.withdraw(now, contact, CancelReason::Withdrawn);
            let counters = &mut self.qm(home).counters;
            counters.overflowed += 1;
            counters.transferred_out += 1;
            self.log(
                now,
                Some(home),
                Some(contact),
                None,
                QueueLogKind::Transfer {
                    to: queue.clone(),
                    wait_ms,
                },
            );
        }
        if let Some(record) = self.contacts.remove(&contact) {
            self.enter_queue(now, record, target, 0);
        }
        self.settle(now);
        Ok(())
    }

    /// The contact now belongs to `agent`: the shell connected it to that agent's phone
    /// outside the engine's offers (a blind transfer straight to the agent, an attended
    /// transfer to a consulted colleague).
    ///
    /// - Connected to another agent: that agent's conversation ends (a `complete` row, and
    ///   wrap-up as after [`Engine::handle_contact_ended`]); the contact is not offered back
    ///   to that agent during the wrap-up.
    /// - Waiting or ringing: it leaves its queue (offers are cancelled, `Withdrawn`) and
    ///   counts as answered there with its wait so far.
    ///
    /// Then the contact is connected to `agent`, whose slot for the channel it takes (the
    /// agent leaves the available sets when full); an `assign` row and
    /// [`Action::Assigned`] follow. Its later [`Engine::handle_contact_ended`] puts `agent`
    /// into the queue's wrap-up. Offers ringing at `agent` are cancelled (`Withdrawn`, their
    /// contacts back in place) when the contact would not fit beside them. If `agent` is
    /// logged out, has no room on the channel even so, is on a call outside the queues
    /// (voice) or already has the contact, this is an error and nothing changes. If `agent` is in wrap-up for this very contact (it came back), that
    /// wrap-up ends first.
    pub fn handle_assign_to_agent(
        &mut self,
        now: Timestamp,
        contact: ContactId,
        agent: &AgentId,
    ) -> Result<(), EngineError> {
        let b = self.agent_idx(agent)?;
        let c = self
            .contacts
            .get(&contact)
            .ok_or(EngineError::UnknownContact(contact))?;
        let (phase, from, channel, home, entered) =
            (c.phase, c.agent, c.channel, c.queue, c.entered);
        let target = self.a(b);
        if !target.logged_in {
            return Err(EngineError::WrongState {
                what: "assign",
                state: "the agent is logged out",
            });
        }
        if phase == Phase::Connected && from == Some(b) {
            return Err(EngineError::WrongState {
                what: "assign",
                state: "the agent already has the contact",
            });
        }
        let wrapping_it = self
            .wrapups
            .get(&contact)
            .is_some_and(|l| l.iter().any(|w| w.agent == b));
        let mut active = target.active;
        if wrapping_it {
            active[channel.index()] -= 1;
        }
        let fits_now = target.has_room_with(&active, channel);
        if !fits_now {
            // Offers ringing at the agent cannot be answered now that the phone has this
            // contact: without them it may fit.
            if target.ringing > 0 {
                for o in self.offers.values().filter(|o| o.agent == b) {
                    active[o.channel.index()] -= 1;
                }
            }
            if !self.a(b).has_room_with(&active, channel) {
                return Err(EngineError::WrongState {
                    what: "assign",
                    state: "the agent has no free capacity on the channel",
                });
            }
        }
        // From here on nothing can fail.
        if wrapping_it {
            self.finish_wrap_up(now, contact, b);
        }
        let wait_ms = match phase {
            Phase::Connected => {
                self.end_conversation(now, contact);
                if let Some(c) = self.contacts.get_mut(&contact) {
                    c.transferred = true;
                }
                None
            }
            Phase::Waiting | Phase::Offered => {
                self.withdraw(now, contact, CancelReason::Withdrawn);
                let wait_ms = now.ms_since(entered);
                let queue = self.qm(home);
                queue.counters.answered += 1;
                queue.counters.answered_wait_ms += wait_ms;
                if wait_ms <= queue.sl_ms {
                    queue.counters.answered_within_sl += 1;
                }
                Some(wait_ms)
            }
        };
        if !fits_now {
            self.cancel_agent_offers(now, b, CancelReason::Withdrawn);
        }
        let target = self.am(b);
        target.active[channel.index()] += 1;
        target.busy += 1;
        target.handled += 1;
        if let Some(m) = target.members.iter_mut().find(|m| m.queue == home) {
            m.handled += 1;
        }
        self.mark_agent(b);
        if let Some(c) = self.contacts.get_mut(&contact) {
            c.offers.clear();
            c.phase = Phase::Connected;
            c.agent = Some(b);
            c.connected_at = now;
            c.queue_served = home;
        }
        let from_id = match wait_ms {
            None => from.map(|a| self.a(a).id.clone()),
            Some(_) => None,
        };
        self.log(
            now,
            Some(home),
            Some(contact),
            Some(b),
            QueueLogKind::Assign {
                from: from_id.clone(),
                wait_ms: wait_ms.unwrap_or(0),
            },
        );
        self.actions.push_back(Action::Assigned {
            contact,
            agent: agent.clone(),
            queue: self.q(home).id.clone(),
            channel,
            from: from_id,
        });
        self.settle(now);
        Ok(())
    }

    /// The agent's phone is on a call outside the queues (`busy`), or no longer is: an
    /// internal call between agents' phones, a consultation before an attended transfer.
    /// While busy the agent is offered no voice contact (nor any contact with voice
    /// exclusivity) and its summary state is busy; ending it restores availability with
    /// no wrap-up, and the agent counts as idle from then. Idempotent, and accepted while
    /// logged out (the flag outlives a logout and a login in between: the phone is still
    /// on the call); an unknown agent is an error.
    pub fn handle_agent_busy(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        busy: bool,
    ) -> Result<(), EngineError> {
        let a = self.agent_idx(agent)?;
        let target = self.am(a);
        if target.external_call == busy {
            return Ok(());
        }
        target.external_call = busy;
        if !busy && target.total_active() == 0 {
            target.idle_since = now;
        }
        self.mark_agent(a);
        self.settle(now);
        Ok(())
    }

    /// Fires every deadline at or before `now` (offer timeouts, wrap-up ends, delays,
    /// escalation steps, announcements). Harmless to call early or often.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, timer))) = self.timers.pop() else {
                break;
            };
            self.fire(now, at, timer);
            // Settle after each timer so that later timers see the routing they caused.
            self.settle(now);
        }
        self.settle(now);
    }

    fn fire(&mut self, now: Timestamp, at: Timestamp, timer: Timer) {
        match timer {
            Timer::OfferExpiry(offer) => {
                let Some(o) = self.offers.get(&offer).cloned() else {
                    return;
                };
                let home = self.contacts.get(&o.contact).map_or(o.queue, |c| c.queue);
                self.cancel_offer(now, offer, CancelReason::Timeout);
                let ring_ms = now.ms_since(o.created);
                self.log(
                    now,
                    Some(home),
                    Some(o.contact),
                    Some(o.agent),
                    QueueLogKind::RingNoAnswer { ring_ms },
                );
                let delay = self.settings.no_answer_delay_ms;
                self.delay_agent(now, o.agent, delay);
                self.count_no_answer(now, o.agent);
                self.requeue_if_unoffered(now, o.contact);
            }
            Timer::WrapUpEnd(contact, a) => {
                let due = self
                    .wrapups
                    .get(&contact)
                    .is_some_and(|l| l.iter().any(|w| w.agent == a && w.until <= at));
                if due {
                    self.finish_wrap_up(now, contact, a);
                }
            }
            Timer::AgentDelayEnd(a) => {
                if self.a(a).delay_until <= now {
                    self.mark_agent(a);
                }
            }
            Timer::Escalation(contact, episode, step) => self.escalate(now, contact, episode, step),
            Timer::HoursCheck(q) => {
                if self.q(q).hours_check_at != Some(at) {
                    return;
                }
                self.qm(q).hours_check_at = None;
                let queue = self.q(q);
                if queue.hours.as_ref().is_some_and(|h| !h.is_open(now)) {
                    let then = queue.closed_action.clone();
                    self.evict_waiting(now, q, then);
                } else {
                    self.ensure_hours_check(now, q);
                }
            }
            Timer::Announce(q) => {
                if self.q(q).announce_at != Some(at) {
                    return;
                }
                self.qm(q).announce_at = None;
                let every = self.q(q).announce.as_ref().map_or(0, |a| a.every_s);
                let queue = self.q(q);
                let mut position = 0u32;
                let mut out = Vec::new();
                for id in queue.waiting.values() {
                    let Some(c) = self.contacts.get(id) else {
                        continue;
                    };
                    if c.queue != q {
                        continue;
                    }
                    position += 1;
                    if !c.callback {
                        let ewt_ms =
                            estimated_wait_ms(position, queue.recent_aht_ms, queue.serving_members);
                        out.push(Action::Announce {
                            contact: *id,
                            queue: queue.id.clone(),
                            position,
                            ewt_ms,
                        });
                    }
                }
                let any = position > 0;
                self.actions.extend(out);
                if any && every > 0 {
                    let next = now.plus_ms(every.saturating_mul(1000));
                    self.qm(q).announce_at = Some(next);
                    self.push_timer(next, Timer::Announce(q));
                }
            }
        }
    }

    fn escalate(&mut self, now: Timestamp, contact: ContactId, episode: u32, step: usize) {
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        if c.episode != episode || c.next_step != step {
            return;
        }
        match c.phase {
            Phase::Connected => return,
            Phase::Offered => {
                self.push_timer(
                    now.plus_ms(ESCALATION_RETRY_MS),
                    Timer::Escalation(contact, episode, step),
                );
                return;
            }
            Phase::Waiting => {}
        }
        let q = c.queue;
        let entered = c.entered;
        let Some((_, action)) = self.q(q).escalation.get(step).cloned() else {
            return;
        };
        if let Some(c) = self.contacts.get_mut(&contact) {
            c.next_step = step + 1;
        }
        if let Some(&(after, _)) = self.q(q).escalation.get(step + 1) {
            self.push_timer(
                entered.plus_ms(after),
                Timer::Escalation(contact, episode, step + 1),
            );
        }
        match action {
            Step::Relax(n) => {
                // Relisted: a relaxed contact is no longer plain (see `Contact::plain_in`).
                self.unlist_contact(contact);
                if let Some(c) = self.contacts.get_mut(&contact) {
                    c.relax = c.relax.saturating_add(n);
                }
                self.list_contact(contact);
            }
            Step::AddQueues(extra) => {
                self.unlist_contact(contact);
                if let Some(c) = self.contacts.get_mut(&contact) {
                    for q2 in extra {
                        if !c.listed_in.contains(&q2) {
                            c.listed_in.push(q2);
                        }
                    }
                }
                self.list_contact(contact);
            }
            Step::RaisePriority(p) => {
                let priority = self.contacts.get(&contact).map_or(0, |c| c.priority);
                self.set_priority(contact, priority.saturating_add(p).min(MAX_PRIORITY));
            }
            Step::OfferCallback => {
                let queue = self.q(q).id.clone();
                self.actions
                    .push_back(Action::OfferCallback { contact, queue });
            }
            Step::Overflow(target) => self.evict_one(now, q, contact, target),
        }
    }

    // ----- routing -----------------------------------------------------------------------

    /// Routes dirty contacts and agents until nothing more can be matched, and publishes
    /// agent state changes.
    fn settle(&mut self, now: Timestamp) {
        // Agents first: a freed agent takes the best waiting contact of its queues, so a
        // contact that has just (re-)entered cannot overtake earlier ones (FIFO). Contacts
        // then look for agents that are still free.
        loop {
            if let Some(a) = self.dirty_agents.pop() {
                self.am(a).dirty = false;
                self.refresh_agent(now, a);
            } else if let Some(c) = self.dirty_contacts.pop() {
                if let Some(contact) = self.contacts.get_mut(&c) {
                    contact.dirty = false;
                    self.route_contact(now, c);
                }
            } else {
                break;
            }
        }
    }

    fn refresh_agent(&mut self, now: Timestamp, a: u32) {
        let routable = self.routable(a, now);
        let agent = self.a(a);
        // Out of the indexes when no longer routable, or to be re-keyed when its load changed.
        if agent.indexed && (!routable || agent.indexed_load != agent.total_active()) {
            self.unindex_agent(a);
        }
        if routable {
            // Look for waiting work before entering the available indexes: an agent that
            // takes a contact at once and is then full would leave them again straight
            // away (5–20 B-tree inserts and removes for nothing).
            self.route_agent(now, a);
            if !self.a(a).indexed && self.routable(a, now) {
                self.index_agent(a);
            }
        }
        let agent = self.a(a);
        if agent.dirty {
            // Routing changed the agent again; the pending refresh publishes the final state.
            return;
        }
        let state = agent.summary_state();
        if state != agent.state {
            let agent = self.am(a);
            let old = std::mem::replace(&mut agent.state, state.clone());
            agent.time.add(&old, now.ms_since(agent.state_since));
            agent.state_since = now;
            let id = agent.id.clone();
            self.actions
                .push_back(Action::AgentStateChanged { agent: id, state });
        }
    }

    /// Finds agents for a waiting contact in its queues' available sets.
    fn route_contact(&mut self, now: Timestamp, c: ContactId) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        if contact.phase != Phase::Waiting {
            return;
        }
        let home = contact.queue;
        if self.q(home).strategy == Strategy::RingAll {
            let mut chosen: Vec<(u32, u32)> = Vec::new();
            for &q in &contact.listed_in {
                for &(_, a, _) in self.q(q).available.iter() {
                    if self.eligible(a, contact) && !chosen.iter().any(|(x, _)| *x == a) {
                        chosen.push((a, q));
                    }
                }
            }
            for (a, q) in chosen {
                self.make_offer(now, c, a, q);
            }
            return;
        }
        let listed = contact.listed_in.len();
        for i in 0..listed {
            let Some(&q) = self.contacts.get(&c).and_then(|x| x.listed_in.get(i)) else {
                return;
            };
            if let Some(a) = self.pick_agent(q, c) {
                self.make_offer(now, c, a, q);
                return;
            }
        }
    }

    /// The first eligible entry of queue `q`'s available set in strategy order.
    fn pick_agent(&self, q: u32, c: ContactId) -> Option<u32> {
        let contact = self.contacts.get(&c)?;
        let queue = self.q(q);
        // A plain contact needs no per-agent expression check: the member's `fits` says
        // whether the agent meets the queue's requirement.
        let plain = contact.plain_in(q);
        let ok = |e: &&AvailEntry| {
            let agent = self.a(e.1);
            if plain {
                agent.members[e.2 as usize].fits && agent.has_room(contact.channel)
            } else {
                self.eligible(e.1, contact)
            }
        };
        if queue.strategy == Strategy::RoundRobin
            && let Some(last) = queue.rr_last
        {
            let top = (last, u32::MAX, u32::MAX);
            return queue.available.after_then_before(top).find(ok).map(|e| e.1);
        }
        queue.available.iter().find(ok).map(|e| e.1)
    }

    /// Offers the best waiting contact across the agent's queues, while it has room.
    fn route_agent(&mut self, now: Timestamp, a: u32) {
        // Each round either makes an offer (using a slot) or stops, so this ends.
        for _ in 0..=self.a(a).capacity.iter().sum::<u32>() {
            if !self.a(a).has_room_any() {
                return;
            }
            let mut best: Option<(CandidateScore, ContactId, u32)> = None;
            let agent = self.a(a);
            let room = Channel::ALL.map(|ch| agent.has_room(ch));
            for m in &agent.members {
                let queue = self.q(m.queue);
                if queue.waiting.is_empty() {
                    continue;
                }
                // The queue's first contact this agent may take: the earliest head of the
                // plain lists it fits and has room for, unless a special contact before it
                // is eligible. Only special contacts are checked one by one.
                let mut first: Option<(WaitKey, ContactId)> = None;
                if m.fits {
                    for ch in Channel::ALL {
                        if !room[ch.index()] {
                            continue;
                        }
                        if let Some((&key, &id)) = queue.plain[ch.index()].first_key_value()
                            && first.is_none_or(|(k, _)| key < k)
                        {
                            first = Some((key, id));
                        }
                    }
                }
                for (&key, &id) in &queue.special {
                    if first.is_some_and(|(k, _)| k < key) {
                        break;
                    }
                    if self.contacts.get(&id).is_some_and(|c| self.eligible(a, c)) {
                        first = Some((key, id));
                        break;
                    }
                }
                if let Some((_, id)) = first {
                    let Some(c) = self.contacts.get(&id) else {
                        continue;
                    };
                    let weight = u128::from(self.q(c.queue).weight);
                    let score = (
                        c.priority,
                        u128::from(now.ms_since(c.entered)) * weight,
                        Reverse(c.key.seq),
                    );
                    if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                        best = Some((score, id, m.queue));
                    }
                }
            }
            let Some((_, c, q)) = best else {
                return;
            };
            let ring_all = self
                .contacts
                .get(&c)
                .is_some_and(|x| self.q(x.queue).strategy == Strategy::RingAll);
            if ring_all {
                // Ring-all offers to every eligible agent in the available indexes, this
                // one included.
                if !self.a(a).indexed {
                    self.index_agent(a);
                }
                self.route_contact(now, c);
            } else {
                self.make_offer(now, c, a, q);
            }
        }
    }

    fn make_offer(&mut self, now: Timestamp, c: ContactId, a: u32, q: u32) {
        let Some(contact) = self.contacts.get(&c) else {
            return;
        };
        let home = contact.queue;
        let channel = contact.channel;
        let callback = contact.callback;
        if contact.phase == Phase::Waiting {
            self.unlist_contact(c);
            self.qm(home).home_ringing += 1;
        }
        let offer = self.next_offer_id();
        if let Some(contact) = self.contacts.get_mut(&c) {
            contact.phase = Phase::Offered;
            contact.offers.push(offer);
        }
        if self.q(q).strategy == Strategy::RoundRobin {
            let key = self
                .a(a)
                .members
                .iter()
                .find(|m| m.queue == q)
                .and_then(|m| m.key);
            if key.is_some() {
                self.qm(q).rr_last = key;
            }
        }
        let agent = self.am(a);
        agent.active[channel.index()] += 1;
        agent.ringing += 1;
        if !agent.has_room_any() {
            self.unindex_agent(a);
        }
        self.mark_agent(a);
        let expires_at = now.plus_ms(self.q(home).offer_timeout_ms);
        self.offers.insert(
            offer,
            Offer {
                contact: c,
                agent: a,
                queue: q,
                channel,
                created: now,
            },
        );
        self.push_timer(expires_at, Timer::OfferExpiry(offer));
        let agent_id = self.a(a).id.clone();
        let queue_id = self.q(q).id.clone();
        self.actions.push_back(if callback {
            Action::DialCallback {
                offer,
                contact: c,
                agent: agent_id,
                queue: queue_id,
                expires_at,
            }
        } else {
            Action::Offer {
                offer,
                contact: c,
                agent: agent_id,
                queue: queue_id,
                channel,
                expires_at,
            }
        });
        self.log(
            now,
            Some(home),
            Some(c),
            Some(a),
            QueueLogKind::Offer { offer },
        );
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next action for the shell; drain until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next (`None` = nothing scheduled).
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Timestamp> {
        // Drop deadlines that no longer matter (answered offers, ended wrap-ups) so the
        // shell does not wake up for nothing.
        while let Some(Reverse((at, _, timer))) = self.timers.peek() {
            if self.timer_live(*at, timer) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_live(&self, at: Timestamp, timer: &Timer) -> bool {
        match timer {
            Timer::OfferExpiry(o) => self.offers.contains_key(o),
            Timer::WrapUpEnd(c, a) => self
                .wrapups
                .get(c)
                .is_some_and(|l| l.iter().any(|w| w.agent == *a && w.until == at)),
            Timer::AgentDelayEnd(a) => self.a(*a).delay_until == at,
            Timer::Escalation(c, episode, step) => self.contacts.get(c).is_some_and(|x| {
                x.episode == *episode && x.next_step == *step && x.phase != Phase::Connected
            }),
            Timer::Announce(q) => self.q(*q).announce_at == Some(at),
            Timer::HoursCheck(q) => self.q(*q).hours_check_at == Some(at),
        }
    }
}

/// How a waiting contact ranks for an agent across queues: priority, then wait × queue
/// weight, then arrival order (the earlier sequence wins).
type CandidateScore = (u16, u128, Reverse<u64>);

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
