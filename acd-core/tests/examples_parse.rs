//! Every routing example in `examples/` parses, validates, and simulates.
//!
//! STYLE.md §8: a test parses every sample config the repo ships. Beyond parsing, each example
//! runs a short what-if simulation on the real engine, so an example that the engine would
//! refuse, or whose `[simulation]` table is broken, fails here rather than in front of an
//! admin. `zentrale.toml` is the server's own configuration (src/config.rs tests it) and is
//! skipped.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use acd_core::RoutingConfig;
use acd_core::sim::{Simulation, parse_simulation};

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "toml") && name != "zentrale.toml" {
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out.sort();
    assert!(
        out.len() >= 3,
        "expected the helpdesk, multi-skill and blended examples: {out:?}"
    );
    out
}

#[test]
fn every_example_parses_and_validates() {
    for (name, text) in examples() {
        let routing = RoutingConfig::load(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        let sim = parse_simulation(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!routing.queues.is_empty(), "{name}: no queues");
        assert!(!sim.queues.is_empty(), "{name}: no simulated traffic");
        for q in sim.queues.keys() {
            assert!(
                routing.queues.contains_key(q),
                "{name}: simulated queue {q} not configured"
            );
        }
    }
}

#[test]
fn every_example_simulates_an_hour() {
    for (name, text) in examples() {
        let routing = RoutingConfig::load(&text, &name).unwrap();
        let sim = parse_simulation(&name, &text).unwrap();
        let report = Simulation::new(routing, sim, 1.0, 1)
            .and_then(Simulation::run)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.contacts > 0, "{name}: no contacts arrived");
        let totals: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.interval.is_none())
            .collect();
        let offered: u64 = totals.iter().map(|r| r.observed.offered).sum();
        let answered: u64 = totals.iter().map(|r| r.observed.answered).sum();
        assert!(
            offered > 0 && answered > 0,
            "{name}: offered {offered}, answered {answered}"
        );
        assert!(!report.to_text().is_empty());
    }
}

#[test]
fn bad_simulation_value_names_file_line_and_field() {
    let (name, text) = examples()
        .into_iter()
        .find(|(n, _)| n == "helpdesk.toml")
        .unwrap();
    let bad = text.replacen("talk_time_secs = 300", "talk_time_sec = 300", 1);
    let line = bad
        .lines()
        .position(|l| l.starts_with("talk_time_sec ="))
        .unwrap()
        + 1;
    let err = parse_simulation(&name, &bad).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("helpdesk.toml:{line}:")),
        "{shown}"
    );
    assert!(
        shown.contains("simulation.queues.support.talk_time_sec"),
        "{shown}"
    );
}

#[test]
fn bad_routing_value_names_file_line_and_field() {
    let (name, text) = examples()
        .into_iter()
        .find(|(n, _)| n == "helpdesk.toml")
        .unwrap();
    let bad = text.replacen(
        "strategy = \"round_robin\"",
        "strategy = \"round_robbin\"",
        1,
    );
    let line = bad
        .lines()
        .position(|l| l.contains("round_robbin"))
        .unwrap()
        + 1;
    let err = RoutingConfig::load(&bad, &name).unwrap_err().to_string();
    assert!(err.starts_with(&format!("helpdesk.toml:{line}:")), "{err}");
    assert!(err.contains("round_robbin"), "{err}");
}
