//! The engine's internal tables: interned queues and agents, contacts, offers and timers.
//!
//! Everything here is keyed by dense `u32` indices so the routing path touches arrays and
//! small ordered sets, never strings. Public ids appear only at the edges (inputs, actions).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{AnnounceConfig, Disposition, Strategy};
use crate::hours::CompiledHours;
use crate::ids::{AgentId, Channel, ContactId, OfferId, QueueId, Timestamp};
use crate::io::AgentState;
use crate::skill_expr::{CompiledExpr, SkillExpr};
use crate::stats::{QueueCounters, TimePerState};

/// Hash maps keyed by ids: foldhash with a fixed seed, so iteration order (never used
/// for decisions, but for tests) is reproducible and hashing a UUID is a few ns.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// Order of a waiting list: priority descending, then entry time, then arrival sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WaitKey {
    /// `MAX_PRIORITY - priority`, so ascending order serves the highest priority first.
    pub prio_rev: u16,
    pub entered: u64,
    pub seq: u64,
}

/// An escalation step compiled to indices.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Relax(u8),
    AddQueues(Vec<u32>),
    RaisePriority(u16),
    Overflow(Disposition),
    OfferCallback,
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub id: QueueId,
    pub strategy: Strategy,
    pub requirement: Option<CompiledExpr>,
    pub weight: u32,
    pub wrap_up_ms: u64,
    pub offer_timeout_ms: u64,
    pub max_waiting: Option<u32>,
    pub full_action: Disposition,
    pub no_agents_action: Option<Disposition>,
    pub sl_ms: u64,
    pub hours: Option<CompiledHours>,
    pub closed_action: Disposition,
    /// (after ms, step), sorted by time.
    pub escalation: Vec<(u64, Step)>,
    pub announce: Option<AnnounceConfig>,
    /// Waiting contacts listed here (home ones and ones added by escalation), in service order.
    pub waiting: BTreeMap<WaitKey, ContactId>,
    /// The same contacts split for a freed agent's search (see [`Contact::plain_in`]):
    /// *plain* ones per channel, eligible for every member that fits the queue's own
    /// requirement and has room on the channel, so the head of each list is the only
    /// candidate; and *special* ones (own requirement, relaxed, listed from another queue,
    /// transferred), which need a per-agent check.
    pub plain: [BTreeMap<WaitKey, ContactId>; 4],
    pub special: BTreeMap<WaitKey, ContactId>,
    /// Available members in strategy order: (strategy key, agent index, member index in
    /// the agent's `members`). Removal is eager: lazy removal (stale entries skipped by
    /// searches) was measured and executed more instructions and missed the cache more
    /// (BENCHMARKS.md, "Routing engine").
    pub available: AvailSet,
    pub members: Vec<u32>,
    /// Contacts whose home is this queue: waiting (incl. callbacks) and ringing.
    pub home_waiting: u32,
    pub home_ringing: u32,
    pub logged_in_members: u32,
    pub serving_members: u32,
    /// Round-robin memory: key of the member offered last.
    pub rr_last: Option<u128>,
    pub counters: QueueCounters,
    pub recent_aht_ms: f64,
    pub announce_at: Option<Timestamp>,
    /// When the pending business-hours check fires (set while home contacts wait).
    pub hours_check_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub queue: u32,
    pub order: u32,
    pub weight: u32,
    /// The agent meets the queue's own requirement unrelaxed (fixed by the configuration).
    pub fits: bool,
    /// The agent's best-skill-match score for the queue's requirement (fixed by the
    /// configuration, so computed once).
    pub score: u32,
    /// The key under which the agent sits in the queue's `available` set, if it does.
    pub key: Option<u128>,
    pub handled: u64,
    pub talk_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentId,
    pub levels: Vec<u8>,
    pub capacity: [u32; 4],
    pub voice_exclusive: bool,
    pub members: Vec<Member>,
    pub logged_in: bool,
    pub paused: Option<String>,
    pub delay_until: Timestamp,
    pub idle_since: Timestamp,
    /// Slots in use per channel (ringing + connected + wrap-up).
    pub active: [u32; 4],
    pub ringing: u32,
    pub busy: u32,
    pub wrapping: u32,
    pub no_answer_streak: u32,
    pub handled: u64,
    /// On a call outside the queues (an internal or consultation call, or a call
    /// assigned to a phone directly): no voice contact fits, and the summary is busy.
    pub external_call: bool,
    pub state: AgentState,
    pub state_since: Timestamp,
    pub time: TimePerState,
    /// Whether the agent sits in its queues' `available` sets.
    pub indexed: bool,
    /// Load (`total_active`) when the strategy keys were computed; a change re-keys.
    pub indexed_load: u32,
    /// Queued for routing/state refresh in the current settle pass.
    pub dirty: bool,
}

/// An entry of a queue's available set: (strategy key, agent, member index).
pub(crate) type AvailEntry = (u128, u32, u32);

/// Above this many entries an available set moves to a B-tree; below `SHRINK_AT` it moves
/// back (the gap keeps a set hovering at the limit from switching on every change).
const GROW_AT: usize = 256;
const SHRINK_AT: usize = 64;

/// A queue's available members in strategy order. Most queues hold a handful of available
/// members (about 6 in the 10,000-agent benchmark's steady state), where a sorted `Vec` —
/// binary search plus a short `memmove` — costs a fraction of a B-tree insert or remove,
/// and every agent going busy or free does one per queue it belongs to. Large sets (a big
/// queue with everyone idle) switch to a `BTreeSet` so that a change never moves more than
/// `GROW_AT` entries.
#[derive(Debug)]
pub(crate) enum AvailSet {
    Small(Vec<AvailEntry>),
    Large(BTreeSet<AvailEntry>),
}

impl Default for AvailSet {
    fn default() -> Self {
        AvailSet::Small(Vec::new())
    }
}

impl AvailSet {
    pub fn insert(&mut self, e: AvailEntry) {
        match self {
            AvailSet::Small(v) => {
                if let Err(i) = v.binary_search(&e) {
                    v.insert(i, e);
                }
                if v.len() > GROW_AT {
                    *self = AvailSet::Large(std::mem::take(v).into_iter().collect());
                }
            }
            AvailSet::Large(set) => {
                set.insert(e);
            }
        }
    }

    pub fn remove(&mut self, e: &AvailEntry) {
        match self {
            AvailSet::Small(v) => {
                if let Ok(i) = v.binary_search(e) {
                    v.remove(i);
                }
            }
            AvailSet::Large(set) => {
                set.remove(e);
                if set.len() < SHRINK_AT {
                    *self = AvailSet::Small(std::mem::take(set).into_iter().collect());
                }
            }
        }
    }

    /// All entries in order.
    pub fn iter(&self) -> AvailIter<'_> {
        match self {
            AvailSet::Small(v) => AvailIter::Slice(v.iter()),
            AvailSet::Large(set) => AvailIter::Range(set.range(..)),
        }
    }

    /// Entries greater than `top`, then entries up to and including it (round-robin).
    pub fn after_then_before(&self, top: AvailEntry) -> impl Iterator<Item = &AvailEntry> {
        use std::ops::Bound::{Excluded, Unbounded};
        let (after, before) = match self {
            AvailSet::Small(v) => {
                let i = v.partition_point(|x| *x <= top);
                (
                    AvailIter::Slice(v[i..].iter()),
                    AvailIter::Slice(v[..i].iter()),
                )
            }
            AvailSet::Large(set) => (
                AvailIter::Range(set.range((Excluded(top), Unbounded))),
                AvailIter::Range(set.range(..=top)),
            ),
        };
        after.chain(before)
    }
}

/// Iterator over an [`AvailSet`] in order.
pub(crate) enum AvailIter<'a> {
    Slice(std::slice::Iter<'a, AvailEntry>),
    Range(std::collections::btree_set::Range<'a, AvailEntry>),
}

impl<'a> Iterator for AvailIter<'a> {
    type Item = &'a AvailEntry;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            AvailIter::Slice(it) => it.next(),
            AvailIter::Range(it) => it.next(),
        }
    }
}

impl Contact {
    /// Whether the contact is *plain* in queue `q`'s lists: there, only the queue's own
    /// unrelaxed requirement and room on its channel decide which members may take it.
    pub fn plain_in(&self, q: u32) -> bool {
        self.queue == q && self.requirement.is_none() && self.relax == 0 && !self.transferred
    }
}

impl Queue {
    /// Lists a waiting contact in this queue (index `q`).
    pub fn insert_waiting(&mut self, q: u32, c: &Contact) {
        self.waiting.insert(c.key, c.id);
        if c.plain_in(q) {
            self.plain[c.channel.index()].insert(c.key, c.id);
        } else {
            self.special.insert(c.key, c.id);
        }
    }

    /// Unlists a waiting contact from this queue (index `q`).
    pub fn remove_waiting(&mut self, q: u32, c: &Contact) {
        self.waiting.remove(&c.key);
        let plain = &mut self.plain[c.channel.index()];
        // The classification is fixed while the contact is listed (relax and transfer
        // change only while it is unlisted); the fallback keeps the lists consistent
        // should that ever change.
        let (first, second) = if c.plain_in(q) {
            (plain, &mut self.special)
        } else {
            (&mut self.special, plain)
        };
        if first.remove(&c.key).is_none() {
            second.remove(&c.key);
        }
    }
}

impl Agent {
    pub fn total_active(&self) -> u32 {
        self.active.iter().sum()
    }

    /// Whether one more contact of `channel` fits (capacity, voice exclusivity, and a call
    /// outside the queues, which occupies the agent's voice like a voice contact).
    pub fn has_room(&self, channel: Channel) -> bool {
        self.has_room_with(&self.active, channel)
    }

    /// [`Agent::has_room`] with `active` as the slots in use.
    pub fn has_room_with(&self, active: &[u32; 4], channel: Channel) -> bool {
        let c = channel.index();
        if active[c] >= self.capacity[c] {
            return false;
        }
        if self.external_call && channel == Channel::Voice {
            return false;
        }
        if self.voice_exclusive {
            let voice = Channel::Voice.index();
            if channel == Channel::Voice {
                return active.iter().sum::<u32>() == 0;
            }
            return active[voice] == 0 && !self.external_call;
        }
        true
    }

    pub fn has_room_any(&self) -> bool {
        Channel::ALL.iter().any(|&c| self.has_room(c))
    }

    pub fn summary_state(&self) -> AgentState {
        if !self.logged_in {
            AgentState::LoggedOut
        } else if self.ringing > 0 {
            AgentState::Reserved
        } else if self.busy > 0 || self.external_call {
            AgentState::Busy
        } else if self.wrapping > 0 {
            AgentState::WrapUp
        } else if let Some(reason) = &self.paused {
            AgentState::Paused {
                reason: reason.clone(),
            }
        } else {
            AgentState::Available
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting,
    Offered,
    Connected,
}

#[derive(Debug)]
pub(crate) struct Contact {
    pub id: ContactId,
    pub queue: u32,
    pub channel: Channel,
    pub priority: u16,
    pub entered: Timestamp,
    pub key: WaitKey,
    pub requirement_text: Option<SkillExpr>,
    pub requirement: Option<CompiledExpr>,
    pub relax: u8,
    /// Queues whose waiting list shows this contact while it waits (home first).
    pub listed_in: Vec<u32>,
    pub phase: Phase,
    pub callback: bool,
    /// Ringing offers (several only under ring-all).
    pub offers: Vec<OfferId>,
    pub agent: Option<u32>,
    /// The queue whose member took the contact (differs from `queue` after "add queue agents").
    pub queue_served: u32,
    pub connected_at: Timestamp,
    pub next_step: usize,
    /// Bumped whenever the contact enters a queue, so stale escalation timers are ignored.
    pub episode: u32,
    pub dirty: bool,
    /// Transferred away by an agent who may still be in wrap-up for it: the contact is
    /// not offered back to that agent until the wrap-up ends (one wrap-up per contact and
    /// agent keeps the queue log unambiguous).
    pub transferred: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub contact: ContactId,
    pub agent: u32,
    pub queue: u32,
    pub channel: Channel,
    pub created: Timestamp,
}

/// A finished conversation in after-contact work, held by the agent's slot.
#[derive(Debug, Clone)]
pub(crate) struct WrapUp {
    pub agent: u32,
    /// The contact's home queue (its statistics).
    pub queue: u32,
    /// The queue whose member served it (the member's talk time).
    pub served: u32,
    pub channel: Channel,
    pub talk_ms: u64,
    pub started: Timestamp,
    pub until: Timestamp,
}

/// A deadline. Timers are never removed from the heap; each is checked against current
/// state when it fires (lazy deletion), which keeps every other path free of heap surgery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    OfferExpiry(OfferId),
    WrapUpEnd(ContactId, u32),
    AgentDelayEnd(u32),
    Escalation(ContactId, u32, usize),
    Announce(u32),
    /// The queue's open range ends: waiting contacts get the closed action.
    HoursCheck(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The set answers like a `BTreeSet` through growth past `GROW_AT` and shrinkage below
    /// `SHRINK_AT`, including the round-robin split iteration.
    #[test]
    fn avail_set_matches_a_btreeset_across_both_representations() {
        let mut set = AvailSet::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 12345;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for round in 0..4_000u32 {
            let e = (u128::from(next() % 600), (next() % 50) as u32, 0);
            // Grow for the first half, then mostly shrink.
            if (round < 2_000 && next() % 4 != 0) || (round >= 2_000 && next() % 4 == 0) {
                set.insert(e);
                model.insert(e);
            } else if let Some(&victim) = model.iter().nth((next() as usize) % model.len().max(1)) {
                set.remove(&victim);
                model.remove(&victim);
            }
            if round % 97 == 0 {
                let got: Vec<_> = set.iter().copied().collect();
                let want: Vec<_> = model.iter().copied().collect();
                assert_eq!(got, want, "round {round}");
                let top = (u128::from(next() % 600), u32::MAX, u32::MAX);
                let got: Vec<_> = set.after_then_before(top).copied().collect();
                let want: Vec<_> = model
                    .iter()
                    .filter(|e| **e > top)
                    .chain(model.iter().filter(|e| **e <= top))
                    .copied()
                    .collect();
                assert_eq!(got, want, "round {round}");
            }
        }
        assert!(model.len() < SHRINK_AT, "the test shrank the set again");
        assert!(matches!(set, AvailSet::Small(_)));
    }
}
