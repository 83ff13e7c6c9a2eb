//! Erlang C and Erlang A: the queueing formulas that staffing and the what-if simulator
//! compare the engine against.
//!
//! * **Erlang C** (M/M/N) is the industry's staffing formula, exactly as GLOSSARY.md defines
//!   it: traffic A = arrival rate × AHT, P(wait) = C(N, A), SL(T) = 1 − P(wait)·e^{−(N−A)·T/AHT},
//!   ASA = P(wait)·AHT/(N − A). It assumes callers never give up, so it over-staffs when they do.
//! * **Erlang A** (M/M/N+M, Palm 1946; Garnett, Mandelbaum & Reiman 2002) adds exponential
//!   caller patience. It gives P(wait), P(abandon), service level and ASA of answered contacts,
//!   and stays finite when N ≤ A (callers abandon instead of the queue growing forever).
//!
//! # Design
//!
//! Both are computed without factorials so that 300+ agents and hundreds of Erlangs work:
//! Erlang B comes from its recurrence, kept in the log domain (`ln(1/B)` grows by a
//! soft-plus per agent), and the Erlang A queue states are summed as log-weights relative to
//! the "all agents busy, nobody waiting" state.
//!
//! For Erlang A's waiting-time distribution we use a closed form rather than numerical
//! integration: a caller who arrives with `k` callers ahead moves up at rate `Nμ + jθ`
//! (`j` = callers still ahead), so the time to reach an agent is a sum of exponentials with rates
//! `Nμ + jθ, j = 0..=k`, whose Laplace transform is that of `−ln(B)/θ` with
//! `B ~ Beta(Nμ/θ, k + 1)`. The caller's own patience is independent of that, so
//! P(answered within T | k) = E[B · 1{B ≥ e^{−θT}}] = α/(α+k+1) · (1 − I_{e^{−θT}}(α+1, k+1))
//! with α = Nμ/θ, and E[wait · 1{answered} | k] = α/(α+k+1) · Σ_{i=1}^{k+1} 1/(α+i) / θ.
//! The regularized incomplete beta function I comes from `puruspe`.

use thiserror::Error;

/// Why an Erlang computation could not be made.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ErlangError {
    /// The arrival rate (or forecast volume) is negative, infinite or not a number.
    #[error("arrival rate must be a finite number ≥ 0, got {0}")]
    InvalidArrivalRate(f64),
    /// The average handle time is zero, negative, infinite or not a number.
    #[error("average handle time must be a finite number > 0 seconds, got {0}")]
    InvalidHandleTime(f64),
    /// The mean caller patience is zero, negative or not a number.
    #[error("mean patience must be > 0 seconds, got {0}")]
    InvalidPatience(f64),
    /// The service-level threshold is negative or not a number.
    #[error("service-level threshold must be a finite number ≥ 0 seconds, got {0}")]
    InvalidThreshold(f64),
    /// The service-level target is outside 0..1 (exclusive of 1).
    #[error("service-level target must be in 0..1 (exclusive of 1), got {0}")]
    InvalidServiceLevelTarget(f64),
    /// The maximum occupancy is outside (0, 1].
    #[error("maximum occupancy must be in (0, 1], got {0}")]
    InvalidMaxOccupancy(f64),
    /// The interval length is zero, negative or not a number.
    #[error("interval length must be > 0 seconds, got {0}")]
    InvalidInterval(f64),
    /// More agents than [`MAX_AGENTS`] (the formulas are linear in the number of agents).
    #[error("at most {MAX_AGENTS} agents, got {0}")]
    TooManyAgents(u32),
    /// No number of agents up to the search limit meets the target.
    #[error("no staffing up to {0} agents meets the target")]
    TargetUnreachable(u32),
    /// The Erlang A state sum did not converge within the term limit (extreme inputs).
    #[error("Erlang A state sum did not converge within {0} terms")]
    NotConverged(usize),
}

/// The largest staffing [`agents_needed`] searches before giving up.
pub const MAX_AGENTS: u32 = 1_000_000;

/// The largest number of queue states Erlang A sums (callers waiting at once).
const MAX_QUEUE_STATES: usize = 5_000_000;

fn check_rate(rate: f64) -> Result<f64, ErlangError> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(ErlangError::InvalidArrivalRate(rate))
    }
}

fn check_aht(aht: f64) -> Result<f64, ErlangError> {
    if aht.is_finite() && aht > 0.0 {
        Ok(aht)
    } else {
        Err(ErlangError::InvalidHandleTime(aht))
    }
}

fn check_agents(agents: u32) -> Result<u32, ErlangError> {
    if agents <= MAX_AGENTS {
        Ok(agents)
    } else {
        Err(ErlangError::TooManyAgents(agents))
    }
}

fn check_threshold(t: f64) -> Result<f64, ErlangError> {
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(ErlangError::InvalidThreshold(t))
    }
}

/// `ln(1 + e^x)` without overflow for large `x` or loss for very negative `x`.
fn softplus(x: f64) -> f64 {
    if x > 35.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `ln(e^a + e^b)`, treating `-inf` as zero weight.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(1/B(N, A))` by the Erlang B recurrence `1/B(k) = 1 + (k/A)·1/B(k−1)`, in logs so that
/// neither thousands of agents nor tiny traffic overflow. `traffic` must be > 0.
fn ln_inverse_erlang_b(agents: u32, traffic: f64) -> f64 {
    let ln_a = traffic.ln();
    let mut l = 0.0_f64; // ln(1/B(0)) = ln 1
    for k in 1..=agents {
        l = softplus(f64::from(k).ln() - ln_a + l);
    }
    l
}

/// Erlang B: the probability that all `agents` are busy for offered `traffic` (Erlangs) when
/// blocked contacts are lost. The building block of Erlang C and A.
pub fn erlang_b(agents: u32, traffic: f64) -> Result<f64, ErlangError> {
    check_rate(traffic)?;
    check_agents(agents)?;
    if agents == 0 {
        return Ok(1.0);
    }
    if traffic == 0.0 {
        return Ok(0.0);
    }
    Ok((-ln_inverse_erlang_b(agents, traffic)).exp())
}

/// An M/M/N queue without abandonment: the Erlang C model of one queue in one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErlangC {
    agents: u32,
    traffic: f64,
    aht_secs: f64,
}

impl ErlangC {
    /// A queue with `arrivals_per_sec` contacts per second, `aht_secs` average handle time and
    /// `agents` serving agents.
    pub fn new(arrivals_per_sec: f64, aht_secs: f64, agents: u32) -> Result<Self, ErlangError> {
        let rate = check_rate(arrivals_per_sec)?;
        let aht = check_aht(aht_secs)?;
        check_agents(agents)?;
        Ok(Self {
            agents,
            traffic: rate * aht,
            aht_secs: aht,
        })
    }

    /// Offered traffic A in Erlangs (arrival rate × AHT).
    pub fn traffic(&self) -> f64 {
        self.traffic
    }

    /// Serving agents N.
    pub fn agents(&self) -> u32 {
        self.agents
    }

    /// Whether the queue is stable (N > A). When it is not, every contact waits and the
    /// queue grows without bound: P(wait) = 1, SL = 0, ASA = ∞.
    pub fn is_stable(&self) -> bool {
        f64::from(self.agents) > self.traffic
    }

    /// P(wait): the probability that an arriving contact finds every agent busy.
    pub fn probability_of_wait(&self) -> f64 {
        if self.traffic == 0.0 {
            return 0.0;
        }
        if !self.is_stable() {
            return 1.0;
        }
        let n = f64::from(self.agents);
        let b = (-ln_inverse_erlang_b(self.agents, self.traffic)).exp();
        // C = N·B / (N − A·(1 − B)): Erlang C from Erlang B, exact and stable.
        (n * b / (n - self.traffic * (1.0 - b))).clamp(0.0, 1.0)
    }

    /// Service level: the share of contacts answered within `threshold_secs`.
    pub fn service_level(&self, threshold_secs: f64) -> Result<f64, ErlangError> {
        let t = check_threshold(threshold_secs)?;
        if !self.is_stable() {
            return Ok(if self.traffic == 0.0 { 1.0 } else { 0.0 });
        }
        let n = f64::from(self.agents);
        let sl = 1.0 - self.probability_of_wait() * (-(n - self.traffic) * t / self.aht_secs).exp();
        Ok(sl.clamp(0.0, 1.0))
    }

    /// Average speed of answer in seconds (∞ when the queue is unstable).
    pub fn average_speed_of_answer(&self) -> f64 {
        if self.traffic == 0.0 {
            return 0.0;
        }
        if !self.is_stable() {
            return f64::INFINITY;
        }
        self.probability_of_wait() * self.aht_secs / (f64::from(self.agents) - self.traffic)
    }

    /// Agent occupancy A/N (capped at 1; 0 without agents).
    pub fn occupancy(&self) -> f64 {
        if self.agents == 0 {
            return if self.traffic > 0.0 { 1.0 } else { 0.0 };
        }
        (self.traffic / f64::from(self.agents)).min(1.0)
    }
}

/// A staffing question: how many agents does a forecast need?
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StaffingTarget {
    /// Forecast contacts in the interval.
    pub contacts: f64,
    /// Length of the interval in seconds (900 for a 15-minute interval).
    pub interval_secs: f64,
    /// Average handle time in seconds (talk + hold + wrap-up).
    pub aht_secs: f64,
    /// Target service level as a share, e.g. 0.8 for "80/20".
    pub service_level: f64,
    /// Service-level threshold T in seconds, e.g. 20 for "80/20".
    pub threshold_secs: f64,
    /// Highest acceptable occupancy as a share, e.g. 0.85; 1.0 for no limit.
    pub max_occupancy: f64,
}

/// The answer to a [`StaffingTarget`]: the agents needed and what they achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Staffing {
    /// Agents needed (on the phones, before shrinkage).
    pub agents: u32,
    /// Offered traffic in Erlangs.
    pub traffic: f64,
    /// Service level those agents achieve (share).
    pub service_level: f64,
    /// P(wait) with those agents.
    pub probability_of_wait: f64,
    /// ASA in seconds with those agents.
    pub average_speed_of_answer: f64,
    /// Occupancy with those agents (share).
    pub occupancy: f64,
}

/// The fewest agents that meet the target service level without exceeding the maximum
/// occupancy, by Erlang C.
pub fn agents_needed(target: &StaffingTarget) -> Result<Staffing, ErlangError> {
    let volume = check_rate(target.contacts)?;
    if !(target.interval_secs.is_finite() && target.interval_secs > 0.0) {
        return Err(ErlangError::InvalidInterval(target.interval_secs));
    }
    let aht = check_aht(target.aht_secs)?;
    let threshold = check_threshold(target.threshold_secs)?;
    if !(target.service_level >= 0.0 && target.service_level < 1.0) {
        return Err(ErlangError::InvalidServiceLevelTarget(target.service_level));
    }
    if !(target.max_occupancy > 0.0 && target.max_occupancy <= 1.0) {
        return Err(ErlangError::InvalidMaxOccupancy(target.max_occupancy));
    }
    let rate = volume / target.interval_secs;
    let traffic = rate * aht;
    // Start at the smallest stable staffing; below it SL is 0 (or traffic is 0).
    let floor = traffic.floor();
    if floor >= f64::from(MAX_AGENTS) {
        return Err(ErlangError::TargetUnreachable(MAX_AGENTS));
    }
    // Truncation is exact here: `floor` is a non-negative whole number below MAX_AGENTS.
    let mut agents = (floor as u32 + 1).max(1);
    while agents <= MAX_AGENTS {
        let q = ErlangC::new(rate, aht, agents)?;
        let sl = q.service_level(threshold)?;
        if sl >= target.service_level && q.occupancy() <= target.max_occupancy {
            return Ok(Staffing {
                agents,
                traffic,
                service_level: sl,
                probability_of_wait: q.probability_of_wait(),
                average_speed_of_answer: q.average_speed_of_answer(),
                occupancy: q.occupancy(),
            });
        }
        agents += 1;
    }
    Err(ErlangError::TargetUnreachable(MAX_AGENTS))
}

/// An M/M/N+M queue: Erlang C plus callers who abandon after an exponential patience.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErlangA {
    agents: u32,
    arrivals_per_sec: f64,
    aht_secs: f64,
    patience_secs: f64,
}

/// What Erlang A predicts for one queue and interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErlangAPrediction {
    /// Share of contacts that find every agent busy and wait.
    pub probability_of_wait: f64,
    /// Share of contacts that abandon before an agent answers.
    pub probability_of_abandon: f64,
    /// Share of offered contacts answered within the threshold.
    pub service_level: f64,
    /// Mean wait of answered contacts, in seconds (0 when none are answered).
    pub average_speed_of_answer: f64,
    /// Carried traffic per agent: answered rate × AHT ÷ N (0 without agents).
    pub occupancy: f64,
}

impl ErlangA {
    /// A queue with `arrivals_per_sec`, `aht_secs`, `agents` and callers whose patience is
    /// exponential with mean `patience_secs` (`f64::INFINITY` is not allowed: use [`ErlangC`]).
    pub fn new(
        arrivals_per_sec: f64,
        aht_secs: f64,
        agents: u32,
        patience_secs: f64,
    ) -> Result<Self, ErlangError> {
        let rate = check_rate(arrivals_per_sec)?;
        let aht = check_aht(aht_secs)?;
        check_agents(agents)?;
        if !(patience_secs.is_finite() && patience_secs > 0.0) {
            return Err(ErlangError::InvalidPatience(patience_secs));
        }
        Ok(Self {
            agents,
            arrivals_per_sec: rate,
            aht_secs: aht,
            patience_secs,
        })
    }

    /// P(wait), P(abandon), SL at `threshold_secs`, ASA and occupancy.
    pub fn predict(&self, threshold_secs: f64) -> Result<ErlangAPrediction, ErlangError> {
        let threshold = check_threshold(threshold_secs)?;
        let lambda = self.arrivals_per_sec;
        if lambda == 0.0 {
            return Ok(ErlangAPrediction {
                probability_of_wait: 0.0,
                probability_of_abandon: 0.0,
                service_level: 1.0,
                average_speed_of_answer: 0.0,
                occupancy: 0.0,
            });
        }
        let mu = 1.0 / self.aht_secs;
        let theta = 1.0 / self.patience_secs;
        let n = f64::from(self.agents);
        let service_rate = n * mu;

        // ln of Σ_{i<N} π_i / π_N = 1/B(N, A) − 1.
        let ln_below = if self.agents == 0 {
            f64::NEG_INFINITY
        } else {
            let l = ln_inverse_erlang_b(self.agents, lambda / mu);
            // ln(e^l − 1) = l + ln(1 − e^{−l})
            l + (-(-l).exp()).ln_1p()
        };

        // ln(π_{N+j} / π_N) = Σ_{i=1..j} ln(λ / (Nμ + iθ)); sum until past the peak and
        // negligible.
        let ln_lambda = lambda.ln();
        let peak = ((lambda - service_rate) / theta).max(0.0);
        let mut ln_terms: Vec<f64> = Vec::with_capacity(64);
        let mut ln_term = 0.0_f64;
        let mut ln_sum = f64::NEG_INFINITY;
        let mut j = 0usize;
        loop {
            ln_terms.push(ln_term);
            ln_sum = log_add(ln_sum, ln_term);
            j += 1;
            // Precision loss in j as f64 starts at 2^53, far beyond MAX_QUEUE_STATES.
            let jf = j as f64;
            if jf > peak && ln_term < ln_sum - 40.0 {
                break;
            }
            if j >= MAX_QUEUE_STATES {
                return Err(ErlangError::NotConverged(MAX_QUEUE_STATES));
            }
            ln_term += ln_lambda - (service_rate + jf * theta).ln();
        }
        let ln_total = log_add(ln_below, ln_sum);
        let probability_of_wait = (ln_sum - ln_total).exp().clamp(0.0, 1.0);

        if self.agents == 0 {
            return Ok(ErlangAPrediction {
                probability_of_wait: 1.0,
                probability_of_abandon: 1.0,
                service_level: 0.0,
                average_speed_of_answer: 0.0,
                occupancy: 0.0,
            });
        }

        let alpha = service_rate / theta;
        let x = (-theta * threshold).exp();
        let mut abandon = 0.0;
        let mut answered_in_time = 0.0;
        let mut wait_of_answered = 0.0;
        let mut harmonic = 0.0; // Σ_{i=1}^{k+1} 1/(α+i)
        for (k, ln_w) in ln_terms.iter().enumerate() {
            let weight = (ln_w - ln_total).exp();
            let kf = k as f64;
            harmonic += 1.0 / (alpha + kf + 1.0);
            let served = alpha / (alpha + kf + 1.0);
            abandon += weight * (1.0 - served);
            wait_of_answered += weight * served * harmonic / theta;
            if weight > 0.0 {
                let late = if x >= 1.0 {
                    1.0
                } else if x <= 0.0 {
                    0.0
                } else {
                    puruspe::betai(alpha + 1.0, kf + 1.0, x)
                };
                answered_in_time += weight * served * (1.0 - late);
            }
        }
        let probability_of_abandon = abandon.clamp(0.0, 1.0);
        let answered = 1.0 - probability_of_abandon;
        let service_level = ((1.0 - probability_of_wait) + answered_in_time).clamp(0.0, 1.0);
        let average_speed_of_answer = if answered > 0.0 {
            wait_of_answered / answered
        } else {
            0.0
        };
        let occupancy = (lambda * answered * self.aht_secs / n).clamp(0.0, 1.0);
        Ok(ErlangAPrediction {
            probability_of_wait,
            probability_of_abandon,
            service_level,
            average_speed_of_answer,
            occupancy,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Erlang C by the textbook formula with factorials; only good for small N.
    fn naive_erlang_c(n: u32, a: f64) -> f64 {
        let mut fact = 1.0;
        let mut sum = 0.0;
        for k in 0..n {
            if k > 0 {
                fact *= f64::from(k);
            }
            sum += a.powi(k as i32) / fact;
        }
        let last = a.powi(n as i32) / (fact * f64::from(n)) * f64::from(n) / (f64::from(n) - a);
        last / (sum + last)
    }

    #[test]
    fn erlang_b_known_values() {
        // Classic table values: B(1, 1) = 0.5, B(2, 1) = 0.2, B(10, 5) ≈ 0.018385.
        assert!(close(erlang_b(1, 1.0).unwrap(), 0.5, 1e-12));
        assert!(close(erlang_b(2, 1.0).unwrap(), 0.2, 1e-12));
        assert!(close(erlang_b(10, 5.0).unwrap(), 0.018_384_7, 1e-6));
        assert_eq!(erlang_b(0, 3.0).unwrap(), 1.0);
        assert_eq!(erlang_b(5, 0.0).unwrap(), 0.0);
    }

    #[test]
    fn erlang_c_matches_naive_formula_for_small_teams() {
        for n in 1..=30u32 {
            for a10 in (1..(n * 10)).step_by(7) {
                let a = f64::from(a10) / 10.0;
                let q = ErlangC::new(a / 180.0, 180.0, n).unwrap();
                let got = q.probability_of_wait();
                let want = naive_erlang_c(n, a);
                assert!(close(got, want, 1e-9), "N={n} A={a}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn erlang_c_published_example() {
        // The standard worked example: 100 calls per 30 minutes, AHT 180 s → A = 10 Erlangs.
        // With 14 agents: P(wait) ≈ 17.4 %, SL(20 s) ≈ 88.8 %, ASA ≈ 8.7 s, occupancy 71.4 %.
        let q = ErlangC::new(100.0 / 1800.0, 180.0, 14).unwrap();
        assert!(close(q.traffic(), 10.0, 1e-9));
        assert!(
            close(q.probability_of_wait(), 0.1741, 5e-4),
            "{}",
            q.probability_of_wait()
        );
        assert!(close(q.service_level(20.0).unwrap(), 0.8884, 5e-4));
        assert!(
            close(q.average_speed_of_answer(), 7.83, 0.01),
            "{}",
            q.average_speed_of_answer()
        );
        assert!(close(q.occupancy(), 10.0 / 14.0, 1e-12));
    }

    #[test]
    fn erlang_c_unstable_queue() {
        let q = ErlangC::new(10.0 / 180.0, 180.0, 10).unwrap();
        assert!(!q.is_stable());
        assert_eq!(q.probability_of_wait(), 1.0);
        assert_eq!(q.service_level(20.0).unwrap(), 0.0);
        assert!(q.average_speed_of_answer().is_infinite());
        assert_eq!(q.occupancy(), 1.0);
    }

    #[test]
    fn erlang_c_large_center_is_finite_and_monotone() {
        // 400 Erlangs: factorials would overflow at N = 171.
        let mut last = 1.0;
        for n in 401..=460u32 {
            let q = ErlangC::new(400.0 / 300.0, 300.0, n).unwrap();
            let p = q.probability_of_wait();
            assert!(p.is_finite() && (0.0..=1.0).contains(&p));
            assert!(p < last, "P(wait) must fall as agents are added");
            last = p;
        }
        // Economies of scale: 420 agents for 400 Erlangs already answer most calls at once.
        let q = ErlangC::new(400.0 / 300.0, 300.0, 420).unwrap();
        assert!(q.service_level(20.0).unwrap() > 0.8);
    }

    #[test]
    fn staffing_meets_target_with_fewest_agents() {
        let target = StaffingTarget {
            contacts: 100.0,
            interval_secs: 1800.0,
            aht_secs: 180.0,
            service_level: 0.8,
            threshold_secs: 20.0,
            max_occupancy: 1.0,
        };
        let s = agents_needed(&target).unwrap();
        // 13 agents give ≈ 0.79 < 0.8; 14 give ≈ 0.89.
        assert_eq!(s.agents, 14);
        let one_less = ErlangC::new(100.0 / 1800.0, 180.0, 13).unwrap();
        assert!(one_less.service_level(20.0).unwrap() < 0.8);

        // An occupancy cap of 70 % forces 15 agents (10/14 = 71 %).
        let capped = agents_needed(&StaffingTarget {
            max_occupancy: 0.70,
            ..target
        })
        .unwrap();
        assert_eq!(capped.agents, 15);
        assert!(capped.occupancy <= 0.70);
    }

    #[test]
    fn staffing_scales_to_hundreds_of_erlangs() {
        let s = agents_needed(&StaffingTarget {
            contacts: 4800.0,
            interval_secs: 3600.0,
            aht_secs: 270.0,
            service_level: 0.8,
            threshold_secs: 20.0,
            max_occupancy: 0.95,
        })
        .unwrap();
        assert!(close(s.traffic, 360.0, 1e-9));
        assert!(s.agents > 360 && s.agents < 400, "{}", s.agents);
        assert!(s.service_level >= 0.8);
    }

    #[test]
    fn staffing_rejects_bad_input() {
        let ok = StaffingTarget {
            contacts: 10.0,
            interval_secs: 900.0,
            aht_secs: 200.0,
            service_level: 0.8,
            threshold_secs: 20.0,
            max_occupancy: 0.9,
        };
        assert!(
            agents_needed(&StaffingTarget {
                aht_secs: 0.0,
                ..ok
            })
            .is_err()
        );
        assert!(
            agents_needed(&StaffingTarget {
                contacts: f64::NAN,
                ..ok
            })
            .is_err()
        );
        assert!(
            agents_needed(&StaffingTarget {
                service_level: 1.0,
                ..ok
            })
            .is_err()
        );
        assert!(
            agents_needed(&StaffingTarget {
                max_occupancy: 0.0,
                ..ok
            })
            .is_err()
        );
        assert!(
            agents_needed(&StaffingTarget {
                interval_secs: -1.0,
                ..ok
            })
            .is_err()
        );
        assert_eq!(
            agents_needed(&StaffingTarget {
                contacts: 0.0,
                ..ok
            })
            .unwrap()
            .agents,
            1
        );
    }

    #[test]
    fn erlang_a_with_very_patient_callers_is_erlang_c() {
        for &(n, a) in &[(11u32, 10.0), (14, 10.0), (25, 21.5), (320, 300.0)] {
            let aht = 240.0;
            let c = ErlangC::new(a / aht, aht, n).unwrap();
            let ea = ErlangA::new(a / aht, aht, n, 1e9)
                .unwrap()
                .predict(20.0)
                .unwrap();
            assert!(
                close(ea.probability_of_wait, c.probability_of_wait(), 1e-4),
                "N={n}"
            );
            assert!(ea.probability_of_abandon < 1e-4);
            assert!(
                close(ea.service_level, c.service_level(20.0).unwrap(), 1e-4),
                "N={n}"
            );
            let asa = c.average_speed_of_answer();
            assert!(
                close(ea.average_speed_of_answer, asa, 1e-3 * asa.max(1.0)),
                "N={n}"
            );
        }
    }

    /// Erlang A computed the slow, obvious way: stationary probabilities of the birth–death
    /// chain by direct products, and the tagged caller's fate by uniformization of its
    /// "callers ahead" chain. Independent of the Beta closed form used in the code.
    fn naive_erlang_a(lambda: f64, mu: f64, theta: f64, n: usize, t: f64) -> (f64, f64, f64) {
        let max = n + 400;
        let mut p = vec![0.0; max];
        p[0] = 1.0;
        for i in 1..max {
            let death = (i.min(n) as f64) * mu + (i.saturating_sub(n) as f64) * theta;
            p[i] = p[i - 1] * lambda / death;
        }
        let total: f64 = p.iter().sum();
        let p: Vec<f64> = p.iter().map(|x| x / total).collect();
        let pw: f64 = p[n..].iter().sum();
        // Abandonment rate θ·E[queue] over the arrival rate.
        let eq: f64 = p
            .iter()
            .enumerate()
            .skip(n)
            .map(|(i, x)| (i - n) as f64 * x)
            .sum();
        let pab = theta * eq / lambda;
        // Uniformization: state k = callers ahead, plus absorbing "served" mass.
        let ks = max - n;
        let rate = |k: usize| n as f64 * mu + k as f64 * theta;
        let big = rate(ks) + theta;
        let mut v: Vec<f64> = p[n..].to_vec();
        let mut served = 0.0;
        let mut sl_wait = 0.0;
        let steps = (big * t + 12.0 * (big * t).sqrt() + 50.0) as usize;
        let mut pois = (-big * t).exp();
        for step in 0..=steps {
            sl_wait += pois * served;
            let mut next = vec![0.0; ks];
            for k in 0..ks {
                let adv = rate(k) / big;
                let stay = 1.0 - adv - theta / big;
                next[k] += v[k] * stay;
                if k == 0 {
                    served += v[0] * adv;
                } else {
                    next[k - 1] += v[k] * adv;
                }
            }
            v = next;
            pois *= big * t / (step as f64 + 1.0);
        }
        (pw, pab, (1.0 - pw) + sl_wait)
    }

    #[test]
    fn erlang_a_matches_naive_computation() {
        for &(lambda, aht, n, patience) in &[
            (10.0 / 180.0, 180.0, 10usize, 60.0),
            (12.0 / 200.0, 200.0, 10, 120.0),
            (3.0 / 100.0, 100.0, 4, 30.0),
            (1.0 / 300.0, 300.0, 2, 90.0),
        ] {
            let mu = 1.0 / aht;
            let theta = 1.0 / patience;
            let (pw, pab, sl) = naive_erlang_a(lambda, mu, theta, n, 20.0);
            let got = ErlangA::new(lambda, aht, n as u32, patience)
                .unwrap()
                .predict(20.0)
                .unwrap();
            assert!(close(got.probability_of_wait, pw, 1e-9), "{got:?} vs {pw}");
            assert!(
                close(got.probability_of_abandon, pab, 1e-9),
                "{got:?} vs {pab}"
            );
            assert!(close(got.service_level, sl, 1e-6), "{got:?} vs {sl}");
        }
    }

    #[test]
    fn erlang_a_stays_finite_when_overloaded() {
        // 30 Erlangs on 20 agents: Erlang C has no answer, Erlang A sheds the excess as abandons.
        let p = ErlangA::new(30.0 / 300.0, 300.0, 20, 120.0)
            .unwrap()
            .predict(20.0)
            .unwrap();
        assert!(p.probability_of_wait > 0.85, "{p:?}");
        // At most 20 of 30 Erlangs can be carried, so at least a third abandon.
        assert!(p.probability_of_abandon > 1.0 / 3.0 - 1e-9, "{p:?}");
        assert!(p.occupancy > 0.95 && p.occupancy <= 1.0);
        // A huge center also works.
        let p = ErlangA::new(600.0 / 300.0, 300.0, 580, 180.0)
            .unwrap()
            .predict(20.0)
            .unwrap();
        assert!(p.probability_of_abandon.is_finite() && p.service_level.is_finite());
        assert!(
            p.probability_of_abandon > 0.0 && p.probability_of_abandon < 0.2,
            "{p:?}"
        );
    }

    #[test]
    fn erlang_a_edge_cases() {
        let p = ErlangA::new(0.0, 300.0, 5, 60.0)
            .unwrap()
            .predict(20.0)
            .unwrap();
        assert_eq!(p.service_level, 1.0);
        let p = ErlangA::new(0.1, 300.0, 0, 60.0)
            .unwrap()
            .predict(20.0)
            .unwrap();
        assert_eq!(p.probability_of_abandon, 1.0);
        assert_eq!(p.service_level, 0.0);
        assert!(ErlangA::new(0.1, 300.0, 5, f64::INFINITY).is_err());
        assert!(ErlangC::new(0.1, 300.0, u32::MAX).is_err());
        assert!(erlang_b(u32::MAX, 1.0).is_err());
        assert!(
            ErlangA::new(0.1, 300.0, 5, 60.0)
                .unwrap()
                .predict(-1.0)
                .is_err()
        );
        // T = 0: SL is the share that does not wait at all.
        let p = ErlangA::new(0.05, 180.0, 10, 60.0)
            .unwrap()
            .predict(0.0)
            .unwrap();
        assert!(close(p.service_level, 1.0 - p.probability_of_wait, 1e-12));
    }
}
