//! The simulator's report: what happened per queue and interval, next to what Erlang C and
//! Erlang A predict for the same inputs, and how far the announced wait (EWT) was off.
//!
//! Definitions follow GLOSSARY.md: offered counts at queue entry; answered, abandoned and
//! service level count over contacts that *ended* waiting in the interval; SL = answered
//! within T ÷ (ended − short abandons); abandon rate = abandoned (not short) ÷ offered;
//! ASA over answered; AHT = (talk + wrap-up) ÷ handled; occupancy = busy ÷ (busy + available).
//! Rendering is plain text and CSV (RFC 4180 quoting done here: the fields are numbers and
//! configuration keys, and the root package's dependencies are not this module's to extend).

use std::fmt::Write as _;

use crate::erlang::ErlangAPrediction;
use crate::ids::QueueId;

/// Counters for one queue in one interval, as observed in the simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Contacts that entered the queue.
    pub offered: u64,
    /// Contacts connected to an agent.
    pub answered: u64,
    /// Of those, answered within the queue's service-level threshold.
    pub answered_within_threshold: u64,
    /// Callers who gave up while waiting (not counting short abandons).
    pub abandoned: u64,
    /// Callers who gave up within the short-abandon time.
    pub short_abandoned: u64,
    /// Contacts that left by an escalation step, a full queue or a closed queue.
    pub overflowed: u64,
    /// Sum of waiting times of answered contacts (ms).
    pub wait_of_answered_ms: u64,
    /// Contacts whose handling (talk + wrap-up) ended.
    pub handled: u64,
    /// Sum of their talk + wrap-up (ms).
    pub handle_ms: u64,
    /// Time the queue's agents spent on contacts, talk + wrap-up (ms).
    pub busy_ms: u64,
    /// Time the queue's agents spent logged in, available and idle (ms).
    pub available_ms: u64,
    /// Contacts whose announced EWT could be compared with their actual wait.
    pub ewt_samples: u64,
    /// Sum of |announced − actual| (ms).
    pub ewt_abs_error_ms: u64,
    /// Sum of announced − actual (ms; positive = announced too long).
    pub ewt_error_ms: i64,
}

impl Observed {
    /// Adds another interval's counters.
    pub fn add(&mut self, o: &Observed) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.answered_within_threshold += o.answered_within_threshold;
        self.abandoned += o.abandoned;
        self.short_abandoned += o.short_abandoned;
        self.overflowed += o.overflowed;
        self.wait_of_answered_ms += o.wait_of_answered_ms;
        self.handled += o.handled;
        self.handle_ms += o.handle_ms;
        self.busy_ms += o.busy_ms;
        self.available_ms += o.available_ms;
        self.ewt_samples += o.ewt_samples;
        self.ewt_abs_error_ms += o.ewt_abs_error_ms;
        self.ewt_error_ms += o.ewt_error_ms;
    }

    /// Service level as a share, `None` when no contact ended waiting.
    pub fn service_level(&self) -> Option<f64> {
        let ended = self.answered + self.abandoned + self.overflowed;
        ratio(self.answered_within_threshold, ended)
    }

    /// ASA in seconds, `None` when nothing was answered.
    pub fn average_speed_of_answer_s(&self) -> Option<f64> {
        ratio(self.wait_of_answered_ms, self.answered).map(|ms| ms / 1000.0)
    }

    /// AHT in seconds, `None` when nothing was handled.
    pub fn average_handle_time_s(&self) -> Option<f64> {
        ratio(self.handle_ms, self.handled).map(|ms| ms / 1000.0)
    }

    /// Abandon rate as a share of offered, `None` when nothing was offered.
    pub fn abandon_rate(&self) -> Option<f64> {
        ratio(self.abandoned, self.offered)
    }

    /// Occupancy of the queue's agents as a share, `None` without logged-in time.
    pub fn occupancy(&self) -> Option<f64> {
        ratio(self.busy_ms, self.busy_ms + self.available_ms)
    }

    /// Mean absolute EWT error in seconds.
    pub fn ewt_mean_abs_error_s(&self) -> Option<f64> {
        ratio(self.ewt_abs_error_ms, self.ewt_samples).map(|ms| ms / 1000.0)
    }

    /// Mean EWT error (announced − actual) in seconds: positive means callers were told to
    /// expect longer waits than they had.
    pub fn ewt_bias_s(&self) -> Option<f64> {
        if self.ewt_samples == 0 {
            None
        } else {
            // Sample counts and millisecond sums stay far below 2^53 in any simulation run.
            Some(self.ewt_error_ms as f64 / self.ewt_samples as f64 / 1000.0)
        }
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    // Counters stay far below 2^53, so the conversions are exact.
    (den > 0).then(|| num as f64 / den as f64)
}

/// What the formulas predict for one queue and interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prediction {
    /// Agents serving the queue (agents in several queues count as a share).
    pub agents: f64,
    /// Offered traffic in Erlangs (configured arrival rate × AHT).
    pub traffic: f64,
    /// Erlang C's service level, P(wait) and ASA (s); `None` for an unstable queue
    /// (SL is then reported as 0).
    pub erlang_c: Option<ErlangCPrediction>,
    /// Erlang A's prediction; `None` when callers never abandon (it is then Erlang C).
    pub erlang_a: Option<ErlangAPrediction>,
}

/// Erlang C's numbers for one queue and interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErlangCPrediction {
    /// Service level as a share.
    pub service_level: f64,
    /// Probability of waiting.
    pub probability_of_wait: f64,
    /// ASA in seconds (infinite when unstable).
    pub average_speed_of_answer: f64,
    /// Occupancy A/N.
    pub occupancy: f64,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The queue.
    pub queue: QueueId,
    /// Interval index from the start of the run; `None` for the whole-run total.
    pub interval: Option<usize>,
    /// What the simulation produced.
    pub observed: Observed,
    /// What the formulas predict (for the total: traffic-weighted means).
    pub prediction: Prediction,
}

/// The whole report of one simulation run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Interval length in minutes.
    pub interval_minutes: u32,
    /// Hour of day of the run's start, for labels.
    pub start_hour: u32,
    /// Simulated length in hours.
    pub hours: f64,
    /// Contacts that arrived in the run, all queues.
    pub contacts: u64,
    /// Per queue and interval, ordered by interval then queue; followed by per-queue totals.
    pub rows: Vec<Row>,
}

impl Report {
    /// The clock label (`HH:MM`) of an interval's start.
    pub fn label(&self, interval: Option<usize>) -> String {
        match interval {
            None => "total".to_owned(),
            Some(i) => {
                let minutes = self.start_hour as usize * 60 + i * self.interval_minutes as usize;
                format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
            }
        }
    }

    /// The report as a fixed-width text table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<6} {:<14} {:>7} {:>7} {:>6} {:>5} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>5} | {:>6} {:>6} | {:>5} {:>5} | {:>6} {:>6}",
            "time",
            "queue",
            "offered",
            "answer",
            "aband",
            "ovfl",
            "SL%",
            "C SL%",
            "A SL%",
            "ASA s",
            "C ASA",
            "A ASA",
            "AHT s",
            "Ab%",
            "A Ab%",
            "Occ%",
            "C Occ",
            "EWT|e|",
            "bias"
        );
        let mut totals_started = false;
        for row in &self.rows {
            if row.interval.is_none() && !totals_started {
                totals_started = true;
                let _ = writeln!(out, "{}", "-".repeat(150));
            }
            let o = &row.observed;
            let c = row.prediction.erlang_c;
            let a = row.prediction.erlang_a;
            let _ = writeln!(
                out,
                "{:<6} {:<14} {:>7} {:>7} {:>6} {:>5} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>5} | {:>6} {:>6} | {:>5} {:>5} | {:>6} {:>6}",
                self.label(row.interval),
                truncate(row.queue.as_str(), 14),
                o.offered,
                o.answered,
                o.abandoned,
                o.overflowed,
                pct(o.service_level()),
                pct(c.map(|c| c.service_level)),
                pct(a.map(|a| a.service_level)),
                num(o.average_speed_of_answer_s()),
                num(c.map(|c| c.average_speed_of_answer)),
                num(a.map(|a| a.average_speed_of_answer)),
                num(o.average_handle_time_s()),
                pct(o.abandon_rate()),
                pct(a.map(|a| a.probability_of_abandon)),
                pct(o.occupancy()),
                pct(c.map(|c| c.occupancy)),
                num(o.ewt_mean_abs_error_s()),
                num(o.ewt_bias_s()),
            );
        }
        out
    }

    /// The report as CSV with a header line.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "interval_start,queue,offered,answered,answered_within_threshold,abandoned,short_abandoned,overflowed,handled,service_level,erlang_c_service_level,erlang_a_service_level,asa_s,erlang_c_asa_s,erlang_a_asa_s,aht_s,abandon_rate,erlang_a_abandon_rate,occupancy,erlang_c_occupancy,erlang_a_occupancy,agents,traffic_erlangs,ewt_samples,ewt_mean_abs_error_s,ewt_bias_s\n",
        );
        for row in &self.rows {
            let o = &row.observed;
            let c = row.prediction.erlang_c;
            let a = row.prediction.erlang_a;
            let fields = [
                self.label(row.interval),
                row.queue.as_str().to_owned(),
                o.offered.to_string(),
                o.answered.to_string(),
                o.answered_within_threshold.to_string(),
                o.abandoned.to_string(),
                o.short_abandoned.to_string(),
                o.overflowed.to_string(),
                o.handled.to_string(),
                csv_num(o.service_level()),
                csv_num(c.map(|c| c.service_level)),
                csv_num(a.map(|a| a.service_level)),
                csv_num(o.average_speed_of_answer_s()),
                csv_num(c.map(|c| c.average_speed_of_answer)),
                csv_num(a.map(|a| a.average_speed_of_answer)),
                csv_num(o.average_handle_time_s()),
                csv_num(o.abandon_rate()),
                csv_num(a.map(|a| a.probability_of_abandon)),
                csv_num(o.occupancy()),
                csv_num(c.map(|c| c.occupancy)),
                csv_num(a.map(|a| a.occupancy)),
                format!("{:.3}", row.prediction.agents),
                format!("{:.3}", row.prediction.traffic),
                o.ewt_samples.to_string(),
                csv_num(o.ewt_mean_abs_error_s()),
                csv_num(o.ewt_bias_s()),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.is_infinite() => "inf".to_owned(),
        Some(v) => format!("{v:.1}"),
    }
}

fn csv_num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(v) if v.is_infinite() => "inf".to_owned(),
        Some(v) => format!("{v:.4}"),
    }
}

/// RFC 4180: quote a field containing a comma, quote or line break; double inner quotes.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn glossary_definitions() {
        let o = Observed {
            offered: 100,
            answered: 80,
            answered_within_threshold: 60,
            abandoned: 10,
            short_abandoned: 5,
            overflowed: 5,
            wait_of_answered_ms: 800_000,
            handled: 80,
            handle_ms: 80 * 300_000,
            busy_ms: 3,
            available_ms: 1,
            ewt_samples: 4,
            ewt_abs_error_ms: 40_000,
            ewt_error_ms: -20_000,
        };
        assert_eq!(o.service_level(), Some(60.0 / 95.0));
        assert_eq!(o.average_speed_of_answer_s(), Some(10.0));
        assert_eq!(o.average_handle_time_s(), Some(300.0));
        assert_eq!(o.abandon_rate(), Some(0.1));
        assert_eq!(o.occupancy(), Some(0.75));
        assert_eq!(o.ewt_mean_abs_error_s(), Some(10.0));
        assert_eq!(o.ewt_bias_s(), Some(-5.0));
        assert_eq!(Observed::default().service_level(), None);
    }

    #[test]
    fn csv_quotes_and_labels() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        let r = Report {
            interval_minutes: 15,
            start_hour: 23,
            hours: 1.0,
            contacts: 0,
            rows: vec![Row {
                queue: QueueId::from("q,1"),
                interval: Some(5),
                observed: Observed::default(),
                prediction: Prediction::default(),
            }],
        };
        assert_eq!(r.label(Some(5)), "00:15");
        let csv = r.to_csv();
        let mut lines = csv.lines();
        let header_cols = lines.next().unwrap().split(',').count();
        let row = lines.next().unwrap();
        assert!(row.starts_with("00:15,\"q,1\",0,"), "{row}");
        assert_eq!(header_cols, 26);
        assert!(r.to_text().contains("00:15"));
    }
}
