//! Everything the audio toolkit takes from the network or from a tenant's upload is untrusted:
//! arbitrary bytes and arbitrary packet sequences must give errors or concealment, never a
//! panic, and the invariants the media workers rely on must hold.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sip_gateway::audio::dtmf::{DtmfEvent, DtmfReceiver, TelephoneEvent};
use sip_gateway::audio::g711::{Law, decode_into};
use sip_gateway::audio::jitter::JitterBuffer;
use sip_gateway::audio::prompt::PromptLibrary;
use sip_gateway::audio::quality::ReceiveStats;
use sip_gateway::audio::{FRAME_SAMPLES, SILENCE};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A WAV header hound accepts, so the fuzzer gets past the magic bytes into the interesting
/// parts (fmt chunk fields, data length, truncated data).
fn wav_prefix(rate: u32, channels: u16, bits: u16, format: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&1000u32.to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    let block = u32::from(channels) * u32::from(bits) / 8;
    v.extend_from_slice(&(rate.wrapping_mul(block)).to_le_bytes());
    v.extend_from_slice(&(block as u16).to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_a_wav_upload_are_an_error_or_audio(
        rate in prop_oneof![Just(8000u32), Just(16000), Just(48000), any::<u32>()],
        channels in 0u16..4,
        bits in prop_oneof![Just(8u16), Just(16), Just(24), Just(32), any::<u16>()],
        format in prop_oneof![Just(1u16), Just(3), any::<u16>()],
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = wav_prefix(rate, channels, bits, format);
        bytes.extend_from_slice(&tail);
        let mut lib = PromptLibrary::new();
        // Ok or Err are both fine; the test is that this returns.
        let _ = lib.insert_wav("de", "upload", std::io::Cursor::new(bytes));
        let _ = lib.insert_wav("de", "raw", std::io::Cursor::new(tail));
    }

    #[test]
    fn arbitrary_telephone_event_packets_report_each_press_at_most_once(
        packets in proptest::collection::vec((0u32..8, proptest::collection::vec(any::<u8>(), 0..8)), 0..200),
    ) {
        let mut r = DtmfReceiver::new();
        let mut stamps = HashSet::new();
        for (ts, payload) in &packets {
            let ts = ts * 1000;
            if r.handle_packet(ts, payload).is_ok()
                && TelephoneEvent::parse(payload).ok().and_then(TelephoneEvent::digit).is_some()
            {
                stamps.insert(ts);
            }
        }
        let mut pressed = HashSet::new();
        let mut released = HashSet::new();
        while let Some(ev) = r.poll_event() {
            match ev {
                DtmfEvent::Pressed { rtp_timestamp, .. } => prop_assert!(pressed.insert(rtp_timestamp), "pressed twice"),
                DtmfEvent::Released { rtp_timestamp, .. } => {
                    prop_assert!(pressed.contains(&rtp_timestamp), "released before pressed");
                    prop_assert!(released.insert(rtp_timestamp), "released twice");
                }
            }
        }
        prop_assert!(pressed.is_subset(&stamps));
    }

    #[test]
    fn jitter_buffer_plays_exactly_one_frame_per_20_ms_whatever_arrives(
        packets in proptest::collection::vec((any::<u32>(), 0usize..400, 0u64..30), 1..120),
        near in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(40));
        let mut now = t0;
        let mut frames = 0u64;
        let mut f = SILENCE;
        let base = packets[0].0;
        for (ts, len, gap_ms) in &packets {
            now += Duration::from_millis(*gap_ms);
            while jb.poll_frame(now, &mut f).is_some() {
                frames += 1;
            }
            // Half the cases keep timestamps near each other so reordering is exercised;
            // the other half throw anything at the buffer.
            let ts = if near { base.wrapping_add(ts % 4000) } else { *ts };
            jb.handle_packet(now, ts, &vec![1000i16; *len]);
        }
        let end = now + Duration::from_millis(200);
        while jb.poll_frame(end, &mut f).is_some() {
            frames += 1;
        }
        // Playout started 40 ms after the first non-empty packet and advanced one frame per
        // 20 ms until `end`, whatever the packets were (resyncs included).
        let mut first_at = t0;
        let mut first = None;
        for (_, len, gap_ms) in &packets {
            first_at += Duration::from_millis(*gap_ms);
            if *len > 0 {
                first = Some(first_at);
                break;
            }
        }
        let expected = match first {
            None => 0,
            Some(at) => (end - (at + Duration::from_millis(40))).as_millis() as u64 / 20 + 1,
        };
        prop_assert_eq!(frames, expected);
        let st = jb.stats();
        prop_assert!(st.accepted + st.duplicates + st.late <= packets.len() as u64 + st.resyncs);
    }

    #[test]
    fn receive_stats_never_report_negative_or_absurd_loss(
        packets in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u64..100), 1..300),
    ) {
        let mut s = ReceiveStats::new();
        let mut now = 0u32;
        for (seq, ts, gap) in packets {
            now = now.wrapping_add(gap as u32 * 8);
            let h = sip_gateway::media::rtp::RtpHeader { payload_type: 0, sequence: seq, timestamp: ts, ssrc: 7 };
            s.handle_packet(now, &h, 172, true);
        }
        let loss = s.loss_percent();
        prop_assert!((0.0..=100.0).contains(&loss), "{loss}");
        prop_assert!(s.jitter_ms().is_finite() && s.jitter_ms() >= 0.0);
        let _ = s.take_fraction_lost();
    }

    #[test]
    fn any_payload_decodes_to_a_frame(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut out = [0i16; FRAME_SAMPLES];
        for law in [Law::Mu, Law::A] {
            let n = decode_into(law, &payload, &mut out);
            prop_assert_eq!(n, payload.len().min(FRAME_SAMPLES));
        }
    }
}
