//! `zentrale simulate` end to end: the real binary reads an example, prints the report and
//! writes the CSV; a broken file gets an error naming file, line and field.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zentrale-simulate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn simulate_prints_the_report_and_writes_csv() {
    let csv = scratch("helpdesk.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_zentrale"))
        .args(["simulate", "--config"])
        .arg(example("helpdesk.toml"))
        .args(["--hours", "2", "--seed", "5", "--csv"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "SL%", "C SL%", "A SL%", "ASA", "AHT", "Occ%", "EWT", "support", "billing", "total",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("interval_start,queue,offered,answered"),
        "{header}"
    );
    let columns = header.split(',').count();
    let rows: Vec<&str> = lines.collect();
    // Two hourly intervals × two queues, plus a total per queue.
    assert_eq!(rows.len(), 6, "{text}");
    assert!(
        rows.iter().all(|r| r.split(',').count() == columns),
        "{text}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("total,support,")),
        "{text}"
    );
}

#[test]
fn simulate_is_deterministic_per_seed() {
    let run = |seed: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_zentrale"))
            .args(["simulate", "--config"])
            .arg(example("helpdesk.toml"))
            .args(["--hours", "1", "--seed", seed])
            .output()
            .unwrap();
        assert!(out.status.success());
        // The first line carries the wall time; the table below must be identical.
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(run("9"), run("9"));
}

#[test]
fn simulate_names_file_line_and_field_of_a_bad_setting() {
    let text = std::fs::read_to_string(example("helpdesk.toml")).unwrap();
    let bad = text.replacen("patience_secs = 150", "patience_secs = \"long\"", 1);
    let line = bad.lines().position(|l| l.contains("\"long\"")).unwrap() + 1;
    let path = scratch("bad-helpdesk.toml");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zentrale"))
        .args(["simulate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("bad-helpdesk.toml:{line}:")),
        "{stderr}"
    );
    assert!(
        stderr.contains("simulation.queues.support.patience_secs"),
        "{stderr}"
    );
}
