//! Routing-engine benchmark: decisions per second and latency per decision on a large
//! tenant (10,000 agents, 1,000 queues, 200 skills, agents in 5–20 queues, mixed strategies).
//!
//! Run: `cargo bench --bench routing` (harness = false: a plain program that prints numbers;
//! STYLE.md §10). Results and the definition of a "routing decision" are in BENCHMARKS.md,
//! section "Routing engine".
//!
//! Three phases, all on one thread with a fake clock (the engine never reads a clock):
//! 1. **steady state** — contacts arrive at random queues; each offer is accepted at once; the
//!    oldest conversations end so agents come back; about 95 % of agents are busy, so both
//!    paths are exercised: a new contact finding an idle agent, and a freed agent finding the
//!    longest-waiting eligible contact across its queues.
//! 2. **arrival storm** — 100,000 contacts arrive within one simulated second on a fresh
//!    engine with every agent available.
//! 3. **storm drain** — the agents work the storm's backlog off: every freed agent picks from
//!    deep waiting lists.
//!
//! A *routing decision* is one engine input (plus draining its actions) that makes the engine
//! choose an agent for a contact or a contact for an agent, i.e. that emits at least one
//! `Offer`. Its latency is the wall time of that input and drain. Throughput is decisions ÷
//! the wall time spent in *all* engine inputs of the phase (arrivals, accepts, ends, timers),
//! so the bookkeeping around each decision is paid for.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use acd_core::{
    Action, AgentId, Channel, ContactId, Engine, NewContact, QueueId, RoutingConfig, Timestamp,
};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const AGENTS: usize = 10_000;
const QUEUES: usize = 1_000;
const SKILLS: usize = 200;
/// Steady-state arrivals; `ZENTRALE_BENCH_ARRIVALS` overrides (e.g. a short run under perf).
const STEADY_ARRIVALS: u64 = 2_000_000;
/// Warm-up arrivals before the steady phase; `ZENTRALE_BENCH_WARMUP` overrides (runs under
/// callgrind use 20,000: the 95 % busy level is reached after about 9,500).
const WARMUP_ARRIVALS: u64 = 200_000;
const STORM: u64 = 100_000;

const STRATEGIES: [&str; 9] = [
    "longest_idle",
    "round_robin",
    "fewest_contacts",
    "least_talk_time",
    "linear",
    "random",
    "weighted_random",
    "best_skill_match",
    "ring_all",
];

/// The tenant as TOML: queue `q` requires skill `q % 200 >= 1`; every agent has the skills
/// of its 5–20 queues at level 1–5. One queue in 100 is ring-all (a VIP line).
fn tenant_toml(rng: &mut SmallRng) -> String {
    let mut t = String::with_capacity(4 << 20);
    for s in 0..SKILLS {
        let _ = writeln!(t, "[skills.s{s}]");
    }
    for q in 0..QUEUES {
        let strategy = if q % 100 == 99 {
            "ring_all"
        } else {
            STRATEGIES[q % 8]
        };
        let _ = writeln!(
            t,
            "[queues.q{q}]\nstrategy = \"{strategy}\"\nskills = \"s{} >= 1\"\nweight = {}\nwrap_up_s = 0\noffer_timeout_s = 30",
            q % SKILLS,
            1 + q % 3
        );
    }
    for a in 0..AGENTS {
        let n = rng.random_range(5..=20usize);
        let mut queues: Vec<usize> = Vec::with_capacity(n);
        while queues.len() < n {
            let q = rng.random_range(0..QUEUES);
            if !queues.contains(&q) {
                queues.push(q);
            }
        }
        let mut skills: Vec<usize> = queues.iter().map(|q| q % SKILLS).collect();
        skills.sort_unstable();
        skills.dedup();
        let skills: Vec<String> = skills
            .iter()
            .map(|s| format!("s{s} = {}", rng.random_range(1..=5u8)))
            .collect();
        let queues: Vec<String> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                format!(
                    "{{ queue = \"q{q}\", order = {i}, weight = {} }}",
                    1 + i % 4
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "[agents.a{a}]\nskills = {{ {} }}\nqueues = [{}]",
            skills.join(", "),
            queues.join(", ")
        );
    }
    t
}

struct Phase {
    name: &'static str,
    decisions: u64,
    offers: u64,
    inputs: u64,
    engine_time: Duration,
    latency: Histogram<u64>,
    /// The slowest input of the phase: (ns, input kind, actions drained).
    slowest: (u64, &'static str, usize),
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Phase {
            name,
            decisions: 0,
            offers: 0,
            inputs: 0,
            engine_time: Duration::ZERO,
            // 1 ns .. 10 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 10_000_000_000, 3)
                .expect("valid histogram bounds"),
            slowest: (0, "", 0),
        }
    }

    fn print(&self) {
        let secs = self.engine_time.as_secs_f64();
        let h = &self.latency;
        println!(
            "{:<13} decisions {:>9}  offers {:>9}  inputs {:>9}  engine time {:>7.3} s  {:>10.0} decisions/s  \
             latency ns: p50 {:>6} p99 {:>6} p999 {:>7} max {:>9}",
            self.name,
            self.decisions,
            self.offers,
            self.inputs,
            secs,
            self.decisions as f64 / secs,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        // Time inside the deciding inputs only (mean latency × count), for comparison with
        // the all-inputs throughput above.
        let deciding_s = h.mean() * h.len() as f64 / 1e9;
        println!(
            "{:<13} {:.0} decisions/s counting only the deciding inputs' time; slowest input: {} ns ({}, {} actions drained)",
            "",
            self.decisions as f64 / deciding_s,
            self.slowest.0,
            self.slowest.1,
            self.slowest.2
        );
    }
}

/// The driver: feeds the engine and reacts like instant agents (accept every offer at once).
struct Driver {
    engine: Engine,
    now: u64,
    pending_offers: Vec<acd_core::OfferId>,
    connected: VecDeque<ContactId>,
}

impl Driver {
    /// Runs one input through `f`, drains, and books the call in `phase`.
    fn input(
        &mut self,
        phase: &mut Phase,
        kind: &'static str,
        f: impl FnOnce(&mut Engine, Timestamp),
    ) {
        let now = Timestamp(self.now);
        let start = Instant::now();
        f(&mut self.engine, now);
        let mut offers = 0u64;
        let mut drained = 0usize;
        while let Some(action) = self.engine.poll_action() {
            drained += 1;
            match action {
                Action::Offer { offer, .. } | Action::DialCallback { offer, .. } => {
                    offers += 1;
                    self.pending_offers.push(offer);
                }
                Action::QueueLog(row) => {
                    if let acd_core::QueueLogKind::Connect { .. } = row.kind
                        && let Some(c) = row.contact
                    {
                        self.connected.push_back(c);
                    }
                }
                _ => {}
            }
        }
        let elapsed = start.elapsed();
        phase.engine_time += elapsed;
        phase.inputs += 1;
        // Saturating: a call never takes 584 years.
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        if ns > phase.slowest.0 {
            phase.slowest = (ns, kind, drained);
        }
        if offers > 0 {
            phase.decisions += 1;
            phase.offers += offers;
            phase.latency.saturating_record(ns);
        }
    }

    /// Accepts every ringing offer (the agents answer instantly).
    fn accept_all(&mut self, phase: &mut Phase) {
        while let Some(offer) = self.pending_offers.pop() {
            // A ring-all loser's offer is already cancelled: the engine says so, harmlessly.
            self.input(phase, "offer accepted", |e, now| {
                let _ = e.handle_offer_accepted(now, offer);
            });
        }
    }

    /// Fires due engine timers.
    fn timers(&mut self, phase: &mut Phase) {
        while let Some(t) = self.engine.poll_timeout() {
            if t.as_millis() > self.now {
                break;
            }
            self.input(phase, "timeout", |e, now| e.handle_timeout(now));
        }
    }

    fn end_oldest(&mut self, phase: &mut Phase) {
        if let Some(c) = self.connected.pop_front() {
            self.input(phase, "contact ended", |e, now| {
                let _ = e.handle_contact_ended(now, c);
            });
        }
    }
}

fn build(toml: &str, seed: u64) -> Driver {
    let config = RoutingConfig::load(toml, "bench").expect("the generated tenant is valid");
    let mut engine = Engine::new(config, seed).expect("the engine accepts the tenant");
    let t0 = 1_772_438_400_000; // 2026-03-02 08:00 UTC
    for a in 0..AGENTS {
        engine
            .handle_agent_login(Timestamp(t0), &AgentId::new(format!("a{a}")))
            .expect("known agent");
    }
    while engine.poll_action().is_some() {}
    Driver {
        engine,
        now: t0,
        pending_offers: Vec::new(),
        connected: VecDeque::new(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let steady_arrivals: u64 = std::env::var("ZENTRALE_BENCH_ARRIVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(STEADY_ARRIVALS);
    let warmup: u64 = std::env::var("ZENTRALE_BENCH_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WARMUP_ARRIVALS);
    // `ZENTRALE_BENCH_STEADY_ONLY=1` skips the storm phases (instruction counting under
    // callgrind compares two steady runs of different length).
    let steady_only = std::env::var_os("ZENTRALE_BENCH_STEADY_ONLY").is_some();
    let mut rng = SmallRng::seed_from_u64(42);
    let t = Instant::now();
    let toml = tenant_toml(&mut rng);
    let queue_ids: Vec<QueueId> = (0..QUEUES).map(|q| QueueId::new(format!("q{q}"))).collect();
    println!(
        "tenant: {AGENTS} agents, {QUEUES} queues, {SKILLS} skills, agents in 5–20 queues, {} strategies \
         (1 % ring-all); config {} KiB, generated in {:.2} s",
        STRATEGIES.len(),
        toml.len() / 1024,
        t.elapsed().as_secs_f64()
    );

    // 1. Steady state.
    let t = Instant::now();
    let mut d = build(&toml, 1);
    println!(
        "engine built and {AGENTS} agents logged in: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut steady = Phase::new("steady");
    let mut warm = Phase::new("warm-up");
    let busy_target = AGENTS * 95 / 100;
    let mut next_id: u128 = 1;
    let wall = Instant::now();
    for i in 0..(steady_arrivals + warmup) {
        let phase = if i < warmup { &mut warm } else { &mut steady };
        d.now += 1;
        let queue = queue_ids[rng.random_range(0..QUEUES)].clone();
        let id = ContactId::from_u128(next_id);
        next_id += 1;
        d.input(phase, "new contact", |e, now| {
            e.handle_new_contact(now, NewContact::new(id, queue, Channel::Voice))
                .expect("valid contact");
        });
        d.accept_all(phase);
        // End up to two conversations while above the target, so agents keep coming back
        // (a freed agent may take a waiting contact at once, keeping the count level).
        for _ in 0..2 {
            if d.connected.len() > busy_target {
                d.end_oldest(phase);
                d.accept_all(phase);
            }
        }
        d.timers(phase);
        d.accept_all(phase);
    }
    let waiting: usize = queue_ids
        .iter()
        .map(|q| d.engine.waiting_contacts(q).map_or(0, |w| w.len()))
        .sum();
    println!(
        "steady state: {} arrivals after a {} warm-up, {:.2} s wall; at the end {} talking, {} waiting",
        steady_arrivals,
        warmup,
        wall.elapsed().as_secs_f64(),
        d.connected.len(),
        waiting
    );
    steady.print();
    drop(d);
    if steady_only {
        return;
    }

    // 2. Arrival storm: 100,000 contacts within one simulated second (100 per ms).
    let mut d = build(&toml, 2);
    let mut storm = Phase::new("storm");
    let mut arrivals =
        Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds");
    let t_storm = Instant::now();
    let start = d.now;
    for i in 0..STORM {
        d.now = start + i / 100;
        let queue = queue_ids[rng.random_range(0..QUEUES)].clone();
        let id = ContactId::from_u128(next_id);
        next_id += 1;
        let before = storm.engine_time;
        d.input(&mut storm, "new contact", |e, now| {
            e.handle_new_contact(now, NewContact::new(id, queue, Channel::Voice))
                .expect("valid contact");
        });
        let ns = u64::try_from((storm.engine_time - before).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        arrivals.saturating_record(ns);
        d.accept_all(&mut storm);
    }
    let waiting: usize = queue_ids
        .iter()
        .map(|q| d.engine.waiting_contacts(q).map_or(0, |w| w.len()))
        .sum();
    println!(
        "arrival storm: {STORM} contacts in 1 simulated second, {:.3} s wall, {:.0} arrivals/s of engine time; \
         {} connected, {} left waiting; per-arrival latency ns: p50 {} p99 {} p999 {} max {}",
        t_storm.elapsed().as_secs_f64(),
        STORM as f64 / storm.engine_time.as_secs_f64(),
        d.connected.len(),
        waiting,
        arrivals.value_at_quantile(0.5),
        arrivals.value_at_quantile(0.99),
        arrivals.value_at_quantile(0.999),
        arrivals.max()
    );
    storm.print();

    // 3. Drain the backlog: every ended conversation frees an agent, who takes the
    //    longest-waiting eligible contact across its queues.
    let mut drain = Phase::new("storm drain");
    let t_drain = Instant::now();
    let mut rounds = 0u64;
    while !d.connected.is_empty() && rounds < 400_000 {
        rounds += 1;
        d.now += 1;
        d.end_oldest(&mut drain);
        d.accept_all(&mut drain);
        d.timers(&mut drain);
        d.accept_all(&mut drain);
    }
    let waiting: usize = queue_ids
        .iter()
        .map(|q| d.engine.waiting_contacts(q).map_or(0, |w| w.len()))
        .sum();
    println!(
        "storm drain: {rounds} conversations ended, {:.2} s wall, {} still waiting (no eligible agent left)",
        t_drain.elapsed().as_secs_f64(),
        waiting
    );
    drain.print();
}
