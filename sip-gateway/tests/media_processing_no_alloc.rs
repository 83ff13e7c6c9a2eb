//! Processed mode does not allocate per packet or per frame: once a call's audio state exists
//! and its plays and detectors are set up, decoding packets, detecting DTMF, mixing three legs,
//! playing a prompt into music, building the recording frame and every leg's RTP packet for
//! 500 frames performs no heap allocation.
//!
//! Drives the sans-IO `media::process::CallAudio` directly (the worker only adds a `send_to`
//! per packet and a `try_send` of the recording frame into a preallocated channel). The global
//! allocator counts every allocation, so this file holds a single test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sip_gateway::audio::g711::{Law, encode_into};
use sip_gateway::audio::prompt::Prompt;
use sip_gateway::audio::tone::ToneGenerator;
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};
use sip_gateway::media::process::{CallAudio, LegParams};
use sip_gateway::media::rtp::RtpHeader;
use sip_gateway::media::{AudioCommand, Leg, LegSet};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn producing_frames_allocates_nothing() {
    let mut call = CallAudio::new();
    for (leg, ssrc) in [(Leg::A, 1), (Leg::B, 2), (Leg::C, 3)] {
        call.add_leg(
            leg,
            LegParams {
                law: Law::Mu,
                telephone_event: Some(101),
                ssrc,
                sequence: 0,
                timestamp: 0,
            },
        );
    }
    let mut music = vec![0i16; 8000];
    ToneGenerator::new(500.0, 8000).fill(&mut music);
    let mut prompt = vec![0i16; 4000];
    ToneGenerator::new(700.0, 8000).fill(&mut prompt);
    call.handle_command(&AudioCommand::Play {
        leg: Leg::A,
        items: vec![Arc::new(Prompt::from_samples(prompt))],
        music: Some(Arc::new(Prompt::from_samples(music))),
        tag: 1,
    });
    call.handle_command(&AudioCommand::Hears {
        leg: Leg::B,
        from: LegSet::of(&[Leg::A, Leg::C]),
    });
    call.handle_command(&AudioCommand::Hears {
        leg: Leg::C,
        from: LegSet::of(&[Leg::A, Leg::B]),
    });
    call.handle_command(&AudioCommand::DetectDtmf {
        leg: Leg::A,
        on: true,
    });
    call.handle_command(&AudioCommand::Record {
        path: "unused.wav".into(),
        mono: false,
    });
    let payload = |freq: f64| {
        let mut pcm = SILENCE;
        ToneGenerator::new(freq, 8000).fill(&mut pcm);
        let mut p = [0u8; FRAME_SAMPLES];
        encode_into(Law::Mu, &pcm, &mut p);
        p
    };
    let payloads = [payload(440.0), payload(1000.0), payload(1500.0)];
    let t0 = Instant::now();
    let mut run = |from: u32, to: u32| {
        let mut bytes = 0usize;
        for k in from..to {
            let now = t0 + Duration::from_millis(20 * u64::from(k));
            for (i, leg) in [Leg::A, Leg::B, Leg::C].into_iter().enumerate() {
                let h = RtpHeader {
                    payload_type: 0,
                    sequence: k as u16,
                    timestamp: k * 160,
                    ssrc: 10 + i as u32,
                };
                call.handle_rtp(now, leg, &h, &payloads[i]);
            }
            call.produce_frame(now);
            for leg in [Leg::A, Leg::B, Leg::C] {
                bytes += call.packet(leg).map_or(0, <[u8]>::len);
            }
            bytes += call.recorded_frame().map_or(0, |(l, _)| l.len());
            while call.poll_event().is_some() {}
        }
        bytes
    };
    // Warm-up: the jitter buffers anchor, the prompt ends and the music starts.
    run(0, 50);
    let region = Region::new(GLOBAL);
    let bytes = run(50, 550);
    let stats = region.change();
    assert_eq!(bytes, 500 * (3 * 172 + 160));
    assert_eq!(
        stats.allocations, 0,
        "processed frames allocated: {stats:?}"
    );
}
