//! Voicemail: the caller hears "please leave a message after the tone" and a beep, then leg A
//! is recorded (mono) into `<data_dir>/voicemail/<tenant>/<contact>.wav` until the caller
//! hangs up or the queue's `voicemail_max_s` is reached. The file goes into the caller leg's
//! CDR row as its recording (result `voicemail`), which is how it reaches the customer's
//! timeline.
//!
//! Reached from acd-core's `Disposition::Voicemail` (a refusal's `then`, an escalation or
//! closed/full/no-agents overflow) and from an IVR option. The contact has left the engine by
//! then (or never entered it), so nothing here reports to the engine.

use std::time::Duration;

use acd_core::ContactId;

use super::queue_media::Phase;
use super::{B2bua, CallKey, MediaPort, Now, RecordingSummary};
use crate::media::AudioCommand;

/// The longest message when the call's queue has no media settings.
const DEFAULT_MAX: Duration = Duration::from_secs(120);

impl<M: MediaPort> B2bua<M> {
    /// The engine sent the contact to voicemail.
    pub(super) fn voicemail_for_contact(&mut self, now: Now, contact: ContactId) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        if let Some(m) = self.experience.calls.get_mut(&key) {
            m.outside_engine = true;
        } else {
            self.experience.calls.entry(key).or_default().outside_engine = true;
        }
        self.start_voicemail(now, key);
    }

    /// Answers if needed, plays the prompt and the beep; recording starts after them.
    pub(super) fn start_voicemail(&mut self, now: Now, key: CallKey) {
        if self.experience.voicemail_dir.is_none() {
            tracing::warn!(
                "voicemail requested but no voicemail directory is configured; hanging up"
            );
            self.answer_caller(now, key);
            self.leave_after(now, key, &["goodbye"], "refused");
            return;
        }
        self.answer_caller(now, key);
        self.experience.calls.entry(key).or_default().phase = Phase::VoicemailPrompt;
        let mut items = self.prompts_named(key, &["leave_message"]);
        items.push(self.experience.beep.clone());
        let wait = super::queue_media::duration_of(&items);
        self.play(key, items, None);
        self.arm(now, key, wait + Duration::from_millis(100));
    }

    /// The prompt is over: record leg A.
    pub(super) fn voicemail_record(&mut self, now: Now, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let Some(dir) = self.experience.voicemail_dir.clone() else {
            return;
        };
        let path = dir
            .join(call.tenant.hyphenated().to_string())
            .join(format!("{}.wav", call.contact.0.hyphenated()));
        let max = self.queue_media_of(key).map_or(DEFAULT_MAX, |m| {
            Duration::from_secs(u64::from(m.voicemail_max_s))
        });
        tracing::info!(path = %path.display(), "recording a voicemail");
        self.audio(
            key,
            AudioCommand::Record {
                path: path.clone(),
                mono: true,
            },
        );
        self.experience.calls.entry(key).or_default().phase = Phase::VoicemailRecording {
            path,
            started_ms: now.wall_ms,
        };
        self.arm(now, key, max);
    }

    /// Ends the message (caller hung up, or the maximum length): the file goes to the CDR.
    /// At the maximum length the caller hears goodbye and is hung up.
    pub(super) fn voicemail_stop(&mut self, now: Now, key: CallKey, at_limit: bool) {
        let Some(m) = self.experience.calls.get_mut(&key) else {
            return;
        };
        let Phase::VoicemailRecording { path, started_ms } = m.phase.clone() else {
            return;
        };
        let duration_ms = now.wall_ms.saturating_sub(started_ms);
        tracing::info!(path = %path.display(), duration_ms, at_limit, "voicemail message ended");
        m.voicemail = Some(RecordingSummary {
            path,
            duration_ms,
            pauses: Vec::new(),
        });
        self.audio(key, AudioCommand::StopRecording);
        if at_limit {
            self.leave_after(now, key, &["goodbye"], "voicemail");
        } else {
            self.finish(now, key, "voicemail");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use acd_core::{Action, Disposition, Input, QueueId};

    use super::super::queue_media::tests::{invite_to, music_media, with_media};
    use super::super::tests::{CARRIER, Harness, TENANT};
    use crate::audio::prompt::PromptLibrary;
    use crate::media::AudioCommand;
    use crate::sip::Method;

    #[test]
    fn refused_to_voicemail_records_after_the_beep_and_the_cdr_names_the_file() {
        let mut h = Harness::new();
        with_media(&mut h, Default::default());
        h.core.set_caller_media(
            PromptLibrary::builtin().unwrap(),
            Some("/data/voicemail".into()),
        );
        let out = invite_to(&mut h, "100", "z9hG4bKvm1");
        assert!(!out.iter().any(|(_, m)| m.status() == Some(200)), "rings");
        let contact = h
            .routing()
            .into_iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap();
        h.ms += 10;
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Refused {
                contact,
                queue: QueueId::new("support"),
                reason: acd_core::io::RefusalReason::Closed,
                then: Disposition::Voicemail,
            },
        );
        let out = h.out();
        assert!(
            out.iter().any(|(_, m)| m.status() == Some(200)),
            "answered for the message"
        );
        assert!(matches!(
            h.core.media.audio.last().unwrap().1,
            AudioCommand::Play { ref items, music: None, .. } if items.len() == 2
        ));
        h.ms += 10_000;
        let now = h.now();
        h.core.handle_timeout(now);
        let path = match &h.core.media.audio.last().unwrap().1 {
            AudioCommand::Record { path, mono: true } => path.clone(),
            other => panic!("expected a mono recording, got {other:?}"),
        };
        assert!(path.starts_with("/data/voicemail"));
        assert!(path.ends_with(format!("{}.wav", contact.0.hyphenated())));
        h.ms += 5_000;
        h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyevm\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKvm1@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        assert!(matches!(
            h.core.media.audio.last().unwrap().1,
            AudioCommand::StopRecording
        ));
        assert!(h.routing().is_empty(), "the engine has let the contact go");
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(cdr.result, "voicemail");
        assert_eq!(cdr.voicemail, Some(path.display().to_string()));
        let rec = cdr.recording.unwrap();
        assert_eq!(rec.path, path);
        assert!(rec.duration_ms >= 5_000);
    }

    #[test]
    fn no_agents_to_voicemail_with_queue_media_stops_at_the_callers_bye() {
        let mut h = Harness::new();
        let mut media = music_media();
        if let Some(q) = media.queues.get_mut(&QueueId::new("support")) {
            q.music = None;
            q.greeting = None;
            q.voicemail_max_s = 30;
        }
        with_media(&mut h, media);
        h.core
            .set_caller_media(PromptLibrary::builtin().unwrap(), Some("/vm".into()));
        invite_to(&mut h, "100", "z9hG4bKvm3");
        let contact = h
            .routing()
            .into_iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap();
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Refused {
                contact,
                queue: QueueId::new("support"),
                reason: acd_core::io::RefusalReason::NoAgents,
                then: Disposition::Voicemail,
            },
        );
        let ok = h
            .out()
            .into_iter()
            .find(|(_, m)| m.status() == Some(200))
            .unwrap()
            .1;
        let to = String::from_utf8_lossy(
            ok.headers_named(&crate::sip::HeaderName::To)
                .next()
                .unwrap(),
        )
        .into_owned();
        h.ms += 10_000;
        let now = h.now();
        h.core.handle_timeout(now);
        h.send(
            CARRIER,
            &format!("ACK sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack3\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: {to}\nCall-ID: z9hG4bKvm3@carrier\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        );
        h.ms += 2_000;
        let out = h.send(
            CARRIER,
            &format!("BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyevm3\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: {to}\nCall-ID: z9hG4bKvm3@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n"),
        );
        assert!(out.iter().any(|(_, m)| m.status() == Some(200)));
        assert!(
            matches!(
                h.core.media.audio.last().unwrap().1,
                AudioCommand::StopRecording
            ),
            "{:?}",
            h.core.media.audio.last()
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn a_message_at_the_limit_ends_with_goodbye_and_bye() {
        let mut h = Harness::new();
        let mut media = music_media();
        if let Some(q) = media.queues.get_mut(&QueueId::new("support")) {
            q.voicemail_max_s = 30;
        }
        with_media(&mut h, media);
        h.core
            .set_caller_media(PromptLibrary::builtin().unwrap(), Some("/vm".into()));
        invite_to(&mut h, "100", "z9hG4bKvm2");
        let contact = h
            .routing()
            .into_iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap();
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Overflow {
                contact,
                queue: QueueId::new("support"),
                target: Disposition::Voicemail,
            },
        );
        // Prompt and beep, then 30 s of message, then the goodbye.
        for step in [10_000, 30_000, 10_000] {
            h.ms += step;
            let now = h.now();
            h.core.handle_timeout(now);
        }
        let out = h.out();
        assert!(out.iter().any(|(_, m)| m.method() == Some(&Method::Bye)));
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(cdr.result, "voicemail");
        assert_eq!(cdr.recording.unwrap().duration_ms, 30_000);
    }
}
