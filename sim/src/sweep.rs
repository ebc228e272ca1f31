//! Sweeps: many seeds of many scenarios, in parallel on one machine or in
//! shards across many, and the summary a person reads.
//!
//! Each run becomes a [`RunRecord`]; `sim sweep --out FILE` writes them as
//! JSON Lines, and `sim merge FILES...` reads any number of such files (one
//! per shard) back into the same summary and exit code a single sweep gives.
//! So a CI matrix or a batch cluster runs the shards, and one last job
//! merges them.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::report::Outcome;
use crate::runner::SeedOutcome;

/// One run, as a sweep's output file holds it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario's file name without `.toml`, as `sim run` takes it.
    pub scenario: String,
    pub seed: u64,
    /// The planted bug's name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<String>,
    pub outcome: Outcome,
    /// The checkers that failed, each with its first anomaly.
    pub findings: Vec<Finding>,
    pub trace_hash: String,
    pub simulated_ms: u64,
    pub wall_ms: u64,
    pub steps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub checker: String,
    pub anomaly: String,
}

impl RunRecord {
    pub fn new(scenario: &str, outcome: &SeedOutcome) -> Self {
        let mut findings: Vec<Finding> = outcome
            .verdicts
            .iter()
            .filter(|verdict| !verdict.valid)
            .map(|verdict| Finding {
                checker: verdict.checker.to_string(),
                anomaly: verdict
                    .anomalies
                    .first()
                    .map_or_else(String::new, |anomaly| anomaly.description.clone()),
            })
            .collect();
        if let Some(panic) = &outcome.panic {
            findings.push(Finding {
                checker: "panic".to_string(),
                anomaly: panic.clone(),
            });
        }
        if outcome.stuck {
            findings.push(Finding {
                checker: "stuck".to_string(),
                anomaly: "the final reads did not complete".to_string(),
            });
        }
        Self {
            scenario: scenario.to_string(),
            seed: outcome.seed,
            plant: outcome.plant.map(|bug| bug.name().to_string()),
            outcome: outcome.outcome,
            findings,
            trace_hash: outcome.trace_hash.clone(),
            simulated_ms: outcome.simulated_ms,
            wall_ms: outcome.wall_ms,
            steps: outcome.steps,
        }
    }
}

pub fn write_records(records: &[RunRecord], out: &mut dyn Write) -> std::io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads one sweep output file; a bad line is an error naming it.
pub fn read_records(input: &mut dyn BufRead, name: &str) -> anyhow::Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .map_err(|error| anyhow::anyhow!("{name}: line {}: {error}", number + 1))?;
        records.push(record);
    }
    Ok(records)
}

/// The command that reproduces a run.
pub fn repro(scenario: &str, seed: u64, plant: Option<&str>) -> String {
    let plant = plant.map_or(String::new(), |bug| format!(" --plant {bug}"));
    format!("cargo run -p sluice-sim --release -- run {scenario} --seed {seed}{plant}")
}

/// The table and the failures of a set of runs, in scenario order then seed
/// order, and the worst outcome's exit code. A run that appears twice (two
/// overlapping shards) is an error: merged shards must partition a sweep.
pub fn summarise(records: &[RunRecord], out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut by_scenario: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for record in records {
        by_scenario
            .entry(record.scenario.as_str())
            .or_default()
            .push(record);
    }
    for runs in by_scenario.values_mut() {
        runs.sort_by_key(|run| (run.seed, run.plant.clone()));
        for pair in runs.windows(2) {
            anyhow::ensure!(
                (pair[0].seed, &pair[0].plant) != (pair[1].seed, &pair[1].plant),
                "{} seed {} appears twice",
                pair[0].scenario,
                pair[0].seed
            );
        }
    }
    // The scenario column fits the longest name, so the table stays aligned.
    let width = by_scenario
        .keys()
        .map(|name| name.len())
        .max()
        .unwrap_or(0)
        .max(16);
    writeln!(
        out,
        "{:<width$} {:>6} {:>6} {:>13} {:>15}",
        "SCENARIO", "SEEDS", "FAILED", "SEEDS/MIN", "SIM-S/WALL-S"
    )?;
    for (scenario, runs) in &by_scenario {
        let failed = runs
            .iter()
            .filter(|run| run.outcome != Outcome::Pass)
            .count();
        let wall_ms: u64 = runs.iter().map(|run| run.wall_ms).sum();
        let simulated_ms: u64 = runs.iter().map(|run| run.simulated_ms).sum();
        let wall_minutes = wall_ms as f64 / 60_000.0;
        writeln!(
            out,
            "{:<width$} {:>6} {:>6} {:>13.1} {:>15.1}",
            scenario,
            runs.len(),
            failed,
            if wall_minutes > 0.0 {
                runs.len() as f64 / wall_minutes
            } else {
                0.0
            },
            if wall_ms > 0 {
                simulated_ms as f64 / wall_ms as f64
            } else {
                0.0
            }
        )?;
    }
    let mut worst = Outcome::Pass;
    for runs in by_scenario.values() {
        for run in runs.iter().filter(|run| run.outcome != Outcome::Pass) {
            let checkers: Vec<&str> = run.findings.iter().map(|f| f.checker.as_str()).collect();
            writeln!(
                out,
                "FAILED {} seed {} ({:?}{}{}): {}",
                run.scenario,
                run.seed,
                run.outcome,
                if checkers.is_empty() { "" } else { " by " },
                checkers.join(", "),
                repro(&run.scenario, run.seed, run.plant.as_deref())
            )?;
            if run.outcome > worst {
                worst = run.outcome;
            }
        }
    }
    Ok(worst.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scenario: &str, seed: u64, outcome: Outcome) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            seed,
            plant: None,
            outcome,
            findings: if outcome == Outcome::Pass {
                Vec::new()
            } else {
                vec![Finding {
                    checker: "lost-write".into(),
                    anomaly: "v acked at t-0@3 was lost".into(),
                }]
            },
            trace_hash: format!("{seed:016x}"),
            simulated_ms: 60_000,
            wall_ms: 1_000,
            steps: 6_000,
        }
    }

    #[test]
    fn records_round_trip_and_summarise_with_repro_lines_and_the_worst_exit_code() {
        let records = vec![
            record("orders", 1, Outcome::Pass),
            record("orders", 2, Outcome::Safety),
            record("balances", 7, Outcome::Liveness),
        ];
        let mut text = Vec::new();
        write_records(&records, &mut text).unwrap();
        let back = read_records(&mut text.as_slice(), "shard").unwrap();
        assert_eq!(back, records);
        let mut summary = Vec::new();
        let code = summarise(&back, &mut summary).unwrap();
        assert_eq!(code, 3, "safety beats liveness");
        let summary = String::from_utf8(summary).unwrap();
        assert!(
            summary.contains(
                "FAILED orders seed 2 (Safety by lost-write): cargo run -p sluice-sim \
                 --release -- run orders --seed 2"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("orders                2      1"),
            "{summary}"
        );
    }

    #[test]
    fn overlapping_shards_are_refused() {
        let records = vec![
            record("orders", 1, Outcome::Pass),
            record("orders", 1, Outcome::Pass),
        ];
        let error = summarise(&records, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
    }
}
