//! OPTIONS health probing of a trunk, sans-IO.
//!
//! Every `interval` one OPTIONS goes to the carrier. A final response below 500 (even 404 or
//! 405: the carrier's SIP stack is alive and answering) counts as a success; a 5xx or no
//! answer at all (transaction time-out) as a failure. The trunk is `Down` after `down_after`
//! failures in a row and `Up` again after `up_after` successes in a row, so one lost datagram
//! does not take a carrier out of the outbound rotation and one lucky answer does not bring a
//! flapping one back. Until the first verdict the health is `Unknown`, which outbound routing
//! treats like `Up` (a new trunk is usable at once; a failed call attempt fails over anyway).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::transaction::{TransportKind, new_branch};
use crate::sip::{Limits, Message, MessageBuilder, Method};

use super::TrunkModel;

/// Probe timings and thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Time between two probes.
    pub interval: Duration,
    /// Failures in a row that make a trunk `Down`.
    pub down_after: u32,
    /// Successes in a row that make a `Down` trunk `Up`.
    pub up_after: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_secs(30),
            down_after: 3,
            up_after: 2,
        }
    }
}

/// A trunk's health as probing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet.
    Unknown,
    /// Answering.
    Up,
    /// Not answering (or answering 5xx).
    Down,
}

impl Health {
    /// Whether outbound calls may use the trunk.
    pub fn usable(self) -> bool {
        self != Health::Down
    }
}

/// One trunk's probe; see the module docs.
#[derive(Debug)]
pub struct Probe {
    host: String,
    name: String,
    transport: TransportKind,
    local: SocketAddr,
    config: ProbeConfig,
    next_at: Instant,
    in_flight: bool,
    successes: u32,
    failures: u32,
    health: Health,
    sent: u64,
    cseq: u32,
    limits: Limits,
}

impl Probe {
    /// A probe of `trunk`; the first OPTIONS is due at `now`.
    pub fn new(trunk: &TrunkModel, local: SocketAddr, config: ProbeConfig, now: Instant) -> Probe {
        Probe {
            host: trunk.domain_uri(),
            name: trunk.name.clone(),
            transport: trunk.transport,
            local,
            config,
            next_at: now,
            in_flight: false,
            successes: 0,
            failures: 0,
            health: Health::Unknown,
            sent: 0,
            cseq: 0,
            limits: Limits::default(),
        }
    }

    /// The current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// When [`Self::handle_timeout`] must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.in_flight).then_some(self.next_at)
    }

    /// The next OPTIONS when due; `random` feeds branch, tag and Call-ID.
    pub fn handle_timeout(&mut self, now: Instant, random: u64) -> Option<Message> {
        if self.in_flight || now < self.next_at {
            return None;
        }
        self.cseq += 1;
        let transport = match self.transport {
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
            _ => "UDP",
        };
        let bytes = MessageBuilder::request(&Method::Options, self.host.as_bytes())
            .header(
                b"Via",
                format!(
                    "SIP/2.0/{transport} {};branch={};rport",
                    self.local,
                    new_branch(random)
                )
                .as_bytes(),
            )
            .header(b"Max-Forwards", b"70")
            .header(
                b"From",
                format!("<sip:zentrale@{}>;tag={:08x}", self.local, random as u32).as_bytes(),
            )
            .header(b"To", format!("<{}>", self.host).as_bytes())
            .header(b"Call-ID", format!("opt-{random:016x}@zentrale").as_bytes())
            .header(b"CSeq", format!("{} OPTIONS", self.cseq).as_bytes())
            .header(b"Accept", b"application/sdp")
            .header(b"User-Agent", b"zentrale")
            .finish();
        match Message::parse_datagram(bytes, &self.limits) {
            Ok(m) => {
                self.in_flight = true;
                self.sent += 1;
                Some(m)
            }
            Err(e) => {
                tracing::warn!(trunk = %self.name, "cannot build an OPTIONS probe: {e}");
                self.next_at = now + self.config.interval;
                None
            }
        }
    }

    /// A final response to the probe.
    pub fn handle_response(&mut self, now: Instant, status: u16) {
        if status < 200 || !self.in_flight {
            return;
        }
        self.record(now, status < 500);
    }

    /// The probe got no answer.
    pub fn handle_failure(&mut self, now: Instant) {
        if self.in_flight {
            self.record(now, false);
        }
    }

    fn record(&mut self, now: Instant, ok: bool) {
        self.in_flight = false;
        self.next_at = now + self.config.interval;
        let before = self.health;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.health != Health::Up
                && (self.health == Health::Unknown || self.successes >= self.config.up_after)
            {
                self.health = Health::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.config.down_after {
                self.health = Health::Down;
            }
        }
        if before != self.health {
            tracing::info!(trunk = %self.name, health = ?self.health, "trunk health changed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn trunk() -> TrunkModel {
        TrunkModel {
            name: "c".into(),
            host: "127.0.0.1".into(),
            addresses: vec!["127.0.0.1:5080".parse().unwrap()],
            transport: TransportKind::Udp,
            credentials: None,
            register: false,
            max_channels: 0,
        }
    }

    #[test]
    fn down_after_three_failures_up_after_two_successes() {
        let t0 = Instant::now();
        let mut p = Probe::new(
            &trunk(),
            "127.0.0.1:5060".parse().unwrap(),
            ProbeConfig::default(),
            t0,
        );
        let mut now = t0;
        let mut step = |p: &mut Probe, result: Option<u16>| {
            let m = p.handle_timeout(now, 1).expect("probe due");
            assert_eq!(m.method(), Some(&Method::Options));
            assert!(p.handle_timeout(now, 2).is_none(), "one probe in flight");
            match result {
                Some(s) => p.handle_response(now, s),
                None => p.handle_failure(now),
            }
            now = p.poll_timeout().unwrap();
            p.health()
        };
        assert_eq!(step(&mut p, Some(200)), Health::Up);
        assert_eq!(step(&mut p, None), Health::Up);
        assert_eq!(step(&mut p, Some(503)), Health::Up);
        assert_eq!(step(&mut p, None), Health::Down);
        assert_eq!(
            step(&mut p, Some(404)),
            Health::Down,
            "one success is not enough"
        );
        assert_eq!(step(&mut p, Some(200)), Health::Up);
        assert_eq!(p.sent(), 6);
        assert_eq!(now - t0, Duration::from_secs(180));
    }
}
