//! What a caller hears and does before an agent answers: the early answer, greeting, queue
//! music, position and waiting-time announcements, DTMF (RFC 4733 from the relay, SIP INFO as
//! the fallback) and the callback request.
//!
//! The state lives in a side table ([`CallerMedia`] per call key) rather than in `Call`, so
//! the other B2BUA modules that build calls need not know about it, and a call without any
//! caller media (a queue that only rings) costs one failed hash look-up per hook. The audio
//! itself is the relay's business: this module only sends [`AudioCommand`]s and reacts to
//! `MediaEvent::Dtmf`. Timed steps (IVR timeouts, "hang up after the goodbye prompt", the
//! voicemail length) use the core's own timer list with the prompt's known duration, so no
//! step depends on a `PlayDone` arriving and a test drives everything with a fake clock.
//!
//! An agent's answer is never blocked by a prompt: [`B2bua::caller_media_on_bridge`] sends
//! `AudioCommand::Reset` before the bridge touches anything else, and the worker applies it
//! on the next 20 ms frame whatever is playing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acd_core::config::{AnnounceWhat, QueueMedia};
use acd_core::{ContactId, Input, NewContact, SkillExpr};

use super::callback::CallbackInfo;
use super::{B2bua, CallKey, CallState, LegRef, MediaPort, Now, RecordingSummary};
use crate::audio::prompt::{Prompt, PromptLibrary};
use crate::audio::tone::ToneGenerator;
use crate::media::{AudioCommand, Leg};
use crate::sip::{HeaderName, Message};

/// Where a caller is in their experience.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting in the queue (music, announcements, callback offer).
    #[default]
    Waiting,
    /// In an IVR menu (core/ivr.rs).
    Menu {
        /// The menu.
        name: String,
        /// Invalid keys so far.
        invalid: u8,
        /// Digits typed into a `collect` menu.
        collected: String,
    },
    /// The voicemail prompt and beep are playing (core/voicemail.rs).
    VoicemailPrompt,
    /// The message is being recorded into `path` since `started_ms`.
    VoicemailRecording {
        /// The file.
        path: PathBuf,
        /// Wall clock at the start of the recording.
        started_ms: u64,
    },
    /// A last prompt plays; then the caller leg ends with `result` in the CDR.
    Leaving {
        /// The CDR result.
        result: &'static str,
    },
}

/// One call's caller experience.
#[derive(Debug, Default)]
pub(super) struct CallerMedia {
    /// The 200 went to the caller before an agent answered.
    pub(super) answered: bool,
    /// The contact is not (or no longer) in the engine: IVR, voicemail, callback, refused.
    pub(super) outside_engine: bool,
    pub(super) phase: Phase,
    /// Prompt language chosen in the IVR (attribute `language`).
    pub(super) language: Option<String>,
    /// Attributes set in the IVR, for the contact.
    pub(super) attributes: BTreeMap<String, String>,
    /// Skill requirement chosen in the IVR.
    pub(super) requirement: Option<SkillExpr>,
    /// The last position announced (for `only_if_improved`).
    last_position: Option<u32>,
    /// "Press 1 for a callback" was played.
    callback_offered: bool,
    /// An audio command was sent: the bridge must reset the call to the plain relay.
    processed: bool,
    /// The armed timer (sequence number in the core's timer list).
    timer: Option<u64>,
    /// The finished voicemail message, for the CDR.
    pub(super) voicemail: Option<RecordingSummary>,
    /// Menus entered so far (bounds a loop of menus).
    pub(super) hops: u8,
    /// The greeting and when it ends: an announcement or callback offer that arrives while it
    /// plays (the engine's on-entry announcement comes at once) is played after it.
    greeting: Option<(Arc<Prompt>, Instant)>,
}

/// The core-wide part: prompts, directories, timers.
#[derive(Debug)]
pub(crate) struct CallerExperience {
    prompts: Arc<PromptLibrary>,
    cache: HashMap<(String, String), Option<Arc<Prompt>>>,
    pub(super) beep: Arc<Prompt>,
    /// `<data_dir>/voicemail`; `None`: voicemail is refused with a log line.
    pub(super) voicemail_dir: Option<PathBuf>,
    timers: BTreeMap<(Instant, u64), CallKey>,
    next_seq: u64,
    pub(super) calls: HashMap<CallKey, CallerMedia>,
}

impl Default for CallerExperience {
    fn default() -> Self {
        let prompts = PromptLibrary::builtin().unwrap_or_else(|e| {
            // Only a broken committed asset gets here (a prompt.rs test rules it out).
            tracing::error!("built-in prompts unusable: {e}");
            PromptLibrary::new()
        });
        CallerExperience::with_prompts(prompts)
    }
}

/// The language used when neither the IVR nor the queue names one.
const DEFAULT_LANGUAGE: &str = "en";
/// Slack after a prompt's length before its follow-up step (the worker starts it on the next
/// frame; the network adds a little).
const PROMPT_SLACK: Duration = Duration::from_millis(300);
/// The music used when a caller answered by an IVR enters a queue without media.
const FALLBACK_MUSIC: &str = "hold_music";

impl CallerExperience {
    pub(crate) fn with_prompts(prompts: PromptLibrary) -> CallerExperience {
        // The voicemail beep: 400 ms of 1 kHz, made here rather than shipped as a file.
        let mut beep = vec![0i16; 3200];
        ToneGenerator::new(1000.0, 12_000).fill(&mut beep);
        CallerExperience {
            prompts: Arc::new(prompts),
            cache: HashMap::new(),
            beep: Arc::new(Prompt::from_samples(beep)),
            voicemail_dir: None,
            timers: BTreeMap::new(),
            next_seq: 0,
            calls: HashMap::new(),
        }
    }

    /// The prompt `name` in `lang` (or the common set), shared; `None` with a log line when
    /// the library lacks it.
    pub(super) fn prompt(&mut self, lang: &str, name: &str) -> Option<Arc<Prompt>> {
        let prompts = &self.prompts;
        self.cache
            .entry((lang.to_owned(), name.to_owned()))
            .or_insert_with(|| match prompts.get(lang, name) {
                Ok(p) => Some(Arc::new(p.clone())),
                Err(e) => {
                    tracing::warn!("prompt not played: {e}");
                    None
                }
            })
            .clone()
    }

    pub(super) fn library(&self) -> &PromptLibrary {
        &self.prompts
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }
}

/// Total length of prompts.
pub(super) fn duration_of(items: &[Arc<Prompt>]) -> Duration {
    Duration::from_millis(items.iter().map(|p| p.duration_ms()).sum())
}

/// The digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf`
/// (the bare key). `None` for anything else.
pub(super) fn info_digit(req: &Message) -> Option<char> {
    let ctype = req
        .headers_named(&HeaderName::ContentType)
        .next()
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())?;
    let body = std::str::from_utf8(req.body()).ok()?;
    let raw = if ctype.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?
    } else if ctype.starts_with("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    let mut chars = raw.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')).then_some(c)
}

impl<M: MediaPort> B2bua<M> {
    /// Uses `prompts` (the built-ins with a tenant's or operator's overrides layered on) and
    /// puts voicemail messages under `voicemail_dir`.
    pub fn set_caller_media(&mut self, prompts: PromptLibrary, voicemail_dir: Option<PathBuf>) {
        let calls = std::mem::take(&mut self.experience.calls);
        let timers = std::mem::take(&mut self.experience.timers);
        let next_seq = self.experience.next_seq;
        self.experience = CallerExperience::with_prompts(prompts);
        self.experience.calls = calls;
        self.experience.timers = timers;
        self.experience.next_seq = next_seq;
        self.experience.voicemail_dir = voicemail_dir;
    }

    /// The queue media of a call's queue, if configured.
    pub(super) fn queue_media_of(&self, key: CallKey) -> Option<QueueMedia> {
        let call = self.calls.get(&key)?;
        self.index
            .media
            .get(&call.tenant)?
            .queues
            .get(&call.queue)
            .cloned()
    }

    /// The language of a call's prompts: the IVR's choice, else the queue's, else English.
    pub(super) fn language_of(&self, key: CallKey) -> String {
        self.experience
            .calls
            .get(&key)
            .and_then(|m| m.language.clone())
            .or_else(|| self.queue_media_of(key).map(|m| m.language))
            .unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned())
    }

    pub(super) fn prompts_named(&mut self, key: CallKey, names: &[&str]) -> Vec<Arc<Prompt>> {
        let lang = self.language_of(key);
        names
            .iter()
            .filter_map(|n| self.prompt_for(key, &lang, n))
            .collect()
    }

    /// The prompt `name` for a call, in this order: the call's tenant's upload in `lang`, the
    /// operator's override or the built-in prompt (the library, `lang` then the common set),
    /// and last the tenant's upload of that name in another language (music is usually
    /// uploaded once, under any language). `None` with a log line when nothing has it.
    pub(super) fn prompt_for(
        &mut self,
        key: CallKey,
        lang: &str,
        name: &str,
    ) -> Option<Arc<Prompt>> {
        let uploads = self
            .calls
            .get(&key)
            .and_then(|c| self.index.media.get(&c.tenant))
            .map(|m| m.prompts.clone())
            .filter(|u| !u.is_empty());
        if let Some(u) = uploads {
            if let Some(p) = u.get(lang, name) {
                return Some(p);
            }
            if self.experience.library().get(lang, name).is_err()
                && let Some(p) = u.get_any(name)
            {
                return Some(p);
            }
        }
        self.experience.prompt(lang, name)
    }

    /// Hook of `new_call`: answer at once and start the greeting and music when the queue
    /// has media, or enter the DID's menu.
    pub(super) fn caller_media_start(&mut self, now: Now, key: CallKey, menu: Option<String>) {
        if let Some(menu) = menu {
            let m = self.experience.calls.entry(key).or_default();
            m.outside_engine = true;
            self.answer_caller(now, key);
            self.detect_dtmf(key);
            self.enter_menu(now, key, &menu);
            return;
        }
        let Some(qm) = self.queue_media_of(key) else {
            return;
        };
        if !qm.answers_immediately() {
            return;
        }
        self.answer_caller(now, key);
        self.detect_dtmf(key);
        self.play_queue_media(now, key, &qm, true);
    }

    /// Sends the 200 with our anchored SDP to the caller (before any agent).
    pub(super) fn answer_caller(&mut self, now: Now, key: CallKey) {
        let m = self.experience.calls.entry(key).or_default();
        if m.answered {
            return;
        }
        m.answered = true;
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let ok = crate::sip::response_to_source(
            &call.invite,
            Some(call.source.addr),
            200,
            "OK",
            Some(call.local_tag.as_bytes()),
        )
        .copy_headers(&call.invite, &HeaderName::RecordRoute)
        .header(b"Contact", self.our_contact().as_bytes())
        .header(b"Allow", super::ALLOW)
        .header(b"Content-Type", b"application/sdp")
        .body(&call.answer_sdp);
        let tx = call.invite_tx;
        self.respond(now, tx, ok);
    }

    pub(super) fn detect_dtmf(&mut self, key: CallKey) {
        self.audio(
            key,
            AudioCommand::DetectDtmf {
                leg: Leg::A,
                on: true,
            },
        );
    }

    /// Sends an audio command for the call's leg A side.
    pub(super) fn audio(&mut self, key: CallKey, cmd: AudioCommand) {
        let Some(id) = self.calls.get(&key).map(|c| c.media.id) else {
            return;
        };
        self.experience.calls.entry(key).or_default().processed = true;
        self.media.audio(id, cmd);
    }

    /// Plays `items` to the caller, then `music` if given.
    pub(super) fn play(
        &mut self,
        key: CallKey,
        items: Vec<Arc<Prompt>>,
        music: Option<Arc<Prompt>>,
    ) {
        tracing::debug!(
            items = items.len(),
            ms = duration_of(&items).as_millis() as u64,
            music = music.is_some(),
            "play to the caller"
        );
        self.audio(
            key,
            AudioCommand::Play {
                leg: Leg::A,
                items,
                music,
                tag: key.0,
            },
        );
    }

    /// The queue's music (or the fallback for an IVR caller), after the greeting on entry.
    fn play_queue_media(&mut self, now: Now, key: CallKey, qm: &QueueMedia, with_greeting: bool) {
        let lang = self.language_of(key);
        let items: Vec<Arc<Prompt>> = match (&qm.greeting, with_greeting) {
            (Some(g), true) => self.prompt_for(key, &lang, g).into_iter().collect(),
            _ => Vec::new(),
        };
        if let (Some(g), Some(m)) = (items.first(), self.experience.calls.get_mut(&key)) {
            m.greeting = Some((g.clone(), now.mono + duration_of(&items)));
        }
        let music = qm
            .music
            .as_deref()
            .and_then(|m| self.prompt_for(key, &lang, m));
        self.play(key, items, music);
    }

    pub(super) fn queue_music(&mut self, key: CallKey) -> Option<Arc<Prompt>> {
        let lang = self.language_of(key);
        let name = self
            .queue_media_of(key)
            .and_then(|m| m.music)
            .unwrap_or_else(|| FALLBACK_MUSIC.to_owned());
        self.prompt_for(key, &lang, &name)
    }

    /// Puts a contact that the IVR routed to `queue` into the engine, with the attributes
    /// and requirement its choices set, and starts the queue's media.
    pub(super) fn enqueue_from_ivr(&mut self, now: Now, key: CallKey, queue: acd_core::QueueId) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.queue = queue.clone();
        let (tenant, contact) = (call.tenant, call.contact);
        let mut new = NewContact::new(contact, queue, acd_core::Channel::Voice);
        new.attributes
            .insert("caller".to_owned(), call.caller_number.clone());
        new.attributes
            .insert("dialled".to_owned(), call.dialled.clone());
        let m = self.experience.calls.entry(key).or_default();
        new.attributes
            .extend(m.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        new.requirement = m.requirement.clone();
        m.outside_engine = false;
        m.phase = Phase::Waiting;
        self.disarm(key);
        self.routing.push_back((tenant, Input::NewContact(new)));
        let qm = self.queue_media_of(key).unwrap_or(QueueMedia {
            music: Some(FALLBACK_MUSIC.to_owned()),
            ..QueueMedia::default()
        });
        self.play_queue_media(now, key, &qm, true);
    }

    /// The greeting again when it is still playing at `now`, to put in front of a prompt
    /// that would otherwise cut it off.
    fn greeting_in_progress(&self, now: Now, key: CallKey) -> Option<Arc<Prompt>> {
        let (g, until) = self.experience.calls.get(&key)?.greeting.clone()?;
        (now.mono < until).then_some(g)
    }

    /// The engine moved a waiting contact to another queue (overflow): an answered caller
    /// hears that queue's music from now on (no second greeting), and its announcements.
    pub(super) fn caller_media_requeued(&mut self, contact: ContactId) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        let Some(m) = self.experience.calls.get_mut(&key) else {
            return;
        };
        if !m.answered || m.phase != Phase::Waiting {
            return;
        }
        m.last_position = None;
        m.callback_offered = false;
        let music = self.queue_music(key);
        self.play(key, Vec::new(), music);
    }

    /// `Action::Announce`: position and/or expected wait, then back to the music.
    pub(super) fn announce(&mut self, now: Now, contact: ContactId, position: u32, ewt_ms: u64) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        let Some(qm) = self.queue_media_of(key) else {
            return;
        };
        let Some(m) = self.experience.calls.get_mut(&key) else {
            return;
        };
        if !m.answered || m.phase != Phase::Waiting {
            return;
        }
        if qm.only_if_improved && m.last_position.is_some_and(|last| position >= last) {
            return;
        }
        m.last_position = Some(position);
        let lang = self.language_of(key);
        let lib = self.experience.library();
        let mut items: Vec<Arc<Prompt>> = Vec::new();
        if matches!(qm.announce, AnnounceWhat::Position | AnnounceWhat::Both) {
            match lib.position_announcement(&lang, position) {
                Ok(p) => items.extend(p.into_iter().map(Arc::new)),
                Err(e) => tracing::debug!(position, "position not announced: {e}"),
            }
        }
        if matches!(qm.announce, AnnounceWhat::Wait | AnnounceWhat::Both) {
            let minutes = qm.spoken_wait_minutes(ewt_ms);
            match lib.waiting_time_announcement(&lang, minutes) {
                Ok(p) => items.extend(p.into_iter().map(Arc::new)),
                Err(e) => tracing::debug!(minutes, "waiting time not announced: {e}"),
            }
        }
        if items.is_empty() {
            return;
        }
        if let Some(g) = self.greeting_in_progress(now, key) {
            items.insert(0, g);
        }
        let music = self.queue_music(key);
        self.play(key, items, music);
    }

    /// `Action::OfferCallback`: "press 1 to be called back", then back to the music.
    pub(super) fn offer_callback(&mut self, now: Now, contact: ContactId) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        let Some(m) = self.experience.calls.get_mut(&key) else {
            tracing::info!(%contact, "callback offer skipped: the caller is not answered (ringback only)");
            return;
        };
        if !m.answered || m.phase != Phase::Waiting {
            return;
        }
        m.callback_offered = true;
        let mut items = self.prompts_named(key, &["press_1_callback"]);
        if let Some(g) = self.greeting_in_progress(now, key) {
            items.insert(0, g);
        }
        let music = self.queue_music(key);
        self.play(key, items, music);
    }

    /// A key the caller pressed (RFC 4733 via the relay, or SIP INFO).
    pub(super) fn caller_digit(&mut self, now: Now, key: CallKey, digit: char) {
        let Some(m) = self.experience.calls.get(&key) else {
            return;
        };
        let connected = self
            .calls
            .get(&key)
            .is_some_and(|c| c.state == CallState::Connected);
        if connected {
            return;
        }
        match &m.phase {
            Phase::Menu { .. } => self.menu_digit(now, key, digit),
            Phase::Waiting if m.callback_offered && digit == '1' => {
                self.request_callback(now, key);
            }
            _ => tracing::debug!(digit = %digit, "key ignored"),
        }
    }

    /// The caller asked to be called back: the contact keeps its place as a callback, the
    /// number is stored for the dial-out, a confirmation plays, and the caller leg ends
    /// without abandoning the contact.
    fn request_callback(&mut self, now: Now, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let (tenant, contact) = (call.tenant, call.contact);
        if crate::b2bua::model::normalize_e164(&call.caller_number).is_none() {
            // Anonymous or not a number: nobody to call back. The caller keeps waiting.
            tracing::info!(%contact, "callback refused: the caller's number is unknown");
            let items = self.prompts_named(key, &["invalid_input"]);
            let music = self.queue_music(key);
            self.play(key, items, music);
            return;
        }
        self.pending_callbacks.insert(
            contact,
            CallbackInfo {
                tenant,
                number: call.caller_number.clone(),
                queue: call.queue.clone(),
                requested_ms: now.wall_ms,
            },
        );
        self.routing
            .push_back((tenant, Input::CallbackRequested { contact }));
        tracing::info!(%contact, "caller asked for a callback");
        if let Some(m) = self.experience.calls.get_mut(&key) {
            m.outside_engine = true;
        }
        self.leave_after(now, key, &["callback_confirmed"], "callback");
    }

    /// Plays the named prompts, then ends the caller leg with `result`.
    pub(super) fn leave_after(
        &mut self,
        now: Now,
        key: CallKey,
        names: &[&str],
        result: &'static str,
    ) {
        let items = self.prompts_named(key, names);
        let wait = duration_of(&items);
        if let Some(m) = self.experience.calls.get_mut(&key) {
            m.phase = Phase::Leaving { result };
        }
        self.play(key, items, None);
        if self.accepting {
            self.arm(now, key, wait + PROMPT_SLACK);
        } else {
            self.end_caller_leg(now, key, result);
        }
    }

    /// BYE to an answered caller and the call's end (no abandon: the engine no longer has the
    /// contact, or keeps it as a callback).
    pub(super) fn end_caller_leg(&mut self, now: Now, key: CallKey, result: &'static str) {
        self.bye_caller(now, key);
        self.finish(now, key, result);
    }

    /// Arms the call's one timer `after` from now (replacing an armed one).
    pub(super) fn arm(&mut self, now: Now, key: CallKey, after: Duration) {
        self.disarm(key);
        let seq = self.experience.next_seq;
        self.experience.next_seq += 1;
        self.experience.timers.insert((now.mono + after, seq), key);
        self.experience.calls.entry(key).or_default().timer = Some(seq);
    }

    pub(super) fn disarm(&mut self, key: CallKey) {
        if let Some(m) = self.experience.calls.get_mut(&key) {
            m.timer = None;
        }
    }

    /// Hook of `handle_timeout`: runs the caller-media steps that are due.
    pub(super) fn caller_media_timeout(&mut self, now: Now) {
        while let Some((&(at, seq), &key)) = self.experience.timers.iter().next() {
            if at > now.mono {
                break;
            }
            self.experience.timers.remove(&(at, seq));
            let Some(m) = self.experience.calls.get_mut(&key) else {
                continue;
            };
            if m.timer != Some(seq) {
                continue;
            }
            m.timer = None;
            match m.phase.clone() {
                Phase::Menu { .. } => self.menu_timeout(now, key),
                Phase::VoicemailPrompt => self.voicemail_record(now, key),
                Phase::VoicemailRecording { .. } => self.voicemail_stop(now, key, true),
                Phase::Leaving { result } => self.end_caller_leg(now, key, result),
                Phase::Waiting => {}
            }
        }
    }

    /// Hook of `poll_timeout`.
    pub(super) fn caller_media_poll_timeout(&self) -> Option<Instant> {
        self.experience.next_timeout()
    }

    /// Hook of `handle_media_event`: DTMF of a caller, and the silence of a caller we
    /// answered early (a dead line must not wait in the queue forever; an unanswered caller
    /// may be silent, so only answered ones are checked). Returns whether it was handled.
    pub(super) fn caller_media_event(
        &mut self,
        now: Now,
        event: &crate::media::MediaEvent,
    ) -> bool {
        match *event {
            crate::media::MediaEvent::Dtmf {
                id,
                leg: Leg::A,
                digit,
            } => {
                if let Some(&key) = self.by_media.get(&id) {
                    self.caller_digit(now, key, digit);
                }
                true
            }
            crate::media::MediaEvent::RtpTimeout { id, leg: Leg::A } => {
                let Some(&key) = self.by_media.get(&id) else {
                    return false;
                };
                let waiting = self
                    .calls
                    .get(&key)
                    .is_some_and(|c| c.state != CallState::Connected);
                if !(waiting && self.caller_answered(key)) {
                    return false;
                }
                tracing::info!(
                    ?id,
                    "no RTP from a caller answered before an agent: ending the call"
                );
                self.bye_caller(now, key);
                self.caller_media_hang_up(now, key, Some(LegRef::Caller))
            }
            _ => false,
        }
    }

    /// Hook of INFO: a DTMF key from the caller's dialog. Returns whether it was one.
    pub(super) fn caller_info(&mut self, now: Now, req: &Message) -> bool {
        let Some(digit) = info_digit(req) else {
            return false;
        };
        let found = req
            .call_id()
            .ok()
            .flatten()
            .and_then(|c| self.by_call_id.get(&c).copied());
        if let Some((key, LegRef::Caller)) = found {
            self.caller_digit(now, key, digit);
        }
        true
    }

    /// Hook of the bridge (agent answered): stops whatever plays to the caller at once, before
    /// anything else touches the media. Returns whether the caller was answered already (then
    /// no second 200 goes out).
    pub(super) fn caller_media_on_bridge(&mut self, key: CallKey) -> bool {
        // The caller's experience ends here; a later requeue (transfer) is not ours.
        let Some(m) = self.experience.calls.remove(&key) else {
            return false;
        };
        let (processed, answered) = (m.processed, m.answered);
        if processed {
            let Some(id) = self.calls.get(&key).map(|c| c.media.id) else {
                return answered;
            };
            self.media.audio(id, AudioCommand::Reset);
        }
        answered
    }

    /// Whether the caller already got our 200.
    pub(super) fn caller_answered(&self, key: CallKey) -> bool {
        self.experience.calls.get(&key).is_some_and(|m| m.answered)
    }

    /// Hook of `hang_up` for a call not yet bridged: the caller's BYE after our early 200.
    /// Returns whether it was handled here.
    pub(super) fn caller_media_hang_up(
        &mut self,
        now: Now,
        key: CallKey,
        from: Option<LegRef>,
    ) -> bool {
        if from != Some(LegRef::Caller) {
            return false;
        }
        let Some(m) = self.experience.calls.get(&key) else {
            return false;
        };
        if !m.answered {
            return false;
        }
        tracing::debug!(phase = ?m.phase, "answered caller hung up before an agent");
        match m.phase.clone() {
            Phase::VoicemailRecording { .. } => self.voicemail_stop(now, key, false),
            Phase::VoicemailPrompt => self.finish(now, key, "voicemail"),
            Phase::Leaving { result } => self.finish(now, key, result),
            Phase::Menu { .. } => self.finish(now, key, "abandoned"),
            Phase::Waiting => {
                if !m.outside_engine
                    && let Some(call) = self.calls.get(&key)
                {
                    let (tenant, contact) = (call.tenant, call.contact);
                    self.counters.abandoned += 1;
                    self.routing
                        .push_back((tenant, Input::ContactAbandoned { contact }));
                }
                self.finish(now, key, "abandoned");
            }
        }
        true
    }

    /// Whether the contact's caller already got our 200 (for guards in `handle_action`).
    pub(super) fn caller_answered_contact(&self, contact: ContactId) -> bool {
        self.by_contact
            .get(&contact)
            .is_some_and(|k| self.caller_answered(*k))
    }

    /// The queue is closed and the caller was answered already: "we are closed", goodbye,
    /// hang up.
    pub(super) fn closed_for_answered(&mut self, now: Now, contact: ContactId) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        if let Some(m) = self.experience.calls.get_mut(&key) {
            m.outside_engine = true;
        }
        self.leave_after(now, key, &["closed", "goodbye"], "refused");
    }

    /// Hook of `refuse`: an answered caller cannot get an error response any more; it hears
    /// goodbye and is hung up. Returns whether it was handled here.
    pub(super) fn caller_media_refuse(
        &mut self,
        now: Now,
        key: CallKey,
        result: &'static str,
    ) -> bool {
        let Some(m) = self.experience.calls.get_mut(&key) else {
            return false;
        };
        if !m.answered {
            return false;
        }
        m.outside_engine = true;
        self.leave_after(now, key, &["goodbye"], result);
        true
    }

    /// Hook of `finish`: forgets the call's caller media; returns the voicemail for the CDR.
    pub(super) fn caller_media_on_end(&mut self, key: CallKey) -> Option<RecordingSummary> {
        self.experience.calls.remove(&key).and_then(|m| m.voicemail)
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use acd_core::config::QueueMedia;
    use acd_core::{Action, Channel, Input, OfferId, QueueId, Timestamp};
    use bytes::Bytes;
    use uuid::Uuid;

    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, sdp};
    use super::*;
    use crate::b2bua::model::{GatewayModel, TenantMedia, TenantModel};
    use crate::sip::Method;

    pub(in crate::b2bua::core) fn with_media(h: &mut Harness, media: TenantMedia) {
        let agents = vec![crate::b2bua::model::AgentSip {
            agent: acd_core::AgentId::new("1001"),
            extension: "1001".into(),
            secret: crate::b2bua::model::SipSecret::from_password("1001", "zentrale", "pw1001"),
        }];
        let mut dids = HashMap::from([("100".to_owned(), QueueId::new("support"))]);
        dids.insert("101".to_owned(), QueueId::new("other"));
        h.core.set_model(&Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant: TENANT,
                dids,
                agents,
                media,
                trunks: Default::default(),
            }],
        }));
    }

    pub(in crate::b2bua::core) fn music_media() -> TenantMedia {
        TenantMedia {
            queues: HashMap::from([(
                QueueId::new("support"),
                QueueMedia {
                    music: Some("hold_music".into()),
                    greeting: Some("welcome".into()),
                    ..QueueMedia::default()
                },
            )]),
            ..TenantMedia::default()
        }
    }

    pub(in crate::b2bua::core) fn invite_to(
        h: &mut Harness,
        number: &str,
        branch: &str,
    ) -> Vec<(std::net::SocketAddr, Message)> {
        let body = sdp(40000);
        h.send(
            CARRIER,
            &format!(
                "INVITE sip:{number}@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch={branch}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:{number}@127.0.0.1>\nCall-ID: {branch}@carrier\nCSeq: 1 INVITE\nContact: <sip:c@{CARRIER}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        )
    }

    pub(in crate::b2bua::core) fn info(
        h: &mut Harness,
        branch: &str,
        n: u32,
        ctype: &str,
        body: &str,
    ) -> Vec<(std::net::SocketAddr, Message)> {
        h.send(
            CARRIER,
            &format!(
                "INFO sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKinfo{n}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: {branch}@carrier\nCSeq: {} INFO\nContent-Type: {ctype}\nContent-Length: {}\n\n{body}",
                n + 1,
                body.len()
            ),
        )
    }

    pub(in crate::b2bua::core) fn plays(h: &Harness) -> Vec<(usize, Option<bool>)> {
        h.core
            .media
            .audio
            .iter()
            .filter_map(|(_, c)| match c {
                AudioCommand::Play { items, music, .. } => {
                    Some((items.len(), Some(music.is_some())))
                }
                _ => None,
            })
            .collect()
    }

    fn contact_of(inputs: &[Input]) -> ContactId {
        inputs
            .iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn queue_with_music_answers_at_once_and_plays_greeting_then_music() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        let out = invite_to(&mut h, "100", "z9hG4bKqm1");
        let codes: Vec<u16> = out.iter().filter_map(|(_, m)| m.status()).collect();
        assert_eq!(codes, vec![100, 180, 200], "answered at once");
        let ok = &out[2].1;
        assert!(String::from_utf8_lossy(ok.body()).contains("m=audio 30000"));
        let _ = contact_of(&h.routing());
        let cmds = &h.core.media.audio;
        assert!(matches!(
            cmds[0].1,
            AudioCommand::DetectDtmf {
                leg: Leg::A,
                on: true
            }
        ));
        assert_eq!(
            plays(&h),
            vec![(1, Some(true))],
            "greeting, then looping music"
        );
    }

    #[test]
    fn queue_without_media_still_rings_only() {
        let mut h = Harness::new();
        with_media(&mut h, TenantMedia::default());
        let out = invite_to(&mut h, "100", "z9hG4bKqm2");
        let codes: Vec<u16> = out.iter().filter_map(|(_, m)| m.status()).collect();
        assert_eq!(codes, vec![100, 180]);
        assert!(h.core.media.audio.is_empty());
    }

    #[test]
    fn announcements_follow_the_queue_options() {
        let mut h = Harness::new();
        let mut media = music_media();
        if let Some(q) = media.queues.get_mut(&QueueId::new("support")) {
            q.only_if_improved = true;
            q.announce = acd_core::config::AnnounceWhat::Both;
        }
        with_media(&mut h, media);
        invite_to(&mut h, "100", "z9hG4bKqm3");
        let contact = contact_of(&h.routing());
        // On entry the greeting is still playing: the announcement follows it.
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Announce {
                contact,
                queue: QueueId::new("support"),
                position: 4,
                ewt_ms: 150_000,
            },
        );
        assert_eq!(
            plays(&h).last(),
            Some(&(6, Some(true))),
            "greeting, then 5 prompts"
        );
        h.ms += 10_000;
        let now = h.now();
        let announce = |position, ewt_ms| Action::Announce {
            contact,
            queue: QueueId::new("support"),
            position,
            ewt_ms,
        };
        h.core.handle_action(now, TENANT, announce(3, 150_000));
        // "caller number" "3" "expected wait" "3" "minutes", then music again.
        assert_eq!(plays(&h).last(), Some(&(5, Some(true))));
        h.core.handle_action(now, TENANT, announce(3, 150_000));
        assert_eq!(plays(&h).len(), 3, "not improved: nothing said");
        h.core.handle_action(now, TENANT, announce(2, 30_000));
        assert_eq!(plays(&h).last(), Some(&(4, Some(true))), "one minute");
    }

    #[test]
    fn an_agent_answer_resets_the_media_before_anything_else_and_sends_no_second_200() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        h.register();
        h.routing();
        invite_to(&mut h, "100", "z9hG4bKqm4");
        let contact = contact_of(&h.routing());
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Announce {
                contact,
                queue: QueueId::new("support"),
                position: 1,
                ewt_ms: 10_000,
            },
        );
        h.ms += 10;
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Offer {
                offer: OfferId(Uuid::from_u128(9)),
                contact,
                agent: acd_core::AgentId::new("1001"),
                queue: QueueId::new("support"),
                channel: Channel::Voice,
                expires_at: Timestamp(now.wall_ms + 20_000),
            },
        );
        let out = h.out();
        let invite = out[0].1.clone();
        let before = h.core.media.audio.len();
        let updates_before = h.core.media.updated.len();
        let out = h.send(PHONE, &reply_ok(&invite));
        // The first media operation of the bridge is the Reset.
        assert!(matches!(h.core.media.audio[before].1, AudioCommand::Reset));
        assert!(h.core.media.updated.len() > updates_before);
        assert!(
            !out.iter()
                .any(|(a, m)| a.to_string() == CARRIER && m.status() == Some(200)),
            "the caller has its 200 already"
        );
        assert!(matches!(h.routing()[..], [Input::OfferAccepted { .. }]));
    }

    fn reply_ok(invite: &Message) -> String {
        let mut s = "SIP/2.0 200 OK\n".to_owned();
        for v in invite.headers_named(&HeaderName::Via) {
            s.push_str(&format!("Via: {}\n", String::from_utf8_lossy(v)));
        }
        for (name, hn) in [
            ("From", HeaderName::From),
            ("Call-ID", HeaderName::CallId),
            ("CSeq", HeaderName::CSeq),
        ] {
            let v = invite.headers_named(&hn).next().unwrap();
            s.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(v)));
        }
        let t = invite.headers_named(&HeaderName::To).next().unwrap();
        let body = sdp(50000);
        s.push_str(&format!(
            "To: {};tag=ph\nContact: <sip:1001@{PHONE}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
            String::from_utf8_lossy(t),
            body.len()
        ));
        s
    }

    #[test]
    fn callback_by_info_keeps_the_contact_and_ends_the_caller_leg_after_the_confirmation() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        invite_to(&mut h, "100", "z9hG4bKqm5");
        let contact = contact_of(&h.routing());
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::OfferCallback {
                contact,
                queue: QueueId::new("support"),
            },
        );
        // The greeting is still playing, so the offer follows it, then the music.
        assert_eq!(plays(&h).last(), Some(&(2, Some(true))));
        let out = info(
            &mut h,
            "z9hG4bKqm5",
            1,
            "application/dtmf-relay",
            "Signal=1\r\nDuration=160\r\n",
        );
        assert_eq!(
            out.iter()
                .filter_map(|(_, m)| m.status())
                .collect::<Vec<_>>(),
            vec![200]
        );
        assert!(
            matches!(h.routing()[..], [Input::CallbackRequested { contact: c }] if c == contact)
        );
        assert_eq!(h.core.pending_callbacks[&contact].number, "+4930111");
        assert_eq!(
            plays(&h).last(),
            Some(&(1, Some(false))),
            "confirmation, no music"
        );
        // After the confirmation: BYE to the caller, no abandon.
        h.ms += 10_000;
        let now = h.now();
        h.core.handle_timeout(now);
        let out = h.out();
        assert!(out.iter().any(|(_, m)| m.method() == Some(&Method::Bye)));
        assert!(h.routing().is_empty(), "the contact keeps its place");
        assert_eq!(h.core.poll_cdr().unwrap().result, "callback");
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn caller_bye_while_hearing_music_is_an_abandon_without_487() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        invite_to(&mut h, "100", "z9hG4bKqm6");
        let contact = contact_of(&h.routing());
        let out = h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye6\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKqm6@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        assert_eq!(
            out.iter()
                .filter_map(|(_, m)| m.status())
                .collect::<Vec<_>>(),
            vec![200]
        );
        assert!(
            matches!(h.routing()[..], [Input::ContactAbandoned { contact: c }] if c == contact)
        );
        assert_eq!(h.core.poll_cdr().unwrap().result, "abandoned");
    }

    #[test]
    fn a_silent_answered_caller_is_hung_up_and_abandoned() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        invite_to(&mut h, "100", "z9hG4bKqm7");
        let contact = contact_of(&h.routing());
        let id = h.core.media.live[0];
        let now = h.now();
        h.core.handle_media_event(
            now,
            crate::media::MediaEvent::RtpTimeout { id, leg: Leg::A },
        );
        let out = h.out();
        assert!(out.iter().any(|(_, m)| m.method() == Some(&Method::Bye)));
        assert!(
            matches!(h.routing()[..], [Input::ContactAbandoned { contact: c }] if c == contact)
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn a_tenant_upload_wins_over_the_builtin_and_applies_to_the_next_call_without_restart() {
        let mut h = Harness::new();
        let mut media = music_media();
        media
            .queues
            .get_mut(&QueueId::new("support"))
            .unwrap()
            .music = Some("my_music".into());
        with_media(&mut h, media.clone());
        invite_to(&mut h, "100", "z9hG4bKup1");
        let Some((_, AudioCommand::Play { music, .. })) = h.core.media.audio.last().cloned() else {
            panic!("no play");
        };
        assert!(music.is_none(), "no such prompt yet: greeting only");

        // Uploaded (under another language than the call's) while the gateway runs.
        let upload = Arc::new(Prompt::from_samples(vec![7; 800]));
        let own_welcome = Arc::new(Prompt::from_samples(vec![9; 400]));
        media.prompts = crate::b2bua::model::TenantPrompts::new(HashMap::from([
            (("de".to_owned(), "my_music".to_owned()), upload.clone()),
            (("en".to_owned(), "welcome".to_owned()), own_welcome.clone()),
        ]));
        with_media(&mut h, media);
        invite_to(&mut h, "100", "z9hG4bKup2");
        let Some((_, AudioCommand::Play { items, music, .. })) = h.core.media.audio.last() else {
            panic!("no play");
        };
        assert_eq!(music.as_deref(), Some(&*upload), "the upload is the music");
        assert_eq!(
            items.first().map(|p| &**p),
            Some(&*own_welcome),
            "the tenant's greeting wins over the built-in one"
        );
    }

    #[test]
    fn overflow_to_another_queue_switches_to_its_music() {
        let mut h = Harness::new();
        let mut media = music_media();
        media.queues.insert(
            QueueId::new("other"),
            QueueMedia {
                music: Some("welcome".into()),
                ..QueueMedia::default()
            },
        );
        with_media(&mut h, media);
        invite_to(&mut h, "100", "z9hG4bKqm8");
        let contact = contact_of(&h.routing());
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Overflow {
                contact,
                queue: QueueId::new("support"),
                target: acd_core::Disposition::Queue(QueueId::new("other")),
            },
        );
        let Some((_, AudioCommand::Play { items, music, .. })) = h.core.media.audio.last() else {
            panic!("no play after the overflow");
        };
        assert!(items.is_empty());
        let welcome = PromptLibrary::builtin()
            .unwrap()
            .get("en", "welcome")
            .unwrap()
            .clone();
        assert_eq!(music.as_deref(), Some(&welcome), "the other queue's music");
    }

    #[test]
    fn a_closed_queue_tells_an_answered_caller_and_hangs_up() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        invite_to(&mut h, "100", "z9hG4bKqm9");
        let contact = contact_of(&h.routing());
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Refused {
                contact,
                queue: QueueId::new("support"),
                reason: acd_core::io::RefusalReason::Closed,
                then: acd_core::Disposition::Reject,
            },
        );
        assert_eq!(plays(&h).last(), Some(&(2, Some(false))), "closed, goodbye");
        h.ms += 10_000;
        let now = h.now();
        h.core.handle_timeout(now);
        assert!(
            h.out()
                .iter()
                .any(|(_, m)| m.method() == Some(&Method::Bye))
        );
        assert!(h.routing().is_empty(), "the engine has let the contact go");
        assert_eq!(h.core.poll_cdr().unwrap().result, "refused");
    }

    #[test]
    fn an_anonymous_caller_cannot_ask_for_a_callback() {
        let mut h = Harness::new();
        with_media(&mut h, music_media());
        let body = sdp(40000);
        h.send(
            CARRIER,
            &format!(
                "INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKanon\nMax-Forwards: 70\nFrom: <sip:anonymous@anonymous.invalid>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: z9hG4bKanon@carrier\nCSeq: 1 INVITE\nContact: <sip:c@{CARRIER}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        );
        let contact = contact_of(&h.routing());
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::OfferCallback {
                contact,
                queue: QueueId::new("support"),
            },
        );
        info(&mut h, "z9hG4bKanon", 1, "application/dtmf", "1");
        assert!(h.routing().is_empty(), "no callback request");
        assert!(h.core.pending_callbacks.is_empty());
        assert_eq!(
            plays(&h).last(),
            Some(&(1, Some(true))),
            "invalid, then music"
        );
        assert_eq!(h.core.active_calls(), 1, "still waiting");
    }

    #[test]
    fn info_bodies_give_the_key() {
        let parse = |ctype: &str, body: &str| {
            let text = format!(
                "INFO sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: x\r\nCSeq: 2 INFO\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let m =
                Message::parse_datagram(Bytes::from(text), &crate::sip::Limits::default()).unwrap();
            info_digit(&m)
        };
        assert_eq!(
            parse("application/dtmf-relay", "Signal=5\r\nDuration=100\r\n"),
            Some('5')
        );
        assert_eq!(parse("application/dtmf-relay", "signal= #\r\n"), Some('#'));
        assert_eq!(parse("application/dtmf", "*"), Some('*'));
        assert_eq!(parse("application/dtmf", "12"), None);
        assert_eq!(parse("application/dtmf-relay", "Signal=x\r\n"), None);
        assert_eq!(parse("text/plain", "1"), None);
    }
}
