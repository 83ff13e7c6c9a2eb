//! Behaviour tests of the engine, one scenario each, with a fake clock.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::io::{
    Action, AgentState, CancelReason, NewContact, QueueLogKind, RefusalReason, RejectKind,
};

/// A test driver: the engine plus every action it emitted, drained after each input.
pub(crate) struct Harness {
    pub engine: Engine,
    pub now: Timestamp,
    pub log: Vec<Action>,
}

impl Harness {
    pub fn new(toml: &str) -> Self {
        let config = RoutingConfig::load(toml, "test.toml").unwrap();
        Harness {
            engine: Engine::new(config, 7).unwrap(),
            now: Timestamp(1_000_000),
            log: Vec::new(),
        }
    }

    /// Drains actions and returns only those emitted by the last input.
    pub fn drain(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = self.engine.poll_action() {
            out.push(a);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn login(&mut self, agent: &str) -> Vec<Action> {
        self.engine
            .handle_agent_login(self.now, &AgentId::from(agent))
            .unwrap();
        self.drain()
    }

    pub fn arrive(&mut self, n: u128, queue: &str) -> Vec<Action> {
        self.arrive_with(n, queue, Channel::Voice, 0, None)
    }

    pub fn arrive_with(
        &mut self,
        n: u128,
        queue: &str,
        channel: Channel,
        priority: u16,
        req: Option<&str>,
    ) -> Vec<Action> {
        let mut c = NewContact::new(ContactId::from_u128(n), QueueId::from(queue), channel);
        c.priority = priority;
        c.requirement = req.map(|r| SkillExpr::parse(r).unwrap());
        self.engine.handle_new_contact(self.now, c).unwrap();
        self.drain()
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.now.plus_ms(ms);
        self.engine.handle_timeout(self.now);
        self.drain()
    }
}

pub(crate) fn offers(actions: &[Action]) -> Vec<(OfferId, u128, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
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
            } => Some((*offer, contact.0.as_u128(), agent.to_string())),
            _ => None,
        })
        .collect()
}

fn one_offer(actions: &[Action]) -> (OfferId, u128, String) {
    let o = offers(actions);
    assert_eq!(o.len(), 1, "expected exactly one offer in {actions:#?}");
    o[0].clone()
}

const TWO_AGENTS: &str = r#"
[settings]
max_no_answer = 2
reject_delay_ms = 5000
[skills.german]
[skills.billing]
[queues.support]
wrap_up_s = 10
offer_timeout_s = 15
[agents.alice]
skills = { german = 3 }
queues = ["support"]
[agents.bob]
skills = { german = 1, billing = 2 }
queues = ["support"]
"#;

#[test]
fn longest_idle_agent_gets_the_first_contact() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("bob");
    h.now = h.now.plus_ms(1000);
    h.login("alice");
    let (_, c, agent) = one_offer(&h.arrive(1, "support"));
    assert_eq!((c, agent.as_str()), (1, "bob"), "bob has been idle longer");
    let (_, _, agent) = one_offer(&h.arrive(2, "support"));
    assert_eq!(agent, "alice");
    assert!(
        offers(&h.arrive(3, "support")).is_empty(),
        "nobody left: contact 3 waits"
    );
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap(),
        vec![ContactId::from_u128(3)]
    );
}

#[test]
fn full_lifecycle_with_wrap_up_and_state_changes() {
    let mut h = Harness::new(TWO_AGENTS);
    let out = h.login("alice");
    assert!(out.contains(&Action::AgentStateChanged {
        agent: "alice".into(),
        state: AgentState::Available
    }));
    let (offer, _, _) = one_offer(&h.arrive(1, "support"));
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Reserved)
    );
    h.now = h.now.plus_ms(3000);
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(a, Action::QueueLog(e) if e.kind == QueueLogKind::Connect { wait_ms: 3000, ring_ms: 3000 })));
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Busy)
    );
    h.now = h.now.plus_ms(60_000);
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    h.drain();
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::WrapUp)
    );
    // A contact arriving during wrap-up waits: voice is exclusive and wrap-up holds the slot.
    assert!(offers(&h.arrive(2, "support")).is_empty());
    assert_eq!(h.engine.poll_timeout(), Some(h.now.plus_ms(10_000)));
    let out = h.advance(10_000);
    let (_, c, agent) = one_offer(&out);
    assert_eq!(
        (c, agent.as_str()),
        (2, "alice"),
        "wrap-up end frees alice for the waiting contact"
    );
    let stats = h.engine.queue_stats(h.now, &"support".into()).unwrap();
    assert_eq!(stats.counters.handled, 1);
    assert_eq!(stats.counters.handle_ms, 70_000);
    assert_eq!(stats.counters.answered, 1);
    let astats = h.engine.agent_stats(h.now, &"alice".into()).unwrap();
    assert_eq!(astats.time.busy, 60_000);
    assert_eq!(astats.time.wrap_up, 10_000);
    assert_eq!(astats.handled, 1);
}

#[test]
fn timed_out_offer_returns_contact_to_its_place_and_auto_pauses() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    let (_, c1, _) = one_offer(&h.arrive(1, "support"));
    assert_eq!(c1, 1);
    h.now = h.now.plus_ms(1);
    h.arrive(2, "support");
    let out = h.advance(15_000);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::CancelOffer {
            reason: CancelReason::Timeout,
            ..
        }
    )));
    // alice rang out but has no delay (no_answer_delay_ms = 0): contact 1 is back at the head.
    let (_, c, agent) = one_offer(&out);
    assert_eq!(
        (c, agent.as_str()),
        (1, "alice"),
        "the failed contact keeps its place ahead of 2"
    );
    let out = h.advance(15_000);
    assert!(out.iter().any(|a| matches!(a, Action::QueueLog(e) if matches!(&e.kind, QueueLogKind::Pause { reason } if reason == "no-answer"))));
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Paused {
            reason: "no-answer".into()
        })
    );
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap(),
        vec![ContactId::from_u128(1), ContactId::from_u128(2)]
    );
}

#[test]
fn reject_delay_keeps_agent_out_until_it_expires() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    let (offer, _, _) = one_offer(&h.arrive(1, "support"));
    h.engine
        .handle_offer_rejected(h.now, offer, RejectKind::Declined)
        .unwrap();
    assert!(
        offers(&h.drain()).is_empty(),
        "reject delay: no immediate re-offer"
    );
    assert!(offers(&h.advance(4_999)).is_empty());
    let (_, c, _) = one_offer(&h.advance(1));
    assert_eq!(c, 1);
}

#[test]
fn skill_requirement_is_respected_and_relaxed_by_escalation() {
    let mut h = Harness::new(
        r#"
[skills.german]
[queues.de]
skills = "german >= 3"
escalation = [ { after_s = 30, action = { relax_proficiency = 2 } } ]
[agents.bob]
skills = { german = 1 }
queues = ["de"]
"#,
    );
    h.login("bob");
    assert!(offers(&h.arrive(1, "de")).is_empty(), "bob's german 1 < 3");
    assert!(offers(&h.advance(29_999)).is_empty());
    let (_, c, agent) = one_offer(&h.advance(1));
    assert_eq!((c, agent.as_str()), (1, "bob"), "relaxed to german >= 1");
}

#[test]
fn contact_requirement_with_expression() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    h.login("bob");
    let (_, _, agent) = one_offer(&h.arrive_with(
        1,
        "support",
        Channel::Voice,
        0,
        Some("german >= 1 && billing"),
    ));
    assert_eq!(agent, "bob", "only bob has billing");
    assert!(
        offers(&h.arrive_with(2, "support", Channel::Voice, 0, Some("german >= 4"))).is_empty()
    );
}

#[test]
fn priority_first_then_fifo() {
    let mut h = Harness::new(TWO_AGENTS);
    for (n, prio) in [(1, 0), (2, 5), (3, 0), (4, 5)] {
        h.arrive_with(n, "support", Channel::Voice, prio, None);
        h.now = h.now.plus_ms(10);
    }
    let order: Vec<u128> = h
        .engine
        .waiting_contacts(&"support".into())
        .unwrap()
        .iter()
        .map(|c| c.0.as_u128())
        .collect();
    assert_eq!(order, vec![2, 4, 1, 3]);
    h.engine
        .handle_priority_changed(h.now, ContactId::from_u128(3), 9)
        .unwrap();
    let order: Vec<u128> = h
        .engine
        .waiting_contacts(&"support".into())
        .unwrap()
        .iter()
        .map(|c| c.0.as_u128())
        .collect();
    assert_eq!(order, vec![3, 2, 4, 1]);
    let (_, c, _) = one_offer(&h.login("alice"));
    assert_eq!(c, 3);
}

#[test]
fn ring_all_offers_everyone_and_first_accept_cancels_the_rest() {
    let mut h = Harness::new(
        r#"
[queues.vip]
strategy = "ring_all"
[agents.a]
queues = ["vip"]
[agents.b]
queues = ["vip"]
[agents.c]
queues = ["vip"]
"#,
    );
    for a in ["a", "b", "c"] {
        h.login(a);
    }
    let o = offers(&h.arrive(1, "vip"));
    assert_eq!(o.len(), 3);
    let winner = o.iter().find(|x| x.2 == "b").unwrap().0;
    h.engine.handle_offer_accepted(h.now, winner).unwrap();
    let out = h.drain();
    let cancelled: Vec<&Action> = out
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::CancelOffer {
                    reason: CancelReason::AnsweredElsewhere,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(cancelled.len(), 2);
    assert_eq!(
        h.engine.agent_state(&"a".into()),
        Some(AgentState::Available)
    );
    assert_eq!(h.engine.agent_state(&"b".into()), Some(AgentState::Busy));
}

#[test]
fn round_robin_remembers_and_linear_goes_top_down() {
    let mut h = Harness::new(
        r#"
[queues.rr]
strategy = "round_robin"
wrap_up_s = 0
[queues.lin]
strategy = "linear"
wrap_up_s = 0
[agents.a]
queues = [{ queue = "rr", order = 1 }, { queue = "lin", order = 3 }]
[agents.b]
queues = [{ queue = "rr", order = 2 }, { queue = "lin", order = 1 }]
[agents.c]
queues = [{ queue = "rr", order = 3 }, { queue = "lin", order = 2 }]
"#,
    );
    for a in ["a", "b", "c"] {
        h.login(a);
    }
    let mut picked = Vec::new();
    for n in 1..=4u128 {
        let (offer, c, agent) = one_offer(&h.arrive(n, "rr"));
        picked.push(agent);
        h.engine.handle_offer_accepted(h.now, offer).unwrap();
        h.engine
            .handle_contact_ended(h.now, ContactId::from_u128(c))
            .unwrap();
        h.drain();
    }
    assert_eq!(picked, vec!["a", "b", "c", "a"]);
    let (_, _, agent) = one_offer(&h.arrive(10, "lin"));
    assert_eq!(agent, "b");
    let (_, _, agent) = one_offer(&h.arrive(11, "lin"));
    assert_eq!(agent, "c");
}

#[test]
fn chat_capacity_and_voice_exclusivity() {
    let mut h = Harness::new(
        r#"
[queues.chat]
[queues.phone]
[agents.a]
queues = ["chat", "phone"]
capacity = { chat = 3 }
"#,
    );
    h.login("a");
    for n in 1..=3 {
        assert_eq!(
            offers(&h.arrive_with(n, "chat", Channel::Chat, 0, None)).len(),
            1
        );
    }
    assert!(
        offers(&h.arrive_with(4, "chat", Channel::Chat, 0, None)).is_empty(),
        "capacity 3 reached"
    );
    assert!(
        offers(&h.arrive(5, "phone")).is_empty(),
        "voice is exclusive: chats block calls"
    );
    let stats = h.engine.agent_stats(h.now, &"a".into()).unwrap();
    assert_eq!(stats.active_contacts, 3);
}

#[test]
fn agent_in_several_queues_takes_longest_waiting_with_weights() {
    let mut h = Harness::new(
        r#"
[queues.a]
weight = 1
[queues.b]
weight = 3
[agents.x]
queues = ["a", "b"]
"#,
    );
    h.arrive(1, "a");
    h.now = h.now.plus_ms(20_000);
    h.arrive(2, "b");
    h.now = h.now.plus_ms(10_000);
    // Waits: contact 1 30 s × 1, contact 2 10 s × 3 = 30 s; the older sequence wins ties.
    let (_, c, _) = one_offer(&h.login("x"));
    assert_eq!(c, 1);
    let mut h2 = Harness::new(
        r#"
[queues.a]
[queues.b]
weight = 4
[agents.x]
queues = ["a", "b"]
"#,
    );
    h2.arrive(1, "a");
    h2.now = h2.now.plus_ms(20_000);
    h2.arrive(2, "b");
    h2.now = h2.now.plus_ms(10_000);
    let (_, c, _) = one_offer(&h2.login("x"));
    assert_eq!(c, 2, "40 s weighted beats 30 s");
}

#[test]
fn overflow_to_queue_and_voicemail_and_offer_callback() {
    let mut h = Harness::new(
        r#"
[queues.first]
escalation = [ { after_s = 10, action = "offer_callback" }, { after_s = 20, action = { overflow_queue = "second" } } ]
[queues.second]
escalation = [ { after_s = 5, action = "voicemail" } ]
"#,
    );
    h.arrive(1, "first");
    let out = h.advance(10_000);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::OfferCallback { .. }))
    );
    let out = h.advance(10_000);
    assert!(out.iter().any(|a| matches!(a, Action::Overflow { target: Disposition::Queue(q), .. } if q.as_str() == "second")));
    assert_eq!(
        h.engine
            .contact(ContactId::from_u128(1))
            .unwrap()
            .queue
            .as_str(),
        "second"
    );
    let out = h.advance(5_000);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Overflow {
            target: Disposition::Voicemail,
            ..
        }
    )));
    assert!(h.engine.contact(ContactId::from_u128(1)).is_none());
    let first = h
        .engine
        .queue_stats(h.now, &"first".into())
        .unwrap()
        .counters;
    let second = h
        .engine
        .queue_stats(h.now, &"second".into())
        .unwrap()
        .counters;
    assert_eq!((first.offered, first.overflowed), (1, 1));
    assert_eq!((second.offered, second.overflowed), (1, 1));
}

#[test]
fn add_queue_agents_escalation_reaches_other_members() {
    let mut h = Harness::new(
        r#"
[queues.small]
escalation = [ { after_s = 30, action = { add_queue_agents = ["big"] } } ]
[queues.big]
[agents.helper]
queues = ["big"]
"#,
    );
    h.login("helper");
    h.arrive(1, "small");
    assert!(offers(&h.advance(29_000)).is_empty());
    let (_, c, agent) = one_offer(&h.advance(1_000));
    assert_eq!((c, agent.as_str()), (1, "helper"));
}

#[test]
fn closed_full_and_no_agents_refusals() {
    let mut h = Harness::new(
        r#"
[business_hours.never]
time_zone = "UTC"
[queues.closed]
hours = "never"
closed_action = "voicemail"
[queues.tiny]
max_waiting = 1
full_action = { queue = "closed" }
[queues.staffed]
no_agents_action = "reject"
"#,
    );
    let out = h.arrive(1, "closed");
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Refused {
            reason: RefusalReason::Closed,
            then: Disposition::Voicemail,
            ..
        }
    )));
    h.arrive(2, "tiny");
    let out = h.arrive(3, "tiny");
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Refused {
            reason: RefusalReason::QueueFull,
            ..
        }
    )));
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Refused {
                reason: RefusalReason::Closed,
                ..
            }
        )),
        "redirected, then closed"
    );
    let out = h.arrive(4, "staffed");
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Refused {
            reason: RefusalReason::NoAgents,
            then: Disposition::Reject,
            ..
        }
    )));
}

#[test]
fn callback_keeps_position_and_dials_when_agent_reserved() {
    let mut h = Harness::new(TWO_AGENTS);
    h.arrive(1, "support");
    h.now = h.now.plus_ms(5);
    h.arrive(2, "support");
    h.engine
        .handle_callback_requested(h.now, ContactId::from_u128(1))
        .unwrap();
    h.drain();
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap()[0],
        ContactId::from_u128(1)
    );
    let out = h.login("alice");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DialCallback { contact, .. } if contact.0.as_u128() == 1))
    );
}

#[test]
fn abandon_while_ringing_cancels_the_offer() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    h.arrive(1, "support");
    h.now = h.now.plus_ms(2000);
    h.engine
        .handle_contact_abandoned(h.now, ContactId::from_u128(1))
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(
        a,
        Action::CancelOffer {
            reason: CancelReason::Abandoned,
            ..
        }
    )));
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Available)
    );
    let c = h
        .engine
        .queue_stats(h.now, &"support".into())
        .unwrap()
        .counters;
    assert_eq!((c.abandoned, c.short_abandoned), (1, 1));
}

#[test]
fn transfer_after_connect_wraps_up_and_requeues() {
    let mut h = Harness::new(
        r#"
[queues.first]
wrap_up_s = 30
[queues.second]
[agents.a]
queues = ["first"]
[agents.b]
queues = ["second"]
"#,
    );
    h.login("a");
    h.login("b");
    let (offer, _, _) = one_offer(&h.arrive(1, "first"));
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    h.drain();
    h.engine
        .handle_transfer(h.now, ContactId::from_u128(1), &"second".into())
        .unwrap();
    let (_, c, agent) = one_offer(&h.drain());
    assert_eq!((c, agent.as_str()), (1, "b"));
    assert_eq!(h.engine.agent_state(&"a".into()), Some(AgentState::WrapUp));
    h.engine
        .handle_wrap_up_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    h.drain();
    assert_eq!(
        h.engine.agent_state(&"a".into()),
        Some(AgentState::Available)
    );
}

#[test]
fn logout_while_ringing_requeues_the_contact() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    h.arrive(1, "support");
    h.engine
        .handle_agent_logout(h.now, &"alice".into())
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(
        a,
        Action::CancelOffer {
            reason: CancelReason::AgentLoggedOut,
            ..
        }
    )));
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap(),
        vec![ContactId::from_u128(1)]
    );
    let (_, c, agent) = one_offer(&h.login("bob"));
    assert_eq!((c, agent.as_str()), (1, "bob"));
}

#[test]
fn live_reconfiguration_keeps_contacts_and_applies_new_agents() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    let (offer, _, _) = one_offer(&h.arrive(1, "support"));
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    h.arrive(2, "support");
    h.arrive(3, "support");
    let mut config = h.engine.config().clone();
    config
        .agents
        .get_mut(&AgentId::from("bob"))
        .unwrap()
        .skills
        .insert("billing".into(), 5);
    config
        .queues
        .get_mut(&QueueId::from("support"))
        .unwrap()
        .strategy = Strategy::Linear;
    h.engine.apply_config(h.now, config.clone()).unwrap();
    h.drain();
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap().len(),
        2
    );
    assert_eq!(
        h.engine.contact(ContactId::from_u128(1)).unwrap().phase,
        ContactPhase::Connected
    );
    let (_, c, _) = one_offer(&h.login("bob"));
    assert_eq!(c, 2, "order kept across the reload");
    // Removing a queue that holds contacts is refused and changes nothing.
    let mut bad = config.clone();
    bad.queues.clear();
    for a in bad.agents.values_mut() {
        a.queues.clear();
    }
    assert!(matches!(
        h.engine.apply_config(h.now, bad),
        Err(ConfigError::InUse(_))
    ));
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap().len(),
        1
    );
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    h.drain();
    let stats = h.engine.queue_stats(h.now, &"support".into()).unwrap();
    assert_eq!(stats.counters.offered, 3);
}

#[test]
fn announcements_give_position_and_ewt() {
    let mut h = Harness::new(
        r#"
[queues.q]
default_aht_s = 120
announce = { on_entry = true, every_s = 30 }
[agents.a]
queues = ["q"]
[agents.b]
queues = ["q"]
"#,
    );
    h.login("a");
    h.login("b");
    h.engine
        .handle_agent_pause(h.now, &"a".into(), "lunch")
        .unwrap();
    h.engine
        .handle_agent_pause(h.now, &"b".into(), "lunch")
        .unwrap();
    h.drain();
    h.arrive(1, "q");
    let out = h.arrive(2, "q");
    assert!(out.contains(&Action::Announce {
        contact: ContactId::from_u128(2),
        queue: "q".into(),
        position: 2,
        ewt_ms: 240_000
    }));
    let out = h.advance(30_000);
    let positions: Vec<u32> = out
        .iter()
        .filter_map(|a| {
            if let Action::Announce { position, .. } = a {
                Some(*position)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(positions, vec![1, 2]);
}

#[test]
fn offer_ids_are_deterministic_per_seed() {
    let run = || {
        let mut h = Harness::new(TWO_AGENTS);
        h.login("alice");
        one_offer(&h.arrive(1, "support")).0
    };
    assert_eq!(run(), run());
}

#[test]
fn unknown_ids_are_errors_not_panics() {
    let mut h = Harness::new(TWO_AGENTS);
    let now = h.now;
    assert!(matches!(
        h.engine.handle_agent_login(now, &"nobody".into()),
        Err(EngineError::UnknownAgent(_))
    ));
    assert!(matches!(
        h.engine.handle_contact_ended(now, ContactId::from_u128(9)),
        Err(EngineError::UnknownContact(_))
    ));
    assert!(matches!(
        h.engine.handle_new_contact(
            now,
            NewContact::new(ContactId::from_u128(1), "nope".into(), Channel::Voice)
        ),
        Err(EngineError::UnknownQueue(_))
    ));
    let mut c = NewContact::new(ContactId::from_u128(1), "support".into(), Channel::Voice);
    c.requirement = Some(SkillExpr::parse("klingon").unwrap());
    assert!(matches!(
        h.engine.handle_new_contact(now, c),
        Err(EngineError::UnknownSkill { .. })
    ));
    assert!(h.drain().is_empty());
}

#[test]
fn inputs_and_actions_are_plain_serialisable_data() {
    // Replaying the same inputs as JSON gives the same actions (what a cluster node would do).
    let inputs = vec![
        Input::AgentLogin {
            agent: "alice".into(),
        },
        Input::NewContact(NewContact::new(
            ContactId::from_u128(1),
            "support".into(),
            Channel::Voice,
        )),
        Input::Timeout,
    ];
    let json = serde_json::to_string(&inputs).unwrap();
    let replayed: Vec<Input> = serde_json::from_str(&json).unwrap();
    assert_eq!(inputs, replayed);
    let run = |inputs: Vec<Input>| {
        let mut h = Harness::new(TWO_AGENTS);
        for i in inputs {
            h.engine.handle_input(h.now, i).unwrap();
            h.drain();
        }
        h.log
    };
    let actions = run(inputs);
    assert_eq!(actions, run(replayed));
    let text = serde_json::to_string(&actions).unwrap();
    let back: Vec<Action> = serde_json::from_str(&text).unwrap();
    assert_eq!(actions, back);
    assert!(text.contains("\"action\":\"offer\""), "{text}");
}

fn overflows(actions: &[Action]) -> Vec<(u128, String, Disposition)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Overflow {
                contact,
                queue,
                target,
            } => Some((contact.0.as_u128(), queue.to_string(), target.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn waiting_contacts_get_the_closed_action_when_the_queue_closes() {
    // The harness starts at 1970-01-01 00:16:40 UTC, a Thursday.
    let mut h = Harness::new(
        r#"
[business_hours.morning]
time_zone = "UTC"
weekly = { thu = ["00:00-00:30"] }
[queues.sales]
hours = "morning"
closed_action = "voicemail"
[agents.alice]
queues = ["sales"]
"#,
    );
    h.login("alice");
    let first = one_offer(&h.arrive(1, "sales"));
    h.engine.handle_offer_accepted(h.now, first.0).unwrap();
    h.drain();
    assert!(offers(&h.arrive(2, "sales")).is_empty());
    assert!(offers(&h.arrive(3, "sales")).is_empty());
    assert_eq!(
        h.engine.poll_timeout(),
        Some(Timestamp(30 * 60_000)),
        "a check is due when the open range ends"
    );
    // 00:29:59: still open, nobody leaves.
    let out = h.advance(30 * 60_000 - 1 - h.now.as_millis());
    assert!(overflows(&out).is_empty(), "{out:#?}");
    let out = h.advance(1);
    assert_eq!(
        overflows(&out),
        vec![
            (2, "sales".to_owned(), Disposition::Voicemail),
            (3, "sales".to_owned(), Disposition::Voicemail)
        ],
        "waiting contacts leave in queue order; the connected one stays"
    );
    let stats = h
        .engine
        .queue_stats(h.now, &QueueId::from("sales"))
        .unwrap();
    assert_eq!(stats.waiting, 0);
    assert_eq!(stats.counters.overflowed, 2);
    assert_eq!(stats.counters.offered, 3);
    assert_eq!(stats.counters.answered, 1);
    assert!(h.engine.contact(ContactId::from_u128(1)).is_some());
    assert!(h.engine.contact(ContactId::from_u128(2)).is_none());
}

#[test]
fn a_contact_requeued_after_closing_gets_the_closed_action() {
    let mut h = Harness::new(
        r#"
[business_hours.morning]
time_zone = "UTC"
weekly = { thu = ["00:00-00:30"] }
[queues.sales]
hours = "morning"
closed_action = { queue = "night" }
offer_timeout_s = 3600
[queues.night]
[agents.alice]
queues = ["sales"]
"#,
    );
    h.login("alice");
    let offer = one_offer(&h.arrive(1, "sales"));
    // Ringing across the closing time: the contact stays with the ringing agent.
    let out = h.advance(30 * 60_000 - h.now.as_millis());
    assert!(overflows(&out).is_empty(), "{out:#?}");
    h.engine
        .handle_offer_rejected(h.now, offer.0, RejectKind::Declined)
        .unwrap();
    let out = h.drain();
    assert_eq!(
        overflows(&out),
        vec![(1, "sales".to_owned(), Disposition::Queue("night".into()))]
    );
    assert_eq!(
        h.engine.waiting_contacts(&QueueId::from("night")).unwrap(),
        vec![ContactId::from_u128(1)]
    );
}

#[test]
fn waiting_contacts_get_the_no_agents_action_when_the_last_agent_logs_out() {
    let mut h = Harness::new(
        r#"
[queues.support]
no_agents_action = { queue = "backup" }
[queues.backup]
[agents.alice]
queues = ["support"]
[agents.bob]
queues = ["support"]
"#,
    );
    h.login("alice");
    h.login("bob");
    for n in 1..=2 {
        let o = one_offer(&h.arrive(n, "support"));
        h.engine.handle_offer_accepted(h.now, o.0).unwrap();
        h.drain();
    }
    h.arrive(3, "support");
    h.arrive(4, "support");
    h.engine
        .handle_agent_logout(h.now, &AgentId::from("alice"))
        .unwrap();
    assert!(overflows(&h.drain()).is_empty(), "bob is still logged in");
    h.engine
        .handle_agent_logout(h.now, &AgentId::from("bob"))
        .unwrap();
    let out = h.drain();
    let backup = Disposition::Queue("backup".into());
    assert_eq!(
        overflows(&out),
        vec![
            (3, "support".to_owned(), backup.clone()),
            (4, "support".to_owned(), backup)
        ]
    );
    assert_eq!(
        h.engine.waiting_contacts(&QueueId::from("backup")).unwrap(),
        vec![ContactId::from_u128(3), ContactId::from_u128(4)],
        "they keep their order in the backup queue"
    );
    let stats = h
        .engine
        .queue_stats(h.now, &QueueId::from("support"))
        .unwrap();
    assert_eq!(stats.waiting, 0);
    assert_eq!(stats.counters.overflowed, 2);
    // The two conversations in progress continue.
    assert!(h.engine.contact(ContactId::from_u128(1)).is_some());
}

#[test]
fn a_freed_agent_passes_contacts_it_may_not_take_and_keeps_queue_order() {
    let mut h = Harness::new(
        r#"
[skills.german]
[queues.support]
[agents.alice]
skills = { german = 3 }
queues = ["support"]
[agents.bob]
skills = { german = 1 }
queues = ["support"]
"#,
    );
    h.arrive_with(1, "support", Channel::Voice, 0, Some("german >= 3"));
    h.arrive(2, "support");
    h.arrive_with(3, "support", Channel::Voice, 0, Some("german >= 3"));
    h.arrive(4, "support");
    // Bob may not take 1 or 3: he gets the first contact he may take.
    assert_eq!(one_offer(&h.login("bob")).1, 2);
    // Alice takes the contact with its own requirement ahead of the plain one.
    assert_eq!(one_offer(&h.login("alice")).1, 1);
    assert_eq!(
        h.engine
            .waiting_contacts(&QueueId::from("support"))
            .unwrap(),
        vec![ContactId::from_u128(3), ContactId::from_u128(4)]
    );
}

#[test]
fn a_blended_agent_finds_the_chat_behind_a_deep_voice_queue() {
    let mut h = Harness::new(
        r#"
[queues.mixed]
[agents.carla]
queues = ["mixed"]
capacity = { voice = 1, chat = 2, voice_exclusive = false }
"#,
    );
    h.login("carla");
    for (n, channel) in [(1, Channel::Voice), (2, Channel::Chat), (3, Channel::Chat)] {
        let o = one_offer(&h.arrive_with(n, "mixed", channel, 0, None));
        h.engine.handle_offer_accepted(h.now, o.0).unwrap();
        h.drain();
    }
    for n in 4..=500 {
        assert!(offers(&h.arrive(n, "mixed")).is_empty(), "voice is full");
    }
    assert!(offers(&h.arrive_with(501, "mixed", Channel::Chat, 0, None)).is_empty());
    // A chat ends: the freed chat slot takes the chat behind 497 waiting calls.
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(2))
        .unwrap();
    assert_eq!(one_offer(&h.drain()).1, 501);
    // The call ends: the next call in order is offered.
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    assert_eq!(one_offer(&h.drain()).1, 4);
}

// ----- assignment to an agent and calls outside the queues ------------------------------

fn queue_log(actions: &[Action]) -> Vec<(QueueLogKind, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::QueueLog(e) => Some((e.kind.clone(), e.agent.as_ref().map(|a| a.to_string()))),
            _ => None,
        })
        .collect()
}

/// alice answers contact `n`; returns nothing (actions drained).
fn connect_alice(h: &mut Harness, n: u128) {
    let (offer, c, agent) = one_offer(&h.arrive(n, "support"));
    assert_eq!((c, agent.as_str()), (n, "alice"));
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    h.drain();
}

#[test]
fn assign_from_connected_moves_the_contact_and_wraps_up_the_first_agent() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    connect_alice(&mut h, 1);
    h.login("bob");
    h.pause_bob();
    h.now = h.now.plus_ms(20_000);
    h.engine
        .handle_assign_to_agent(h.now, ContactId::from_u128(1), &"bob".into())
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(a,
        Action::Assigned { contact, agent, from: Some(from), channel: Channel::Voice, .. }
            if contact.0.as_u128() == 1 && agent.as_str() == "bob" && from.as_str() == "alice")));
    let rows = queue_log(&out);
    assert_eq!(
        rows,
        vec![
            (
                QueueLogKind::Complete { talk_ms: 20_000 },
                Some("alice".to_owned())
            ),
            (
                QueueLogKind::Assign {
                    from: Some("alice".into()),
                    wait_ms: 0
                },
                Some("bob".to_owned())
            ),
        ]
    );
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::WrapUp)
    );
    assert_eq!(h.engine.agent_state(&"bob".into()), Some(AgentState::Busy));
    let view = h.engine.contact(ContactId::from_u128(1)).unwrap();
    assert_eq!(view.phase, ContactPhase::Connected);
    assert_eq!(view.agents, vec![AgentId::from("bob")]);

    // Bob is full: a new contact is not offered to him; alice gets it after her wrap-up.
    h.engine.handle_agent_unpause(h.now, &"bob".into()).unwrap();
    assert!(offers(&h.drain()).is_empty());
    assert!(offers(&h.arrive(2, "support")).is_empty());
    let (offer, c, agent) = one_offer(&h.advance(10_000));
    assert_eq!((c, agent.as_str()), (2, "alice"));
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    h.drain();

    // The contact's end puts bob into wrap-up; both handlings count (AHT per handling).
    h.now = h.now.plus_ms(30_000);
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    let out = h.drain();
    assert_eq!(
        queue_log(&out),
        vec![(
            QueueLogKind::Complete { talk_ms: 40_000 },
            Some("bob".to_owned())
        )]
    );
    assert_eq!(
        h.engine.agent_state(&"bob".into()),
        Some(AgentState::WrapUp)
    );
    h.advance(10_000);
    assert_eq!(
        h.engine.agent_state(&"bob".into()),
        Some(AgentState::Available)
    );
    let stats = h.engine.queue_stats(h.now, &"support".into()).unwrap();
    assert_eq!(stats.counters.answered, 2, "contact 1 once, contact 2 once");
    assert_eq!(
        stats.counters.handled, 2,
        "alice's and bob's handling of contact 1"
    );
    assert_eq!(stats.counters.handle_ms, 20_000 + 10_000 + 40_000 + 10_000);
}

impl Harness {
    fn pause_bob(&mut self) {
        self.engine
            .handle_agent_pause(self.now, &"bob".into(), "break")
            .unwrap();
        self.drain();
    }
}

#[test]
fn assign_from_waiting_counts_as_answered_and_from_ringing_cancels_the_offer() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("bob");
    h.pause_bob();
    assert!(offers(&h.arrive(1, "support")).is_empty());
    h.now = h.now.plus_ms(5_000);
    h.engine
        .handle_assign_to_agent(h.now, ContactId::from_u128(1), &"bob".into())
        .unwrap();
    let out = h.drain();
    assert_eq!(
        queue_log(&out),
        vec![(
            QueueLogKind::Assign {
                from: None,
                wait_ms: 5_000
            },
            Some("bob".to_owned())
        )]
    );
    let stats = h.engine.queue_stats(h.now, &"support".into()).unwrap();
    assert_eq!((stats.waiting, stats.counters.answered), (0, 1));
    assert_eq!(stats.counters.answered_wait_ms, 5_000);
    assert_eq!(h.engine.agent_state(&"bob".into()), Some(AgentState::Busy));

    // Ringing at alice (bob is busy), then assigned to bob once he is free again.
    h.login("alice");
    let (offer, c, agent) = one_offer(&h.arrive(2, "support"));
    assert_eq!((c, agent.as_str()), (2, "alice"));
    h.engine
        .handle_contact_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    h.engine
        .handle_wrap_up_ended(h.now, ContactId::from_u128(1))
        .unwrap();
    h.drain();
    h.engine
        .handle_assign_to_agent(h.now, ContactId::from_u128(2), &"bob".into())
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(a,
        Action::CancelOffer { offer: o, reason: CancelReason::Withdrawn, .. } if *o == offer)));
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Available)
    );
    assert_eq!(h.engine.agent_state(&"bob".into()), Some(AgentState::Busy));
    let stats = h.engine.queue_stats(h.now, &"support".into()).unwrap();
    assert_eq!((stats.ringing, stats.counters.answered), (0, 2));
    assert!(h.engine.handle_offer_accepted(h.now, offer).is_err());
}

#[test]
fn assign_is_refused_when_the_agent_is_full_logged_out_or_already_has_it() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    connect_alice(&mut h, 1);
    let c1 = ContactId::from_u128(1);
    let refused = |h: &mut Harness, agent: &str| {
        let err = h.engine.handle_assign_to_agent(h.now, c1, &agent.into());
        assert!(
            matches!(err, Err(EngineError::WrongState { what: "assign", .. })),
            "{err:?}"
        );
        assert!(h.drain().is_empty(), "nothing changes");
        assert_eq!(
            h.engine.contact(c1).unwrap().agents,
            vec![AgentId::from("alice")]
        );
    };
    refused(&mut h, "bob"); // logged out
    refused(&mut h, "alice"); // already has it
    h.login("bob");
    h.engine
        .handle_agent_busy(h.now, &"bob".into(), true)
        .unwrap();
    h.drain();
    refused(&mut h, "bob"); // on an internal call
    h.engine
        .handle_agent_busy(h.now, &"bob".into(), false)
        .unwrap();
    h.drain();
    let (offer, _, _) = one_offer(&h.arrive(2, "support"));
    h.engine.handle_offer_accepted(h.now, offer).unwrap();
    h.drain();
    refused(&mut h, "bob"); // full
    assert!(matches!(
        h.engine
            .handle_assign_to_agent(h.now, ContactId::from_u128(9), &"bob".into()),
        Err(EngineError::UnknownContact(_))
    ));
    assert!(matches!(
        h.engine.handle_assign_to_agent(h.now, c1, &"carol".into()),
        Err(EngineError::UnknownAgent(_))
    ));
}

#[test]
fn an_agent_on_a_call_outside_the_queues_is_not_offered_voice_and_is_freed_after() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    h.engine
        .handle_input(
            h.now,
            Input::AgentBusy {
                agent: "alice".into(),
                busy: true,
            },
        )
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(
        a,
        Action::AgentStateChanged {
            state: AgentState::Busy,
            ..
        }
    )));
    // Idempotent.
    h.engine
        .handle_agent_busy(h.now, &"alice".into(), true)
        .unwrap();
    assert!(h.drain().is_empty());
    assert!(offers(&h.arrive(1, "support")).is_empty());
    // Safe across logout and login: still on the call.
    h.engine
        .handle_agent_logout(h.now, &"alice".into())
        .unwrap();
    h.drain();
    h.login("alice");
    assert_eq!(
        h.engine.agent_state(&"alice".into()),
        Some(AgentState::Busy)
    );
    h.now = h.now.plus_ms(3_000);
    h.engine
        .handle_agent_busy(h.now, &"alice".into(), false)
        .unwrap();
    let out = h.drain();
    let (_, c, agent) = one_offer(&out);
    assert_eq!((c, agent.as_str()), (1, "alice"));
    assert!(
        queue_log(&out)
            .iter()
            .all(|(k, _)| !matches!(k, QueueLogKind::WrapUpEnd { .. }))
    );
    h.engine
        .handle_agent_busy(h.now, &"alice".into(), false)
        .unwrap();
    assert!(h.drain().is_empty());
    assert!(matches!(
        h.engine.handle_agent_busy(h.now, &"carol".into(), true),
        Err(EngineError::UnknownAgent(_))
    ));
}

#[test]
fn an_agent_on_an_outside_call_still_gets_chat_unless_voice_exclusive() {
    let mut h = Harness::new(
        r#"
[queues.web]
[agents.alice]
queues = ["web"]
capacity = { voice = 1, chat = 2, voice_exclusive = false }
[agents.bob]
queues = ["web"]
capacity = { voice = 1, chat = 2, voice_exclusive = true }
"#,
    );
    h.login("alice");
    h.engine
        .handle_agent_busy(h.now, &"alice".into(), true)
        .unwrap();
    h.drain();
    let (_, _, agent) = one_offer(&h.arrive_with(1, "web", Channel::Chat, 0, None));
    assert_eq!(agent, "alice");
    h.engine
        .handle_agent_logout(h.now, &"alice".into())
        .unwrap();
    h.drain();
    h.login("bob");
    h.engine
        .handle_agent_busy(h.now, &"bob".into(), true)
        .unwrap();
    h.drain();
    assert!(offers(&h.arrive_with(2, "web", Channel::Chat, 0, None)).is_empty());
}

#[test]
fn assign_cancels_offers_ringing_at_the_agent_when_the_contact_would_not_fit_beside_them() {
    let mut h = Harness::new(TWO_AGENTS);
    h.login("alice");
    connect_alice(&mut h, 1);
    h.login("bob");
    let (offer, c, agent) = one_offer(&h.arrive(2, "support"));
    assert_eq!((c, agent.as_str()), (2, "bob"));
    h.engine
        .handle_assign_to_agent(h.now, ContactId::from_u128(1), &"bob".into())
        .unwrap();
    let out = h.drain();
    assert!(out.iter().any(|a| matches!(a,
        Action::CancelOffer { offer: o, reason: CancelReason::Withdrawn, .. } if *o == offer)));
    assert_eq!(h.engine.agent_state(&"bob".into()), Some(AgentState::Busy));
    assert_eq!(
        h.engine.waiting_contacts(&"support".into()).unwrap(),
        vec![ContactId::from_u128(2)],
        "back in place; alice is in wrap-up and may not take it yet"
    );
    let (_, c, agent) = one_offer(&h.advance(10_000));
    assert_eq!((c, agent.as_str()), (2, "alice"));
}
