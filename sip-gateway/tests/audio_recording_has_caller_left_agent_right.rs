//! The stereo recording holds the caller's tone on the left and the agent's on the right, and
//! a pause (card number) is silence of the right length on both channels.
#![allow(clippy::unwrap_used)]

use sip_gateway::audio::record::{Pause, Recorder};
use sip_gateway::audio::tone::{ToneGenerator, detect, mean_power};
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};

#[test]
fn caller_left_agent_right_and_pause_keeps_timing() {
    let dir = std::env::temp_dir().join(format!("zentrale-audio-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("call.wav");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut rec = Recorder::new(file).unwrap();
    let mut caller = ToneGenerator::new(600.0, 8000);
    let mut agent = ToneGenerator::new(1400.0, 8000);
    // 2 s of call; the agent pauses the recording from 0.8 s to 1.4 s.
    for k in 0..100 {
        if k == 40 {
            rec.pause();
        }
        if k == 70 {
            rec.resume();
        }
        let (mut c, mut a) = (SILENCE, SILENCE);
        caller.fill(&mut c);
        agent.fill(&mut a);
        rec.write_frame(&c, &a).unwrap();
    }
    let summary = rec.finish().unwrap();
    assert_eq!(summary.duration_ms, 2000);
    assert_eq!(
        summary.pauses,
        [Pause {
            start_ms: 800,
            end_ms: 1400
        }]
    );

    let mut r = hound::WavReader::open(&path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let all: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>().unwrap();
    let left: Vec<i16> = all.iter().step_by(2).copied().collect();
    let right: Vec<i16> = all.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.len(), 100 * FRAME_SAMPLES);

    let share = |s: &[i16], f: f64| detect(s, f) / mean_power(s).max(1e-12);
    let before = 0..40 * FRAME_SAMPLES;
    let after = 70 * FRAME_SAMPLES..100 * FRAME_SAMPLES;
    for range in [before, after] {
        assert!(share(&left[range.clone()], 600.0) > 0.95);
        assert!(share(&left[range.clone()], 1400.0) < 0.01);
        assert!(share(&right[range.clone()], 1400.0) > 0.95);
        assert!(share(&right[range.clone()], 600.0) < 0.01);
    }
    let paused = 40 * FRAME_SAMPLES..70 * FRAME_SAMPLES;
    assert!(left[paused.clone()].iter().all(|&s| s == 0));
    assert!(right[paused].iter().all(|&s| s == 0));
    std::fs::remove_dir_all(&dir).unwrap();
}
