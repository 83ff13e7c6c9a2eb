//! Business hours and holidays, evaluated in the calendar's IANA time zone.
//!
//! The config keeps text (`"08:00-18:00"`, `"2026-12-25"`) so admins can read it; this
//! module compiles it once into minute ranges per weekday and a holiday set, so checking
//! "is the queue open at `now`" is a time-zone conversion and a few compares.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::config::BusinessHours;
use crate::ids::Timestamp;

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A compiled business-hours calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledHours {
    tz: Tz,
    /// Per weekday (Monday = 0), open `[start, end)` ranges in minutes since local midnight.
    weekly: [Vec<(u16, u16)>; 7],
    holidays: BTreeSet<NaiveDate>,
}

impl CompiledHours {
    /// Compiles a calendar; the error message says which entry is wrong.
    pub fn compile(hours: &BusinessHours) -> Result<CompiledHours, String> {
        let tz: Tz = hours
            .time_zone
            .parse()
            .map_err(|_| format!("time_zone `{}` is not an IANA time zone", hours.time_zone))?;
        let mut weekly: [Vec<(u16, u16)>; 7] = Default::default();
        for (day, ranges) in &hours.weekly {
            let Some(i) = WEEKDAYS.iter().position(|d| d == day) else {
                return Err(format!(
                    "weekly.{day}: expected one of mon, tue, wed, thu, fri, sat, sun"
                ));
            };
            for range in ranges {
                let parsed = parse_range(range).ok_or_else(|| {
                    format!("weekly.{day}: `{range}` is not `HH:MM-HH:MM` with start before end (24:00 allowed)")
                })?;
                weekly[i].push(parsed);
            }
        }
        let mut holidays = BTreeSet::new();
        for h in &hours.holidays {
            let date = NaiveDate::parse_from_str(h, "%Y-%m-%d")
                .map_err(|_| format!("holidays: `{h}` is not a YYYY-MM-DD date"))?;
            holidays.insert(date);
        }
        Ok(CompiledHours {
            tz,
            weekly,
            holidays,
        })
    }

    /// Whether the calendar is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let Ok(ms) = i64::try_from(now.as_millis()) else {
            return false;
        };
        let Some(local) = self.tz.timestamp_millis_opt(ms).single() else {
            return false;
        };
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let day = local.weekday().num_days_from_monday() as usize;
        // Minutes fit in u16: at most 24 * 60.
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.weekly[day]
            .iter()
            .any(|&(start, end)| start <= minute && minute < end)
    }
}

impl CompiledHours {
    /// When the open range containing `now` ends (`None` if closed at `now`).
    ///
    /// Counted in local wall-clock minutes from `now`, so across a DST change inside the
    /// range the instant is off by the shift; the engine re-checks `is_open` when the
    /// instant comes and schedules the next check if still open, so a late or early
    /// answer only delays or repeats the check, never closes an open queue.
    pub fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        let ms = i64::try_from(now.as_millis()).ok()?;
        let local = self.tz.timestamp_millis_opt(ms).single()?;
        if self.holidays.contains(&local.date_naive()) {
            return None;
        }
        let day = local.weekday().num_days_from_monday() as usize;
        // Minutes fit in u16: at most 24 * 60.
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let end = self.weekly[day]
            .iter()
            .filter(|&&(start, end)| start <= minute && minute < end)
            .map(|&(_, end)| end)
            .max()?;
        let into_minute_ms = u64::from(local.second()) * 1000 + ms.rem_euclid(1000) as u64;
        let minute_start = now.as_millis().saturating_sub(into_minute_ms);
        Some(Timestamp(
            minute_start.saturating_add(u64::from(end - minute) * 60_000),
        ))
    }
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-')?;
    let start = parse_hhmm(a.trim())?;
    let end = parse_hhmm(b.trim())?;
    (start < end).then_some((start, end))
}

fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn berlin_office() -> CompiledHours {
        let mut weekly = BTreeMap::new();
        for d in ["mon", "tue", "wed", "thu", "fri"] {
            weekly.insert(
                d.to_owned(),
                vec!["08:00-12:00".to_owned(), "13:00-18:00".to_owned()],
            );
        }
        CompiledHours::compile(&BusinessHours {
            time_zone: "Europe/Berlin".into(),
            weekly,
            holidays: vec!["2026-12-25".into()],
        })
        .expect("valid calendar")
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        let t = chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid utc");
        Timestamp::from_millis(u64::try_from(t.timestamp_millis()).expect("after 1970"))
    }

    #[test]
    fn open_and_closed_in_local_time() {
        let h = berlin_office();
        // Friday 27 Nov 2026: Berlin is UTC+1.
        assert!(!h.is_open(at(2026, 11, 27, 6, 59)), "07:59 local");
        assert!(h.is_open(at(2026, 11, 27, 7, 0)), "08:00 local");
        assert!(!h.is_open(at(2026, 11, 27, 11, 30)), "12:30 lunch");
        assert!(!h.is_open(at(2026, 11, 27, 17, 0)), "18:00 local closes");
        assert!(!h.is_open(at(2026, 11, 28, 10, 0)), "Saturday");
        // Summer time: UTC+2, so 06:00 UTC is 08:00 local.
        assert!(h.is_open(at(2026, 7, 1, 6, 0)));
    }

    #[test]
    fn open_until_is_the_end_of_the_current_range() {
        let h = berlin_office();
        // 09:15:30 local (UTC+1) on a Friday: the morning range ends at 12:00 local.
        let now = Timestamp(at(2026, 11, 27, 8, 15).as_millis() + 30_500);
        assert_eq!(h.open_until(now), Some(at(2026, 11, 27, 11, 0)));
        assert_eq!(h.open_until(at(2026, 11, 27, 11, 30)), None, "lunch");
        assert_eq!(h.open_until(at(2026, 12, 25, 10, 0)), None, "holiday");
        let until = h.open_until(at(2026, 11, 27, 16, 59)).expect("open");
        assert!(h.is_open(Timestamp(until.as_millis() - 1)));
        assert!(!h.is_open(until));
    }

    #[test]
    fn holidays_are_closed() {
        let h = berlin_office();
        assert!(!h.is_open(at(2026, 12, 25, 10, 0)));
        assert!(h.is_open(at(2026, 12, 24, 10, 0)));
    }

    #[test]
    fn bad_entries_are_named() {
        let mut weekly = BTreeMap::new();
        weekly.insert("mon".to_owned(), vec!["18:00-08:00".to_owned()]);
        let err = CompiledHours::compile(&BusinessHours {
            time_zone: "Europe/Berlin".into(),
            weekly,
            holidays: vec![],
        })
        .expect_err("end before start");
        assert!(err.contains("weekly.mon"), "{err}");
        let err = CompiledHours::compile(&BusinessHours {
            time_zone: "Mars/Olympus".into(),
            weekly: BTreeMap::new(),
            holidays: vec![],
        })
        .expect_err("bad zone");
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
