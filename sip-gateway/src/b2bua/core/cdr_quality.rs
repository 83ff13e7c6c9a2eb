//! Voice quality in the CDR: a finished call's CDR rows wait for the relay's final counters.
//!
//! The MOS of a leg (E-model, `LegStats::mos_x100`) is known only when the relay has stopped
//! the call and reports [`MediaEvent::Removed`] with the final counters — a moment after
//! `finish` has written the rows. Rather than a second "amend the CDR" output (and an UPDATE
//! per call in the store), the rows of a call are held here until that event arrives, get the
//! caller leg's MOS (leg A) and the agent leg's (leg B), and then leave through
//! [`B2bua::poll_cdr`] like any other. The wait is bounded ([`QUALITY_WAIT`]): a relay that
//! never answers costs the MOS, never the row. While the gateway drains for shutdown nothing
//! is held, so the last rows cannot be lost when the driver stops.
//!
//! Only a media port that reports removals ([`MediaPort::reports_removal`], the real relay)
//! holds rows; the unit tests' fake media does not, so their CDRs come out at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use acd_core::ContactId;

use super::{B2bua, CdrRow, MediaPort, Now};
use crate::media::{MediaEvent, MediaSessionId};

/// How long CDR rows wait for the relay's final counters.
pub(super) const QUALITY_WAIT: Duration = Duration::from_secs(2);

/// Rows of finished calls waiting for their quality, by media session.
#[derive(Debug, Default)]
pub(super) struct HeldCdrs {
    calls: HashMap<MediaSessionId, (Instant, Vec<CdrRow>)>,
}

impl HeldCdrs {
    fn next_deadline(&self) -> Option<Instant> {
        self.calls.values().map(|(until, _)| *until).min()
    }
}

/// MOS x100 as the CDR stores it: 0 means the relay received nothing on that leg.
fn mos(value: u16) -> Option<u16> {
    (value > 0).then_some(value)
}

impl<M: MediaPort> B2bua<M> {
    /// Hook at the end of `finish`: the rows just queued for `contact` wait for the final
    /// counters of `media` (when the media port reports them and we are not draining).
    pub(super) fn hold_cdrs_for_quality(
        &mut self,
        now: Now,
        media: MediaSessionId,
        contact: ContactId,
    ) {
        if !self.accepting || !self.media.reports_removal() {
            return;
        }
        let mut rows = Vec::new();
        while self.cdrs.back().is_some_and(|r| r.contact == contact) {
            if let Some(r) = self.cdrs.pop_back() {
                rows.push(r);
            }
        }
        if rows.is_empty() {
            return;
        }
        rows.reverse();
        self.held_cdrs
            .calls
            .insert(media, (now.mono + QUALITY_WAIT, rows));
    }

    /// Hook in `handle_media_event`: the final counters of a removed call complete its rows.
    /// Does not consume the event.
    pub(super) fn cdr_quality_event(&mut self, event: &MediaEvent) {
        let MediaEvent::Removed { id, stats } = event else {
            return;
        };
        let Some((_, rows)) = self.held_cdrs.calls.remove(id) else {
            return;
        };
        for mut row in rows {
            row.mos_x100 = match row.leg {
                "caller" => mos(stats.leg_a.mos_x100),
                _ => mos(stats.leg_b.mos_x100),
            };
            self.cdrs.push_back(row);
        }
    }

    /// When held rows must be released without their quality.
    pub(super) fn cdr_quality_poll_timeout(&self) -> Option<Instant> {
        self.held_cdrs.next_deadline()
    }

    /// Releases rows whose wait is over.
    pub(super) fn cdr_quality_timeout(&mut self, now: Now) {
        let due: Vec<MediaSessionId> = self
            .held_cdrs
            .calls
            .iter()
            .filter(|(_, (until, _))| *until <= now.mono)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((_, rows)) = self.held_cdrs.calls.remove(&id) {
                self.cdrs.extend(rows);
            }
        }
    }

    /// Hook in `poll_cdr`: while draining for shutdown, held rows leave at once (the driver
    /// stops as soon as the last call is gone).
    pub(super) fn cdr_quality_flush_when_draining(&mut self) {
        if !self.accepting && !self.held_cdrs.calls.is_empty() {
            for (_, (_, rows)) in self.held_cdrs.calls.drain() {
                self.cdrs.extend(rows);
            }
        }
    }

    /// Rows still held.
    #[cfg(test)]
    pub(super) fn held_cdr_rows(&self) -> usize {
        self.held_cdrs.calls.values().map(|(_, r)| r.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::b2bua::core::tests::FakeMedia;
    use crate::b2bua::core::{B2buaConfig, CdrRow};
    use crate::media::{CallStats, LegStats};
    use crate::sip::registrar::RegistrarConfig;
    use crate::sip::transaction::TimerConfig;
    use uuid::Uuid;

    /// FakeMedia that says it reports removals, like the real relay.
    struct Reporting(FakeMedia);

    impl MediaPort for Reporting {
        fn add_call(
            &mut self,
            a: crate::media::LegSetup,
            b: crate::media::LegSetup,
        ) -> Result<crate::media::CallMedia, crate::media::MediaError> {
            self.0.add_call(a, b)
        }
        fn update_leg(
            &mut self,
            id: MediaSessionId,
            leg: crate::media::Leg,
            setup: crate::media::LegSetup,
        ) {
            self.0.update_leg(id, leg, setup);
        }
        fn remove_call(&mut self, id: MediaSessionId) {
            self.0.remove_call(id);
        }
        fn audio(&mut self, id: MediaSessionId, cmd: crate::media::AudioCommand) {
            self.0.audio(id, cmd);
        }
        fn add_leg(
            &mut self,
            id: MediaSessionId,
            setup: crate::media::LegSetup,
        ) -> Result<crate::media::PortPair, crate::media::MediaError> {
            self.0.add_leg(id, setup)
        }
        fn remove_leg(&mut self, id: MediaSessionId, leg: crate::media::Leg) {
            self.0.remove_leg(id, leg);
        }
        fn reports_removal(&self) -> bool {
            true
        }
    }

    fn core() -> B2bua<Reporting> {
        B2bua::new(
            B2buaConfig {
                sip_address: "127.0.0.1:5060".parse().unwrap(),
                media_address: "127.0.0.1".parse().unwrap(),
                realm: "zentrale".into(),
                nonce_key: b"k".to_vec(),
                registrar: RegistrarConfig::default(),
                timers: TimerConfig::default(),
                seed: 1,
            },
            Reporting(FakeMedia::default()),
        )
    }

    fn row(contact: ContactId, leg: &'static str) -> CdrRow {
        CdrRow {
            tenant: Uuid::from_u128(1),
            contact,
            leg,
            started_ms: 1,
            answered_ms: Some(2),
            ended_ms: 3,
            caller: "+4930555".into(),
            callee: "100".into(),
            result: "answered",
            queue: Some("support".into()),
            agent: Some("1001".into()),
            wait_ms: 1,
            talk_ms: 1,
            recording: None,
            mos_x100: None,
            voicemail: None,
            transfer: None,
        }
    }

    fn now(base: Instant, ms: u64) -> Now {
        Now {
            mono: base + Duration::from_millis(ms),
            wall_ms: 1_800_000_000_000 + ms,
        }
    }

    fn drain(c: &mut B2bua<Reporting>) -> Vec<CdrRow> {
        std::iter::from_fn(|| c.poll_cdr()).collect()
    }

    #[test]
    fn rows_wait_for_the_final_counters_and_carry_each_legs_mos() {
        let mut c = core();
        let base = Instant::now();
        let contact = ContactId::from_u128(5);
        let media = MediaSessionId(9);
        c.cdrs.push_back(row(contact, "caller"));
        c.cdrs.push_back(row(contact, "agent"));
        c.hold_cdrs_for_quality(now(base, 0), media, contact);
        assert!(drain(&mut c).is_empty(), "held until the relay reports");
        assert_eq!(c.cdr_quality_poll_timeout(), Some(base + QUALITY_WAIT));
        let stats = CallStats {
            leg_a: LegStats {
                mos_x100: 431,
                ..LegStats::default()
            },
            leg_b: LegStats::default(),
            leg_c: None,
        };
        c.cdr_quality_event(&MediaEvent::Removed { id: media, stats });
        let rows = drain(&mut c);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].leg, "caller");
        assert_eq!(rows[0].mos_x100, Some(431));
        assert_eq!(rows[1].mos_x100, None, "nothing received from the agent");
        assert_eq!(c.held_cdr_rows(), 0);
    }

    #[test]
    fn a_silent_relay_costs_the_mos_never_the_row_and_draining_holds_nothing() {
        let mut c = core();
        let base = Instant::now();
        let contact = ContactId::from_u128(6);
        c.cdrs.push_back(row(contact, "caller"));
        c.hold_cdrs_for_quality(now(base, 0), MediaSessionId(1), contact);
        c.cdr_quality_timeout(now(base, 1999));
        assert!(drain(&mut c).is_empty());
        c.cdr_quality_timeout(now(base, 2000));
        let rows = drain(&mut c);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].mos_x100, None);

        // Held, then the gateway starts draining: everything leaves at the next poll.
        c.cdrs.push_back(row(contact, "caller"));
        c.hold_cdrs_for_quality(now(base, 3000), MediaSessionId(2), contact);
        c.stop_accepting();
        assert_eq!(drain(&mut c).len(), 1);
        // While draining, nothing is held at all.
        c.cdrs.push_back(row(contact, "caller"));
        c.hold_cdrs_for_quality(now(base, 3001), MediaSessionId(3), contact);
        assert_eq!(drain(&mut c).len(), 1);
    }
}
