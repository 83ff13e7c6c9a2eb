//! Skill requirements as small boolean expressions: `german >= 3 && (billing >= 2 || vip)`.
//!
//! A bare skill means "level ≥ 1", `!skill` means "lacks it", `>` and `>=` compare the
//! agent's proficiency (1–5). The text form is what admins write and what travels in
//! inputs (serde as a string); the engine compiles it once into a [`CompiledExpr`] over
//! dense skill indices so that checking an agent is a few byte compares, with no strings
//! and no allocation on the routing path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::SkillId;

/// A parse error in a skill expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkillExprError {
    /// Unexpected character or token at a byte offset.
    #[error("skill expression `{text}`: {message} at offset {offset}")]
    Syntax {
        /// The whole expression.
        text: String,
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected.
        message: String,
    },
}

/// A parsed (not yet compiled) skill expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkillExpr {
    /// The agent has `skill` at level `min` or higher (`min` ≥ 1).
    Has {
        /// The skill.
        skill: SkillId,
        /// Minimum proficiency, 1..=5 (higher values are simply unsatisfiable).
        min: u8,
    },
    /// The inner expression does not hold.
    Not(Box<SkillExpr>),
    /// All hold.
    And(Vec<SkillExpr>),
    /// At least one holds.
    Or(Vec<SkillExpr>),
}

impl SkillExpr {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<SkillExpr, SkillExprError> {
        let mut p = Parser { text, pos: 0 };
        let expr = p.or()?;
        p.skip_ws();
        if p.pos != text.len() {
            return Err(p.error("expected `&&`, `||` or end of expression"));
        }
        Ok(expr)
    }

    /// Every skill the expression mentions (with repeats).
    pub fn skills(&self) -> Vec<&SkillId> {
        let mut out = Vec::new();
        self.collect_skills(&mut out);
        out
    }

    fn collect_skills<'a>(&'a self, out: &mut Vec<&'a SkillId>) {
        match self {
            SkillExpr::Has { skill, .. } => out.push(skill),
            SkillExpr::Not(e) => e.collect_skills(out),
            SkillExpr::And(es) | SkillExpr::Or(es) => es.iter().for_each(|e| e.collect_skills(out)),
        }
    }

    /// Compiles against a skill index; `None` if a skill is unknown to `index`.
    pub fn compile(&self, index: &impl Fn(&SkillId) -> Option<u32>) -> Option<CompiledExpr> {
        Some(match self {
            SkillExpr::Has { skill, min } => CompiledExpr::Has {
                skill: index(skill)?,
                min: *min,
            },
            SkillExpr::Not(e) => CompiledExpr::Not(Box::new(e.compile(index)?)),
            SkillExpr::And(es) => {
                CompiledExpr::And(es.iter().map(|e| e.compile(index)).collect::<Option<_>>()?)
            }
            SkillExpr::Or(es) => {
                CompiledExpr::Or(es.iter().map(|e| e.compile(index)).collect::<Option<_>>()?)
            }
        })
    }

    /// Evaluates directly against named skills (for tests and tools; the engine uses
    /// [`CompiledExpr`]).
    pub fn matches(&self, level_of: &impl Fn(&SkillId) -> u8) -> bool {
        match self {
            SkillExpr::Has { skill, min } => level_of(skill) >= *min,
            SkillExpr::Not(e) => !e.matches(level_of),
            SkillExpr::And(es) => es.iter().all(|e| e.matches(level_of)),
            SkillExpr::Or(es) => es.iter().any(|e| e.matches(level_of)),
        }
    }
}

impl fmt::Display for SkillExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkillExpr::Has { skill, min: 1 } => write!(f, "{skill}"),
            SkillExpr::Has { skill, min } => write!(f, "{skill} >= {min}"),
            SkillExpr::Not(e) => match **e {
                SkillExpr::Has { .. } | SkillExpr::Not(_) => write!(f, "!{e}"),
                _ => write!(f, "!({e})"),
            },
            SkillExpr::And(es) | SkillExpr::Or(es) => {
                let op = if matches!(self, SkillExpr::And(_)) {
                    " && "
                } else {
                    " || "
                };
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    // Parenthesise nested binary operators so Display round-trips.
                    if matches!(e, SkillExpr::And(_) | SkillExpr::Or(_)) {
                        write!(f, "({e})")?;
                    } else {
                        write!(f, "{e}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for SkillExpr {
    type Err = SkillExprError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SkillExpr::parse(s)
    }
}

impl Serialize for SkillExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SkillExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SkillExpr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A skill expression over dense skill indices, evaluated against an agent's skill vector
/// (`levels[skill] = proficiency`, 0 = lacks it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompiledExpr {
    /// `levels[skill] >= min`.
    Has {
        /// Dense skill index.
        skill: u32,
        /// Minimum proficiency.
        min: u8,
    },
    /// Negation.
    Not(Box<CompiledExpr>),
    /// Conjunction.
    And(Vec<CompiledExpr>),
    /// Disjunction.
    Or(Vec<CompiledExpr>),
}

impl CompiledExpr {
    /// Whether an agent with these skill levels qualifies. `relax` lowers every positive
    /// minimum by that many levels but never below 1, so the skill itself stays required
    /// (escalation "relax proficiency"); negations are not relaxed.
    pub fn eval(&self, levels: &[u8], relax: u8) -> bool {
        match self {
            CompiledExpr::Has { skill, min } => {
                let have = levels.get(*skill as usize).copied().unwrap_or(0);
                have >= min.saturating_sub(relax).max(1)
            }
            CompiledExpr::Not(e) => !e.eval(levels, 0),
            CompiledExpr::And(es) => es.iter().all(|e| e.eval(levels, relax)),
            CompiledExpr::Or(es) => es.iter().any(|e| e.eval(levels, relax)),
        }
    }

    /// Sum of the agent's proficiency over the positively required skills: the score of
    /// the `best_skill_match` strategy.
    pub fn score(&self, levels: &[u8]) -> u32 {
        match self {
            CompiledExpr::Has { skill, .. } => {
                u32::from(levels.get(*skill as usize).copied().unwrap_or(0))
            }
            CompiledExpr::Not(_) => 0,
            CompiledExpr::And(es) | CompiledExpr::Or(es) => {
                es.iter().map(|e| e.score(levels)).sum()
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> SkillExprError {
        SkillExprError::Syntax {
            text: self.text.to_owned(),
            offset: self.pos,
            message: message.to_owned(),
        }
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with(|c: char| c.is_whitespace()) {
            self.pos += self.text[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<SkillExpr, SkillExprError> {
        let mut items = vec![self.and()?];
        while self.eat("||") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            SkillExpr::Or(items)
        })
    }

    fn and(&mut self) -> Result<SkillExpr, SkillExprError> {
        let mut items = vec![self.unary()?];
        while self.eat("&&") {
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            SkillExpr::And(items)
        })
    }

    fn unary(&mut self) -> Result<SkillExpr, SkillExprError> {
        if self.eat("!") {
            return Ok(SkillExpr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<SkillExpr, SkillExprError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a skill name"));
        }
        let skill = SkillId::new(&rest[..len]);
        self.pos += len;
        let min = if self.eat(">=") {
            self.number()?
        } else if self.eat(">") {
            self.number()?.saturating_add(1)
        } else {
            1
        };
        if min == 0 {
            return Err(
                self.error("a minimum proficiency must be 1..=5 (use `!skill` for lacking it)")
            );
        }
        Ok(SkillExpr::Has { skill, min })
    }

    fn number(&mut self) -> Result<u8, SkillExprError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n = rest[..len]
            .parse::<u8>()
            .map_err(|_| self.error("expected a proficiency 0..=255"))?;
        self.pos += len;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&str, u8)]) -> impl Fn(&SkillId) -> u8 {
        let owned: Vec<(String, u8)> = pairs.iter().map(|(s, l)| ((*s).to_owned(), *l)).collect();
        move |s: &SkillId| {
            owned
                .iter()
                .find(|(k, _)| k == s.as_str())
                .map_or(0, |(_, l)| *l)
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let e = SkillExpr::parse("german >= 3 && (billing >= 2 || vip)").expect("valid");
        assert!(e.matches(&levels(&[("german", 3), ("vip", 1)])));
        assert!(e.matches(&levels(&[("german", 5), ("billing", 2)])));
        assert!(!e.matches(&levels(&[("german", 2), ("vip", 1)])));
        assert!(!e.matches(&levels(&[("german", 3), ("billing", 1)])));
    }

    #[test]
    fn negation_means_lacking_the_skill() {
        let e = SkillExpr::parse("!trainee && english").expect("valid");
        assert!(e.matches(&levels(&[("english", 1)])));
        assert!(!e.matches(&levels(&[("english", 1), ("trainee", 1)])));
    }

    #[test]
    fn greater_than_is_strict() {
        let e = SkillExpr::parse("french > 2").expect("valid");
        assert!(!e.matches(&levels(&[("french", 2)])));
        assert!(e.matches(&levels(&[("french", 3)])));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "a",
            "a >= 3",
            "!a",
            "a && (b || !c)",
            "(a && b) || c >= 2",
            "!(a || b)",
        ] {
            let e = SkillExpr::parse(text).expect("valid");
            let again = SkillExpr::parse(&e.to_string()).expect("display parses");
            assert_eq!(e, again, "{text} -> {e}");
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        for bad in [
            "", "a &&", "(a", "a >= x", "a b", "a >= 0", "&&", "a >= 300",
        ] {
            assert!(SkillExpr::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let Err(SkillExprError::Syntax { offset, .. }) = SkillExpr::parse("a && (b") else {
            panic!("expected a syntax error")
        };
        assert_eq!(offset, 7);
    }

    #[test]
    fn compiled_relax_keeps_the_skill_required() {
        let e = SkillExpr::parse("a >= 4").expect("valid");
        let c = e
            .compile(&|s: &SkillId| (s.as_str() == "a").then_some(0))
            .expect("known");
        assert!(!c.eval(&[2], 0));
        assert!(c.eval(&[2], 2));
        assert!(!c.eval(&[0], 5), "relaxing never drops the skill itself");
    }
}
