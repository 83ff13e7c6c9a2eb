//! Call recording as the B2BUA sees it: when a recording starts (at the bridge for queues
//! that record everything, or by API), where the file goes, pause and resume, and the summary
//! that goes into the CDR.
//!
//! The audio work — stereo WAV with the caller on the left and the agent (and a barging
//! supervisor) on the right, silence while paused — is the media worker's
//! ([`AudioCommand::Record`]); the core only sends commands and keeps the times. Duration and
//! pauses are taken from the core's own wall clock rather than from the worker's
//! `MediaEvent::Recorded`, because the CDR is written when the call ends and the worker
//! finishes the file after that; a summary from the clock is deterministic in tests and
//! differs from the file by at most a frame or two.
//!
//! Files go to `<dir>/<tenant>/<yyyy-mm-dd>/<contact>.wav` (UTC date of the start; a
//! recording started again after a stop gets `<contact>.<n>.wav`, n = 2, 3, …). One
//! directory per tenant and day keeps retention a matter of deleting whole days and keeps
//! tenants apart on disk; the contact id (a UUIDv7) names the file so the CDR, the queue log
//! and the file agree without a lookup table. The retention sweep deletes files, so it is
//! I/O and lives in the binary (`src/sip_wiring.rs`), not here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use acd_core::{ContactId, QueueId};
use uuid::Uuid;

use super::{B2bua, CallKey, CallState, MediaPort, Now};
use crate::b2bua::control::{ControlError, RecordingStatus};
use crate::media::AudioCommand;

/// Where recordings go and which queues record every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingSettings {
    /// The directory under which `<tenant>/<date>/<contact>.wav` files are written; `None`
    /// disables recording on this node (requests get a clear error).
    pub dir: Option<PathBuf>,
    /// Queues (per tenant) whose calls are recorded from the bridge on, in addition to those
    /// whose media configuration says `record = true` (the model's queue media).
    pub queues: HashSet<(Uuid, QueueId)>,
}

/// What the CDR says about a call's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Recorded time including pauses, ms.
    pub duration_ms: u64,
    /// Pauses as (start, end) offsets from the recording's start, ms.
    pub pauses: Vec<(u64, u64)>,
}

/// The recording of one live call.
#[derive(Debug, Clone)]
pub(super) struct Recording {
    path: PathBuf,
    started_ms: u64,
    paused_at: Option<u64>,
    pauses: Vec<(u64, u64)>,
}

impl Recording {
    pub(super) fn status(&self) -> RecordingStatus {
        if self.paused_at.is_some() {
            RecordingStatus::Paused
        } else {
            RecordingStatus::On
        }
    }

    /// The summary as of `now_ms` (an open pause ends there).
    fn summary(&self, now_ms: u64) -> RecordingSummary {
        let mut pauses = self.pauses.clone();
        if let Some(p) = self.paused_at {
            pauses.push((
                p.saturating_sub(self.started_ms),
                now_ms.saturating_sub(self.started_ms),
            ));
        }
        RecordingSummary {
            path: self.path.clone(),
            duration_ms: now_ms.saturating_sub(self.started_ms),
            pauses,
        }
    }
}

/// The file of a recording: `<dir>/<tenant>/<yyyy-mm-dd>/<contact>.wav`, date in UTC.
pub fn recording_path(dir: &Path, tenant: Uuid, wall_ms: u64, contact: ContactId) -> PathBuf {
    let (y, m, d) = civil_date(wall_ms / 86_400_000);
    dir.join(tenant.hyphenated().to_string())
        .join(format!("{y:04}-{m:02}-{d:02}"))
        .join(format!("{}.wav", contact.0.hyphenated()))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`; exact for every `u64` day count a clock can give).
pub(crate) fn civil_date(days: u64) -> (i64, u32, u32) {
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d in 1..=31 and m in 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

impl<M: MediaPort> B2bua<M> {
    /// Replaces where recordings go and which queues record every call; calls in progress
    /// keep their recording.
    pub fn set_recording_settings(&mut self, settings: RecordingSettings) {
        self.recording = settings;
    }

    pub(crate) fn recording_start(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        if call.state != CallState::Connected {
            return Err(ControlError::NotConnected);
        }
        if call.recording.is_some() {
            return Err(ControlError::AlreadyRecording);
        }
        let Some(dir) = &self.recording.dir else {
            return Err(ControlError::NoRecordingDirectory);
        };
        let mut path = recording_path(dir, call.tenant, now.wall_ms, call.contact);
        if !call.recordings_done.is_empty() {
            // Started again after a stop: a file of its own, `<contact>.<n>.wav`.
            path.set_extension(format!("{}.wav", call.recordings_done.len() + 1));
        }
        call.recording = Some(Recording {
            path: path.clone(),
            started_ms: now.wall_ms,
            paused_at: None,
            pauses: Vec::new(),
        });
        let id = call.media.id;
        tracing::info!(contact = %call.contact, path = %path.display(), "recording started");
        self.media
            .audio(id, AudioCommand::Record { path, mono: false });
        Ok(())
    }

    pub(crate) fn recording_stop(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        let Some(rec) = call.recording.take() else {
            return Err(ControlError::NotRecording);
        };
        call.recordings_done.push(rec.summary(now.wall_ms));
        let id = call.media.id;
        self.media.audio(id, AudioCommand::StopRecording);
        Ok(())
    }

    pub(crate) fn recording_pause(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        let Some(rec) = call.recording.as_mut() else {
            return Err(ControlError::NotRecording);
        };
        if rec.paused_at.is_some() {
            return Err(ControlError::RecordingState("paused"));
        }
        rec.paused_at = Some(now.wall_ms);
        let id = call.media.id;
        self.media.audio(id, AudioCommand::PauseRecording);
        Ok(())
    }

    pub(crate) fn recording_resume(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        let Some(rec) = call.recording.as_mut() else {
            return Err(ControlError::NotRecording);
        };
        let Some(since) = rec.paused_at.take() else {
            return Err(ControlError::RecordingState("running"));
        };
        rec.pauses.push((
            since.saturating_sub(rec.started_ms),
            now.wall_ms.saturating_sub(rec.started_ms),
        ));
        let id = call.media.id;
        self.media.audio(id, AudioCommand::ResumeRecording);
        Ok(())
    }

    /// Hook at the bridge: queues that record every call start here.
    pub(super) fn recording_on_bridge(&mut self, now: Now, key: CallKey) {
        if self.calls.get(&key).is_none_or(|c| c.recording.is_some()) {
            // Bridged again (a transfer's next agent): the recording runs on.
            return;
        }
        let listed = self
            .calls
            .get(&key)
            .is_some_and(|c| self.recording.queues.contains(&(c.tenant, c.queue.clone())));
        let wanted = listed || self.queue_media_of(key).is_some_and(|m| m.record);
        if wanted && let Err(e) = self.recording_start(now, key) {
            tracing::warn!(?e, "queue recording not started");
        }
    }

    /// Hook when the call ends: finishes a running recording and returns what the CDR says
    /// (the last recording of the call when it was stopped and started again).
    pub(super) fn recording_on_end(
        &mut self,
        now: Now,
        call: &mut super::Call,
    ) -> Option<RecordingSummary> {
        if let Some(rec) = call.recording.take() {
            self.media.audio(call.media.id, AudioCommand::StopRecording);
            call.recordings_done.push(rec.summary(now.wall_ms));
        }
        call.recordings_done.last().cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, reply, sdp};
    use super::*;
    use crate::b2bua::control::{CallControl, ControlRequest};

    fn control(
        h: &mut Harness,
        contact: ContactId,
        control: CallControl,
    ) -> Result<(), ControlError> {
        let now = h.now();
        h.core.handle_control(
            now,
            ControlRequest {
                tenant: TENANT,
                contact,
                control,
            },
        )
    }

    fn recording_commands(h: &Harness) -> Vec<String> {
        h.core
            .media
            .audio
            .iter()
            .filter_map(|(_, c)| match c {
                AudioCommand::Record { path, mono } => {
                    Some(format!("record {} mono={mono}", path.display()))
                }
                AudioCommand::PauseRecording => Some("pause".into()),
                AudioCommand::ResumeRecording => Some("resume".into()),
                AudioCommand::StopRecording => Some("stop".into()),
                _ => None,
            })
            .collect()
    }

    fn bye(h: &mut Harness, call: &str) {
        h.send(
            CARRIER,
            &format!("BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb{call}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: {call}@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n"),
        );
    }

    #[test]
    fn a_recording_queue_records_from_the_bridge_and_the_cdr_lists_the_pause() {
        let mut h = Harness::new();
        h.core.set_recording_settings(RecordingSettings {
            dir: Some(PathBuf::from("/data/recordings")),
            queues: HashSet::from([(TENANT, QueueId::new("support"))]),
        });
        h.register();
        h.routing();
        let (_, contact) = h.invite("z9hG4bKrec1");
        assert!(
            recording_commands(&h).is_empty(),
            "nothing is recorded while queued"
        );
        let invite = h.offer(contact, 1)[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        let started = h.now().wall_ms;
        let expected = recording_path(Path::new("/data/recordings"), TENANT, started, contact);
        assert_eq!(
            recording_commands(&h),
            vec![format!("record {} mono=false", expected.display())]
        );
        assert_eq!(
            h.core.calls_snapshot(TENANT)[0].recording,
            RecordingStatus::On
        );

        h.ms += 1_000;
        control(&mut h, contact, CallControl::RecordingPause).unwrap();
        assert_eq!(
            control(&mut h, contact, CallControl::RecordingPause),
            Err(ControlError::RecordingState("paused"))
        );
        assert_eq!(
            h.core.calls_snapshot(TENANT)[0].recording,
            RecordingStatus::Paused
        );
        h.ms += 2_000;
        control(&mut h, contact, CallControl::RecordingResume).unwrap();
        h.ms += 1_990;
        bye(&mut h, "z9hG4bKrec1");
        assert_eq!(
            recording_commands(&h)[1..],
            ["pause", "resume", "stop"].map(String::from)
        );
        let cdrs: Vec<_> = std::iter::from_fn(|| h.core.poll_cdr()).collect();
        let summary = cdrs[0]
            .recording
            .clone()
            .expect("the CDR names the recording");
        assert_eq!(summary.path, expected);
        assert_eq!(summary.duration_ms, 5_000);
        assert_eq!(summary.pauses, vec![(1_000, 3_000)]);
        assert_eq!(cdrs[1].recording, Some(summary), "both legs' rows");
    }

    #[test]
    fn recording_by_api_needs_a_connected_call_and_a_directory() {
        let mut h = Harness::new();
        h.register();
        h.routing();
        let (_, contact) = h.invite("z9hG4bKrec2");
        assert_eq!(
            control(&mut h, contact, CallControl::RecordingStart),
            Err(ControlError::NotConnected)
        );
        let invite = h.offer(contact, 1)[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        assert!(
            recording_commands(&h).is_empty(),
            "this queue does not record"
        );
        assert_eq!(
            control(&mut h, contact, CallControl::RecordingStart),
            Err(ControlError::NoRecordingDirectory)
        );
        h.core.set_recording_settings(RecordingSettings {
            dir: Some(PathBuf::from("/r")),
            queues: HashSet::new(),
        });
        assert_eq!(
            control(&mut h, contact, CallControl::RecordingResume),
            Err(ControlError::NotRecording)
        );
        control(&mut h, contact, CallControl::RecordingStart).unwrap();
        assert_eq!(
            control(&mut h, contact, CallControl::RecordingStart),
            Err(ControlError::AlreadyRecording)
        );
        h.ms += 500;
        control(&mut h, contact, CallControl::RecordingStop).unwrap();
        assert_eq!(recording_commands(&h).len(), 2);
        h.ms += 1_000;
        control(&mut h, contact, CallControl::RecordingStart).unwrap();
        let again = recording_commands(&h)[2].clone();
        assert!(
            again.ends_with(&format!("{}.2.wav mono=false", contact.0.hyphenated())),
            "a second recording does not overwrite the first: {again}"
        );
        h.ms += 300;
        bye(&mut h, "z9hG4bKrec2");
        assert_eq!(
            recording_commands(&h).len(),
            4,
            "the running one is stopped at the end"
        );
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(
            cdr.recording.map(|r| r.duration_ms),
            Some(310),
            "the last recording"
        );
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_419), (2025, 11, 27));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }

    #[test]
    fn recording_path_is_tenant_then_day_then_contact() {
        let tenant = Uuid::from_u128(0xab);
        let contact = ContactId(Uuid::from_u128(0xcd));
        let p = recording_path(
            Path::new("/d/recordings"),
            tenant,
            1_764_201_600_000,
            contact,
        );
        assert_eq!(
            p,
            PathBuf::from(format!(
                "/d/recordings/{}/2025-11-27/{}.wav",
                tenant.hyphenated(),
                contact.0.hyphenated()
            ))
        );
    }
}
