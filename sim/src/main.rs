//! The `sim` command: run, sweep and check deterministic simulations of sluice.
//!
//! `cargo sim run crawler --seed 7` runs one seed and prints `seed:` first and
//! `trace-hash:` last; on failure it prints the command that reproduces it.
//! With no arguments, `sim` sweeps every scenario over the default seeds.
//! Exit codes: 0 pass, 1 operational error, 2 usage, 3 safety violation,
//! 4 liveness failure, 5 crash or panic.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::{Parser, Subcommand};
use sluice::plant::Bug;
use sluice_sim::history;
use sluice_sim::report::Outcome;
use sluice_sim::runner::{self, SeedOutcome};
use sluice_sim::scenario::Scenario;

/// The simulated broker decodes frames like the real one; keep a malformed
/// frame from aborting the process (see `sluice::alloc`).
#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

/// Seeds the bare `sim` command sweeps per scenario.
const DEFAULT_SEEDS: u64 = 10;

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Deterministic simulation of sluice under faults"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed of one scenario.
    Run {
        /// A scenario name (in scenarios/) or a path to a .toml file.
        scenario: String,
        /// Required, except for regression scenarios, which pin their seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Plant a named bug in sluice for this run (see `sim bugs`).
        #[arg(long, value_parser = parse_bug)]
        plant: Option<Bug>,
        /// Write the history as JSON Lines.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Write a readable trace, one line per event (diff two runs with it).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Keep only these hosts' lines in the trace (repeatable).
        #[arg(long = "trace-host")]
        trace_hosts: Vec<String>,
        /// Keep only lines about these partitions, as topic-partition (repeatable).
        #[arg(long = "trace-partition")]
        trace_partitions: Vec<String>,
        /// Print the resolved knobs and the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run many seeds, in parallel.
    Sweep {
        /// Scenario names or paths; all of scenarios/ when none.
        scenarios: Vec<String>,
        /// Seed range A..B (B exclusive).
        #[arg(long, default_value = "0..10")]
        seeds: String,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Run only the K-th of N slices of the seed range (1-based), e.g. 2/4.
        #[arg(long)]
        shard: Option<String>,
        /// Plant a named bug in sluice for every run (see `sim bugs`).
        #[arg(long, value_parser = parse_bug)]
        plant: Option<Bug>,
        /// Also write every run as a JSON line (scenario, seed, outcome,
        /// findings, trace_hash, timings) here, for `sim merge`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Merge the --out files of a sharded sweep: the summary table and
    /// repro lines of one sweep, and its exit code.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the bugs `--plant` can plant.
    Bugs,
    /// Measure how fast each planted bug is caught, and write the report.
    Power {
        /// Seed ranges, each searched from its start until the bug is caught.
        #[arg(
            long,
            default_value = "0..10,1000..1010,2000..2010,3000..3010,4000..4010"
        )]
        ranges: String,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Shrink budget per bug, in runs.
        #[arg(long, default_value_t = sluice_sim::shrink::RUNS_MAX_DEFAULT)]
        runs_max: usize,
        #[arg(long, default_value = "reports/harness-power.md")]
        out: PathBuf,
    },
    /// Shrink a failing seed to a minimal scripted scenario that still fails
    /// the same checker, and write it for scenarios/regressions/.
    Shrink {
        /// A scenario name (in scenarios/) or a path to a .toml file.
        scenario: String,
        #[arg(long)]
        seed: u64,
        /// The bug planted in the failing run.
        #[arg(long, value_parser = parse_bug)]
        plant: Option<Bug>,
        /// The checker that must keep failing; by default the first that failed.
        #[arg(long)]
        checker: Option<String>,
        /// Give up shrinking after this many runs.
        #[arg(long, default_value_t = sluice_sim::shrink::RUNS_MAX_DEFAULT)]
        runs_max: usize,
        /// Where to write the scenario; by default
        /// scenarios/regressions/<bug>-<scenario>-<seed>.toml.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a history file recorded elsewhere.
    Check { history: PathBuf },
}

/// The commit this binary was built from (recorded by `build.rs`).
fn commit() -> &'static str {
    env!("SLUICE_SIM_COMMIT")
}

/// A mistake in how `sim` was called: exit code 2, like clap's own.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Finds a scenario by name or path; an unknown name is a usage error that
/// lists the scenarios there are.
fn find_scenario(argument: &str) -> anyhow::Result<(PathBuf, Scenario)> {
    let path = runner::locate(argument);
    if !path.exists() {
        let names: Vec<String> = runner::all_scenarios()
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        return Err(usage(format!(
            "no scenario {argument:?} ({} does not exist); the scenarios are: {}",
            path.display(),
            names.join(", ")
        )));
    }
    let scenario = Scenario::load(&path)?;
    Ok((path, scenario))
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    Bug::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
        format!("unknown bug {name:?}; one of: {}", names.join(", "))
    })
}

fn repro(scenario: &str, seed: u64, plant: Option<Bug>) -> String {
    sluice_sim::sweep::repro(scenario, seed, plant.map(|bug| bug.name()))
}

fn print_verdicts(outcome: &SeedOutcome) {
    for verdict in &outcome.verdicts {
        let status = if verdict.valid { "ok  " } else { "FAIL" };
        println!("  {status} {:<22} {}", verdict.checker, verdict.summary);
        // The verdict holds at most MAX_ANOMALIES, as its summary says.
        for anomaly in &verdict.anomalies {
            println!(
                "         - {} (entries {:?})",
                anomaly.description, anomaly.entries
            );
        }
    }
}

struct RunOutputs {
    history: Option<PathBuf>,
    trace: Option<PathBuf>,
    filter: sluice_sim::trace::TraceFilter,
    json: bool,
}

fn run_one(
    scenario_arg: &str,
    seed: Option<u64>,
    plant: Option<Bug>,
    outputs: RunOutputs,
) -> anyhow::Result<i32> {
    let RunOutputs {
        history: history_path,
        trace,
        filter,
        json,
    } = outputs;
    let (path, scenario) = find_scenario(scenario_arg)?;
    let seed = seed
        .or(scenario.regression.as_ref().map(|r| r.seed))
        .ok_or_else(|| usage(format!("--seed is required for {}", path.display())))?;
    // With --json, stdout is one JSON object and nothing else.
    if !json {
        println!("seed: {seed}");
        println!("commit: {}", commit());
        println!("scenario: {} ({})", scenario.name, path.display());
        if let Some(bug) = plant {
            println!("plant: {bug}");
        }
    }
    let outcome = runner::run_seed_with(&scenario, seed, plant, trace.is_some());
    let mut written = Vec::new();
    if let Some(path) = history_path {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        history::write_jsonl(&outcome.history, &mut file)?;
        written.push(format!("history: {}", path.display()));
    }
    if let Some(path) = trace {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        sluice_sim::trace::write(&outcome.history, &outcome.verdicts, &filter, &mut file)?;
        written.push(format!("trace: {}", path.display()));
    }
    let repro = (outcome.outcome != Outcome::Pass).then(|| repro(scenario_arg, seed, plant));
    if json {
        let document = serde_json::json!({
            "seed": seed,
            "commit": commit(),
            "scenario": scenario.name,
            "path": path.display().to_string(),
            "plant": plant.map(|bug| bug.name()),
            "resolved": outcome.resolved,
            "verdicts": outcome.verdicts,
            "report": outcome.report,
            "panic": outcome.panic,
            "stuck": outcome.stuck,
            "steps": outcome.steps,
            "simulated_ms": outcome.simulated_ms,
            "wall_ms": outcome.wall_ms,
            "outcome": outcome.outcome,
            "repro": repro,
            "trace_hash": outcome.trace_hash,
        });
        println!("{}", serde_json::to_string(&document)?);
        for line in written {
            eprintln!("{line}");
        }
        return Ok(outcome.outcome.exit_code());
    }
    for line in written {
        println!("{line}");
    }
    print_verdicts(&outcome);
    if let Some(report) = &outcome.report {
        let c = &report.counts;
        println!(
            "counts: sent {} acked {} failed {} indeterminate {} polled {} commits {} faults {}",
            c.sent,
            c.acknowledged,
            c.send_failed,
            c.send_indeterminate,
            c.polled_records,
            c.commits,
            c.faults
        );
        println!(
            "latency (simulated ms): produce->ack p50 {} p99 {} max {}; end-to-end p50 {} p99 {} max {}",
            report.produce_to_ack.p50_ms,
            report.produce_to_ack.p99_ms,
            report.produce_to_ack.max_ms,
            report.end_to_end.p50_ms,
            report.end_to_end.p99_ms,
            report.end_to_end.max_ms
        );
    }
    if let Some(panic) = &outcome.panic {
        println!("panic: {panic}");
    }
    if outcome.stuck {
        println!("stuck: the final reads did not complete");
    }
    println!(
        "simulated: {:.1}s in {} steps, wall {:.2}s",
        outcome.simulated_ms as f64 / 1000.0,
        outcome.steps,
        outcome.wall_ms as f64 / 1000.0
    );
    println!("outcome: {:?}", outcome.outcome);
    if let Some(repro) = repro {
        println!("repro: {repro}");
    }
    println!("trace-hash: {}", outcome.trace_hash);
    Ok(outcome.outcome.exit_code())
}

fn parse_range(text: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| usage(format!("seed range {text:?}: expected A..B")))?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u64>()
            .map_err(|_| usage(format!("seed range {text:?}: {n:?} is not a seed")))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a >= b {
        return Err(usage(format!("seed range {text}: empty")));
    }
    Ok((a, b))
}

fn parse_shard(text: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || usage(format!("--shard {text}: expected K/N with 1 <= K <= N"));
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (u64, u64) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n < 1 || !(1..=n).contains(&k) {
        return Err(bad());
    }
    Ok((k, n))
}

struct SweepOptions {
    seeds: String,
    jobs: usize,
    shard: Option<String>,
    plant: Option<Bug>,
    out: Option<PathBuf>,
}

fn sweep(scenario_args: Vec<String>, options: SweepOptions) -> anyhow::Result<i32> {
    let SweepOptions {
        seeds,
        jobs,
        shard,
        plant,
        out,
    } = options;
    let (start, end) = parse_range(&seeds)?;
    let (k, n) = shard
        .as_deref()
        .map(parse_shard)
        .transpose()?
        .unwrap_or((1, 1));
    let loaded: Vec<(PathBuf, Scenario)> = if scenario_args.is_empty() {
        runner::all_scenarios()
            .into_iter()
            .map(|path| Scenario::load(&path).map(|scenario| (path, scenario)))
            .collect::<anyhow::Result<_>>()?
    } else {
        scenario_args
            .iter()
            .map(|s| find_scenario(s))
            .collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(!loaded.is_empty(), "no scenarios found");
    // Shards split the seed range, not the runs, so shard K of N runs the
    // same seeds of every scenario and N shards partition the sweep.
    let mut work = Vec::new();
    let mut scenarios = Vec::new();
    for (path, scenario) in loaded {
        for seed in (start..end).filter(|seed| (seed - start) % n == k - 1) {
            work.push((scenarios.len(), seed));
        }
        scenarios.push((
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            scenario,
        ));
    }
    println!("commit: {}", commit());
    println!(
        "sweep: {} scenarios, seeds {start}..{end}, shard {k}/{n}, {} runs, {jobs} jobs{}",
        scenarios.len(),
        work.len(),
        plant.map_or(String::new(), |bug| format!(", plant {bug}"))
    );
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failing = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, sluice_sim::sweep::RunRecord)>> = Mutex::new(Vec::new());
    std::env::set_var("SLUICE_SIM_QUIET_PANICS", "1");
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some((index, seed)) = work.get(at).copied() else {
                    break;
                };
                let (name, scenario) = &scenarios[index];
                let outcome = runner::run_seed_planted(scenario, seed, plant);
                let failed = outcome.outcome != Outcome::Pass;
                let record = sluice_sim::sweep::RunRecord::new(name, &outcome);
                results.lock().expect("results lock").push((at, record));
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                let failures =
                    failing.fetch_add(usize::from(failed), Ordering::Relaxed) + usize::from(failed);
                let width = 30;
                let filled = finished * width / work.len().max(1);
                let line = format!(
                    "[{}{}] {finished}/{} runs, {failures} failing{}",
                    "=".repeat(filled),
                    " ".repeat(width - filled),
                    work.len(),
                    if failed { " (new failure)" } else { "" }
                );
                // Redraw in place on a terminal; in a log, a line per tenth.
                if interactive {
                    eprint!("\r{line:<70}");
                } else if finished * 10 / work.len().max(1)
                    != (finished - 1) * 10 / work.len().max(1)
                    || failed
                {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
            });
        }
    });
    if interactive {
        eprintln!();
    }
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(at, _)| *at);
    let records: Vec<sluice_sim::sweep::RunRecord> =
        results.into_iter().map(|(_, record)| record).collect();
    if let Some(path) = out {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?,
        );
        sluice_sim::sweep::write_records(&records, &mut file)?;
        file.flush()?;
        println!("runs: {}", path.display());
    }
    sluice_sim::sweep::summarise(&records, &mut std::io::stdout())
}

fn merge(files: &[PathBuf]) -> anyhow::Result<i32> {
    let mut records = Vec::new();
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        records.extend(sluice_sim::sweep::read_records(
            &mut std::io::BufReader::new(file),
            &path.display().to_string(),
        )?);
    }
    println!("merge: {} files, {} runs", files.len(), records.len());
    sluice_sim::sweep::summarise(&records, &mut std::io::stdout())
}

fn shrink(
    scenario_arg: &str,
    seed: u64,
    plant: Option<Bug>,
    checker: Option<&str>,
    runs_max: usize,
    out: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let (path, scenario) = find_scenario(scenario_arg)?;
    let source = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| scenario.name.clone());
    println!("seed: {seed}");
    println!("scenario: {} ({})", scenario.name, path.display());
    if let Some(bug) = plant {
        println!("plant: {bug}");
    }
    std::env::set_var("SLUICE_SIM_QUIET_PANICS", "1");
    let shrunk =
        sluice_sim::shrink::shrink(&scenario, seed, plant, checker, runs_max, &mut |line| {
            println!("  {line}")
        })?;
    let text = sluice_sim::shrink::regression_file(&shrunk, &source, plant)?;
    let out = out.unwrap_or_else(|| {
        let guards = plant.map_or(shrunk.checker.to_string(), |bug| bug.name().to_string());
        runner::regressions_dir().join(format!("{guards}-{source}-{seed}.toml"))
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, text)?;
    println!(
        "shrunk in {} runs: {} -> {}",
        shrunk.runs, shrunk.original, shrunk.shrunk
    );
    println!("wrote: {}", out.display());
    Ok(0)
}

fn power(ranges_arg: &str, jobs: usize, runs_max: usize, out: PathBuf) -> anyhow::Result<i32> {
    use sluice_sim::power;
    let ranges: Vec<std::ops::Range<u64>> = ranges_arg
        .split(',')
        .map(|text| parse_range(text).map(|(a, b)| a..b))
        .collect::<anyhow::Result<_>>()?;
    std::env::set_var("SLUICE_SIM_QUIET_PANICS", "1");
    println!("commit: {}", commit());
    println!(
        "power: {} bugs over seed ranges {ranges_arg}, {jobs} jobs",
        power::TARGETS.len()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, power::BugPower)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(target) = power::TARGETS.get(at).copied() else {
                    break;
                };
                match power::measure(target, &ranges, runs_max) {
                    Ok(result) => {
                        let detected = result.ranges.iter().filter(|(_, d)| d.is_some()).count();
                        eprintln!(
                            "{:<28} {} in {}/{} ranges",
                            target.bug.name(),
                            target.checker,
                            detected,
                            ranges.len()
                        );
                        results.lock().expect("results lock").push((at, result));
                    }
                    Err(error) => errors
                        .lock()
                        .expect("errors lock")
                        .push(format!("{}: {error:#}", target.bug)),
                }
            });
        }
    });
    let errors = errors.into_inner().expect("errors lock");
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(at, _)| *at);
    let results: Vec<power::BugPower> = results.into_iter().map(|(_, r)| r).collect();
    let command = if ranges_arg == "0..10,1000..1010,2000..2010,3000..3010,4000..4010" {
        "cargo sim power".to_string()
    } else {
        format!("cargo sim power --ranges {ranges_arg}")
    };
    let text = power::render(&results, &ranges, &command, commit());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &text)?;
    println!("{text}");
    println!("wrote: {}", out.display());
    let undetected = results
        .iter()
        .filter(|r| r.ranges.iter().all(|(_, d)| d.is_none()))
        .count();
    let unclean = results.iter().filter(|r| !r.clean.1.is_empty()).count();
    Ok(if undetected + unclean > 0 { 3 } else { 0 })
}

fn check(path: PathBuf) -> anyhow::Result<i32> {
    let file =
        std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let history = history::read_jsonl(&mut std::io::BufReader::new(file))?;
    let checkers: Vec<String> = history
        .iter()
        .find_map(|entry| match &entry.kind {
            history::Kind::Event {
                event: history::Event::Meta { checkers, .. },
            } => Some(checkers.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let verdicts = sluice_sim::checkers::run(&history, &checkers);
    for verdict in &verdicts {
        let status = if verdict.valid { "ok  " } else { "FAIL" };
        println!("{status} {:<22} {}", verdict.checker, verdict.summary);
        for anomaly in &verdict.anomalies {
            println!(
                "     - {} (entries {:?})",
                anomaly.description, anomaly.entries
            );
        }
    }
    let outcome = Outcome::from_verdicts(&verdicts);
    println!("outcome: {outcome:?}");
    Ok(outcome.exit_code())
}

fn main() -> ExitCode {
    sluice::cli_tools::quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run {
            scenario,
            seed,
            plant,
            history,
            trace,
            trace_hosts,
            trace_partitions,
            json,
        }) => run_one(
            &scenario,
            seed,
            plant,
            RunOutputs {
                history,
                trace,
                filter: sluice_sim::trace::TraceFilter {
                    hosts: trace_hosts,
                    partitions: trace_partitions,
                },
                json,
            },
        ),
        Some(Command::Sweep {
            scenarios,
            seeds,
            jobs,
            shard,
            plant,
            out,
        }) => sweep(
            scenarios,
            SweepOptions {
                seeds,
                jobs,
                shard,
                plant,
                out,
            },
        ),
        Some(Command::Merge { files }) => merge(&files),
        Some(Command::Shrink {
            scenario,
            seed,
            plant,
            checker,
            runs_max,
            out,
        }) => shrink(&scenario, seed, plant, checker.as_deref(), runs_max, out),
        Some(Command::Power {
            ranges,
            jobs,
            runs_max,
            out,
        }) => power(&ranges, jobs, runs_max, out),
        Some(Command::Bugs) => {
            for bug in Bug::ALL {
                println!("{:<28} {}", bug.name(), bug.description());
            }
            Ok(0)
        }
        Some(Command::Check { history }) => check(history),
        None => sweep(
            Vec::new(),
            SweepOptions {
                seeds: format!("0..{DEFAULT_SEEDS}"),
                jobs: 2,
                shard: None,
                plant: None,
                out: None,
            },
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(if error.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            })
        }
    }
}
