//! IVR menus: a DID that leads to a menu is answered at once, the menu's prompt plays, and a
//! key (RFC 4733 through the relay, or SIP INFO) chooses where the call goes: a queue, another
//! menu, an external number, voicemail, or goodbye.
//!
//! The caller is not in the routing engine while in a menu (there is nothing to route yet);
//! the contact is created when a choice leads to a queue, carrying the attributes the choices
//! set (a language, digits typed in a `collect` menu) and the skill requirement they imply.
//! A timeout leads to the menu's `default`; an invalid key replays the menu (three times,
//! then `default`); `*` replays it without counting.

use std::time::Duration;

use super::queue_media::{Phase, duration_of};
use super::{B2bua, CallKey, MediaPort, Now};
use crate::b2bua::model::{IvrMenu, IvrTarget};

/// Invalid keys before a menu gives up and takes its default.
const MAX_INVALID: u8 = 3;
/// Menus entered by one call, at most (a loop of menus pointing at each other ends here).
const MAX_MENU_HOPS: u8 = 20;

impl<M: MediaPort> B2bua<M> {
    fn menu(&self, key: CallKey, name: &str) -> Option<IvrMenu> {
        let tenant = self.calls.get(&key)?.tenant;
        self.index.media.get(&tenant)?.menus.get(name).cloned()
    }

    /// Plays the menu's prompt and waits for a key.
    pub(super) fn enter_menu(&mut self, now: Now, key: CallKey, name: &str) {
        let Some(menu) = self.menu(key, name) else {
            tracing::warn!(menu = name, "IVR menu not configured: hanging up");
            self.leave_after(now, key, &["goodbye"], "failed");
            return;
        };
        let Some(m) = self.experience.calls.get_mut(&key) else {
            return;
        };
        m.hops = m.hops.saturating_add(1);
        if m.hops > MAX_MENU_HOPS {
            tracing::warn!(menu = name, "IVR menus loop: hanging up");
            self.leave_after(now, key, &["goodbye"], "failed");
            return;
        }
        m.phase = Phase::Menu {
            name: name.to_owned(),
            invalid: 0,
            collected: String::new(),
        };
        self.play_menu(now, key, &menu, false);
    }

    fn play_menu(&mut self, now: Now, key: CallKey, menu: &IvrMenu, after_invalid: bool) {
        let names: Vec<&str> = if after_invalid {
            vec!["invalid_input", menu.prompt.as_str()]
        } else {
            vec![menu.prompt.as_str()]
        };
        let items = self.prompts_named(key, &names);
        let wait = duration_of(&items) + Duration::from_millis(menu.timeout_ms);
        self.play(key, items, None);
        self.arm(now, key, wait);
    }

    /// A key pressed in a menu.
    pub(super) fn menu_digit(&mut self, now: Now, key: CallKey, digit: char) {
        let Some(Phase::Menu { name, .. }) =
            self.experience.calls.get(&key).map(|m| m.phase.clone())
        else {
            return;
        };
        let Some(menu) = self.menu(key, &name) else {
            return;
        };
        if let Some(collect) = &menu.collect {
            let Some(Phase::Menu { collected, .. }) =
                self.experience.calls.get_mut(&key).map(|m| &mut m.phase)
            else {
                return;
            };
            if digit == '*' {
                collected.clear();
                self.play_menu(now, key, &menu, false);
                return;
            }
            if Some(digit) == collect.terminator {
                self.collect_done(now, key, &menu);
                return;
            }
            if digit.is_ascii_digit() {
                collected.push(digit);
                if collected.len() >= usize::from(collect.max_digits) {
                    self.collect_done(now, key, &menu);
                    return;
                }
                // Each key gives the caller the menu's timeout again for the next one.
                self.arm(now, key, Duration::from_millis(menu.timeout_ms));
            }
            return;
        }
        match menu.options.get(&digit) {
            Some(choice) => {
                if let Some(m) = self.experience.calls.get_mut(&key) {
                    for (k, v) in &choice.set {
                        if k == "language" {
                            m.language = Some(v.clone());
                        }
                        m.attributes.insert(k.clone(), v.clone());
                    }
                    if let Some(req) = &choice.require {
                        m.requirement = Some(req.clone());
                    }
                }
                tracing::debug!(menu = %name, %digit, "IVR choice");
                self.go_to(now, key, choice.target.clone());
            }
            None if digit == '*' => self.play_menu(now, key, &menu, false),
            None => {
                let invalid = match self.experience.calls.get_mut(&key).map(|m| &mut m.phase) {
                    Some(Phase::Menu { invalid, .. }) => {
                        *invalid += 1;
                        *invalid
                    }
                    _ => return,
                };
                if invalid >= MAX_INVALID {
                    self.go_to(now, key, menu.default.clone());
                } else {
                    self.play_menu(now, key, &menu, true);
                }
            }
        }
    }

    fn collect_done(&mut self, now: Now, key: CallKey, menu: &IvrMenu) {
        let Some(collect) = &menu.collect else {
            return;
        };
        if let Some(m) = self.experience.calls.get_mut(&key)
            && let Phase::Menu { collected, .. } = &m.phase
            && !collected.is_empty()
        {
            let value = collected.clone();
            m.attributes.insert(collect.attribute.clone(), value);
        }
        self.go_to(now, key, menu.default.clone());
    }

    /// No key in time: a collect menu takes what it has, a choice menu its default.
    pub(super) fn menu_timeout(&mut self, now: Now, key: CallKey) {
        let Some(Phase::Menu { name, .. }) =
            self.experience.calls.get(&key).map(|m| m.phase.clone())
        else {
            return;
        };
        let Some(menu) = self.menu(key, &name) else {
            return;
        };
        if menu.collect.is_some() {
            self.collect_done(now, key, &menu);
        } else {
            self.go_to(now, key, menu.default);
        }
    }

    /// Carries out an IVR target.
    pub(super) fn go_to(&mut self, now: Now, key: CallKey, target: IvrTarget) {
        self.disarm(key);
        match target {
            IvrTarget::Queue(q) => self.enqueue_from_ivr(now, key, q),
            IvrTarget::Menu(m) => self.enter_menu(now, key, &m),
            IvrTarget::Number(n) => {
                // Dialled through the tenant's trunks (core/outbound.rs) and bridged on answer;
                // the caller hears the waiting music meanwhile. The contact never entered the
                // engine, so nothing is reported to it.
                if let Some(call) = self.calls.get_mut(&key) {
                    call.engine_released = true;
                }
                if let Some(m) = self.experience.calls.get_mut(&key) {
                    m.phase = Phase::Waiting;
                }
                match self.dial_out_bridge(now, key, &n) {
                    Ok(()) => {
                        let music = self.queue_music(key);
                        self.play(key, Vec::new(), music);
                    }
                    Err(e) => {
                        tracing::info!(number = %n, ?e, "IVR option to a number cannot be dialled; hanging up");
                        self.leave_after(now, key, &["goodbye"], "refused");
                    }
                }
            }
            IvrTarget::Voicemail => self.start_voicemail(now, key),
            IvrTarget::Hangup => self.leave_after(now, key, &["goodbye"], "completed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use acd_core::{Input, QueueId, SkillExpr};

    use super::super::queue_media::tests::{info, invite_to, plays, with_media};
    use super::super::tests::Harness;
    use crate::b2bua::model::{IvrChoice, IvrCollect, IvrMenu, IvrTarget, TenantMedia};
    use crate::media::AudioCommand;

    fn menus() -> TenantMedia {
        let main = IvrMenu {
            prompt: "language_menu".into(),
            timeout_ms: 5000,
            options: HashMap::from([
                (
                    '1',
                    IvrChoice {
                        target: IvrTarget::Queue(QueueId::new("support")),
                        set: vec![("language".into(), "de".into())],
                        require: Some(SkillExpr::parse("german >= 2").unwrap()),
                    },
                ),
                (
                    '2',
                    IvrChoice {
                        target: IvrTarget::Queue(QueueId::new("other")),
                        set: vec![],
                        require: None,
                    },
                ),
                (
                    '3',
                    IvrChoice {
                        target: IvrTarget::Menu("number".into()),
                        set: vec![],
                        require: None,
                    },
                ),
            ]),
            default: IvrTarget::Queue(QueueId::new("support")),
            collect: None,
        };
        let mut main = main;
        main.options.insert(
            '4',
            IvrChoice {
                target: IvrTarget::Number("+4930777".into()),
                set: vec![],
                require: None,
            },
        );
        let number = IvrMenu {
            prompt: "please_hold".into(),
            timeout_ms: 3000,
            options: HashMap::new(),
            default: IvrTarget::Queue(QueueId::new("other")),
            collect: Some(IvrCollect {
                attribute: "customer_number".into(),
                max_digits: 8,
                terminator: Some('#'),
            }),
        };
        TenantMedia {
            menus: HashMap::from([("main".into(), main), ("number".into(), number)]),
            entry_menus: HashMap::from([("200".into(), "main".into())]),
            ..TenantMedia::default()
        }
    }

    fn new_contact(h: &mut Harness) -> Option<acd_core::NewContact> {
        h.routing().into_iter().find_map(|i| match i {
            Input::NewContact(n) => Some(n),
            _ => None,
        })
    }

    #[test]
    fn menu_choice_by_info_enters_the_queue_with_language_and_requirement() {
        let mut h = Harness::new();
        with_media(&mut h, menus());
        let out = invite_to(&mut h, "200", "z9hG4bKivr1");
        assert!(out.iter().any(|(_, m)| m.status() == Some(200)), "answered");
        assert!(
            new_contact(&mut h).is_none(),
            "not routed while in the menu"
        );
        assert_eq!(plays(&h), vec![(1, Some(false))]);
        info(&mut h, "z9hG4bKivr1", 1, "application/dtmf", "1");
        let n = new_contact(&mut h).unwrap();
        assert_eq!(n.queue, QueueId::new("support"));
        assert_eq!(n.attributes["language"], "de");
        assert_eq!(n.attributes["caller"], "+4930111");
        assert_eq!(n.requirement.unwrap().to_string(), "german >= 2");
    }

    #[test]
    fn a_language_choice_switches_the_queue_greeting_to_that_language() {
        let mut h = Harness::new();
        let mut media = menus();
        media.queues = super::super::queue_media::tests::music_media().queues;
        with_media(&mut h, media);
        invite_to(&mut h, "200", "z9hG4bKivr7");
        info(&mut h, "z9hG4bKivr7", 1, "application/dtmf", "1");
        let Some((_, AudioCommand::Play { items, .. })) = h.core.media.audio.last() else {
            panic!("no play");
        };
        let lib = crate::audio::prompt::PromptLibrary::builtin().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            *items[0],
            *lib.get("de", "welcome").unwrap(),
            "German greeting"
        );
    }

    #[test]
    fn relay_dtmf_invalid_keys_replay_then_default_and_timeout_takes_default() {
        let mut h = Harness::new();
        with_media(&mut h, menus());
        invite_to(&mut h, "200", "z9hG4bKivr2");
        let id = h.core.media.live[0];
        let press = |h: &mut Harness, digit| {
            let now = h.now();
            h.core.handle_media_event(
                now,
                crate::media::MediaEvent::Dtmf {
                    id,
                    leg: crate::media::Leg::A,
                    digit,
                },
            );
        };
        press(&mut h, '9');
        assert_eq!(
            plays(&h).last(),
            Some(&(2, Some(false))),
            "invalid, then the menu"
        );
        press(&mut h, '*');
        press(&mut h, '9');
        assert!(new_contact(&mut h).is_none());
        press(&mut h, '9');
        let n = new_contact(&mut h).unwrap();
        assert_eq!(
            n.queue,
            QueueId::new("support"),
            "third invalid key: default"
        );

        let mut h = Harness::new();
        with_media(&mut h, menus());
        invite_to(&mut h, "200", "z9hG4bKivr3");
        h.ms += 60_000;
        let now = h.now();
        h.core.handle_timeout(now);
        assert_eq!(new_contact(&mut h).unwrap().queue, QueueId::new("support"));
        assert!(
            h.core
                .media
                .audio
                .iter()
                .any(|(_, c)| matches!(c, AudioCommand::Play { music: Some(_), .. })),
            "queue music after the menu"
        );
    }

    #[test]
    fn collect_menu_reads_a_customer_number_into_the_attributes() {
        let mut h = Harness::new();
        with_media(&mut h, menus());
        invite_to(&mut h, "200", "z9hG4bKivr4");
        info(&mut h, "z9hG4bKivr4", 1, "application/dtmf", "3");
        assert!(new_contact(&mut h).is_none());
        for (i, d) in ["4", "7", "1", "1", "#"].iter().enumerate() {
            info(&mut h, "z9hG4bKivr4", 2 + i as u32, "application/dtmf", d);
        }
        let n = new_contact(&mut h).unwrap();
        assert_eq!(n.queue, QueueId::new("other"));
        assert_eq!(n.attributes["customer_number"], "4711");
    }

    #[test]
    fn a_number_option_without_a_trunk_says_goodbye_and_hangs_up() {
        let mut h = Harness::new();
        with_media(&mut h, menus());
        invite_to(&mut h, "200", "z9hG4bKivr6");
        info(&mut h, "z9hG4bKivr6", 1, "application/dtmf", "4");
        assert!(new_contact(&mut h).is_none());
        h.ms += 10_000;
        let now = h.now();
        h.core.handle_timeout(now);
        let out = h.out();
        assert!(
            out.iter()
                .any(|(_, m)| m.method() == Some(&crate::sip::Method::Bye))
        );
        assert!(h.routing().is_empty(), "never in the engine");
        assert_eq!(h.core.poll_cdr().unwrap().result, "refused");
    }

    #[test]
    fn caller_hanging_up_in_the_menu_is_not_reported_to_the_engine() {
        let mut h = Harness::new();
        with_media(&mut h, menus());
        invite_to(&mut h, "200", "z9hG4bKivr5");
        h.send(
            super::super::tests::CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye5\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:200@127.0.0.1>;tag=x\nCall-ID: z9hG4bKivr5@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        assert!(h.routing().is_empty());
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!((cdr.result, cdr.queue), ("abandoned", None));
        assert_eq!(h.core.active_calls(), 0);
    }
}
