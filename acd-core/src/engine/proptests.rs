//! Property tests: random operation sequences against the routing invariants of issue 2 §3.
//!
//! After every operation (and draining the engine) the test checks, against a shadow model
//! built only from the engine's actions:
//! 1. no agent holds more contacts of a channel than its capacity (voice exclusive);
//! 2. no contact rings at two agents at once, except in the ring-all queue;
//! 3. no contact is offered to an agent lacking the required skills;
//! 4. no contact waits while an eligible agent is available;
//! 5. FIFO within equal priority in one queue: an offered contact never overtakes an
//!    earlier contact of its queue and priority that the same agent could have taken;
//! 6. per queue, offered = answered + abandoned + overflowed + waiting + ringing; and at
//!    the end the 15-minute aggregates recomputed from the queue log give the same totals.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::Engine;
use super::state::Phase;
use crate::config::RoutingConfig;
use crate::error::EngineError;
use crate::ids::{AgentId, Channel, ContactId, OfferId, QueueId, SkillId, Timestamp};
use crate::io::{Action, NewContact, QueueLogKind, RejectKind};
use crate::skill_expr::SkillExpr;
use crate::stats::IntervalAggregator;

const AGENTS: usize = 5;
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const OTHER_STRATEGIES: [&str; 8] = [
    "longest_idle",
    "round_robin",
    "fewest_contacts",
    "least_talk_time",
    "linear",
    "random",
    "weighted_random",
    "best_skill_match",
];

#[derive(Debug, Clone)]
struct Setup {
    strategy: usize,
    /// Per agent: skill levels of s0 and s1 (0 = lacks it).
    levels: Vec<[u8; 2]>,
    /// Per agent: membership bit mask over the three queues.
    queues: Vec<u8>,
}

fn config_text(setup: &Setup, variant: u8) -> String {
    let strategy = OTHER_STRATEGIES[(setup.strategy + variant as usize) % OTHER_STRATEGIES.len()];
    let q0_strategy = if variant.is_multiple_of(2) {
        "longest_idle"
    } else {
        "linear"
    };
    let mut t = format!(
        r#"
[settings]
max_no_answer = 2
reject_delay_ms = 3000
busy_delay_ms = 2000
no_answer_delay_ms = 1000
[skills.s0]
[skills.s1]
[queues.q0]
strategy = "{q0_strategy}"
skills = "s0"
wrap_up_s = 5
offer_timeout_s = 10
escalation = [ {{ after_s = 20, action = {{ raise_priority = 3 }} }}, {{ after_s = 60, action = {{ overflow_queue = "q2" }} }} ]
[queues.q1]
strategy = "ring_all"
max_waiting = 3
full_action = {{ queue = "q0" }}
offer_timeout_s = 8
[queues.q2]
strategy = "{strategy}"
weight = {weight}
offer_timeout_s = 12
escalation = [ {{ after_s = 30, action = "offer_callback" }} ]
"#,
        weight = 1 + variant % 3
    );
    for (i, (levels, mask)) in setup.levels.iter().zip(&setup.queues).enumerate() {
        let bump = u8::from(variant % 2 == 1);
        let mut skills = Vec::new();
        for (s, level) in levels.iter().enumerate() {
            if *level > 0 {
                skills.push(format!("s{s} = {}", (*level + bump).min(5)));
            }
        }
        let queues: Vec<String> = (0..3)
            .filter(|q| mask & (1 << q) != 0)
            .map(|q| {
                format!(
                    "{{ queue = \"{}\", order = {}, weight = {} }}",
                    QUEUES[q],
                    (i * 7 + q) % 5,
                    1 + i % 3
                )
            })
            .collect();
        t.push_str(&format!(
            "[agents.a{i}]\nskills = {{ {} }}\nqueues = [{}]\ncapacity = {{ voice = 1, chat = 2 }}\n",
            skills.join(", "),
            queues.join(", ")
        ));
    }
    t
}

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        queue: usize,
        chat: bool,
        priority: u16,
        req: Option<usize>,
    },
    Abandon(usize),
    Login(usize),
    Logout(usize),
    Ready(usize),
    Pause(usize),
    Unpause(usize),
    Accept(usize),
    Reject(usize, u8),
    Advance(u64),
    End(usize),
    WrapUpEnd(usize),
    Priority(usize, u16),
    Callback(usize),
    Transfer(usize, usize),
    Reconfigure(u8),
    /// A direct transfer to agent `.1` connected (any known contact).
    Assign(usize, usize),
    /// The agent's phone starts or ends a call outside the queues.
    Busy(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<bool>(), 0..4u16, proptest::option::weighted(0.3, 0..2usize))
            .prop_map(|(queue, chat, priority, req)| Op::Arrive { queue, chat, priority, req }),
        1 => any::<usize>().prop_map(Op::Abandon),
        3 => (0..AGENTS).prop_map(Op::Login),
        1 => (0..AGENTS).prop_map(Op::Logout),
        1 => (0..AGENTS).prop_map(Op::Ready),
        1 => (0..AGENTS).prop_map(Op::Pause),
        1 => (0..AGENTS).prop_map(Op::Unpause),
        5 => any::<usize>().prop_map(Op::Accept),
        1 => (any::<usize>(), 0..3u8).prop_map(|(i, k)| Op::Reject(i, k)),
        4 => prop_oneof![1..2_000u64, 2_000..15_000u64, 15_000..70_000u64].prop_map(Op::Advance),
        3 => any::<usize>().prop_map(Op::End),
        1 => any::<usize>().prop_map(Op::WrapUpEnd),
        1 => (any::<usize>(), 0..6u16).prop_map(|(i, p)| Op::Priority(i, p)),
        1 => any::<usize>().prop_map(Op::Callback),
        1 => (any::<usize>(), 0..3usize).prop_map(|(i, q)| Op::Transfer(i, q)),
        1 => (0..4u8).prop_map(Op::Reconfigure),
        1 => (any::<usize>(), 0..AGENTS).prop_map(|(i, a)| Op::Assign(i, a)),
        1 => (0..AGENTS, any::<bool>()).prop_map(|(a, b)| Op::Busy(a, b)),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        0..OTHER_STRATEGIES.len(),
        proptest::collection::vec([0..4u8, 0..4u8], AGENTS),
        proptest::collection::vec(1..8u8, AGENTS),
    )
        .prop_map(|(strategy, levels, queues)| Setup {
            strategy,
            levels,
            queues,
        })
}

/// What the shell knows, built only from actions.
#[derive(Default)]
struct Shadow {
    /// Ringing offers: offer → (contact, agent, channel).
    offers: BTreeMap<OfferId, (ContactId, AgentId, Channel)>,
    /// Connected: contact → (agent, channel).
    connected: BTreeMap<ContactId, (AgentId, Channel)>,
    /// In wrap-up: (contact, agent) → channel.
    wrapping: BTreeMap<(ContactId, AgentId), Channel>,
    /// Contact → (home queue, channel, requirement index).
    home: BTreeMap<ContactId, (QueueId, Channel, Option<usize>)>,
    log: Vec<crate::io::QueueLogEvent>,
    next_contact: u128,
}

const REQS: [&str; 2] = ["s1 >= 2", "s0 && !s1"];

struct World {
    engine: Engine,
    now: Timestamp,
    shadow: Shadow,
    setup: Setup,
    variant: u8,
}

impl World {
    fn config(&self) -> RoutingConfig {
        RoutingConfig::load(&config_text(&self.setup, self.variant), "prop.toml").unwrap()
    }

    fn pick<T: Clone>(items: &[T], i: usize) -> Option<T> {
        (!items.is_empty()).then(|| items[i % items.len()].clone())
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        let e = &mut self.engine;
        let agent = |i: usize| AgentId::new(format!("a{i}"));
        let known: Vec<ContactId> = self.shadow.home.keys().copied().collect();
        let offers: Vec<OfferId> = self.shadow.offers.keys().copied().collect();
        let connected: Vec<ContactId> = self.shadow.connected.keys().copied().collect();
        // Errors are expected (ops are random); the invariant checks are what matter.
        let _ = match op {
            Op::Arrive {
                queue,
                chat,
                priority,
                req,
            } => {
                self.shadow.next_contact += 1;
                let id = ContactId::from_u128(self.shadow.next_contact);
                let channel = if *chat { Channel::Chat } else { Channel::Voice };
                let mut c = NewContact::new(id, QueueId::from(QUEUES[*queue]), channel);
                c.priority = *priority;
                c.requirement = req.map(|r| SkillExpr::parse(REQS[r]).unwrap());
                self.shadow
                    .home
                    .insert(id, (c.queue.clone(), channel, *req));
                e.handle_new_contact(now, c)
            }
            Op::Abandon(i) => match Self::pick(&known, *i) {
                Some(c) => e.handle_contact_abandoned(now, c),
                None => Ok(()),
            },
            Op::Login(a) => e.handle_agent_login(now, &agent(*a)),
            Op::Logout(a) => e.handle_agent_logout(now, &agent(*a)),
            Op::Ready(a) => e.handle_agent_ready(now, &agent(*a)),
            Op::Pause(a) => e.handle_agent_pause(now, &agent(*a), "break"),
            Op::Unpause(a) => e.handle_agent_unpause(now, &agent(*a)),
            Op::Accept(i) => match Self::pick(&offers, *i) {
                Some(o) => {
                    let r = e.handle_offer_accepted(now, o);
                    if r.is_ok() {
                        let (c, a, ch) = self.shadow.offers.remove(&o).unwrap();
                        self.shadow.connected.insert(c, (a, ch));
                    }
                    r
                }
                None => Ok(()),
            },
            Op::Reject(i, k) => match Self::pick(&offers, *i) {
                Some(o) => {
                    let kind =
                        [RejectKind::Declined, RejectKind::Busy, RejectKind::Failed][*k as usize];
                    let r = e.handle_offer_rejected(now, o, kind);
                    if r.is_ok() {
                        self.shadow.offers.remove(&o);
                    }
                    r
                }
                None => Ok(()),
            },
            Op::Advance(ms) => {
                self.now = now.plus_ms(*ms);
                e.handle_timeout(self.now);
                Ok(())
            }
            Op::End(i) => match Self::pick(&connected, *i) {
                Some(c) => e.handle_contact_ended(now, c),
                None => Ok(()),
            },
            Op::WrapUpEnd(i) => {
                let w: Vec<ContactId> = self.shadow.wrapping.keys().map(|(c, _)| *c).collect();
                match Self::pick(&w, *i) {
                    Some(c) => e.handle_wrap_up_ended(now, c),
                    None => Ok(()),
                }
            }
            Op::Priority(i, p) => match Self::pick(&known, *i) {
                Some(c) => e.handle_priority_changed(now, c, *p),
                None => Ok(()),
            },
            Op::Callback(i) => match Self::pick(&known, *i) {
                Some(c) => e.handle_callback_requested(now, c),
                None => Ok(()),
            },
            Op::Transfer(i, q) => match Self::pick(&known, *i) {
                Some(c) => e.handle_transfer(now, c, &QueueId::from(QUEUES[*q])),
                None => Ok(()),
            },
            Op::Assign(i, a) => match Self::pick(&known, *i) {
                Some(c) => e.handle_assign_to_agent(now, c, &agent(*a)),
                None => Ok(()),
            },
            Op::Busy(a, busy) => e.handle_agent_busy(now, &agent(*a), *busy),
            Op::Reconfigure(v) => {
                self.variant = *v;
                let config = self.config();
                self.engine
                    .apply_config(now, config)
                    .map_err(|_| EngineError::WrongState {
                        what: "",
                        state: "",
                    })
            }
        };
    }

    /// Drains actions into the shadow model; returns the offers made in this step.
    fn drain(&mut self) -> Vec<(ContactId, AgentId)> {
        let mut made = Vec::new();
        while let Some(action) = self.engine.poll_action() {
            match &action {
                Action::Offer {
                    offer,
                    contact,
                    agent,
                    ..
                }
                | Action::DialCallback {
                    offer,
                    contact,
                    agent,
                    ..
                } => {
                    let channel = self.shadow.home[contact].1;
                    self.shadow
                        .offers
                        .insert(*offer, (*contact, agent.clone(), channel));
                    made.push((*contact, agent.clone()));
                }
                Action::CancelOffer { offer, .. } => {
                    self.shadow.offers.remove(offer);
                }
                Action::Assigned {
                    contact,
                    agent,
                    channel,
                    ..
                } => {
                    self.shadow
                        .connected
                        .insert(*contact, (agent.clone(), *channel));
                }
                Action::QueueLog(ev) => {
                    match &ev.kind {
                        QueueLogKind::Enter { .. } => {
                            let c = ev.contact.unwrap();
                            let entry = self.shadow.home.get_mut(&c).unwrap();
                            entry.0 = ev.queue.clone().unwrap();
                        }
                        QueueLogKind::Complete { .. } => {
                            let c = ev.contact.unwrap();
                            let (agent, ch) = self.shadow.connected.remove(&c).unwrap();
                            self.shadow.wrapping.insert((c, agent), ch);
                        }
                        QueueLogKind::WrapUpEnd { .. } => {
                            self.shadow
                                .wrapping
                                .remove(&(ev.contact.unwrap(), ev.agent.clone().unwrap()));
                        }
                        _ => {}
                    }
                    self.shadow.log.push(ev.clone());
                }
                _ => {}
            }
        }
        made
    }

    fn check(
        &self,
        made: &[(ContactId, AgentId)],
        waiting_before: &BTreeMap<ContactId, super::state::WaitKey>,
    ) -> Result<(), TestCaseError> {
        let config = self.engine.config();
        // 1. capacity per channel, voice exclusive.
        let mut load: BTreeMap<&AgentId, [u32; 4]> = BTreeMap::new();
        for (_, a, ch) in self.shadow.offers.values() {
            load.entry(a).or_default()[ch.index()] += 1;
        }
        for (a, ch) in self.shadow.connected.values() {
            load.entry(a).or_default()[ch.index()] += 1;
        }
        for ((_, a), ch) in &self.shadow.wrapping {
            load.entry(a).or_default()[ch.index()] += 1;
        }
        for (a, l) in &load {
            let cap = &config.agents[*a].capacity;
            for ch in Channel::ALL {
                prop_assert!(
                    l[ch.index()] <= cap.of(ch),
                    "agent {a} over capacity on {ch}: {l:?}"
                );
            }
            let others: u32 = l[1..].iter().sum();
            prop_assert!(
                l[0] == 0 || others == 0,
                "agent {a}: voice is exclusive but holds {l:?}"
            );
        }
        // 1b. no voice offer to an agent on a call outside the queues.
        for (c, a) in made {
            let on_call = self
                .engine
                .agent_index
                .get(a)
                .is_some_and(|&ai| self.engine.a(ai).external_call);
            prop_assert!(
                !(on_call && self.shadow.home[c].1 == Channel::Voice),
                "{c} offered to {a} during a call outside the queues"
            );
        }
        // 2. one agent per contact unless ring-all.
        let mut per_contact: BTreeMap<ContactId, u32> = BTreeMap::new();
        for (c, _, _) in self.shadow.offers.values() {
            *per_contact.entry(*c).or_default() += 1;
        }
        for (c, n) in per_contact {
            let home = &self.shadow.home[&c].0;
            prop_assert!(
                n == 1 || home.as_str() == "q1",
                "contact {c} rings at {n} agents in {home}"
            );
            prop_assert!(
                !self.shadow.connected.contains_key(&c),
                "contact {c} rings and is connected"
            );
        }
        // 3. skills at offer time.
        for (c, a) in made {
            let (home, _, req) = &self.shadow.home[c];
            let agent = &config.agents[a];
            let level = |s: &SkillId| agent.skills.get(s).copied().unwrap_or(0);
            if let Some(expr) = &config.queues[home].skills {
                prop_assert!(expr.matches(&level), "{c} offered to {a} lacking {expr}");
            }
            if let Some(r) = req {
                let expr = SkillExpr::parse(REQS[*r]).unwrap();
                prop_assert!(expr.matches(&level), "{c} offered to {a} lacking {expr}");
            }
        }
        // 4. no waiting contact with an eligible available agent.
        let e = &self.engine;
        for (id, c) in &e.contacts {
            if c.phase != Phase::Waiting {
                continue;
            }
            for &q in &c.listed_in {
                for &a in &e.q(q).members {
                    if e.routable(a, self.now) && e.eligible(a, c) {
                        prop_assert!(
                            false,
                            "contact {id} waits in {} while {} could take it",
                            e.q(q).id,
                            e.a(a).id
                        );
                    }
                }
            }
        }
        // 5. FIFO within equal priority in one queue.
        for (c, a) in made {
            let Some(offered) = e.contacts.get(c) else {
                continue;
            };
            let Some(&ai) = e.agent_index.get(a) else {
                continue;
            };
            for (id, d) in &e.contacts {
                if d.phase == Phase::Waiting
                    && waiting_before.get(id) == Some(&d.key)
                    && d.queue == offered.queue
                    && d.priority == offered.priority
                    && d.channel == offered.channel
                    && d.key < offered.key
                {
                    let skills_ok = e
                        .q(d.queue)
                        .requirement
                        .as_ref()
                        .is_none_or(|r| r.eval(&e.a(ai).levels, d.relax))
                        && d.requirement
                            .as_ref()
                            .is_none_or(|r| r.eval(&e.a(ai).levels, d.relax));
                    let member = e
                        .a(ai)
                        .members
                        .iter()
                        .any(|m| d.listed_in.contains(&m.queue));
                    // The documented exception: a transferred contact is not offered back
                    // to the agent still in wrap-up for it.
                    let returns_to_transferrer = d.transferred
                        && e.wrapups
                            .get(id)
                            .is_some_and(|l| l.iter().any(|w| w.agent == ai));
                    prop_assert!(
                        !(skills_ok && member && !returns_to_transferrer),
                        "{c} was offered to {a} before earlier {id}"
                    );
                }
            }
        }
        // 6. counters add up.
        for q in &e.queues {
            let c = &q.counters;
            prop_assert_eq!(
                c.offered,
                c.answered
                    + c.abandoned
                    + c.overflowed
                    + u64::from(q.home_waiting)
                    + u64::from(q.home_ringing),
                "queue {} counters {:?} waiting {} ringing {}",
                q.id,
                c,
                q.home_waiting,
                q.home_ringing
            );
            let really_waiting = e
                .contacts
                .values()
                .filter(|x| x.queue == e.queue_index[&q.id] && x.phase == Phase::Waiting)
                .count();
            prop_assert_eq!(really_waiting, q.home_waiting as usize);
        }
        Ok(())
    }

    /// Waiting contacts and their keys before a step: FIFO is judged only against contacts
    /// whose place did not change during the step (an escalation may raise a priority
    /// after an offer in the same `handle_timeout`).
    fn waiting_now(&self) -> BTreeMap<ContactId, super::state::WaitKey> {
        self.engine
            .contacts
            .iter()
            .filter(|(_, c)| c.phase == Phase::Waiting)
            .map(|(id, c)| (*id, c.key))
            .collect()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    // 1000 cases unless PROPTEST_CASES asks for another number (a longer run before release).
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn routing_invariants_hold_over_random_operations(setup in setup(), ops in proptest::collection::vec(op(), 1..80)) {
        let config = RoutingConfig::load(&config_text(&setup, 0), "prop.toml").unwrap();
        let mut w = World { engine: Engine::new(config, 42).unwrap(), now: Timestamp(1_700_000_000_000), shadow: Shadow::default(), setup, variant: 0 };
        for op in &ops {
            let before = w.waiting_now();
            w.apply(op);
            let made = w.drain();
            w.check(&made, &before)?;
        }
        // Reports recomputed from the queue log agree with the engine's counters.
        let mut agg = IntervalAggregator::new(w.engine.config());
        for ev in &w.shadow.log {
            agg.record(ev);
        }
        let mut totals: BTreeMap<QueueId, crate::stats::QueueCounters> = BTreeMap::new();
        for i in agg.intervals() {
            let t = totals.entry(i.queue.clone().unwrap()).or_default();
            t.offered += i.counters.offered;
            t.answered += i.counters.answered;
            t.answered_within_sl += i.counters.answered_within_sl;
            t.abandoned += i.counters.abandoned;
            t.short_abandoned += i.counters.short_abandoned;
            t.overflowed += i.counters.overflowed;
            t.answered_wait_ms += i.counters.answered_wait_ms;
            t.handled += i.counters.handled;
            t.handle_ms += i.counters.handle_ms;
        }
        for q in &w.engine.queues {
            let t = totals.get(&q.id).copied().unwrap_or_default();
            let c = q.counters;
            prop_assert_eq!(
                (t.offered, t.answered, t.answered_within_sl, t.abandoned, t.short_abandoned, t.overflowed, t.answered_wait_ms, t.handled, t.handle_ms),
                (c.offered, c.answered, c.answered_within_sl, c.abandoned, c.short_abandoned, c.overflowed, c.answered_wait_ms, c.handled, c.handle_ms),
                "queue {}", q.id
            );
        }
    }
}
