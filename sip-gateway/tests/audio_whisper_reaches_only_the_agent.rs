//! Supervisor modes proven by tones: each party sends its own tone through G.711 and a jitter
//! buffer; after mixing, each party's received audio is checked for which tones it contains.
#![allow(clippy::unwrap_used)]

use sip_gateway::audio::g711::{Law, decode_into, encode_into};
use sip_gateway::audio::jitter::JitterBuffer;
use sip_gateway::audio::mix::{MixOutput, SupervisorMode, mix_call};
use sip_gateway::audio::tone::{ToneGenerator, detect, mean_power};
use sip_gateway::audio::{FRAME_SAMPLES, Frame, SILENCE};
use std::time::{Duration, Instant};

const CALLER_HZ: f64 = 500.0;
const AGENT_HZ: f64 = 1100.0;
const SUPERVISOR_HZ: f64 = 1700.0;

/// One party's leg into the mixer: tone → G.711 payload → jitter buffer → PCM.
struct Leg {
    tone: ToneGenerator,
    law: Law,
    jb: JitterBuffer,
    ts: u32,
}

impl Leg {
    fn new(freq: f64, law: Law) -> Leg {
        Leg {
            tone: ToneGenerator::new(freq, 6000),
            law,
            jb: JitterBuffer::new(Duration::from_millis(40)),
            ts: 0,
        }
    }
    fn send(&mut self, now: Instant) {
        let mut pcm = SILENCE;
        self.tone.fill(&mut pcm);
        let mut payload = [0u8; FRAME_SAMPLES];
        encode_into(self.law, &pcm, &mut payload);
        let mut decoded = SILENCE;
        decode_into(self.law, &payload, &mut decoded);
        self.jb.handle_packet(now, self.ts, &decoded);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
    }
    fn frame(&mut self, now: Instant) -> Frame {
        let mut f = SILENCE;
        self.jb.poll_frame(now, &mut f);
        f
    }
}

/// What one party heard: the share of its received power in each party's tone.
#[derive(Debug, Default)]
struct Heard {
    samples: Vec<i16>,
}

impl Heard {
    fn push(&mut self, law: Law, f: &Frame) {
        // Back through G.711 toward the party, as on the wire.
        let mut payload = [0u8; FRAME_SAMPLES];
        encode_into(law, f, &mut payload);
        let mut pcm = SILENCE;
        decode_into(law, &payload, &mut pcm);
        self.samples.extend_from_slice(&pcm);
    }
    fn hears(&self, freq: f64) -> bool {
        // Skip the first 100 ms (jitter-buffer start-up); a party "hears" a tone when it holds
        // at least 20 % of the received power (two equal tones give 50 % each).
        let s = &self.samples[800..];
        mean_power(s) > 1e-4 && detect(s, freq) > 0.2 * mean_power(s)
    }
}

fn run(mode: Option<SupervisorMode>) -> (Heard, Heard, Heard) {
    let t0 = Instant::now();
    let mut caller = Leg::new(CALLER_HZ, Law::A);
    let mut agent = Leg::new(AGENT_HZ, Law::Mu);
    let mut sup = Leg::new(SUPERVISOR_HZ, Law::Mu);
    let (mut hc, mut ha, mut hs) = (Heard::default(), Heard::default(), Heard::default());
    let mut out = MixOutput::default();
    for k in 0..50u32 {
        let now = t0 + Duration::from_millis(20 * u64::from(k));
        caller.send(now);
        agent.send(now);
        sup.send(now);
        let (c, a, s) = (caller.frame(now), agent.frame(now), sup.frame(now));
        mix_call(&c, &a, mode.map(|m| (m, &s)), &mut out);
        hc.push(Law::A, &out.to_caller);
        ha.push(Law::Mu, &out.to_agent);
        hs.push(Law::Mu, &out.to_supervisor);
    }
    (hc, ha, hs)
}

#[test]
fn whisper_is_heard_by_the_agent_and_not_by_the_caller() {
    let (caller, agent, sup) = run(Some(SupervisorMode::Whisper));
    assert!(agent.hears(SUPERVISOR_HZ) && agent.hears(CALLER_HZ));
    assert!(
        !caller.hears(SUPERVISOR_HZ),
        "the caller must never hear a whisper"
    );
    assert!(caller.hears(AGENT_HZ));
    assert!(sup.hears(CALLER_HZ) && sup.hears(AGENT_HZ) && !sup.hears(SUPERVISOR_HZ));
}

#[test]
fn listen_is_silent_for_both_parties() {
    let (caller, agent, sup) = run(Some(SupervisorMode::Listen));
    assert!(!caller.hears(SUPERVISOR_HZ) && !agent.hears(SUPERVISOR_HZ));
    assert!(sup.hears(CALLER_HZ) && sup.hears(AGENT_HZ));
}

#[test]
fn barge_makes_a_three_way_call() {
    let (caller, agent, sup) = run(Some(SupervisorMode::Barge));
    assert!(caller.hears(AGENT_HZ) && caller.hears(SUPERVISOR_HZ) && !caller.hears(CALLER_HZ));
    assert!(agent.hears(CALLER_HZ) && agent.hears(SUPERVISOR_HZ) && !agent.hears(AGENT_HZ));
    assert!(sup.hears(CALLER_HZ) && sup.hears(AGENT_HZ));
}

#[test]
fn without_a_supervisor_the_parties_hear_each_other_only() {
    let (caller, agent, _) = run(None);
    assert!(caller.hears(AGENT_HZ) && !caller.hears(SUPERVISOR_HZ) && !caller.hears(CALLER_HZ));
    assert!(agent.hears(CALLER_HZ) && !agent.hears(SUPERVISOR_HZ) && !agent.hears(AGENT_HZ));
}
