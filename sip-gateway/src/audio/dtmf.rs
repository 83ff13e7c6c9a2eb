//! RFC 4733 telephone-event: DTMF sent as RTP events rather than as tones in the audio.
//!
//! A key press travels as a series of packets that all carry the RTP timestamp of the *start*
//! of the event, a growing duration, and finally three (redundant) packets with the end bit.
//! Any of them may be lost, duplicated or reordered. [`DtmfReceiver`] turns that stream into
//! exactly one [`DtmfEvent::Pressed`] per key press (on the first packet seen, so an IVR reacts
//! without waiting for the key to be released) and at most one [`DtmfEvent::Released`]. The
//! event's identity is its RTP timestamp, so the same key pressed twice is two presses, while
//! late end packets of an earlier press are recognised and ignored.
//!
//! [`InbandDtmfDetector`] covers trunks that send key presses as tones in the audio.
//!
//! [`DtmfSender`] produces the packet sequence for one digit; the caller owns the RTP header
//! (sequence numbers, SSRC) and the 20 ms pacing, keeping this module free of sockets and clocks.

use thiserror::Error;

/// A DTMF key (RFC 4733 events 0–15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variants are the keys on the phone
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Hash,
    A,
    B,
    C,
    D,
}

impl Digit {
    /// All sixteen keys, in event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Hash,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The RFC 4733 event code (0–15).
    pub const fn event_code(self) -> u8 {
        self as u8
    }

    /// The key for an RFC 4733 event code; `None` for non-DTMF events (flash, tones).
    pub fn from_event_code(code: u8) -> Option<Digit> {
        Digit::ALL.get(usize::from(code)).copied()
    }

    /// The key's character as written in dial strings and SIP INFO `Signal=` bodies.
    pub const fn as_char(self) -> char {
        const CHARS: [char; 16] = [
            '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
        ];
        CHARS[self as usize]
    }

    /// The key for a character (case-insensitive for A–D); `None` for anything else.
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase();
        Digit::ALL.iter().copied().find(|d| d.as_char() == c)
    }

    /// The (low, high) tone pair in Hz (ITU-T Q.23).
    pub fn frequencies(self) -> (f64, f64) {
        let (row, col) = match self {
            Digit::D1 => (0, 0),
            Digit::D2 => (0, 1),
            Digit::D3 => (0, 2),
            Digit::A => (0, 3),
            Digit::D4 => (1, 0),
            Digit::D5 => (1, 1),
            Digit::D6 => (1, 2),
            Digit::B => (1, 3),
            Digit::D7 => (2, 0),
            Digit::D8 => (2, 1),
            Digit::D9 => (2, 2),
            Digit::C => (2, 3),
            Digit::Star => (3, 0),
            Digit::D0 => (3, 1),
            Digit::Hash => (3, 2),
            Digit::D => (3, 3),
        };
        (super::tone::DTMF_LOW[row], super::tone::DTMF_HIGH[col])
    }

    /// The key at a position of the 4×4 keypad grid (row = low tone, column = high tone).
    pub fn from_grid(row: usize, col: usize) -> Option<Digit> {
        Digit::ALL.iter().copied().find(|d| {
            let (lo, hi) = d.frequencies();
            super::tone::DTMF_LOW.get(row) == Some(&lo)
                && super::tone::DTMF_HIGH.get(col) == Some(&hi)
        })
    }
}

/// Errors when reading a telephone-event payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// The payload is shorter than the 4 bytes of one event.
    #[error("telephone-event payload has {0} bytes, needs 4")]
    TooShort(usize),
}

/// One RFC 4733 event block (the 4-byte payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code; 0–15 are DTMF keys.
    pub event: u8,
    /// The end bit: this packet reports the final duration.
    pub end: bool,
    /// Power level as −dBm0 (0–63; larger is quieter).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block of a payload; extra bytes are ignored.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        let b: &[u8; 4] = payload
            .first_chunk()
            .ok_or(DtmfError::TooShort(payload.len()))?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload; the reserved bit is sent as zero as RFC 4733 requires.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The DTMF key of this event, if it is one.
    pub fn digit(self) -> Option<Digit> {
        Digit::from_event_code(self.event)
    }
}

/// What the receiver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtmfEvent {
    /// A key went down; reported once per press, on the first packet that arrives.
    Pressed {
        /// The key.
        digit: Digit,
        /// RTP timestamp of the start of the press (identifies the press).
        rtp_timestamp: u32,
    },
    /// The key went up; reported once, on the first end packet that arrives.
    Released {
        /// The key.
        digit: Digit,
        /// RTP timestamp of the start of the press.
        rtp_timestamp: u32,
        /// Final duration in RTP timestamp units.
        duration: u16,
    },
}

/// How many recent presses the receiver remembers to recognise their late packets.
const REMEMBERED: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Seen {
    rtp_timestamp: u32,
    released: bool,
}

/// Turns telephone-event packets into key presses, exactly once each. Sans-IO: feed packets
/// with [`DtmfReceiver::handle_packet`], drain with [`DtmfReceiver::poll_event`].
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    /// Ring of recent presses, newest at `next - 1`.
    seen: [Option<Seen>; REMEMBERED],
    next: usize,
    newest_ts: Option<u32>,
    out: std::collections::VecDeque<DtmfEvent>,
}

impl DtmfReceiver {
    /// A receiver with no history.
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// Feeds one telephone-event packet: its RTP timestamp and payload. Non-DTMF events are
    /// ignored; a malformed payload is an error and changes nothing.
    pub fn handle_packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Result<(), DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        let Some(digit) = ev.digit() else {
            return Ok(());
        };
        if let Some(slot) = self
            .seen
            .iter_mut()
            .flatten()
            .find(|s| s.rtp_timestamp == rtp_timestamp)
        {
            if ev.end && !slot.released {
                slot.released = true;
                self.out.push_back(DtmfEvent::Released {
                    digit,
                    rtp_timestamp,
                    duration: ev.duration,
                });
            }
            return Ok(());
        }
        // A press older than the newest one we know, and no longer in the ring, is a stray
        // retransmission from long ago: reporting it would replay a key the caller pressed
        // before the menu moved on.
        if let Some(newest) = self.newest_ts
            && (rtp_timestamp.wrapping_sub(newest) as i32) < 0
            && self.seen.iter().all(Option::is_some)
        {
            return Ok(());
        }
        if self
            .newest_ts
            .is_none_or(|n| (rtp_timestamp.wrapping_sub(n) as i32) > 0)
        {
            self.newest_ts = Some(rtp_timestamp);
        }
        self.seen[self.next] = Some(Seen {
            rtp_timestamp,
            released: ev.end,
        });
        self.next = (self.next + 1) % REMEMBERED;
        self.out.push_back(DtmfEvent::Pressed {
            digit,
            rtp_timestamp,
        });
        if ev.end {
            self.out.push_back(DtmfEvent::Released {
                digit,
                rtp_timestamp,
                duration: ev.duration,
            });
        }
        Ok(())
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.out.pop_front()
    }
}

/// One packet of a digit to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfPacket {
    /// Set on the first packet of the event (RFC 4733 §2.5.1.2).
    pub marker: bool,
    /// RTP timestamp: the same for all packets of the event (its start).
    pub rtp_timestamp: u32,
    /// The payload.
    pub payload: [u8; 4],
    /// When to send it, in ms after the first packet (the caller paces it).
    pub send_offset_ms: u32,
}

/// Produces the packet sequence for one key press: one packet every 20 ms with the growing
/// duration, then the final duration three times with the end bit.
#[derive(Clone, Debug)]
pub struct DtmfSender {
    digit: Digit,
    rtp_timestamp: u32,
    total: u16,
    volume: u8,
    index: u32,
}

/// Redundant end packets, as RFC 4733 §2.5.1.4 recommends.
const END_REPEATS: u32 = 3;

impl DtmfSender {
    /// A press of `digit` starting at `rtp_timestamp`, lasting `duration_ms` (clamped to 20 ms –
    /// 8 s so the 16-bit duration cannot wrap), at `volume` −dBm0 (10 is typical).
    pub fn new(digit: Digit, rtp_timestamp: u32, duration_ms: u32, volume: u8) -> DtmfSender {
        let ms = duration_ms.clamp(20, 8000);
        DtmfSender {
            digit,
            rtp_timestamp,
            // ms ≤ 8000, so ms·8 ≤ 64 000 fits in u16.
            total: (ms * 8) as u16,
            volume: volume.min(63),
            index: 0,
        }
    }

    /// The next packet, `None` when the press has been sent completely.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<DtmfPacket> {
        let step = 160u32;
        let running = u32::from(self.total).div_ceil(step);
        let i = self.index;
        if i + 1 >= running + END_REPEATS {
            return None;
        }
        self.index += 1;
        let end = i + 1 >= running;
        // Durations grow by one frame per packet; the last running packet already carries the
        // total and the end bit and is the first of the END_REPEATS identical end packets.
        let duration = ((i + 1) * step).min(u32::from(self.total)) as u16;
        let ev = TelephoneEvent {
            event: self.digit.event_code(),
            end,
            volume: self.volume,
            duration,
        };
        Some(DtmfPacket {
            marker: i == 0,
            rtp_timestamp: self.rtp_timestamp,
            payload: ev.to_bytes(),
            send_offset_ms: i * 20,
        })
    }
}

/// In-band DTMF: turns the audio of a caller whose trunk sends key presses as tones (no
/// telephone-event negotiated) into key presses, once each.
///
/// A press counts when the same digit is detected in two consecutive 20 ms frames (40 ms,
/// the Q.24 minimum duration), and ends after two frames without it, so a single noisy frame
/// inside a long press neither ends it nor reports it twice. Feed it the decoded frames of
/// the caller's leg; it keeps no audio.
#[derive(Clone, Debug, Default)]
pub struct InbandDtmfDetector {
    candidate: Option<Digit>,
    run: u32,
    pressed: Option<Digit>,
    missing: u32,
}

impl InbandDtmfDetector {
    /// A detector with no press in progress.
    pub fn new() -> InbandDtmfDetector {
        InbandDtmfDetector::default()
    }

    /// Feeds one frame; returns the digit when a new press is recognised.
    pub fn handle_frame(&mut self, frame: &[i16]) -> Option<Digit> {
        let d = super::tone::detect_dtmf(frame);
        if let Some(p) = self.pressed {
            if d == Some(p) {
                self.missing = 0;
                return None;
            }
            self.missing += 1;
            if self.missing < 2 {
                return None;
            }
            self.pressed = None;
            self.missing = 0;
        }
        if d.is_some() && d == self.candidate {
            self.run += 1;
        } else {
            self.candidate = d;
            self.run = u32::from(d.is_some());
        }
        if self.run >= 2 {
            self.pressed = self.candidate;
            self.candidate = None;
            self.run = 0;
            return self.pressed;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut DtmfReceiver) -> Vec<DtmfEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn payload_round_trips_and_rejects_short_input() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(ev.to_bytes(), [11, 0x8A, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Ok(ev));
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::TooShort(3))
        );
        // The reserved bit is ignored on input.
        assert_eq!(
            TelephoneEvent::parse(&[5, 0x4A, 0, 160]).map(|e| (e.end, e.volume)),
            Ok((false, 10))
        );
    }

    #[test]
    fn digits_map_to_chars_codes_and_grid() {
        for d in Digit::ALL {
            assert_eq!(Digit::from_char(d.as_char()), Some(d));
            assert_eq!(Digit::from_event_code(d.event_code()), Some(d));
        }
        assert_eq!(Digit::from_char('#'), Some(Digit::Hash));
        assert_eq!(Digit::from_char('b'), Some(Digit::B));
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!(Digit::D5.frequencies(), (770.0, 1336.0));
        assert_eq!(Digit::from_grid(3, 1), Some(Digit::D0));
        assert_eq!(Digit::from_grid(4, 0), None);
    }

    #[test]
    fn sender_produces_growing_durations_then_three_end_packets() {
        let mut s = DtmfSender::new(Digit::D7, 5000, 100, 10);
        let pkts: Vec<_> = std::iter::from_fn(|| s.poll_packet()).collect();
        assert_eq!(pkts.len(), 5 + 2);
        assert!(pkts[0].marker && pkts[1..].iter().all(|p| !p.marker));
        assert!(pkts.iter().all(|p| p.rtp_timestamp == 5000));
        let evs: Vec<_> = pkts
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).expect("4 bytes"))
            .collect();
        let durs: Vec<u16> = evs.iter().map(|e| e.duration).collect();
        assert_eq!(durs, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = evs.iter().map(|e| e.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        assert_eq!(pkts[6].send_offset_ms, 120);
    }

    #[test]
    fn a_clean_press_is_reported_once_pressed_and_once_released() {
        let mut r = DtmfReceiver::new();
        let mut s = DtmfSender::new(Digit::D3, 1000, 80, 10);
        while let Some(p) = s.poll_packet() {
            r.handle_packet(p.rtp_timestamp, &p.payload).expect("valid");
        }
        assert_eq!(
            drain(&mut r),
            [
                DtmfEvent::Pressed {
                    digit: Digit::D3,
                    rtp_timestamp: 1000
                },
                DtmfEvent::Released {
                    digit: Digit::D3,
                    rtp_timestamp: 1000,
                    duration: 640
                },
            ]
        );
    }

    #[test]
    fn only_end_packets_arriving_still_give_one_press() {
        let mut r = DtmfReceiver::new();
        let end = TelephoneEvent {
            event: 9,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        for _ in 0..3 {
            r.handle_packet(42, &end).expect("valid");
        }
        assert_eq!(drain(&mut r).len(), 2);
    }

    #[test]
    fn same_key_twice_is_two_presses_and_late_end_packets_are_ignored() {
        let mut r = DtmfReceiver::new();
        let run = |d| {
            TelephoneEvent {
                event: 1,
                end: false,
                volume: 10,
                duration: d,
            }
            .to_bytes()
        };
        let end = TelephoneEvent {
            event: 1,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        r.handle_packet(1000, &run(160)).expect("valid");
        r.handle_packet(1000, &end).expect("valid");
        r.handle_packet(3000, &run(160)).expect("valid");
        // A duplicated/late end packet of the first press arrives after the second started.
        r.handle_packet(1000, &end).expect("valid");
        r.handle_packet(3000, &end).expect("valid");
        let evs = drain(&mut r);
        let presses: Vec<_> = evs
            .iter()
            .filter(|e| matches!(e, DtmfEvent::Pressed { .. }))
            .collect();
        assert_eq!(presses.len(), 2);
        assert_eq!(evs.len(), 4);
    }

    #[test]
    fn reordered_lossy_duplicated_stream_of_a_pin_gives_each_digit_once() {
        let pin = [Digit::D1, Digit::D2, Digit::D2, Digit::Hash];
        let mut pkts = Vec::new();
        for (k, d) in pin.iter().enumerate() {
            let mut s = DtmfSender::new(*d, 10_000 + 4000 * k as u32, 120, 10);
            pkts.extend(std::iter::from_fn(|| s.poll_packet()));
        }
        // Lose every 4th packet, duplicate every 3rd, swap neighbours pairwise.
        let mut stream: Vec<DtmfPacket> = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            if i % 4 == 3 {
                continue;
            }
            stream.push(*p);
            if i % 3 == 0 {
                stream.push(*p);
            }
        }
        for pair in stream.chunks_mut(2) {
            pair.reverse();
        }
        let mut r = DtmfReceiver::new();
        for p in &stream {
            r.handle_packet(p.rtp_timestamp, &p.payload).expect("valid");
        }
        let pressed: Vec<Digit> = drain(&mut r)
            .into_iter()
            .filter_map(|e| match e {
                DtmfEvent::Pressed { digit, .. } => Some(digit),
                DtmfEvent::Released { .. } => None,
            })
            .collect();
        assert_eq!(pressed, pin);
    }

    #[test]
    fn non_dtmf_events_and_garbage_are_ignored_or_rejected() {
        let mut r = DtmfReceiver::new();
        // Event 16 is hook flash.
        r.handle_packet(1, &[16, 0x8A, 0, 160]).expect("valid");
        assert_eq!(r.handle_packet(1, &[]), Err(DtmfError::TooShort(0)));
        assert_eq!(r.poll_event(), None);
    }

    #[test]
    fn timestamp_wraparound_does_not_confuse_press_identity() {
        let mut r = DtmfReceiver::new();
        let run = TelephoneEvent {
            event: 4,
            end: false,
            volume: 10,
            duration: 160,
        }
        .to_bytes();
        r.handle_packet(u32::MAX - 100, &run).expect("valid");
        r.handle_packet(500, &run).expect("valid");
        r.handle_packet(u32::MAX - 100, &run).expect("valid");
        assert_eq!(drain(&mut r).len(), 2);
    }
}
