//! The routing configuration: queues, skills, agents, business hours and engine settings.
//!
//! Plain data at the edge (STYLE.md §8): TOML with `deny_unknown_fields`, a doc comment on
//! every field, defaults that run. [`RoutingConfig::from_toml_str`] reports syntax and type
//! errors with file, line and field; [`RoutingConfig::validate`] checks cross-references
//! (unknown skills, queues, hours) that serde cannot see. The engine takes a validated
//! config and interns every key into dense indices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, Channel, QueueId, SkillId};
use crate::skill_expr::SkillExpr;

/// Errors from loading or validating a routing configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text is malformed or a field has the wrong type or name.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The file name given by the caller.
        file: String,
        /// 1-based line of the offending text (0 if toml gave no position).
        line: usize,
        /// 1-based column of the offending text (0 if toml gave no position).
        column: usize,
        /// toml's message, which names the field.
        message: String,
    },
    /// A cross-reference or value is invalid (the message names the field).
    #[error("invalid routing configuration: {field}: {message}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `queues.support.skills`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// Live reconfiguration refused because it would drop contacts or agents in progress.
    #[error("cannot apply configuration: {0}")]
    InUse(String),
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The whole routing configuration of one tenant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Engine-wide settings (delays, auto-pause).
    #[serde(default)]
    pub settings: Settings,
    /// Skills known to the tenant, by key. A skill used elsewhere must be listed here.
    #[serde(default)]
    pub skills: BTreeMap<SkillId, SkillConfig>,
    /// Queues, by key.
    #[serde(default)]
    pub queues: BTreeMap<QueueId, QueueConfig>,
    /// Agents, by key.
    #[serde(default)]
    pub agents: BTreeMap<AgentId, AgentConfig>,
    /// Named business-hours calendars that queues refer to.
    #[serde(default)]
    pub business_hours: BTreeMap<String, BusinessHours>,
    /// Simulator settings: ignored by the engine, parsed by the what-if simulator from the
    /// same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<toml::Table>,
}

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Consecutive unanswered offers after which an agent is paused automatically
    /// (reason `no-answer`); 0 disables auto-pause.
    pub max_no_answer: u32,
    /// After an agent declines an offer, no new offer for this long (ms).
    pub reject_delay_ms: u64,
    /// After an agent's device reports busy, no new offer for this long (ms).
    pub busy_delay_ms: u64,
    /// After an offer rings unanswered, no new offer to that agent for this long (ms).
    pub no_answer_delay_ms: u64,
    /// Abandons shorter than this (ms) count as short abandons (GLOSSARY: 5 s).
    pub short_abandon_ms: u64,
    /// Weight of the newest handle time in the recent-AHT estimate used for EWT (0..=1).
    pub aht_smoothing: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_no_answer: 3,
            reject_delay_ms: 5_000,
            busy_delay_ms: 10_000,
            no_answer_delay_ms: 0,
            short_abandon_ms: 5_000,
            aht_smoothing: 0.1,
        }
    }
}

/// A skill.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillConfig {
    /// Human-readable name for the admin pages.
    #[serde(default)]
    pub name: Option<String>,
}

/// How a queue picks among eligible available agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent idle longest since the end of their last wrap-up (GLOSSARY).
    #[default]
    LongestIdle,
    /// Offer to every eligible agent at once; the first to accept wins, the rest are cancelled.
    RingAll,
    /// The next member after the one offered last, in member order, wrapping around.
    RoundRobin,
    /// The agent who handled the fewest contacts of this queue.
    FewestContacts,
    /// The agent with the least talk time in this queue.
    LeastTalkTime,
    /// Top-down by the member's `order` (then agent key).
    Linear,
    /// Uniformly random among eligible agents (seeded: replays are identical).
    Random,
    /// Random, proportional to the member's `weight`.
    WeightedRandom,
    /// Highest proficiency in the queue's required skills; longest idle breaks ties.
    BestSkillMatch,
}

/// Where a contact goes when it leaves a queue without an agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Disposition {
    /// Refuse the contact (busy tone, "we are closed" and hang up).
    Reject,
    /// Send to voicemail / a mailbox.
    Voicemail,
    /// Take a callback request for later, outside the queue.
    Callback,
    /// Move to another queue (keeps priority and original entry time for reporting).
    Queue(QueueId),
    /// Forward to an external number.
    Number(String),
}

/// Why an escalation step fires and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EscalationAction {
    /// Lower every minimum proficiency of the contact's requirement by this many levels
    /// (never below 1: the skill itself stays required).
    RelaxProficiency(u8),
    /// Also offer to the members of these queues (their own skills are still checked).
    AddQueueAgents(Vec<QueueId>),
    /// Add this much to the contact's priority (capped at 999).
    RaisePriority(u16),
    /// Leave this queue for another queue.
    OverflowQueue(QueueId),
    /// Leave this queue for an external number.
    OverflowNumber(String),
    /// Ask the caller whether they want a callback (the shell answers with
    /// `handle_callback_requested`); the contact stays queued.
    OfferCallback,
    /// Leave this queue for voicemail.
    Voicemail,
}

/// One escalation step of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Seconds since the contact entered the queue.
    pub after_s: u64,
    /// What to do then.
    pub action: EscalationAction,
}

/// Position / wait-time announcements to waiting callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// Announce when the contact enters the queue.
    pub on_entry: bool,
    /// Repeat every this many seconds while waiting (0 = never).
    pub every_s: u64,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            on_entry: true,
            every_s: 60,
        }
    }
}

/// When a waiting caller's call is answered (the 200 to the carrier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// At once, so the caller hears the greeting, music and announcements (talk time is
    /// billed from here).
    Immediately,
    /// Only when an agent answers; the caller hears the carrier's ringback meanwhile.
    OnAgent,
}

/// What a position/wait announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnounceWhat {
    /// "You are caller number N".
    Position,
    /// "Your expected waiting time is about N minutes".
    Wait,
    /// Both, position first.
    #[default]
    Both,
}

/// How the expected wait is rounded before it is spoken (always up: promising less than
/// the caller will wait is worse than promising more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EwtRounding {
    /// Up to the next whole minute.
    #[default]
    Minute,
    /// Up to the next five minutes.
    FiveMinutes,
}

/// What callers of a queue hear while they wait (`[queues.<q>.media]`). The frequency of
/// announcements is the queue's `announce` (the engine times them); this says how they sound.
/// Prompt names are looked up in the prompt library (built-in prompts, then a tenant's
/// uploads), in `language` first and then the language-neutral set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueMedia {
    /// Music looped while waiting (e.g. `hold_music`); `None` = silence between prompts.
    pub music: Option<String>,
    /// Played once on entry, before the music (e.g. `welcome`).
    pub greeting: Option<String>,
    /// Language of the prompts (`de`, `en`, …). A contact attribute `language` set by an IVR
    /// choice takes precedence.
    pub language: String,
    /// When to answer; `None` = immediately when music or a greeting is set, else on agent.
    pub answer: Option<AnswerMode>,
    /// What the engine's announcements say.
    pub announce: AnnounceWhat,
    /// Rounding of the spoken expected wait.
    pub ewt_rounding: EwtRounding,
    /// Announce the position only when it is better than the last one announced.
    pub only_if_improved: bool,
    /// Longest voicemail message, seconds.
    pub voicemail_max_s: u32,
    /// Record every call of the queue from the moment an agent answers (stereo WAV, caller
    /// left, agent right); calls of other queues are recorded only on request by API.
    pub record: bool,
    /// Days a recording of this queue's calls is kept; older files are deleted by an hourly
    /// sweep. `0` keeps them forever.
    pub recording_retention_days: u32,
}

impl Default for QueueMedia {
    fn default() -> Self {
        QueueMedia {
            music: None,
            greeting: None,
            language: "en".to_owned(),
            answer: None,
            announce: AnnounceWhat::Both,
            ewt_rounding: EwtRounding::Minute,
            only_if_improved: false,
            voicemail_max_s: 120,
            record: false,
            recording_retention_days: 90,
        }
    }
}

impl QueueMedia {
    /// Whether the caller is answered before an agent takes the call.
    pub fn answers_immediately(&self) -> bool {
        match self.answer {
            Some(AnswerMode::Immediately) => true,
            Some(AnswerMode::OnAgent) => false,
            None => self.music.is_some() || self.greeting.is_some(),
        }
    }

    /// The expected wait in whole minutes as spoken, rounded up per [`Self::ewt_rounding`].
    pub fn spoken_wait_minutes(&self, ewt_ms: u64) -> u32 {
        let minutes = ewt_ms.div_ceil(60_000);
        let rounded = match self.ewt_rounding {
            EwtRounding::Minute => minutes,
            EwtRounding::FiveMinutes => minutes.div_ceil(5) * 5,
        };
        u32::try_from(rounded).unwrap_or(u32::MAX)
    }
}

fn prompt_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Agent selection strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Skill requirement every contact of this queue has, e.g. `german >= 3 && billing`.
    #[serde(default)]
    pub skills: Option<SkillExpr>,
    /// Queue weight for agents in several queues: a contact's wait counts `weight` times
    /// when compared across queues (same priority). Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Wrap-up (after-contact work) time in seconds, per contact of this queue.
    #[serde(default)]
    pub wrap_up_s: u64,
    /// How long an offer rings before it times out (seconds).
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_s: u64,
    /// Maximum waiting contacts; further arrivals get `full_action`.
    #[serde(default)]
    pub max_waiting: Option<u32>,
    /// What happens to arrivals when `max_waiting` is reached.
    #[serde(default = "default_reject")]
    pub full_action: Disposition,
    /// What happens to arrivals when no member is logged in; `None` = queue anyway.
    #[serde(default)]
    pub no_agents_action: Option<Disposition>,
    /// Service-level threshold in seconds (answered within it counts as in service level).
    #[serde(default = "default_sl")]
    pub service_level_s: u64,
    /// Name of a `[business_hours.*]` calendar; `None` = always open.
    #[serde(default)]
    pub hours: Option<String>,
    /// What happens to arrivals outside business hours.
    #[serde(default = "default_reject")]
    pub closed_action: Disposition,
    /// Escalation steps, by time since entry.
    #[serde(default)]
    pub escalation: Vec<EscalationStep>,
    /// Position / EWT announcements; `None` = none.
    #[serde(default)]
    pub announce: Option<AnnounceConfig>,
    /// Handle time (seconds) assumed for EWT until real contacts have been measured.
    #[serde(default = "default_aht")]
    pub default_aht_s: u64,
    /// What waiting callers hear (answer, greeting, music, announcements); `None` = they hear
    /// ringback until an agent answers.
    #[serde(default)]
    pub media: Option<QueueMedia>,
}

fn default_weight() -> u32 {
    1
}
fn default_offer_timeout() -> u64 {
    20
}
fn default_reject() -> Disposition {
    Disposition::Reject
}
fn default_sl() -> u64 {
    20
}
fn default_aht() -> u64 {
    180
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            name: None,
            strategy: Strategy::default(),
            skills: None,
            weight: default_weight(),
            wrap_up_s: 0,
            offer_timeout_s: default_offer_timeout(),
            max_waiting: None,
            full_action: default_reject(),
            no_agents_action: None,
            service_level_s: default_sl(),
            hours: None,
            closed_action: default_reject(),
            escalation: Vec::new(),
            announce: None,
            default_aht_s: default_aht(),
            media: None,
        }
    }
}

/// An agent's membership in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The queue.
    pub queue: QueueId,
    /// Position for the `linear` strategy (lower first) and `round_robin` order.
    #[serde(default)]
    pub order: u32,
    /// Relative weight for `weighted_random` (default 1; 0 = never chosen by that strategy).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// Per-channel capacity and blending of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// Concurrent calls (GLOSSARY: 1).
    pub voice: u32,
    /// Concurrent chats (GLOSSARY: 3).
    pub chat: u32,
    /// Concurrent mails (GLOSSARY: 5).
    pub email: u32,
    /// Concurrent tasks.
    pub task: u32,
    /// When true (the default), a call excludes every other channel and any other contact
    /// excludes a call. When false, channels blend up to their own capacities.
    pub voice_exclusive: bool,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            voice: 1,
            chat: 3,
            email: 5,
            task: 1,
            voice_exclusive: true,
        }
    }
}

impl Capacity {
    /// Capacity of one channel.
    pub fn of(&self, channel: Channel) -> u32 {
        match channel {
            Channel::Voice => self.voice,
            Channel::Chat => self.chat,
            Channel::Email => self.email,
            Channel::Task => self.task,
        }
    }
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Skills with proficiency 1 (basic) ..= 5 (expert).
    #[serde(default)]
    pub skills: BTreeMap<SkillId, u8>,
    /// Queue memberships. A bare queue key is accepted too (`queues = ["a", "b"]`).
    #[serde(default, deserialize_with = "memberships_from_toml")]
    pub queues: Vec<Membership>,
    /// Per-channel capacity and blending.
    #[serde(default)]
    pub capacity: Capacity,
}

fn memberships_from_toml<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Membership>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Key(QueueId),
        Full(Membership),
    }
    let entries: Vec<Entry> = Vec::deserialize(d)?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Key(queue) => Membership {
                queue,
                order: 0,
                weight: 1,
            },
            Entry::Full(m) => m,
        })
        .collect())
}

/// A business-hours calendar in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Opening ranges per weekday (`mon` .. `sun`), each `"HH:MM-HH:MM"` in local time.
    #[serde(default)]
    pub weekly: BTreeMap<String, Vec<String>>,
    /// Closed all day on these local dates (`YYYY-MM-DD`).
    #[serde(default)]
    pub holidays: Vec<String>,
}

impl RoutingConfig {
    /// Parses TOML text; errors name `file_name`, the line and the field.
    pub fn from_toml_str(text: &str, file_name: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_col(text, span.start),
                None => (0, 0),
            };
            ConfigError::Parse {
                file: file_name.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }

    /// Parses and validates in one go.
    pub fn load(text: &str, file_name: &str) -> Result<Self, ConfigError> {
        let config = Self::from_toml_str(text, file_name)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-references and value ranges; the message names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let skill_known = |field: &str, expr: &SkillExpr| -> Result<(), ConfigError> {
            for skill in expr.skills() {
                if !self.skills.contains_key(skill) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("unknown skill `{skill}` (add it under [skills])"),
                    ));
                }
            }
            Ok(())
        };
        let queue_known = |field: &str, q: &QueueId| -> Result<(), ConfigError> {
            if self.queues.contains_key(q) {
                Ok(())
            } else {
                Err(ConfigError::invalid(field, format!("unknown queue `{q}`")))
            }
        };
        let disposition_ok = |field: &str, d: &Disposition| -> Result<(), ConfigError> {
            match d {
                Disposition::Queue(q) => queue_known(field, q),
                _ => Ok(()),
            }
        };
        for (qid, q) in &self.queues {
            let f = |name: &str| format!("queues.{qid}.{name}");
            if let Some(expr) = &q.skills {
                skill_known(&f("skills"), expr)?;
            }
            if q.offer_timeout_s == 0 {
                return Err(ConfigError::invalid(
                    f("offer_timeout_s"),
                    "must be at least 1 second",
                ));
            }
            disposition_ok(&f("full_action"), &q.full_action)?;
            disposition_ok(&f("closed_action"), &q.closed_action)?;
            if let Some(d) = &q.no_agents_action {
                disposition_ok(&f("no_agents_action"), d)?;
            }
            if let Some(h) = &q.hours
                && !self.business_hours.contains_key(h)
            {
                return Err(ConfigError::invalid(
                    f("hours"),
                    format!("unknown business_hours `{h}`"),
                ));
            }
            if let Some(m) = &q.media {
                for (name, value) in [
                    ("music", m.music.as_deref()),
                    ("greeting", m.greeting.as_deref()),
                    ("language", Some(m.language.as_str())),
                ] {
                    if let Some(v) = value
                        && !prompt_name_ok(v)
                    {
                        return Err(ConfigError::invalid(
                            f(&format!("media.{name}")),
                            "1-64 characters of a-z 0-9 _ -",
                        ));
                    }
                }
                if !(5..=3600).contains(&m.voicemail_max_s) {
                    return Err(ConfigError::invalid(
                        f("media.voicemail_max_s"),
                        "5..3600 seconds",
                    ));
                }
                if m.recording_retention_days > 36_500 {
                    return Err(ConfigError::invalid(
                        f("media.recording_retention_days"),
                        "0 (keep forever) ..36500 days",
                    ));
                }
            }
            for (i, step) in q.escalation.iter().enumerate() {
                let field = format!("queues.{qid}.escalation[{i}].action");
                match &step.action {
                    EscalationAction::AddQueueAgents(qs) => {
                        for other in qs {
                            queue_known(&field, other)?;
                        }
                    }
                    EscalationAction::OverflowQueue(other) => {
                        queue_known(&field, other)?;
                        if other == qid {
                            return Err(ConfigError::invalid(
                                field,
                                "a queue cannot overflow to itself",
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        for (aid, a) in &self.agents {
            for (skill, level) in &a.skills {
                let field = format!("agents.{aid}.skills.{skill}");
                if !self.skills.contains_key(skill) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("unknown skill `{skill}`"),
                    ));
                }
                if !(1..=5).contains(level) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("proficiency {level} is not in 1..=5"),
                    ));
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for m in &a.queues {
                queue_known(&format!("agents.{aid}.queues"), &m.queue)?;
                if !seen.insert(&m.queue) {
                    return Err(ConfigError::invalid(
                        format!("agents.{aid}.queues"),
                        format!("queue `{}` listed twice", m.queue),
                    ));
                }
            }
        }
        for (name, hours) in &self.business_hours {
            crate::hours::CompiledHours::compile(hours)
                .map_err(|msg| ConfigError::invalid(format!("business_hours.{name}"), msg))?;
        }
        if !(0.0..=1.0).contains(&self.settings.aht_smoothing) {
            return Err(ConfigError::invalid(
                "settings.aht_smoothing",
                "must be within 0..=1",
            ));
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[settings]
max_no_answer = 2
[skills.german]
[skills.billing]
[business_hours.office]
time_zone = "Europe/Berlin"
weekly = { mon = ["08:00-18:00"] }
holidays = ["2026-12-25"]
[queues.support]
strategy = "best_skill_match"
skills = "german >= 2 && billing"
hours = "office"
closed_action = "voicemail"
escalation = [ { after_s = 60, action = { relax_proficiency = 1 } },
               { after_s = 300, action = { overflow_queue = "overflow" } } ]
[queues.overflow]
full_action = { number = "+4930123456" }
[agents.alice]
skills = { german = 3, billing = 2 }
queues = ["support", { queue = "overflow", order = 2 }]
capacity = { chat = 2, voice_exclusive = false }
[simulation]
hours = 8
anything = "the engine ignores this table"
"#;

    #[test]
    fn a_full_config_parses_and_validates() {
        let c = RoutingConfig::load(GOOD, "routing.toml").expect("valid");
        let q = &c.queues[&QueueId::from("support")];
        assert_eq!(q.strategy, Strategy::BestSkillMatch);
        assert_eq!(q.escalation.len(), 2);
        assert_eq!(
            q.escalation[1].action,
            EscalationAction::OverflowQueue("overflow".into())
        );
        let a = &c.agents[&AgentId::from("alice")];
        assert_eq!(a.queues[1].order, 2);
        assert_eq!(
            (
                a.capacity.voice,
                a.capacity.chat,
                a.capacity.voice_exclusive
            ),
            (1, 2, false)
        );
        assert!(c.simulation.is_some());
        assert_eq!(
            c.queues[&QueueId::from("overflow")].full_action,
            Disposition::Number("+4930123456".into())
        );
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "[queues.support]\nstrategy = \"longest_idle\"\nwrapup_s = 10\n";
        let err = RoutingConfig::from_toml_str(text, "routing.toml").expect_err("typo");
        let ConfigError::Parse {
            file,
            line,
            message,
            ..
        } = &err
        else {
            panic!("expected a parse error, got {err:?}")
        };
        assert_eq!((file.as_str(), *line), ("routing.toml", 3));
        assert!(message.contains("wrapup_s"), "{message}");
        assert!(err.to_string().starts_with("routing.toml:3:"), "{err}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let text = "[skills.a]\n[queues.q]\nstrategy = \"fastest\"\n";
        let err = RoutingConfig::from_toml_str(text, "r.toml").expect_err("bad strategy");
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err}");
        let text = "[skills.a]\n[queues.q]\nskills = \"a >= \"\n";
        let err = RoutingConfig::from_toml_str(text, "r.toml").expect_err("bad expression");
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err}");
    }

    #[test]
    fn queue_media_parses_with_defaults_and_rejects_bad_values() {
        let text = "[queues.q.media]\nmusic = \"hold_music\"\nannounce = \"position\"\newt_rounding = \"five_minutes\"\nonly_if_improved = true\n";
        let c = RoutingConfig::load(text, "r.toml").expect("valid media");
        let m = c.queues[&QueueId::new("q")].media.clone().expect("media");
        assert_eq!(m.music.as_deref(), Some("hold_music"));
        assert_eq!(m.language, "en");
        assert_eq!(m.announce, AnnounceWhat::Position);
        assert!(m.answers_immediately(), "music means answer at once");
        assert_eq!(m.spoken_wait_minutes(61_000), 5);
        assert_eq!(m.spoken_wait_minutes(0), 0);
        let plain = QueueMedia::default();
        assert!(!plain.answers_immediately());
        assert_eq!(plain.spoken_wait_minutes(60_001), 2);
        assert!(RoutingConfig::load("[queues.q.media]\nvolume = 3\n", "r.toml").is_err());
        let err = RoutingConfig::load("[queues.q.media]\nmusic = \"../etc\"\n", "r.toml")
            .expect_err("path-like name");
        assert!(err.to_string().contains("queues.q.media.music"), "{err}");
        let err = RoutingConfig::load("[queues.q.media]\nvoicemail_max_s = 0\n", "r.toml")
            .expect_err("zero length");
        assert!(err.to_string().contains("voicemail_max_s"), "{err}");
        let rec = RoutingConfig::load(
            "[queues.q.media]\nrecord = true\nrecording_retention_days = 30\n",
            "r.toml",
        )
        .expect("recording settings parse");
        let m = rec.queues.values().next().and_then(|q| q.media.as_ref());
        assert_eq!(
            m.map(|m| (m.record, m.recording_retention_days)),
            Some((true, 30))
        );
        let err = RoutingConfig::load(
            "[queues.q.media]\nrecording_retention_days = 99999\n",
            "r.toml",
        )
        .expect_err("a retention of centuries");
        assert!(
            err.to_string().contains("recording_retention_days"),
            "{err}"
        );
    }

    #[test]
    fn cross_references_are_checked() {
        let cases = [
            ("[queues.q]\nskills = \"klingon\"\n", "queues.q.skills"),
            ("[queues.q]\nhours = \"nope\"\n", "queues.q.hours"),
            (
                "[queues.q]\nfull_action = { queue = \"nope\" }\n",
                "queues.q.full_action",
            ),
            (
                "[queues.q]\nescalation = [ { after_s = 1, action = { overflow_queue = \"q\" } } ]\n",
                "queues.q.escalation[0].action",
            ),
            (
                "[queues.q]\n[agents.a]\nqueues = [\"q\", \"x\"]\n",
                "agents.a.queues",
            ),
            (
                "[skills.s]\n[agents.a]\nskills = { s = 6 }\n",
                "agents.a.skills.s",
            ),
            (
                "[business_hours.b]\ntime_zone = \"Nowhere/City\"\n",
                "business_hours.b",
            ),
        ];
        for (text, field) in cases {
            let c = RoutingConfig::from_toml_str(text, "r.toml").expect("syntactically fine");
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected Invalid at {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_round_trip_through_toml() {
        let c = RoutingConfig::load(GOOD, "routing.toml").expect("valid");
        let text = toml::to_string(&c).expect("serialisable");
        let again = RoutingConfig::load(&text, "again.toml").expect("re-parses");
        assert_eq!(c, again);
    }
}
