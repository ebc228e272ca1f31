//! The harness's power: for each planted bug, the scenario that should expose
//! it, the checker that should report it, and measurements of how many seeds
//! that takes (`sim power`, which writes `reports/harness-power.md`).

use std::fmt::Write as _;
use std::ops::Range;

use sluice::plant::Bug;

use crate::runner::{self, SeedOutcome};
use crate::scenario::Scenario;
use crate::shrink;

/// Where a planted bug should be caught, and by which checker.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub bug: Bug,
    /// A scenario in `scenarios/` whose workload and faults reach the bug.
    pub scenario: &'static str,
    /// The checker whose property the bug breaks.
    pub checker: &'static str,
}

/// One target per planted bug, in `Bug::ALL` order.
pub const TARGETS: [Target; 28] = [
    Target {
        bug: Bug::AckBeforeFsync,
        scenario: "balances",
        checker: "lost-write",
    },
    Target {
        bug: Bug::RecoveryKeepsTornTail,
        scenario: "power-loss",
        checker: "intact-reads",
    },
    Target {
        bug: Bug::FetchBeyondHighWatermark,
        scenario: "balances",
        checker: "offset-commits",
    },
    Target {
        bug: Bug::NoIdempotentDedup,
        scenario: "orders",
        checker: "duplicate",
    },
    Target {
        bug: Bug::StaleGenerationCommit,
        scenario: "ingest",
        checker: "offset-commits",
    },
    Target {
        bug: Bug::CommitBeforeProcess,
        scenario: "fanout",
        checker: "offset-commits",
    },
    Target {
        bug: Bug::KeepRevokedPartitions,
        scenario: "slow-consumer",
        checker: "offset-commits",
    },
    Target {
        bug: Bug::OffByOneCommit,
        scenario: "fanout",
        checker: "offset-commits",
    },
    Target {
        bug: Bug::SequenceGapAccepted,
        scenario: "power-loss",
        checker: "lost-write",
    },
    Target {
        bug: Bug::SegmentRollLosesIndex,
        scenario: "ingest",
        checker: "lost-write",
    },
    Target {
        bug: Bug::RebalanceDeadlineIgnored,
        scenario: "fanout",
        checker: "group-liveness",
    },
    Target {
        bug: Bug::SessionExpirySkipped,
        scenario: "fanout",
        checker: "group-liveness",
    },
    Target {
        bug: Bug::VoteTwice,
        scenario: "ingest-cluster",
        checker: "single-leader",
    },
    Target {
        bug: Bug::HwIgnoresFollowers,
        scenario: "leader-flap",
        checker: "leader-completeness",
    },
    Target {
        bug: Bug::TruncateToHighWatermark,
        scenario: "leader-flap",
        checker: "truncation",
    },
    Target {
        bug: Bug::IgnoreDivergingEpoch,
        scenario: "controller-churn",
        checker: "replica-agreement",
    },
    Target {
        bug: Bug::LeaderEpochNotBumped,
        scenario: "failover",
        checker: "single-leader",
    },
    Target {
        bug: Bug::AckBeforeReplication,
        scenario: "leader-flap",
        checker: "min-isr",
    },
    Target {
        bug: Bug::HwBelowMinIsr,
        scenario: "controller-churn",
        checker: "min-isr",
    },
    Target {
        bug: Bug::NoEpochEntryOnElection,
        scenario: "isr-squeeze",
        checker: "truncation",
    },
    Target {
        bug: Bug::UncleanElection,
        scenario: "isr-squeeze",
        checker: "leader-completeness",
    },
    Target {
        bug: Bug::SkipTruncationSameLeader,
        scenario: "isr-squeeze",
        checker: "replica-agreement",
    },
    Target {
        bug: Bug::FollowerSkipsProducerState,
        scenario: "fsync-window",
        checker: "duplicate",
    },
    Target {
        bug: Bug::CommitPriorEpochByCount,
        scenario: "controller-churn",
        checker: "metadata-agreement",
    },
    Target {
        bug: Bug::RejoinWithStaleBrokerEpoch,
        scenario: "follower-power-cycle",
        checker: "unclean-exclusion",
    },
    Target {
        bug: Bug::IsrNeverShrinks,
        scenario: "replica-cut",
        checker: "isr-shrink",
    },
    Target {
        bug: Bug::CleanerDropsLatest,
        scenario: "compaction",
        checker: "compacted-view",
    },
    Target {
        bug: Bug::TombstoneDroppedEarly,
        scenario: "compaction",
        checker: "compacted-view",
    },
];

pub fn target(bug: Bug) -> Target {
    *TARGETS
        .iter()
        .find(|target| target.bug == bug)
        .expect("every bug has a target")
}

pub fn load(name: &str) -> anyhow::Result<Scenario> {
    Scenario::load(&runner::locate(name))
}

/// The first seed of a range that exposed a bug.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Seeds run, the detecting one included.
    pub seeds_run: u64,
    pub seed: u64,
    /// Every checker that failed on that seed.
    pub failed: Vec<&'static str>,
    /// The target checker's first finding.
    pub finding: String,
    /// Simulated milliseconds it took: every earlier seed's whole run, and
    /// the detecting run up to the last entry of the first finding.
    pub simulated_ms: u64,
}

fn finding(outcome: &SeedOutcome, checker: &str) -> Option<String> {
    outcome
        .verdicts
        .iter()
        .find(|verdict| verdict.checker == checker && !verdict.valid)
        .map(|verdict| {
            verdict
                .anomalies
                .first()
                .map_or_else(|| verdict.summary.clone(), |a| a.description.clone())
        })
}

/// Runs `seeds` in order with `target.bug` planted until one fails the
/// target checker. `None` if none does.
pub fn detect(target: &Target, scenario: &Scenario, seeds: Range<u64>) -> Option<Detection> {
    let start = seeds.start;
    let mut simulated_ms = 0;
    for seed in seeds {
        let outcome = runner::run_seed_planted(scenario, seed, Some(target.bug));
        if let Some(finding) = finding(&outcome, target.checker) {
            return Some(Detection {
                seeds_run: seed - start + 1,
                seed,
                failed: outcome.failed_checkers(),
                finding,
                simulated_ms: simulated_ms + shown_at_ms(&outcome, target.checker),
            });
        }
        simulated_ms += outcome.simulated_ms;
    }
    None
}

/// When the target checker's first anomaly became visible in a run: the
/// time of the latest entry it names (the whole run if it names none).
fn shown_at_ms(outcome: &SeedOutcome, checker: &str) -> u64 {
    outcome
        .verdicts
        .iter()
        .find(|verdict| verdict.checker == checker && !verdict.valid)
        .and_then(|verdict| verdict.anomalies.first())
        .and_then(|anomaly| anomaly.entries.iter().max())
        .and_then(|index| outcome.history.get(usize::try_from(*index).ok()?))
        .map_or(outcome.simulated_ms, |entry| entry.time_ms)
}

/// What `sim power` measured for one bug.
pub struct BugPower {
    pub target: Target,
    pub ranges: Vec<(Range<u64>, Option<Detection>)>,
    /// The same seeds without the bug: (runs, failures).
    pub clean: (u64, Vec<u64>),
    pub shrunk: Option<Result<shrink::Shrunk, String>>,
}

pub fn measure(target: Target, ranges: &[Range<u64>], runs_max: usize) -> anyhow::Result<BugPower> {
    let scenario = load(target.scenario)?;
    let mut measured = Vec::new();
    let mut clean_runs = 0;
    let mut clean_failures = Vec::new();
    for range in ranges {
        let detection = detect(&target, &scenario, range.clone());
        let checked = detection
            .as_ref()
            .map_or(range.clone(), |d| range.start..d.seed + 1);
        for seed in checked {
            clean_runs += 1;
            if runner::run_seed(&scenario, seed).outcome != crate::report::Outcome::Pass {
                clean_failures.push(seed);
            }
        }
        measured.push((range.clone(), detection));
    }
    let shrunk = measured
        .iter()
        .find_map(|(_, detection)| detection.as_ref())
        .map(|detection| {
            shrink::shrink(
                &scenario,
                detection.seed,
                Some(target.bug),
                Some(target.checker),
                runs_max,
                &mut |_| {},
            )
            .map_err(|error| error.to_string())
        });
    Ok(BugPower {
        target,
        ranges: measured,
        clean: (clean_runs, clean_failures),
        shrunk,
    })
}

fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    (!values.is_empty()).then(|| values[(values.len() - 1) / 2])
}

/// Renders the report. `command` is the command that regenerates it.
pub fn render(results: &[BugPower], ranges: &[Range<u64>], command: &str, commit: &str) -> String {
    let mut out = String::new();
    let ranges_text: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}..{}", r.start, r.end))
        .collect();
    let _ = writeln!(out, "# Harness power: planted bugs\n");
    let _ = writeln!(
        out,
        "Regenerate with `{command}` (release build; the numbers are deterministic: \
         the same commit gives the same report). Measured at commit `{commit}`.\n"
    );
    let _ = writeln!(
        out,
        "Each bug is planted in the scenario whose workload reaches it (`sim power` uses \
         `sluice_sim::power::TARGETS`). For every seed range ({}) the seeds run in order until \
         the expected checker fails; *seeds needed* counts the runs up to and including that \
         one, and *simulated s to find* adds up the simulated time of the runs before it and of \
         that run up to the entry that completed the first finding. The same seeds, run without the bug, must all pass (*clean*). The first detecting \
         seed is then shrunk with `sim shrink` to the smallest scripted schedule that still \
         fails the same checker.\n",
        ranges_text.join(", ")
    );
    let _ = writeln!(
        out,
        "| bug | scenario | checker | detected | seeds needed (median / max) | simulated s to find (median / max) | also failed | clean | shrunk schedule |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for result in results {
        let mut needed: Vec<u64> = result
            .ranges
            .iter()
            .filter_map(|(_, d)| d.as_ref().map(|d| d.seeds_run))
            .collect();
        let detected = needed.len();
        let max = needed.iter().copied().max();
        let needed_median = median(&mut needed);
        let mut seconds: Vec<u64> = result
            .ranges
            .iter()
            .filter_map(|(_, d)| d.as_ref().map(|d| d.simulated_ms / 1000))
            .collect();
        let seconds_max = seconds.iter().copied().max();
        let seconds_median = median(&mut seconds);
        let mut also: Vec<&str> = result
            .ranges
            .iter()
            .filter_map(|(_, d)| d.as_ref())
            .flat_map(|d| d.failed.iter().copied())
            .filter(|c| *c != result.target.checker)
            .collect();
        also.sort_unstable();
        also.dedup();
        let (clean_runs, clean_failures) = &result.clean;
        let clean = if clean_failures.is_empty() {
            format!("{clean_runs}/{clean_runs} pass")
        } else {
            format!(
                "{}/{clean_runs} pass (failed: {clean_failures:?})",
                clean_runs - clean_failures.len() as u64
            )
        };
        let shrunk = match &result.shrunk {
            Some(Ok(s)) => format!(
                "{} → {} faults, {} → {} producers, {} → {} consumers ({} runs)",
                s.original.faults,
                s.shrunk.faults,
                s.original.producers,
                s.shrunk.producers,
                s.original.consumers,
                s.shrunk.consumers,
                s.runs
            ),
            Some(Err(error)) => format!("not shrunk: {error}"),
            None => "not detected".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {detected}/{} ranges | {} / {} | {} / {} | {} | {clean} | {shrunk} |",
            result.target.bug,
            result.target.scenario,
            result.target.checker,
            result.ranges.len(),
            needed_median.map_or("-".to_string(), |m| m.to_string()),
            max.map_or("-".to_string(), |m| m.to_string()),
            seconds_median.map_or("-".to_string(), |m| m.to_string()),
            seconds_max.map_or("-".to_string(), |m| m.to_string()),
            if also.is_empty() {
                "-".to_string()
            } else {
                also.join(", ")
            },
        );
    }
    let _ = writeln!(out, "\n## First findings\n");
    let _ = writeln!(
        out,
        "The expected checker's first anomaly at the first detecting seed, with the command \
         that reproduces it.\n"
    );
    for result in results {
        let first = result.ranges.iter().find_map(|(_, d)| d.as_ref());
        match first {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "- `{}`: {}\n  (`cargo sim run {} --seed {} --plant {}`)",
                    result.target.bug, d.finding, result.target.scenario, d.seed, result.target.bug
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "- `{}`: not detected in the ranges above",
                    result.target.bug
                );
            }
        }
    }
    let regressions = runner::regression_scenarios();
    let _ = writeln!(out, "\n## Committed regression scenarios\n");
    let _ = writeln!(
        out,
        "Shrunk by `sim shrink` and run by `cargo test` (`sim/tests/regressions.rs`): each \
         passes as it is and fails its checker with its bug planted.\n"
    );
    let _ = writeln!(out, "| file | guards | checker | shrunk to | from |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for path in regressions {
        let Ok(scenario) = Scenario::load(&path) else {
            continue;
        };
        let Some(regression) = &scenario.regression else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `scenarios/regressions/{name}` | `{}` | `{}` | {} | {} |",
            regression.guards,
            regression.checker,
            shrink::size(&scenario),
            regression.shrunk_from
        );
    }
    out
}
