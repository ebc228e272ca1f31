//! Project chores that need more than a one-line cargo alias:
//!
//! - `cargo xtask instructions`: the instruction-count gate CI runs.
//! - `cargo xtask perf-report --baseline 0.1.0`: the release performance
//!   report, comparing two revisions on one machine.
//!
//! This is a developer tool: it reads the wall clock and runs processes, and
//! none of it is ever part of the broker or the simulation.

mod instructions;
mod measure;
mod plot;
mod report;
mod revision;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sluice project chores")]
struct Cli {
    #[command(subcommand)]
    command: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Count instructions of the gate's benches under callgrind and compare
    /// them with sim/benches/instructions.toml; exits 1 on a regression.
    Instructions {
        /// Rewrite the baseline with this run's counts.
        #[arg(long, requires = "reason")]
        update: bool,
        /// One line on why the counts changed, kept in the baseline file.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Compare two revisions' benchmarks and simulation speed on this
    /// machine, and write reports/perf-<baseline>-vs-<current>.md.
    PerfReport(PerfReport),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    if let Err(error) = std::env::set_current_dir(&root) {
        eprintln!("error: entering {}: {error}", root.display());
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Chore::Instructions { update, reason } => instructions::run(update, reason),
        Chore::PerfReport(args) => perf_report(&root, args),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Paired rounds a report runs unless told otherwise.
const ROUNDS_DEFAULT: usize = 3;

#[derive(clap::Args)]
struct PerfReport {
    /// A version from reports/releases.toml, or any git revision.
    #[arg(long)]
    baseline: String,
    /// A git revision; the working tree as it is when omitted.
    #[arg(long)]
    current: Option<String>,
    /// Rounds; each runs every benchmark and sweep on the baseline, then the current revision.
    /// Three, so that a verdict needs three paired runs to agree.
    #[arg(long, default_value_t = ROUNDS_DEFAULT)]
    rounds: usize,
    /// Only these criterion bench targets (repeatable); all when omitted.
    #[arg(long = "bench")]
    benches: Vec<String>,
    /// Only benchmarks whose id contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Seeds each scenario's sweep runs, per round.
    #[arg(long, default_value = "0..4")]
    seeds: String,
    /// Skip the simulation sweeps.
    #[arg(long)]
    no_sweep: bool,
    /// Percent the median paired ratio must move, with every round agreeing, to count.
    #[arg(long, default_value_t = 10.0)]
    threshold: f64,
    /// Where to write the report (default reports/perf-<b>-vs-<c>.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_seeds(text: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = text.split_once("..").context("--seeds takes A..B")?;
    let range = (a.parse()?, b.parse()?);
    anyhow::ensure!(range.0 < range.1, "--seeds {text}: empty range");
    Ok(range)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{}, {cpus} CPUs", instructions::cpu_model())
}

fn perf_report(root: &Path, args: PerfReport) -> anyhow::Result<i32> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let seeds = parse_seeds(&args.seeds)?;
    let work = root.join("target/perf-report");
    let (base_label, base_commit) = revision::resolve(&args.baseline)?;
    let base_dir = revision::worktree(&work, &base_label, &base_commit)?;
    let mut worktrees = vec![base_dir.clone()];
    let (current_label, current_commit, current_dir, current_target) = match &args.current {
        Some(name) => {
            let (label, commit) = revision::resolve(name)?;
            let dir = revision::worktree(&work, &label, &commit)?;
            worktrees.push(dir.clone());
            (label, commit, dir, work.join("target"))
        }
        None => {
            let commit = revision::git(&["rev-parse", "HEAD"])?;
            let dirty =
                !revision::git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
            let label = format!("{}{}", &commit[..10], if dirty { "-dirty" } else { "" });
            (label, commit, root.to_path_buf(), root.join("target"))
        }
    };
    if base_label == current_label {
        // Legitimate: an A/A run measures the noise floor, and any row it
        // flags is a false alarm of this machine.
        eprintln!("both sides are {base_label}: an A/A run, which shows the noise floor");
    }
    let result = (|| {
        // Worktrees share one target directory: their dependencies are built
        // once, and each revision's own crates sit beside the others' (cargo
        // names artifacts by source path, so they never overwrite each other).
        let baseline = revision::build(&base_label, &base_commit, &base_dir, &work.join("target"))?;
        let current = revision::build(
            &current_label,
            &current_commit,
            &current_dir,
            &current_target,
        )?;
        compare(&args, &work, seeds, &baseline, &current)
    })();
    for dir in worktrees {
        revision::remove_worktree(&dir);
    }
    result
}

fn compare(
    args: &PerfReport,
    work: &Path,
    seeds: (u64, u64),
    baseline: &revision::Revision,
    current: &revision::Revision,
) -> anyhow::Result<i32> {
    let mut targets: Vec<String> = baseline
        .benches
        .iter()
        .chain(&current.benches)
        .map(|(name, _)| name.clone())
        .filter(|name| args.benches.is_empty() || args.benches.contains(name))
        .collect();
    targets.sort();
    targets.dedup();
    anyhow::ensure!(
        !targets.is_empty(),
        "no bench targets to run (asked for {:?})",
        args.benches
    );
    let scenarios: Vec<String> = if args.no_sweep {
        Vec::new()
    } else {
        let theirs = revision::scenarios(&baseline.dir)?;
        revision::scenarios(&current.dir)?
            .into_iter()
            .filter(|name| theirs.contains(name))
            .collect()
    };
    let log = work.join("perf-report.log");
    let _ = std::fs::remove_file(&log);
    let sides = [baseline, current];
    // Criterion's output directory for one side's round.
    let home = |side: usize, round: usize| {
        work.join("criterion")
            .join(&sides[side].label)
            .join(format!("round-{round}"))
    };
    for side in 0..2 {
        for round in 0..args.rounds {
            if home(side, round).exists() {
                std::fs::remove_dir_all(home(side, round))?;
            }
        }
    }
    // Every benchmark each side has, in the order the bench files list them.
    let mut plan: Vec<(String, [Option<PathBuf>; 2])> = Vec::new();
    for target in &targets {
        for (side, revision) in sides.iter().enumerate() {
            let Some((_, executable)) = revision.benches.iter().find(|(name, _)| name == target)
            else {
                continue;
            };
            for id in measure::list_benches(executable, &revision.dir)? {
                if args
                    .filter
                    .as_ref()
                    .is_some_and(|f| !id.contains(f.as_str()))
                {
                    continue;
                }
                let index = match plan.iter().position(|(known, _)| *known == id) {
                    Some(index) => index,
                    None => {
                        plan.push((id, [None, None]));
                        plan.len() - 1
                    }
                };
                plan[index].1[side] = Some(executable.clone());
            }
        }
    }
    anyhow::ensure!(!plan.is_empty(), "no benchmarks match");
    for (number, (id, executables)) in plan.iter().enumerate() {
        eprintln!("== [{}/{}] {id}", number + 1, plan.len());
        for round in 0..args.rounds {
            for (side, executable) in executables.iter().enumerate() {
                if let Some(executable) = executable {
                    measure::run_bench(sides[side], executable, id, &home(side, round), &log)?;
                }
            }
        }
    }
    let mut bench_samples: [Vec<measure::BenchSample>; 2] = Default::default();
    for (side, samples) in bench_samples.iter_mut().enumerate() {
        for round in 0..args.rounds {
            if home(side, round).exists() {
                samples.extend(measure::read_criterion(&home(side, round), round)?);
            }
        }
    }
    let mut sweep_samples: [Vec<measure::SweepSample>; 2] = Default::default();
    for scenario in &scenarios {
        eprintln!("== sweep {scenario}");
        for round in 0..args.rounds {
            for (side, revision) in sides.iter().enumerate() {
                sweep_samples[side]
                    .push(measure::run_sweep(revision, scenario, round, seeds, &log)?);
            }
        }
    }
    let benches = report::bench_rows(&bench_samples[0], &bench_samples[1], args.threshold);
    let sweeps = report::sweep_rows(&sweep_samples[0], &sweep_samples[1], args.threshold);
    let stem = format!("perf-{}-vs-{}", baseline.label, current.label);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{stem}.md")));
    let plot_dir = out.with_extension("");
    std::fs::create_dir_all(&plot_dir)?;
    let mut plots = BTreeMap::new();
    let mut groups: Vec<&str> = benches.iter().map(|row| row.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        let rows: Vec<&report::BenchRow> = benches.iter().filter(|r| r.group == group).collect();
        let file = plot_dir.join(format!("{group}.svg"));
        if plot::group_chart(&file, group, &rows).is_ok() {
            plots.insert(
                group.to_string(),
                format!(
                    "{}/{group}.svg",
                    plot_dir.file_name().unwrap_or_default().to_string_lossy()
                ),
            );
        }
    }
    let mut command = format!("cargo xtask perf-report --baseline {}", args.baseline);
    if let Some(current) = &args.current {
        command.push_str(&format!(" --current {current}"));
    }
    if args.rounds != ROUNDS_DEFAULT {
        command.push_str(&format!(" --rounds {}", args.rounds));
    }
    for bench in &args.benches {
        command.push_str(&format!(" --bench {bench}"));
    }
    if let Some(filter) = &args.filter {
        command.push_str(&format!(" --filter '{filter}'"));
    }
    if args.no_sweep {
        command.push_str(" --no-sweep");
    } else if args.seeds != "0..4" {
        command.push_str(&format!(" --seeds {}", args.seeds));
    }
    let context = report::Context {
        baseline_label: baseline.label.clone(),
        baseline_commit: baseline.commit.clone(),
        current_label: current.label.clone(),
        current_commit: current.commit.clone(),
        command,
        machine: machine(),
        rounds: args.rounds,
        seeds,
        threshold_percent: args.threshold,
        plots,
    };
    let text = report::render(&context, &benches, &sweeps);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &text)?;
    println!("{text}");
    println!("wrote {}", out.display());
    let regressed = benches
        .iter()
        .any(|row| row.change == report::Change::Slower)
        || sweeps
            .iter()
            .any(|row| row.change == report::Change::Slower);
    Ok(if regressed { 3 } else { 0 })
}
