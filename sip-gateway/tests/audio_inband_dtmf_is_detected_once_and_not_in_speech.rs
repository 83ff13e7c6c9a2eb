//! In-band DTMF through G.711: a PIN typed as tones is recognised digit by digit, exactly once
//! each, and none of zentrale's own spoken prompts or the hold music is mistaken for a key
//! (the "talk-off" test, with real speech instead of a synthetic signal).
#![allow(clippy::unwrap_used)]

use sip_gateway::audio::FRAME_SAMPLES;
use sip_gateway::audio::dtmf::{Digit, InbandDtmfDetector};
use sip_gateway::audio::g711::{Law, decode_into, encode_into};
use sip_gateway::audio::prompt::PromptLibrary;
use sip_gateway::audio::tone::DualToneGenerator;

fn through_g711(law: Law, pcm: &[i16]) -> Vec<i16> {
    let mut codes = vec![0u8; pcm.len()];
    encode_into(law, pcm, &mut codes);
    let mut out = vec![0i16; pcm.len()];
    decode_into(law, &codes, &mut out);
    out
}

fn detect_all(samples: &[i16]) -> Vec<Digit> {
    let mut det = InbandDtmfDetector::new();
    samples
        .chunks_exact(FRAME_SAMPLES)
        .filter_map(|f| det.handle_frame(f))
        .collect()
}

#[test]
fn a_pin_typed_as_tones_gives_each_digit_once() {
    let pin = [Digit::D4, Digit::D7, Digit::D7, Digit::Hash, Digit::D0];
    let mut signal = Vec::new();
    for (i, d) in pin.iter().enumerate() {
        // Presses of 60–140 ms, pauses of 60 ms (typical fast typing is ≥ 40 ms each).
        let mut tone = vec![0i16; 8 * (60 + 20 * i)];
        DualToneGenerator::dtmf(*d, 6000).fill(&mut tone);
        signal.extend_from_slice(&tone);
        signal.extend_from_slice(&[0; 480]);
    }
    // Not frame-aligned: the tones start mid-frame, as they would on a real call.
    let mut shifted = vec![0i16; 57];
    shifted.extend_from_slice(&signal);
    shifted.resize(shifted.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, 0);
    assert_eq!(detect_all(&through_g711(Law::A, &shifted)), pin);
    assert_eq!(detect_all(&through_g711(Law::Mu, &shifted)), pin);
}

#[test]
fn a_20_ms_blip_is_not_a_key_press() {
    let mut s = vec![0i16; 4 * FRAME_SAMPLES];
    DualToneGenerator::dtmf(Digit::D5, 6000).fill(&mut s[FRAME_SAMPLES..2 * FRAME_SAMPLES]);
    assert_eq!(detect_all(&s), []);
}

#[test]
fn no_builtin_prompt_or_the_hold_music_triggers_a_digit() {
    let lib = PromptLibrary::builtin().unwrap();
    let mut names: Vec<String> = [
        "welcome",
        "please_hold",
        "caller_number",
        "ewt_intro",
        "minutes",
        "one_minute",
        "less_than_one_minute",
        "press_1_callback",
        "callback_confirmed",
        "closed",
        "leave_message",
        "invalid_input",
        "goodbye",
        "language_menu",
        "hold_music",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend((1..=20).map(|n| format!("number_{n}")));
    for lang in ["de", "en"] {
        for name in &names {
            let p = lib.get(lang, name).unwrap();
            let digits = detect_all(&through_g711(Law::A, p.samples()));
            assert_eq!(digits, [], "talk-off in {lang}/{name}");
        }
    }
}
