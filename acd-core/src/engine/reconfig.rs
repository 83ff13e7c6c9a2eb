//! Live reconfiguration: a new [`RoutingConfig`] replaces the old one without dropping
//! waiting contacts or contacts in progress.
//!
//! Rather than patching every interned table in place, the engine builds a fresh engine
//! from the new configuration and moves the live state across by key (queue and agent
//! ids, contact ids). That keeps one code path for building the tables (`Engine::new`)
//! and makes "what survives a reload" explicit in one function.

use std::cmp::Reverse;

use super::state::{Phase, Timer, WaitKey};
use super::{Engine, compile_expr};
use crate::config::{ConfigError, RoutingConfig};
use crate::ids::Timestamp;

impl Engine {
    /// Live reconfiguration: waiting contacts keep their place, contacts in progress and
    /// agent states are kept. Refused (and nothing changed) when the new configuration
    /// removes a queue that holds contacts or an agent that is logged in or still holds
    /// contacts. Drain [`Engine::poll_action`] afterwards: agents may get offers at once.
    pub fn apply_config(
        &mut self,
        now: Timestamp,
        config: RoutingConfig,
    ) -> Result<(), ConfigError> {
        let mut fresh = Engine::new(config, self.seed)?;
        let queue_map: Vec<Option<u32>> = self
            .queues
            .iter()
            .map(|q| fresh.queue_index.get(&q.id).copied())
            .collect();
        let agent_map: Vec<Option<u32>> = self
            .agents
            .iter()
            .map(|a| fresh.agent_index.get(&a.id).copied())
            .collect();
        for c in self.contacts.values() {
            if queue_map[c.queue as usize].is_none() {
                return Err(ConfigError::InUse(format!(
                    "queue `{}` still holds contacts; move them before removing it",
                    self.q(c.queue).id
                )));
            }
        }
        for list in self.wrapups.values() {
            for w in list {
                if queue_map[w.queue as usize].is_none() {
                    return Err(ConfigError::InUse(format!(
                        "queue `{}` has a contact in wrap-up; wait until it ends",
                        self.q(w.queue).id
                    )));
                }
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            if agent_map[i].is_none() && (a.logged_in || a.total_active() > 0) {
                return Err(ConfigError::InUse(format!(
                    "agent `{}` is logged in or holds contacts; log them out first",
                    a.id
                )));
            }
        }
        // From here on nothing can fail: move the live state over.
        let map_q = |q: u32| queue_map[q as usize];
        let map_a = |a: u32| agent_map[a as usize];

        for (old_i, old) in self.agents.iter().enumerate() {
            let Some(ni) = agent_map[old_i] else { continue };
            let new = &mut fresh.agents[ni as usize];
            new.logged_in = old.logged_in;
            new.paused = old.paused.clone();
            new.delay_until = old.delay_until;
            new.idle_since = old.idle_since;
            new.active = old.active;
            new.ringing = old.ringing;
            new.busy = old.busy;
            new.wrapping = old.wrapping;
            new.no_answer_streak = old.no_answer_streak;
            new.handled = old.handled;
            new.external_call = old.external_call;
            new.state = old.state.clone();
            new.state_since = old.state_since;
            new.time = old.time;
            for m in &mut new.members {
                if let Some(om) = old
                    .members
                    .iter()
                    .find(|om| map_q(om.queue) == Some(m.queue))
                {
                    m.handled = om.handled;
                    m.talk_ms = om.talk_ms;
                }
            }
            let (logged_in, serving) = (new.logged_in, new.logged_in && new.paused.is_none());
            let queues: Vec<u32> = new.members.iter().map(|m| m.queue).collect();
            for q in queues {
                let queue = &mut fresh.queues[q as usize];
                queue.logged_in_members += u32::from(logged_in);
                queue.serving_members += u32::from(serving);
            }
        }
        for (old_i, old) in self.queues.iter().enumerate() {
            if let Some(ni) = queue_map[old_i] {
                let new = &mut fresh.queues[ni as usize];
                new.counters = old.counters;
                new.recent_aht_ms = old.recent_aht_ms;
            }
        }
        for (id, mut c) in std::mem::take(&mut self.contacts) {
            // Checked above: every contact's home queue survives.
            let Some(home) = map_q(c.queue) else { continue };
            c.queue = home;
            c.queue_served = map_q(c.queue_served).unwrap_or(home);
            let mut listed = vec![home];
            listed.extend(
                c.listed_in
                    .iter()
                    .filter_map(|&q| map_q(q))
                    .filter(|&q| q != home),
            );
            c.listed_in = listed;
            c.agent = c.agent.and_then(map_a);
            c.requirement = c
                .requirement_text
                .as_ref()
                .map(|e| compile_expr(e, &fresh.skill_index));
            c.key = WaitKey {
                prio_rev: c.key.prio_rev,
                entered: c.key.entered,
                seq: c.key.seq,
            };
            c.dirty = false;
            c.episode = c.episode.wrapping_add(1);
            let queue = &mut fresh.queues[home as usize];
            c.next_step = c.next_step.min(queue.escalation.len());
            match c.phase {
                Phase::Waiting => {
                    queue.home_waiting += 1;
                    for &q in &c.listed_in {
                        fresh.queues[q as usize].insert_waiting(q, &c);
                    }
                }
                Phase::Offered => queue.home_ringing += 1,
                Phase::Connected => {}
            }
            if c.phase != Phase::Connected
                && let Some(&(after, _)) = fresh.queues[home as usize].escalation.get(c.next_step)
            {
                fresh.push_timer(
                    c.entered.plus_ms(after),
                    Timer::Escalation(id, c.episode, c.next_step),
                );
            }
            fresh.contacts.insert(id, c);
        }
        for (id, mut o) in std::mem::take(&mut self.offers) {
            // Checked above: agents holding offers and the contacts' queues survive.
            let (Some(a), Some(q)) = (
                map_a(o.agent),
                map_q(o.queue).or_else(|| fresh.contacts.get(&o.contact).map(|c| c.queue)),
            ) else {
                continue;
            };
            o.agent = a;
            o.queue = q;
            fresh.offers.insert(id, o);
        }
        for (id, mut list) in std::mem::take(&mut self.wrapups) {
            list.retain_mut(|w| {
                let (Some(a), Some(q)) = (map_a(w.agent), map_q(w.queue)) else {
                    return false;
                };
                w.agent = a;
                w.served = map_q(w.served).unwrap_or(q);
                w.queue = q;
                true
            });
            fresh.wrapups.insert(id, list);
        }
        for Reverse((at, _, timer)) in std::mem::take(&mut self.timers).into_vec() {
            let mapped = match timer {
                Timer::OfferExpiry(o) => fresh
                    .offers
                    .contains_key(&o)
                    .then_some(Timer::OfferExpiry(o)),
                Timer::WrapUpEnd(c, a) => map_a(a).map(|a| Timer::WrapUpEnd(c, a)),
                Timer::AgentDelayEnd(a) => map_a(a).map(Timer::AgentDelayEnd),
                // Rescheduled from the new configuration above and below.
                Timer::Escalation(..) | Timer::Announce(_) | Timer::HoursCheck(_) => None,
            };
            if let Some(t) = mapped {
                fresh.push_timer(at, t);
            }
        }
        for q in 0..fresh.queues.len() {
            let queue = &fresh.queues[q];
            if let Some(every) = queue
                .announce
                .as_ref()
                .map(|a| a.every_s)
                .filter(|&s| s > 0)
                && queue.home_waiting > 0
            {
                let at = now.plus_ms(every.saturating_mul(1000));
                fresh.queues[q].announce_at = Some(at);
                fresh.push_timer(at, Timer::Announce(q as u32));
            }
        }
        for q in 0..fresh.queues.len() as u32 {
            // A queue that is closed under the new calendar sends its waiting contacts on
            // at the next timeout (the check is due at `now`).
            fresh.ensure_hours_check(now, q);
        }
        fresh.rng = self.rng.clone();
        fresh.offer_counter = self.offer_counter;
        fresh.seq = self.seq;
        fresh.actions = std::mem::take(&mut self.actions);
        *self = fresh;
        // Re-index every agent under the new strategies, then give every waiting contact a
        // chance at the agents the new configuration makes eligible. Reverse order because
        // the dirty lists are stacks.
        for a in (0..self.agents.len() as u32).rev() {
            self.mark_agent(a);
        }
        let mut waiting: Vec<(WaitKey, crate::ids::ContactId)> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.phase == Phase::Waiting)
            .map(|(id, c)| (c.key, *id))
            .collect();
        waiting.sort();
        for (_, id) in waiting.into_iter().rev() {
            self.mark_contact(id);
        }
        self.settle(now);
        Ok(())
    }
}
