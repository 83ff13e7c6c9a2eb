//! The shipped announcements and hold music: every prompt the call flows need exists in German
//! and English, is real audio at 8 kHz, and plays through a `Player` as expected.
#![allow(clippy::unwrap_used)]

use sip_gateway::audio::prompt::{COMMON, Player, PromptError, PromptLibrary};
use sip_gateway::audio::tone::{ToneGenerator, dominant_frequency, mean_power, power_db};
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};
use std::path::Path;

const NAMES: &[&str] = &[
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
];

#[test]
fn every_builtin_prompt_exists_in_german_and_english_and_is_audible() {
    let lib = PromptLibrary::builtin().unwrap();
    let mut langs: Vec<&str> = lib.languages().collect();
    langs.sort();
    assert_eq!(langs, ["de", "en"]);
    let numbers: Vec<String> = (1..=20).map(|n| format!("number_{n}")).collect();
    for lang in ["de", "en"] {
        for name in NAMES
            .iter()
            .copied()
            .chain(numbers.iter().map(String::as_str))
        {
            let p = lib.get(lang, name).unwrap();
            let ms = p.duration_ms();
            assert!((250..6000).contains(&ms), "{lang}/{name}: {ms} ms");
            let db = power_db(mean_power(p.samples()));
            assert!(db > -25.0, "{lang}/{name} too quiet: {db:.1} dB");
        }
        assert_ne!(
            lib.get(lang, "welcome").unwrap(),
            lib.get(if lang == "de" { "en" } else { "de" }, "welcome")
                .unwrap()
        );
    }
    // Language-neutral prompts are found from either language.
    assert_eq!(
        lib.get("de", "hold_music").unwrap(),
        lib.get("en", "hold_music").unwrap()
    );
    assert_eq!(lib.get(COMMON, "hold_music").unwrap().duration_ms(), 8000);
    assert!(lib.get("de", "language_menu").unwrap().duration_ms() > 2000);
    assert_eq!(lib.len(), 2 * (NAMES.len() + 20) + 2);
}

#[test]
fn the_committed_files_and_the_compiled_in_copies_are_the_same() {
    let mut from_disk = PromptLibrary::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let n = from_disk.load_dir(&dir).unwrap();
    let builtin = PromptLibrary::builtin().unwrap();
    assert_eq!(n, builtin.len());
    for lang in ["de", "en"] {
        for name in NAMES {
            assert_eq!(
                from_disk.get(lang, name).unwrap(),
                builtin.get(lang, name).unwrap()
            );
        }
    }
}

#[test]
fn position_and_waiting_time_are_composed_from_the_number_prompts() {
    let lib = PromptLibrary::builtin().unwrap();
    let pos = lib.position_announcement("de", 3).unwrap();
    assert_eq!(
        pos,
        [
            lib.get("de", "caller_number").unwrap().clone(),
            lib.get("de", "number_3").unwrap().clone()
        ]
    );
    let ewt = lib.waiting_time_announcement("en", 7).unwrap();
    assert_eq!(ewt.len(), 3);
    assert_eq!(&ewt[1], lib.get("en", "number_7").unwrap());
    assert_eq!(&ewt[2], lib.get("en", "minutes").unwrap());
    assert_eq!(
        &lib.waiting_time_announcement("en", 0).unwrap()[1],
        lib.get("en", "less_than_one_minute").unwrap()
    );
    assert_eq!(
        &lib.waiting_time_announcement("de", 1).unwrap()[1],
        lib.get("de", "one_minute").unwrap()
    );
    assert!(matches!(
        lib.position_announcement("de", 21),
        Err(PromptError::NumberOutOfRange(21))
    ));
    assert!(matches!(
        lib.position_announcement("de", 0),
        Err(PromptError::NumberOutOfRange(0))
    ));
    assert!(matches!(
        lib.position_announcement("fr", 2),
        Err(PromptError::Missing { .. })
    ));

    // Played back to back, the sentence takes exactly as many frames as its samples need.
    let mut player = Player::new();
    player.play_all(&pos);
    let total: usize = pos.iter().map(|p| p.samples().len()).sum();
    let mut frames = 0;
    let mut out = SILENCE;
    while player.next_frame(&mut out) {
        frames += 1;
    }
    assert_eq!(frames, total.div_ceil(FRAME_SAMPLES));
}

#[test]
fn a_tenant_upload_at_48khz_overrides_the_builtin_music_for_that_tenant_only() {
    let builtin = PromptLibrary::builtin().unwrap();
    let mut tenant = builtin.clone();
    let mut wav = std::io::Cursor::new(Vec::new());
    {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut wav, spec).unwrap();
        let mut g = ToneGenerator::with_rate(700.0, 12000, 48_000);
        for _ in 0..48_000 {
            let s = g.next_sample();
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }
    tenant
        .insert_wav(COMMON, "hold_music", std::io::Cursor::new(wav.into_inner()))
        .unwrap();
    let music = tenant.get("de", "hold_music").unwrap();
    assert!((music.duration_ms() as i64 - 1000).abs() <= 1);
    assert_ne!(builtin.get("de", "hold_music").unwrap(), music);

    // A caller on hold hears the tenant's music, and it loops past its end.
    let mut player = Player::new();
    player.loop_music(music);
    let mut out = SILENCE;
    for i in 0..120 {
        assert!(player.next_frame(&mut out));
        if (5..45).contains(&i) || (55..95).contains(&i) {
            let heard = dominant_frequency(&out, &[400.0, 700.0, 1000.0], 0.9).map(|x| x.0);
            assert_eq!(heard, Some(700.0), "frame {i}");
        }
    }
}

#[test]
fn an_answer_interrupts_a_long_announcement_in_the_very_next_frame() {
    let lib = PromptLibrary::builtin().unwrap();
    let mut player = Player::new();
    player.play(lib.get("de", "welcome").unwrap());
    player.play_all(&lib.position_announcement("de", 5).unwrap());
    player.loop_music(lib.get("de", "hold_music").unwrap());
    let mut out = SILENCE;
    for _ in 0..10 {
        assert!(player.next_frame(&mut out));
    }
    // The agent answers.
    player.interrupt();
    let mut out = [1i16; FRAME_SAMPLES];
    assert!(!player.next_frame(&mut out));
    assert_eq!(out, SILENCE);
}
