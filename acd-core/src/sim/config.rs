//! The `[simulation]` table of a routing file: traffic, talk times, caller patience, agent
//! answer delay and shifts.
//!
//! It lives in the same TOML file as the routing configuration so an admin tests exactly the
//! file they will deploy. The engine's `RoutingConfig` keeps the table as an opaque
//! `toml::Table` and ignores it; this module parses the same text a second time into
//! [`SimDocument`], whose top level accepts everything else but whose `[simulation]` part is
//! `deny_unknown_fields` throughout, so a typo is an error naming file, line and field.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::ids::{AgentId, Channel, QueueId};
use crate::skill_expr::SkillExpr;

/// The most contacts per hour one queue may be given (one per millisecond, the clock's tick).
pub const MAX_CONTACTS_PER_HOUR: f64 = 3_600_000.0;

/// A TOML file as the simulator sees it: only the `[simulation]` table.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SimDocument {
    /// The simulation parameters (defaults when the table is missing).
    #[serde(default)]
    pub simulation: SimulationConfig,
}

/// `[simulation]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulationConfig {
    /// Length of one report interval in minutes: 15, 30 or 60.
    pub interval_minutes: u32,
    /// Hour of the day (0–23, UTC) at which the simulated day starts; the engine's business
    /// hours see this clock, and the report labels intervals with it.
    pub start_hour: u32,
    /// The calendar day that is simulated (`YYYY-MM-DD`), so business hours and holidays
    /// apply as they would on that day.
    pub date: String,
    /// Seconds from an offer until the agent accepts it: uniform between these two values.
    pub ring_delay_secs: [f64; 2],
    /// Traffic per queue, keyed by the queue's configuration key.
    pub queues: BTreeMap<QueueId, QueueTraffic>,
    /// When agents are logged in. Empty: every configured agent works the whole run.
    pub shifts: Vec<Shift>,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            interval_minutes: 60,
            start_hour: 8,
            date: "2026-03-02".to_owned(),
            ring_delay_secs: [2.0, 6.0],
            queues: BTreeMap::new(),
            shifts: Vec::new(),
        }
    }
}

/// `[simulation.queues.<queue>]`: the contacts that arrive at one queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTraffic {
    /// Contacts per hour, the same all day. Give this or `hourly_profile`.
    pub contacts_per_hour: Option<f64>,
    /// Contacts per hour for each simulated hour, starting at `start_hour`; the last value
    /// repeats when the run is longer.
    pub hourly_profile: Option<Vec<f64>>,
    /// The contacts' channel.
    #[serde(default = "default_channel")]
    pub channel: Channel,
    /// Skill requirement of these contacts on top of the queue's own, in the engine's
    /// expression language, e.g. `"german >= 3 && billing"`.
    #[serde(default)]
    pub requirement: Option<SkillExpr>,
    /// Priority the contacts enter with (0–999; higher is served first).
    #[serde(default)]
    pub priority: u16,
    /// Mean talk time in seconds (the engine adds the queue's wrap-up to give the AHT).
    pub talk_time_secs: f64,
    /// The talk-time distribution.
    #[serde(default)]
    pub talk_time: TalkTime,
    /// Mean caller patience in seconds (exponential); absent: callers never give up.
    pub patience_secs: Option<f64>,
}

fn default_channel() -> Channel {
    Channel::Voice
}

/// How talk times are spread around their mean.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "distribution")]
pub enum TalkTime {
    /// Exponential (coefficient of variation 1): Erlang C's own assumption.
    #[default]
    Exponential,
    /// Log-normal with the given coefficient of variation (standard deviation ÷ mean);
    /// real talk times look like this, typically cv 0.6–1.0.
    Lognormal {
        /// Standard deviation ÷ mean.
        cv: f64,
    },
    /// Every contact takes exactly the mean.
    Fixed,
}

/// `[[simulation.shifts]]`: a group of agents logged in from `start_hour` to `end_hour`
/// (hours since the start of the run, fractions allowed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    /// The agents, by configuration key.
    pub agents: Vec<AgentId>,
    /// Login, in hours after the start of the run.
    pub start_hour: f64,
    /// Logout, in hours after the start of the run (they finish the contact in hand).
    pub end_hour: f64,
}

/// A configuration error with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The dotted path of the field at fault, when known (e.g. `simulation.queues.billing.talk_time_secs`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Back up to a char boundary so slicing cannot panic on multi-byte text.
    let mut cut = offset;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let before = &text[..cut];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The dotted name of the field on `line` (1-based): the nearest `[table]` header above it
/// plus the key written on that line. A best effort for error messages; TOML's own error
/// carries the span but not the key path.
pub fn field_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let idx = line.checked_sub(1)?;
    let here = strip_comment(lines.get(idx)?);
    if here.starts_with('[') {
        return Some(table_name(here));
    }
    let key = here
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned());
    let table = lines[..idx]
        .iter()
        .rev()
        .map(|l| strip_comment(l))
        .find(|l| l.starts_with('['))
        .map(table_name);
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// The line without a trailing `# comment` (good enough for headers and keys, which cannot
/// contain `#` unquoted) and without surrounding blanks.
fn strip_comment(line: &str) -> &str {
    line.split_once('#')
        .map_or(line, |(before, _)| before)
        .trim()
}

/// `[a.b]` or `[[a.b]]` → `a.b`.
fn table_name(header: &str) -> String {
    header
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim()
        .to_owned()
}

/// Turns a TOML error into a [`ConfigError`] naming origin, line, column and field.
pub fn config_error(origin: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, column, field) = match err.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            (Some(line), Some(col), field_at_line(text, line))
        }
        None => (None, None, None),
    };
    ConfigError {
        origin: origin.to_owned(),
        line,
        column,
        field,
        message: err.message().trim().to_owned(),
    }
}

/// Parses and checks the `[simulation]` table of `text` (read from `origin`).
pub fn parse_simulation(origin: &str, text: &str) -> Result<SimulationConfig, ConfigError> {
    let doc: SimDocument = toml::from_str(text).map_err(|e| config_error(origin, text, &e))?;
    let sim = doc.simulation;
    sim.validate(origin, text)?;
    Ok(sim)
}

impl SimulationConfig {
    /// Checks values serde cannot: ranges and "one of" rules. Errors point at the line of the
    /// offending key when it can be found in `text`.
    pub fn validate(&self, origin: &str, text: &str) -> Result<(), ConfigError> {
        let err = |table: &str, key: &str, message: String| {
            let line = find_key_line(text, table, key);
            ConfigError {
                origin: origin.to_owned(),
                line,
                column: line.map(|_| 1),
                field: Some(format!("{table}.{key}")),
                message,
            }
        };
        if ![15, 30, 60].contains(&self.interval_minutes) {
            return Err(err(
                "simulation",
                "interval_minutes",
                format!("must be 15, 30 or 60, got {}", self.interval_minutes),
            ));
        }
        if self.start_hour > 23 {
            return Err(err(
                "simulation",
                "start_hour",
                format!("must be 0–23, got {}", self.start_hour),
            ));
        }
        if chrono::NaiveDate::parse_from_str(&self.date, "%Y-%m-%d").is_err() {
            return Err(err(
                "simulation",
                "date",
                format!("must be YYYY-MM-DD, got {:?}", self.date),
            ));
        }
        let [lo, hi] = self.ring_delay_secs;
        if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && hi >= lo) {
            return Err(err(
                "simulation",
                "ring_delay_secs",
                format!("must be [min, max] with 0 ≤ min ≤ max, got [{lo}, {hi}]"),
            ));
        }
        for (queue, t) in &self.queues {
            let table = format!("simulation.queues.{queue}");
            match (&t.contacts_per_hour, &t.hourly_profile) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        &table,
                        "hourly_profile",
                        "give contacts_per_hour or hourly_profile, not both".to_owned(),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        &table,
                        "contacts_per_hour",
                        "missing: give contacts_per_hour or hourly_profile".to_owned(),
                    ));
                }
                (Some(v), None) if !(v.is_finite() && *v >= 0.0 && *v <= MAX_CONTACTS_PER_HOUR) => {
                    return Err(err(
                        &table,
                        "contacts_per_hour",
                        format!("must be 0–3,600,000 per hour, got {v}"),
                    ));
                }
                (None, Some(p))
                    if p.is_empty()
                        || p.iter().any(|v| {
                            !(v.is_finite() && *v >= 0.0 && *v <= MAX_CONTACTS_PER_HOUR)
                        }) =>
                {
                    return Err(err(
                        &table,
                        "hourly_profile",
                        "must be a non-empty list of numbers 0–3,600,000 per hour".to_owned(),
                    ));
                }
                _ => {}
            }
            if !(t.talk_time_secs.is_finite() && t.talk_time_secs > 0.0) {
                return Err(err(
                    &table,
                    "talk_time_secs",
                    format!("must be > 0, got {}", t.talk_time_secs),
                ));
            }
            if let TalkTime::Lognormal { cv } = t.talk_time
                && !(cv.is_finite() && cv > 0.0)
            {
                return Err(err(
                    &table,
                    "talk_time",
                    format!("cv must be > 0, got {cv}"),
                ));
            }
            if let Some(p) = t.patience_secs
                && !(p.is_finite() && p > 0.0)
            {
                return Err(err(
                    &table,
                    "patience_secs",
                    format!("must be > 0, got {p}"),
                ));
            }
            if t.priority > 999 {
                return Err(err(
                    &table,
                    "priority",
                    format!("must be 0–999, got {}", t.priority),
                ));
            }
        }
        for s in &self.shifts {
            if !(s.start_hour.is_finite()
                && s.end_hour.is_finite()
                && s.start_hour >= 0.0
                && s.end_hour > s.start_hour)
            {
                return Err(err(
                    "simulation.shifts",
                    "end_hour",
                    format!(
                        "a shift must have 0 ≤ start_hour < end_hour, got {}–{}",
                        s.start_hour, s.end_hour
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl QueueTraffic {
    /// Contacts per hour in simulated hour `hour` (0 = the first hour of the run).
    pub fn rate_per_hour(&self, hour: usize) -> f64 {
        match (&self.contacts_per_hour, &self.hourly_profile) {
            (Some(v), _) => *v,
            (None, Some(p)) => p.get(hour).or(p.last()).copied().unwrap_or(0.0),
            (None, None) => 0.0,
        }
    }
}

/// The 1-based line where `key` is set inside `[table]` (or as a dotted key), if found.
fn find_key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut table_line = None;
    for (i, raw) in text.lines().enumerate() {
        let l = strip_comment(raw);
        if l.starts_with('[') {
            current = table_name(l);
            if current == table {
                table_line = Some(i + 1);
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = l.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            return Some(i + 1);
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
[[queues]]
id = "billing"

[simulation]
interval_minutes = 15
ring_delay_secs = [1.0, 3.0]

[simulation.queues.billing]
hourly_profile = [60, 90, 120]
talk_time_secs = 240
talk_time = { distribution = "lognormal", cv = 0.8 }
patience_secs = 90
"#;

    #[test]
    fn parses_and_ignores_the_routing_half() {
        let sim = parse_simulation("good.toml", GOOD).unwrap();
        assert_eq!(sim.interval_minutes, 15);
        let q = &sim.queues[&QueueId::from("billing")];
        assert_eq!(q.talk_time, TalkTime::Lognormal { cv: 0.8 });
        assert_eq!(q.rate_per_hour(0), 60.0);
        assert_eq!(q.rate_per_hour(7), 120.0, "the last profile value repeats");
        assert_eq!(q.channel, Channel::Voice);
    }

    #[test]
    fn missing_table_gives_defaults() {
        let sim = parse_simulation("x.toml", "[[queues]]\nid = \"a\"\n").unwrap();
        assert_eq!(sim, SimulationConfig::default());
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = GOOD.replace("patience_secs = 90", "patience_sec = 90");
        let e = parse_simulation("center.toml", &text).unwrap_err();
        assert_eq!(e.origin, "center.toml");
        assert_eq!(e.line, Some(13));
        assert_eq!(
            e.field.as_deref(),
            Some("simulation.queues.billing.patience_sec")
        );
        assert!(e.message.contains("patience_sec"), "{e}");
        assert!(e.to_string().starts_with("center.toml:13:"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = GOOD.replace("talk_time_secs = 240", "talk_time_secs = \"four minutes\"");
        let e = parse_simulation("center.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("simulation.queues.billing.talk_time_secs")
        );
    }

    #[test]
    fn out_of_range_value_names_line_and_field() {
        let text = GOOD.replace("patience_secs = 90", "patience_secs = -5");
        let e = parse_simulation("center.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(13), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("simulation.queues.billing.patience_secs")
        );
        let text = GOOD.replace("interval_minutes = 15", "interval_minutes = 7");
        let e = parse_simulation("center.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(
            line_col("äb\ncd", 1),
            (1, 1),
            "inside a multi-byte char backs up"
        );
    }
}
