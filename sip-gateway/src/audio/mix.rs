//! Who hears whom: the per-tick mixer for a call with a caller, an agent and optionally a
//! supervisor listening, whispering or barging in.
//!
//! | mode    | caller hears       | agent hears           | supervisor hears |
//! |---------|--------------------|-----------------------|------------------|
//! | none    | agent              | caller                | —                |
//! | listen  | agent              | caller                | caller + agent   |
//! | whisper | agent              | caller + supervisor   | caller + agent   |
//! | barge   | agent + supervisor | caller + supervisor   | caller + agent   |
//!
//! The invariant that matters most is in the first column: in whisper mode the caller must
//! never hear the supervisor ("tell them about the discount" is not for the customer). The
//! mode is an argument of every tick, so switching between modes mid-call takes effect on the
//! next 20 ms frame with no state to tear down.
//!
//! Sums saturate at the i16 range instead of wrapping: wrapping turns two loud talkers into
//! full-scale noise, saturation into mild distortion.

use super::{FRAME_SAMPLES, Frame};

/// What a supervisor attached to a call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SupervisorMode {
    /// Hears both parties; nobody hears the supervisor.
    Listen,
    /// Hears both parties; only the agent hears the supervisor.
    Whisper,
    /// A three-way conversation: everyone hears everyone.
    Barge,
}

/// The frames each party hears in one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixOutput {
    /// What to send to the caller.
    pub to_caller: Frame,
    /// What to send to the agent.
    pub to_agent: Frame,
    /// What to send to the supervisor (silence when there is none).
    pub to_supervisor: Frame,
}

impl Default for MixOutput {
    fn default() -> Self {
        MixOutput {
            to_caller: [0; FRAME_SAMPLES],
            to_agent: [0; FRAME_SAMPLES],
            to_supervisor: [0; FRAME_SAMPLES],
        }
    }
}

/// Adds `src` to `dst` sample by sample, saturating.
#[inline]
pub fn add_saturating(dst: &mut [i16], src: &[i16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = d.saturating_add(*s);
    }
}

/// Mixes one tick of a call. `supervisor` is the supervisor's mode and the frame they spoke;
/// `None` when no supervisor is attached.
pub fn mix_call(
    caller: &Frame,
    agent: &Frame,
    supervisor: Option<(SupervisorMode, &Frame)>,
    out: &mut MixOutput,
) {
    out.to_caller = *agent;
    out.to_agent = *caller;
    match supervisor {
        None => out.to_supervisor = [0; FRAME_SAMPLES],
        Some((mode, sup)) => {
            out.to_supervisor = *caller;
            add_saturating(&mut out.to_supervisor, agent);
            match mode {
                SupervisorMode::Listen => {}
                SupervisorMode::Whisper => add_saturating(&mut out.to_agent, sup),
                SupervisorMode::Barge => {
                    add_saturating(&mut out.to_agent, sup);
                    add_saturating(&mut out.to_caller, sup);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: i16) -> Frame {
        [v; FRAME_SAMPLES]
    }

    #[test]
    fn the_table_in_the_module_docs_holds() {
        let (c, a, s) = (flat(1), flat(10), flat(100));
        let mut out = MixOutput::default();
        let cases = [
            (None, 10, 1, 0),
            (Some(SupervisorMode::Listen), 10, 1, 11),
            (Some(SupervisorMode::Whisper), 10, 101, 11),
            (Some(SupervisorMode::Barge), 110, 101, 11),
        ];
        for (mode, to_caller, to_agent, to_sup) in cases {
            mix_call(&c, &a, mode.map(|m| (m, &s)), &mut out);
            assert_eq!(out.to_caller, flat(to_caller), "{mode:?}");
            assert_eq!(out.to_agent, flat(to_agent), "{mode:?}");
            assert_eq!(out.to_supervisor, flat(to_sup), "{mode:?}");
        }
    }

    #[test]
    fn loud_sums_saturate_instead_of_wrapping() {
        let mut out = MixOutput::default();
        mix_call(
            &flat(30000),
            &flat(20000),
            Some((SupervisorMode::Barge, &flat(-30000))),
            &mut out,
        );
        assert_eq!(out.to_supervisor, flat(i16::MAX));
        assert_eq!(out.to_agent, flat(0));
        let mut d = [i16::MIN; 4];
        add_saturating(&mut d, &[-1, -1, 5, 0]);
        assert_eq!(d, [i16::MIN, i16::MIN, i16::MIN + 5, i16::MIN]);
    }
}
