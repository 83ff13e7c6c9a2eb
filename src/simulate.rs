//! `zentrale simulate`: the what-if simulator's command line — reading the routing file,
//! the progress bar, the text report and the CSV file.
//!
//! All simulation logic is in `acd_core::sim` (sans-IO, seeded, deterministic); this module
//! only does the I/O around it, so the same simulation runs unchanged in tests.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use acd_core::RoutingConfig;
use acd_core::Timestamp;
use acd_core::erlang::{StaffingTarget, agents_needed};
use acd_core::sim::{Simulation, parse_simulation};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Arguments of `zentrale simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Routing configuration (TOML) with a `[simulation]` table, e.g. examples/helpdesk.toml.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Simulated hours, from the file's `start_hour`.
    #[arg(long, default_value_t = 8.0)]
    pub hours: f64,
    /// Random seed: the same file and seed always give the same report.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Report interval in minutes (15, 30 or 60), overriding the file's `interval_minutes`.
    #[arg(long)]
    pub interval: Option<u32>,
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the simulation and prints the report.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let origin = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the routing configuration {origin}"))?;
    let routing = RoutingConfig::load(&text, &origin).map_err(|e| routing_error(&text, e))?;
    let mut sim_cfg = parse_simulation(&origin, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(minutes) = args.interval {
        anyhow::ensure!(
            [15, 30, 60].contains(&minutes),
            "--interval must be 15, 30 or 60 minutes, got {minutes}"
        );
        sim_cfg.interval_minutes = minutes;
    }
    anyhow::ensure!(
        !sim_cfg.queues.is_empty(),
        "{origin}: no traffic to simulate: add a [simulation.queues.<queue>] table (see examples/helpdesk.toml)"
    );
    let staffing = staffing_hints(&routing, &sim_cfg);

    let mut sim = Simulation::new(routing, sim_cfg, args.hours, args.seed)
        .with_context(|| format!("cannot simulate {origin}"))?;
    let (start, end) = sim.span();
    let total_s = end.ms_since(start) / 1000;
    let bar = ProgressBar::with_draw_target(
        Some(total_s),
        if args.quiet || !std::io::stdout().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("simulating {bar:40} {pos}/{len} simulated s ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let wall = std::time::Instant::now();
    // Advance in steps of 1/500 of the run (at least a simulated minute) to update the bar.
    let step_ms = (end.ms_since(start) / 500).max(60_000);
    let mut t = start;
    while t < end {
        t = Timestamp(t.as_millis().saturating_add(step_ms).min(end.as_millis()));
        sim.run_until(t)?;
        bar.set_position(t.ms_since(start) / 1000);
    }
    bar.finish_and_clear();
    let report = sim.report();
    let elapsed = wall.elapsed();

    let mut out = String::new();
    macro_rules! outln {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    outln!(
        "zentrale simulate: {origin}, {:.2} h from {:02}:00 UTC, seed {}, {} contacts, {:.2} s wall time",
        report.hours,
        report.start_hour,
        args.seed,
        report.contacts,
        elapsed.as_secs_f64()
    );
    outln!(
        "Observed vs predicted: C = Erlang C, A = Erlang A (with the configured patience); \
         EWT|e| = mean absolute error of the wait announced at entry, bias = announced − actual (s)."
    );
    out.push('\n');
    out.push_str(&report.to_text());
    if !staffing.is_empty() {
        out.push('\n');
        outln!(
            "Erlang C staffing for the peak hour (80 % of contacts within the queue's threshold, occupancy ≤ 90 %):"
        );
        for line in staffing {
            outln!("  {line}");
        }
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.to_csv())
            .with_context(|| format!("cannot write the CSV report to {}", path.display()))?;
        outln!();
        outln!("CSV written to {}", path.display());
    }
    // One write, and a closed pipe (`| head`) is not an error worth a panic.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The engine's configuration error, with the dotted field added when toml gave a line
/// (its message names the bad value but not always the key).
fn routing_error(text: &str, e: acd_core::ConfigError) -> anyhow::Error {
    if let acd_core::ConfigError::Parse {
        file,
        line,
        column,
        message,
    } = &e
        && let Some(field) = acd_core::sim::config::field_at_line(text, *line)
    {
        return anyhow::anyhow!("{file}:{line}:{column}: field `{field}`: {message}");
    }
    anyhow::anyhow!("{e}")
}

/// One line per queue: the agents Erlang C asks for at the queue's peak hour.
fn staffing_hints(routing: &RoutingConfig, sim: &acd_core::sim::SimulationConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (id, traffic) in &sim.queues {
        let Some(q) = routing.queues.get(id) else {
            continue;
        };
        let peak = match (&traffic.contacts_per_hour, &traffic.hourly_profile) {
            (Some(v), _) => *v,
            (None, Some(p)) => p.iter().copied().fold(0.0, f64::max),
            (None, None) => 0.0,
        };
        let aht = traffic.talk_time_secs + q.wrap_up_s as f64;
        let target = StaffingTarget {
            contacts: peak,
            interval_secs: 3600.0,
            aht_secs: aht,
            service_level: 0.8,
            threshold_secs: q.service_level_s as f64,
            max_occupancy: 0.9,
        };
        let members = routing
            .agents
            .values()
            .filter(|a| a.queues.iter().any(|m| &m.queue == id))
            .count();
        match agents_needed(&target) {
            Ok(s) => out.push(format!(
                "{id}: {peak:.0} contacts/h × {aht:.0} s = {:.1} Erlangs → {} agents (SL {:.1} %, ASA {:.1} s); {members} agents are members{}",
                s.traffic,
                s.agents,
                s.service_level * 100.0,
                s.average_speed_of_answer,
                if traffic.channel == acd_core::Channel::Voice {
                    ""
                } else {
                    " (non-voice: agents hold several contacts, divide by their capacity)"
                },
            )),
            Err(e) => out.push(format!("{id}: {e}")),
        }
    }
    out
}
